// Runs Kernel::forward_ragged on random packed sequences and judges it by FlashAttention's
// rule against the fp64 reference, each sequence computed by the reference as a problem of its
// own (its queries and keys viewed in place), as check_forward does for forward. Outputs are
// poisoned first; a sequence without keys must give O = 0 and LSE = -inf. Captured tensors the
// hooks index by b first, and the output gate, are cut to the sequence's slice for its
// reference; a variant that names b elsewhere is refused (the reference sees each sequence as
// b = 0).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/reference/forward_check.hpp"

namespace attnjit {

struct RaggedProblem {
  int heads_q = 4, heads_kv = 4;
  std::vector<int> seq_lens_q, seq_lens_k;  // one entry per sequence each
  std::string str() const;                  // "Hq=8 Hkv=2 q=[1,0,300] k=[5,0,333]"
};

ForwardCheckResult check_forward_ragged(const Kernel& kernel, const RaggedProblem& problem, const Bindings& scalars,
                                        std::uint64_t seed);

}  // namespace attnjit
