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
//
// ReferenceOptions::rows restricts the work to chosen query rows (cost: rows x seq_k dot
// products, instead of seq_q x seq_k per pair); the others are left NaN.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit {

// Which query rows the reference computes: every row (the default), or per (b, h) pair a
// sorted list of distinct rows, rows[b * heads_q + h]. On large problems the checker
// computes a sample of rows only (runtime/reference/row_sample.hpp says which).
struct RowSelection {
  std::vector<std::vector<int>> rows;  // empty: every row of every pair

  bool all() const { return rows.empty(); }
  bool contains(int pair, int row) const;
  // Adds `row` to `pair`'s list, keeping it sorted and free of duplicates (a no-op on all()).
  void add(int pair, int row);
  // The number of rows selected out of pairs * seq_q.
  std::int64_t count(int pairs, int seq_q) const;
};

struct ReferenceResult {
  int batch = 0, heads_q = 0, seq_q = 0, head_dim_v = 0;
  std::vector<double> o;    // [batch, heads_q, seq_q, head_dim_v], contiguous
  std::vector<double> lse;  // [batch, heads_q, seq_q], contiguous
  RowSelection rows;        // the rows computed; the others hold NaN in o and lse

  double o_at(int b, int h, int q, int d) const;
  double lse_at(int b, int h, int q) const;
  bool computed(int b, int h, int q) const { return rows.all() || rows.contains(b * heads_q + h, q); }
  std::int64_t rows_computed() const { return rows.count(batch * heads_q, seq_q); }
};

// The low-precision arithmetic a naive GPU implementation would use, emulated on the CPU:
// fp32 dot products and softmax, P rounded to the storage type before P @ V (fp32
// accumulation), output rounded; RoPE as a separate pass would do it (fp32 frequency and
// angle, rotated Q and K rounded to the storage type). Its error against the fp64 reference is the yardstick of
// FlashAttention's correctness rule (a kernel may err at most twice as much).
enum class NaivePrecision { None, BF16, FP16 };

struct ReferenceOptions {
  double scale = 0.0;  // softmax scale; 0 means 1 / sqrt(head_dim)
  NaivePrecision naive = NaivePrecision::None;
  int threads = 0;    // 0: one per hardware thread
  RowSelection rows;  // default: every row
  // Keys in use per sequence (a KV-cache call): sequence b attends to keys [0, seq_lens_k[b])
  // (clamped into [0, seq_k]) and its hooks see kv_len = that length. Empty: seq_k for all.
  // Not with RoPE (UserError).
  std::vector<int> seq_lens_k;

  ReferenceOptions& with_seq_lens_k(std::vector<int> lens) {
    seq_lens_k = std::move(lens);
    return *this;
  }
  ReferenceOptions& with_rows(RowSelection r) {
    rows = std::move(r);
    return *this;
  }

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

// The rows where the mask is false for every key, per (b, h) pair as in RowSelection: the
// rows reference_attention gives O = 0 and LSE = -inf because of the mask (a score_mod that
// returns -inf for every key is not detected here). Only the mask is evaluated, no dot
// product, and mostly not even that: a row is known to see a key as soon as one candidate
// key (its diagonal, the first, the last) passes, or interval analysis finds a full tile;
// only rows that pass neither test are scanned key by key. Reads only the shapes of q and k.
std::vector<std::vector<int>> fully_masked_rows(const Variant& variant, const DLTensor& q, const DLTensor& k,
                                                const Bindings& bindings = {});

}  // namespace attnjit
