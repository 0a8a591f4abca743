// The CPU reference: plain attention that evaluates the variant's IR per (b, h, q, kv) in
// fp64. Every GPU result is compared with it.
//
// Inputs are host DLTensors of f64, f32, f16 or bf16 (16-bit storage is widened): Q is
// [batch, heads_q, seq_q, head_dim], K is [batch, heads_kv, seq_k, head_dim], V is
// [batch, heads_kv, seq_k, head_dim_v]; heads_q must be a multiple of heads_kv (GQA/MQA:
// query head h reads kv head h / (heads_q / heads_kv)). Any strides are allowed.
//
// Convention for a fully masked row (no key passes the mask, or every modified score is
// -inf): O = 0 and LSE = -inf. LSE is the natural log of the softmax denominator over the
// modified scores.
#pragma once

#include <dlpack/dlpack.h>

#include <vector>

#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit {

struct ReferenceResult {
  int batch = 0, heads_q = 0, seq_q = 0, head_dim_v = 0;
  std::vector<double> o;    // [batch, heads_q, seq_q, head_dim_v], contiguous
  std::vector<double> lse;  // [batch, heads_q, seq_q], contiguous

  double o_at(int b, int h, int q, int d) const;
  double lse_at(int b, int h, int q) const;
};

// The low-precision arithmetic a naive GPU implementation would use, emulated on the CPU:
// fp32 dot products and softmax, P rounded to the storage type before P @ V (fp32
// accumulation), output rounded. Its error against the fp64 reference is the yardstick of
// FlashAttention's correctness rule (a kernel may err at most twice as much).
enum class NaivePrecision { None, BF16, FP16 };

struct ReferenceOptions {
  double scale = 0.0;  // softmax scale; 0 means 1 / sqrt(head_dim)
  NaivePrecision naive = NaivePrecision::None;
  int threads = 0;  // 0: one per hardware thread

  ReferenceOptions& with_scale(double s) {
    scale = s;
    return *this;
  }
  ReferenceOptions& with_naive_precision(NaivePrecision p) {
    naive = p;
    return *this;
  }
  ReferenceOptions& with_threads(int t) {
    threads = t;
    return *this;
  }
};

ReferenceResult reference_attention(const Variant& variant, const DLTensor& q, const DLTensor& k, const DLTensor& v,
                                    const Bindings& bindings = {}, const ReferenceOptions& options = {});

}  // namespace attnjit
