// Timing of the CPU backend's forward (see cpu_benchmark.hpp).
#include "runtime/cpu/cpu_benchmark.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "runtime/api/dlpack_view.hpp"
#include "runtime/cpu/cpu_kernels.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit {

BenchResult benchmark_cpu_forward(const CpuAttention& attention, const ForwardProblem& p, int dim, DLDataType dtype,
                                  const Bindings& scalars, const BenchOptions& bench) {
  bench.validate();
  const Variant& variant = attention.variant();
  std::mt19937_64 rng(42);
  std::normal_distribution<double> normal(0.0, 1.0);
  const auto random = [&](std::vector<std::int64_t> shape) {
    HostTensor t(dtype, std::move(shape));
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
    return t;
  };
  HostTensor q = random({p.batch, p.heads_q, p.seq_q, dim});
  HostTensor k = random({p.batch, p.heads_kv, p.seq_k, dim});
  HostTensor v = random({p.batch, p.heads_kv, p.seq_k, dim});
  HostTensor o(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  HostTensor lse(dlpack_float32(), {p.batch, p.heads_q, p.seq_q});

  Bindings bindings = scalars;
  std::vector<std::unique_ptr<HostTensor>> captured;
  for (const auto& decl : variant.tensors()) {
    const auto shape = covering_tensor_shape(variant, decl, p, scalars, dim);
    auto t = std::make_unique<HostTensor>(to_dlpack_dtype(decl.dtype), shape);
    for (std::int64_t i = 0; i < t->numel(); ++i) {
      if (ir::value_type_of(decl.dtype) == ir::Type::Float)
        t->set(i, 0.5 * normal(rng));
      else
        t->set(i, static_cast<double>((i % shape.back()) * bench.documents / shape.back()));
    }
    bindings.set(decl.name, t->dl());
    captured.push_back(std::move(t));
  }

  for (int i = 0; i < bench.warmup; ++i) attention.forward(q.dl(), k.dl(), v.dl(), o.dl(), &lse.dl(), bindings);
  std::vector<double> times;
  for (int i = 0; i < bench.repetitions; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    attention.forward(q.dl(), k.dl(), v.dl(), o.dl(), &lse.dl(), bindings);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());

  BenchResult r;
  r.variant = variant.name();
  r.problem = p;
  r.head_dim = dim;
  r.dtype = dlpack_dtype_name(dtype);
  r.template_name = "cpu";
  const CpuOptions& options = attention.options();
  r.schedule =
      fmt::format("block_q={} block_kv={} hooks={} threads={} gemm={}", options.block_q, cpu_block_kv(options, dim),
                  cpu_hook_source_name(options.hooks == CpuHookSource::Auto
                                           ? (cpu_backend_has_jit() ? CpuHookSource::Jit : CpuHookSource::Interpreted)
                                           : options.hooks),
                  options.threads, cpu::gemm_backend().substr(0, cpu::gemm_backend().find(' ')));
  r.median_ms = times[times.size() / 2];
  r.min_ms = times.front();
  r.max_ms = times.back();
  r.input_sets = 1;
  r.density = mask_density(variant, p, bindings);
  const double pairs = static_cast<double>(p.batch) * p.heads_q * p.seq_q * p.seq_k * r.density;
  r.tflops = 4.0 * pairs * dim / (r.median_ms * 1e-3) / 1e12;
  const double bytes = static_cast<double>(dtype.bits / 8) *
                       (2.0 * p.batch * p.heads_q * p.seq_q * dim + 2.0 * p.batch * p.heads_kv * p.seq_k * dim);
  r.bandwidth_gbs = bytes / (r.median_ms * 1e-3) / 1e9;
  return r;
}

}  // namespace attnjit
