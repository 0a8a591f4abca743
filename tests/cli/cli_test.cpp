// The `attnjit` command-line tool, run as a separate process: help, `variant list`,
// `variant print`, `variant check`, and its error reporting (exit status and stderr).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "dsl/variant.hpp"
#include "support/process.hpp"

namespace attnjit {
namespace {

using namespace attnjit::test_support;

// Runs the CLI with `args` (already shell-quoted), capturing stdout and stderr apart.
CommandResult run_cli(const std::string& args, const std::string& environment = "") {
  static int counter = 0;
  const auto err_path = std::filesystem::temp_directory_path() /
                        ("attnjit_cli_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".err");
  return run_command(environment + shell_quote(ATTNJIT_CLI_PATH) + " " + args, err_path);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

TEST(Cli, HelpListsTheVariantCommand) {
  const auto r = run_cli("--help");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("variant"), std::string::npos) << all;
  EXPECT_NE(all.find("attnjit"), std::string::npos) << all;
}

TEST(Cli, NoSubcommandFails) {
  const auto r = run_cli("");
  EXPECT_NE(r.exit_code, 0);
}

TEST(Cli, VariantListPrintsOneLinePerPresetNameFirst) {
  const auto r = run_cli("variant list");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = lines_of(r.out);
  const auto& registry = presets::registry();
  ASSERT_EQ(lines.size(), registry.size()) << r.out;
  for (std::size_t i = 0; i < registry.size(); ++i) {
    const std::string first_word = lines[i].substr(0, lines[i].find(' '));
    EXPECT_EQ(first_word, registry[i].name) << lines[i];
    EXPECT_NE(lines[i].find(registry[i].description), std::string::npos) << lines[i];
  }
}

TEST(Cli, VariantPrintCausalParsesBackToThePreset) {
  const auto r = run_cli("variant print --preset causal");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Variant printed = Variant::parse(r.out);
  const Variant causal = presets::causal();
  EXPECT_EQ(printed.hash(), causal.hash());
  EXPECT_EQ(printed.text(), causal.text());
  EXPECT_EQ(r.out, causal.text());
  EXPECT_NE(r.out.find("kv <= q"), std::string::npos) << r.out;
}

TEST(Cli, VariantPrintEveryPresetRoundTrips) {
  for (const auto& info : presets::registry()) {
    const auto r = run_cli("variant print --preset " + shell_quote(info.name));
    ASSERT_EQ(r.exit_code, 0) << info.name << ": " << r.err;
    EXPECT_EQ(Variant::parse(r.out).hash(), info.make().hash()) << info.name;
  }
}

TEST(Cli, VariantCheckAcceptsValidTextAndPrintsCanonicalFormAndHash) {
  const std::string text = "param window: int; score: score * 0.5; mask: kv <= q && q - kv < window;";
  const auto r = run_cli("variant check " + shell_quote(text));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const Variant v = Variant::parse(text);
  EXPECT_EQ(r.out, v.text() + "# ok: hash " + v.hash().hex() + "\n");
}

TEST(Cli, VariantCheckReadsAFile) {
  const auto path =
      std::filesystem::temp_directory_path() / ("attnjit_cli_test_" + std::to_string(::getpid()) + ".var");
  {
    std::ofstream out(path);
    out << "variant \"from_file\";\nscore: score;\nmask: kv <= q;\n";
  }
  const auto r = run_cli("variant check " + shell_quote("@" + path.string()));
  std::filesystem::remove(path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("variant \"from_file\";"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("# ok: hash "), std::string::npos) << r.out;

  const auto missing = run_cli("variant check @/nonexistent/attnjit/variant.txt");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("cannot read variant file '/nonexistent/attnjit/variant.txt'"), std::string::npos)
      << missing.err;
}

TEST(Cli, VariantCheckRejectsBadTextWithThePositionOnStderr) {
  const std::string text = "score: score;\nmask: kv <= q &&\n  q - kv < windw;";
  const auto r = run_cli("variant check " + shell_quote(text));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("error: variant text, line 3, column 12: unknown name 'windw'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n    q - kv < windw;\n             ^"), std::string::npos) << r.err;

  const auto type_error = run_cli("variant check " + shell_quote("mask: score;"));
  EXPECT_NE(type_error.exit_code, 0);
  EXPECT_NE(type_error.err.find("line 1, column 7: mask_mod must be a bool expression"), std::string::npos)
      << type_error.err;
}

TEST(Cli, UnknownPresetFailsAndListsAvailablePresets) {
  const auto r = run_cli("variant print --preset no_such_preset");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown preset 'no_such_preset'"), std::string::npos) << r.err;
  for (const auto& info : presets::registry())
    EXPECT_NE(r.err.find(info.name), std::string::npos) << "missing " << info.name << " in: " << r.err;
}

TEST(Cli, MissingRequiredOptionFails) {
  const auto r = run_cli("variant print");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.out + r.err).find("--preset"), std::string::npos) << r.out << r.err;
}

// The README's main job: presets, their text, the reference, and a JIT compile of each.
TEST(Cli, DemoRunsEndToEnd) {
  const auto cache = std::filesystem::temp_directory_path() / ("attnjit_demo_cache_" + std::to_string(::getpid()));
  const auto r = run_cli("demo", "ATTNJIT_CACHE_DIR=" + shell_quote(cache.string()) + " ");
  std::filesystem::remove_all(cache);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "variant \"causal\";")) << r.out;
  EXPECT_TRUE(contains(r.out, "mask: kv <= q && q - kv < window;")) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n') > 20, true) << r.out;
  std::size_t compiled = 0;
  for (std::size_t at = r.out.find("JIT sm_90a D=64: "); at != std::string::npos;
       at = r.out.find("JIT sm_90a D=64: ", at + 1))
    ++compiled;
  EXPECT_EQ(compiled, 3u) << r.out;
  // Each variant then runs for real: on the GPU against the reference, or, where there is none,
  // on the CPU backend (checked against the reference, and timed).
  std::size_t passed = 0;
  for (const char* line : {"GPU vs reference", "CPU backend"})
    for (std::size_t at = r.out.find(line); at != std::string::npos; at = r.out.find(line, at + 1))
      passed += r.out.find("PASS", at) < r.out.find('\n', at);
  EXPECT_EQ(passed, 3u) << r.out;
  if (contains(r.out, "No GPU here")) EXPECT_TRUE(contains(r.out, "CPU forward B=1 H=8 S=2048 D=64 bf16")) << r.out;
}

}  // namespace
}  // namespace attnjit
