// Runs a compiled forward kernel on random inputs and judges it against the CPU reference
// by FlashAttention's rule: the kernel's max error against the fp64 reference must be at
// most twice the error of a naive computation in the same precision. Inputs are drawn
// fresh (never zeros), outputs are poisoned with NaN before the launch, and every
// element must be written. Used by `attnjit check` and by the GPU tests.
//
// On large problems the reference runs on a sample of rows (runtime/reference/row_sample.hpp:
// first, last, tile boundaries, every fully masked row, a few random ones); the errors and
// LSE are compared there, the NaN / unwritten check covers every element. summary() says
// how many rows were compared.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/api/attention.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {

struct ForwardProblem {
  int batch = 1, heads_q = 4, heads_kv = 4, seq_q = 1000, seq_k = 1537;
  bool bshd_layout = false;  // Q, K, V, O as [B, S, H, D] memory viewed through strides
  // Int captured tensors (document ids) in runs whose ids are not monotone, one id in several
  // runs (0, 1, 0, 1, ...), instead of non-decreasing: the path where a kernel cannot take a
  // document's keys as one interval (compiler/passes/run_equality.hpp).
  bool ids_out_of_order = false;
  bool ids_out_of_order_odd_rows_only = false;  // ... only in the odd rows (sorted rows beside them)
  // Mean document length of those ids (0: about four documents per row); short means include
  // documents of one token.
  int ids_mean_document = 0;
  std::string str() const;  // "B=1 Hq=4 Hkv=4 Sq=1000 Sk=1537"
};

struct ForwardCheckResult {
  double max_error = 0;      // max |O_kernel - O_ref| over the elements of the rows checked
  double naive_error = 0;    // max |O_naive - O_ref| over the same elements
  double max_lse_error = 0;  // |d| / max(1, |LSE_ref|) over rows with a finite reference LSE
  // The same for the naive computation; the limit of max_lse_error is max(1e-3, 2 * this).
  double naive_lse_error = 0;
  std::int64_t fully_masked_rows = 0;
  // NaN/unwritten outputs anywhere, a masked row with O != 0 / LSE != -inf, or a row outside
  // the sample with an infinite O or LSE (every fully masked row is in the sample).
  std::int64_t bad_elements = 0;
  std::int64_t rows_checked = 0, rows_total = 0;  // rows compared with the reference, of B*Hq*Sq
  bool pass = false;
  std::string summary() const;
};

// The shape that covers every index the variant reads from tensor `decl` in this problem
// (by interval analysis of the index expressions); a UserError if a read can be negative.
// The output gate is [batch, heads_q, seq_q] (rank 3) or [.., head_dim] (rank 4, which
// needs `head_dim`).
std::vector<std::int64_t> covering_tensor_shape(const Variant& variant, const TensorDecl& decl,
                                                const ForwardProblem& problem, const Bindings& scalars,
                                                int head_dim = 0);

// Captured tensors the variant reads are created with random contents and a shape that
// covers every index the variant can read for this problem. `scalars` binds parameters.
ForwardCheckResult check_forward(const Variant& variant, const CompileOptions& options, const ForwardProblem& problem,
                                 const Bindings& scalars, std::uint64_t seed);
// The same check of an already compiled kernel (e.g. one kernel run with several values of
// a runtime parameter such as the RoPE offset).
ForwardCheckResult check_forward(const Kernel& kernel, const ForwardProblem& problem, const Bindings& scalars,
                                 std::uint64_t seed);

// The judgement of check_forward on host arrays, so that it runs (and is tested) without a
// GPU: the kernel's `o` [B, Hq, Sq, Dv] (f16, bf16, f32 or f64, any strides) and `lse`
// [B, Hq, Sq] against `ref` (fp64) and `naive` (same-precision), both computed on the same
// rows (ref.rows). Errors and LSE are compared on those rows; every element of o and lse is
// checked for NaN. A UserError when the shapes or the row selections disagree.
ForwardCheckResult compare_forward(const DLTensor& o, const DLTensor& lse, const ReferenceResult& ref,
                                   const ReferenceResult& naive);

}  // namespace attnjit
