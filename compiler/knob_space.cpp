// Knob-space enumeration and pruning (see knob_space.hpp).
#include "compiler/knob_space.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "compiler/error.hpp"

namespace attnjit {

std::vector<KnobCandidate> enumerate_knobs(const KernelTemplate& t, int head_dim, int max_shared_bytes,
                                           const std::map<std::string, std::vector<int>>& restrict_to) {
  std::vector<KnobSpec> space = t.knob_space(head_dim);
  std::string names;
  for (const auto& k : space) names += (names.empty() ? "" : ", ") + k.name;
  for (const auto& [name, values] : restrict_to) {
    auto it = std::find_if(space.begin(), space.end(), [&](const KnobSpec& k) { return k.name == name; });
    if (it == space.end())
      throw UserError(
          fmt::format("template '{}' has no knob '{}' to restrict; its knobs are: {} (see `attnjit templates`)",
                      t.name(), name, names));
    if (values.empty())
      throw UserError(
          fmt::format("the restriction of knob '{}' of template '{}' gives no value; give at least one "
                      "of {}",
                      name, t.name(), fmt::join(it->values, ", ")));
    it->values = values;
  }

  std::size_t total = 1;
  for (const auto& k : space) total *= k.values.size();
  std::vector<KnobCandidate> out;
  out.reserve(total);
  // An odometer over the knobs, the last one turning fastest.
  std::vector<std::size_t> index(space.size(), 0);
  for (std::size_t n = 0; n < total; ++n) {
    KnobCandidate c;
    for (std::size_t i = 0; i < space.size(); ++i) c.knobs.set(space[i].name, space[i].values[index[i]]);
    const Support s = t.check_knobs(c.knobs, head_dim, max_shared_bytes);
    if (!s.supported()) {
      c.feasible = false;
      c.reason = s.reason();
    }
    out.push_back(std::move(c));
    for (std::size_t i = space.size(); i-- > 0;) {
      if (++index[i] < space[i].values.size()) break;
      index[i] = 0;
    }
  }
  return out;
}

std::map<std::string, std::vector<int>> with_untuned_knobs_fixed(const KernelTemplate& t, int head_dim,
                                                                 const Knobs& defaults,
                                                                 std::map<std::string, std::vector<int>> restrict_to) {
  for (const KnobSpec& k : t.knob_space(head_dim))
    if (!k.tuned && restrict_to.count(k.name) == 0 && defaults.has(k.name))
      restrict_to[k.name] = {defaults.get(k.name)};
  return restrict_to;
}

std::vector<Knobs> feasible_knobs(const KernelTemplate& t, int head_dim, int max_shared_bytes,
                                  const std::map<std::string, std::vector<int>>& restrict_to) {
  std::vector<Knobs> out;
  for (auto& c : enumerate_knobs(t, head_dim, max_shared_bytes, restrict_to))
    if (c.feasible) out.push_back(std::move(c.knobs));
  return out;
}

}  // namespace attnjit
