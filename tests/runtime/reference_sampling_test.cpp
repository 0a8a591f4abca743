// Row sampling of the reference and the forward checker, on the CPU: the sampled reference
// equals the full one on the sampled rows (bit for bit), the sample holds the rows it must
// (first, last, both sides of every tile boundary, every fully masked row), fully_masked_rows
// agrees with the full reference, and the checker's judgement (compare_forward, fed host
// arrays) fails a wrong value on a tile-boundary row or a fully masked row, and a NaN or an
// infinity anywhere, sampled or not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/reference/reference.hpp"
#include "runtime/reference/row_sample.hpp"

namespace attnjit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Random Q, K, V and every tensor / parameter a variant needs, as host tensors.
struct Problem {
  ForwardProblem shape;
  int dim = 32;
  HostTensor q, k, v;
  std::map<std::string, std::unique_ptr<HostTensor>> captured;
  Bindings bindings;

  Problem(const Variant& variant, ForwardProblem p, DLDataType dtype, unsigned seed)
      : shape(p),
        q(dtype, {p.batch, p.heads_q, p.seq_q, dim}),
        k(dtype, {p.batch, p.heads_kv, p.seq_k, dim}),
        v(dtype, {p.batch, p.heads_kv, p.seq_k, dim}) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (HostTensor* t : {&q, &k, &v})
      for (std::int64_t i = 0; i < t->numel(); ++i) t->set(i, normal(rng));
    for (const auto& param : variant.params()) {
      if (param.type == ir::Type::Int) {
        const std::map<std::string, int> values = {
            {"window", 40}, {"prefix_len", 50}, {"stride", 4}, {"local", 16}, {"group", 64}};
        bindings.set(param.name, values.count(param.name) ? values.at(param.name) : 3);
      } else {
        bindings.set(param.name, 30.0);
      }
    }
    for (const auto& decl : variant.tensors()) {
      const auto dims = covering_tensor_shape(variant, decl, p, bindings, dim);
      auto t = std::make_unique<HostTensor>(to_dlpack_dtype(decl.dtype), dims);
      const std::int64_t row = dims.back();
      std::bernoulli_distribution coin(0.5), new_id(std::min(1.0, 3.0 / static_cast<double>(row)));
      for (std::int64_t i = 0; i < t->numel(); ++i) {
        switch (ir::value_type_of(decl.dtype)) {
          case ir::Type::Float: t->set(i, 0.5 * normal(rng)); break;
          case ir::Type::Int: t->set(i, i % row == 0 ? 0 : t->get(i - 1) + (new_id(rng) ? 1 : 0)); break;
          case ir::Type::Bool: t->set(i, coin(rng) ? 1 : 0); break;
        }
      }
      bindings.set(decl.name, t->dl());
      captured[decl.name] = std::move(t);
    }
  }

  ReferenceResult reference(const Variant& variant, const ReferenceOptions& options = {}) const {
    return reference_attention(variant, q.dl(), k.dl(), v.dl(), bindings, options);
  }
};

// Rows of each pair where the full reference says "fully masked".
std::vector<std::vector<int>> masked_in(const ReferenceResult& ref) {
  std::vector<std::vector<int>> rows(static_cast<std::size_t>(ref.batch) * ref.heads_q);
  for (int b = 0; b < ref.batch; ++b)
    for (int h = 0; h < ref.heads_q; ++h)
      for (int s = 0; s < ref.seq_q; ++s)
        if (ref.lse_at(b, h, s) == -kInf) rows[static_cast<std::size_t>(b) * ref.heads_q + h].push_back(s);
  return rows;
}

// Masks with fully masked rows that depend on the head (h) and on a tensor read (b, q).
Variant per_head_mask() {
  using namespace dsl::vars;
  Variant v("per_head_rows");
  v.with_mask_mod((q % 3 != 0 || h == 1) && (kv + h) % 5 == 0);
  return v;
}
Variant tensor_row_mask() {
  using namespace dsl::vars;
  const Tensor keep("keep", ir::TensorDType::U8, 2);
  Variant v("tensor_rows");
  v.with_mask_mod(keep(b, q) && kv <= q + kv_len - q_len);
  return v;
}

std::vector<Variant> variants_under_test() {
  std::vector<Variant> all;
  for (const auto& p : presets::registry()) all.push_back(p.make());
  all.push_back(per_head_mask());
  all.push_back(tensor_row_mask());
  return all;
}

TEST(ReferenceSampling, BoundaryRowsAreFirstLastAndBothSidesOfEveryTileBoundary) {
  EXPECT_EQ(boundary_rows(1), (std::vector<int>{0}));
  EXPECT_EQ(boundary_rows(64), (std::vector<int>{0, 63}));
  EXPECT_EQ(boundary_rows(65), (std::vector<int>{0, 63, 64}));
  EXPECT_EQ(boundary_rows(200), (std::vector<int>{0, 63, 64, 127, 128, 191, 192, 199}));
  const auto rows = boundary_rows(1000);
  EXPECT_EQ(rows.size(), 2u + 2u * 15u);  // 15 multiples of 64 below 1000 (those of 128 among them)
  for (int m = 64; m < 1000; m += 64) {
    EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), m)) << m;
    EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), m - 1)) << m - 1;
  }
}

// fully_masked_rows (mask only, candidates + interval analysis + scan) finds exactly the rows
// the full reference leaves at LSE = -inf, for every preset and two per-row masks, with
// Sq < Sk and Sq > Sk (bottom-right masks then mask the leading rows).
TEST(ReferenceSampling, FullyMaskedRowsMatchTheFullReference) {
  std::map<std::string, int> pairs_with_masked_rows;
  for (const Variant& variant : variants_under_test())
    for (const ForwardProblem shape : {ForwardProblem{2, 4, 2, 97, 150}, ForwardProblem{2, 4, 2, 150, 97}}) {
      SCOPED_TRACE(variant.name() + " " + shape.str());
      std::unique_ptr<Problem> p;
      try {
        p = std::make_unique<Problem>(variant, shape, dlpack_float32(), 17);
      } catch (const UserError& e) {  // a tensor read below index 0 for this shape (Sq > Sk)
        continue;
      }
      const auto full = p->reference(variant);
      const auto want = masked_in(full);
      EXPECT_EQ(fully_masked_rows(variant, p->q.dl(), p->k.dl(), p->bindings), want);
      for (const auto& rows : want) pairs_with_masked_rows[variant.name()] += rows.empty() ? 0 : 1;
    }
  // The comparison saw masked rows: leading rows, rows of some heads only, rows a tensor picks.
  EXPECT_GT(pairs_with_masked_rows["causal_bottom_right"], 0);
  EXPECT_GT(pairs_with_masked_rows["per_head_rows"], 0);
  EXPECT_GT(pairs_with_masked_rows["tensor_rows"], 0);
}

TEST(ReferenceSampling, SampleHoldsBoundaryRowsEveryMaskedRowAndRandomRows) {
  const Variant variant = presets::causal(presets::CausalAlignment::BottomRight);
  const ForwardProblem shape{2, 3, 3, 300, 200};  // rows 0..99 are fully masked
  const Problem p(variant, shape, dlpack_float32(), 5);
  // Small enough for a full check by default.
  EXPECT_TRUE(sample_rows(variant, p.q.dl(), p.k.dl(), p.bindings).all());

  const auto options = RowSampleOptions().with_full_check_pairs(0).with_random_rows(8).with_seed(1);
  const RowSelection sample = sample_rows(variant, p.q.dl(), p.k.dl(), p.bindings, options);
  ASSERT_FALSE(sample.all());
  ASSERT_EQ(sample.rows.size(), 6u);
  std::vector<int> required = boundary_rows(300);
  for (int r = 0; r < 100; ++r) required.push_back(r);
  std::sort(required.begin(), required.end());
  required.erase(std::unique(required.begin(), required.end()), required.end());
  for (std::size_t pair = 0; pair < sample.rows.size(); ++pair) {
    const auto& rows = sample.rows[pair];
    EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
    EXPECT_TRUE(std::includes(rows.begin(), rows.end(), required.begin(), required.end())) << "pair " << pair;
    EXPECT_EQ(rows.size(), required.size() + 8) << "pair " << pair;
    EXPECT_TRUE(sample.contains(static_cast<int>(pair), 0));
    EXPECT_TRUE(sample.contains(static_cast<int>(pair), 299));
    EXPECT_TRUE(sample.contains(static_cast<int>(pair), 256));
    EXPECT_TRUE(sample.contains(static_cast<int>(pair), 255));
  }
  EXPECT_NE(sample.rows[0], sample.rows[1]);  // random rows differ between pairs
  EXPECT_EQ(sample_rows(variant, p.q.dl(), p.k.dl(), p.bindings, options).rows, sample.rows);  // seeded
  EXPECT_EQ(sample.count(6, 300), static_cast<std::int64_t>(6 * (required.size() + 8)));
}

// The sampled reference computes the same bits as the full one on its rows (fp64 and the
// naive bf16 run), leaves the other rows NaN, and splits work the same for any thread count.
TEST(ReferenceSampling, SampledReferenceEqualsFullReferenceOnSampledRows) {
  const auto options = RowSampleOptions().with_full_check_pairs(0).with_random_rows(5).with_seed(3);
  for (const std::string name :
       {"causal_bottom_right", "document_causal", "alibi_window_softcap", "rope_causal", "gated_causal", "strided"}) {
    SCOPED_TRACE(name);
    const Variant variant = presets::by_name(name);
    const Problem p(variant, ForwardProblem{2, 4, 2, 201, 333}, dlpack_bfloat16(), 11);
    const RowSelection sample = sample_rows(variant, p.q.dl(), p.k.dl(), p.bindings, options);
    ASSERT_FALSE(sample.all());
    for (const NaivePrecision naive : {NaivePrecision::None, NaivePrecision::BF16}) {
      const auto full = p.reference(variant, ReferenceOptions().with_naive_precision(naive).with_threads(1));
      // More threads than pairs: each pair's rows are cut in chunks, same bits.
      const auto split = p.reference(variant, ReferenceOptions().with_naive_precision(naive).with_threads(64));
      ASSERT_EQ(split.o, full.o);
      ASSERT_EQ(split.lse, full.lse);
      for (const int threads : {1, 64}) {
        const auto part = p.reference(
            variant, ReferenceOptions().with_naive_precision(naive).with_rows(sample).with_threads(threads));
        EXPECT_EQ(part.rows_computed(), sample.count(8, 201));
        for (int b = 0; b < 2; ++b)
          for (int h = 0; h < 4; ++h)
            for (int s = 0; s < 201; ++s) {
              if (!part.computed(b, h, s)) {
                ASSERT_TRUE(std::isnan(part.lse_at(b, h, s)));
                ASSERT_TRUE(std::isnan(part.o_at(b, h, s, 0)));
                continue;
              }
              ASSERT_EQ(part.lse_at(b, h, s), full.lse_at(b, h, s)) << b << " " << h << " " << s;
              for (int d = 0; d < 32; ++d)
                ASSERT_EQ(part.o_at(b, h, s, d), full.o_at(b, h, s, d)) << b << " " << h << " " << s << " " << d;
            }
      }
    }
  }
}

TEST(ReferenceSampling, ReferenceRefusesAMalformedSelection) {
  const Variant variant = presets::causal();
  const Problem p(variant, ForwardProblem{1, 2, 2, 10, 10}, dlpack_float32(), 1);
  RowSelection unsorted{{{3, 1}, {0}}}, out_of_range{{{0, 10}, {0}}}, too_few{{{0}}};
  for (const RowSelection& bad : {unsorted, out_of_range, too_few})
    EXPECT_THROW(p.reference(variant, ReferenceOptions().with_rows(bad)), UserError);
}

// compare_forward on host arrays: the "kernel" is the naive bf16 computation (error ==
// naive error, so it passes), then one value is broken.
class CheckerOnHostArrays : public ::testing::Test {
 protected:
  const Variant variant = presets::causal(presets::CausalAlignment::BottomRight);
  const ForwardProblem shape{1, 2, 2, 300, 200};  // rows 0..99 fully masked
  const Problem p{variant, shape, dlpack_bfloat16(), 23};
  RowSelection sample;
  ReferenceResult ref, naive;
  HostTensor o{dlpack_bfloat16(), {1, 2, 300, 32}};
  HostTensor lse{dlpack_float32(), {1, 2, 300}};

  void SetUp() override {
    sample = sample_rows(variant, p.q.dl(), p.k.dl(), p.bindings,
                         RowSampleOptions().with_full_check_pairs(0).with_random_rows(4).with_seed(9));
    ref = p.reference(variant, ReferenceOptions().with_rows(sample));
    naive = p.reference(variant, ReferenceOptions().with_rows(sample).with_naive_precision(NaivePrecision::BF16));
    const auto full_naive = p.reference(variant, ReferenceOptions().with_naive_precision(NaivePrecision::BF16));
    const auto full_ref = p.reference(variant);
    for (std::int64_t i = 0; i < o.numel(); ++i) o.set(i, full_naive.o[static_cast<std::size_t>(i)]);
    for (std::int64_t i = 0; i < lse.numel(); ++i) lse.set(i, full_ref.lse[static_cast<std::size_t>(i)]);
  }
  std::int64_t at(int h, int s, int d) const { return (static_cast<std::int64_t>(h) * 300 + s) * 32 + d; }
  ForwardCheckResult judge() const { return compare_forward(o.dl(), lse.dl(), ref, naive); }
  int unsampled_row() const {
    for (int s = 0; s < 300; ++s)
      if (!sample.contains(0, s)) return s;
    return -1;
  }
};

TEST_F(CheckerOnHostArrays, NaiveOutputPassesAndTheSummaryCountsTheSample) {
  const auto r = judge();
  EXPECT_TRUE(r.pass) << r.summary();
  EXPECT_EQ(r.fully_masked_rows, 2 * 100);
  EXPECT_EQ(r.rows_total, 600);
  EXPECT_EQ(r.rows_checked, sample.count(2, 300));
  EXPECT_LT(r.rows_checked, 600);
  EXPECT_NE(r.summary().find("rows checked: " + std::to_string(r.rows_checked) + " of 600"), std::string::npos)
      << r.summary();
}

TEST_F(CheckerOnHostArrays, WrongValueOnATileBoundaryRowFails) {
  for (const int row : {127, 128, 255, 256, 299}) {
    SCOPED_TRACE(row);
    const double saved = o.get(at(1, row, 5));
    o.set(at(1, row, 5), ref.o_at(0, 1, row, 5) + 0.25);
    const auto r = judge();
    EXPECT_FALSE(r.pass) << r.summary();
    EXPECT_GT(r.max_error, 0.2);
    o.set(at(1, row, 5), saved);
  }
  EXPECT_TRUE(judge().pass);
}

TEST_F(CheckerOnHostArrays, NonzeroOutputOrFiniteLseOnAFullyMaskedRowFails) {
  o.set(at(0, 42, 3), 1e-3);
  auto r = judge();
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.bad_elements, 1);
  o.set(at(0, 42, 3), 0.0);
  lse.set(1 * 300 + 99, 0.5);
  r = judge();
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.bad_elements, 1);
}

TEST_F(CheckerOnHostArrays, NanOrInfinityOutsideTheSampleFails) {
  const int row = unsampled_row();
  ASSERT_GE(row, 100);
  o.set(at(0, row, 7), std::numeric_limits<double>::quiet_NaN());
  auto r = judge();
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.bad_elements, 1);
  o.set(at(0, row, 7), 0.0);
  EXPECT_TRUE(judge().pass);
  lse.set(row, -kInf);  // "fully masked" claimed on a row that is not: it is in no sample
  r = judge();
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.bad_elements, 1);
}

TEST_F(CheckerOnHostArrays, MismatchedSelectionsAreRefused) {
  const auto other = p.reference(variant, ReferenceOptions().with_naive_precision(NaivePrecision::BF16));
  EXPECT_THROW(compare_forward(o.dl(), lse.dl(), ref, other), UserError);
}

}  // namespace
}  // namespace attnjit
