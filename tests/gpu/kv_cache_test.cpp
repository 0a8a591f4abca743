// GPU tests of Kernel::forward_kv_cache (runtime/api/kv_cache.cpp, templates/decode_sm80.cuh):
// every preset the decode template serves, in decode shapes (Sq = 1, 4, 16) against paged caches
// (page sizes 16, 64, 256 and 48, which does not divide a tile) and contiguous ones, with random
// per-sequence lengths that include 0 and 1 (at Sq = 1; at Sq = 16 the shortest holds the 16
// new tokens) and up to 32k keys, GQA 1:1, 4:1 and 8:1, bf16 and
// fp16, D = 64 and 128, by FlashAttention's rule against the fp64 reference with per-sequence
// lengths (runtime/reference/kv_cache_check.hpp; cache rows past a length and spare pages hold
// NaN, so a read the kernel must not make fails). Then the argument checks. Skips with a
// message without a GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/kv_cache_check.hpp"
#include "support/decode_cases.hpp"
#include "support/device_tensor.hpp"
#include "support/gpu_present.hpp"
#include "support/preset_scalars.hpp"
#include "support/reduced_suite.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"

namespace attnjit {
namespace {

using Case = DecodeCase;

class KvCachePreset : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    std::string why;
    if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  }
};

TEST_P(KvCachePreset, PassesTheTwoTimesRule) {
  const auto& [preset, dtype, head_dim, group] = GetParam();
  const Variant variant = presets::by_name(preset);
  const Kernel kernel = compile(variant, CompileOptions().with_head_dim(head_dim).with_dtype(dtype));
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(decode_case_name(GetParam()))));
  const auto random_len = [&](int most) { return std::uniform_int_distribution<int>(2, most)(rng); };
  std::vector<KvCacheProblem> problems = {
      {3, 2 * group, 2, 1, {0, 1, random_len(5000)}, 0, 16},
      {2, 2 * group, 2, 4, {random_len(3000), 333}, 0, 48},
      // A step of 16 new tokens: each sequence holds at least those (a shorter one would put
      // queries before its start, where bottom-right aligned variants read out of range).
      {2, 2 * group, 2, 16, {random_len(2000), 16}, 2048, 0},
      {2, 2 * group, 2, 4, {random_len(1500), random_len(1500)}, 0, 256},
      {1, 2 * group, 2, 1, {32768 - 5}, 0, 64},
  };
  // The 32k case once per preset (its reference is the slow part), and not under the sanitizers.
  if (group != 4 || reduced_suite()) problems.pop_back();
  for (const auto& problem : problems) {
    const ForwardCheckResult r = check_forward_kv_cache(kernel, problem, preset_scalars(variant), 23);
    std::printf("[ result ] %-40s %s: %s\n", decode_case_name(GetParam()).c_str(), problem.str().c_str(),
                r.summary().c_str());
    EXPECT_TRUE(r.pass) << decode_case_name(GetParam()) << " " << problem.str() << ": " << r.summary();
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, KvCachePreset, ::testing::ValuesIn(decode_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return decode_case_name(info.param); });

// The decode unit's two schedules on lengths that test them. Stream-K (knob stream_k = 1, the
// default): all sequences' kv tiles cut into equal CTA ranges, so a range may hold the end of
// one (sequence, kv head) and the start of the next, or the middle of one long sequence that
// many CTAs share; equal lengths take the split layout (each range inside one unit). Split-K
// (stream_k = 0, automatic and forced split counts): each capacity cut alike, splits past a
// sequence's end empty. Lengths that differ widely (0, 1, 32k), more sequences than CTAs, fewer
// tiles than CTAs, equal lengths with spare capacity, paged and contiguous, Sq = 1 and 4.
TEST(KvCacheSchedules, PassTheTwoTimesRule) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  std::mt19937 rng(5);
  std::vector<int> many(300);  // 300 sequences of 0 to 700 keys, one in ten empty
  for (int& len : many) len = rng() % 10 == 0 ? 0 : static_cast<int>(rng() % 700);
  const std::vector<KvCacheProblem> problems = {
      {4, 32, 8, 1, {0, 1, 32768 - 5, 100}, 0, 0},
      {3, 8, 2, 4, {5000, 0, 17}, 0, 48},
      {2, 4, 4, 1, {1, 2}, 0, 16},  // fewer tiles than CTAs: one CTA per tile
      {300, 8, 2, 1, many, 704, 64},
      {2, 64, 4, 4, {3001, 4097}, 0, 0},  // 64 rows per kv head: a CTA's whole row block
      {3, 32, 8, 4, {4097, 4097, 4097}, 0, 48},
      {8, 16, 2, 1, std::vector<int>(8, 2000), 8192, 0},
  };
  const std::vector<std::pair<const char*, Knobs>> schedules = {
      {"causal_bottom_right", Knobs{{"stream_k", 1}}},
      {"alibi", Knobs{{"stream_k", 1}}},
      {"softcap", Knobs{{"stream_k", 1}}},
      {"document_causal", Knobs{{"stream_k", 1}}},
      {"alibi", Knobs{{"stream_k", 0}}},
      {"document_causal", Knobs{{"stream_k", 0}, {"splits", 4}}},
  };
  for (const auto& [preset, knobs] : schedules) {
    const Variant variant = presets::by_name(preset);
    for (int head_dim : {64, 128}) {
      if (knobs.get("stream_k") == 0 && head_dim == 64) continue;  // split-K: one head dim
      const Kernel kernel = compile(variant, CompileOptions()
                                                 .with_head_dim(head_dim)
                                                 .with_template(kDecodeTemplateName)
                                                 .with_knobs(knobs)
                                                 .with_shape_hint(4, 32, 8, 1, 32768));
      ASSERT_EQ(kernel.prepared().config.knobs.get("stream_k"), knobs.get("stream_k"));
      for (const auto& problem : problems) {
        if (reduced_suite() && problem.batch == 300) continue;
        const ForwardCheckResult r = check_forward_kv_cache(kernel, problem, preset_scalars(variant), 29);
        std::printf("[ result ] %s %s D=%d %s: %s\n", knobs.str().c_str(), preset, head_dim, problem.str().c_str(),
                    r.summary().c_str());
        EXPECT_TRUE(r.pass) << knobs.str() << " " << preset << " D=" << head_dim << " " << problem.str() << ": "
                            << r.summary();
      }
    }
  }
}

// A batch larger than stream-K takes runs split-K through the same call (a unit of its own),
// and the default unit is stream-K, whichever call comes first.
TEST(KvCacheLargeBatch, RunsSplitKPastStreamKsBatch) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  std::mt19937 rng(7);
  std::vector<int> lens(kDecodeStreamKMaxBatch + 76);
  for (int& len : lens) len = static_cast<int>(rng() % 300);
  const Variant variant = presets::by_name("alibi");
  const Kernel kernel = compile(variant, CompileOptions().with_head_dim(64));
  const KvCacheProblem small{4, 8, 2, 1, {100, 0, 3000, 7}, 0, 16};
  const KvCacheProblem large{static_cast<int>(lens.size()), 8, 2, 1, lens, 320, 16};
  for (const auto& problem : {small, large}) {
    const ForwardCheckResult r = check_forward_kv_cache(kernel, problem, preset_scalars(variant), 31);
    std::printf("[ result ] batch %d: %s\n", problem.batch, r.summary().c_str());
    EXPECT_TRUE(r.pass) << problem.str() << ": " << r.summary();
  }
  ASSERT_NE(kernel.prepared_decode(), nullptr);
  EXPECT_EQ(kernel.prepared_decode()->config.knobs.get("stream_k"), 1);
  // The large batch first: the default unit is still stream-K for the smaller calls after it.
  const Kernel large_first = compile(variant, CompileOptions().with_head_dim(64));
  for (const auto& problem : {large, small}) {
    const ForwardCheckResult r = check_forward_kv_cache(large_first, problem, preset_scalars(variant), 37);
    EXPECT_TRUE(r.pass) << "large first, " << problem.str() << ": " << r.summary();
  }
  ASSERT_NE(large_first.prepared_decode(), nullptr);
  EXPECT_EQ(large_first.prepared_decode()->config.knobs.get("stream_k"), 1);
}

// The argument checks, each a UserError that names what is wrong.
TEST(KvCacheArguments, BadCallsAreUserErrors) {
  std::string why;
  if (!gpu_present(why)) GTEST_SKIP() << "no GPU: " << why;
  const Kernel kernel = compile(presets::causal(), CompileOptions().with_head_dim(64));
  const DLDataType bf16 = dlpack_bfloat16(), i32 = dlpack_int32(), f32 = dlpack_float32();
  DeviceTensor q(bf16, {2, 4, 1, 64}), o(bf16, {2, 4, 1, 64}), q_long(bf16, {2, 4, 17, 64}),
      o_long(bf16, {2, 4, 17, 64});
  DeviceTensor pages(bf16, {10, 16, 2, 64}), table(i32, {2, 5}), table_3(i32, {3, 5});
  DeviceTensor lens(i32, {2}), lens_f(f32, {2});
  KvCache good;
  good.k = pages.view;
  good.v = pages.view;
  good.seq_lens = lens.view;
  good.block_table = table.view;
  const DLTensor qv = q.view, ov = o.view;
  EXPECT_EQ(kernel.prepared_decode(), nullptr);  // built on first use
  EXPECT_NO_THROW(kernel.forward_kv_cache(qv, good, ov, nullptr));
  synchronize_device(0);
  // What ran, for reports (attnjit bench --kv-cache): the decode unit, not the compiled one.
  ASSERT_NE(kernel.prepared_decode(), nullptr);
  EXPECT_EQ(kernel.prepared_decode()->config.template_name, "decode_sm80");
  EXPECT_NE(kernel.prepared().config.template_name, "decode_sm80");

  const auto expect_error = [&](const KvCache& cache, const DLTensor& qq, const DLTensor& oo, const std::string& says) {
    try {
      kernel.forward_kv_cache(qq, cache, oo, nullptr);
      ADD_FAILURE() << "no error; expected one saying '" << says << "'";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  KvCache c = good;
  c.seq_lens = lens_f.view;
  expect_error(c, qv, ov, "seq_lens must be an int32");
  c = good;
  c.block_table = table_3.view;
  expect_error(c, qv, ov, "one row per sequence");
  expect_error(good, q_long.view, o_long.view, "at most 16 queries");
  c = good;
  c.block_table.reset();  // pages read as a contiguous cache: 10 entries for 2 sequences
  expect_error(c, qv, ov, "one entry per sequence");
}

}  // namespace
}  // namespace attnjit
