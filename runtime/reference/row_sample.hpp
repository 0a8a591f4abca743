// Which query rows the forward checker compares on a large problem.
//
// The fp64 reference costs a dot product per (b, h, q, kv), twice (fp64 and the naive
// same-precision run): seconds per check on the GPU suite's shapes. Above a size threshold
// the checker therefore computes a sample of rows per (b, h) pair. The sample always holds
// the rows where a kernel is most likely to err:
//   - the first and the last row;
//   - both sides of every tile boundary: each multiple m of 64 (so of 128 too: the
//     kernel's block_m is 64 or 128) below seq_q, and m - 1;
//   - every fully masked row (the mask alone decides, see fully_masked_rows);
// plus a few rows drawn at random from the seed, different per pair. At or below the
// threshold every row is checked. Elements outside the sample are still checked for NaN /
// unwritten values by the checker (that costs nothing), only not against the reference.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/reference/reference.hpp"

namespace attnjit {

struct RowSampleOptions {
  // Problems with batch * heads_q * seq_q * seq_k at or below this are checked on every row.
  std::int64_t full_check_pairs = std::int64_t{1} << 20;
  int random_rows = 8;  // per (b, h) pair, on top of the required rows
  std::uint64_t seed = 0;

  RowSampleOptions& with_full_check_pairs(std::int64_t n) {
    full_check_pairs = n;
    return *this;
  }
  RowSampleOptions& with_random_rows(int n) {
    random_rows = n;
    return *this;
  }
  RowSampleOptions& with_seed(std::uint64_t s) {
    seed = s;
    return *this;
  }
};

// The tile sizes whose boundaries every sample covers (the kernel's block_m choices).
inline constexpr int kSampledTileRows[] = {64, 128};

// The rows every sample of a sequence of seq_q rows holds: 0, seq_q - 1, and m - 1, m for
// each multiple m of a kSampledTileRows entry below seq_q. Sorted, distinct.
std::vector<int> boundary_rows(int seq_q);

// The rows to check for Q [B, Hq, Sq, D] and K [B, Hkv, Sk, D] (only their shapes are
// read) under the variant and its host bindings: every row (RowSelection::all()) at or
// below the threshold, else per pair boundary_rows + fully masked rows + random rows.
RowSelection sample_rows(const Variant& variant, const DLTensor& q, const DLTensor& k, const Bindings& bindings,
                         const RowSampleOptions& options = {});

}  // namespace attnjit
