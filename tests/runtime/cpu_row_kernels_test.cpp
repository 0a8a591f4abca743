// The CPU backend's packing and row kernels (cpu_kernels.hpp) against their definitions:
// - pack_keys_bf16, word by word: panel p, word i, lane j holds word i of key 16p + j, and keys
//   past `cols` and words past the row's (dim + 1) / 2 are zero. The shapes cover whole and
//   partial 16 x 16 blocks in both directions (odd key counts, head dims whose words are not a
//   multiple of 16) and rows farther apart than they are long. Likewise pack_keys on fp32 keys,
//   through the transposes and element by element (strided columns).
// - softmax_short_row_bf16 and softmax_short_row (fp32) against max_of + exp_shifted_sum(_bf16),
//   the two calls they replace for short rows: every length 1..kShortRowKeys, masked (-inf)
//   keys, a running max above and below the row's, and rows with nothing admitted.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cpu/cpu_kernels.hpp"

namespace attnjit {
namespace {

TEST(CpuPackKeys, PanelsHoldEveryKeysWordsAndZeroPadding) {
  if (!cpu::bf16_products_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16; the bf16 panels are not used";
  std::mt19937 rng(7);
  for (const int dim : {2, 30, 64, 96, 128, 256})
    for (const int cols : {1, 15, 16, 17, 64, 200})
      for (const int extra : {0, 5}) {
        const int pairs = (dim + 1) / 2;
        const std::int64_t ld = pairs + extra;
        std::vector<std::uint32_t> rows(static_cast<std::size_t>(cols * ld));
        for (auto& w : rows) w = rng();
        const int panels = (cols + 15) / 16;
        std::vector<std::uint32_t> packed(static_cast<std::size_t>(panels) * 16 * pairs, 0xdeadbeefu);
        cpu::pack_keys_bf16(rows.data(), ld, cols, dim, packed.data());
        for (int p = 0; p < panels; ++p)
          for (int i = 0; i < pairs; ++i)
            for (int j = 0; j < 16; ++j) {
              const int key = 16 * p + j;
              const std::uint32_t want = key < cols ? rows[static_cast<std::size_t>(key * ld + i)] : 0u;
              ASSERT_EQ(packed[static_cast<std::size_t>((p * pairs + i) * 16 + j)], want)
                  << "dim " << dim << " cols " << cols << " ld " << ld << " panel " << p << " word " << i << " lane "
                  << j;
            }
      }
}

// fp32 keys into panels [dim][16] per 16 keys (the register transposes where the CPU has
// AVX-512 BF16 and the columns are contiguous, element by element otherwise), zero keys after
// `cols`, against the definition.
TEST(CpuPackKeys, Fp32PanelsHoldEveryKeyInBothPaths) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const int dim : {1, 40, 64, 128})
    for (const int cols : {1, 17, 64, 100})
      for (const int col_stride : {1, 2}) {
        const std::int64_t row_stride = static_cast<std::int64_t>(dim) * col_stride + 3;
        std::vector<float> k(static_cast<std::size_t>(cols * row_stride));
        for (auto& e : k) e = normal(rng);
        const int panels = (cols + 15) / 16;
        std::vector<float> packed(static_cast<std::size_t>(panels) * 16 * dim, -7.0f);
        cpu::pack_keys(cpu::Storage::F32, k.data(), row_stride, col_stride, cols, dim, packed.data());
        for (int p = 0; p < panels; ++p)
          for (int d = 0; d < dim; ++d)
            for (int j = 0; j < 16; ++j) {
              const int key = 16 * p + j;
              const float want = key < cols ? k[static_cast<std::size_t>(key * row_stride + d * col_stride)] : 0.0f;
              ASSERT_EQ(packed[static_cast<std::size_t>((p * dim + d) * 16 + j)], want)
                  << "dim " << dim << " cols " << cols << " col_stride " << col_stride << " key " << key << " d " << d;
            }
      }
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kScale = 0.125f;

// Calls check(x, m_old, want_m) for every length 1..kShortRowKeys, a running max below, inside
// and above the row's, with 30% of the keys masked or all of them; want_m is the new running max.
template <class Check>
void for_each_short_row(unsigned seed, Check check) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::bernoulli_distribution masked(0.3);
  for (int n = 1; n <= cpu::kShortRowKeys; ++n)
    for (const float m_old : {kNegInf, -5.0f, 40.0f})
      for (const bool all_masked : {false, true}) {
        std::vector<float> x(static_cast<std::size_t>(n));
        for (auto& e : x) e = all_masked || masked(rng) ? kNegInf : normal(rng);
        check(x, m_old, std::max(m_old, cpu::max_of(x.data(), n) * kScale));
        if (::testing::Test::HasFatalFailure()) return;
      }
}

TEST(CpuShortRow, Bf16MatchesMaxThenExpForEveryLength) {
  if (!cpu::bf16_products_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16; the bf16 softmax is not used";
  for_each_short_row(11, [](const std::vector<float>& x, float m_old, float want_m) {
    const int n = static_cast<int>(x.size()), words = (n + 1) / 2;
    std::vector<std::uint32_t> want(static_cast<std::size_t>(words) + 1, 0xabababab), got = want;
    float want_sum = 0.0f, got_m = 0.0f;
    if (want_m == kNegInf)
      std::fill_n(want.begin(), words, 0u);
    else
      want_sum = cpu::exp_shifted_sum_bf16(x.data(), n, want_m, kScale, want.data());
    const float got_sum = cpu::softmax_short_row_bf16(x.data(), n, kScale, m_old, &got_m, got.data());
    ASSERT_EQ(got_m, want_m) << "n " << n << " m_old " << m_old;
    ASSERT_NEAR(got_sum, want_sum, 1e-6f * std::max(1.0f, want_sum)) << "n " << n << " m_old " << m_old;
    ASSERT_EQ(got, want) << "n " << n << " m_old " << m_old << " (the word past the row must stay as it was)";
  });
}

TEST(CpuShortRow, Fp32MatchesMaxThenExpForEveryLength) {
  for_each_short_row(12, [](const std::vector<float>& x, float m_old, float want_m) {
    const int n = static_cast<int>(x.size());
    std::vector<float> want = x, got = x;
    float want_sum = 0.0f, got_m = 0.0f;
    if (want_m == kNegInf)
      std::fill(want.begin(), want.end(), 0.0f);
    else
      want_sum = cpu::exp_shifted_sum(want.data(), n, want_m, kScale);
    const float got_sum = cpu::softmax_short_row(got.data(), n, kScale, m_old, &got_m);
    ASSERT_EQ(got_m, want_m) << "n " << n << " m_old " << m_old;
    ASSERT_NEAR(got_sum, want_sum, 1e-6f * std::max(1.0f, want_sum)) << "n " << n << " m_old " << m_old;
    ASSERT_EQ(got, want) << "n " << n << " m_old " << m_old;
  });
}

}  // namespace
}  // namespace attnjit
