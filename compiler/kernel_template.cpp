// The kernel-template contract and registry (see kernel_template.hpp).
#include "compiler/kernel_template.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <sstream>

#include "compiler/error.hpp"

namespace attnjit {

std::string ProblemShape::str() const {
  return fmt::format("B={} Hq={} Hkv={} Sq={} Sk={}", batch, heads_q, heads_kv, seq_q, seq_k);
}

std::string HookPrototype::declaration() const {
  return fmt::format("__device__ __forceinline__ {} {}({});", return_type, name, parameters);
}

std::string HookPrototype::pointer_type() const {
  // The parameter types alone: every parameter is "<type> <name>", the name the last word.
  std::string types;
  std::stringstream in(parameters);
  std::string parameter;
  while (std::getline(in, parameter, ',')) {
    const auto last = parameter.find_last_of(" &*");
    std::string type = parameter.substr(0, last + 1);
    while (!type.empty() && type.back() == ' ') type.pop_back();
    while (!type.empty() && type.front() == ' ') type.erase(type.begin());
    types += (types.empty() ? "" : ", ") + type;
  }
  return fmt::format("{} (*)({})", return_type, types);
}

bool KernelTemplate::serves(const std::string& arch) const {
  const auto a = archs();
  return std::find(a.begin(), a.end(), arch) != a.end();
}

Knobs KernelTemplate::resolve_knobs(const TemplateRequest& request, const Knobs& overrides) const {
  Knobs knobs = default_knobs(request);
  const auto space = knob_space(request.head_dim);
  for (const auto& [knob, value] : overrides.values()) {
    const bool known = std::any_of(space.begin(), space.end(), [&](const KnobSpec& k) { return k.name == knob; });
    if (!known) {
      std::string names;
      for (const auto& k : space) names += (names.empty() ? "" : ", ") + k.name;
      throw UserError(fmt::format("template '{}' has no knob '{}'; its knobs are: {} (see `attnjit templates`)", name(),
                                  knob, names));
    }
    knobs.set(knob, value);
  }
  return knobs;
}

TemplateRegistry& TemplateRegistry::instance() {
  static TemplateRegistry registry;
  static std::once_flag once;
  std::call_once(once, [] { register_builtin_templates(registry); });
  return registry;
}

void TemplateRegistry::add(std::unique_ptr<KernelTemplate> t) {
  if (find(t->name())) throw InternalError(fmt::format("template '{}' registered twice", t->name()));
  templates_.push_back(std::move(t));
  std::stable_sort(templates_.begin(), templates_.end(),
                   [](const auto& a, const auto& b) { return a->priority() > b->priority(); });
}

const KernelTemplate* TemplateRegistry::find(const std::string& name) const {
  for (const auto& t : templates_)
    if (t->name() == name) return t.get();
  return nullptr;
}

std::string_view template_role_name(TemplateRole role) {
  switch (role) {
    case TemplateRole::Forward: return "forward";
    case TemplateRole::Backward: return "backward";
    case TemplateRole::Helper: return "helper";
  }
  return "?";
}

const KernelTemplate& TemplateRegistry::get(const std::string& name) const {
  if (const KernelTemplate* t = find(name)) return *t;
  std::string names;
  for (const auto& t : templates_)
    if (t->role() != TemplateRole::Helper) names += (names.empty() ? "" : ", ") + t->name();
  throw UserError(fmt::format("template '{}' does not exist; registered: {} (see `attnjit templates`)", name, names));
}

namespace {
// The first knob of the request (the user's overrides) that `t` does not have, or "".
std::string first_foreign_knob(const KernelTemplate& t, const TemplateRequest& request) {
  if (request.knobs.empty()) return {};
  const auto space = t.knob_space(request.head_dim);
  for (const auto& [name, value] : request.knobs.values()) {
    bool known = false;
    for (const auto& spec : space) known = known || spec.name == name;
    if (!known) return name;
  }
  return {};
}
}  // namespace

const KernelTemplate& TemplateRegistry::select(const TemplateRequest& request, const std::string& forced) const {
  if (!forced.empty()) {
    const KernelTemplate& t = get(forced);
    if (t.role() != request.role)
      throw UserError(fmt::format("template '{}' is a {} template; this request needs a {} one", forced,
                                  template_role_name(t.role()), template_role_name(request.role)));
    if (!t.serves(request.arch))
      throw UserError(fmt::format("template '{}' does not compile for {}; it serves: {}", forced, request.arch,
                                  fmt::join(t.archs(), ", ")));
    const Support s = t.can_implement(request);
    if (!s.supported())
      throw UserError(fmt::format("template '{}' cannot implement this request: {}", forced, s.reason()));
    return t;
  }
  std::string reasons;
  for (const auto& t : templates_) {
    if (t->role() != request.role) continue;
    if (!t->serves(request.arch)) {
      reasons += fmt::format("\n  {}: does not compile for {}", t->name(), request.arch);
      continue;
    }
    if (const std::string missing = first_foreign_knob(*t, request); !missing.empty()) {
      reasons += fmt::format("\n  {}: has no knob '{}'", t->name(), missing);
      continue;
    }
    const Support s = t->can_implement(request);
    if (s.kind() == Support::Kind::Invalid) throw UserError(s.reason());
    if (s.supported()) return *t;
    reasons += fmt::format("\n  {}: {}", t->name(), s.reason());
  }
  throw UserError(fmt::format("no kernel template can implement variant '{}' at head_dim {} for {}:{}",
                              request.variant ? request.variant->name() : "?", request.head_dim, request.arch,
                              reasons));
}

}  // namespace attnjit
