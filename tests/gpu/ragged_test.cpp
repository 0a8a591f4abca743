// GPU tests of Kernel::forward_ragged (runtime/api/ragged.cpp; the ragged units of fwd_sm80 and
// fwd_sm90, AJ_RAGGED): every preset it serves whose hooks do not name the batch index
// (runtime/reference/ragged_check.hpp), bf16 and fp16, D = 64 and 128, GQA 1:1 and 4:1, packed
// sequences of random lengths that include 0 and 1 queries or keys (and queries without keys),
// by FlashAttention's rule against the fp64 reference run per sequence (outputs poisoned first):
// kernels compiled for the device's default template, then for fwd_sm90 on a Hopper GPU (head
// dims 64 / 128 / 256), then fwd_sm80's unit opted into there, and the argument checks. Skips
// without a GPU.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/ragged_check.hpp"
#include "support/device_tensor.hpp"
#include "support/gpu_present.hpp"
#include "support/preset_scalars.hpp"

namespace attnjit {
namespace {

// Two packed batches of random lengths for 2 kv heads of `group` query heads each, with 0 and 1
// queries or keys among them. Every sequence with keys has at least as many keys as queries:
// bottom-right aligned variants put a sequence's queries at its last positions (more queries
// than keys would read tensors before its start), and the sequence without keys has no more
// queries than the longest has keys (the reference sizes captured tensors by the longest ones).
std::vector<RaggedProblem> random_problems(std::mt19937& rng, int group) {
  const auto len = [&](int most) { return std::uniform_int_distribution<int>(2, most)(rng); };
  const int a = len(400), c = len(1500);
  return {
      {2 * group, 2, {1, 0, a, 77, len(77)}, {5, 3, a + len(100), 77, 0}},
      {2 * group, 2, {c, 1}, {c + len(300), 1}},
  };
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : presets::registry()) names.push_back(p.name);
  return names;
}

class RaggedPreset : public ::testing::TestWithParam<std::string> {};

TEST_P(RaggedPreset, PassesTheTwoTimesRule) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  const Variant variant = presets::by_name(GetParam());
  int index = 0;
  for (const ElementType dtype : {ElementType::BF16, ElementType::FP16})
    for (const int group : {1, 4}) {
      const int dim = index++ % 2 ? 128 : 64;
      Kernel kernel = compile(variant, CompileOptions().with_head_dim(dim).with_dtype(dtype));
      std::mt19937 rng(static_cast<unsigned>(index * 131 + GetParam().size()));
      for (const auto& problem : random_problems(rng, group)) {
        try {
          const ForwardCheckResult r = check_forward_ragged(kernel, problem, preset_scalars(variant), 29);
          std::printf("[ result ] %-22s %s D=%d %s: %s\n", GetParam().c_str(), element_type_name(dtype).c_str(), dim,
                      problem.str().c_str(), r.summary().c_str());
          EXPECT_TRUE(r.pass) << problem.str() << ": " << r.summary();
        } catch (const UserError& e) {
          const std::string what = e.what();
          if (what.find("not served") != std::string::npos || what.find("names the batch index") != std::string::npos)
            GTEST_SKIP() << what;
          throw;
        }
      }
    }
}

// ATTNJIT_RAGGED_SM90=0 (fwd_sm80's ragged unit for every kernel) for one test's lifetime.
struct RaggedOffHopper {
  RaggedOffHopper() { setenv("ATTNJIT_RAGGED_SM90", "0", 1); }
  ~RaggedOffHopper() { unsetenv("ATTNJIT_RAGGED_SM90"); }
};

class RaggedHopperPreset : public ::testing::TestWithParam<std::string> {};

// fwd_sm90's ragged unit: head dims 64 / 128 / 256 in turn, persistent and not, bf16 and fp16,
// GQA 1:1 and 4:1, the sequences of RaggedPreset (0 and 1 queries or keys among them).
TEST_P(RaggedHopperPreset, PassesTheTwoTimesRule) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  const Variant variant = presets::by_name(GetParam());
  // fwd_sm90 targets sm_90a only (the device's arch, not a compile, says whether it runs here).
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "not a Hopper GPU (" << arch << "): fwd_sm90 does not run here";
  if (variant.rope()) GTEST_SKIP() << "fwd_sm90 declines ragged batches with RoPE (fwd_sm80 serves them)";
  int index = 0;
  for (const ElementType dtype : {ElementType::BF16, ElementType::FP16})
    for (const int group : {1, 4}) {
      const int dim = index % 3 == 0 ? 64 : index % 3 == 1 ? 128 : 256;
      const Knobs knobs{{"persistent", index % 2}};
      ++index;
      Kernel kernel = compile(
          variant, CompileOptions().with_head_dim(dim).with_dtype(dtype).with_template("fwd_sm90").with_knobs(knobs));
      std::mt19937 rng(static_cast<unsigned>(index * 173 + GetParam().size()));
      for (const auto& problem : random_problems(rng, group)) {
        try {
          const ForwardCheckResult r = check_forward_ragged(kernel, problem, preset_scalars(variant), 37);
          std::printf("[ result ] %-22s fwd_sm90 %s D=%d persistent=%d %s: %s\n", GetParam().c_str(),
                      element_type_name(dtype).c_str(), dim, knobs.get("persistent"), problem.str().c_str(),
                      r.summary().c_str());
          EXPECT_TRUE(r.pass) << problem.str() << ": " << r.summary();
          ASSERT_NE(kernel.prepared_ragged(), nullptr);
          EXPECT_EQ(kernel.prepared_ragged()->config.template_name, "fwd_sm90");
        } catch (const UserError& e) {
          if (std::string(e.what()).find("names the batch index") != std::string::npos) GTEST_SKIP() << e.what();
          throw;
        }
      }
    }
}

// fwd_sm90's ragged unit with the last tile marked in its word (knob last_in_word): sequences
// without keys keep their end stage, the others end on their last tile's word; both schedules.
TEST(RaggedHopper, LastInWordAgrees) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "not a Hopper GPU (" << arch << "): fwd_sm90 does not run here";
  int index = 0;
  for (const char* preset : {"causal_bottom_right", "dense", "sliding_window"})
    for (const int dim : {64, 128}) {
      const Knobs knobs{{"persistent", index % 2}, {"last_in_word", 1}};
      ++index;
      const Variant variant = presets::by_name(preset);
      Kernel kernel = compile(variant, CompileOptions().with_head_dim(dim).with_template("fwd_sm90").with_knobs(knobs));
      std::mt19937 rng(static_cast<unsigned>(index * 911));
      for (const auto& problem : random_problems(rng, index % 2 == 0 ? 1 : 4)) {
        const ForwardCheckResult r = check_forward_ragged(kernel, problem, preset_scalars(variant), 53);
        std::printf("[ result ] %-22s fwd_sm90 last_in_word D=%d persistent=%d %s: %s\n", preset, dim,
                    knobs.get("persistent"), problem.str().c_str(), r.summary().c_str());
        EXPECT_TRUE(r.pass) << preset << " D=" << dim << " " << problem.str() << ": " << r.summary();
      }
    }
}

// fwd_sm90's persistent ragged unit with its items listed by the pre-pass (knob ragged_items 1),
// by the kernel itself for at most 32 sequences (2, the default), and without (0): the
// sequences of RaggedPreset, 1100 short sequences (0 to 40 queries, more than the pre-pass
// ranks: listed in batch order), and with 2 also 32 and 33 of them (the kernel's list and the
// pre-pass's either side of its bound).
TEST(RaggedHopper, ItemListAgrees) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "not a Hopper GPU (" << arch << "): fwd_sm90 does not run here";
  std::mt19937 rng(2026);
  const auto short_sequences = [&](int count) {
    RaggedProblem many{8, 2, {}, {}};
    for (int i = 0; i < count; ++i) {
      const int q = std::uniform_int_distribution<int>(0, 40)(rng);
      many.seq_lens_q.push_back(q);
      many.seq_lens_k.push_back(q == 0 ? 0 : q + std::uniform_int_distribution<int>(0, 20)(rng));
    }
    return many;
  };
  const RaggedProblem many = short_sequences(1100), at_bound = short_sequences(32), past_bound = short_sequences(33);
  int index = 0;
  for (const char* preset : {"causal_bottom_right", "dense", "sliding_window"})
    for (const int dim : {64, 128})
      for (const int listed : {1, 0, 2}) {
        const Knobs knobs{{"persistent", 1}, {"ragged_items", listed}};
        ++index;
        const Variant variant = presets::by_name(preset);
        Kernel kernel =
            compile(variant, CompileOptions().with_head_dim(dim).with_template("fwd_sm90").with_knobs(knobs));
        std::mt19937 problem_rng(static_cast<unsigned>(index * 577));
        std::vector<RaggedProblem> problems = random_problems(problem_rng, index % 2 == 0 ? 1 : 4);
        if (listed != 0) problems.push_back(many);
        if (listed == 2) problems.insert(problems.end(), {at_bound, past_bound});
        for (const auto& problem : problems) {
          const ForwardCheckResult r = check_forward_ragged(kernel, problem, preset_scalars(variant), 61);
          const std::string what = problem.seq_lens_q.size() > 8
                                       ? fmt::format("{} short sequences", problem.seq_lens_q.size())
                                       : problem.str();
          std::printf("[ result ] %-22s fwd_sm90 ragged_items=%d D=%d %s: %s\n", preset, listed, dim, what.c_str(),
                      r.summary().c_str());
          EXPECT_TRUE(r.pass) << preset << " D=" << dim << " ragged_items=" << listed << " " << what << ": "
                              << r.summary();
          ASSERT_NE(kernel.prepared_ragged(), nullptr);
          EXPECT_EQ(kernel.prepared_ragged()->config.knobs.get("ragged_items"), listed);
        }
      }
}

// The unit forward_ragged runs: built on the first call, the compiled template's (fwd_sm80 or
// fwd_sm90) with the compiled knobs, so a tuned schedule reaches ragged batches; with
// ATTNJIT_RAGGED_SM90=0 a fwd_sm90 kernel's is fwd_sm80's, with that template's defaults.
// `attnjit bench --ragged-lengths` reports it instead of the compiled kernel.
TEST(RaggedUnit, TakesTheCompiledKnobsOnItsOwnTemplate) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  const Knobs chosen{{"block_m", 64}, {"block_n", 32}, {"warps", 4}, {"stages", 2}};
  const Kernel tuned =
      compile(presets::causal(), CompileOptions().with_head_dim(64).with_template("fwd_sm80").with_knobs(chosen));
  const Kernel plain = compile(presets::causal(), CompileOptions().with_head_dim(64));
  EXPECT_EQ(tuned.prepared_ragged(), nullptr);
  const RaggedProblem problem{2, 2, {1, 0, 300, 77}, {5, 3, 333, 77}};
  for (const Kernel* kernel : {&tuned, &plain}) {
    const ForwardCheckResult r = check_forward_ragged(*kernel, problem, Bindings(), 31);
    EXPECT_TRUE(r.pass) << r.summary();
    const PreparedKernel* unit = kernel->prepared_ragged();
    ASSERT_NE(unit, nullptr);
    EXPECT_EQ(unit->config.template_name, kernel->prepared().config.template_name);
    EXPECT_EQ(unit->config.knobs, kernel->prepared().config.knobs);
  }
  EXPECT_EQ(tuned.prepared_ragged()->config.knobs, chosen);
  if (plain.prepared().config.template_name != "fwd_sm90") return;
  const RaggedOffHopper opt_out;
  const Kernel fallback = compile(presets::causal(), CompileOptions().with_head_dim(64));
  const ForwardCheckResult r = check_forward_ragged(fallback, problem, Bindings(), 37);
  EXPECT_TRUE(r.pass) << r.summary();
  ASSERT_NE(fallback.prepared_ragged(), nullptr);
  EXPECT_EQ(fallback.prepared_ragged()->config.template_name, "fwd_sm80");
  EXPECT_NE(fallback.prepared_ragged()->config.knobs, fallback.prepared().config.knobs);
}

// The argument checks, each a UserError that names what is wrong (before anything is launched).
TEST(RaggedArguments, BadCallsAreUserErrors) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  const Kernel kernel = compile(presets::causal(), CompileOptions().with_head_dim(64));
  const DLDataType bf16 = dlpack_bfloat16(), i32 = dlpack_int32(), f32 = dlpack_float32();
  DeviceTensor q(bf16, {10, 4, 64}), o(bf16, {10, 4, 64}), k(bf16, {12, 2, 64}), v(bf16, {12, 2, 64});
  DeviceTensor q4(bf16, {1, 10, 4, 64}), lse(f32, {4, 10}), lse_t(f32, {10, 4});
  DeviceTensor cu(i32, {3}), cu_long(i32, {4}), cu_f(f32, {3});  // zeros: two empty sequences
  RaggedBatch good;
  good.cu_seqlens_q = cu.view;
  good.cu_seqlens_k = cu.view;
  good.max_seqlen_q = 10;
  good.max_seqlen_k = 12;
  EXPECT_NO_THROW(kernel.forward_ragged(q.view, k.view, v.view, o.view, &lse.view, good));
  synchronize_device(0);

  const auto expect_error = [&](const DLTensor& qq, const DLTensor* l, const RaggedBatch& batch,
                                const std::string& says) {
    try {
      kernel.forward_ragged(qq, k.view, v.view, o.view, l, batch);
      ADD_FAILURE() << "no error; expected one saying '" << says << "'";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  expect_error(q4.view, nullptr, good, "has rank 4");
  RaggedBatch b = good;
  b.cu_seqlens_q = cu_f.view;
  expect_error(q.view, nullptr, b, "cu_seqlens_q must be a contiguous int32 tensor");
  b = good;
  b.cu_seqlens_k = cu_long.view;  // 3 sequences of keys for 2 of queries
  expect_error(q.view, nullptr, b, "cu_seqlens_k must be a contiguous int32 tensor of 3 entries");
  b = good;
  b.max_seqlen_q = 0;
  expect_error(q.view, nullptr, b, "must be in [1, total tokens]");
  b = good;
  b.max_seqlen_k = 13;  // more than the 12 packed keys
  expect_error(q.view, nullptr, b, "must be in [1, total tokens]");
  expect_error(q.view, &lse_t.view, good, "lse must be a contiguous f32 CUDA tensor of shape [4, 10]");
}

INSTANTIATE_TEST_SUITE_P(Registry, RaggedPreset, ::testing::ValuesIn(preset_names()));
INSTANTIATE_TEST_SUITE_P(Registry, RaggedHopperPreset, ::testing::ValuesIn(preset_names()));

}  // namespace
}  // namespace attnjit
