// The bf16 key panels of the CPU backend (cpu_kernels.hpp: pack_keys_bf16), checked word by
// word against their definition: panel p, word i, lane j holds word i of key 16p + j, and keys
// past `cols` and words past the row's (dim + 1) / 2 are zero. The shapes cover whole and
// partial 16 x 16 blocks in both directions (odd key counts, head dims whose words are not a
// multiple of 16) and rows farther apart than they are long.
#include <gtest/gtest.h>

#include <cstdint>
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

}  // namespace
}  // namespace attnjit
