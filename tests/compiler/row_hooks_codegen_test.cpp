// Row hooks (compiler/codegen/hook_emitter, templates/fwd_sm80.cuh): RoPE on Q and K rows at
// load and the output gate at the epilogue. The emitted macros and functions follow the
// variant (the user's names for the offset parameter and the gate tensor, their slots), and
// every path of the template compiles through NVRTC for sm_80 and sm_90a: Half and
// Interleaved layouts, rotary dims whose chunks do or do not divide the thread count (the
// stepped and the per-chunk paths), 1 and 2 stages, Q in registers or not, 4 and 8 warps,
// rank-3 and rank-4 gates of every float dtype. The GPU runs are tests/gpu/row_hooks_test.cpp.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

RopeHook rope_hook(int rotary_dim, RopeHook::Layout layout, std::string offset = "", double theta = 10000.0) {
  RopeHook r;
  r.theta = theta;
  r.rotary_dim = rotary_dim;
  r.layout = layout;
  r.offset_param = std::move(offset);
  return r;
}

Variant rope_variant(const RopeHook& hook) {
  return presets::rope(hook).then(presets::causal(presets::CausalAlignment::BottomRight));
}

Variant gate_variant(const std::string& name, ir::TensorDType dtype, int rank) {
  return presets::output_gate(OutputGateHook{name, dtype, rank}).then(presets::causal());
}

class RowHooksCodegenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("attnjit_row_hooks_test_" + std::to_string(::getpid())));
    std::filesystem::create_directories(*dir_);
    ::setenv("ATTNJIT_CACHE_DIR", dir_->c_str(), 1);  // failure dumps stay out of ~/.cache
    cache_ = new runtime::KernelCache(runtime::KernelCacheOptions().set_directory(*dir_ / "kernels"));
  }
  static void TearDownTestSuite() {
    delete cache_;
    cache_ = nullptr;
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
    dir_ = nullptr;
  }
  static CompileOptions options(const std::string& arch, int head_dim, ElementType dtype) {
    return CompileOptions().with_arch(arch).with_head_dim(head_dim).with_dtype(dtype).with_cache(cache_);
  }
  static std::filesystem::path* dir_;
  static runtime::KernelCache* cache_;
};
std::filesystem::path* RowHooksCodegenTest::dir_ = nullptr;
runtime::KernelCache* RowHooksCodegenTest::cache_ = nullptr;

// ---- what emit_hooks writes -----------------------------------------------------------

TEST(RowHookEmission, OffMeansMacrosZeroAndNoFunctions) {
  const Variant v = presets::causal();
  const EmittedHooks e = emit_hooks(v, assign_slots(v));
  EXPECT_TRUE(contains(e.source, "#define AJ_HAS_ROPE 0\n")) << e.source;
  EXPECT_TRUE(contains(e.source, "#define AJ_HAS_OUTPUT_GATE 0\n")) << e.source;
  EXPECT_FALSE(contains(e.source, "aj_rope_")) << e.source;
  EXPECT_FALSE(contains(e.source, "aj_output_gate")) << e.source;
  EXPECT_FALSE(e.facts.has_rope);
  EXPECT_FALSE(e.facts.has_output_gate);
}

TEST(RowHookEmission, RopeOffsetIsTheUsersIntParameterInItsSlot) {
  // `pos` sorts before `window`: slot 0 of the int parameters, window slot 1.
  const Variant v = presets::rope(rope_hook(64, RopeHook::Layout::Half, "pos")).then(presets::sliding_window());
  const ArgumentSlots slots = assign_slots(v);
  ASSERT_EQ(slots.int_params.size(), 2u);
  EXPECT_EQ(slots.int_params[0].name, "pos");
  const EmittedHooks e = emit_hooks(v, slots);
  EXPECT_TRUE(e.facts.has_rope);
  const std::string& s = e.source;
  EXPECT_TRUE(contains(s, "#define AJ_HAS_ROPE 1\n")) << s;
  EXPECT_TRUE(contains(s, "#define AJ_ROPE_DIM 64  ")) << s;
  EXPECT_TRUE(contains(s, "#define AJ_ROPE_INTERLEAVED 0  ")) << s;
  EXPECT_TRUE(contains(s, "// rope: theta=10000.0, dim=64, layout=half, offset=pos (runtime int parameter)\n")) << s;
  EXPECT_TRUE(contains(s,
                       "__device__ __forceinline__ int aj_rope_q_position(int b, int q, const AttnjitFwdArgs& args) {\n"
                       "  const int pos = args.int_params[0];\n"
                       "  return q + aj_kv_len(b, args) - aj_q_len(b, args) + pos;\n}\n"))
      << s;
  EXPECT_TRUE(
      contains(s,
               "__device__ __forceinline__ int aj_rope_kv_position(int b, int kv, const AttnjitFwdArgs& args) {\n"
               "  (void)b;\n"
               "  const int pos = args.int_params[0];\n"
               "  return kv + pos;\n}\n"))
      << s;
  // log2(10000) with all its digits: the frequencies are computed in double.
  EXPECT_TRUE(contains(s, "exp2((double)j * (-2.0 * 13.287712379549449 / AJ_ROPE_DIM))")) << s;
  EXPECT_TRUE(contains(s, "const int window = args.int_params[1];")) << s;
}

TEST(RowHookEmission, WholeHeadInterleavedWithoutOffset) {
  const Variant v = rope_variant(rope_hook(0, RopeHook::Layout::Interleaved, "", 500000.0));
  const EmittedHooks e = emit_hooks(v, assign_slots(v));
  EXPECT_TRUE(contains(e.source, "#define AJ_ROPE_DIM AJ_HEAD_DIM  ")) << e.source;
  EXPECT_TRUE(contains(e.source, "#define AJ_ROPE_INTERLEAVED 1  ")) << e.source;
  EXPECT_TRUE(contains(e.source, "  return q + aj_kv_len(b, args) - aj_q_len(b, args);\n")) << e.source;
  EXPECT_TRUE(contains(e.source, "  (void)b;\n  (void)args;\n  return kv;\n")) << e.source;
  EXPECT_FALSE(contains(e.source, "int_params")) << e.source;
}

TEST(RowHookEmission, GateReadsTheUsersTensorPerRowOrPerElement) {
  {
    const Variant v = presets::by_name("gated_causal");
    const EmittedHooks e = emit_hooks(v, assign_slots(v));
    EXPECT_TRUE(e.facts.has_output_gate);
    EXPECT_FALSE(e.facts.output_gate_per_element);
    EXPECT_TRUE(contains(e.source, "#define AJ_HAS_OUTPUT_GATE 1\n#define AJ_OUTPUT_GATE_PER_ELEMENT 0  ")) << e.source;
    EXPECT_TRUE(contains(e.source,
                         "__device__ __forceinline__ float aj_output_gate(int b, int h, int q, int d, const "
                         "AttnjitFwdArgs& args) {\n"
                         "  const AttnjitTensorArg& gate = args.tensors[0];\n"
                         "  (void)d;\n"
                         "  return aj_sigmoid(aj_read_bf16(gate, aj_offset3(gate, b, h, q)));\n}\n"))
        << e.source;
  }
  {
    // A rank-4 f32 gate next to a tensor that sorts before it: slot 1.
    const Variant v = presets::alibi(Tensor("slopes", ir::TensorDType::F32, 1))
                          .then(presets::output_gate(OutputGateHook{"zgate", ir::TensorDType::F32, 4}));
    const EmittedHooks e = emit_hooks(v, assign_slots(v));
    EXPECT_TRUE(e.facts.output_gate_per_element);
    EXPECT_TRUE(contains(e.source, "#define AJ_OUTPUT_GATE_PER_ELEMENT 1  ")) << e.source;
    EXPECT_TRUE(contains(e.source,
                         "  const AttnjitTensorArg& zgate = args.tensors[1];\n"
                         "  return aj_sigmoid(aj_read_f32(zgate, aj_offset4(zgate, b, h, q, d)));\n"))
        << e.source;
  }
  {
    // A gate tensor named like the d argument is read through its slot.
    const Variant v = presets::output_gate(OutputGateHook{"d", ir::TensorDType::F16, 4});
    const EmittedHooks e = emit_hooks(v, assign_slots(v));
    EXPECT_TRUE(contains(e.source,
                         "return aj_sigmoid(aj_read_f16(args.tensors[0], aj_offset4(args.tensors[0], b, h, "
                         "q, d)));"))
        << e.source;
  }
}

// ---- through the compile path ---------------------------------------------------------

TEST_F(RowHooksCodegenTest, RotaryDimBeyondTheHeadIsTheUsersError) {
  try {
    (void)generate(rope_variant(rope_hook(256, RopeHook::Layout::Half)), options("sm_80", 128, ElementType::BF16));
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "rotary_dim 256")) << e.what();
    EXPECT_TRUE(contains(e.what(), "128")) << e.what();
  }
}

// The offset is a binding: one generated unit (one cache key) serves every offset value.
TEST_F(RowHooksCodegenTest, OffsetValueIsNotPartOfTheKernel) {
  const Variant v = rope_variant(rope_hook(0, RopeHook::Layout::Half, "pos"));
  const PreparedKernel a = generate(v, options("sm_80", 128, ElementType::BF16));
  const PreparedKernel b = generate(v, options("sm_80", 128, ElementType::BF16));
  EXPECT_EQ(a.cache_key, b.cache_key);
  EXPECT_FALSE(contains(a.source, "4096"));
  // Without the offset parameter it is another kernel.
  const PreparedKernel c =
      generate(rope_variant(rope_hook(0, RopeHook::Layout::Half)), options("sm_80", 128, ElementType::BF16));
  EXPECT_NE(a.cache_key, c.cache_key);
}

struct Instance {
  std::string what;
  Variant variant;
  int head_dim;
  ElementType dtype;
  std::optional<Schedule> schedule;
};

std::vector<Instance> instances() {
  using L = RopeHook::Layout;
  const auto BF16 = ElementType::BF16, FP16 = ElementType::FP16;
  const Variant offset_window = presets::rope(rope_hook(64, L::Half, "pos")).then(presets::sliding_window());
  const Variant rope_and_gate = presets::rope(rope_hook(32, L::Interleaved, "pos"))
                                    .then(gate_variant("g4", ir::TensorDType::BF16, 4))
                                    .then(presets::causal(presets::CausalAlignment::BottomRight));
  return {
      // Stepped path (the chunks of a row divide the threads), 4-pair chunks.
      {"rope_causal D128 (1 stage, Q from smem)", presets::by_name("rope_causal"), 128, BF16, std::nullopt},
      {"rope_causal D64 (2 stages, Q in regs)", presets::by_name("rope_causal"), 64, FP16, std::nullopt},
      {"interleaved dim 32 offset, 64x64 2 stages", rope_variant(rope_hook(32, L::Interleaved, "pos")), 128, FP16,
       Schedule{64, 64, 4, 2}},
      {"half dim 64 offset + window, 8 warps", offset_window, 128, BF16, Schedule{128, 64, 8, 2}},
      {"half dim 2 (one pair per row)", rope_variant(rope_hook(2, L::Half)), 64, BF16, std::nullopt},
      {"half whole head D256", presets::by_name("rope_causal"), 256, BF16, std::nullopt},
      {"interleaved whole head D32, 128-key tiles", rope_variant(rope_hook(0, L::Interleaved)), 32, FP16,
       Schedule{128, 128, 4, 2}},
      // Per-chunk path: 3 or 12 chunks per row; 1- and 4-pair chunks (2-byte and 8/16-byte access).
      {"half dim 6", rope_variant(rope_hook(6, L::Half, "pos", 2.0)), 32, BF16, std::nullopt},
      {"interleaved whole head D96", rope_variant(rope_hook(0, L::Interleaved)), 96, FP16, std::nullopt},
      {"half dim 24", rope_variant(rope_hook(24, L::Half)), 64, FP16, Schedule{64, 32, 4, 1}},
      // Gates.
      {"gated_causal D128", presets::by_name("gated_causal"), 128, FP16, std::nullopt},
      {"gate rank 3 f32", gate_variant("g", ir::TensorDType::F32, 3), 64, BF16, std::nullopt},
      {"gate rank 3 f16", gate_variant("g", ir::TensorDType::F16, 3), 128, BF16, Schedule{64, 64, 4, 2}},
      {"gate rank 4 f32", gate_variant("g", ir::TensorDType::F32, 4), 128, BF16, std::nullopt},
      {"gate rank 4 bf16 + rope interleaved 32 + offset, 1 stage", rope_and_gate, 64, FP16, Schedule{128, 64, 4, 1}},
  };
}

class RowHooksCompileTest : public RowHooksCodegenTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(RowHooksCompileTest, EveryPathOfTheTemplateCompiles) {
  const std::string arch = GetParam();
  for (const Instance& i : instances()) {
    const std::string what =
        i.what + " " + arch + " D=" + std::to_string(i.head_dim) + " " + element_type_name(i.dtype);
    SCOPED_TRACE(what);
    CompileOptions o = options(arch, i.head_dim, i.dtype);
    if (i.schedule) o.with_schedule(*i.schedule);
    PreparedKernel p;
    try {
      p = prepare(i.variant, o);
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << ": " << e.what();
      continue;
    }
    ASSERT_TRUE(p.cached.cubin && p.cached.metadata) << what;
    EXPECT_EQ(p.cached.cubin->substr(0, 4), std::string("\x7f"
                                                        "ELF",
                                                        4));
    const auto& resources = p.cached.metadata->resources.worst_case();
    EXPECT_GT(resources.registers, 0) << what;
    EXPECT_TRUE(contains(p.source, i.variant.rope() ? "#define AJ_HAS_ROPE 1\n" : "#define AJ_HAS_ROPE 0\n"));
    EXPECT_TRUE(contains(
        p.source, i.variant.output_gate() ? "#define AJ_HAS_OUTPUT_GATE 1\n" : "#define AJ_HAS_OUTPUT_GATE 0\n"));
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, RowHooksCompileTest, ::testing::Values("sm_80", "sm_90a"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace attnjit
