// The ragged-batch unit without a GPU: fwd_sm80 and fwd_sm90 serve it (fwd_sm90 declines RoPE;
// masks that read tensors get the block-mask kernel over the longest sequence's tiles), it turns
// on per-sequence offsets and lengths (RoPE's positions included), and it compiles with NVRTC for
// sm_80 and sm_90a for every preset served.
#include <gtest/gtest.h>

#include <string>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "support/temp_cache.hpp"

namespace attnjit {
namespace {

TEST(RaggedCodegen, BothForwardTemplatesTurnOnPerSequenceLengths) {
  TempKernelCache temp("attnjit_ragged_codegen_");
  for (const char* name : {"fwd_sm80", "fwd_sm90"}) {
    SCOPED_TRACE(name);
    CompileOptions o =
        CompileOptions().with_arch("sm_90a").with_head_dim(128).with_template(name).with_cache(temp.cache());
    o.ragged = true;
    const PreparedKernel p = generate(presets::causal(presets::CausalAlignment::BottomRight), o);
    EXPECT_EQ(p.config.template_name, name);
    EXPECT_NE(p.unit.body.find("#define AJ_RAGGED 1"), std::string::npos);
    EXPECT_NE(p.unit.body.find("#define AJ_PER_SEQUENCE_LENGTHS 1"), std::string::npos);
    EXPECT_NE(p.unit.body.find("aj_q_len(b, args)"), std::string::npos);
    for (const char* document : {"document", "document_causal"}) {
      SCOPED_TRACE(document);
      const PreparedKernel d = generate(presets::by_name(document), o);
      // fwd_sm90 computes the ids' runs before the classes (compiler/passes/run_equality.hpp).
      const bool runs = std::string(name) == "fwd_sm90";
      EXPECT_EQ(d.unit.kernel_names.front(), runs ? "attnjit_tensor_runs" : "attnjit_block_mask");
      EXPECT_NE(d.unit.body.find("#define AJ_HAS_BLOCK_MASK 1"), std::string::npos);
      EXPECT_NE(d.unit.body.find("#define AJ_RAGGED 1"), std::string::npos);
      // Its classes cover every sequence at the longest one's tiles.
      const LaunchPlan plan = d.launch_plan(ProblemShape{5, 4, 4, 700, 900});
      ASSERT_GE(plan.kernels.size(), runs ? 3u : 2u);
      const KernelLaunch& classes = plan.kernels[runs ? 1 : 0];
      EXPECT_EQ(classes.kernel, "attnjit_block_mask");
      EXPECT_EQ(classes.grid.z, 5u);  // (sequence) x (one head: the mask does not read h)
      EXPECT_GT(plan.block_mask_bytes, 0u);
    }
    o.ragged = false;
    EXPECT_EQ(generate(presets::causal(), o).unit.body.find("#define AJ_RAGGED 1"), std::string::npos);
  }
  // RoPE: fwd_sm80 turns K in the pre-pass from each sequence's rows of the packed K, the
  // queries at their sequence's own positions; fwd_sm90's pre-passes write one padded layout.
  CompileOptions o = CompileOptions().with_arch("sm_90a").with_head_dim(128).with_cache(temp.cache());
  o.ragged = true;
  const PreparedKernel rope = generate(presets::by_name("rope_causal"), o.with_template("fwd_sm80"));
  EXPECT_NE(rope.unit.body.find("const aj_i64 k_start = args.cu_seqlens_k[b];"), std::string::npos);
  EXPECT_NE(rope.unit.body.find("return q + aj_kv_len(b, args) - aj_q_len(b, args);"), std::string::npos);
  EXPECT_THROW(generate(presets::by_name("rope_causal"), o.with_template("fwd_sm90")), UserError);
}

TEST(RaggedCodegen, EveryServedPresetCompiles) {
  TempKernelCache temp("attnjit_ragged_compile_");
  int compiled = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const std::string arch = index % 2 ? "sm_80" : "sm_90a";
    const int dim = (index / 2) % 2 ? 64 : 128;
    ++index;
    CompileOptions o =
        CompileOptions().with_arch(arch).with_head_dim(dim).with_template("fwd_sm80").with_cache(temp.cache());
    o.ragged = true;
    SCOPED_TRACE(preset.name + " " + arch);
    const PreparedKernel p = prepare(preset.make(), o);
    ASSERT_TRUE(p.cached.cubin);
    ++compiled;
  }
  EXPECT_EQ(compiled, static_cast<int>(presets::registry().size()));
}

// fwd_sm90's ragged unit for sm_90a: every preset without RoPE, at head dims 64, 128 and 256 in
// turn, persistent and not.
TEST(RaggedCodegen, EveryPresetFwdSm90ServesCompiles) {
  TempKernelCache temp("attnjit_ragged_sm90_");
  int compiled = 0, expected = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const Variant variant = preset.make();
    const bool served = !variant.rope();
    expected += served ? 1 : 0;
    const int dim = index % 3 == 0 ? 64 : index % 3 == 1 ? 128 : 256;
    CompileOptions o =
        CompileOptions().with_arch("sm_90a").with_head_dim(dim).with_template("fwd_sm90").with_cache(temp.cache());
    o.knobs.set("persistent", index++ % 2);
    o.ragged = true;
    SCOPED_TRACE(preset.name + " D=" + std::to_string(dim));
    try {
      const PreparedKernel p = prepare(variant, o);
      ASSERT_TRUE(p.cached.cubin);
      EXPECT_TRUE(served);
      ++compiled;
    } catch (const UserError& e) {
      const std::string why = e.what();
      EXPECT_FALSE(served) << why;
      EXPECT_NE(why.find("RoPE"), std::string::npos) << why;
    }
  }
  EXPECT_EQ(compiled, expected);
  EXPECT_GT(compiled, 10);
}

}  // namespace
}  // namespace attnjit
