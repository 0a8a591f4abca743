// GPU tests of the backward pass: every preset the backward template serves, in bf16 and
// fp16, at head dims 64 and 128, MHA and GQA 4:1, odd lengths, with the gradients of every
// captured float tensor the score_mod reads; judged per output (dQ, dK, dV, tensor
// gradients) by FlashAttention's rule against the fp64 CPU reference backward, with poisoned
// outputs (runtime/reference/backward_check.hpp). Also fully masked rows, and the
// deterministic mode bit-identical over 3 runs. A preset the backward cannot run is skipped
// with the library's reason. The kernels (forward and backward units) are compiled on every
// core before the first test. Skips with a message without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/backward_check.hpp"
#include "support/preset_scalars.hpp"

namespace attnjit {
namespace {

bool gpu_present() {
  const auto& driver = runtime::Driver::instance();
  return driver.available() && driver.device_count() > 0;
}

// A compiled forward kernel whose backward unit is loaded, or the library's reason why not.
struct Compiled {
  std::optional<Kernel> kernel;
  std::string not_supported;
};

using Case = std::tuple<std::string, ElementType, int, int>;  // preset, dtype, head dim, kv heads (of 4)

std::string case_name(const Case& c) {
  return std::get<0>(c) + "_" + element_type_name(std::get<1>(c)) + "_d" + std::to_string(std::get<2>(c)) +
         (std::get<3>(c) == 4 ? "_mha" : "_gqa4");
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const auto& p : presets::registry())
    for (const ElementType dtype : {ElementType::BF16, ElementType::FP16})
      for (const int head_dim : {64, 128})
        for (const int heads_kv : {4, 1}) out.emplace_back(p.name, dtype, head_dim, heads_kv);
  return out;
}

std::string kernel_key(const std::string& preset, ElementType dtype, int head_dim) {
  return preset + " " + element_type_name(dtype) + " " + std::to_string(head_dim);
}

// Every kernel of the suite, compiled in parallel the first time one is asked for.
const Compiled& compiled(const std::string& preset, ElementType dtype, int head_dim) {
  static std::map<std::string, std::unique_ptr<Compiled>> kernels;
  static bool built = false;
  if (!built) {
    built = true;
    std::vector<std::tuple<std::string, ElementType, int>> todo;
    for (const auto& p : presets::registry())
      for (const ElementType d : {ElementType::BF16, ElementType::FP16})
        for (const int h : {64, 128}) todo.emplace_back(p.name, d, h);
    std::vector<std::unique_ptr<Compiled>> done(todo.size());
    const auto build = [&](std::size_t i) {
      auto c = std::make_unique<Compiled>();
      const auto& [name, d, h] = todo[i];
      try {
        Kernel k = compile(presets::by_name(name), CompileOptions().with_head_dim(h).with_dtype(d));
        k.prepared_backward();  // generates, compiles and loads the backward unit
        c->kernel = k;
      } catch (const UserError& e) {
        c->not_supported = e.what();
      }
      done[i] = std::move(c);
    };
    const auto start = std::chrono::steady_clock::now();
    build(0);  // sets up the driver and the context on this thread
    std::atomic<std::size_t> next{1};
    std::vector<std::thread> pool;
    const unsigned threads = std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 16);
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        for (std::size_t i = next++; i < todo.size(); i = next++) build(i);
      });
    for (auto& t : pool) t.join();
    for (std::size_t i = 0; i < todo.size(); ++i) {
      const auto& [name, d, h] = todo[i];
      kernels[kernel_key(name, d, h)] = std::move(done[i]);
    }
    std::printf("[ precompile ] %zu forward + backward kernels in %.1f s\n", todo.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return *kernels.at(kernel_key(preset, dtype, head_dim));
}

void report(const std::string& what, const BackwardCheckResult& r) {
  std::printf("[ result ] %-44s %s\n", what.c_str(), r.summary().c_str());
  for (const auto& g : r.gradients) EXPECT_TRUE(g.pass) << what << ": " << g.summary();
  EXPECT_TRUE(r.pass) << what << ": " << r.summary();
}

class BackwardPreset : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!gpu_present()) GTEST_SKIP() << "no GPU: " << runtime::Driver::instance().unavailable_reason();
  }
};

TEST_P(BackwardPreset, PassesTheTwoTimesRule) {
  const auto& [preset, dtype, head_dim, heads_kv] = GetParam();
  const Compiled& c = compiled(preset, dtype, head_dim);
  if (!c.kernel) GTEST_SKIP() << preset << ": no backward: " << c.not_supported;
  const Variant variant = presets::by_name(preset);
  const ForwardProblem problem{2, 4, heads_kv, 257, 333};
  const auto check = BackwardCheckOptions().with_all_tensor_gradients(variant);
  report(case_name(GetParam()), check_backward(*c.kernel, problem, preset_scalars(variant), 11, check));
}

INSTANTIATE_TEST_SUITE_P(Registry, BackwardPreset, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return case_name(info.param); });

class Backward : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpu_present()) GTEST_SKIP() << "no GPU: " << runtime::Driver::instance().unavailable_reason();
  }
};

// Bottom-right causal with more queries than keys: the first Sq - Sk rows see no key; their
// dQ must be exactly 0 and they must not disturb dK, dV.
TEST_F(Backward, FullyMaskedRowsGetZeroGradient) {
  const Compiled& c = compiled("causal_bottom_right", ElementType::BF16, 64);
  ASSERT_TRUE(c.kernel) << c.not_supported;
  const auto r = check_backward(*c.kernel, ForwardProblem{1, 4, 2, 301, 177}, {}, 5);
  EXPECT_GT(r.fully_masked_rows, 0);
  report("causal_bottom_right Sq>Sk", r);
}

// Fixed-point accumulation: dQ and the bias gradient bit-identical over 3 runs.
TEST_F(Backward, DeterministicModeIsBitIdentical) {
  for (const char* preset : {"relative_bias", "causal"}) {
    const Compiled& c = compiled(preset, ElementType::BF16, 128);
    ASSERT_TRUE(c.kernel) << c.not_supported;
    const Variant variant = presets::by_name(preset);
    const auto check = BackwardCheckOptions().with_all_tensor_gradients(variant).with_deterministic(true).with_runs(3);
    const auto r = check_backward(*c.kernel, ForwardProblem{2, 8, 2, 513, 769}, {}, 3, check);
    EXPECT_TRUE(r.deterministic_identical) << preset;
    report(std::string(preset) + " deterministic x3", r);
  }
}

// Knobs other than D=64's defaults (block_m 32, 2 stages, 4 warps): one stage, block_m 64, 8
// warps (D=128's defaults), padded rows.
TEST_F(Backward, OtherKnobsAgree) {
  const Compiled& c = compiled("alibi_causal", ElementType::FP16, 64);
  ASSERT_TRUE(c.kernel) << c.not_supported;
  for (const char* knobs : {"block_m=32 stages=1 warps=4", "block_m=64 stages=2 warps=4", "block_m=32 stages=2 warps=8",
                            "block_m=64 stages=2 warps=8", "row_pad=8"}) {
    const auto check = BackwardCheckOptions().with_knobs(Knobs::parse(knobs));
    report(std::string("alibi_causal ") + knobs,
           check_backward(*c.kernel, ForwardProblem{1, 4, 4, 200, 300}, {}, 9, check));
  }
}

// Kv blocks whose query blocks span more than one of the step walk's 32-block chunks
// (AjTileChunk), with long runs of empty tiles before the first admitted one: 41 query blocks of
// 64 rows, a window of 256 keys, documents of random lengths (about four per sequence).
TEST_F(Backward, LongRowsWalkSeveralChunks) {
  for (const char* preset : {"sliding_window", "document_causal"}) {
    const Compiled& c = compiled(preset, ElementType::BF16, 64);
    ASSERT_TRUE(c.kernel) << c.not_supported;
    report(std::string(preset) + " S=2600",
           check_backward(*c.kernel, ForwardProblem{1, 2, 2, 2600, 2600}, preset_scalars(presets::by_name(preset)), 17,
                          BackwardCheckOptions()));
  }
}

// On Hopper, where bwd_sm90 serves BackwardPreset, bwd_sm80 named by the call still passes on a
// sample of the presets (both head dims, GQA 4:1, each hook kind: mask, score_mod, tensor mask,
// RoPE, gate).
TEST_F(Backward, Sm80StillAgreesOnHopper) {
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "elsewhere bwd_sm80 serves BackwardPreset itself; this GPU is " << arch;
  for (const char* preset : {"causal", "softcap_causal", "document_causal", "rope_causal", "gated_causal"})
    for (const int d : {64, 128}) {
      const Compiled& c = compiled(preset, ElementType::BF16, d);
      ASSERT_TRUE(c.kernel) << c.not_supported;
      const Variant variant = presets::by_name(preset);
      const auto check = BackwardCheckOptions().with_all_tensor_gradients(variant).with_template("bwd_sm80");
      report(std::string(preset) + " bwd_sm80 D=" + std::to_string(d),
             check_backward(*c.kernel, ForwardProblem{2, 8, 2, 257, 333}, preset_scalars(variant), 13, check));
    }
}

// bwd_sm90's two orders of a step's last products: dV and dK then dQ (dq_before_dk=0; the default
// 1, dV, dQ, dK, runs in BackwardPreset), and the default with dq_bulk; a score_mod and GQA.
TEST_F(Backward, DqBeforeDkAgrees) {
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "bwd_sm90 needs sm_90a; this GPU is " << arch;
  for (const char* knobs : {"dq_before_dk=0", "dq_before_dk=1 dq_bulk=1"})
    for (const int d : {64, 128}) {
      const Compiled& c = compiled("alibi_causal", ElementType::FP16, d);
      ASSERT_TRUE(c.kernel) << c.not_supported;
      const auto check = BackwardCheckOptions().with_template("bwd_sm90").with_knobs(Knobs::parse(knobs));
      report(std::string("alibi_causal ") + knobs + " D=" + std::to_string(d),
             check_backward(*c.kernel, ForwardProblem{2, 8, 2, 257, 333}, {}, 7, check));
    }
}

// bwd_sm90's dq_bulk (a warp's dQ sums through shared memory and one bulk reduce): the 2x rule
// with fp32 sums, and with the fixed point bit-identical over 3 runs, at both head dims, GQA.
TEST_F(Backward, DqBulkReduceAgrees) {
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "bwd_sm90 needs sm_90a; this GPU is " << arch;
  for (const int d : {64, 128}) {
    const Compiled& c = compiled("causal", ElementType::BF16, d);
    ASSERT_TRUE(c.kernel) << c.not_supported;
    const auto bulk = BackwardCheckOptions().with_template("bwd_sm90").with_knobs(Knobs::parse("dq_bulk=1"));
    report("causal dq_bulk D=" + std::to_string(d),
           check_backward(*c.kernel, ForwardProblem{2, 8, 2, 513, 769}, {}, 5, bulk));
    const auto r = check_backward(*c.kernel, ForwardProblem{2, 8, 2, 513, 769}, {}, 6,
                                  BackwardCheckOptions(bulk).with_deterministic(true).with_runs(3));
    EXPECT_TRUE(r.deterministic_identical) << "D=" << d;
    report("causal dq_bulk deterministic x3 D=" + std::to_string(d), r);
  }
}

// bwd_sm90's dq_ordered (deterministic dQ in fp32, the kv blocks taking turns per query block):
// bit-identical over 3 runs and the 2x rule, at both head dims with GQA, and on a mask that reads
// tensors (its turns counted from the block mask's classes), over more kv blocks than a warp
// classifies at once (Sk = 4500: 36 kv blocks of 128 keys).
TEST_F(Backward, DqOrderedIsDeterministic) {
  if (const std::string arch = runtime::DeviceContext(0).properties().arch; arch != "sm_90a")
    GTEST_SKIP() << "bwd_sm90 needs sm_90a; this GPU is " << arch;
  const auto ordered = BackwardCheckOptions()
                           .with_template("bwd_sm90")
                           .with_knobs(Knobs::parse("dq_ordered=1"))
                           .with_deterministic(true)
                           .with_runs(3);
  for (const auto& [preset, d, problem] : {std::tuple{"causal", 64, ForwardProblem{2, 8, 2, 513, 769}},
                                           {"causal", 128, ForwardProblem{2, 8, 2, 513, 769}},
                                           {"document_causal", 128, ForwardProblem{1, 4, 2, 700, 4500}}}) {
    const Compiled& c = compiled(preset, ElementType::BF16, d);
    ASSERT_TRUE(c.kernel) << c.not_supported;
    const auto r = check_backward(*c.kernel, problem, preset_scalars(presets::by_name(preset)), 8, ordered);
    EXPECT_TRUE(r.deterministic_identical) << preset << " D=" << d;
    report(std::string(preset) + " dq_ordered deterministic x3 D=" + std::to_string(d), r);
  }
}

}  // namespace
}  // namespace attnjit
