// `attnjit demo`: the end-to-end tour on built-in defaults. It builds a few preset
// variants, prints their canonical text, runs the CPU reference on a small problem, then
// JIT-compiles each variant's forward kernel with NVRTC (no GPU needed) and, where a GPU
// is present, runs it against the reference; where there is none, compile() gives the CPU
// backend, which is checked against the reference and timed on a real-size head.
#include <fmt/format.h>

#include <cmath>
#include <random>

#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/cpu/cpu_benchmark.hpp"
#include "runtime/cpu/cpu_check.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/reference/reference.hpp"
#include "tools/cli/commands.hpp"

namespace attnjit::cli {
namespace {

HostTensor random_tensor(std::vector<std::int64_t> shape, std::mt19937& rng) {
  HostTensor t(dlpack_float32(), std::move(shape));
  std::normal_distribution<double> normal(0.0, 1.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
  return t;
}

void run_demo() {
  constexpr int batch = 1, heads = 4, heads_kv = 2, seq = 8, dim = 16;
  std::mt19937 rng(2026);
  HostTensor q = random_tensor({batch, heads, seq, dim}, rng);
  HostTensor k = random_tensor({batch, heads_kv, seq, dim}, rng);
  HostTensor v = random_tensor({batch, heads_kv, seq, dim}, rng);

  struct Case {
    Variant variant;
    Bindings bindings;  // for the small problems
    Bindings timed;     // for the timed CPU run at S=2048 (runtime parameters: no recompile)
    std::string timed_label;
  };
  std::vector<Case> cases;
  cases.push_back({presets::causal(), {}, {}, ""});
  cases.push_back(
      {presets::alibi().then(presets::sliding_window()).then(presets::softcap()), {}, {}, " (window 512, softcap 20)"});
  cases.back().bindings.set("window", 3).set("softcap", 20.0);
  cases.back().timed.set("window", 512).set("softcap", 20.0);
  cases.push_back({presets::prefix_lm(), {}, {}, " (prefix_len 512)"});
  cases.back().bindings.set("prefix_len", 2);
  cases.back().timed.set("prefix_len", 512);

  fmt::print("attnjit demo: {} variants on B={} Hq={} Hkv={} S={} D={} (GQA 2:1), CPU reference in fp64\n\n",
             cases.size(), batch, heads, heads_kv, seq, dim);
  for (const auto& c : cases) {
    fmt::print("--- {} (hash {})\n{}", c.variant.name(), c.variant.hash().hex(), c.variant.text());
    const ReferenceResult r = reference_attention(c.variant, q.dl(), k.dl(), v.dl(), c.bindings);
    fmt::print("LSE of head 0, queries 0..{}: ", seq - 1);
    for (int i = 0; i < seq; ++i) fmt::print("{:.4f} ", r.lse_at(0, 0, i));
    fmt::print("\nO[b=0, h=0, q={}, d=0..3]: ", seq - 1);
    for (int d = 0; d < 4; ++d) fmt::print("{:+.4f} ", r.o_at(0, 0, seq - 1, d));
    fmt::print("\n");
    // The JIT path: codegen + NVRTC for sm_90a (through the kernel cache).
    const PreparedKernel p = prepare(c.variant, CompileOptions().with_head_dim(64).with_arch("sm_90a"));
    const auto usage = p.cached.metadata->resources.worst_case();
    fmt::print("JIT sm_90a D=64: {} ({:.0f} ms), {} registers, {} bytes spilled, cache key {}\n",
               runtime::to_string(p.cached.source), p.prepare_ms, usage.registers, usage.spill_store_bytes,
               p.cache_key);
    if (runtime::Driver::instance().available() && runtime::Driver::instance().device_count() > 0) {
      const ForwardCheckResult check = check_forward(c.variant, CompileOptions().with_head_dim(64),
                                                     ForwardProblem{1, 4, 2, 333, 517}, c.bindings, 1);
      fmt::print("GPU vs reference (B=1 Hq=4 Hkv=2 Sq=333 Sk=517): {}\n", check.summary());
    } else {
      // No GPU: compile() gives the CPU backend (its hooks JIT-compiled for this CPU), which
      // Kernel::forward runs on host tensors.
      const Kernel kernel = compile(c.variant, CompileOptions().with_head_dim(64));
      const ForwardCheckResult check =
          check_cpu_forward(kernel.cpu(), ForwardProblem{1, 4, 2, 333, 517}, 64, dlpack_bfloat16(), c.bindings, 1);
      fmt::print("CPU backend ({} hooks) vs reference (B=1 Hq=4 Hkv=2 Sq=333 Sk=517, bf16): {}\n",
                 cpu_backend_has_jit() ? "LLVM JIT" : "interpreted", check.summary());
      BenchOptions bench;
      bench.warmup = 1;
      bench.repetitions = 3;
      bench.input_sets = 1;
      const BenchResult t = benchmark_cpu_forward(kernel.cpu(), ForwardProblem{1, 8, 8, 2048, 2048}, 64,
                                                  dlpack_bfloat16(), c.timed, bench);
      fmt::print("CPU forward B=1 H=8 S=2048 D=64 bf16{}: {:.1f} ms (median of 3), {:.1f} GFLOP/s on admitted pairs\n",
                 c.timed_label, t.median_ms, t.tflops * 1000.0);
    }
    fmt::print("\n");
  }
  if (!runtime::Driver::instance().available())
    fmt::print(
        "No GPU here ({}): the CUDA kernels were compiled, not run; the CPU backend ran each variant. `attnjit "
        "check` runs them on a GPU.\n",
        runtime::Driver::instance().unavailable_reason());
}

}  // namespace

void register_demo_command(CLI::App& app) {
  auto* demo = app.add_subcommand("demo", "End-to-end tour on built-in defaults");
  demo->callback(run_demo);
}

}  // namespace attnjit::cli
