// GPU tests of the block mask (templates/block_mask.cuh, Kernel::build_block_mask): the tile
// classes of a mask that reads a tensor match a brute-force CPU classification, and a document
// mask's runs (templates/tensor_runs.cuh) the CPU's; forward with
// a prebuilt BlockMask writes the same bytes as forward that builds its own; and, for the
// record (docs/kernels.md), the block-mask kernel's time against the attention kernel's on
// the benchmark shape. Skips with a message without a GPU. The timing is left out of the
// reduced suite (ATTNJIT_GPU_REDUCED=1, run under compute-sanitizer by tools/gpu/run-suite.sh).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "support/document_runs.hpp"
#include "templates/fwd_sm90/fwd_sm90_template.hpp"

namespace attnjit {
namespace {

class BlockMaskGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0)
      GTEST_SKIP() << "no GPU: " << (driver.available() ? "no CUDA device" : driver.unavailable_reason());
  }
};

// A device tensor with its DLPack view (contiguous).
struct DeviceTensor {
  std::vector<std::int64_t> shape;
  runtime::DeviceBuffer buffer;
  DLTensor view{};
  DeviceTensor(std::vector<std::int64_t> s, DLDataType dtype) : shape(std::move(s)), buffer(bytes_of(shape, dtype)) {
    view.data = reinterpret_cast<void*>(buffer.device_pointer());
    view.device = DLDevice{kDLCUDA, 0};
    view.ndim = static_cast<int>(shape.size());
    view.dtype = dtype;
    view.shape = shape.data();
  }
  static std::size_t bytes_of(const std::vector<std::int64_t>& s, DLDataType dtype) {
    std::size_t n = dtype.bits / 8;
    for (auto e : s) n *= static_cast<std::size_t>(e);
    return n;
  }
};

// Document ids [batch, seq_k]: `docs` segments of random lengths per row.
std::vector<int> document_ids(int batch, int seq_k, int docs, std::mt19937& rng) {
  std::vector<int> ids(static_cast<std::size_t>(batch) * seq_k);
  for (int b = 0; b < batch; ++b) {
    std::vector<int> cuts;
    std::uniform_int_distribution<int> pos(1, seq_k - 1);
    for (int i = 0; i + 1 < docs; ++i) cuts.push_back(pos(rng));
    std::sort(cuts.begin(), cuts.end());
    for (int kv = 0; kv < seq_k; ++kv)
      ids[static_cast<std::size_t>(b) * seq_k + kv] =
          static_cast<int>(std::upper_bound(cuts.begin(), cuts.end(), kv) - cuts.begin());
  }
  return ids;
}

// Normal random values (never zero). With `period` > 0 the first `period` elements are drawn
// and repeated over the tensor: for timings of large tensors, where drawing each of 10^8
// values on the host took seconds and the values do not change the time.
void fill_random(const DeviceTensor& t, std::mt19937& rng, std::int64_t period = 0) {
  HostTensor h(t.view.dtype, t.shape);
  std::normal_distribution<double> normal(0.0, 1.0);
  const std::int64_t n = h.numel(), drawn = period > 0 ? std::min(period, n) : n;
  for (std::int64_t i = 0; i < drawn; ++i) h.set(i, normal(rng));
  auto* bytes = static_cast<unsigned char*>(h.data());
  const std::size_t chunk = static_cast<std::size_t>(drawn) * (t.view.dtype.bits / 8);
  for (std::size_t at = chunk, total = static_cast<std::size_t>(n) * (t.view.dtype.bits / 8); at < total; at += chunk)
    std::memcpy(bytes + at, bytes, std::min(chunk, total - at));
  t.buffer.copy_from_host(h.data(), t.buffer.size_bytes());
}

// The ids as the `doc` tensor of a document mask, bound.
struct BoundIds {
  DeviceTensor doc;
  Bindings bindings;
  BoundIds(const std::vector<int>& ids, int batch, int seq) : doc({batch, seq}, DLDataType{kDLInt, 32, 1}) {
    doc.buffer.copy_from_host(ids.data(), ids.size() * sizeof(int));
    bindings.set("doc", doc.view);
  }
};

void classes_match_brute_force_and_prebuilt_matches_per_call(int D, const Knobs& knobs);
void prebuilt_runs_match_per_call_with_document_items(int D);

// The runs a BlockMask holds (none where the kernel reads no runs) against the CPU's, row by row.
void expect_runs_match(const BlockMask& mask, const std::vector<int>& ids, int batch, int seq_k) {
  if (mask.runs_size_bytes() == 0) return;
  std::vector<int> runs(static_cast<std::size_t>(batch) * seq_k * 2);
  ASSERT_GE(mask.runs_size_bytes(), runs.size() * sizeof(int));
  mask.copy_runs_to_host(runs.data(), runs.size() * sizeof(int));
  for (int b = 0; b < batch; ++b) {
    const auto want = document_runs(ids.data() + static_cast<std::size_t>(b) * seq_k, seq_k);
    for (int j = 0; j < seq_k; ++j) {
      const std::size_t at = (static_cast<std::size_t>(b) * seq_k + j) * 2;
      ASSERT_EQ(runs[at], want[static_cast<std::size_t>(j)].first) << "lo, row " << b << " position " << j;
      ASSERT_EQ(runs[at + 1], want[static_cast<std::size_t>(j)].second) << "hi, row " << b << " position " << j;
    }
  }
}

// The defaults read the ids' runs on fwd_sm90 (knob doc_runs) and compare ids per element on
// fwd_sm80; doc_runs 0 compares them on fwd_sm90 too. The classes come from the same hooks.
// fwd_sm90's default document items build no classes (tiles come from inside each document), so
// there the classes are checked with doc_items 0, and the items with a prebuilt mask (its runs)
// against a call that builds its own.
TEST_F(BlockMaskGpu, ClassesMatchBruteForceAndPrebuiltMatchesPerCall) {
  const Kernel probe = compile(presets::by_name("document_causal"), CompileOptions().with_head_dim(64));
  const bool sm90 = probe.prepared().config.template_name == kFwdSm90TemplateName;
  for (const int D : {64, 128}) {
    SCOPED_TRACE("D=" + std::to_string(D));
    classes_match_brute_force_and_prebuilt_matches_per_call(D, sm90 ? Knobs{{"doc_items", 0}} : Knobs{});
    if (sm90) prebuilt_runs_match_per_call_with_document_items(D);
  }
  if (sm90) {
    SCOPED_TRACE("D=64 doc_runs=0");
    classes_match_brute_force_and_prebuilt_matches_per_call(64, Knobs{{"doc_runs", 0}});
  }
}

// The runs pre-pass on rows in order, a row out of order (its runs all lo > hi: the kernel
// compares ids there) and a row of one document.
TEST_F(BlockMaskGpu, RunsMatchTheReferenceInAndOutOfOrder) {
  const int B = 3, H = 2, S = 3001;
  const Kernel kernel = compile(presets::by_name("document_causal"), CompileOptions().with_head_dim(128));
  if (kernel.prepared().unit.facts.runs_slot < 0)
    GTEST_SKIP() << "template " << kernel.prepared().config.template_name << " reads no runs";
  std::mt19937 rng(5);
  std::vector<int> ids = document_ids(B, S, 7, rng);
  for (int j = 0; j < S; ++j) ids[static_cast<std::size_t>(S) + j] = (j / 100) % 3;  // ids come back
  for (int j = 0; j < S; ++j) ids[2 * static_cast<std::size_t>(S) + j] = 42;
  const BoundIds bound(ids, B, S);
  const Bindings& bindings = bound.bindings;
  const BlockMask mask = kernel.build_block_mask(B, H, S, S, bindings);
  ASSERT_GT(mask.runs_size_bytes(), 0u);
  expect_runs_match(mask, ids, B, S);
}

// Forward with the prebuilt mask == forward building its own, byte for byte (outputs poisoned
// differently); a mask built for another shape is refused.
void expect_prebuilt_matches_per_call(const Kernel& kernel, const BlockMask& mask, const Bindings& bindings, int B,
                                      int H, int Sq, int Sk, int D, std::mt19937& rng) {
  const DLDataType bf16 = dlpack_bfloat16();
  DeviceTensor q({B, H, Sq, D}, bf16), k({B, H, Sk, D}, bf16), v({B, H, Sk, D}, bf16);
  DeviceTensor o1({B, H, Sq, D}, bf16), o2({B, H, Sq, D}, bf16);
  fill_random(q, rng);
  fill_random(k, rng);
  fill_random(v, rng);
  o1.buffer.fill_bytes(0xff);
  o2.buffer.fill_bytes(0x7f);
  kernel.forward(q.view, k.view, v.view, o1.view, nullptr, bindings);
  kernel.forward(q.view, k.view, v.view, o2.view, nullptr, bindings, nullptr, 0.0, &mask);
  synchronize_device();
  std::vector<unsigned char> h1(o1.buffer.size_bytes()), h2(o2.buffer.size_bytes());
  o1.buffer.copy_to_host(h1.data(), h1.size());
  o2.buffer.copy_to_host(h2.data(), h2.size());
  EXPECT_EQ(std::memcmp(h1.data(), h2.data(), h1.size()), 0) << "D=" << D;

  const BlockMask other = kernel.build_block_mask(B, H, Sq, Sk - 1, bindings);
  EXPECT_THROW(kernel.forward(q.view, k.view, v.view, o2.view, nullptr, bindings, nullptr, 0.0, &other), UserError);
}

void prebuilt_runs_match_per_call_with_document_items(int D) {
  const int B = 2, H = 3, S = 1537;
  std::mt19937 rng(9);
  const Kernel kernel = compile(presets::by_name("document_causal"), CompileOptions().with_head_dim(D));
  ASSERT_EQ(kernel.prepared().config.knobs.get("doc_items"), 1);
  const std::vector<int> ids = document_ids(B, S, 4, rng);
  const BoundIds bound(ids, B, S);
  const Bindings& bindings = bound.bindings;
  const BlockMask mask = kernel.build_block_mask(B, H, S, S, bindings);
  expect_runs_match(mask, ids, B, S);
  expect_prebuilt_matches_per_call(kernel, mask, bindings, B, H, S, S, D, rng);
}

void classes_match_brute_force_and_prebuilt_matches_per_call(int D, const Knobs& knobs) {
  const int B = 2, H = 3, Sq = 1000, Sk = 1537;
  std::mt19937 rng(7);
  CompileOptions options = CompileOptions().with_head_dim(D).with_dtype(ElementType::BF16);
  if (!knobs.empty()) options = options.with_knobs(knobs);
  const Kernel kernel = compile(presets::by_name("document_causal"), options);
  ASSERT_TRUE(kernel.has_block_mask());
  const auto& facts = kernel.prepared().unit.facts;
  EXPECT_TRUE(facts.mask_uses_batch);
  EXPECT_FALSE(facts.mask_uses_head);

  const std::vector<int> ids = document_ids(B, Sk, 4, rng);
  const BoundIds bound(ids, B, Sk);
  const Bindings& bindings = bound.bindings;

  const BlockMask mask = kernel.build_block_mask(B, H, Sq, Sk, bindings);
  EXPECT_EQ(mask.runs_size_bytes() > 0, kernel.prepared().unit.facts.runs_slot >= 0);
  expect_runs_match(mask, ids, B, Sk);
  // The forward template's tile: fwd_sm80 names its rows block_m; fwd_sm90 has 64 per consumer warpgroup.
  const auto& knobs = kernel.prepared().config.knobs;
  const int bm = knobs.values().count("block_m") ? knobs.get("block_m") : 64 * knobs.get("consumers");
  const int bn = knobs.get("block_n");
  const int qt = (Sq + bm - 1) / bm, kt = (Sk + bn - 1) / bn;
  ASSERT_EQ(mask.size_bytes(), static_cast<std::size_t>(B) * qt * kt);
  std::vector<unsigned char> classes(mask.size_bytes());
  mask.copy_to_host(classes.data(), classes.size());
  const int shift = Sk - Sq;  // bottom-right alignment
  int counts[3] = {0, 0, 0};
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < qt; ++i)
      for (int j = 0; j < kt; ++j) {
        bool any_true = false, any_false = false;
        for (int q = i * bm; q < std::min((i + 1) * bm, Sq); ++q)
          for (int kv = j * bn; kv < std::min((j + 1) * bn, Sk); ++kv) {
            const int qs = std::clamp(q + shift, 0, Sk - 1);
            const bool m = ids[static_cast<std::size_t>(b) * Sk + qs] == ids[static_cast<std::size_t>(b) * Sk + kv] &&
                           kv <= q + shift;
            any_true |= m;
            any_false |= !m;
          }
        const int want = !any_true ? 0 : (!any_false ? 2 : 1);
        const int got = classes[(static_cast<std::size_t>(b) * qt + i) * kt + j];
        ASSERT_EQ(got, want) << "b " << b << " q tile " << i << " kv tile " << j;
        ++counts[want];
      }
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);

  expect_prebuilt_matches_per_call(kernel, mask, bindings, B, H, Sq, Sk, D, rng);
}

}  // namespace
}  // namespace attnjit
