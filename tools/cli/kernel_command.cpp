// `attnjit emit | compile | check`: the kernel commands. Each takes the variant as
// --preset NAME or --variant TEXT (or @file), plus --arch, --head-dim, --dtype and
// optional schedule overrides.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "dsl/presets.hpp"
#include "runtime/attention.hpp"
#include "runtime/benchmark.hpp"
#include "runtime/forward_check.hpp"
#include "tools/cli/commands.hpp"

namespace attnjit::cli {
namespace {

struct KernelArgs {
  std::string preset;
  std::string variant_text;
  std::string arch = "auto";
  int head_dim = 128;
  std::string dtype = "bf16";
  int block_m = 0, block_n = 0, warps = 0, stages = 0;  // 0: the default schedule's value
  std::vector<std::string> params;                      // name=value

  Variant variant() const {
    if (preset.empty() == variant_text.empty())
      throw UserError("give exactly one of --preset NAME or --variant TEXT (see `attnjit variant list`)");
    if (!preset.empty()) return presets::by_name(preset);
    if (!variant_text.empty() && variant_text[0] == '@') {
      std::ifstream in(variant_text.substr(1));
      if (!in) throw UserError(fmt::format("cannot read variant file '{}'; check the path", variant_text.substr(1)));
      std::stringstream ss;
      ss << in.rdbuf();
      return Variant::parse(ss.str());
    }
    return Variant::parse(variant_text);
  }

  CompileOptions options() const {
    CompileOptions o;
    o.with_head_dim(head_dim).with_dtype(parse_element_type(dtype)).with_arch(arch);
    Schedule s = Schedule::default_for(head_dim);
    if (block_m) s.block_m = block_m;
    if (block_n) s.block_n = block_n;
    if (warps) s.num_warps = warps;
    if (stages) s.stages = stages;
    o.with_schedule(s);
    o.validate();
    return o;
  }

  Bindings bindings() const {
    Bindings b;
    for (const auto& p : params) {
      const auto eq = p.find('=');
      if (eq == std::string::npos || eq == 0)
        throw UserError(fmt::format("--param '{}' is not NAME=VALUE; e.g. --param window=256", p));
      const std::string name = p.substr(0, eq), value = p.substr(eq + 1);
      try {
        std::size_t used = 0;
        const long long i = std::stoll(value, &used);
        if (used == value.size()) {
          b.set(name, static_cast<int>(i));
          continue;
        }
        const double d = std::stod(value, &used);
        if (used != value.size()) throw std::invalid_argument(value);
        b.set(name, d);
      } catch (const std::logic_error&) {
        throw UserError(fmt::format("--param {}: '{}' is not a number", name, value));
      }
    }
    return b;
  }
};

void add_kernel_options(CLI::App* cmd, KernelArgs& a) {
  cmd->add_option("--preset", a.preset, "Preset name (see `attnjit variant list`)");
  cmd->add_option("--variant", a.variant_text, "Variant text, or @file");
  cmd->add_option("--arch", a.arch, "auto (the GPU's), sm_80, sm_86, sm_89, sm_90, sm_90a")->capture_default_str();
  cmd->add_option("--head-dim", a.head_dim, "Head dimension: 32, 64, 96, 128, 256")->capture_default_str();
  cmd->add_option("--dtype", a.dtype, "bf16 or fp16")->capture_default_str();
  cmd->add_option("--block-m", a.block_m, "Schedule override: query rows per CTA (64, 128)");
  cmd->add_option("--block-n", a.block_n, "Schedule override: keys per tile (32, 64, 128)");
  cmd->add_option("--warps", a.warps, "Schedule override: warps per CTA (4, 8)");
  cmd->add_option("--stages", a.stages, "Schedule override: kv buffers (1, 2)");
}

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
  fmt::print("schedule:       {}\n", p.config.schedule.str());
  fmt::print("registers:      {} per thread\n", usage.registers);
  fmt::print("shared memory:  {} bytes dynamic, {} bytes static\n", p.generated.shared_memory_bytes,
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

// "B,H,Hkv,Sq,Sk,D" into a problem and a head dimension.
std::pair<ForwardProblem, int> parse_shape(const std::string& text) {
  std::vector<int> v;
  std::stringstream ss(text);
  std::string item;
  try {
    while (std::getline(ss, item, ',')) v.push_back(std::stoi(item));
  } catch (const std::logic_error&) {
    v.clear();
  }
  if (v.size() != 6 || *std::min_element(v.begin(), v.end()) < 1)
    throw UserError(
        fmt::format("--shape '{}' is not B,H,Hkv,Sq,Sk,D with positive integers, e.g. 4,16,16,4096,4096,128", text));
  return {ForwardProblem{v[0], v[1], v[2], v[3], v[4]}, v[5]};
}

}  // namespace

void register_kernel_commands(CLI::App& app) {
  auto args = std::make_shared<KernelArgs>();

  auto* emit = app.add_subcommand("emit", "Print the generated CUDA source of a variant");
  add_kernel_options(emit, *args);
  emit->callback([args] { fmt::print("{}", generate(args->variant(), args->options()).source); });

  auto* compile_cmd =
      app.add_subcommand("compile", "Compile with NVRTC; print registers, shared memory, spills, time, key");
  add_kernel_options(compile_cmd, *args);
  auto measure = std::make_shared<int>(0);
  compile_cmd->add_option("--measure", *measure, "Also time N cold compiles and N disk-cache hits; print the medians");
  compile_cmd->callback([args, measure] {
    const Variant v = args->variant();
    const CompileOptions o = args->options();
    print_compile_report(prepare(v, o));
    if (*measure > 0) measure_compile(v, o, *measure);
  });

  auto* bench = app.add_subcommand("bench", "Time the forward kernel (CUDA events, median) on one or more shapes");
  add_kernel_options(bench, *args);
  auto shapes = std::make_shared<std::vector<std::string>>();
  auto bench_options = std::make_shared<BenchOptions>();
  auto json = std::make_shared<bool>(false);
  bench->add_option("--shape", *shapes, "B,H,Hkv,Sq,Sk,D (repeatable)")->required();
  bench->add_option("--param", args->params, "Runtime parameter NAME=VALUE (repeatable)");
  bench->add_option("--reps", bench_options->repetitions, "Timed launches per shape")->capture_default_str();
  bench->add_option("--warmup", bench_options->warmup, "Untimed launches first")->capture_default_str();
  bench->add_option("--docs", bench_options->documents, "Documents per row for int id tensors")->capture_default_str();
  bench->add_flag("--json", *json, "One JSON object per shape instead of a table");
  bench->callback([args, shapes, bench_options, json] {
    const Variant v = args->variant();
    if (!*json)
      fmt::print("{:<24} {:<34} {:>10} {:>8} {:>9} {:>9}\n", "variant", "shape", "median ms", "density", "TFLOP/s",
                 "GB/s");
    for (const auto& text : *shapes) {
      auto [problem, dim] = parse_shape(text);
      KernelArgs a = *args;
      a.head_dim = dim;
      const BenchResult r = benchmark_forward(v, a.options(), problem, args->bindings(), *bench_options);
      if (*json)
        fmt::print("{}\n", r.json());
      else
        fmt::print("{:<24} {:<34} {:>10.4f} {:>8.3f} {:>9.1f} {:>9.1f}\n", v.name(),
                   problem.str() + " D=" + std::to_string(dim), r.median_ms, r.density, r.tflops, r.bandwidth_gbs);
      std::fflush(stdout);
    }
  });

  auto* check = app.add_subcommand("check", "Run on the GPU against the CPU reference (FlashAttention's 2x rule)");
  add_kernel_options(check, *args);
  auto problem = std::make_shared<ForwardProblem>();
  auto seed = std::make_shared<std::uint64_t>(1);
  check->add_option("--batch", problem->batch)->capture_default_str();
  check->add_option("--heads", problem->heads_q, "Query heads")->capture_default_str();
  check->add_option("--heads-kv", problem->heads_kv, "Key/value heads (GQA when fewer)")->capture_default_str();
  check->add_option("--seq-q", problem->seq_q)->capture_default_str();
  check->add_option("--seq-k", problem->seq_k)->capture_default_str();
  check->add_option("--param", args->params, "Runtime parameter NAME=VALUE (repeatable)");
  check->add_option("--seed", *seed)->capture_default_str();
  check->callback([args, problem, seed] {
    const Variant v = args->variant();
    const ForwardCheckResult r = check_forward(v, args->options(), *problem, args->bindings(), *seed);
    fmt::print("{} D={} {} {}: {}\n", v.name(), args->head_dim, args->dtype, problem->str(), r.summary());
    if (!r.pass) throw UserError("check failed: the kernel's error exceeds twice the naive computation's");
  });
}

}  // namespace attnjit::cli
