// mask_density: the fraction of admitted (q, kv) pairs that `attnjit bench` counts TFLOP/s on,
// against closed forms (no GPU needed).
#include <gtest/gtest.h>

#include "dsl/presets.hpp"
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

}  // namespace
}  // namespace attnjit
