// `attnjit variant list | print | check`: browse presets and validate variant text.
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "dsl/parser.hpp"
#include "dsl/presets.hpp"
#include "tools/cli/commands.hpp"

namespace attnjit::cli {
namespace {

// TEXT, or the contents of a file when TEXT is "@path".
std::string read_text_argument(const std::string& text) {
  if (text.empty() || text[0] != '@') return text;
  std::ifstream in(text.substr(1));
  if (!in) throw UserError(fmt::format("cannot read variant file '{}'; check the path", text.substr(1)));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

void register_variant_commands(CLI::App& app) {
  auto* variant = app.add_subcommand("variant", "List presets, print and check variant text");
  variant->require_subcommand(1);

  auto* list = variant->add_subcommand("list", "Print one preset per line: its name, then what it does");
  list->callback([] {
    for (const auto& p : presets::registry()) fmt::print("{:<22} {}\n", p.name, p.description);
  });

  auto* print = variant->add_subcommand("print", "Print the canonical text of a preset");
  auto preset = std::make_shared<std::string>();
  print->add_option("--preset", *preset, "Preset name (see `attnjit variant list`)")->required();
  print->callback([preset] { fmt::print("{}", presets::by_name(*preset).text()); });

  auto* check =
      variant->add_subcommand("check", "Parse and type-check variant text (or @file); print its canonical form");
  auto text = std::make_shared<std::string>();
  check->add_option("text", *text, "Variant text, e.g. \"score: score * 0.5; mask: kv <= q;\", or @file")->required();
  check->callback([text] {
    const Variant v = Variant::parse(read_text_argument(*text));
    fmt::print("{}# ok: hash {}\n", v.text(), v.hash().hex());
  });
}

}  // namespace attnjit::cli
