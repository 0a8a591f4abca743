// GPU tests of the JIT forward path: every preset the GPU supports, in bf16 and fp16, at
// head dims 64 and 128, MHA and GQA 4:1, odd lengths (Sq=1000, Sk=1537), judged by
// FlashAttention's rule against the fp64 CPU reference (runtime/forward_check). Also
// fully masked rows, BSHD strides and a custom variant. Skips with a message without a GPU.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "dsl/presets.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit {
namespace {

// Skipping in SetUp skips the test body (a GTEST_SKIP in a helper would only leave the helper).
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0)
      GTEST_SKIP() << "no GPU: " << (driver.available() ? "no CUDA device" : driver.unavailable_reason());
  }
};

// Parameter values chosen so every mask is a real mix of empty, partial and full tiles.
Bindings preset_scalars(const Variant& v) {
  Bindings b;
  for (const auto& p : v.params()) {
    if (p.name == "window")
      b.set("window", 256);
    else if (p.name == "prefix_len")
      b.set("prefix_len", 300);
    else if (p.name == "softcap")
      b.set("softcap", 30.0);
    else if (p.name == "stride")
      b.set("stride", 4);
    else if (p.name == "local")
      b.set("local", 64);
    else if (p.name == "group")
      b.set("group", 256);
    else
      ADD_FAILURE() << "no test value for parameter " << p.name;
  }
  return b;
}

bool gpu_supports(const std::string& preset) { return preset != "rope_causal" && preset != "gated_causal"; }

std::vector<std::string> gpu_presets() {
  std::vector<std::string> names;
  for (const auto& p : presets::registry())
    if (gpu_supports(p.name)) names.push_back(p.name);
  return names;
}

using Case = std::tuple<std::string, ElementType, int, int>;  // preset, dtype, head dim, kv heads

class ForwardEdgeCases : public GpuTest {};
class ForwardPresets : public GpuTest, public ::testing::WithParamInterface<Case> {};

TEST_P(ForwardPresets, MatchesReferenceWithinTwiceNaiveError) {
  const auto& [name, dtype, head_dim, heads_kv] = GetParam();
  const Variant v = presets::by_name(name);
  ForwardProblem problem;
  problem.batch = 1;
  problem.heads_q = 8;
  problem.heads_kv = heads_kv;
  problem.seq_q = 1000;
  problem.seq_k = 1537;
  const auto options = CompileOptions().with_head_dim(head_dim).with_dtype(dtype);
  const ForwardCheckResult r = check_forward(v, options, problem, preset_scalars(v), 1000 + head_dim + heads_kv);
  std::printf("[ result ] %-22s %s D=%-3d %s: %s\n", name.c_str(), element_type_name(dtype).c_str(), head_dim,
              problem.str().c_str(), r.summary().c_str());
  EXPECT_TRUE(r.pass) << r.summary();
}

INSTANTIATE_TEST_SUITE_P(AllPresets, ForwardPresets,
                         ::testing::Combine(::testing::ValuesIn(gpu_presets()),
                                            ::testing::Values(ElementType::BF16, ElementType::FP16),
                                            ::testing::Values(64, 128), ::testing::Values(8, 2)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + element_type_name(std::get<1>(info.param)) + "_d" +
                                  std::to_string(std::get<2>(info.param)) +
                                  (std::get<3>(info.param) == 8 ? "_mha" : "_gqa4");
                         });

TEST_F(ForwardEdgeCases, FullyMaskedRowsGiveZeroOutputAndMinusInfinityLse) {
  // Bottom-right causal with Sq > Sk: the first Sq - Sk queries see no key at all.
  ForwardProblem problem{1, 4, 4, 700, 333};
  const auto r = check_forward(presets::causal(presets::CausalAlignment::BottomRight),
                               CompileOptions().with_head_dim(64), problem, {}, 7);
  EXPECT_EQ(r.fully_masked_rows, 4 * (700 - 333));
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, TinyAndRaggedLengths) {
  for (auto [sq, sk] : {std::pair{1, 1}, {1, 4097}, {17, 3}, {129, 65}, {4096, 4096}}) {
    ForwardProblem problem{2, 4, 1, sq, sk};
    const auto r = check_forward(presets::causal(), CompileOptions().with_head_dim(128), problem, {}, 11);
    EXPECT_TRUE(r.pass) << problem.str() << ": " << r.summary();
  }
}

TEST_F(ForwardEdgeCases, CustomVariantWithTensorAndFloorDivision) {
  using namespace dsl::vars;
  const Tensor bias("head_bias", ir::TensorDType::BF16, 1);
  Variant v("custom");
  v.with_score_mod(score * 0.5 + bias[h] - to_float(abs(q - kv)) / 64.0)
      .with_mask_mod((q - 128) / 256 == (kv - 128) / 256 || kv % 7 == 0);
  ForwardProblem problem{2, 4, 2, 777, 901};
  const auto r = check_forward(v, CompileOptions().with_head_dim(64).with_dtype(ElementType::FP16), problem, {}, 5);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, BshdLayoutThroughStrides) {
  ForwardProblem problem{2, 8, 2, 300, 451, true};
  const auto r = check_forward(presets::by_name("alibi_causal"), CompileOptions().with_head_dim(128), problem, {}, 9);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, NonDefaultSchedulesAgree) {
  for (const Schedule s : {Schedule{64, 32, 4, 2}, Schedule{128, 128, 8, 1}, Schedule{128, 64, 8, 2}}) {
    ForwardProblem problem{1, 4, 4, 513, 1025};
    const auto r = check_forward(presets::sliding_window(), CompileOptions().with_head_dim(64).with_schedule(s),
                                 problem, Bindings().set("window", 100), 3);
    EXPECT_TRUE(r.pass) << s.str() << ": " << r.summary();
  }
}

}  // namespace
}  // namespace attnjit
