// What the forward and the backward CPU references share: the input checks, the problem's
// extents, the evaluator environment over bound parameters and tensors, Q/K/V rows widened
// to double with RoPE, and a small pool of workers. Internal to runtime/reference.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "compiler/eval.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit::reference_internal {

// The extents of one attention problem, checked against each other.
struct Problem {
  int batch = 0, heads_q = 0, heads_kv = 0, seq_q = 0, seq_k = 0, dim = 0, dim_v = 0;
  double scale = 0.0;            // the softmax scale actually used
  std::int64_t rope_offset = 0;  // the bound RoPE offset parameter, 0 without one

  int group() const { return heads_q / heads_kv; }  // query heads per kv head
  // RoPE position of query row 0 (bottom-right aligned) and of key row 0.
  std::int64_t q_position() const { return seq_k - seq_q + rope_offset; }
  std::int64_t k_position() const { return rope_offset; }
};

// Host memory, rank 4, a float dtype; UserError naming the input otherwise.
void check_input(const DLTensor& t, const char* name);

// Checks Q, K, V (and, for the backward, a gradient shaped like O) and the bindings.
// `scale_option` 0 means 1 / sqrt(head_dim).
Problem check_problem(const Variant& variant, const DLTensor& q, const DLTensor& k, const DLTensor& v,
                      const Bindings& bindings, double scale_option);

// The evaluator's environment: lengths, bound parameters, bounds-checked tensor reads.
ir::EvalEnv make_env(const Variant& variant, const Problem& problem, const Bindings& bindings);

// The bound output gate tensor, its shape checked ([B, Hq, Sq] or [B, Hq, Sq, Dv]).
std::optional<DLTensor> bound_gate(const Variant& variant, const Problem& problem, const Bindings& bindings);

// A bounds-checked element read of a captured tensor for the evaluator.
ir::Value read_bound_tensor(const DLTensor& t, const ir::Node& read, std::span<const std::int64_t> idx);

// The contiguous offset of element `idx` of `t` (row-major over its shape), bounds-checked
// with the same error as read_bound_tensor.
std::int64_t contiguous_offset(const DLTensor& t, const std::string& name, std::span<const std::int64_t> idx);

// What storage in the naive computation's dtype holds after storing x (x itself for None).
double round_to_naive_storage(NaivePrecision naive, double x);

// Rows of one (b, h) widened to double, [seq, dim] contiguous.
std::vector<double> widen_rows(const DLTensor& t, int b, int h, int seq, int dim);

// Rotates rows [seq, dim] in place, row i at position i + position_offset: pair j by
// +angle, or by -angle when `inverse` (the transpose, which carries a gradient of rotated
// rows back to the unrotated ones). The naive computation turns them as a separate RoPE
// pass in the storage dtype would: fp32 frequency and angle, the rotated value rounded.
void rotate_rows(std::span<double> rows, int seq, int dim, const RopeHook& rope, std::int64_t position_offset,
                 NaivePrecision naive, bool inverse);

// Q or K rows widened to double with RoPE (when the variant has it) applied.
std::vector<double> load_rows(const DLTensor& t, int b, int h, int seq, int dim, const std::optional<RopeHook>& rope,
                              std::int64_t position_offset, NaivePrecision naive);

// How many workers to run: `requested` (0: one per hardware thread), at least 1, at most `items`.
int worker_count(int requested, int items);

// Dynamic: items are handed out as workers free up. RoundRobin: worker w takes items w,
// w + workers, ..., a fixed assignment, so per-worker partial sums reduce the same way on
// every run.
enum class Assignment { Dynamic, RoundRobin };

// Calls body(worker, item) for every item in [0, items) on `workers` threads, this one
// included. The first exception stops the other workers and is rethrown.
void for_each_item(int items, int workers, Assignment assignment, const std::function<void(int, int)>& body);

}  // namespace attnjit::reference_internal
