// The CPU reference backward: the analytic gradient of attention in fp64, from the same IR
// as the forward (score_mod and its derivatives from compiler/passes/differentiate.hpp,
// evaluated per (b, h, q, kv) element). Backward kernels are judged against it; it is
// itself checked against central finite differences of the forward reference.
//
// Inputs follow runtime/reference/reference.hpp (host DLTensors of f64, f32, f16 or bf16,
// any strides, GQA); d_out is the gradient of the variant's output O, shaped like O
// [batch, heads_q, seq_q, head_dim_v]. P is recomputed from Q and K, then
//   D = rowsum(dO * O), dS = P * (dO V^T - D), dS_raw = dS * d score_mod / d score,
//   dQ = scale * dS_raw K, dK = scale * dS_raw^T Q, dV = P^T dO,
// and each captured float tensor T read by score_mod gets dT[index of the read] +=
// dS * d score_mod / d read. RoPE: the gradients of the rotated rows are rotated back (by
// the negative angle). Output gate O_final = O * sigmoid(G): dG = dO_final * O * s (1 - s)
// (summed over d for a rank-3 gate) and dO = dO_final * s. A fully masked row (O = 0,
// LSE = -inf) contributes nothing. mask_mod carries no gradient.
#pragma once

#include <dlpack/dlpack.h>

#include <map>
#include <string>
#include <vector>

#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {

struct ReferenceGradients {
  // Contiguous like q, k, v: [B, Hq, Sq, D], [B, Hkv, Sk, D], [B, Hkv, Sk, Dv]. GQA: dk and
  // dv are summed over the query heads of a group.
  std::vector<double> dq, dk, dv;
  // The gradient of each captured float tensor score_mod reads, by name, contiguous in the
  // bound tensor's shape. Integer and bool tensors, and tensors only mask_mod reads, have
  // no entry. (A gate tensor that score_mod also reads gets its score_mod part here and its
  // gate part in d_gate: the total is their sum.)
  std::map<std::string, std::vector<double>> tensors;
  // With an output gate: the gradient of the gate tensor, contiguous in its shape; else empty.
  std::vector<double> d_gate;
};

// `options.scale`, `options.threads` and `options.naive` apply; a row selection does not (a
// UserError says so). The result is the same on every run with the same thread count
// (partial sums are reduced in a fixed order).
//
// options.naive (BF16 / FP16) emulates a naive backward in that storage dtype, the yardstick
// of the 2x rule for gradients (runtime/reference/backward_check.hpp):
//   - Q, K, V and dO are read rounded to the storage dtype (a no-op for inputs stored in it);
//     RoPE turns Q and K as a separate pass would (as the naive forward does);
//   - S and P in fp32: fp32 dot products, scale and score_mod, P = exp(S - LSE) with the fp32
//     LSE of the naive forward;
//   - O is the forward's output rounded to the storage dtype (computed from that P, so up to
//     rare ties the fp64 O rounded); D = rowsum(dO * O) in fp32;
//   - dV = P^T dO with P rounded to the storage dtype, fp32 sums;
//   - dP = dO V^T and dS = P * (dP - D) in fp32; dS * d score_mod / d score is rounded to the
//     storage dtype before dQ = dS K and dK = dS^T Q (fp32 sums, the softmax scale applied
//     once at the end, as the kernels do);
//   - dQ, dK, dV rounded to the storage dtype at the end (GQA: dK and dV summed over the
//     group in fp32 first);
//   - captured-tensor gradients (dS in fp32 times the derivative) and the gate gradient are
//     summed in fp32 and not rounded: kernels return them in fp32.
// The values are returned as doubles either way.
ReferenceGradients reference_attention_backward(const Variant& variant, const DLTensor& q, const DLTensor& k,
                                                const DLTensor& v, const DLTensor& d_out, const Bindings& bindings = {},
                                                const ReferenceOptions& options = {});

}  // namespace attnjit
