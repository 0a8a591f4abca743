// Arguments shared by the kernel commands (emit, compile, check, bench) and `tune`: the
// variant (--preset NAME or --variant TEXT / @file), arch, head dim, dtype, schedule
// overrides, runtime parameters, and the "B,H,Hkv,Sq,Sk,D" shape syntax.
#pragma once

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit::cli {

struct KernelArgs {
  std::string preset;
  std::string variant_text;
  std::string arch = "auto";
  int head_dim = 128;
  std::string dtype = "bf16";
  std::string template_name;         // empty: the best template for the request
  std::map<std::string, int> knobs;  // knob flags given (--block-m 64 -> block_m)
  std::vector<std::string> params;   // name=value
  bool backward = false;             // the backward unit (templates of role backward)

  Variant variant() const {
    if (preset.empty() == variant_text.empty())
      throw UserError("give exactly one of --preset NAME or --variant TEXT (see `attnjit variant list`)");
    if (!preset.empty()) return presets::by_name(preset);
    if (!variant_text.empty() && variant_text[0] == '@') {
      std::ifstream in(variant_text.substr(1));
      if (!in) throw UserError(fmt::format("cannot read variant file '{}'; check the path", variant_text.substr(1)));
      std::stringstream ss;
      ss << in.rdbuf();
      return Variant::parse(ss.str());
    }
    return Variant::parse(variant_text);
  }

  CompileOptions options() const {
    CompileOptions o;
    o.with_head_dim(head_dim).with_dtype(parse_element_type(dtype)).with_arch(arch).with_template(template_name);
    Knobs overrides;  // none: tuned (with a shape hint) or the template's default
    for (const auto& [name, value] : knobs) overrides.set(name, value);
    o.with_knobs(overrides);
    if (backward) o.with_role(TemplateRole::Backward);
    o.validate();
    return o;
  }

  Bindings bindings() const {
    Bindings b;
    for (const auto& p : params) {
      const auto eq = p.find('=');
      if (eq == std::string::npos || eq == 0)
        throw UserError(fmt::format("--param '{}' is not NAME=VALUE; e.g. --param window=256", p));
      const std::string name = p.substr(0, eq), value = p.substr(eq + 1);
      try {
        std::size_t used = 0;
        const long long i = std::stoll(value, &used);
        if (used == value.size()) {
          b.set(name, static_cast<std::int64_t>(i));  // check_bindings refuses ints outside int32
          continue;
        }
        const double d = std::stod(value, &used);
        if (used != value.size()) throw std::invalid_argument(value);
        b.set(name, d);
      } catch (const std::logic_error&) {
        throw UserError(fmt::format("--param {}: '{}' is not a number", name, value));
      }
    }
    return b;
  }
};

inline void add_kernel_options(CLI::App* cmd, KernelArgs& a) {
  cmd->add_option("--preset", a.preset, "Preset name (see `attnjit variant list`)");
  cmd->add_option("--variant", a.variant_text, "Variant text, or @file");
  cmd->add_option("--arch", a.arch, "auto (the GPU's), sm_80, sm_86, sm_89, sm_90, sm_90a; emit: cpu")
      ->capture_default_str();
  cmd->add_option("--head-dim", a.head_dim, "Head dimension: 32, 64, 96, 128, 256")->capture_default_str();
  cmd->add_option("--dtype", a.dtype, "bf16 or fp16")->capture_default_str();
  cmd->add_option("--template", a.template_name, "Kernel template (see `attnjit templates`); default: the best one");
  cmd->add_flag("--backward", a.backward,
                "The backward pass (dQ, dK, dV and captured-tensor gradients); --template and knob options then choose "
                "the backward's (the forward is the default one)");
  // One flag per knob of any registered template (--block-m for block_m); a flag the chosen
  // template does not have is a UserError naming the template's knobs.
  std::map<std::string, std::string> help;
  for (const auto& t : TemplateRegistry::instance().all())
    for (const auto& k : t->knob_space(a.head_dim)) {
      auto& h = help[k.name];
      h += fmt::format("{}{}: {} ({})", h.empty() ? "Knob of template " : "; ", t->name(), k.help,
                       fmt::join(k.values, ", "));
    }
  for (const auto& [name, text] : help) {
    std::string flag = "--" + name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    cmd->add_option_function<int>(
        flag, [&a, name = name](int v) { a.knobs[name] = v; }, text);
  }
}

// "B,H,Hkv,Sq,Sk,D" into a problem and a head dimension.
inline std::pair<ForwardProblem, int> parse_shape(const std::string& text) {
  std::vector<int> v;
  std::stringstream ss(text);
  std::string item;
  try {
    while (std::getline(ss, item, ',')) v.push_back(std::stoi(item));
  } catch (const std::logic_error&) {
    v.clear();
  }
  if (v.size() != 6 || *std::min_element(v.begin(), v.end()) < 1)
    throw UserError(
        fmt::format("--shape '{}' is not B,H,Hkv,Sq,Sk,D with positive integers, e.g. 4,16,16,4096,4096,128", text));
  return {ForwardProblem{v[0], v[1], v[2], v[3], v[4]}, v[5]};
}

// `o` with `p` as its shape hint: the tuning database's knobs for that shape, and what a decode
// template needs to accept the request.
inline CompileOptions hinted(CompileOptions o, const ForwardProblem& p) {
  o.with_shape_hint(p.batch, p.heads_q, p.heads_kv, p.seq_q, p.seq_k);
  return o;
}

}  // namespace attnjit::cli
