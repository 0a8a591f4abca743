// Runs Kernel::forward_kv_cache on a random KV cache and judges it by FlashAttention's rule
// against the fp64 reference with per-sequence key counts (ReferenceOptions::seq_lens_k), as
// check_forward does for forward. The cache is paged (pages of each sequence scattered in a
// shuffled order over a pool with spare pages) or contiguous; every cache row past a
// sequence's length and every spare page holds NaN, so a kernel that reads a key it must not
// cannot pass. Used by `attnjit check --kv-cache` and the GPU tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/reference/forward_check.hpp"

namespace attnjit {

struct KvCacheProblem {
  int batch = 1, heads_q = 4, heads_kv = 4, seq_q = 1;
  std::vector<int> seq_lens;  // keys in use per sequence; `batch` entries
  int capacity = 0;           // keys the cache holds per sequence; 0: the longest length (at least 1)
  int page_size = 0;          // 0: a contiguous cache [B, Hkv, capacity, D]; else pages of this many keys
  std::string str() const;    // "B=2 Hq=8 Hkv=2 Sq=1 lens=[0,1,4097] pages of 16"
};

ForwardCheckResult check_forward_kv_cache(const Kernel& kernel, const KvCacheProblem& problem, const Bindings& scalars,
                                          std::uint64_t seed);

}  // namespace attnjit
