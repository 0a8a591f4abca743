// Runs a compiled forward kernel on random inputs and judges it against the CPU reference
// by FlashAttention's rule: the kernel's max error against the fp64 reference must be at
// most twice the error of a naive computation in the same precision. Inputs are drawn
// fresh (never zeros), outputs are poisoned with NaN before the launch, and every
// element must be written. Used by `attnjit check` and by the GPU tests.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/api/attention.hpp"

namespace attnjit {

struct ForwardProblem {
  int batch = 1, heads_q = 4, heads_kv = 4, seq_q = 1000, seq_k = 1537;
  bool bshd_layout = false;  // Q, K, V, O as [B, S, H, D] memory viewed through strides
  std::string str() const;   // "B=1 Hq=4 Hkv=4 Sq=1000 Sk=1537"
};

struct ForwardCheckResult {
  double max_error = 0;      // max |O_kernel - O_ref| over all elements
  double naive_error = 0;    // max |O_naive - O_ref|
  double max_lse_error = 0;  // |d| / max(1, |LSE_ref|) over rows with a finite reference LSE (limit 1e-3)
  std::int64_t fully_masked_rows = 0;
  std::int64_t bad_elements = 0;  // NaN/unwritten outputs, or a masked row with O != 0 / LSE != -inf
  bool pass = false;
  std::string summary() const;
};

// The shape that covers every index the variant reads from tensor `decl` in this problem
// (by interval analysis of the index expressions); a UserError if a read can be negative.
std::vector<std::int64_t> covering_tensor_shape(const Variant& variant, const TensorDecl& decl,
                                                const ForwardProblem& problem, const Bindings& scalars);

// Captured tensors the variant reads are created with random contents and a shape that
// covers every index the variant can read for this problem. `scalars` binds parameters.
ForwardCheckResult check_forward(const Variant& variant, const CompileOptions& options, const ForwardProblem& problem,
                                 const Bindings& scalars, std::uint64_t seed);

}  // namespace attnjit
