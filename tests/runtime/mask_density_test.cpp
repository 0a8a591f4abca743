// mask_density: the fraction of admitted (q, kv) pairs that `attnjit bench` counts TFLOP/s on,
// against closed forms (no GPU needed).
#include <gtest/gtest.h>

#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/tuning/benchmark.hpp"

namespace attnjit {
namespace {

TEST(MaskDensity, DenseIsOne) {
  EXPECT_DOUBLE_EQ(mask_density(presets::dense(), ForwardProblem{2, 4, 4, 100, 77}, {}), 1.0);
}

TEST(MaskDensity, CausalCountsTheLowerTriangleExactly) {
  // Sq = Sk = 100: 100 * 101 / 2 admitted pairs out of 100 * 100.
  EXPECT_DOUBLE_EQ(mask_density(presets::causal(), ForwardProblem{1, 2, 2, 100, 100}, {}), 5050.0 / 10000.0);
}

TEST(MaskDensity, SlidingWindowCountsExactly) {
  // Window 10 over 200 queries: rows 0..9 see q + 1 keys, the other 190 rows see 10.
  const double admitted = 55.0 + 190.0 * 10.0;
  EXPECT_DOUBLE_EQ(
      mask_density(presets::sliding_window(), ForwardProblem{1, 1, 1, 200, 200}, Bindings().set("window", 10)),
      admitted / (200.0 * 200.0));
}

TEST(MaskDensity, SampledRowsStayCloseWhenExactCountingIsTooExpensive) {
  // A limit of 1000 evaluations forces row sampling on the diagonal tiles.
  const double sampled =
      mask_density(presets::causal(), ForwardProblem{1, 1, 1, 1000, 1000}, {}, /*max_evaluations=*/1000);
  EXPECT_NEAR(sampled, 1000.0 * 1001.0 / 2.0 / 1e6, 0.01);
}

TEST(MaskDensity, TensorMasksCountPerBatchAndPerHeadOnlyWhereTheirIndicesSay) {
  // Document ids doc[b, kv]: batch 0 one document (all pairs), batch 1 two halves (half the
  // pairs); the same for every head, whether or not heads are enumerated.
  const int s = 96;
  HostTensor ids(dlpack_int32(), {2, s});
  for (int i = 0; i < s; ++i) {
    ids.set(i, 0);
    ids.set(s + i, i < s / 2 ? 0 : 1);
  }
  Bindings docs;
  docs.set("doc", ids.dl());
  EXPECT_DOUBLE_EQ(mask_density(presets::document(), ForwardProblem{2, 4, 4, s, s}, docs), (1.0 + 0.5) / 2.0);
  // A mask whose tensor index mentions h: allowed[h, kv] keeps key 0 only for head 0 and every
  // key for head 1, so the heads differ and are counted one by one.
  using namespace dsl::vars;
  const Tensor allowed("allowed", ir::TensorDType::I32, 2);
  const Variant per_head = Variant("per_head").with_mask_mod(allowed(h, kv) != 0);
  HostTensor a(dlpack_int32(), {2, s});
  for (int i = 0; i < s; ++i) {
    a.set(i, i == 0 ? 1 : 0);
    a.set(s + i, 1);
  }
  Bindings heads;
  heads.set("allowed", a.dl());
  EXPECT_DOUBLE_EQ(mask_density(per_head, ForwardProblem{1, 2, 2, s, s}, heads), (1.0 / s + 1.0) / 2.0);
}

TEST(MaskDensity, DocumentTilesAreBoundedByTheIdsSoLongRowsCountExactly) {
  // Three causal documents over 4096 rows: 8.4M admitted pairs, but inside a document the bound
  // ids make every tile full or empty, so only the diagonal tiles and those across an edge (under 1M elements)
  // are evaluated, within a budget of 1.5M that would force sampling otherwise.
  const int s = 4096;
  const int ends[] = {1000, 2731, s};
  HostTensor ids(dlpack_int32(), {1, s});
  double admitted = 0;
  for (int d = 0, start = 0; d < 3; start = ends[d++]) {
    for (int i = start; i < ends[d]; ++i) ids.set(i, d);
    const double n = ends[d] - start;
    admitted += n * (n + 1) / 2;
  }
  Bindings docs;
  docs.set("doc", ids.dl());
  EXPECT_DOUBLE_EQ(mask_density(presets::by_name("document_causal"), ForwardProblem{1, 2, 2, s, s}, docs,
                                /*max_evaluations=*/1'500'000),
                   admitted / (static_cast<double>(s) * s));
}

}  // namespace
}  // namespace attnjit
