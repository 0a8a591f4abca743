// GPU tests of the JIT forward path: every preset of the registry (dsl/presets.hpp), in
// bf16 and fp16, at head dims 64 and 128, MHA and GQA 4:1, odd lengths (Sq=1000, Sk=1537),
// judged by FlashAttention's rule against the fp64 CPU reference (runtime/reference/
// forward_check.hpp; rows sampled on large problems), on the template compile picks (fwd_sm90
// on Hopper, with D=256 too) and on fwd_sm80 forced. Also fully masked rows, BSHD strides
// and a custom variant. Kernels are the generator's output, compiled once per (preset,
// dtype, head dim) and shared by the tests; those of the selected tests are compiled on every
// core before the first test runs. A preset the library cannot run is skipped with the
// library's own reason (the UserError of compile), never by a list typed here. Skips with a
// message without a GPU.
//
// ATTNJIT_GPU_REDUCED=1 runs the reduced suite (tools/gpu/run-suite.sh runs it under
// compute-sanitizer): one small case per preset (bf16, D=64, GQA 4:1, Sq=257 Sk=333), which
// covers the forward kernel and, for presets whose mask reads a tensor, the block-mask
// kernel; plus the fully masked rows case.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/forward_check.hpp"
#include "support/preset_scalars.hpp"
#include "support/process.hpp"
#include "support/reduced_suite.hpp"

namespace attnjit {
namespace {

// Skipping in SetUp skips the test body (a GTEST_SKIP in a helper would only leave the helper).
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0)
      GTEST_SKIP() << "no GPU: " << (driver.available() ? "no CUDA device" : driver.unavailable_reason());
  }
};

std::vector<std::string> registry_presets() {
  std::vector<std::string> names;
  for (const auto& p : presets::registry()) names.push_back(p.name);
  return names;
}

// A kernel compiled once per process for its options, or the library's reason for not
// running the variant (the UserError compile threw).
struct Compiled {
  std::optional<Kernel> kernel;
  std::string not_supported;
};

Compiled compile_or_reason(const Variant& variant, const CompileOptions& options) {
  Compiled c;
  try {
    c.kernel = compile(variant, options);
  } catch (const UserError& e) {
    c.not_supported = e.what();
  }
  return c;
}

std::string compile_key(const Variant& variant, const CompileOptions& options) {
  return variant.text() + "\n" + element_type_name(options.dtype) + " d" + std::to_string(options.head_dim) + " " +
         options.template_name + " " + options.knobs.str();
}

std::map<std::string, std::unique_ptr<Compiled>>& kernel_memo() {
  static std::map<std::string, std::unique_ptr<Compiled>> kernels;
  return kernels;
}

const Compiled& compiled(const Variant& variant, const CompileOptions& options) {
  auto& slot = kernel_memo()[compile_key(variant, options)];
  if (!slot) slot = std::make_unique<Compiled>(compile_or_reason(variant, options));
  return *slot;
}

// preset, dtype, head dim, kv heads, template ("": the one compile picks, fwd_sm90 on Hopper)
using Case = std::tuple<std::string, ElementType, int, int, std::string>;
using KernelSpec = std::pair<Variant, CompileOptions>;

std::string case_name(const Case& c) {
  return std::get<0>(c) + "_" + element_type_name(std::get<1>(c)) + "_d" + std::to_string(std::get<2>(c)) +
         (std::get<3>(c) == 8 ? "_mha" : "_gqa4") + (std::get<4>(c).empty() ? "" : "_" + std::get<4>(c));
}

std::vector<Case> preset_cases() {
  std::vector<Case> cases;
  for (const auto& name : registry_presets()) {
    if (reduced_suite()) {
      cases.emplace_back(name, ElementType::BF16, 64, 2, "");
      continue;
    }
    // The chosen template (fwd_sm90 on Hopper) and the sm80 one, which stays the fallback there.
    for (const char* forced : {"", "fwd_sm80"})
      for (const ElementType dtype : {ElementType::BF16, ElementType::FP16})
        for (const int head_dim : {64, 128})
          for (const int heads_kv : {8, 2}) cases.emplace_back(name, dtype, head_dim, heads_kv, forced);
    for (const ElementType dtype : {ElementType::BF16, ElementType::FP16}) cases.emplace_back(name, dtype, 256, 2, "");
  }
  return cases;
}

KernelSpec preset_kernel(const Case& c) {
  return {presets::by_name(std::get<0>(c)),
          CompileOptions().with_head_dim(std::get<2>(c)).with_dtype(std::get<1>(c)).with_template(std::get<4>(c))};
}

// The kernels of the edge cases (one place, so the precompile below compiles what they run).
KernelSpec fully_masked_kernel() {
  return {presets::causal(presets::CausalAlignment::BottomRight), CompileOptions().with_head_dim(64)};
}
KernelSpec tiny_kernel() { return {presets::causal(), CompileOptions().with_head_dim(128)}; }
KernelSpec custom_kernel() {
  using namespace dsl::vars;
  const Tensor bias("head_bias", ir::TensorDType::BF16, 1);
  Variant v("custom");
  v.with_score_mod(score * 0.5 + bias[h] - to_float(abs(q - kv)) / 64.0)
      .with_mask_mod((q - 128) / 256 == (kv - 128) / 256 || kv % 7 == 0);
  return {v, CompileOptions().with_head_dim(64).with_dtype(ElementType::FP16)};
}
KernelSpec bshd_kernel() { return {presets::by_name("alibi_causal"), CompileOptions().with_head_dim(128)}; }
std::vector<Schedule> other_schedules() {
  return {Schedule{64, 32, 4, 2}, Schedule{128, 128, 8, 1}, Schedule{128, 64, 8, 2}};
}
KernelSpec schedule_kernel(const Schedule& s) {
  return {presets::sliding_window(), CompileOptions().with_head_dim(64).with_template("fwd_sm80").with_schedule(s)};
}
// fwd_sm90's other knob settings (on other GPUs compile declines them: the test skips).
// Knobs the defaults do not pick at that head dim without a shape hint (D=64 with 1 consumer
// and D=128 with 3 stages of 128 keys are the defaults when a hint says seq_q <= 1024).
std::vector<std::pair<int, Knobs>> other_sm90_knobs() {
  return {{128, Knobs{{"block_n", 64}, {"consumers", 3}, {"stages", 3}}},
          {128, Knobs{{"block_n", 176}, {"consumers", 2}, {"stages", 2}}},
          {128, Knobs{{"block_n", 80}, {"consumers", 2}, {"stages", 3}}},
          {128, Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 3}}},
          {64, Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}}},
          {64, Knobs{{"block_n", 128}, {"consumers", 1}, {"stages", 2}}},
          {128, Knobs{{"block_n", 64}, {"consumers", 1}, {"stages", 2}}}};
}
KernelSpec sm90_knob_kernel(int head_dim, const Knobs& k) {
  return {presets::sliding_window(), CompileOptions().with_head_dim(head_dim).with_template("fwd_sm90").with_knobs(k)};
}

// The largest shared-memory request fwd_sm90 makes at D=128 (block_n 128, two consumers, three
// stages: within 2 KiB of the opt-in limit) on a mask that reads a tensor: the plan's block-mask
// kernel, which has static shared memory of its own, must still launch beside it.
KernelSpec largest_shared_memory_kernel() {
  return {presets::by_name("document_causal"),
          CompileOptions()
              .with_head_dim(128)
              .with_template("fwd_sm90")
              .with_knobs(Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 3}})};
}

// Query blocks whose kv tiles span several of the tile walk's 32-tile chunks (AjTileChunk), the
// admitted ones after long runs of empty tiles: a window of 256 keys at 9000 and documents of
// random lengths (about four per sequence), on the chosen template and on fwd_sm80.
std::vector<KernelSpec> long_row_kernels() {
  return {{presets::sliding_window(), CompileOptions().with_head_dim(64)},
          {presets::sliding_window(), CompileOptions().with_head_dim(64).with_template("fwd_sm80")},
          {presets::by_name("document_causal"), CompileOptions().with_head_dim(128)}};
}

// Document masks on fwd_sm90's work items aligned to documents (knob doc_items, the default
// there), and once with them off: D=128 and 64, with and without causal, ALiBi beside (its key-part
// tables start at a document's first key).
std::vector<KernelSpec> document_item_kernels() {
  const auto spec = [](const Variant& v, int d, int doc_items) {
    return KernelSpec{v, CompileOptions()
                             .with_head_dim(d)
                             .with_template("fwd_sm90")
                             .with_knobs(Knobs{{"doc_items", doc_items}, {"persistent", 1}})};
  };
  const Variant alibi_document =
      presets::alibi().then(presets::by_name("document_causal")).with_name("alibi_document_causal");
  return {spec(presets::by_name("document_causal"), 128, 1), spec(presets::by_name("document"), 128, 1),
          spec(presets::by_name("document_causal"), 64, 1), spec(alibi_document, 128, 1),
          spec(presets::by_name("document_causal"), 128, 0)};
}

// Document items with the default two Q buffers (stages 2), for long documents at many heads.
KernelSpec long_document_items_kernel() {
  return KernelSpec{presets::by_name("document_causal"),
                    CompileOptions()
                        .with_head_dim(128)
                        .with_template("fwd_sm90")
                        .with_knobs(Knobs{{"doc_items", 1}, {"persistent", 1}, {"stages", 2}})};
}

// The persistent schedule on rows of more than 32 key tiles (the tile walk's second chunk), which
// no default reaches (fwd_sm90_template.cpp): causal, and document items.
std::vector<KernelSpec> persistent_long_row_kernels() {
  const auto spec = [](const char* preset, Knobs k) {
    k.set("persistent", 1);
    return KernelSpec{presets::by_name(preset),
                      CompileOptions().with_head_dim(128).with_template("fwd_sm90").with_knobs(std::move(k))};
  };
  return {spec("causal", Knobs{}), spec("document_causal", Knobs{{"doc_items", 1}})};
}

// fwd_sm90 with the persistent schedule (a CTA per SM taking query blocks from a counter): two Q
// buffers (causal D=128, the window at D=64 with three consumers, D=256), one (alibi_causal with
// three stages and its key-part tables), two CTAs per SM (one consumer), a block mask; RoPE's
// pre-passes and the output gate, which the persistent default reaches on short hinted rows.
std::vector<KernelSpec> persistent_kernels() {
  const auto spec = [](const char* preset, int d, Knobs k) {
    k.set("persistent", 1);
    return KernelSpec{presets::by_name(preset),
                      CompileOptions().with_head_dim(d).with_template("fwd_sm90").with_knobs(std::move(k))};
  };
  return {spec("causal", 128, Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}}),
          spec("sliding_window", 64, Knobs{{"block_n", 128}, {"consumers", 3}, {"stages", 2}}),
          spec("alibi_causal", 128, Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 3}}),
          spec("causal", 64, Knobs{{"block_n", 128}, {"consumers", 1}, {"stages", 2}}),
          spec("document_causal", 128, Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}}),
          spec("dense", 256, Knobs{{"block_n", 80}, {"consumers", 2}, {"stages", 2}}),
          spec("rope_causal", 128, Knobs{{"block_n", 128}, {"consumers", 2}, {"stages", 2}}),
          spec("gated_causal", 64, Knobs{{"block_n", 128}, {"consumers", 3}, {"stages", 2}})};
}

// Items back to back (knob item_overlap, with the persistent schedule's two Q buffers): one
// consumer and three, ALiBi's key-part tables, the output gate, RoPE, document items, and
// bottom-right causal with more queries than keys (whole query blocks without a key: the
// producer's tile of masked keys).
std::vector<KernelSpec> item_overlap_kernels() {
  const auto spec = [](const char* preset, int d, Knobs k) {
    k.set("persistent", 1);
    k.set("item_overlap", 1);
    return KernelSpec{presets::by_name(preset),
                      CompileOptions().with_head_dim(d).with_template("fwd_sm90").with_knobs(std::move(k))};
  };
  return {spec("causal", 128, Knobs{}),
          spec("causal_bottom_right", 128, Knobs{}),
          spec("causal", 64, Knobs{{"consumers", 1}}),
          spec("sliding_window", 64, Knobs{{"consumers", 3}}),
          spec("alibi_causal", 128, Knobs{}),
          spec("softcap_causal", 128, Knobs{}),
          spec("document_causal", 128, Knobs{}),
          spec("document_causal", 64, Knobs{}),
          spec("gated_causal", 64, Knobs{{"consumers", 3}}),
          spec("rope_causal", 128, Knobs{})};
}

// The last tile marked in its word (knob last_in_word) on both schedules: items without tiles
// (rows with no keys, document items, strided blocks) keep their end stage.
std::vector<KernelSpec> last_in_word_kernels() {
  const auto spec = [](const char* preset, int d, int persistent, Knobs k) {
    k.set("persistent", persistent);
    k.set("last_in_word", 1);
    return KernelSpec{presets::by_name(preset),
                      CompileOptions().with_head_dim(d).with_template("fwd_sm90").with_knobs(std::move(k))};
  };
  return {spec("causal", 128, 1, Knobs{}),
          spec("causal", 128, 0, Knobs{}),
          spec("causal_bottom_right", 128, 1, Knobs{}),
          spec("causal", 64, 1, Knobs{{"consumers", 1}}),
          spec("sliding_window", 64, 0, Knobs{{"consumers", 3}}),
          spec("alibi_causal", 128, 1, Knobs{}),
          spec("document_causal", 128, 1, Knobs{}),
          spec("document", 64, 1, Knobs{}),
          spec("strided", 128, 0, Knobs{}),
          spec("gated_causal", 64, 1, Knobs{{"consumers", 3}}),
          spec("rope_causal", 128, 1, Knobs{}),
          spec("causal", 256, 0, Knobs{})};
}

// The kernels each selected test will compile, by "Suite.Test" name.
std::map<std::string, std::vector<KernelSpec>> kernels_by_test() {
  std::map<std::string, std::vector<KernelSpec>> kernels;
  for (const Case& c : preset_cases())
    kernels["AllPresets/ForwardPresets.MatchesReferenceWithinTwiceNaiveError/" + case_name(c)] = {preset_kernel(c)};
  kernels["ForwardEdgeCases.FullyMaskedRowsGiveZeroOutputAndMinusInfinityLse"] = {fully_masked_kernel()};
  if (reduced_suite()) return kernels;
  kernels["ForwardEdgeCases.TinyAndRaggedLengths"] = {tiny_kernel()};
  kernels["ForwardEdgeCases.CustomVariantWithTensorAndFloorDivision"] = {custom_kernel()};
  kernels["ForwardEdgeCases.BshdLayoutThroughStrides"] = {bshd_kernel()};
  for (const Schedule& s : other_schedules())
    kernels["ForwardEdgeCases.NonDefaultSchedulesAgree"].push_back(schedule_kernel(s));
  for (const auto& [d, k] : other_sm90_knobs())
    kernels["ForwardEdgeCases.Sm90KnobsAgree"].push_back(sm90_knob_kernel(d, k));
  kernels["ForwardEdgeCases.LargestSharedMemoryKnobsLaunchTheBlockMaskToo"] = {largest_shared_memory_kernel()};
  kernels["ForwardEdgeCases.PersistentScheduleAgrees"] = persistent_kernels();
  kernels["ForwardEdgeCases.ItemOverlapAgrees"] = item_overlap_kernels();
  kernels["ForwardEdgeCases.LastInWordAgrees"] = last_in_word_kernels();
  kernels["ForwardEdgeCases.LongRowsWalkSeveralChunks"] = long_row_kernels();
  kernels["ForwardEdgeCases.DocumentItemsAgree"] = document_item_kernels();
  kernels["ForwardEdgeCases.PersistentLongRows"] = persistent_long_row_kernels();
  kernels["ForwardEdgeCases.DISABLED_DocumentItemsLongDocumentsRun"] = {long_document_items_kernel()};
  return kernels;
}

// For kernels every template runs: the library's UserError is a failure, with its text.
const Kernel& kernel_of(const KernelSpec& spec) {
  const Compiled& c = compiled(spec.first, spec.second);
  if (!c.kernel) throw std::runtime_error(spec.first.name() + " does not compile: " + c.not_supported);
  return *c.kernel;
}

void report(const std::string& label, const ForwardProblem& problem, const ForwardCheckResult& r) {
  std::printf("[ result ] %-22s %s: %s\n", label.c_str(), problem.str().c_str(), r.summary().c_str());
}

class ForwardEdgeCases : public GpuTest {};
class ForwardPresets : public GpuTest, public ::testing::WithParamInterface<Case> {};

TEST_P(ForwardPresets, MatchesReferenceWithinTwiceNaiveError) {
  const auto& [name, dtype, head_dim, heads_kv, forced] = GetParam();
  const auto [v, options] = preset_kernel(GetParam());
  ForwardProblem problem;
  problem.batch = 1;
  problem.heads_q = 8;
  problem.heads_kv = heads_kv;
  problem.seq_q = reduced_suite() ? 257 : 1000;
  problem.seq_k = reduced_suite() ? 333 : 1537;
  const Compiled& c = compiled(v, options);
  if (!c.kernel) GTEST_SKIP() << name << ": not run by the library: " << c.not_supported;
  const ForwardCheckResult r = check_forward(*c.kernel, problem, preset_scalars(v), 1000 + head_dim + heads_kv);
  std::printf("[ result ] %-22s %s D=%-3d %-8s %s: %s\n", name.c_str(), element_type_name(dtype).c_str(), head_dim,
              c.kernel->prepared().config.template_name.c_str(), problem.str().c_str(), r.summary().c_str());
  EXPECT_TRUE(r.pass) << r.summary();
}

INSTANTIATE_TEST_SUITE_P(AllPresets, ForwardPresets, ::testing::ValuesIn(preset_cases()),
                         [](const auto& info) { return case_name(info.param); });

TEST_F(ForwardEdgeCases, FullyMaskedRowsGiveZeroOutputAndMinusInfinityLse) {
  // Bottom-right causal with Sq > Sk: the first Sq - Sk queries see no key at all.
  const ForwardProblem problem{1, 4, 4, 700, 333};
  const auto r = check_forward(kernel_of(fully_masked_kernel()), problem, {}, 7);
  report("fully_masked_rows", problem, r);
  EXPECT_EQ(r.fully_masked_rows, 4 * (700 - 333));
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, TinyAndRaggedLengths) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  const Kernel& kernel = kernel_of(tiny_kernel());
  for (auto [sq, sk] : {std::pair{1, 1}, {1, 4097}, {17, 3}, {129, 65}, {4096, 4096}}) {
    const ForwardProblem problem{2, 4, 1, sq, sk};
    const auto r = check_forward(kernel, problem, {}, 11);
    report("tiny_and_ragged", problem, r);
    EXPECT_TRUE(r.pass) << problem.str() << ": " << r.summary();
  }
}

TEST_F(ForwardEdgeCases, CustomVariantWithTensorAndFloorDivision) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  const ForwardProblem problem{2, 4, 2, 777, 901};
  const auto r = check_forward(kernel_of(custom_kernel()), problem, {}, 5);
  report("custom", problem, r);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, BshdLayoutThroughStrides) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  const ForwardProblem problem{2, 8, 2, 300, 451, true};
  const auto r = check_forward(kernel_of(bshd_kernel()), problem, {}, 9);
  report("bshd", problem, r);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, NonDefaultSchedulesAgree) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  for (const Schedule& s : other_schedules()) {
    const ForwardProblem problem{1, 4, 4, 513, 1025};
    const auto r = check_forward(kernel_of(schedule_kernel(s)), problem, Bindings().set("window", 100), 3);
    report("schedule " + s.str(), problem, r);
    EXPECT_TRUE(r.pass) << s.str() << ": " << r.summary();
  }
}

TEST_F(ForwardEdgeCases, Sm90KnobsAgree) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  for (const auto& [d, k] : other_sm90_knobs()) {
    const auto [v, options] = sm90_knob_kernel(d, k);
    const Compiled& c = compiled(v, options);
    if (!c.kernel) GTEST_SKIP() << "fwd_sm90 not run here: " << c.not_supported;
    const ForwardProblem problem{2, 4, 2, 515, 1027};
    const auto r = check_forward(*c.kernel, problem, Bindings().set("window", 100), 4);
    report("sm90 D=" + std::to_string(d) + " " + k.str(), problem, r);
    EXPECT_TRUE(r.pass) << "D=" << d << " " << k.str() << ": " << r.summary();
  }
}

TEST_F(ForwardEdgeCases, LargestSharedMemoryKnobsLaunchTheBlockMaskToo) {
  const auto [v, options] = largest_shared_memory_kernel();
  const Compiled& c = compiled(v, options);
  if (!c.kernel) GTEST_SKIP() << "fwd_sm90 not run here: " << c.not_supported;
  const ForwardProblem problem{2, 4, 2, 515, 1027};
  const auto r = check_forward(*c.kernel, problem, preset_scalars(v), 11);
  report("document_causal D=128 bn128 c2 st3", problem, r);
  EXPECT_TRUE(r.pass) << r.summary();
}

// More query blocks than CTAs (each CTA takes several, one Q buffer or two), then fewer (most
// CTAs find the counter past the end at once): the second launch also shows that the first left
// the counters at zero.
TEST_F(ForwardEdgeCases, PersistentScheduleAgrees) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  for (const auto& [v, options] : persistent_kernels()) {
    const Compiled& c = compiled(v, options);
    if (!c.kernel) GTEST_SKIP() << "fwd_sm90 not run here: " << c.not_supported;
    const std::string label = v.name() + " D=" + std::to_string(options.head_dim) + " persistent";
    for (const ForwardProblem& problem : {ForwardProblem{2, 16, 4, 1000, 1537}, ForwardProblem{1, 2, 2, 257, 333}}) {
      const auto r = check_forward(*c.kernel, problem, preset_scalars(v), 21);
      report(label, problem, r);
      EXPECT_TRUE(r.pass) << label << " " << problem.str() << ": " << r.summary();
    }
  }
}

// fwd_sm90 kernels of an opt-in schedule (their source defines `define`) against the reference:
// two odd shapes and, for variants whose tensors the reference can size for it, more queries
// than keys (bottom-right causal: whole items of rows without a key; document ids are indexed by
// key position, so not those).
void expect_schedule_agrees(const std::vector<KernelSpec>& kernels, const std::string& define, int seed) {
  for (const KernelSpec& spec : kernels) {
    const Compiled& c = compiled(spec.first, spec.second);
    if (!c.kernel) GTEST_SKIP() << "fwd_sm90 not run here: " << c.not_supported;
    ASSERT_NE(c.kernel->prepared().source.find(define), std::string::npos) << spec.first.name();
    const std::string label =
        spec.first.name() + " D=" + std::to_string(spec.second.head_dim) + " " + spec.second.knobs.str();
    std::vector<ForwardProblem> problems{{2, 16, 4, 1000, 1537}, {1, 2, 2, 257, 333}};
    if (spec.first.tensors().empty()) problems.push_back({2, 4, 4, 1000, 300});
    for (const ForwardProblem& problem : problems) {
      const auto r = check_forward(*c.kernel, problem, preset_scalars(spec.first), seed);
      report(label, problem, r);
      EXPECT_TRUE(r.pass) << label << " " << problem.str() << ": " << r.summary();
    }
  }
}

TEST_F(ForwardEdgeCases, ItemOverlapAgrees) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  expect_schedule_agrees(item_overlap_kernels(), "#define AJ_ITEM_OVERLAP 1", 23);
}

TEST_F(ForwardEdgeCases, LastInWordAgrees) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  expect_schedule_agrees(last_in_word_kernels(), "#define AJ_LAST_IN_WORD 1", 29);
}

TEST_F(ForwardEdgeCases, PersistentLongRows) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  for (const KernelSpec& spec : persistent_long_row_kernels()) {
    const Kernel& kernel = kernel_of(spec);
    const std::string label = spec.first.name() + " persistent " + spec.second.knobs.str();
    ForwardProblem problem{1, 4, 4, 9000, 9000};
    problem.ids_mean_document = 4500;  // documents of ~35 key tiles (those with ids)
    const auto r = check_forward(kernel, problem, preset_scalars(spec.first), 43);
    report(label, problem, r);
    EXPECT_TRUE(r.pass) << label << ": " << r.summary();
  }
}

// One shape of document items once did not finish (B=1 H=16 S=16384, three documents of 43 key
// tiles, two Q buffers; docs/kernels.md). Run in a child process of this binary under a timeout,
// so that a hang fails this test instead of stalling the suite.
TEST_F(ForwardEdgeCases, DocumentItemsLongDocumentsFinish) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe");
  const std::filesystem::path err = std::filesystem::temp_directory_path() / "attnjit_long_documents.err";
  // (the child runs the one disabled test, unsharded)
  const std::string command = "env -u GTEST_TOTAL_SHARDS -u GTEST_SHARD_INDEX timeout 300 " +
                              test_support::shell_quote(self.string()) +
                              " --gtest_also_run_disabled_tests"
                              " --gtest_filter=ForwardEdgeCases.DISABLED_DocumentItemsLongDocumentsRun";
  const test_support::CommandResult r = test_support::run_command(command, err);
  const std::string tail = r.out.size() > 2000 ? r.out.substr(r.out.size() - 2000) : r.out;
  ASSERT_NE(r.exit_code, 124) << "did not finish within 300 s:\n" << tail;
  EXPECT_EQ(r.exit_code, 0) << tail << r.err;
  EXPECT_TRUE(test_support::contains(r.out, "[  PASSED  ] 1 test")) << tail;
}

TEST_F(ForwardEdgeCases, DISABLED_DocumentItemsLongDocumentsRun) {
  const Kernel& kernel = kernel_of(long_document_items_kernel());
  ForwardProblem problem{1, 16, 16, 16384, 16384};
  problem.ids_mean_document = 5461;  // about three documents of 43 key tiles
  const auto r = check_forward(kernel, problem, {}, 61);
  report("document_causal doc_items=1 stages=2", problem, r);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST_F(ForwardEdgeCases, LongRowsWalkSeveralChunks) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  for (const KernelSpec& spec : long_row_kernels()) {
    const Kernel& kernel = kernel_of(spec);
    const std::string label = spec.first.name() + " " + kernel.prepared().config.template_name;
    const ForwardProblem problem{1, 2, 2, 9000, 9000};
    const auto r = check_forward(kernel, problem, preset_scalars(spec.first), 23);
    report(label, problem, r);
    EXPECT_TRUE(r.pass) << label << ": " << r.summary();
  }
}

// Document masks at D=128, where fwd_sm90 takes a document's keys as the interval of its ids'
// run (compiler/passes/run_equality.hpp): ids in order (the intervals; several run-kernel
// chunks per row at Sk=2600) and ids out of order (0, 1, 0, 1 runs: every row falls back to
// comparing ids), odd lengths, Sq < Sk.
TEST_F(ForwardEdgeCases, DocumentRunsAndIdsOutOfOrder) {
  for (const char* preset : {"document", "document_causal"}) {
    const Kernel& kernel = kernel_of({presets::by_name(preset), CompileOptions().with_head_dim(128)});
    for (const bool out_of_order : {false, true}) {
      ForwardProblem problem{2, 4, 2, 1001, 2600};
      problem.ids_out_of_order = out_of_order;
      const std::string label = std::string(preset) + (out_of_order ? " ids out of order" : " ids in order");
      const auto r = check_forward(kernel, problem, {}, 31);
      report(label, problem, r);
      EXPECT_TRUE(r.pass) << label << ": " << r.summary();
    }
  }
}

// Work items aligned to documents (templates/doc_items.cuh): equal lengths (the items' case),
// sorted ids with documents of about 300 rows and of 3 (many of one row, more items than rows
// of blocks), ids out of order in every row or in the odd ones (those rows keep plain blocks),
// and unequal lengths (every row plain); odd lengths, GQA, more than one batch row.
TEST_F(ForwardEdgeCases, DocumentItemsAgree) {
  if (reduced_suite()) GTEST_SKIP() << "not in the reduced suite (ATTNJIT_GPU_REDUCED)";
  for (const auto& [v, options] : document_item_kernels()) {
    const Compiled& c = compiled(v, options);
    if (!c.kernel) GTEST_SKIP() << "fwd_sm90 not run here: " << c.not_supported;
    const std::string label = v.name() + " D=" + std::to_string(options.head_dim) + " " + options.knobs.str();
    struct Case {
      int mean_document;
      bool out_of_order, odd_rows_only;
      int seq_k;
    };
    for (const Case& k : {Case{300, false, false, 1001}, Case{3, false, false, 1001}, Case{300, true, true, 1001},
                          Case{300, true, false, 1001}, Case{300, false, false, 1300}}) {
      ForwardProblem problem{3, 4, 2, 1001, k.seq_k};
      problem.ids_mean_document = k.mean_document;
      problem.ids_out_of_order = k.out_of_order;
      problem.ids_out_of_order_odd_rows_only = k.odd_rows_only;
      const std::string what = label + " documents ~" + std::to_string(k.mean_document) +
                               (k.out_of_order ? (k.odd_rows_only ? ", odd rows unsorted" : ", unsorted") : "");
      const auto r = check_forward(*c.kernel, problem, preset_scalars(v), 41);
      report(what, problem, r);
      EXPECT_TRUE(r.pass) << what << " " << problem.str() << ": " << r.summary();
    }
  }
}

// Before any test runs, compiles the kernels of the selected tests of this file on every core
// (NVRTC, up to seconds per kernel, dominated the suite when done one test at a time); the
// tests then take them from the memo. A kernel that fails here for another reason than a
// UserError is left for its test to compile and report.
class PrecompileSelectedTests : public ::testing::Environment {
 public:
  void SetUp() override {
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0) return;
    const auto by_test = kernels_by_test();
    std::vector<KernelSpec> todo;
    std::vector<std::string> keys;
    const auto& unit = *::testing::UnitTest::GetInstance();
    for (int i = 0; i < unit.total_test_suite_count(); ++i) {
      const ::testing::TestSuite& suite = *unit.GetTestSuite(i);
      for (int j = 0; j < suite.total_test_count(); ++j) {
        const ::testing::TestInfo& test = *suite.GetTestInfo(j);
        const auto it = by_test.find(std::string(suite.name()) + "." + test.name());
        if (!test.should_run() || it == by_test.end()) continue;
        for (const KernelSpec& spec : it->second) {
          const std::string key = compile_key(spec.first, spec.second);
          if (kernel_memo().count(key) || std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
          keys.push_back(key);
          todo.push_back(spec);
        }
      }
    }
    if (todo.empty()) return;
    const auto start = std::chrono::steady_clock::now();
    // The first on this thread (it sets up the driver and the context), the rest in parallel.
    std::vector<std::unique_ptr<Compiled>> done(todo.size());
    done[0] = std::make_unique<Compiled>(compile_or_reason(todo[0].first, todo[0].second));
    std::atomic<std::size_t> next{1};
    const auto worker = [&] {
      for (std::size_t i = next++; i < todo.size(); i = next++) try {
          done[i] = std::make_unique<Compiled>(compile_or_reason(todo[i].first, todo[i].second));
        } catch (const std::exception&) {
        }
    };
    const unsigned threads = std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 16);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads && t + 1 < todo.size(); ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    for (std::size_t i = 0; i < todo.size(); ++i)
      if (done[i]) kernel_memo()[keys[i]] = std::move(done[i]);
    std::printf("[ precompile ] %zu kernels in %.1f s on %zu threads\n", todo.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), pool.size());
  }
};
[[maybe_unused]] ::testing::Environment* const kPrecompile =
    ::testing::AddGlobalTestEnvironment(new PrecompileSelectedTests);

}  // namespace
}  // namespace attnjit
