// `attnjit emit | compile | bench | check`: the kernel commands (`check --backward` judges
// the gradients). Each takes the variant as --preset NAME or --variant TEXT (or @file), plus
// --arch, --head-dim, --dtype and optional schedule overrides.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "compiler/llvm/cpu_hooks.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/reference/backward_check.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/reference/kv_cache_check.hpp"
#include "runtime/reference/ragged_check.hpp"
#include "runtime/tuning/benchmark.hpp"
#include "tools/cli/commands.hpp"
#include "tools/cli/cpu_device.hpp"
#include "tools/cli/kernel_args.hpp"

namespace attnjit::cli {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

void print_compile_report(const PreparedKernel& p) {
  const auto& m = *p.cached.metadata;
  const auto usage = m.resources.worst_case();
  fmt::print("variant:        {}\n", m.variant_text.substr(0, m.variant_text.find('\n')));
  fmt::print("arch:           {}\n", p.config.arch);
  fmt::print("head_dim/dtype: {} / {}\n", p.config.head_dim, element_type_name(p.config.dtype));
  fmt::print("template:       {}{}\n", p.config.template_name, p.config.tuned ? " (tuned knobs)" : "");
  fmt::print("knobs:          {}\n", p.config.knobs.str());
  fmt::print("kernels:        {}\n", fmt::join(p.unit.kernel_names, ", "));
  fmt::print("registers:      {} per thread\n", usage.registers);
  fmt::print("shared memory:  {} bytes dynamic, {} bytes static\n", p.unit.max_dynamic_shared_bytes,
             usage.shared_static_bytes);
  fmt::print("spills:         {} bytes stored, {} bytes loaded, stack frame {} bytes\n", usage.spill_store_bytes,
             usage.spill_load_bytes, usage.stack_frame_bytes);
  fmt::print("cache key:      {}\n", p.cache_key);
  fmt::print("this call:      {} in {:.1f} ms (NVRTC compile when built: {:.1f} ms)\n",
             runtime::to_string(p.cached.source), p.prepare_ms, m.compile_ms);
}

void measure_compile(const Variant& v, const CompileOptions& base, int runs) {
  std::vector<double> cold, disk;
  for (int i = 0; i < runs; ++i) {
    runtime::KernelCache no_disk(runtime::KernelCacheOptions().set_use_disk(false));
    CompileOptions o = base;
    o.with_cache(&no_disk);
    cold.push_back(prepare(v, o).prepare_ms);
    fmt::print(stderr, "\rcold compile {}/{}", i + 1, runs);
  }
  fmt::print(stderr, "\n");
  prepare(v, base);  // make sure the disk entry exists
  for (int i = 0; i < runs; ++i) {
    runtime::KernelCache fresh;  // empty memory cache: a lookup must go to disk
    CompileOptions o = base;
    o.with_cache(&fresh);
    const PreparedKernel p = prepare(v, o);
    if (p.cached.source != runtime::CacheSource::DiskHit)
      throw InternalError(fmt::format("expected a disk-cache hit, got {}", runtime::to_string(p.cached.source)));
    disk.push_back(p.prepare_ms);
  }
  fmt::print("cold compile (codegen + NVRTC), median of {}: {:.1f} ms\n", runs, median(cold));
  fmt::print("disk-cache hit (codegen + lookup), median of {}: {:.2f} ms\n", runs, median(disk));
}

}  // namespace

void register_kernel_commands(CLI::App& app) {
  auto args = std::make_shared<KernelArgs>();

  // --shape for emit and compile: a hint (tuned knobs for it; the decode template needs one).
  auto hint = std::make_shared<std::string>();
  const auto add_hint = [hint](CLI::App* command) {
    command->add_option("--shape", *hint,
                        "B,H,Hkv,Sq,Sk,D: the shape the kernel is for (a shape hint: tuned knobs for it; the decode "
                        "template needs one); D replaces --head-dim");
  };
  const auto hinted_options = [args, hint] {
    CompileOptions o = args->options();
    if (hint->empty()) return o;
    const auto [problem, dim] = parse_shape(*hint);
    o = hinted(o, problem);
    o.head_dim = dim;
    return o;
  };

  auto* emit = app.add_subcommand("emit", "Print the generated CUDA source (--arch cpu: the CPU hooks' LLVM IR)");
  add_kernel_options(emit, *args);
  add_hint(emit);
  emit->callback([args, hinted_options] {
    if (args->arch == "cpu") return fmt::print("{}", cpu_hooks_llvm_ir(args->variant(), {}, /*optimized=*/true));
    fmt::print("{}", generate(args->variant(), hinted_options()).source);
  });

  auto* compile_cmd =
      app.add_subcommand("compile", "Compile with NVRTC; print registers, shared memory, spills, time, key");
  add_kernel_options(compile_cmd, *args);
  auto measure = std::make_shared<int>(0);
  compile_cmd->add_option("--measure", *measure, "Also time N cold compiles and N disk-cache hits; print the medians");
  add_hint(compile_cmd);
  compile_cmd->callback([args, measure, hinted_options] {
    const Variant v = args->variant();
    const CompileOptions o = hinted_options();
    print_compile_report(prepare(v, o));
    if (*measure > 0) measure_compile(v, o, *measure);
  });

  auto* bench = app.add_subcommand(
      "bench",
      "Time the forward (or, with --backward, the backward) kernels (CUDA events, median) on one or more shapes");
  add_kernel_options(bench, *args);
  auto shapes = std::make_shared<std::vector<std::string>>();
  auto bench_options = std::make_shared<BenchOptions>();
  auto json = std::make_shared<bool>(false);
  auto csv = std::make_shared<bool>(false);
  bench->add_option("--shape", *shapes, "B,H,Hkv,Sq,Sk,D (repeatable)")->required();
  bench->add_option("--param", args->params, "Runtime parameter NAME=VALUE (repeatable)");
  bench->add_option("--reps", bench_options->repetitions, "Timed launches per shape")->capture_default_str();
  bench->add_option("--warmup", bench_options->warmup, "Untimed launches first")->capture_default_str();
  bench->add_option("--docs", bench_options->documents, "Documents per row for int id tensors")->capture_default_str();
  bench->add_flag("--prebuilt-block-mask", bench_options->prebuilt_block_mask,
                  "A mask that reads tensors: tile classes built once (Kernel::build_block_mask) for every timed "
                  "call, as FlexAttention's create_block_mask, instead of the block-mask kernel before each call");
  auto deterministic = std::make_shared<bool>(false);
  bench->add_flag("--deterministic", *deterministic,
                  "With --backward: fixed-point accumulation, bit-identical run to run");
  auto tensor_grads = std::make_shared<std::vector<std::string>>();
  bench->add_option("--tensor-grad", *tensor_grads,
                    "With --backward: also the gradient of this captured float tensor (repeatable)");
  auto kv_cache = std::make_shared<bool>(false);
  auto page_size = std::make_shared<int>(0);
  bench->add_flag("--kv-cache", *kv_cache,
                  "Time Kernel::forward_kv_cache (every sequence at Sk keys, Sq <= 16) instead of forward");
  bench->add_option("--page-size", *page_size, "With --kv-cache: K and V as pages of this many keys")
      ->capture_default_str();
  auto kv_lengths = std::make_shared<std::vector<int>>();
  bench
      ->add_option("--kv-lens", *kv_lengths,
                   "With --kv-cache: keys in use per sequence (B entries, each at most Sk), e.g. 32768,100,0,5000; "
                   "GB/s then count the K and V bytes of these lengths")
      ->delimiter(',');
  auto ragged_lengths = std::make_shared<std::vector<int>>();
  bench
      ->add_option("--ragged-lengths", *ragged_lengths,
                   "Time Kernel::forward_ragged on a packed prefill batch: one length (queries = keys) per "
                   "sequence of --shape's B, each at most its Sq and Sk (comma-separated). The ragged unit is "
                   "fwd_sm80's: knob options reach it with --template fwd_sm80; the result names what ran")
      ->delimiter(',');
  bench->add_flag("--json", *json, "One JSON object per shape instead of a table");
  bench->add_flag("--csv", *csv, "CSV (a header line, then one line per shape) instead of a table");
  auto device = std::make_shared<std::string>("gpu");
  bench->add_option("--device", *device, "gpu, or cpu: the CPU backend on host tensors (--dtype f32 allowed)")
      ->check(CLI::IsMember({"gpu", "cpu"}))
      ->capture_default_str();
  bench->callback([args, shapes, bench_options, json, csv, deterministic, tensor_grads, device, kv_cache, page_size,
                   kv_lengths, ragged_lengths] {
    if ((*deterministic || !tensor_grads->empty()) && !args->backward)
      throw UserError("--deterministic and --tensor-grad apply to --backward only");
    if ((*page_size != 0 || !kv_lengths->empty()) && !*kv_cache)
      throw UserError("--page-size and --kv-lens apply to --kv-cache");
    if (*kv_cache && (args->backward || *device == "cpu"))
      throw UserError("--kv-cache times the GPU forward only; drop --backward and --device cpu");
    if (!ragged_lengths->empty() && (args->backward || *device == "cpu" || *kv_cache))
      throw UserError("--ragged-lengths times the GPU forward only; drop --backward, --kv-cache and --device cpu");
    if (bench_options->prebuilt_block_mask &&
        (args->backward || *device == "cpu" || *kv_cache || !ragged_lengths->empty()))
      throw UserError(
          "--prebuilt-block-mask applies to the GPU forward only; drop --backward, --kv-cache, "
          "--ragged-lengths and --device cpu");
    if (*json && *csv) throw UserError("give at most one of --json and --csv");
    if (*device == "cpu") return run_cpu_bench(*args, *shapes, *bench_options, *json, *csv);
    const Variant v = args->variant();
    if (*csv) fmt::print("{}\n", BenchResult::csv_header());
    if (!*json && !*csv)
      fmt::print("{:<24} {:<34} {:>10} {:>8} {:>9} {:>9}\n", "variant", "shape", "median ms", "density", "TFLOP/s",
                 "GB/s");
    for (const auto& text : *shapes) {
      auto [problem, dim] = parse_shape(text);
      KernelArgs a = *args;
      a.head_dim = dim;
      // With no schedule override, the tuning database's knobs for this shape.
      const CompileOptions o = hinted(a.options(), problem);
      BenchResult r;
      if (*kv_cache || !ragged_lengths->empty()) {
        const Kernel kernel = compile(v, o);
        ForwardBenchmark fixture(v, o.dtype, o.head_dim, problem, args->bindings(), *bench_options);
        r = *kv_cache ? fixture.time_kv_cache(kernel, *page_size, *kv_lengths)
                      : fixture.time_ragged(kernel, *ragged_lengths);
      } else {
        r = args->backward
                ? benchmark_backward(v, o, problem, args->bindings(), *deterministic, *tensor_grads, *bench_options)
                : benchmark_forward(v, o, problem, args->bindings(), *bench_options);
      }
      if (*json)
        fmt::print("{}\n", r.json());
      else if (*csv)
        fmt::print("{}\n", r.csv());
      else
        fmt::print("{:<24} {:<34} {:>10.4f} {:>8.3f} {:>9.1f} {:>9.1f}\n", v.name(),
                   problem.str() + " D=" + std::to_string(dim), r.median_ms, r.density, r.tflops, r.bandwidth_gbs);
      std::fflush(stdout);
    }
  });

  auto* check = app.add_subcommand(
      "check", "Run on the GPU against the CPU reference (FlashAttention's 2x rule); --backward checks the gradients");
  add_kernel_options(check, *args);
  auto problem = std::make_shared<ForwardProblem>();
  auto seed = std::make_shared<std::uint64_t>(1);
  auto backward = std::make_shared<BackwardCheckOptions>();
  backward->runs = 0;  // 0: 3 with --deterministic, else 1
  check->add_option("--batch", problem->batch)->capture_default_str();
  check->add_option("--heads", problem->heads_q, "Query heads")->capture_default_str();
  check->add_option("--heads-kv", problem->heads_kv, "Key/value heads (GQA when fewer)")->capture_default_str();
  check->add_option("--seq-q", problem->seq_q)->capture_default_str();
  check->add_option("--seq-k", problem->seq_k)->capture_default_str();
  check->add_option("--param", args->params, "Runtime parameter NAME=VALUE (repeatable)");
  check->add_option("--seed", *seed)->capture_default_str();
  check->add_flag("--deterministic", backward->deterministic,
                  "With --backward: the deterministic mode, which must give identical bytes over --runs runs");
  check->add_option("--tensor-grad", backward->tensor_gradients,
                    "With --backward: also check the gradient of this captured tensor (repeatable)");
  check->add_option("--runs", backward->runs,
                    "With --backward: backward launches compared byte for byte (default 3 with --deterministic, "
                    "else 1)");
  auto check_device = std::make_shared<std::string>("gpu");
  check->add_option("--device", *check_device, "gpu, or cpu: the CPU backend on host tensors (--dtype f32 allowed)")
      ->check(CLI::IsMember({"gpu", "cpu"}))
      ->capture_default_str();
  auto kv_problem = std::make_shared<KvCacheProblem>();
  check
      ->add_option("--seq-lens", kv_problem->seq_lens,
                   "A KV-cache decode step (Kernel::forward_kv_problem): keys in use per sequence, one per batch "
                   "entry, e.g. --seq-lens 0,1,4097 (--seq-k is then the capacity)")
      ->delimiter(',');
  check->add_option("--page-size", kv_problem->page_size, "With --seq-lens: a paged cache of this many keys per page")
      ->capture_default_str();
  auto ragged = std::make_shared<RaggedProblem>();
  check
      ->add_option("--ragged-q", ragged->seq_lens_q,
                   "A ragged batch (Kernel::forward_ragged): queries per packed sequence, e.g. 1,0,300")
      ->delimiter(',');
  check->add_option("--ragged-k", ragged->seq_lens_k, "With --ragged-q: keys per packed sequence, e.g. 5,0,333")
      ->delimiter(',');
  check->callback([args, problem, seed, backward, check_device, kv_problem, ragged] {
    const Variant v = args->variant();
    if (*check_device == "cpu") return run_cpu_check(*args, *problem, *seed);
    if (!ragged->seq_lens_q.empty() || !ragged->seq_lens_k.empty()) {
      if (args->backward || !kv_problem->seq_lens.empty())
        throw UserError("a ragged check (--ragged-q, --ragged-k) is forward only and takes no --seq-lens");
      RaggedProblem p = *ragged;
      p.heads_q = problem->heads_q;
      p.heads_kv = problem->heads_kv;
      const ForwardCheckResult r = check_forward_ragged(compile(v, args->options()), p, args->bindings(), *seed);
      fmt::print("{} D={} {} ragged {}: {}\n", v.name(), args->head_dim, args->dtype, p.str(), r.summary());
      if (!r.pass) throw UserError("check failed: the kernel's error exceeds twice the naive computation's");
      return;
    }
    if (kv_problem->page_size != 0 && kv_problem->seq_lens.empty())
      throw UserError("--page-size applies to a KV-cache check; give the lengths with --seq-lens");
    if (!kv_problem->seq_lens.empty()) {
      if (args->backward) throw UserError("a KV-cache check (--seq-lens) is forward only; drop --backward");
      if (kv_problem->page_size < 0) throw UserError("--page-size must be positive");
      KvCacheProblem p = *kv_problem;
      p.batch = static_cast<int>(p.seq_lens.size());
      p.heads_q = problem->heads_q;
      p.heads_kv = problem->heads_kv;
      p.seq_q = problem->seq_q;
      p.capacity = problem->seq_k;
      // The shape hint (Sk = the capacity) lets a forced decode template accept the request.
      const ForwardCheckResult r =
          check_forward_kv_cache(compile(v, hinted(args->options(), *problem)), p, args->bindings(), *seed);
      fmt::print("{} D={} {} {}: {}\n", v.name(), args->head_dim, args->dtype, p.str(), r.summary());
      if (!r.pass) throw UserError("check failed: the kernel's error exceeds twice the naive computation's");
      return;
    }
    if (!args->backward) {
      if (backward->deterministic || !backward->tensor_gradients.empty() || backward->runs != 0)
        throw UserError("--deterministic, --tensor-grad and --runs apply to the backward check; add --backward");
      const ForwardCheckResult r =
          check_forward(v, hinted(args->options(), *problem), *problem, args->bindings(), *seed);
      fmt::print("{} D={} {} {}: {}\n", v.name(), args->head_dim, args->dtype, problem->str(), r.summary());
      if (!r.pass) throw UserError("check failed: the kernel's error exceeds twice the naive computation's");
      return;
    }
    BackwardCheckOptions options = *backward;
    if (options.runs == 0) options.runs = options.deterministic ? 3 : 1;
    const BackwardCheckResult r = check_backward(v, args->options(), *problem, args->bindings(), *seed, options);
    fmt::print("{} D={} {} {} backward{}: {}\n", v.name(), args->head_dim, args->dtype, problem->str(),
               options.deterministic ? " (deterministic)" : "", r.summary());
    if (!r.pass)
      throw UserError(
          "backward check failed: a gradient's error exceeds twice the naive computation's, an output holds "
          "NaN or a wrong zero, or deterministic runs differ");
  });
}

}  // namespace attnjit::cli
