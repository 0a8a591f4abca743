// The Hopper forward template without a GPU: when the dispatcher picks it (and when it hands a
// request to fwd_sm80), its knob rules, the generated wgmma wrappers, its launch plan, and NVRTC
// compiles for sm_90a: every preset it serves at D=256 (tests/compiler/codegen_test.cpp compiles
// D=64/128), and fwd_sm80's units for sm_90a, which stay the fallback there.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "support/temp_cache.hpp"
#include "templates/abi.h"
#include "templates/fwd_sm90/fwd_sm90_template.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;  // score, kv

class FwdSm90Codegen : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { temp_ = new TempKernelCache("attnjit_fwd_sm90_codegen_"); }
  static void TearDownTestSuite() {
    delete temp_;
    temp_ = nullptr;
  }
  static CompileOptions options(const std::string& arch, int head_dim, ElementType dtype = ElementType::BF16) {
    return CompileOptions().with_arch(arch).with_head_dim(head_dim).with_dtype(dtype).with_cache(temp_->cache());
  }
  static TempKernelCache* temp_;
};
TempKernelCache* FwdSm90Codegen::temp_ = nullptr;

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Items back to back (knob item_overlap): only on the persistent schedule with two Q buffers,
// not for ragged units; off by default; NVRTC compiles it for sm_90a at D=64 and 128.
TEST_F(FwdSm90Codegen, ItemOverlapNeedsThePersistentScheduleAndTwoQBuffers) {
  const auto overlap = [&](const char* preset, int d, Knobs k) {
    return count(generate(presets::by_name(preset), options("sm_90a", d).with_knobs(std::move(k))).source,
                 "#define AJ_ITEM_OVERLAP 1") == 1;
  };
  EXPECT_TRUE(overlap("causal", 128, Knobs{{"persistent", 1}, {"item_overlap", 1}}));
  EXPECT_FALSE(overlap("causal", 128, Knobs{{"persistent", 0}, {"item_overlap", 1}}));
  EXPECT_FALSE(overlap("causal", 128, Knobs{{"persistent", 1}, {"item_overlap", 1}, {"stages", 3}}));  // one Q buffer
  EXPECT_FALSE(overlap("causal", 128, Knobs{{"persistent", 1}}));
  EXPECT_EQ(generate(presets::causal(), options("sm_90a", 128)).config.knobs.get("item_overlap"), 0);
  const KernelTemplate& t = TemplateRegistry::instance().get(kFwdSm90TemplateName);
  const int limit = 232448;  // sm_90's opt-in shared memory per block
  EXPECT_NE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"item_overlap", 2}}, 128, limit)
                .reason()
                .find("item_overlap 2 is not 0 or 1"),
            std::string::npos);
  for (const int d : {64, 128}) {
    const PreparedKernel compiled =
        prepare(presets::by_name("document_causal"), options("sm_90a", d).with_knobs(Knobs{{"item_overlap", 1}}));
    EXPECT_EQ(count(compiled.source, "#define AJ_ITEM_OVERLAP 1"), 1) << d;
    ASSERT_TRUE(compiled.cached.cubin) << d;
  }
}

// The last tile marked in its word (knob last_in_word): opt-in, on either schedule, not with
// items back to back (which read end stages); NVRTC compiles it where an item can have no tile
// (a block mask, document items) and at every head dim.
TEST_F(FwdSm90Codegen, LastInWordOptInAndNotWithItemOverlap) {
  const auto marked = [&](const char* preset, int d, Knobs k) {
    return count(generate(presets::by_name(preset), options("sm_90a", d).with_knobs(std::move(k))).source,
                 "#define AJ_LAST_IN_WORD 1") == 1;
  };
  EXPECT_TRUE(marked("causal", 128, Knobs{{"last_in_word", 1}}));
  EXPECT_TRUE(marked("causal", 128, Knobs{{"persistent", 1}, {"last_in_word", 1}}));
  EXPECT_FALSE(marked("causal", 128, Knobs{{"persistent", 1}, {"item_overlap", 1}, {"last_in_word", 1}}));
  EXPECT_FALSE(marked("causal", 128, Knobs{{"persistent", 1}}));
  EXPECT_EQ(generate(presets::causal(), options("sm_90a", 128)).config.knobs.get("last_in_word"), 0);
  const KernelTemplate& t = TemplateRegistry::instance().get(kFwdSm90TemplateName);
  EXPECT_NE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"last_in_word", 3}}, 128, 232448)
                .reason()
                .find("last_in_word 3 is not 0 or 1"),
            std::string::npos);
  const Tensor blocks("blocks", ir::TensorDType::I32, 3);
  const Variant learned = Variant("learned_blocks").with_mask_mod(blocks(h, q / 128, kv / 128) != 0);
  for (const auto& [variant, d, persistent] :
       {std::tuple{presets::by_name("document_causal"), 64, 1}, std::tuple{learned, 128, 1},
        std::tuple{presets::by_name("sliding_window"), 256, 0}, std::tuple{presets::causal(), 64, 1}}) {
    const PreparedKernel compiled =
        prepare(variant, options("sm_90a", d).with_knobs(Knobs{{"persistent", persistent}, {"last_in_word", 1}}));
    EXPECT_EQ(count(compiled.source, "#define AJ_LAST_IN_WORD 1"), 1) << variant.name() << " " << d;
    ASSERT_TRUE(compiled.cached.cubin) << variant.name() << " " << d;
  }
}

TEST_F(FwdSm90Codegen, ChosenOnSm90aForItsHeadDimsElseFwdSm80) {
  for (const int d : {64, 128, 256})
    EXPECT_EQ(generate(presets::causal(), options("sm_90a", d)).config.template_name, kFwdSm90TemplateName) << d;
  EXPECT_EQ(generate(presets::causal(), options("sm_90a", 96)).config.template_name, "fwd_sm80");
  EXPECT_EQ(generate(presets::causal(), options("sm_90", 128)).config.template_name, "fwd_sm80");
  EXPECT_EQ(generate(presets::causal(), options("sm_80", 128)).config.template_name, "fwd_sm80");
  EXPECT_EQ(generate(presets::by_name("rope_causal"), options("sm_90a", 128)).config.template_name,
            kFwdSm90TemplateName);
  // Knobs of fwd_sm80 without a template name: the template that has them.
  EXPECT_EQ(generate(presets::causal(), options("sm_90a", 128).with_knobs(Knobs{{"block_m", 64}, {"warps", 4}}))
                .config.template_name,
            "fwd_sm80");
  EXPECT_EQ(generate(presets::causal(), options("sm_90a", 128).with_knobs(Knobs{{"stages", 3}})).config.knobs.str(),
            "block_n=128 consumers=2 doc_items=0 doc_runs=1 item_overlap=0 last_in_word=0 persistent=0 pingpong=1 "
            "ragged_items=2 stages=3");
  EXPECT_EQ(generate(presets::causal(), options("sm_90a", 64).with_knobs(Knobs{{"pingpong", 0}})).config.knobs.str(),
            "block_n=128 consumers=3 doc_items=0 doc_runs=1 item_overlap=0 last_in_word=0 persistent=0 pingpong=0 "
            "ragged_items=2 stages=2");
  // A knob no template has: every template's reason.
  try {
    generate(presets::causal(), options("sm_90a", 128).with_knobs(Knobs{{"tiles", 3}}));
    ADD_FAILURE() << "an unknown knob was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("has no knob 'tiles'"), std::string::npos) << e.what();
  }
}

TEST_F(FwdSm90Codegen, HintedShortSequencesTakeOneConsumerAtD64) {
  const auto consumers = [&](int head_dim, int seq) {
    CompileOptions o = options("sm_90a", head_dim);
    if (seq > 0) o.with_shape_hint(4, 8, 8, seq, seq);
    return generate(presets::causal(), o).config.knobs.get("consumers");
  };
  EXPECT_EQ(consumers(64, 0), 3);     // no hint: the long-sequence choice
  EXPECT_EQ(consumers(64, 1024), 1);  // two CTAs per SM
  EXPECT_EQ(consumers(64, 1000), 1);
  EXPECT_EQ(consumers(64, 1025), 3);
  EXPECT_EQ(consumers(64, 4096), 3);
  EXPECT_EQ(consumers(128, 1024), 2);
  EXPECT_EQ(consumers(128, 16384), 2);
}

// Hinted short sequences at D=128: two stages on the persistent schedule (a second Q buffer
// beside the ring); three where that schedule is off with plain scores (a mask that reads a
// tensor other than a document's ids).
TEST_F(FwdSm90Codegen, HintedShortSequencesTakeTwoStagesAndTwoQBuffersAtD128) {
  const auto knobs = [&](const Variant& v, int head_dim, int seq) {
    CompileOptions o = options("sm_90a", head_dim);
    if (seq > 0) o.with_shape_hint(4, 8, 8, seq, seq);
    return generate(v, o).config.knobs;
  };
  const auto stages = [&](const char* preset, int head_dim, int seq) {
    return knobs(presets::by_name(preset), head_dim, seq).get("stages");
  };
  EXPECT_EQ(stages("causal", 128, 0), 2);  // no hint
  for (const char* preset : {"causal", "dense", "sliding_window", "alibi_causal", "softcap"}) {
    EXPECT_EQ(stages(preset, 128, 1024), 2) << preset;
    EXPECT_EQ(knobs(presets::by_name(preset), 128, 1024).get("persistent"), 1) << preset;
  }
  EXPECT_EQ(stages("dense", 128, 777), 2);
  EXPECT_EQ(stages("causal", 128, 1025), 2);
  EXPECT_EQ(stages("causal", 64, 1024), 2);
  EXPECT_EQ(stages("causal", 256, 1024), 2);
  const Tensor blocks("blocks", ir::TensorDType::I32, 3);
  const Variant learned = Variant("learned_blocks").with_mask_mod(blocks(h, q / 128, kv / 128) != 0);
  EXPECT_EQ(knobs(learned, 128, 1024).get("persistent"), 0);
  EXPECT_EQ(knobs(learned, 128, 1024).get("stages"), 3);
}

TEST_F(FwdSm90Codegen, TanhApproxOnlyInTheSm90Forward) {
  const std::string define = "#define AJ_TANH_APPROX 1";
  const Variant softcap = presets::by_name("softcap_causal");
  EXPECT_EQ(count(generate(softcap, options("sm_90a", 128)).source, define), 1);
  EXPECT_EQ(count(generate(softcap, options("sm_80", 128)).source, define), 0);
  EXPECT_EQ(count(generate(softcap, options("sm_90a", 96)).source, define), 0);  // fwd_sm80 there
}

TEST_F(FwdSm90Codegen, SoftmaxScaleFoldsIntoTheScoresFirstProduct) {
  const auto source = [&](const Variant& v) { return generate(v, options("sm_90a", 128)).source; };
  // Soft-cap: score / softcap on the raw product, one multiply per element.
  const std::string softcap = source(presets::by_name("softcap_causal"));
  EXPECT_EQ(count(softcap, "#define AJ_SCORE_MOD_RAW 1"), 1);
  EXPECT_EQ(count(softcap, "return (softcap * aj_tanh((raw * (scale * aj_rcp(softcap)))));"), 1) << softcap;
  // A product with a parameter, in either order.
  Variant temperature("temperature");
  temperature.with_score_mod(param_float("inv_t") * score);
  EXPECT_EQ(count(source(temperature), "return (raw * (scale * inv_t));"), 1) << source(temperature);
  // Not when score is also used alone, after an add, or times something per key.
  Variant both("both");
  both.with_score_mod(score + score * 0.5);
  EXPECT_EQ(count(source(both), "#define AJ_SCORE_MOD_RAW 0"), 1);
  EXPECT_EQ(count(source(presets::by_name("alibi_window_softcap")), "#define AJ_SCORE_MOD_RAW 0"), 1);
  Variant inside("inside");  // score straight into a function
  inside.with_score_mod(tanh(score));
  EXPECT_EQ(count(source(inside), "#define AJ_SCORE_MOD_RAW 0"), 1);
  Variant per_key("per_key");
  per_key.with_score_mod(score * to_float(kv));
  EXPECT_EQ(count(source(per_key), "#define AJ_SCORE_MOD_RAW 0"), 1);
  EXPECT_EQ(count(source(presets::by_name("causal")), "#define AJ_SCORE_MOD_RAW 0"), 1);
}

TEST_F(FwdSm90Codegen, SplitScoreModsAddTheirKeyPartPerTile) {
  // ALiBi and the forget gate: the key part from a per-tile table, the row part in the LSE.
  for (const char* name : {"alibi_causal", "forget_gate"}) {
    const PreparedKernel k =
        generate(presets::by_name(name), options("sm_90a", 128).with_shape_hint(4, 16, 16, 4096, 4096));
    EXPECT_EQ(count(k.source, "#define AJ_SCORE_SPLIT 1"), 1) << name;
    EXPECT_EQ(count(k.source, "#define AJ_SPLIT_TABLES 1"), 1) << name;
    EXPECT_EQ(count(k.source, "aj_score_col(b, h, kv, anchor, args)"), 1) << name;
    EXPECT_EQ(count(k.source, "aj_score_row(b, h, q, q0, args)"), 1) << name;
    // ALiBi persistent by default (on rows of a hinted S=4096), with a second Q buffer beside the
    // tables; not the forget gate, whose key part reads a tensor (it measured slower so).
    const bool alibi = std::string(name) == "alibi_causal";
    EXPECT_EQ(count(k.source, "#define AJ_PERSISTENT 1"), alibi ? 1 : 0) << name;
    EXPECT_EQ(k.unit.max_dynamic_shared_bytes,
              fwd_sm90_shared_bytes(128, 128, 2, 2, alibi ? 2 : 1) + fwd_sm90_split_table_bytes(128, 2));
  }
  // Persistent by default, on a hinted problem whose rows span at most 32 key tiles, with a mask
  // that reads no tensor at D=128 (causal) or a short problem; not for long dense rows, longer
  // or unhinted rows, or D=256: a CTA per query block. Document masks take it with document items
  // (DocumentItemsListTheirItemsBeforeTheForward).
  const auto persistent = [&](const char* preset, CompileOptions o) {
    return count(generate(presets::by_name(preset), o).source, "#define AJ_PERSISTENT 1") == 1;
  };
  EXPECT_TRUE(persistent("causal", options("sm_90a", 128).with_shape_hint(4, 16, 16, 4096, 4096)));
  EXPECT_FALSE(persistent("causal", options("sm_90a", 128).with_shape_hint(1, 16, 16, 16384, 16384)));
  EXPECT_FALSE(persistent("causal", options("sm_90a", 128)));
  EXPECT_FALSE(persistent("alibi_causal", options("sm_90a", 128)));
  EXPECT_FALSE(persistent("causal", options("sm_90a", 64).with_shape_hint(4, 32, 32, 4096, 4096)));  // 3 consumers
  EXPECT_TRUE(persistent("causal", options("sm_90a", 64).with_shape_hint(32, 32, 32, 1024, 1024)));
  EXPECT_TRUE(persistent("dense", options("sm_90a", 128).with_shape_hint(16, 16, 16, 1024, 1024)));
  EXPECT_FALSE(persistent("dense", options("sm_90a", 128)));
  EXPECT_FALSE(persistent("dense", options("sm_90a", 128).with_shape_hint(4, 16, 16, 4096, 4096)));
  EXPECT_TRUE(persistent("document_causal", options("sm_90a", 128).with_shape_hint(4, 16, 16, 4096, 4096)));
  EXPECT_FALSE(persistent("causal", options("sm_90a", 256).with_shape_hint(4, 8, 8, 4096, 4096)));
  // Ragged units (hinted by their longest sequence): at D=128 and 64 whenever rows span at most
  // 32 key tiles, dense too; not at D=64 with one consumer (longest <= 1024), nor at D=256.
  const auto ragged = [&](int head_dim, int longest) {
    CompileOptions o = options("sm_90a", head_dim).with_shape_hint(8, 16, 16, longest, longest);
    o.ragged = true;
    return o;
  };
  EXPECT_TRUE(persistent("causal_bottom_right", ragged(128, 4096)));
  EXPECT_TRUE(persistent("dense", ragged(128, 4096)));
  EXPECT_FALSE(persistent("dense", ragged(128, 16384)));
  EXPECT_TRUE(persistent("causal_bottom_right", ragged(64, 4096)));
  EXPECT_FALSE(persistent("causal_bottom_right", ragged(64, 1024)));
  EXPECT_FALSE(persistent("causal_bottom_right", ragged(256, 4096)));
  // Three stages of 128 keys at D=128 leave no room for the tables: per element as before.
  const PreparedKernel full = generate(
      presets::by_name("alibi_causal"),
      options("sm_90a", 128)
          .with_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 3}, {"pingpong", 1}, {"persistent", 1}}));
  EXPECT_EQ(count(full.source, "#define AJ_SPLIT_TABLES 0"), 1);
  EXPECT_EQ(count(full.source, "#define AJ_PERSISTENT 1"), 1);
  EXPECT_EQ(count(full.source, "#define AJ_Q_BUFFERS 2"), 0);  // a second Q buffer does not fit
  EXPECT_EQ(full.unit.max_dynamic_shared_bytes, fwd_sm90_shared_bytes(128, 128, 2, 3));
  // Learned slopes[h]: not split (their gradient follows O's rounding; see hook_emitter.cpp).
  EXPECT_EQ(
      count(generate(presets::by_name("alibi_tensor"), options("sm_90a", 128)).source, "#define AJ_SCORE_SPLIT 0"), 1);
  // Soft-cap wraps the score in tanh: no split.
  const std::string softcap = generate(presets::by_name("softcap_causal"), options("sm_90a", 128)).source;
  EXPECT_EQ(count(softcap, "#define AJ_SCORE_SPLIT 0"), 1);
  EXPECT_EQ(count(softcap, "#define AJ_SPLIT_TABLES 0"), 1);
  EXPECT_EQ(count(softcap, "float aj_score_col("), 0);
}

TEST_F(FwdSm90Codegen, KnobRulesNameTheKnobAndTheLimit) {
  const KernelTemplate& t = TemplateRegistry::instance().get(kFwdSm90TemplateName);
  const int limit = 232448;  // sm_90's opt-in shared memory per block
  const auto check = [&](int block_n, int consumers, int stages, int d) {
    return t.check_knobs(Knobs{{"block_n", block_n}, {"consumers", consumers}, {"stages", stages}}, d, limit);
  };
  EXPECT_TRUE(check(128, 2, 2, 128).supported());
  EXPECT_TRUE(check(80, 2, 2, 256).supported());
  EXPECT_TRUE(check(128, 3, 2, 64).supported());
  EXPECT_NE(check(72, 2, 2, 128).reason().find("block_n 72"), std::string::npos);
  EXPECT_NE(check(128, 4, 2, 128).reason().find("consumers 4"), std::string::npos);
  EXPECT_NE(check(128, 0, 2, 128).reason().find("consumers 0"), std::string::npos);
  // One consumer: two CTAs per SM, so each gets half the shared memory (D=128: block_n 64 fits,
  // 128 does not; D=64: 128 fits).
  EXPECT_TRUE(check(64, 1, 2, 128).supported());
  EXPECT_TRUE(check(128, 1, 2, 64).supported());
  EXPECT_NE(check(128, 1, 2, 128).reason().find("two CTAs per SM"), std::string::npos);
  EXPECT_NE(check(128, 2, 5, 128).reason().find("stages 5"), std::string::npos);
  EXPECT_NE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"pingpong", 2}}, 128, limit)
                .reason()
                .find("pingpong 2"),
            std::string::npos);
  EXPECT_NE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"persistent", 2}}, 128, limit)
                .reason()
                .find("persistent 2 is not 0 or 1"),
            std::string::npos);
  EXPECT_NE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"doc_items", 2}}, 128, limit)
                .reason()
                .find("doc_items 2 is not 0 or 1"),
            std::string::npos);
  EXPECT_TRUE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"persistent", 1}}, 128, limit)
                  .supported());
  // S + P + O accumulators past what 160 registers leave (3 consumers).
  EXPECT_NE(check(176, 3, 2, 128).reason().find("accumulator registers"), std::string::npos);
  // Q 64 KiB + 4 stages of 32 KiB K and V at D=256: past the limit.
  EXPECT_NE(check(64, 2, 4, 256).reason().find("shared memory"), std::string::npos);
  // Q, K and V tiles, the mbarriers (Q full / empty / item full, four per stage, walk done), each
  // stage's tile word, the Q buffer's item word, the alignment slack; a persistent plan's second Q
  // buffer.
  EXPECT_EQ(fwd_sm90_shared_bytes(128, 128, 2, 2), 128 * 128 * 2 + 4 * 128 * 128 * 2 + 8 * 12 + 4 * 2 + 4 + 1024);
  EXPECT_EQ(fwd_sm90_shared_bytes(128, 128, 2, 2, 2) - fwd_sm90_shared_bytes(128, 128, 2, 2),
            128 * 128 * 2 + 8 * 3 + 4);
}

TEST_F(FwdSm90Codegen, WgmmaWrappersCarryEveryAccumulator) {
  const std::string bf16 = wgmma_wrappers(ElementType::BF16, 128, 64);
  EXPECT_EQ(count(bf16, "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"), 1) << bf16;
  EXPECT_EQ(count(bf16, "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16"), 1) << bf16;
  // 64 accumulators for S (128 keys / 2 per thread), 32 for O (64 / 2), all in-out operands.
  EXPECT_EQ(count(bf16, "\"+f\"(d["), 64 + 32) << bf16;
  EXPECT_NE(bf16.find("\"+f\"(d[63])"), std::string::npos);
  const std::string fp16 = wgmma_wrappers(ElementType::FP16, 80, 256);
  EXPECT_EQ(count(fp16, "m64n80k16.f32.f16.f16"), 1) << fp16;
  EXPECT_EQ(count(fp16, "m64n256k16.f32.f16.f16"), 1) << fp16;
  EXPECT_EQ(count(fp16, "\"+f\"(d["), 40 + 128);
}

TEST_F(FwdSm90Codegen, LaunchPlanCarriesTheTensorMapsAndTheBlockMask) {
  const PreparedKernel p = generate(presets::by_name("dense"), options("sm_90a", 128));
  const LaunchPlan plan = p.launch_plan(ProblemShape{2, 16, 4, 1000, 1537});
  ASSERT_EQ(plan.kernels.size(), 1u);
  EXPECT_EQ(plan.kernels[0].grid.x, (1000u + 127) / 128);
  EXPECT_EQ(plan.kernels[0].grid.y, 16u);
  EXPECT_EQ(plan.kernels[0].block.x, 384u);
  EXPECT_EQ(plan.args_bytes, sizeof(AttnjitFwdSm90Args));
  EXPECT_TRUE(static_cast<bool>(plan.finish_args));
  EXPECT_EQ(plan.workspace_bytes, 0u);
  // A mask that reads a tensor: the block-mask kernel first, tiles of 128 x block_n; a document
  // mask's runs before it, into a slot after the variant's tensors.
  const PreparedKernel doc = generate(presets::by_name("document_causal"), options("sm_90a", 256));
  const LaunchPlan with_mask = doc.launch_plan(ProblemShape{1, 8, 8, 1000, 1000});
  ASSERT_EQ(with_mask.kernels.size(), 3u);
  EXPECT_EQ(with_mask.kernels[0].kernel, "attnjit_tensor_runs");
  EXPECT_EQ(with_mask.runs_source, 0);
  EXPECT_EQ(with_mask.runs_slot, 1);
  EXPECT_EQ(with_mask.kernels[1].role, "block_mask");
  EXPECT_EQ(with_mask.kernels[1].grid.x, (1000u + 79) / 80);  // block_n 80 at D=256
  EXPECT_GT(with_mask.block_mask_bytes, 0u);
  EXPECT_EQ(plan.zeroed_bytes, 0u);  // one CTA per query block: no work counter
}

TEST_F(FwdSm90Codegen, PersistentPlanLaunchesACtaPerSmWithItsCounters) {
  const PreparedKernel p =
      generate(presets::by_name("alibi_causal"), options("sm_90a", 128).with_knobs(Knobs{{"persistent", 1}}));
  ASSERT_EQ(p.config.knobs.get("persistent"), 1);
  ProblemShape big{4, 16, 16, 4096, 4096};
  big.multiprocessors = 132;
  const LaunchPlan plan = p.launch_plan(big);
  ASSERT_EQ(plan.kernels.size(), 1u);
  // 32 query blocks x 16 heads x 4 sequences = 2048 items on 132 SMs, one CTA each.
  EXPECT_EQ(plan.kernels[0].grid.x, 132u);
  EXPECT_EQ(plan.kernels[0].grid.y, 1u);
  EXPECT_EQ(plan.kernels[0].grid.z, 1u);
  // The next item and the CTAs that ran out: zeroed by the runtime, bound into the block.
  ASSERT_EQ(plan.zeroed_bytes, 2 * sizeof(int));
  AttnjitFwdSm90Args block{};
  plan.bind_zeroed(block.fwd, 0x1000);
  EXPECT_EQ(block.work_counters, reinterpret_cast<int*>(0x1000));
  // Fewer items than SMs: a CTA per item.
  ProblemShape small{1, 2, 2, 257, 333};
  small.multiprocessors = 132;
  EXPECT_EQ(p.launch_plan(small).kernels[0].grid.x, 3u * 2);  // 3 blocks of 128 rows x 2 heads
  // With one consumer, two CTAs per SM.
  const PreparedKernel one = generate(
      presets::by_name("alibi_causal"),
      options("sm_90a", 64).with_knobs(Knobs{{"consumers", 1}, {"block_n", 128}, {"stages", 2}, {"persistent", 1}}));
  EXPECT_EQ(one.launch_plan(big).kernels[0].grid.x, 264u);
}

// Work items aligned to documents (knob doc_items, with persistent): the mask inside a document
// and its tile classes in the unit, the pre-pass that lists the items between the runs and the
// forward, no block-mask launch, the list in the workspace before the block mask; off without
// the persistent schedule; NVRTC compiles it for sm_90a at D=64 and 128.
// Ragged units on the persistent schedule take their items from a list: by default (ragged_items
// 2, the knob set everywhere, without effect elsewhere) the forward lists a batch of at most 32
// sequences itself and a pre-pass (templates/ragged_items.cuh) lists a larger one; with 1 the
// pre-pass lists every batch; off with ragged_items 0 or without the persistent schedule, never
// for a padded unit. The pre-pass's list sits in the workspace, 16 + 8 bytes per sequence;
// NVRTC compiles both for sm_90a at D=64 and 128.
TEST_F(FwdSm90Codegen, RaggedItemsListedBeforeTheForward) {
  const auto ragged = [&](int head_dim, Knobs knobs) {
    CompileOptions o = options("sm_90a", head_dim).with_shape_hint(8, 16, 16, 4096, 4096);
    if (!knobs.values().empty()) o = o.with_knobs(std::move(knobs));
    o.ragged = true;
    return o;
  };
  EXPECT_EQ(generate(presets::by_name("causal_bottom_right"), ragged(128, {})).config.knobs.get("ragged_items"), 2);
  const PreparedKernel p =
      generate(presets::by_name("causal_bottom_right"), ragged(128, Knobs{{"persistent", 1}, {"ragged_items", 1}}));
  EXPECT_EQ(count(p.source, "#define AJ_RAGGED_ITEMS 1"), 1);
  EXPECT_EQ(count(p.source, "#define AJ_RAGGED_LIST_HERE 32"), 0);
  EXPECT_EQ(p.unit.kernel_names, (std::vector<std::string>{"attnjit_ragged_items", "attnjit_fwd"}));
  ProblemShape shape{8, 16, 16, 4096, 4096};
  shape.multiprocessors = 132;
  const LaunchPlan plan = p.launch_plan(shape);
  ASSERT_EQ(plan.kernels.size(), 2u);
  EXPECT_EQ(plan.kernels[0].role, "ragged_items");
  EXPECT_EQ(plan.kernels[0].grid.x, 1u);
  EXPECT_EQ(plan.kernels[0].block.x, 1024u);
  EXPECT_EQ(plan.kernels[1].role, "forward");
  EXPECT_EQ(plan.workspace_bytes, 256u);  // 16 + 8 * 8, rounded up to 256
  AttnjitFwdSm90Args block{};
  plan.bind_workspace(block.fwd, 1u << 20);
  EXPECT_EQ(block.ragged_items, reinterpret_cast<int*>(1u << 20));
  EXPECT_EQ(block.doc_items, nullptr);
  // Off: by the knob, without the persistent schedule, and for a padded unit.
  const PreparedKernel off = generate(presets::by_name("causal_bottom_right"), ragged(128, Knobs{{"ragged_items", 0}}));
  EXPECT_EQ(count(off.source, "#define AJ_RAGGED_ITEMS 1"), 0);
  EXPECT_EQ(off.unit.kernel_names, (std::vector<std::string>{"attnjit_fwd"}));
  EXPECT_EQ(count(generate(presets::by_name("causal_bottom_right"), ragged(128, Knobs{{"persistent", 0}})).source,
                  "#define AJ_RAGGED_ITEMS 1"),
            0);
  const PreparedKernel padded =
      generate(presets::causal(), options("sm_90a", 128).with_shape_hint(8, 16, 16, 4096, 4096));
  EXPECT_EQ(count(padded.source, "#define AJ_RAGGED_ITEMS 1"), 0);
  for (const int d : {64, 128}) {
    const PreparedKernel compiled =
        prepare(presets::by_name("causal_bottom_right"), ragged(d, Knobs{{"persistent", 1}, {"ragged_items", 1}}));
    EXPECT_EQ(count(compiled.source, "#define AJ_RAGGED_ITEMS 1"), 1) << d;
    EXPECT_EQ(count(compiled.source, "#define AJ_RAGGED_LIST_HERE 32"), 0) << d;
    ASSERT_TRUE(compiled.cached.cubin) << d;
    EXPECT_NE(compiled.cached.cubin->find("attnjit_ragged_items"), std::string::npos) << d;
  }
  // ragged_items 2 (the default): a batch of at most 32 sequences is listed by the forward itself
  // (no pre-pass launch, no workspace); a larger one as with 1.
  const KernelTemplate& t = TemplateRegistry::instance().get(kFwdSm90TemplateName);
  EXPECT_NE(t.check_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}, {"ragged_items", 3}}, 128, 232448)
                .reason()
                .find("ragged_items 3 is not 0, 1 or 2"),
            std::string::npos);
  for (const int d : {64, 128}) {
    const PreparedKernel here = prepare(presets::by_name("causal_bottom_right"), ragged(d, {}));
    EXPECT_EQ(count(here.source, "#define AJ_RAGGED_ITEMS 1"), 1) << d;
    EXPECT_EQ(count(here.source, "#define AJ_RAGGED_LIST_HERE 32"), 1) << d;
    ASSERT_TRUE(here.cached.cubin) << d;
    ProblemShape small{32, 16, 16, 4096, 4096}, large{33, 16, 16, 4096, 4096};
    small.multiprocessors = large.multiprocessors = 132;
    const LaunchPlan in_kernel = here.launch_plan(small), listed = here.launch_plan(large);
    ASSERT_EQ(in_kernel.kernels.size(), 1u) << d;
    EXPECT_EQ(in_kernel.kernels[0].role, "forward");
    EXPECT_EQ(in_kernel.workspace_bytes, 0u);
    ASSERT_EQ(listed.kernels.size(), 2u) << d;
    EXPECT_EQ(listed.kernels[0].role, "ragged_items");
    EXPECT_EQ(listed.workspace_bytes, 512u);  // 16 + 8 * 33, rounded up to 256
  }
}

TEST_F(FwdSm90Codegen, DocumentItemsListTheirItemsBeforeTheForward) {
  const Knobs on{{"doc_items", 1}, {"persistent", 1}};
  const PreparedKernel p = generate(presets::by_name("document_causal"), options("sm_90a", 128).with_knobs(on));
  EXPECT_EQ(count(p.source, "#define AJ_DOC_ITEMS 1"), 1);
  EXPECT_EQ(count(p.source, "#define AJ_MASK_DOC 1"), 1);
  EXPECT_EQ(count(p.source, "// rest = kv <= q + kv_len - q_len\n"), 1) << p.source;
  EXPECT_EQ(count(p.source, "int aj_tile_class_doc("), 1);
  EXPECT_EQ(count(p.source, "aj_mask_pair_doc("), 2);  // defined, and called by mask_scores
  const std::vector<std::string> names = {"attnjit_tensor_runs", "attnjit_block_mask", "attnjit_doc_items",
                                          "attnjit_fwd"};
  EXPECT_EQ(p.unit.kernel_names, names);
  ProblemShape shape{3, 8, 8, 1000, 1000};
  shape.multiprocessors = 132;
  const LaunchPlan plan = p.launch_plan(shape);
  ASSERT_EQ(plan.kernels.size(), 3u);
  EXPECT_EQ(plan.kernels[0].role, "tensor_runs");
  EXPECT_EQ(plan.kernels[1].role, "doc_items");
  EXPECT_EQ(plan.kernels[1].grid.x, 1u);
  EXPECT_EQ(plan.kernels[1].block.x, 1024u);
  EXPECT_EQ(plan.kernels[2].role, "forward");
  EXPECT_EQ(plan.zeroed_bytes, 2 * sizeof(int));
  // [items | block mask]: 16 bytes of count, then at most ceil(1000 / 128) + 1000 items per row.
  const std::size_t items = (16 + 16 * 3 * (8 + 1000) + 255) / 256 * 256;
  EXPECT_EQ(plan.workspace_bytes, items + plan.block_mask_bytes);
  AttnjitFwdSm90Args block{};
  plan.bind_workspace(block.fwd, 1u << 20);
  EXPECT_EQ(block.doc_items, reinterpret_cast<int*>(1u << 20));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(block.fwd.tile_classes), (1u << 20) + items);
  // A document mask without causal: inside a document every pair is admitted.
  EXPECT_EQ(
      count(generate(presets::by_name("document"), options("sm_90a", 128).with_knobs(on)).source, "// rest = true\n"),
      1);
  // Off without the persistent schedule (the item list needs its counter).
  EXPECT_EQ(count(generate(presets::by_name("document_causal"),
                           options("sm_90a", 128).with_knobs(Knobs{{"doc_items", 1}, {"persistent", 0}}))
                      .source,
                  "#define AJ_DOC_ITEMS 1"),
            0);
  // On by default for document masks at D=64 and 128 (with the persistent schedule, whatever the
  // hinted length), not at D=256, not where the score_mod reads a tensor, not for other masks.
  for (const int d : {64, 128}) {
    const PreparedKernel by_default = generate(presets::by_name("document_causal"), options("sm_90a", d));
    EXPECT_EQ(count(by_default.source, "#define AJ_DOC_ITEMS 1"), 1) << d;
    EXPECT_EQ(by_default.config.knobs.get("persistent"), 1) << d;
  }
  EXPECT_EQ(count(generate(presets::by_name("document_causal"),
                           options("sm_90a", 128).with_shape_hint(1, 16, 16, 16384, 16384))
                      .source,
                  "#define AJ_DOC_ITEMS 1"),
            1);
  EXPECT_EQ(
      count(generate(presets::by_name("document_causal"), options("sm_90a", 256)).source, "#define AJ_DOC_ITEMS 1"), 0);
  const Variant gated_document =
      presets::by_name("forget_gate").then(presets::by_name("document_causal")).with_name("gated_document");
  EXPECT_EQ(generate(gated_document, options("sm_90a", 128)).config.knobs.get("doc_items"), 0);
  EXPECT_EQ(generate(presets::by_name("sliding_window"), options("sm_90a", 128)).config.knobs.get("doc_items"), 0);
  // A compare that is not a conjunct of the mask is no document: no mask inside one.
  const Variant either = Variant("either").with_mask_mod(presets::by_name("document").mask_mod() || kv == 0);
  EXPECT_EQ(count(generate(either, options("sm_90a", 128).with_knobs(on)).source, "#define AJ_MASK_DOC 1"), 0);
  for (const int d : {64, 128}) {
    const PreparedKernel compiled = prepare(presets::by_name("document_causal"), options("sm_90a", d).with_knobs(on));
    ASSERT_TRUE(compiled.cached.cubin) << d;
    EXPECT_NE(compiled.cached.cubin->find("attnjit_doc_items"), std::string::npos) << d;
  }
}

TEST_F(FwdSm90Codegen, RopeTurnsQAndKInPrepassesTheTmaReads) {
  const PreparedKernel p = generate(presets::by_name("rope_causal"), options("sm_90a", 128));
  EXPECT_NE(p.unit.body.find("#define AJ_ROPE_Q_PREPASS 1"), std::string::npos);
  const ProblemShape shape{2, 16, 4, 1000, 1537};
  const LaunchPlan plan = p.launch_plan(shape);
  ASSERT_EQ(plan.kernels.size(), 3u);
  EXPECT_EQ(plan.kernels[0].role, "rope_q");
  EXPECT_EQ(plan.kernels[0].grid.x, (1000u * 64 + 4095) / 4096);  // 256 threads, 16 pairs each
  EXPECT_EQ(plan.kernels[0].grid.y, 16u);
  EXPECT_EQ(plan.kernels[1].role, "rope_k");
  EXPECT_EQ(plan.kernels[1].grid.x, (1537u * 64 + 4095) / 4096);
  EXPECT_EQ(plan.kernels[1].grid.y, 4u);
  EXPECT_EQ(plan.kernels[2].role, "forward");
  // Q and K turned, each 256-byte aligned: [Q | K].
  const std::size_t q_bytes = (2ull * 16 * 1000 * 128 * 2 + 255) / 256 * 256;
  const std::size_t k_bytes = (2ull * 4 * 1537 * 128 * 2 + 255) / 256 * 256;
  EXPECT_EQ(plan.workspace_bytes, q_bytes + k_bytes);
  AttnjitFwdArgs args{};
  plan.bind_workspace(args, 1u << 20);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(args.rope_q), 1u << 20);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(args.rope_k), (1u << 20) + q_bytes);
  // A rotary dimension past the head: refused with the numbers.
  try {
    RopeHook wide;
    wide.rotary_dim = 160;
    generate(presets::rope(wide).then(presets::causal()), options("sm_90a", 128));
    ADD_FAILURE() << "rotary_dim 160 at head_dim 128 was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("rotary_dim 160 exceeds head_dim 128"), std::string::npos) << e.what();
  }
}

// D=256 for every preset fwd_sm90 serves, alternating dtypes.
TEST_F(FwdSm90Codegen, EveryServedPresetCompilesAtHeadDim256) {
  int compiled = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const Variant v = preset.make();
    const ElementType dtype = index++ % 2 ? ElementType::FP16 : ElementType::BF16;
    SCOPED_TRACE(preset.name);
    const PreparedKernel p = prepare(v, options("sm_90a", 256, dtype));
    EXPECT_EQ(p.config.template_name, kFwdSm90TemplateName);
    ASSERT_TRUE(p.cached.cubin && p.cached.metadata);
    EXPECT_NE(p.unit.body.find("wgmma.mma_async"), std::string::npos);
    ++compiled;
  }
  EXPECT_EQ(compiled, static_cast<int>(presets::registry().size()));
}

// The diagnostic trace (AJ_TRACE 1, tools/gpu/trace-items.sh): the unit compiles for sm_90a
// with the unmangled global the runtime reads after a launch (runtime/driver/kernel_trace),
// for the persistent and the one-item-per-CTA loops; by default neither is defined.
TEST_F(FwdSm90Codegen, TraceBuildDefinesTheRecordsTheRuntimeReads) {
  for (const int persistent : {0, 1}) {
    SCOPED_TRACE(persistent);
    const PreparedKernel unit =
        generate(presets::causal(), options("sm_90a", 128).with_knobs(Knobs{{"persistent", persistent}}));
    const std::string plain =
        runtime::compile_to_cubin(unit.source, runtime::NvrtcCompileOptions().set_arch("sm_90a")).cubin;
    EXPECT_EQ(plain.find("aj_trace"), std::string::npos);
    const std::string traced = runtime::compile_to_cubin("#define AJ_TRACE 1\n" + unit.source,
                                                         runtime::NvrtcCompileOptions().set_arch("sm_90a"))
                                   .cubin;
    EXPECT_NE(traced.find(std::string("aj_trace") + '\0'), std::string::npos);
  }
}

// fwd_sm80 stays the fallback on sm_90a (RoPE, other head dims, a call the TMA cannot take):
// its units must keep compiling there for every preset.
TEST_F(FwdSm90Codegen, FwdSm80StillCompilesForSm90aForEveryPreset) {
  int compiled = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const int d = index++ % 2 ? 128 : 64;
    SCOPED_TRACE(preset.name + " d=" + std::to_string(d));
    const PreparedKernel p = prepare(preset.make(), options("sm_90a", d).with_template("fwd_sm80"));
    EXPECT_EQ(p.config.template_name, "fwd_sm80");
    ASSERT_TRUE(p.cached.cubin && p.cached.metadata);
    ++compiled;
  }
  EXPECT_EQ(compiled, static_cast<int>(presets::registry().size()));
}

}  // namespace
}  // namespace attnjit
