// `attnjit check --device cpu` and `attnjit bench --device cpu` (tools/cli/cpu_device.cpp),
// run as separate processes: the CPU backend from the command line, with no GPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "support/process.hpp"

namespace attnjit {
namespace {

using namespace attnjit::test_support;

CommandResult run_cli(const std::string& args) {
  const auto err = std::filesystem::temp_directory_path() / ("attnjit_cpu_cli_" + std::to_string(::getpid()));
  return run_command(shell_quote(ATTNJIT_CLI_PATH) + " " + args, err);
}

TEST(CpuCli, CheckPassesOnTheCpu) {
  const auto bf16 = run_cli(
      "check --device cpu --preset causal_bottom_right --dtype bf16 --head-dim 64 --heads 4 --heads-kv 1 --seq-q 130 "
      "--seq-k 70");
  ASSERT_EQ(bf16.exit_code, 0) << bf16.out << bf16.err;
  EXPECT_TRUE(contains(bf16.out, "on the CPU")) << bf16.out;
  EXPECT_TRUE(contains(bf16.out, "PASS")) << bf16.out;
  EXPECT_TRUE(contains(bf16.out, "masked_rows=240")) << bf16.out;  // 60 rows x 4 heads see no key
  const auto f32 = run_cli(
      "check --device cpu --preset sliding_window --param window=33 --dtype f32 --head-dim 32 --seq-q 90 --seq-k 90");
  ASSERT_EQ(f32.exit_code, 0) << f32.out << f32.err;
  EXPECT_TRUE(contains(f32.out, "PASS")) << f32.out;
  EXPECT_TRUE(contains(f32.out, "f32 inputs: limits")) << f32.out;
}

TEST(CpuCli, BenchPrintsOneJsonLinePerShape) {
  const auto r = run_cli(
      "bench --device cpu --preset alibi_causal --dtype bf16 --shape 1,2,2,256,256,64 --shape 1,2,1,100,300,32 "
      "--reps 2 --warmup 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  int count = 0;
  for (std::string line; std::getline(lines, line); ++count) {
    const auto row = nlohmann::json::parse(line);
    EXPECT_EQ(row["template"], "cpu");
    EXPECT_EQ(row["dtype"], "bf16");
    EXPECT_GT(row["median_ms"].get<double>(), 0.0);
    if (count == 0)
      EXPECT_NEAR(row["density"].get<double>(), (256.0 * 257 / 2) / (256.0 * 256),
                  1e-6);  // causal; JSON keeps 6 decimals
  }
  EXPECT_EQ(count, 2);
}

TEST(CpuCli, RefusesWhatTheCpuDoesNotTake) {
  const auto knobs = run_cli("bench --device cpu --preset causal --shape 1,1,1,64,64,64 --block-m 64");
  EXPECT_EQ(knobs.exit_code, 1);
  EXPECT_TRUE(contains(knobs.err, "apply to GPU kernels")) << knobs.err;
  const auto dtype = run_cli("check --device cpu --preset causal --dtype f64 --seq-q 8 --seq-k 8");
  EXPECT_EQ(dtype.exit_code, 1);
  EXPECT_TRUE(contains(dtype.err, "allowed: f32, bf16, fp16")) << dtype.err;
  // KV-cache and ragged timings are GPU-only entry points.
  const auto ragged = run_cli("bench --device cpu --preset causal --shape 2,1,1,64,64,64 --ragged-lengths 10,64");
  EXPECT_EQ(ragged.exit_code, 1);
  EXPECT_TRUE(contains(ragged.err, "--ragged-lengths times the GPU forward only")) << ragged.err;
  const auto both = run_cli("bench --preset causal --shape 2,1,1,4,64,64 --kv-cache --ragged-lengths 10,64");
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_TRUE(contains(both.err, "drop --backward, --kv-cache and --device cpu")) << both.err;
  // A block mask built once is a GPU forward timing too.
  for (const char* other : {"--device cpu", "--backward"}) {
    const auto prebuilt = run_cli(std::string("bench --preset document_causal --shape 1,2,2,128,128,64 ") +
                                  "--prebuilt-block-mask " + other);
    EXPECT_EQ(prebuilt.exit_code, 1) << other;
    EXPECT_TRUE(contains(prebuilt.err, "--prebuilt-block-mask applies to the GPU forward only")) << prebuilt.err;
  }
}

}  // namespace
}  // namespace attnjit
