// The CPU backend's correctness check (see cpu_check.hpp).
#include "runtime/cpu/cpu_check.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <random>

#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/check_tensors.hpp"
#include "runtime/reference/reference.hpp"
#include "runtime/reference/row_sample.hpp"

namespace attnjit {
namespace {

// A [B, H, S, D] host tensor, stored as [B, H, S, D] or, for the BSHD layout, as [B, S, H, D]
// memory viewed through permuted strides.
struct LayoutTensor {
  HostTensor storage;
  std::int64_t shape[4], strides[4];
  DLTensor view;

  LayoutTensor(DLDataType dtype, std::int64_t b, std::int64_t h, std::int64_t s, std::int64_t d, bool bshd)
      : storage(dtype, bshd ? std::vector<std::int64_t>{b, s, h, d} : std::vector<std::int64_t>{b, h, s, d}),
        shape{b, h, s, d},
        strides{h * s * d, bshd ? d : s * d, bshd ? h * d : d, 1},
        view(storage.dl()) {
    view.shape = shape;
    view.strides = strides;
  }
  LayoutTensor(const LayoutTensor&) = delete;
  LayoutTensor& operator=(const LayoutTensor&) = delete;
  void poison() { std::memset(storage.data(), 0xff, static_cast<std::size_t>(storage.numel()) * view.dtype.bits / 8); }
};

bool is_f32(DLDataType t) { return t.code == kDLFloat && t.bits == 32 && t.lanes == 1; }

}  // namespace

CpuFp32Tolerance cpu_fp32_tolerance() { return {}; }

ForwardCheckResult check_cpu_forward(const CpuAttention& attention, const ForwardProblem& p, int head_dim,
                                     DLDataType dtype, const Bindings& scalars, std::uint64_t seed) {
  const Variant& variant = attention.variant();
  const bool f32 = is_f32(dtype);
  const bool f16 = dtype.code == kDLFloat && dtype.bits == 16 && dtype.lanes == 1;
  const bool bf16 = dtype.code == kDLBfloat && dtype.bits == 16 && dtype.lanes == 1;
  if (!f32 && !f16 && !bf16)
    throw UserError(fmt::format("the CPU check takes f32, f16 or bf16 inputs; got {}", dlpack_dtype_name(dtype)));
  std::mt19937_64 rng(seed);
  LayoutTensor q(dtype, p.batch, p.heads_q, p.seq_q, head_dim, p.bshd_layout);
  LayoutTensor k(dtype, p.batch, p.heads_kv, p.seq_k, head_dim, p.bshd_layout);
  LayoutTensor v(dtype, p.batch, p.heads_kv, p.seq_k, head_dim, p.bshd_layout);
  LayoutTensor o(dtype, p.batch, p.heads_q, p.seq_q, head_dim, p.bshd_layout);
  HostTensor lse(dlpack_float32(), {p.batch, p.heads_q, p.seq_q});
  for (LayoutTensor* t : {&q, &k, &v}) check_internal::fill_normal(t->storage, rng);

  Bindings bindings = scalars;
  std::vector<std::unique_ptr<HostTensor>> captured;
  for (const auto& decl : variant.tensors()) {
    const auto shape = covering_tensor_shape(variant, decl, p, scalars, head_dim);
    captured.push_back(std::make_unique<HostTensor>(to_dlpack_dtype(decl.dtype), shape));
    check_internal::fill_captured(*captured.back(), decl.dtype, shape, rng);
    bindings.set(decl.name, captured.back()->dl());
  }

  o.poison();  // an unwritten element cannot pass
  std::memset(lse.data(), 0xff, static_cast<std::size_t>(lse.numel()) * 4);
  attention.forward(q.view, k.view, v.view, o.view, &lse.dl(), bindings);

  RowSelection rows = sample_rows(variant, q.view, k.view, bindings, RowSampleOptions().with_seed(seed));
  if (!rows.all())
    for (std::int64_t row = 0; row < lse.numel(); ++row)
      if (std::isinf(lse.get(row))) rows.add(static_cast<int>(row / p.seq_q), static_cast<int>(row % p.seq_q));
  const ReferenceResult ref =
      reference_attention(variant, q.view, k.view, v.view, bindings, ReferenceOptions().with_rows(rows));
  if (f32) {
    ForwardCheckResult r = compare_forward(o.view, lse.dl(), ref, ref);
    const CpuFp32Tolerance tol = cpu_fp32_tolerance();
    r.pass = r.bad_elements == 0 && r.max_lse_error <= tol.lse_rel;
    const auto os = dlpack_strides(o.view);
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_q; ++h)
        for (int s = 0; s < p.seq_q; ++s) {
          if (!ref.computed(b, h, s) || std::isinf(ref.lse_at(b, h, s))) continue;
          const double limit = tol.o_abs + tol.o_per_lse * std::fabs(ref.lse_at(b, h, s));
          for (int d = 0; d < head_dim; ++d)
            if (!(std::fabs(load_as_double(o.view, b * os[0] + h * os[1] + s * os[2] + d * os[3]) -
                            ref.o_at(b, h, s, d)) <= limit))
              r.pass = false;
        }
    return r;
  }
  const ReferenceResult naive = reference_attention(
      variant, q.view, k.view, v.view, bindings,
      ReferenceOptions().with_naive_precision(bf16 ? NaivePrecision::BF16 : NaivePrecision::FP16).with_rows(rows));
  return compare_forward(o.view, lse.dl(), ref, naive);
}

}  // namespace attnjit
