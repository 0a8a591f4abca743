// check_forward_ragged (runtime/reference/ragged_check.hpp).
#include "runtime/reference/ragged_check.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "compiler/error.hpp"
#include "compiler/ir.hpp"
#include "runtime/reference/check_tensors.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {

using check_internal::MirroredTensor;

namespace {

// Whether the hooks name b other than as the first index of a tensor read (those tensors are
// sliced per sequence below, so the per-sequence reference reads the same elements).
bool names_batch(const Variant& v) {
  for (const auto& n : ir::topological_order({v.score_mod().node(), v.mask_mod().node()}))
    for (std::size_t i = 0; i < n->args.size(); ++i) {
      const ir::Node& child = *n->args[i];
      if (child.op == ir::Op::Index && child.name == "b" && !(n->op == ir::Op::TensorRead && i == 0)) return true;
    }
  return false;
}

// The bindings a per-sequence reference of sequence b sees: every captured tensor the hooks
// index by b first (and the output gate, [batch, heads_q, seq_q(, dv)]) cut to its slice b.
Bindings sequence_bindings(const Variant& v, const Bindings& all, int b, int seq_q,
                           std::vector<std::vector<std::int64_t>>& shapes) {
  std::set<std::string> sliced;
  for (const auto& n : ir::topological_order({v.score_mod().node(), v.mask_mod().node()}))
    if (n->op == ir::Op::TensorRead && !n->args.empty() && n->args[0]->op == ir::Op::Index && n->args[0]->name == "b")
      sliced.insert(n->name);
  if (v.output_gate()) sliced.insert(v.output_gate()->tensor);
  Bindings out = all;
  shapes.reserve(2 * sliced.size());  // shape, strides per view (stable addresses)
  for (const auto& name : sliced) {
    const DLTensor& t = all.tensors().at(name);
    const auto strides = dlpack_strides(t);
    shapes.emplace_back(t.shape, t.shape + t.ndim);
    std::vector<std::int64_t>& shape = shapes.back();
    shape[0] = 1;
    if (v.output_gate() && name == v.output_gate()->tensor) shape[2] = seq_q;  // its rows of this sequence
    shapes.push_back(strides);
    DLTensor view = t;
    view.shape = shape.data();
    view.strides = shapes.back().data();
    view.byte_offset += static_cast<std::uint64_t>(b * strides[0] * (t.dtype.bits / 8));
    out.set(name, view);
  }
  return out;
}

// Rows [first, first + count) of a packed [tokens, heads, dim] host tensor as [1, heads, count, dim].
DLTensor sequence_view(const HostTensor& t, std::int64_t first, std::int64_t count, std::int64_t (&shape)[4],
                       std::int64_t (&strides)[4]) {
  const DLTensor& packed = t.dl();
  const std::int64_t heads = packed.shape[1], dim = packed.shape[2];
  shape[0] = 1, shape[1] = heads, shape[2] = count, shape[3] = dim;
  strides[0] = count * heads * dim, strides[1] = dim, strides[2] = heads * dim, strides[3] = 1;
  DLTensor v = packed;
  v.ndim = 4;
  v.shape = shape;
  v.strides = strides;
  v.byte_offset = static_cast<std::uint64_t>(first * heads * dim * (packed.dtype.bits / 8));
  return v;
}

}  // namespace

std::string RaggedProblem::str() const {
  return fmt::format("Hq={} Hkv={} q=[{}] k=[{}]", heads_q, heads_kv, fmt::join(seq_lens_q, ","),
                     fmt::join(seq_lens_k, ","));
}

ForwardCheckResult check_forward_ragged(const Kernel& kernel, const RaggedProblem& p, const Bindings& scalars,
                                        std::uint64_t seed) {
  const Variant& variant = kernel.variant();
  const int batch = static_cast<int>(p.seq_lens_q.size());
  if (batch < 1 || p.seq_lens_k.size() != p.seq_lens_q.size())
    throw UserError(fmt::format("{}: one query and one key length per sequence", p.str()));
  if (names_batch(variant))
    throw UserError(
        fmt::format("variant '{}' names the batch index b other than as a tensor's first index; the "
                    "ragged check runs the reference per sequence and cannot judge it",
                    variant.name()));
  const KernelConfig& config = kernel.prepared().config;
  const int dim = config.head_dim;
  const DLDataType dtype = config.dtype == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  std::vector<int> cu_q(static_cast<std::size_t>(batch) + 1, 0), cu_k(cu_q.size(), 0);
  for (int b = 0; b < batch; ++b) {
    cu_q[b + 1] = cu_q[b] + p.seq_lens_q[static_cast<std::size_t>(b)];
    cu_k[b + 1] = cu_k[b] + p.seq_lens_k[static_cast<std::size_t>(b)];
  }
  const int total_q = cu_q.back(), total_k = std::max(cu_k.back(), 1);
  const int max_q = *std::max_element(p.seq_lens_q.begin(), p.seq_lens_q.end());
  const int max_k = *std::max_element(p.seq_lens_k.begin(), p.seq_lens_k.end());
  if (total_q < 1) throw UserError(fmt::format("{}: no queries at all", p.str()));
  std::mt19937_64 rng(seed);

  MirroredTensor q(dtype, {total_q, p.heads_q, dim}), k(dtype, {total_k, p.heads_kv, dim}),
      v(dtype, {total_k, p.heads_kv, dim}), o(dtype, {total_q, p.heads_q, dim});
  MirroredTensor lse(dlpack_float32(), {p.heads_q, total_q});
  for (MirroredTensor* t : {&q, &k, &v}) {
    check_internal::fill_normal(t->host, rng);
    t->upload();
  }
  MirroredTensor cq(dlpack_int32(), {batch + 1}), ck(dlpack_int32(), {batch + 1});
  for (int b = 0; b <= batch; ++b) {
    cq.host.set(b, cu_q[static_cast<std::size_t>(b)]);
    ck.host.set(b, cu_k[static_cast<std::size_t>(b)]);
  }
  cq.upload();
  ck.upload();
  const ForwardProblem shape{batch, p.heads_q, p.heads_kv, std::max(max_q, 1), std::max(max_k, 1)};
  const check_internal::CapturedTensors captured =
      check_internal::make_captured_tensors(variant, shape, scalars, dim, rng);

  o.poison();
  lse.poison();
  RaggedBatch rb;
  rb.cu_seqlens_q = cq.device_view;
  rb.cu_seqlens_k = ck.device_view;
  rb.max_seqlen_q = std::max(max_q, 1);
  rb.max_seqlen_k = std::max(max_k, 1);
  kernel.forward_ragged(q.device_view, k.device_view, v.device_view, o.device_view, &lse.device_view, rb,
                        captured.device);
  kernel.synchronize();
  o.download();
  lse.download();

  // The whole batch as one [1, Hq, total_q] result, filled sequence by sequence.
  ReferenceResult ref, naive;
  for (ReferenceResult* r : {&ref, &naive}) {
    r->batch = 1, r->heads_q = p.heads_q, r->seq_q = total_q, r->head_dim_v = dim;
    r->o.assign(static_cast<std::size_t>(p.heads_q) * total_q * dim, 0.0);
    r->lse.assign(static_cast<std::size_t>(p.heads_q) * total_q, -std::numeric_limits<double>::infinity());
  }
  const NaivePrecision precision = config.dtype == ElementType::BF16 ? NaivePrecision::BF16 : NaivePrecision::FP16;
  for (int b = 0; b < batch; ++b) {
    const int lq = p.seq_lens_q[static_cast<std::size_t>(b)], lk = p.seq_lens_k[static_cast<std::size_t>(b)];
    if (lq == 0 || lk == 0) continue;  // no rows, or rows that must be O = 0, LSE = -inf (as filled)
    std::int64_t shapes[3][4], strides[3][4];
    const DLTensor qb = sequence_view(q.host, cu_q[b], lq, shapes[0], strides[0]);
    const DLTensor kb = sequence_view(k.host, cu_k[b], lk, shapes[1], strides[1]);
    const DLTensor vb = sequence_view(v.host, cu_k[b], lk, shapes[2], strides[2]);
    std::vector<std::vector<std::int64_t>> slice_shapes;
    const Bindings bindings = sequence_bindings(variant, captured.host, b, lq, slice_shapes);
    const ReferenceResult rs[2] = {
        reference_attention(variant, qb, kb, vb, bindings),
        reference_attention(variant, qb, kb, vb, bindings, ReferenceOptions().with_naive_precision(precision))};
    for (int which = 0; which < 2; ++which) {
      ReferenceResult& whole = which == 0 ? ref : naive;
      for (int h = 0; h < p.heads_q; ++h)
        for (int i = 0; i < lq; ++i) {
          const std::size_t row = static_cast<std::size_t>(h) * total_q + cu_q[b] + i;
          whole.lse[row] = rs[which].lse_at(0, h, i);
          for (int d = 0; d < dim; ++d) whole.o[row * dim + d] = rs[which].o_at(0, h, i, d);
        }
    }
  }
  // The kernel's O [total_q, Hq, D] and LSE [Hq, total_q] as [1, Hq, total_q, ...].
  std::int64_t o_shape[4], o_strides[4];
  const DLTensor o_view = sequence_view(o.host, 0, total_q, o_shape, o_strides);
  std::int64_t lse_shape[3] = {1, p.heads_q, total_q}, lse_strides[3] = {p.heads_q * total_q, total_q, 1};
  DLTensor lse_view = lse.host.dl();
  lse_view.ndim = 3;
  lse_view.shape = lse_shape;
  lse_view.strides = lse_strides;
  return compare_forward(o_view, lse_view, ref, naive);
}

}  // namespace attnjit
