// Checks the CPU backend against the fp64 reference, as runtime/reference/forward_check does
// for GPU kernels: random inputs drawn fresh (never zeros), captured tensors shaped to cover
// every read, O and LSE poisoned with NaN before the call, the reference on every row (small
// problems) or on a sample that holds every tile boundary and fully masked row.
//
// The verdict: bf16 / fp16 inputs by FlashAttention's rule (at most twice the error of the
// naive computation in that precision, compare_forward); fp32 inputs have no such yardstick
// (the naive emulation rounds to bf16 or fp16), so a fixed bound, cpu_fp32_tolerance().
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>

#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit {

// The limits for fp32 inputs, against the fp64 reference, per row:
//   |O - O_ref| <= o_abs + o_per_lse * |LSE_ref|. The backend computes in fp32 throughout
//   (u = 2^-24 ~ 6e-8): a logit summed over D <= 256 products of N(0, 1) values carries about
//   sqrt(D) * u * sum|q_i k_i| * scale ~ 1e-6, the exp polynomial 2e-7 relative, the sums of P
//   and P V over Sk keys log2(Sk) * u; O is an average of N(0, 1) values (|O| < 5): together
//   well under o_abs = 2e-5 (measured: 5e-8 to 1e-6). And a logit is itself an fp32 number:
//   a bias makes it large (non-causal ALiBi reaches +175 at Sk = 700), and its rounding,
//   u * |logit|, is a relative error of P. The logits that carry weight lie within a few units
//   of the row's LSE, so that term is about u * |LSE| * |V|: o_per_lse = 64 u ~ 4e-6.
//   LSE: |d| / max(1, |LSE_ref|) <= lse_rel = 1e-5 (the same logit rounding, relative).
struct CpuFp32Tolerance {
  double o_abs = 2e-5;
  double o_per_lse = 4e-6;
  double lse_rel = 1e-5;
};
CpuFp32Tolerance cpu_fp32_tolerance();

// `dtype`: f32, f16 or bf16 (dlpack_float32(), ...). The problem's bshd_layout views Q, K,
// V and O as [B, S, H, D] memory through strides.
ForwardCheckResult check_cpu_forward(const CpuAttention& attention, const ForwardProblem& problem, int head_dim,
                                     DLDataType dtype, const Bindings& scalars, std::uint64_t seed);

}  // namespace attnjit
