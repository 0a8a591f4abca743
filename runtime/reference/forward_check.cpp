// Forward-kernel correctness check against the CPU reference (see forward_check.hpp).
#include "runtime/reference/forward_check.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "compiler/mask_analysis.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/check_tensors.hpp"
#include "runtime/reference/reference.hpp"
#include "runtime/reference/row_sample.hpp"

namespace attnjit {
using check_internal::MirroredTensor;

std::vector<std::int64_t> covering_tensor_shape(const Variant& variant, const TensorDecl& decl, const ForwardProblem& p,
                                                const Bindings& scalars, int head_dim) {
  if (variant.output_gate() && variant.output_gate()->tensor == decl.name) {
    std::vector<std::int64_t> s = {p.batch, p.heads_q, p.seq_q};
    if (variant.output_gate()->rank == 4) {
      if (head_dim <= 0)
        throw UserError(
            fmt::format("output gate tensor '{}' has rank 4 ([b, h, q, d]); its shape needs the head "
                        "dimension, pass head_dim",
                        decl.name));
      s.push_back(head_dim);
    }
    return s;
  }
  ir::TileBox box;
  box.b = {0, p.batch - 1};
  box.h = {0, p.heads_q - 1};
  box.q = {0, p.seq_q - 1};
  box.kv = {0, p.seq_k - 1};
  box.q_len = p.seq_q;
  box.kv_len = p.seq_k;
  box.num_heads = p.heads_q;
  for (const auto& param : variant.params()) {
    if (!scalars.scalars().count(param.name)) continue;
    if (param.type == ir::Type::Int)
      box.int_params[param.name] = bound_int(scalars, param.name);
    else
      box.float_params[param.name] = bound_float(scalars, param.name);
  }
  std::vector<std::int64_t> shape(static_cast<std::size_t>(decl.rank), 1);
  for (const auto& n : ir::topological_order({variant.score_mod().node(), variant.mask_mod().node()})) {
    if (n->op != ir::Op::TensorRead || n->name != decl.name) continue;
    for (std::size_t d = 0; d < n->args.size(); ++d) {
      const ir::IntRange r = ir::int_range_of(n->args[d], box);
      if (r.lo < 0)
        throw UserError(
            fmt::format("for problem {}, variant '{}' reads tensor '{}' at negative index {} in dimension {}; "
                        "choose a problem where every read is in range (e.g. Sq <= Sk)",
                        p.str(), variant.name(), decl.name, r.lo, d));
      shape[d] = std::max(shape[d], r.hi + 1);
    }
  }
  return shape;
}

std::string ForwardProblem::str() const {
  return fmt::format("B={} Hq={} Hkv={} Sq={} Sk={}{}", batch, heads_q, heads_kv, seq_q, seq_k,
                     bshd_layout ? " (BSHD)" : "");
}

std::string ForwardCheckResult::summary() const {
  return fmt::format(
      "max_err={:.3e} naive_err={:.3e} ratio={:.2f} lse_err={:.2e} (naive {:.2e}) masked_rows={} bad={} rows "
      "checked: {} of {} {}",
      max_error, naive_error, naive_error > 0 ? max_error / naive_error : 0.0, max_lse_error, naive_lse_error,
      fully_masked_rows, bad_elements, rows_checked, rows_total, pass ? "PASS" : "FAIL");
}

ForwardCheckResult check_forward(const Variant& variant, const CompileOptions& options, const ForwardProblem& p,
                                 const Bindings& scalars, std::uint64_t seed) {
  return check_forward(compile(variant, options), p, scalars, seed);
}

ForwardCheckResult check_forward(const Kernel& kernel, const ForwardProblem& p, const Bindings& scalars,
                                 std::uint64_t seed) {
  const Variant& variant = kernel.variant();
  const KernelConfig& options = kernel.prepared().config;
  const int dim = options.head_dim;
  const DLDataType dtype = options.dtype == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  std::mt19937_64 rng(seed);

  MirroredTensor q(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor k(dtype, {p.batch, p.heads_kv, p.seq_k, dim});
  MirroredTensor v(dtype, {p.batch, p.heads_kv, p.seq_k, dim});
  MirroredTensor o(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor lse(dlpack_float32(), {p.batch, p.heads_q, p.seq_q});
  if (p.bshd_layout)
    for (MirroredTensor* t : {&q, &k, &v, &o}) t->use_bshd_strides();
  for (MirroredTensor* t : {&q, &k, &v}) {
    check_internal::fill_normal(t->host, rng);
    t->upload();
  }

  const check_internal::CapturedTensors captured = check_internal::make_captured_tensors(variant, p, scalars, dim, rng);
  const Bindings &host_bindings = captured.host, &device_bindings = captured.device;

  o.poison();  // an unwritten element cannot pass
  lse.poison();
  kernel.forward(q.device_view, k.device_view, v.device_view, o.device_view, &lse.device_view, device_bindings);
  kernel.synchronize();  // also reports an out-of-range captured-tensor read
  o.download();
  lse.download();

  // The rows compared with the reference: all of them on small problems, else a sample that
  // holds every row at a tile boundary and every fully masked row; rows where the kernel
  // says "fully masked" (LSE = +-inf) join it, so each such claim is judged too.
  RowSelection rows = sample_rows(variant, q.host.dl(), k.host.dl(), host_bindings, RowSampleOptions().with_seed(seed));
  if (!rows.all())
    for (std::int64_t row = 0; row < lse.host.numel(); ++row)
      if (std::isinf(lse.host.get(row))) rows.add(static_cast<int>(row / p.seq_q), static_cast<int>(row % p.seq_q));
  const ReferenceResult ref = reference_attention(variant, q.host.dl(), k.host.dl(), v.host.dl(), host_bindings,
                                                  ReferenceOptions().with_rows(rows));
  const ReferenceResult naive = reference_attention(
      variant, q.host.dl(), k.host.dl(), v.host.dl(), host_bindings,
      ReferenceOptions()
          .with_naive_precision(options.dtype == ElementType::BF16 ? NaivePrecision::BF16 : NaivePrecision::FP16)
          .with_rows(rows));
  return compare_forward(o.host.dl(), lse.host.dl(), ref, naive);
}

ForwardCheckResult compare_forward(const DLTensor& o, const DLTensor& lse, const ReferenceResult& ref,
                                   const ReferenceResult& naive) {
  const int batch = ref.batch, heads_q = ref.heads_q, seq_q = ref.seq_q, dim_v = ref.head_dim_v;
  const std::vector<std::int64_t> o_shape = {batch, heads_q, seq_q, dim_v}, lse_shape = {batch, heads_q, seq_q};
  if (dlpack_shape(o) != o_shape || dlpack_shape(lse) != lse_shape)
    throw UserError(fmt::format("kernel outputs O {} and LSE {} do not match the reference's O {} and LSE {}",
                                shape_string(dlpack_shape(o)), shape_string(dlpack_shape(lse)), shape_string(o_shape),
                                shape_string(lse_shape)));
  if (naive.batch != batch || naive.heads_q != heads_q || naive.seq_q != seq_q || naive.head_dim_v != dim_v ||
      naive.rows.rows != ref.rows.rows)
    throw UserError(
        "the naive result and the reference cover different shapes or rows; compute both with the same "
        "inputs and ReferenceOptions::rows");
  const auto os = dlpack_strides(o), ls = dlpack_strides(lse);
  ForwardCheckResult r;
  r.rows_total = static_cast<std::int64_t>(batch) * heads_q * seq_q;
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads_q; ++h)
      for (int s = 0; s < seq_q; ++s) {
        const std::int64_t row = (static_cast<std::int64_t>(b) * heads_q + h) * seq_q + s;
        const double got_lse = load_as_double(lse, b * ls[0] + h * ls[1] + s * ls[2]);
        const std::int64_t o_row = b * os[0] + h * os[1] + s * os[2];
        if (!ref.computed(b, h, s)) {
          // Not in the sample, so not fully masked: O and LSE must be finite.
          r.bad_elements += std::isfinite(got_lse) ? 0 : 1;
          for (int d = 0; d < dim_v; ++d) r.bad_elements += std::isfinite(load_as_double(o, o_row + d * os[3])) ? 0 : 1;
          continue;
        }
        ++r.rows_checked;
        const double ref_lse = ref.lse[static_cast<std::size_t>(row)];
        const bool masked = std::isinf(ref_lse) && ref_lse < 0;
        r.fully_masked_rows += masked ? 1 : 0;
        if (masked ? !(std::isinf(got_lse) && got_lse < 0) : !std::isfinite(got_lse)) ++r.bad_elements;
        if (!masked && std::isfinite(got_lse)) {
          const double scale = std::max(1.0, std::fabs(ref_lse));
          r.max_lse_error = std::max(r.max_lse_error, std::fabs(got_lse - ref_lse) / scale);
          r.naive_lse_error =
              std::max(r.naive_lse_error, std::fabs(naive.lse[static_cast<std::size_t>(row)] - ref_lse) / scale);
        }
        for (int d = 0; d < dim_v; ++d) {
          const std::size_t i = static_cast<std::size_t>(row) * dim_v + d;
          const double got = load_as_double(o, o_row + d * os[3]), want = ref.o[i];
          if (std::isnan(got) || (masked && got != 0.0)) {
            ++r.bad_elements;
            continue;
          }
          r.max_error = std::max(r.max_error, std::fabs(got - want));
          r.naive_error = std::max(r.naive_error, std::fabs(naive.o[i] - want));
        }
      }
  // FlashAttention's rule, with a floor for problems where the naive error is ~0; the LSE
  // within 1e-3, or within twice the naive error where the inputs themselves are rounded
  // first (RoPE rotates Q and K, and the rotated rows are stored in the input dtype).
  r.pass = r.bad_elements == 0 && r.max_error <= 2.0 * r.naive_error + 1e-6 &&
           r.max_lse_error <= std::max(1e-3, 2.0 * r.naive_lse_error);
  return r;
}

}  // namespace attnjit
