// The kernel commands on the CPU backend (see cpu_device.hpp).
#include "tools/cli/cpu_device.hpp"

#include <fmt/format.h>

#include <cstdio>

#include "runtime/api/dlpack_view.hpp"
#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/cpu/cpu_benchmark.hpp"
#include "runtime/cpu/cpu_check.hpp"
#include "runtime/cpu/cpu_kernels.hpp"
#include "runtime/cpu/thread_pool.hpp"

namespace attnjit::cli {
namespace {

DLDataType cpu_dtype(const std::string& name) {
  if (name == "f32" || name == "fp32") return dlpack_float32();
  if (name == "bf16") return dlpack_bfloat16();
  if (name == "fp16" || name == "f16") return dlpack_float16();
  throw UserError(fmt::format("--dtype '{}' is not supported on the CPU; allowed: f32, bf16, fp16", name));
}

// The CLI's schedule flags are GPU knobs; the CPU backend has its own blocks.
void refuse_gpu_knobs(const KernelArgs& args) {
  if (!args.knobs.empty() || !args.template_name.empty() || args.backward)
    throw UserError(
        "--template, the schedule flags and --backward apply to GPU kernels; the CPU backend (--device cpu) "
        "runs the forward with its own tiles");
}

}  // namespace

void run_cpu_bench(const KernelArgs& args, const std::vector<std::string>& shapes, const BenchOptions& bench, bool json,
                   bool csv) {
  refuse_gpu_knobs(args);
  const Variant v = args.variant();
  const DLDataType dtype = cpu_dtype(args.dtype);
  const CpuAttention attention = compile_cpu(v);
  if (!json && !csv) {
    fmt::print("# CPU backend: {} threads, hooks {} (compiled in {:.1f} ms), products by {}\n",
               cpu::ThreadPool::instance().size(), cpu_backend_has_jit() ? "JIT (LLVM)" : "interpreted",
               attention.hooks().compile_ms, cpu::gemm_backend());
    fmt::print("{:<24} {:<34} {:>10} {:>8} {:>9} {:>9}\n", "variant", "shape", "median ms", "density", "GFLOP/s",
               "GB/s");
  }
  if (csv) fmt::print("{}\n", BenchResult::csv_header());
  for (const auto& text : shapes) {
    const auto [problem, dim] = parse_shape(text);
    const BenchResult r = benchmark_cpu_forward(attention, problem, dim, dtype, args.bindings(), bench);
    if (json)
      fmt::print("{}\n", r.json());
    else if (csv)
      fmt::print("{}\n", r.csv());
    else
      fmt::print("{:<24} {:<34} {:>10.3f} {:>8.3f} {:>9.1f} {:>9.1f}\n", v.name(),
                 problem.str() + " D=" + std::to_string(dim), r.median_ms, r.density, r.tflops * 1e3, r.bandwidth_gbs);
    std::fflush(stdout);
  }
}

void run_cpu_check(const KernelArgs& args, const ForwardProblem& problem, std::uint64_t seed) {
  refuse_gpu_knobs(args);
  const Variant v = args.variant();
  const DLDataType dtype = cpu_dtype(args.dtype);
  const CpuAttention attention = compile_cpu(v);
  const ForwardCheckResult r = check_cpu_forward(attention, problem, args.head_dim, dtype, args.bindings(), seed);
  fmt::print("{} D={} {} {} on the CPU (hooks {}): {}\n", v.name(), args.head_dim, args.dtype, problem.str(),
             cpu_backend_has_jit() ? "JIT" : "interpreted", r.summary());
  if (dtype.code == kDLFloat && dtype.bits == 32)
    fmt::print("f32 inputs: limits |dO| <= {:g} + {:g} |LSE| per row, LSE {:g} relative (no naive yardstick in f32)\n",
               cpu_fp32_tolerance().o_abs, cpu_fp32_tolerance().o_per_lse, cpu_fp32_tolerance().lse_rel);
  if (!r.pass) throw UserError("check failed: the CPU backend's error exceeds its limit");
}

}  // namespace attnjit::cli
