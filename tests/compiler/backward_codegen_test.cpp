// The backward templates through the kernel contract, without a GPU: the gradient hook as
// generated from the variant, which template an arch and knobs choose (bwd_sm90 first on
// sm_90a), and an NVRTC compile of every preset and composition for sm_80 (bwd_sm80) and
// sm_90a (bwd_sm90), the spills bounded at the knobs prepare() chooses.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "support/temp_cache.hpp"

namespace attnjit {
namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

class BackwardCodegen : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { temp_ = new TempKernelCache("attnjit_backward_codegen_"); }
  static void TearDownTestSuite() {
    delete temp_;
    temp_ = nullptr;
  }
  static CompileOptions options(const std::string& arch, int head_dim, ElementType dtype) {
    return CompileOptions()
        .with_arch(arch)
        .with_head_dim(head_dim)
        .with_dtype(dtype)
        .with_cache(temp_->cache())
        .with_role(TemplateRole::Backward);
  }
  // bwd_sm80 by name, for its own knobs on sm_90a (where bwd_sm90 comes first).
  static CompileOptions sm80(const std::string& arch, int head_dim, ElementType dtype) {
    return options(arch, head_dim, dtype).with_template("bwd_sm80");
  }
  static TempKernelCache* temp_;
};
TempKernelCache* BackwardCodegen::temp_ = nullptr;

TEST_F(BackwardCodegen, GradientHookFollowsTheVariant) {
  const PreparedKernel causal = generate(presets::causal(), options("sm_80", 64, ElementType::BF16));
  EXPECT_EQ(causal.config.template_name, "bwd_sm80");
  EXPECT_TRUE(contains(causal.unit.body, "#define AJ_HAS_TENSOR_GRADS 0")) << causal.unit.body;
  EXPECT_TRUE(contains(causal.unit.body, "return ds * 1.0f;")) << "identity score_mod: dS passes through";
  EXPECT_TRUE(causal.unit.tensor_gradients.empty());
  // tanh's exponential on the FMA pipe in the backward (bound by MUFU), defined before the helpers.
  const std::size_t choice = causal.unit.body.find("#define AJ_TANH_ON_FMA 1");
  EXPECT_NE(choice, std::string::npos);
  EXPECT_LT(choice, causal.unit.body.find("__device__ __forceinline__ float aj_tanh("));
  EXPECT_EQ(causal.unit.kernel_names,
            (std::vector<std::string>{"attnjit_bwd_preprocess", "attnjit_bwd", "attnjit_bwd_postprocess"}));

  const PreparedKernel bias = generate(presets::by_name("relative_bias"), options("sm_90a", 128, ElementType::FP16));
  EXPECT_TRUE(contains(bias.unit.body, "#define AJ_HAS_TENSOR_GRADS 1"));
  EXPECT_TRUE(contains(bias.unit.body, "aj_grad_add(bargs, 0, aj_grad_offset2(args.tensors[0],")) << bias.unit.body;
  EXPECT_EQ(bias.unit.tensor_gradients, std::vector<std::string>{"rel_bias"});

  // The forget gate's query-side read is the same for every key of a row: one add (the
  // key side) per score element, and the tensor still gets its (zeroed) gradient.
  const PreparedKernel gate = generate(presets::by_name("forget_gate"), options("sm_80", 64, ElementType::BF16));
  EXPECT_EQ(gate.unit.tensor_gradients, std::vector<std::string>{"log_fgate"});
  EXPECT_EQ(count(gate.unit.body, "  aj_grad_add(bargs, "), 1u) << gate.unit.body;
  EXPECT_TRUE(contains(gate.unit.body, "so its share is exactly 0")) << gate.unit.body;

  // An integer tensor (document ids) gets no gradient; a score_mod reading none gets none.
  const PreparedKernel doc = generate(presets::by_name("document_causal"), options("sm_80", 64, ElementType::BF16));
  EXPECT_TRUE(doc.unit.tensor_gradients.empty());
  EXPECT_TRUE(contains(doc.unit.body, "#define AJ_HAS_TENSOR_GRADS 0"));
}

TEST_F(BackwardCodegen, KnobsAreChecked) {
  try {
    generate(presets::causal(), options("sm_90a", 64, ElementType::BF16).with_knobs(Knobs::parse("block_m=48")));
    ADD_FAILURE() << "block_m=48 accepted";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "block_m 48 is not 32 or 64")) << e.what();
  }
}

// On sm_90a bwd_sm90 comes first: bwd_sm80's kernels with the products by wgmma (the wrappers
// generated for the unit's shapes), block_m 64 and a warpgroup per 64 keys; knobs only bwd_sm80
// takes choose bwd_sm80, and bwd_sm90 named with them is the user's error.
TEST_F(BackwardCodegen, HopperRunsTheProductsByWgmma) {
  for (const int d : {64, 128}) {
    SCOPED_TRACE("D=" + std::to_string(d));
    const PreparedKernel p = generate(presets::causal(), options("sm_90a", d, ElementType::BF16));
    EXPECT_EQ(p.config.template_name, "bwd_sm90");
    EXPECT_EQ(p.config.knobs.str(),
              fmt::format("block_m=64 dq_before_dk=1 dq_bulk=0 dq_ordered=0 row_pad=0 stages=2 warps={}", d / 16));
    EXPECT_EQ(count(p.unit.body, "#define AJ_WGMMA 1\n"), 1u);
    EXPECT_LT(p.unit.body.find("#define AJ_WGMMA 1"), p.unit.body.find("#define ATTNJIT_BWD_SM80_CUH"));
    EXPECT_TRUE(contains(p.unit.body, "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16")) << "S^T, dP^T, dQ";
    EXPECT_TRUE(contains(p.unit.body, fmt::format("wgmma.mma_async.sync.aligned.m64n{}k16.f32.bf16.bf16", d)))
        << "dV, dK";
    EXPECT_TRUE(contains(p.unit.body, "p, 1, 1, 1, 1;")) << "dQ reads dS and K transposed";
    // K, V, Q and dO per stage, dS^T, LSE and D, the 1024-byte alignment slack.
    EXPECT_EQ(p.unit.max_dynamic_shared_bytes, 2 * d * d * 2 + 2 * 2 * 64 * d * 2 + d * 64 * 2 + 2 * 2 * 64 * 4 + 1024);
    EXPECT_EQ(p.launch_plan(ProblemShape{2, 8, 2, 1000, 1000}).kernels[1].block.x, static_cast<unsigned>(2 * d));
  }
  // dq_bulk: a staging area per warp (1024 slots of 8 bytes) and bulk reduces; compiles for both dims.
  for (const int d : {64, 128}) {
    const PreparedKernel bulk =
        prepare(presets::causal(), options("sm_90a", d, ElementType::BF16).with_knobs(Knobs::parse("dq_bulk=1")));
    EXPECT_EQ(bulk.config.template_name, "bwd_sm90");
    EXPECT_EQ(count(bulk.unit.body, "#define AJ_DQ_BULK 1\n"), 1u);
    EXPECT_TRUE(contains(bulk.unit.body, "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.u64"));
    EXPECT_EQ(bulk.unit.max_dynamic_shared_bytes,
              generate(presets::causal(), options("sm_90a", d, ElementType::BF16)).unit.max_dynamic_shared_bytes +
                  d / 16 * 1024 * 8);
    ASSERT_TRUE(bulk.cached.metadata);
    EXPECT_LE(bulk.cached.metadata->resources.worst_case().spill_store_bytes, kSpillFallbackBytes);
  }
  // dq_before_dk (default 1): dV, then dQ and dK, dQ waited for alone; 0: dV and dK, then dQ.
  for (const char* knobs : {"dq_before_dk=0", "dq_before_dk=1 dq_bulk=1"}) {
    SCOPED_TRACE(knobs);
    const PreparedKernel order =
        prepare(presets::causal(), options("sm_90a", 128, ElementType::BF16).with_knobs(Knobs::parse(knobs)));
    EXPECT_EQ(count(order.unit.body, "#define AJ_DQ_BEFORE_DK 1\n"), Knobs::parse(knobs).get("dq_before_dk") ? 1u : 0u);
    ASSERT_TRUE(order.cached.metadata);
    EXPECT_LE(order.cached.metadata->resources.worst_case().spill_store_bytes, kSpillFallbackBytes);
  }
  const PreparedKernel sm80_arch = generate(presets::causal(), options("sm_80", 128, ElementType::BF16));
  EXPECT_EQ(sm80_arch.config.template_name, "bwd_sm80");
  EXPECT_FALSE(contains(sm80_arch.unit.body, "#define AJ_WGMMA 1\n"));
  const PreparedKernel narrow =
      generate(presets::causal(), options("sm_90a", 128, ElementType::BF16).with_knobs(Knobs::parse("block_m=32")));
  EXPECT_EQ(narrow.config.template_name, "bwd_sm80");
  try {
    generate(
        presets::causal(),
        options("sm_90a", 128, ElementType::BF16).with_template("bwd_sm90").with_knobs(Knobs::parse("block_m=32")));
    ADD_FAILURE() << "bwd_sm90 took block_m 32";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "knobs block_m=32 are bwd_sm80's (bwd_sm90 runs block_m 64, warps 8, row_pad 0)"))
        << e.what();
  }
  try {
    generate(presets::causal(), options("sm_80", 128, ElementType::BF16).with_template("bwd_sm90"));
    ADD_FAILURE() << "bwd_sm90 compiled for sm_80";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "does not compile for sm_80")) << e.what();
  }
}

// dq_ordered: deterministic calls add dQ in fp32 with the kv blocks taking turns per query block
// (a counter each in the workspace, zeroed by the preprocess); compiles with spills within the
// limit at both head dims and with a mask that reads tensors; it and dq_bulk exclude each other.
TEST_F(BackwardCodegen, OrderedDqTakesTurns) {
  for (const auto& [preset, d] : {std::pair{"causal", 64}, {"causal", 128}, {"document_causal", 128}}) {
    SCOPED_TRACE(fmt::format("{} D={}", preset, d));
    const auto base = options("sm_90a", d, ElementType::BF16);
    const PreparedKernel ordered =
        prepare(presets::by_name(preset), CompileOptions(base).with_knobs(Knobs::parse("dq_ordered=1")));
    EXPECT_EQ(ordered.config.template_name, "bwd_sm90");
    EXPECT_EQ(count(ordered.unit.body, "#define AJ_DQ_ORDERED 1\n"), 1u);
    ASSERT_TRUE(ordered.cached.metadata);
    EXPECT_LE(ordered.cached.metadata->resources.worst_case().spill_store_bytes, kSpillFallbackBytes);
    const PreparedKernel plain = generate(presets::by_name(preset), base);
    EXPECT_EQ(count(plain.unit.body, "#define AJ_DQ_ORDERED 1\n"), 0u);
    // One int per query block of 64 rows: 2 x 8 x ceil(1000 / 64) = 256 counters, 1 KiB.
    const ProblemShape shape{2, 8, 2, 1000, 1000};
    EXPECT_EQ(ordered.launch_plan(shape).workspace_bytes, plain.launch_plan(shape).workspace_bytes + 1024);
  }
  try {
    generate(presets::causal(),
             options("sm_90a", 128, ElementType::BF16).with_knobs(Knobs::parse("dq_ordered=1 dq_bulk=1")));
    ADD_FAILURE() << "dq_ordered with dq_bulk accepted";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "dq_bulk and dq_ordered are two ways of adding dQ")) << e.what();
  }
}

// RoPE adds a kernel before (Q and K rotated) and one after (dK turned back); the gate's
// tensor gets a gradient, written by the preprocess.
TEST_F(BackwardCodegen, RowHooksAddTheirKernelsAndGradients) {
  const PreparedKernel rope = generate(presets::by_name("rope_causal"), options("sm_90a", 64, ElementType::BF16));
  EXPECT_EQ(rope.unit.kernel_names,
            (std::vector<std::string>{"attnjit_bwd_rope", "attnjit_bwd_preprocess", "attnjit_bwd",
                                      "attnjit_bwd_rope_dk", "attnjit_bwd_postprocess"}));
  const LaunchPlan plan = rope.launch_plan(ProblemShape{2, 8, 2, 100, 300});
  ASSERT_EQ(plan.kernels.size(), 5u);
  EXPECT_EQ(plan.kernels[0].grid.x, (300u * 32 + 255) / 256);  // one thread per (row, pair) of the longer side
  EXPECT_EQ(plan.kernels[0].grid.y, 10u);                      // query heads, then kv heads
  EXPECT_EQ(plan.kernels[3].grid.y, 2u);
  const PreparedKernel plain = generate(presets::causal(), options("sm_90a", 64, ElementType::BF16));
  EXPECT_GT(plan.workspace_bytes, plain.launch_plan(ProblemShape{2, 8, 2, 100, 300}).workspace_bytes);

  const PreparedKernel gated = generate(presets::by_name("gated_causal"), options("sm_80", 128, ElementType::FP16));
  EXPECT_EQ(gated.unit.tensor_gradients, std::vector<std::string>{"gate"});
  EXPECT_TRUE(contains(gated.unit.body, "#define AJ_OUTPUT_GATE_SLOT 0"));
}

// A mask that reads tensors: its tile classes are built first, at the backward's own tiles
// (block_m query rows x 16 * warps keys), so the main kernel skips empty document tiles.
TEST_F(BackwardCodegen, TensorMasksBuildTheirTileClassesFirst) {
  const PreparedKernel doc = generate(presets::by_name("document_causal"), options("sm_90a", 128, ElementType::BF16));
  EXPECT_EQ(doc.unit.kernel_names, (std::vector<std::string>{"attnjit_block_mask", "attnjit_bwd_preprocess",
                                                             "attnjit_bwd", "attnjit_bwd_postprocess"}));
  EXPECT_TRUE(contains(doc.unit.body, "#define AJ_HAS_BLOCK_MASK 1"));
  const ProblemShape shape{2, 8, 2, 1000, 1000};
  const LaunchPlan plan = doc.launch_plan(shape);
  ASSERT_EQ(plan.kernels.size(), 4u);
  EXPECT_EQ(plan.kernels[0].kernel, "attnjit_block_mask");
  const int block_m = doc.config.knobs.get("block_m"), block_n = 16 * doc.config.knobs.get("warps");
  EXPECT_EQ(plan.kernels[0].grid.x, static_cast<unsigned>((1000 + block_n - 1) / block_n));
  EXPECT_EQ(plan.kernels[0].grid.y, static_cast<unsigned>((1000 + block_m - 1) / block_m));
  const PreparedKernel causal = generate(presets::causal(), options("sm_90a", 128, ElementType::BF16));
  EXPECT_TRUE(contains(causal.unit.body, "#define AJ_HAS_BLOCK_MASK 0"));
  EXPECT_GT(plan.workspace_bytes, causal.launch_plan(shape).workspace_bytes);
}

class BackwardCompile : public BackwardCodegen, public ::testing::WithParamInterface<std::string> {};

// The most bwd_sm90 spills at its (only) tile, over every preset (alibi_window_softcap D=128).
constexpr int kBwdSm90SpillBytes = 128;

// Every preset the backward serves, head dims 64 and 128 alternating with the dtype.
TEST_P(BackwardCompile, EveryServedPresetCompilesWithoutSpills) {
  const std::string arch = GetParam();
  int compiled = 0, index = 0;
  for (const auto& preset : presets::registry()) {
    const Variant v = preset.make();
    const int d = index % 2 ? 128 : 64;
    const ElementType dtype = (index / 2) % 2 ? ElementType::FP16 : ElementType::BF16;
    ++index;
    SCOPED_TRACE(preset.name + " " + arch + " d=" + std::to_string(d));
    const PreparedKernel p = prepare(v, options(arch, d, dtype));
    ASSERT_TRUE(p.cached.cubin && p.cached.metadata);
    EXPECT_EQ(p.cached.cubin->substr(0, 4), std::string("\x7f"
                                                        "ELF",
                                                        4));
    const auto& resources = p.cached.metadata->resources.worst_case();
    EXPECT_GT(resources.registers, 0);
    EXPECT_EQ(p.config.template_name, arch == "sm_90a" ? "bwd_sm90" : "bwd_sm80");
    // bwd_sm80: at most a few registers over the 255 limit (where the default block_m 64
    // spills more, prepare() falls back to block_m 32). bwd_sm90 has no smaller tile; its
    // D=128 soft-cap and tensor-bias variants spill up to 104 bytes and still run 1.1-1.4x
    // faster than bwd_sm80 without spills (H200, 2026-12-01, docs/benchmarks.md).
    const int allowed = p.config.template_name == "bwd_sm90" ? kBwdSm90SpillBytes : kSpillFallbackBytes;
    EXPECT_LE(resources.spill_store_bytes, allowed) << "spills at the knobs prepare() chose " << p.config.knobs.str();
    ++compiled;
  }
  EXPECT_EQ(compiled, static_cast<int>(presets::registry().size()));
}

INSTANTIATE_TEST_SUITE_P(Archs, BackwardCompile, ::testing::Values("sm_80", "sm_90a"));

// Default knobs that spill give way to the template's fallback; explicit knobs never do.
TEST_F(BackwardCodegen, SpillingDefaultKnobsFallBack) {
  const auto d128 = sm80("sm_90a", 128, ElementType::BF16);
  EXPECT_EQ(prepare(presets::causal(), d128).config.knobs.get("block_m"), 64);
  // A mask that reads tensors tests its edge steps before S and dP hold registers: document
  // keeps block_m 64 at D=128 (its tests beside S, dP, dK and dV spilled 92 bytes there).
  const PreparedKernel document = prepare(presets::by_name("document"), d128);
  EXPECT_EQ(document.config.knobs.get("block_m"), 64);
  EXPECT_LE(document.cached.metadata->resources.worst_case().spill_store_bytes, kSpillFallbackBytes);
  // D=64's default is block_m 32 already: nothing to fall back to.
  EXPECT_EQ(prepare(presets::causal(), sm80("sm_90a", 64, ElementType::BF16)).config.knobs.str(),
            "block_m=32 row_pad=0 stages=2 warps=4");
  const Variant gate = presets::by_name("forget_gate");
  const PreparedKernel fallen = prepare(gate, d128);
  EXPECT_EQ(fallen.config.knobs.get("block_m"), 32);
  EXPECT_LE(fallen.cached.metadata->resources.worst_case().spill_store_bytes, kSpillFallbackBytes);
  const PreparedKernel forced = prepare(gate, CompileOptions(d128).with_knobs(Knobs::parse("block_m=64")));
  EXPECT_EQ(forced.config.knobs.get("block_m"), 64);
  EXPECT_GT(forced.cached.metadata->resources.worst_case().spill_store_bytes, kSpillFallbackBytes);
}

// row_pad: the default 0 (swizzled rows) defines nothing beyond the template's own default; 8
// defines AJ_ROW_PAD and sizes K, V, Q and dO rows 8 elements longer; both compile without
// spills at D 64 and 128 on both architectures; any other value is a UserError.
TEST_F(BackwardCodegen, RowPadChoosesTheSharedLayout) {
  const auto with_pad = [](CompileOptions o, int pad) { return o.with_knobs(Knobs{{"row_pad", pad}}); };
  const PreparedKernel swizzled = generate(presets::causal(), sm80("sm_90a", 64, ElementType::BF16));
  const PreparedKernel padded = generate(presets::causal(), with_pad(sm80("sm_90a", 64, ElementType::BF16), 8));
  EXPECT_EQ(swizzled.config.knobs.get("row_pad"), 0);
  EXPECT_EQ(count(swizzled.unit.body, "#define AJ_ROW_PAD 8\n"), 0u);
  EXPECT_EQ(count(padded.unit.body, "#define AJ_ROW_PAD 8\n"), 1u);
  // D=64's defaults, block_m 32, 4 warps (64 keys), 2 stages: 2 * 64 + 2 * 2 * 32 = 256 rows, 8
  // elements longer
  EXPECT_EQ(padded.config.knobs.str(), "block_m=32 row_pad=8 stages=2 warps=4");
  EXPECT_EQ(padded.unit.max_dynamic_shared_bytes - swizzled.unit.max_dynamic_shared_bytes, 256 * 8 * 2);
  for (const char* arch : {"sm_80", "sm_90a"})
    for (const int dim : {64, 128})
      for (const int pad : {0, 8}) {
        SCOPED_TRACE(std::string(arch) + " D=" + std::to_string(dim) + " pad " + std::to_string(pad));
        const PreparedKernel p = prepare(presets::causal(), with_pad(sm80(arch, dim, ElementType::BF16), pad));
        EXPECT_EQ(p.config.knobs.get("row_pad"), pad);
        EXPECT_EQ(p.cached.metadata->resources.worst_case().spill_store_bytes, 0);
      }
  try {
    generate(presets::causal(), with_pad(sm80("sm_90a", 64, ElementType::BF16), 16));
    ADD_FAILURE() << "row_pad=16 accepted";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "row_pad 16 is not 0 or 8")) << e.what();
  }
}

}  // namespace
}  // namespace attnjit
