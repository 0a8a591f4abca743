// `attnjit templates`: the registered kernel templates, the archs they serve and their knobs
// (the flags --template and --<knob> of the kernel commands accept).
#include <fmt/format.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "compiler/kernel_template.hpp"
#include "tools/cli/commands.hpp"

namespace attnjit::cli {
namespace {
std::string flag_of(std::string knob) {
  std::replace(knob.begin(), knob.end(), '_', '-');
  return knob;
}
}  // namespace

void register_templates_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("templates", "List the kernel templates, their archs and knobs");
  auto head_dim = std::make_shared<int>(128);
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--head-dim", *head_dim, "Head dimension the knob spaces are shown for")->capture_default_str();
  cmd->add_flag("--json", *json, "Print JSON instead of text");
  cmd->callback([head_dim, json] {
    const auto& all = TemplateRegistry::instance().all();
    if (*json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& t : all) {
        nlohmann::json knobs = nlohmann::json::array();
        for (const auto& k : t->knob_space(*head_dim))
          knobs.push_back({{"name", k.name}, {"values", k.values}, {"help", k.help}});
        out.push_back({{"name", t->name()},
                       {"role", template_role_name(t->role())},
                       {"priority", t->priority()},
                       {"archs", t->archs()},
                       {"description", t->description()},
                       {"knobs", knobs}});
      }
      fmt::print("{}\n", out.dump(2));
      return;
    }
    for (const auto& t : all) {
      fmt::print("{}{}  (priority {})\n  {}\n  archs: {}\n", t->name(),
                 fmt::format("  [{}]", template_role_name(t->role())), t->priority(), t->description(),
                 fmt::join(t->archs(), ", "));
      for (const auto& k : t->knob_space(*head_dim))
        fmt::print("  --{:<10} {:<16} {}\n", flag_of(k.name), fmt::format("{}", fmt::join(k.values, "|")), k.help);
    }
  });
}

}  // namespace attnjit::cli
