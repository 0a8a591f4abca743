// The split-K decode template without a GPU: when the dispatcher picks it, its split
// heuristic and launch plan, and an NVRTC compile of every preset it serves for sm_80 and
// sm_90a (with at most a few spilled bytes).
#include <gtest/gtest.h>
#include <string>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "support/temp_cache.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"

namespace attnjit {
namespace {

class DecodeCodegen : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { temp_ = new TempKernelCache("attnjit_decode_codegen_"); }
  static void TearDownTestSuite() {
    delete temp_;
    temp_ = nullptr;
  }
  static CompileOptions options(const std::string& arch, int head_dim, int seq_q) {
    return CompileOptions()
        .with_arch(arch)
        .with_head_dim(head_dim)
        .with_cache(temp_->cache())
        .with_shape_hint(4, 32, 8, seq_q, 32768);
  }
  static TempKernelCache* temp_;
};
TempKernelCache* DecodeCodegen::temp_ = nullptr;

// Chosen by name for decode shapes only (not by default until it has been measured on a GPU).
TEST_F(DecodeCodegen, ServesDecodeShapesOnly) {
  const auto decode = [](CompileOptions o) { return o.with_template(kDecodeTemplateName); };
  EXPECT_EQ(generate(presets::causal(), decode(options("sm_90a", 128, 1))).config.template_name, kDecodeTemplateName);
  EXPECT_EQ(generate(presets::causal(), decode(options("sm_90a", 128, 16))).config.template_name, kDecodeTemplateName);
  EXPECT_EQ(generate(presets::causal(), options("sm_80", 128, 1)).config.template_name, "fwd_sm80");
  // RoPE turns Q and the K tiles inside the decode kernel.
  const PreparedKernel rope = generate(presets::by_name("rope_causal"), decode(options("sm_80", 64, 1)));
  EXPECT_EQ(rope.config.template_name, kDecodeTemplateName);
  EXPECT_NE(rope.source.find("rope_rows<BN>"), std::string::npos);
  EXPECT_NE(rope.source.find("#define AJ_HAS_ROPE 1"), std::string::npos);
  for (auto [variant, options_] : {std::pair{presets::causal(), decode(options("sm_90a", 128, 17))},
                                   std::pair{presets::causal(), decode(options("sm_80", 96, 1))}}) {
    try {
      generate(variant, options_);
      ADD_FAILURE() << "decode_sm80 accepted " << variant.name();
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("cannot implement"), std::string::npos) << e.what();
    }
  }
}

TEST_F(DecodeCodegen, SplitsFillTheMachineAndKeepATilePerSplit) {
  // 8 batches x 8 kv heads x one row block (4 query heads per kv head, Sq=1) = 64 CTAs on 264
  // slots (132 SMs, two CTAs each): 4 splits fill 97% of one wave (5 would need a second wave
  // 21% busy, as the old rounding-up rule chose).
  EXPECT_EQ(decode_splits(ProblemShape{8, 32, 8, 1, 32768}, 64, 0, 264), 4);
  EXPECT_EQ(decode_splits(ProblemShape{8, 32, 8, 1, 32768}, 64, 0, 132), 2);    // one CTA per SM
  EXPECT_EQ(decode_splits(ProblemShape{1, 32, 8, 1, 100}, 64, 0, 264), 2);      // only two kv tiles
  EXPECT_EQ(decode_splits(ProblemShape{64, 64, 64, 1, 8192}, 64, 0, 264), 1);   // 15.5 waves already
  EXPECT_EQ(decode_splits(ProblemShape{8, 32, 8, 1, 32768}, 64, 16, 264), 16);  // a knob wins
  EXPECT_EQ(decode_splits(ProblemShape{8, 32, 8, 1, 100}, 64, 16, 264), 2);     // but not past the tiles
  EXPECT_EQ(decode_splits(ProblemShape{8, 32, 8, 1, 1024}, 64, 14, 264), 8);    // 16 tiles: 2 per split
  // Every count it returns has equal splits of whole tiles.
  for (int seq_k : {1, 100, 1000, 4097, 32768})
    for (int batch : {1, 3, 8, 64}) {
      const ProblemShape p{batch, 32, 8, 1, seq_k};
      const int tiles = (seq_k + 63) / 64, s = decode_splits(p, 64, 0, 264);
      ASSERT_GE(s, 1);
      ASSERT_LE(s, tiles);
      const int per_split = (tiles + s - 1) / s;
      EXPECT_EQ((tiles + per_split - 1) / per_split, s) << p.str();
    }

  const Knobs split_k{{"stream_k", 0}};
  const PreparedKernel p =
      generate(presets::causal(), options("sm_90a", 128, 4).with_template(kDecodeTemplateName).with_knobs(split_k));
  const LaunchPlan plan = p.launch_plan(ProblemShape{2, 64, 4, 4, 1000});  // group 16 x Sq 4 = 64 rows
  // The last split to finish merges: no combine kernel.
  ASSERT_EQ(plan.kernels.size(), 1u);
  EXPECT_EQ(plan.kernels[0].kernel, "attnjit_decode");
  const unsigned splits = plan.kernels[0].grid.x;
  EXPECT_EQ(splits, 16u);  // 8 CTAs: one per kv tile is the busiest wave there is
  EXPECT_EQ(plan.kernels[0].grid.y, 4u);
  // One split counter per (sequence, kv head, row block), kept zeroed by the runtime.
  EXPECT_EQ(plan.zeroed_bytes, 2u * 4 * 1 * sizeof(int));
  ASSERT_TRUE(static_cast<bool>(plan.bind_zeroed));
  // Partial O (fp32) and LSE per split and row.
  const std::size_t rows = 2ull * 64 * 4 * splits;
  EXPECT_GE(plan.workspace_bytes, rows * 128 * 4 + rows * 4);

  // The default ring (two stages, 70 KiB) would fit three CTAs per SM by shared memory, but the
  // kernel's registers hold two: 64 CTAs per split on 132 SMs fill one wave with 4 splits, where
  // counting three per SM chose 6 (a wave and a half).
  const PreparedKernel d =
      generate(presets::dense(), options("sm_90a", 128, 1).with_template(kDecodeTemplateName).with_knobs(split_k));
  EXPECT_EQ(d.config.knobs.get("stages"), 2);
  ProblemShape decode{8, 32, 8, 1, 32768};
  decode.multiprocessors = 132;
  decode.max_shared_bytes_per_block = 227 * 1024;
  EXPECT_EQ(d.launch_plan(decode).kernels[0].grid.x, 4u);
}

// KV-cache calls give each sequence its own kv_len: the decode unit turns that on, every other
// unit keeps kv_len = args.seq_k (the macro's default in the hook section).
TEST_F(DecodeCodegen, OnlyTheDecodeUnitSeesPerSequenceLengths) {
  const Variant bottom_right = presets::causal(presets::CausalAlignment::BottomRight);
  const PreparedKernel decode = generate(bottom_right, options("sm_90a", 128, 1).with_template(kDecodeTemplateName));
  EXPECT_NE(decode.unit.body.find("#define AJ_PER_SEQUENCE_LENGTHS 1"), std::string::npos);
  EXPECT_NE(decode.unit.body.find("const int kv_len = aj_kv_len(b, args);"), std::string::npos);
  const PreparedKernel forward = generate(bottom_right, options("sm_80", 128, 1));
  EXPECT_EQ(forward.unit.body.find("#define AJ_PER_SEQUENCE_LENGTHS 1"), std::string::npos);
  EXPECT_NE(forward.unit.body.find("#define AJ_PER_SEQUENCE_LENGTHS 0"), std::string::npos);
}

// rope_steps: RoPE units get AJ_ROPE_STEPPED with 1, the default (and compile for both
// architectures, D 64 and 128, without spills); 0 and variants without RoPE get nothing new.
TEST_F(DecodeCodegen, RopeStepsTurnsOnTheSteppedKTurns) {
  const auto decode = [](CompileOptions o, int steps) {
    return o.with_template(kDecodeTemplateName).with_knobs(Knobs{{"rope_steps", steps}});
  };
  const Variant rope = presets::by_name("rope_causal");
  EXPECT_EQ(generate(rope, options("sm_80", 128, 1).with_template(kDecodeTemplateName)).config.knobs.get("rope_steps"),
            1);
  EXPECT_EQ(generate(rope, decode(options("sm_80", 128, 1), 0)).unit.body.find("#define AJ_ROPE_STEPPED 1"),
            std::string::npos);
  EXPECT_EQ(
      generate(presets::causal(), decode(options("sm_80", 128, 1), 1)).unit.body.find("#define AJ_ROPE_STEPPED 1"),
      std::string::npos);
  for (const char* arch : {"sm_80", "sm_90a"})
    for (const int dim : {64, 128}) {
      SCOPED_TRACE(std::string(arch) + " D=" + std::to_string(dim));
      const PreparedKernel p = prepare(rope, decode(options(arch, dim, 4), 1));
      EXPECT_NE(p.unit.body.find("#define AJ_ROPE_STEPPED 1"), std::string::npos);
      EXPECT_EQ(p.cached.metadata->resources.worst_case().spill_store_bytes, 0);
    }
  EXPECT_THROW(generate(rope, decode(options("sm_80", 128, 1), 2)), UserError);
}

// row_pad: 8 and 16 define AJ_ROW_PAD and size the ring for their rows (the default 0 defines
// nothing new); both compile for both architectures, D 64 and 128, with RoPE and without, with
// no spills; any other value is a UserError.
TEST_F(DecodeCodegen, RowPadAlignsEveryRow) {
  const auto decode = [](CompileOptions o, int pad) {
    return o.with_template(kDecodeTemplateName).with_knobs(Knobs{{"row_pad", pad}});
  };
  const GeneratedUnit swizzled = generate(presets::causal(), decode(options("sm_80", 128, 1), 0)).unit;
  EXPECT_EQ(generate(presets::causal(), options("sm_80", 128, 1).with_template(kDecodeTemplateName))
                .config.knobs.get("row_pad"),
            0);
  EXPECT_EQ(generate(presets::by_name("rope_causal"), options("sm_80", 128, 1).with_template(kDecodeTemplateName))
                .config.knobs.get("row_pad"),
            8);  // RoPE's turns address single elements: padded rows are its default
  for (const int pad : {8, 16}) {
    const GeneratedUnit unit = generate(presets::causal(), decode(options("sm_80", 128, 1), pad)).unit;
    const std::string define = "#define AJ_ROW_PAD " + std::to_string(pad) + "\n";
    EXPECT_EQ(swizzled.body.find(define), std::string::npos);
    EXPECT_NE(unit.body.find(define), std::string::npos);
    // 2 stages of K and V, 64 rows each, `pad` more elements of 2 bytes per row
    EXPECT_EQ(unit.max_dynamic_shared_bytes - swizzled.max_dynamic_shared_bytes, 2 * 2 * 64 * pad * 2);
    for (const char* arch : {"sm_80", "sm_90a"})
      for (const int dim : {64, 128})
        for (const char* preset : {"alibi_causal", "rope_causal"}) {
          SCOPED_TRACE(std::string(arch) + " D=" + std::to_string(dim) + " " + preset + " pad " + std::to_string(pad));
          const PreparedKernel p = prepare(presets::by_name(preset), decode(options(arch, dim, 4), pad));
          EXPECT_EQ(p.config.knobs.get("row_pad"), pad);
          EXPECT_EQ(p.cached.metadata->resources.worst_case().spill_store_bytes, 0);
        }
  }
  EXPECT_THROW(generate(presets::causal(), decode(options("sm_80", 128, 1), 12)), UserError);
}

// Each ring depth compiles for both architectures without spills; a bad one is a UserError.
TEST_F(DecodeCodegen, EveryStageCountCompiles) {
  for (const char* arch : {"sm_80", "sm_90a"})
    for (int stages : {2, 3, 4}) {
      SCOPED_TRACE(std::string(arch) + " stages=" + std::to_string(stages));
      const PreparedKernel p =
          prepare(presets::by_name("alibi_causal"),
                  options(arch, 128, 1).with_template(kDecodeTemplateName).with_knobs(Knobs{{"stages", stages}}));
      EXPECT_EQ(p.config.knobs.get("stages"), stages);
      EXPECT_EQ(p.cached.metadata->resources.worst_case().spill_store_bytes, 0);
    }
  EXPECT_THROW(generate(presets::causal(),
                        options("sm_80", 128, 1).with_template(kDecodeTemplateName).with_knobs(Knobs{{"stages", 5}})),
               UserError);
}

// Stream-K: a 1-D grid of one CTA per resident slot (fewer when the capacity holds fewer kv
// tiles), two partial slots per CTA; it compiles for both architectures without spills (a few
// bytes where the split-K unit spills too); more sequences than its prefix holds is a UserError.
TEST_F(DecodeCodegen, StreamKPlansACtaPerSlotAndCompiles) {
  const Knobs stream_k{{"stream_k", 1}};
  for (const char* arch : {"sm_80", "sm_90a"})
    for (const char* preset : {"alibi_causal", "document_causal", "softcap"})
      for (int d : {64, 128}) {
        SCOPED_TRACE(std::string(arch) + " " + preset + " d=" + std::to_string(d));
        const PreparedKernel p = prepare(presets::by_name(preset),
                                         options(arch, d, 1).with_template(kDecodeTemplateName).with_knobs(stream_k));
        EXPECT_EQ(p.config.knobs.get("stream_k"), 1);
        EXPECT_NE(p.unit.body.find("#define AJ_STREAM_K 1"), std::string::npos);
        EXPECT_LE(p.cached.metadata->resources.worst_case().spill_store_bytes, 64);
      }
  const PreparedKernel p = generate(presets::by_name("alibi_causal"),
                                    options("sm_90a", 128, 1).with_template(kDecodeTemplateName).with_knobs(stream_k));
  ProblemShape decode{8, 32, 8, 1, 32768};
  decode.multiprocessors = 132;
  decode.max_shared_bytes_per_block = 227 * 1024;
  const LaunchPlan plan = p.launch_plan(decode);
  ASSERT_EQ(plan.kernels.size(), 1u);
  EXPECT_EQ(plan.kernels[0].grid.x, 264u);  // two per SM, as the split-K rule counts
  EXPECT_EQ(plan.kernels[0].grid.y, 1u);
  EXPECT_EQ(plan.kernels[0].grid.z, 1u);
  EXPECT_GE(plan.workspace_bytes, 2ull * 264 * 4 * (128 * 4 + 4));  // 4 rows: the GQA group at Sq = 1
  EXPECT_EQ(plan.zeroed_bytes, 8u * 8 * 1 * sizeof(int));           // a counter per (sequence, kv head, row block)
  ProblemShape short_cache{1, 32, 8, 1, 100};                       // 2 tiles x 8 kv heads
  short_cache.multiprocessors = 132;
  EXPECT_EQ(p.launch_plan(short_cache).kernels[0].grid.x, 16u);
  EXPECT_THROW(p.launch_plan(ProblemShape{1025, 32, 8, 1, 100}), UserError);
  // The default for a hinted batch it takes; split-K past that.
  const auto default_stream_k = [](int batch) {
    const CompileOptions o =
        options("sm_90a", 128, 1).with_template(kDecodeTemplateName).with_shape_hint(batch, 32, 8, 1, 4096);
    return generate(presets::causal(), o).config.knobs.get("stream_k");
  };
  EXPECT_EQ(default_stream_k(kDecodeStreamKMaxBatch), 1);
  EXPECT_EQ(default_stream_k(kDecodeStreamKMaxBatch + 1), 0);
  EXPECT_THROW(generate(presets::causal(),
                        options("sm_80", 128, 1).with_template(kDecodeTemplateName).with_knobs(Knobs{{"stream_k", 2}})),
               UserError);
}

class DecodeCompile : public DecodeCodegen, public ::testing::WithParamInterface<std::string> {};

TEST_P(DecodeCompile, EveryServedPresetCompiles) {
  int compiled = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const Variant v = preset.make();
    if (v.rope()) continue;  // fwd_sm80 runs RoPE decode shapes
    const int d = index++ % 2 ? 128 : 64;
    SCOPED_TRACE(preset.name + " " + GetParam() + " d=" + std::to_string(d));
    const PreparedKernel p = prepare(v, options(GetParam(), d, 1).with_template(kDecodeTemplateName));
    EXPECT_EQ(p.config.template_name, kDecodeTemplateName);
    ASSERT_TRUE(p.cached.cubin && p.cached.metadata);
    // document_causal (two tensor reads per masked element) spills 44 bytes at D=64 on sm_90a;
    // the others none. A decode kernel waits on memory, a few spilled bytes do not show there.
    EXPECT_LE(p.cached.metadata->resources.worst_case().spill_store_bytes, 64);
    ++compiled;
  }
  EXPECT_EQ(compiled, static_cast<int>(presets::registry().size()) - 1);
}

INSTANTIATE_TEST_SUITE_P(Archs, DecodeCompile, ::testing::Values("sm_80", "sm_90a"));

}  // namespace
}  // namespace attnjit
