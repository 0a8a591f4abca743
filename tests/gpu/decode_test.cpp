// GPU tests of the split-K decode template (templates/decode_sm80.cuh): every preset it serves
// in decode shapes (Sq = 1, 4, 16; Sk from 1 to 4097, not multiples of the tile), GQA 1:1, 4:1
// and 8:1, bf16 and fp16, D = 64 and 128, by FlashAttention's rule against the fp64
// reference (runtime/reference/forward_check.hpp). Run twice per case: with the template
// forced (so the decode kernels are what is checked), and through a default kernel, whose
// forward picks the decode unit by itself for Sq <= 16 (the default; ATTNJIT_DECODE=1 is set
// here so that an environment that turned it off does not skip the routed half).
// Skips with a message without a GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/forward_check.hpp"
#include "support/decode_cases.hpp"
#include "support/gpu_present.hpp"
#include "support/preset_scalars.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"

namespace attnjit {
namespace {

using Case = DecodeCase;

struct Compiled {
  std::optional<Kernel> kernel;
  std::string not_supported;
};

const Compiled& compiled(const std::string& preset, ElementType dtype, int head_dim, bool forced) {
  static std::map<std::string, std::unique_ptr<Compiled>> kernels;
  const std::string key = preset + element_type_name(dtype) + std::to_string(head_dim) + (forced ? "f" : "");
  auto& slot = kernels[key];
  if (!slot) {
    slot = std::make_unique<Compiled>();
    CompileOptions o = CompileOptions().with_head_dim(head_dim).with_dtype(dtype);
    if (forced) o.with_template(kDecodeTemplateName).with_shape_hint(1, 8, 8, 1, 4096);
    try {
      slot->kernel = compile(presets::by_name(preset), o);
    } catch (const UserError& e) {
      slot->not_supported = e.what();
    }
  }
  return *slot;
}

class DecodePreset : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    ::setenv("ATTNJIT_DECODE", "1", 1);
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0)
      GTEST_SKIP() << "no GPU: " << (driver.available() ? "no CUDA device" : driver.unavailable_reason());
  }
};

TEST_P(DecodePreset, PassesTheTwoTimesRule) {
  const auto& [preset, dtype, head_dim, group] = GetParam();
  const Variant variant = presets::by_name(preset);
  for (const bool forced : {true, false}) {
    const Compiled& c = compiled(preset, dtype, head_dim, forced);
    if (!c.kernel) {
      if (forced) std::printf("[ decode   ] %s: not served: %s\n", preset.c_str(), c.not_supported.c_str());
      continue;
    }
    if (forced) EXPECT_EQ(c.kernel->prepared().config.template_name, kDecodeTemplateName);
    for (const auto& [seq_q, seq_k] : std::vector<std::pair<int, int>>{{1, 1}, {1, 4097}, {4, 333}, {16, 1537}}) {
      const ForwardProblem problem{2, 2 * group, 2, seq_q, seq_k};
      const ForwardCheckResult r = check_forward(*c.kernel, problem, preset_scalars(variant), 17);
      std::printf("[ result ] %-40s %s %s: %s\n", decode_case_name(GetParam()).c_str(), forced ? "forced " : "routed ",
                  problem.str().c_str(), r.summary().c_str());
      EXPECT_TRUE(r.pass) << decode_case_name(GetParam()) << " " << problem.str() << ": " << r.summary();
    }
  }
}

// The decode unit of `variant` with one knob set (`knob` = `value`), bf16 and fp16, D = 64 and
// 128, against the reference in the decode shapes above with GQA 1:1, 4:1 and 8:1.
void check_decode_knob(const std::string& preset, const std::string& knob, int value, unsigned seed) {
  const Variant variant = presets::by_name(preset);
  for (const ElementType dtype : {ElementType::BF16, ElementType::FP16})
    for (const int head_dim : {64, 128}) {
      const Kernel kernel = compile(variant, CompileOptions()
                                                 .with_head_dim(head_dim)
                                                 .with_dtype(dtype)
                                                 .with_template(kDecodeTemplateName)
                                                 .with_shape_hint(1, 8, 8, 1, 4096)
                                                 .with_knobs(Knobs{{knob, value}}));
      EXPECT_EQ(kernel.prepared().config.knobs.get(knob), value);
      for (const int group : {1, 4, 8})
        for (const auto& [seq_q, seq_k] : std::vector<std::pair<int, int>>{{1, 1}, {1, 4097}, {4, 333}, {16, 1537}}) {
          const ForwardProblem problem{2, 2 * group, 2, seq_q, seq_k};
          const ForwardCheckResult r = check_forward(kernel, problem, preset_scalars(variant), seed);
          std::printf("[ result ] %s %d %s %s D=%d %s: %s\n", knob.c_str(), value, preset.c_str(),
                      element_type_name(dtype).c_str(), head_dim, problem.str().c_str(), r.summary().c_str());
          EXPECT_TRUE(r.pass) << knob << " " << value << " " << preset << " " << problem.str() << ": " << r.summary();
        }
    }
}

// RoPE's turns a sin/cos per pair and row (knob rope_steps 0; the default 1 runs in DecodePreset).
TEST(DecodeRopeSteps, PassesTheTwoTimesRule) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  check_decode_knob("rope_causal", "rope_steps", 0, 19);
}

// Every shared-memory row layout (knob row_pad 0: swizzled, the default without RoPE; 8: padded,
// RoPE's default; 16: padded and aligned), with ALiBi-causal and with RoPE (whose turns address
// the rows too).
TEST(DecodeRowPad, PassesTheTwoTimesRule) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  for (const int pad : {0, 8, 16})
    for (const char* preset : {"alibi_causal", "rope_causal"}) check_decode_knob(preset, "row_pad", pad, 23);
}

INSTANTIATE_TEST_SUITE_P(Registry, DecodePreset, ::testing::ValuesIn(decode_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return decode_case_name(info.param); });

}  // namespace
}  // namespace attnjit
