// GPU tests of the row hooks of the sm80 forward kernel: RoPE applied to Q and K tiles in
// shared memory (Half and Interleaved layouts; whole-head, half-head and 32 rotary dims; the
// position offset a runtime parameter) and the output gate at the epilogue (rank 3 and 4,
// f32 / bf16 / f16 gate tensors). bf16 and fp16, head dims 64 and 128, MHA and GQA 4:1,
// odd lengths, judged by FlashAttention's rule against the fp64 CPU reference
// (runtime/reference/forward_check). Offsets 0, 7 and 4096 run on one compiled Kernel.
// Skips with a message without a GPU.
//
// Note on the offset: RoPE scores depend only on q_pos - kv_pos, so an offset added to both
// leaves the exact result unchanged; the 2x rule at offset 4096 tests the kernel's fp32
// angles at large positions. That the kernel reads the offset at all is shown by running
// it at offset 0 and at 2^20 on the same inputs: fp32 angles near 2^20 round visibly, so the
// outputs must differ (a kernel that ignored the offset would give identical bits).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit {
namespace {

// Skipping in SetUp skips the test body (a GTEST_SKIP in a helper would only leave the helper).
class RowHooksGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0)
      GTEST_SKIP() << "no GPU: " << (driver.available() ? "no CUDA device" : driver.unavailable_reason());
  }
};

RopeHook rope_hook(int rotary_dim, RopeHook::Layout layout, const std::string& offset) {
  RopeHook r;
  r.rotary_dim = rotary_dim;
  r.layout = layout;
  r.offset_param = offset;
  return r;
}

// RoPE with bottom-right causal (the KV-cache alignment RoPE positions use too).
Variant rope_causal(const RopeHook& hook) {
  return presets::rope(hook).then(presets::causal(presets::CausalAlignment::BottomRight)).with_name("rope_test");
}

Variant gated(ir::TensorDType dtype, int rank) {
  return presets::output_gate(OutputGateHook{"gate", dtype, rank}).then(presets::causal()).with_name("gate_test");
}

// One kernel per (variant, options) for the whole process.
const Kernel& kernel_of(const Variant& variant, const CompileOptions& options) {
  static std::map<std::string, std::unique_ptr<Kernel>> kernels;
  const std::string key = variant.text() + "\n" + element_type_name(options.dtype) + " d" +
                          std::to_string(options.head_dim) + " " + options.template_name + " " + options.knobs.str();
  auto& slot = kernels[key];
  if (!slot) slot = std::make_unique<Kernel>(compile(variant, options));
  return *slot;
}

void report(const std::string& label, const ForwardProblem& problem, const ForwardCheckResult& r) {
  std::printf("[ result ] %-40s %s: %s\n", label.c_str(), problem.str().c_str(), r.summary().c_str());
}

std::string layout_name(RopeHook::Layout l) { return l == RopeHook::Layout::Half ? "half" : "interleaved"; }

// ---- RoPE: layouts x rotary dims x head dims x dtypes x MHA / GQA ----------------------

using RopeCase = std::tuple<RopeHook::Layout, int, int, ElementType, int>;  // layout, rotary dim, D, dtype, Hkv

std::vector<RopeCase> rope_cases() {
  std::vector<RopeCase> cases;
  for (const auto layout : {RopeHook::Layout::Half, RopeHook::Layout::Interleaved})
    for (const int head_dim : {64, 128})
      for (const int rotary : {0, head_dim / 2, 32}) {
        if (rotary == 32 && head_dim == 64) continue;  // 32 is half of 64: already there
        // Both dtypes and both head layouts over the cases, not every product.
        const bool odd = (rotary == 0) != (layout == RopeHook::Layout::Interleaved);
        cases.emplace_back(layout, rotary, head_dim, odd ? ElementType::FP16 : ElementType::BF16,
                           (head_dim == 64) == odd ? 2 : 8);
      }
  return cases;
}

class RopeForward : public RowHooksGpuTest, public ::testing::WithParamInterface<RopeCase> {};

TEST_P(RopeForward, MatchesReferenceWithinTwiceNaiveError) {
  const auto& [layout, rotary, head_dim, dtype, heads_kv] = GetParam();
  const Variant v = rope_causal(rope_hook(rotary, layout, "pos"));
  const ForwardProblem problem{2, 8, heads_kv, 259, 517};
  const Kernel& kernel = kernel_of(v, CompileOptions().with_head_dim(head_dim).with_dtype(dtype));
  const auto r = check_forward(kernel, problem, Bindings().set("pos", 0), 100 + rotary + head_dim);
  report("rope " + layout_name(layout) + " dim " + std::to_string(rotary) + " D=" + std::to_string(head_dim) + " " +
             element_type_name(dtype),
         problem, r);
  EXPECT_TRUE(r.pass) << r.summary();
}

std::string rope_case_name(const ::testing::TestParamInfo<RopeCase>& info) {
  const auto& [layout, rotary, head_dim, dtype, heads_kv] = info.param;
  return layout_name(layout) + "_dim" + std::to_string(rotary) + "_d" + std::to_string(head_dim) + "_" +
         element_type_name(dtype) + (heads_kv == 8 ? "_mha" : "_gqa4");
}

INSTANTIATE_TEST_SUITE_P(LayoutsAndDims, RopeForward, ::testing::ValuesIn(rope_cases()), rope_case_name);

// The registry's presets at the forward suite's shape.
TEST_F(RowHooksGpuTest, RowHookPresets) {
  for (const char* name : {"rope_causal", "gated_causal"})
    for (const ElementType dtype : {ElementType::BF16, ElementType::FP16}) {
      const ForwardProblem problem{1, 8, 2, 1000, 1537};
      const auto r = check_forward(
          kernel_of(presets::by_name(name), CompileOptions().with_head_dim(128).with_dtype(dtype)), problem, {}, 7);
      report(std::string(name) + " " + element_type_name(dtype), problem, r);
      EXPECT_TRUE(r.pass) << name << ": " << r.summary();
    }
}

// ---- the offset: a runtime parameter of one compiled kernel ----------------------------

TEST_F(RowHooksGpuTest, OffsetsRunOnOneKernel) {
  const Variant v = rope_causal(rope_hook(0, RopeHook::Layout::Half, "pos"));
  for (const ElementType dtype : {ElementType::BF16, ElementType::FP16}) {
    const CompileOptions options = CompileOptions().with_head_dim(128).with_dtype(dtype);
    const Kernel kernel = compile(v, options);
    const std::string key = kernel.prepared().cache_key;
    for (const int offset : {0, 7, 4096}) {
      const ForwardProblem problem{1, 8, 2, 333, 1025};
      const auto r = check_forward(kernel, problem, Bindings().set("pos", offset), 21);
      report("rope offset " + std::to_string(offset) + " " + element_type_name(dtype), problem, r);
      EXPECT_TRUE(r.pass) << "offset " << offset << ": " << r.summary();
    }
    // A decode step: one query after 4096 cached keys, offset 4096 on top.
    const ForwardProblem decode{2, 8, 2, 1, 4097};
    const auto r = check_forward(kernel, decode, Bindings().set("pos", 4096), 22);
    report("rope decode offset 4096 " + element_type_name(dtype), decode, r);
    EXPECT_TRUE(r.pass) << r.summary();
    // The same unit serves every offset: the key did not move, and compiling again finds
    // the kernel in memory instead of running NVRTC.
    EXPECT_EQ(kernel.prepared().cache_key, key);
    const Kernel again = compile(v, options);
    EXPECT_EQ(again.prepared().cache_key, key);
    EXPECT_EQ(again.prepared().cached.source, runtime::CacheSource::MemoryHit);
  }
}

// Device copies of random bf16 Q, K, V and an output buffer, for running a kernel directly.
struct DeviceTensor {
  HostTensor host;
  runtime::DeviceBuffer device;
  std::vector<std::int64_t> shape;
  DLTensor view{};
  DeviceTensor(DLDataType dtype, std::vector<std::int64_t> s)
      : host(dtype, s), device(static_cast<std::size_t>(host.numel()) * dtype.bits / 8), shape(std::move(s)) {
    view = host.dl();
    view.data = reinterpret_cast<void*>(device.device_pointer());
    view.device = DLDevice{kDLCUDA, 0};
    view.shape = shape.data();
  }
  void upload() { device.copy_from_host(host.data(), device.size_bytes()); }
  void download() { device.copy_to_host(host.data(), device.size_bytes()); }
};

TEST_F(RowHooksGpuTest, KernelReadsTheOffset) {
  const Variant v = rope_causal(rope_hook(0, RopeHook::Layout::Half, "pos"));
  const Kernel& kernel = kernel_of(v, CompileOptions().with_head_dim(64).with_dtype(ElementType::BF16));
  const std::int64_t B = 1, H = 4, S = 200, D = 64;
  DeviceTensor q(dlpack_bfloat16(), {B, H, S, D}), k(dlpack_bfloat16(), {B, H, S, D}),
      val(dlpack_bfloat16(), {B, H, S, D}), o(dlpack_bfloat16(), {B, H, S, D});
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (DeviceTensor* t : {&q, &k, &val}) {
    for (std::int64_t i = 0; i < t->host.numel(); ++i) t->host.set(i, normal(rng));
    t->upload();
  }
  const auto run = [&](int offset) {
    o.device.fill_bytes(0xff);
    kernel.forward(q.view, k.view, val.view, o.view, nullptr, Bindings().set("pos", offset));
    synchronize_device();
    o.download();
    std::vector<double> out(static_cast<std::size_t>(o.host.numel()));
    for (std::int64_t i = 0; i < o.host.numel(); ++i) out[static_cast<std::size_t>(i)] = o.host.get(i);
    return out;
  };
  const auto at0 = run(0), again = run(0), far = run(1 << 20);
  EXPECT_EQ(at0, again) << "the kernel is not deterministic; the comparison below means nothing";
  double moved = 0;
  for (std::size_t i = 0; i < at0.size(); ++i) moved = std::max(moved, std::fabs(far[i] - at0[i]));
  EXPECT_GT(moved, 1e-3) << "the output at offset 2^20 equals the one at offset 0: is the offset read?";
}

// ---- the output gate -----------------------------------------------------------------

using GateCase = std::tuple<ir::TensorDType, int, int, ElementType, int>;  // gate dtype, rank, D, dtype, Hkv

class GateForward : public RowHooksGpuTest, public ::testing::WithParamInterface<GateCase> {};

TEST_P(GateForward, MatchesReferenceWithinTwiceNaiveError) {
  const auto& [gate_dtype, rank, head_dim, dtype, heads_kv] = GetParam();
  const ForwardProblem problem{2, 8, heads_kv, 301, 433};
  const auto r =
      check_forward(kernel_of(gated(gate_dtype, rank), CompileOptions().with_head_dim(head_dim).with_dtype(dtype)),
                    problem, {}, 200 + rank + head_dim);
  report("gate " + std::string(ir::dtype_name(gate_dtype)) + " rank " + std::to_string(rank) +
             " D=" + std::to_string(head_dim) + " " + element_type_name(dtype),
         problem, r);
  EXPECT_TRUE(r.pass) << r.summary();
}

std::string gate_case_name(const ::testing::TestParamInfo<GateCase>& info) {
  const auto& [gate_dtype, rank, head_dim, dtype, heads_kv] = info.param;
  return std::string(ir::dtype_name(gate_dtype)) + "_rank" + std::to_string(rank) + "_d" + std::to_string(head_dim) +
         "_" + element_type_name(dtype) + (heads_kv == 8 ? "_mha" : "_gqa4");
}

INSTANTIATE_TEST_SUITE_P(RanksAndDtypes, GateForward,
                         ::testing::Values(GateCase{ir::TensorDType::F32, 3, 64, ElementType::BF16, 8},
                                           GateCase{ir::TensorDType::BF16, 3, 128, ElementType::FP16, 2},
                                           GateCase{ir::TensorDType::F32, 4, 128, ElementType::BF16, 2},
                                           GateCase{ir::TensorDType::BF16, 4, 64, ElementType::FP16, 8},
                                           GateCase{ir::TensorDType::F16, 4, 128, ElementType::FP16, 8},
                                           GateCase{ir::TensorDType::BF16, 3, 64, ElementType::BF16, 2}),
                         gate_case_name);

// ---- both hooks, every schedule shape, ragged and tiny lengths --------------------------

TEST_F(RowHooksGpuTest, RopeAndGateAcrossSchedules) {
  const Variant v = presets::rope(rope_hook(32, RopeHook::Layout::Interleaved, "pos"))
                        .then(presets::output_gate(OutputGateHook{"gate", ir::TensorDType::BF16, 4}))
                        .then(presets::causal(presets::CausalAlignment::BottomRight))
                        .with_name("rope_gate");
  for (const Schedule s :
       {Schedule{64, 32, 4, 2}, Schedule{128, 128, 8, 1}, Schedule{128, 64, 8, 2}, Schedule{128, 64, 4, 1}}) {
    const ForwardProblem problem{1, 8, 2, 513, 1025};
    const auto r =
        check_forward(kernel_of(v, CompileOptions().with_head_dim(64).with_dtype(ElementType::FP16).with_schedule(s)),
                      problem, Bindings().set("pos", 7), 3);
    report("rope+gate " + s.str(), problem, r);
    EXPECT_TRUE(r.pass) << s.str() << ": " << r.summary();
  }
}

TEST_F(RowHooksGpuTest, TinyAndRaggedLengths) {
  const Variant v = presets::rope(rope_hook(64, RopeHook::Layout::Half, "pos"))
                        .then(presets::output_gate(OutputGateHook{"gate", ir::TensorDType::F32, 3}))
                        .then(presets::causal(presets::CausalAlignment::BottomRight))
                        .with_name("rope_gate_ragged");
  const Kernel& kernel = kernel_of(v, CompileOptions().with_head_dim(128).with_dtype(ElementType::BF16));
  // (17, 3): bottom-right alignment leaves the first 14 queries with no key (O = 0).
  for (auto [sq, sk] : {std::pair{1, 1}, {1, 4097}, {17, 3}, {129, 65}, {65, 129}}) {
    const ForwardProblem problem{2, 4, 1, sq, sk};
    const auto r = check_forward(kernel, problem, Bindings().set("pos", 4096), 11);
    report("rope+gate ragged", problem, r);
    EXPECT_TRUE(r.pass) << problem.str() << ": " << r.summary();
  }
}

}  // namespace
}  // namespace attnjit
