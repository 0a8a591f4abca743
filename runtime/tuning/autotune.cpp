// The autotuner (see autotune.hpp).
#include "runtime/tuning/autotune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <future>
#include <memory>
#include <thread>

#include "compiler/error.hpp"
#include "runtime/driver/cuda_driver.hpp"

namespace attnjit {

void TuneOptions::validate() const {
  if (threads < 1 || threads > 64)
    throw UserError(fmt::format("tune threads {} is out of range; use 1 to 64", threads));
  if (check_max_seq < 16)
    throw UserError(fmt::format("tune check_max_seq {} is too small; use at least 16", check_max_seq));
  for (const auto& [knob, values] : restrict_to)
    if (values.empty())
      throw UserError(
          fmt::format("tune restriction of knob '{}' gives no value; give at least one value per knob", knob));
  bench.validate();
}

ForwardProblem check_problem_for(const ForwardProblem& p, int max_seq) {
  ForwardProblem c = p;
  c.batch = std::min(p.batch, 2);
  const int group = std::max(1, p.heads_q / std::max(1, p.heads_kv));
  c.heads_kv = std::min(p.heads_kv, 2);
  c.heads_q = c.heads_kv * group;
  if (c.heads_q > 8) {
    c.heads_kv = 1;
    c.heads_q = group;
  }
  const int longest = std::max(p.seq_q, p.seq_k);
  if (longest > max_seq) {
    const double scale = static_cast<double>(longest) / max_seq;
    c.seq_q = std::max(1, static_cast<int>(std::ceil(p.seq_q / scale)));
    c.seq_k = std::max(1, static_cast<int>(std::ceil(p.seq_k / scale)));
  }
  return c;
}

namespace {

// The search of tune_forward (role Forward) and tune_backward (role Backward).
TuneResult tune_role(const Variant& variant, const CompileOptions& base, const ForwardProblem& problem,
                     const Bindings& scalars, const TuneOptions& options, TemplateRole role) {
  options.validate();
  const bool backward = role == TemplateRole::Backward;
  CompileOptions fixed = base;
  fixed.role = role;
  fixed.knobs = Knobs();  // each candidate sets every knob of the chosen template
  // The problem is the shape hint, so that every candidate sees the request a later compile
  // with this hint sees (the hint selects tuned knobs only when no knob is given).
  fixed.shape_hint = ShapeHint{problem.batch, problem.heads_q, problem.heads_kv, problem.seq_q, problem.seq_k};
  fixed.validate();
  auto& driver = runtime::Driver::instance();
  if (!driver.available())
    throw RuntimeFailure(
        fmt::format("attnjit tune needs a GPU, but the CUDA driver is unavailable: {}", driver.unavailable_reason()));
  runtime::DeviceContext device(fixed.device);
  device.make_current();
  if (fixed.arch == "auto")  // as compile() resolves it, so that the record's arch is the one looked up
    fixed.arch = runtime::choose_auto_arch(device.properties().compute_major, device.properties().compute_minor);
  const int smem_limit = device.properties().max_shared_memory_per_block_optin > 0
                             ? device.properties().max_shared_memory_per_block_optin
                             : max_shared_memory_for_arch(fixed.arch);

  TuneResult result;
  result.variant = variant.name();
  result.problem = problem;
  result.head_dim = fixed.head_dim;
  result.arch = fixed.arch;
  result.dtype = element_type_name(fixed.dtype);
  result.backward = backward;

  TemplateRequest request;
  request.role = role;
  request.variant = &variant;
  request.arch = fixed.arch;
  request.head_dim = fixed.head_dim;
  request.dtype = fixed.dtype;
  request.problem = ProblemShape{problem.batch, problem.heads_q, problem.heads_kv, problem.seq_q, problem.seq_k};
  const KernelTemplate& t = TemplateRegistry::instance().select(request, fixed.template_name);
  fixed.template_name = t.name();  // every candidate, the default and the check use this template
  result.template_name = t.name();
  result.default_knobs = t.default_knobs(request);
  if (backward) {
    // What Kernel::backward runs without a record: prepare() may fall back from spilling defaults.
    CompileOptions d = fixed;
    d.shape_hint.reset();
    result.default_knobs = prepare(variant, d).config.knobs;
  }

  std::vector<Knobs> feasible;
  const auto restrict_to = with_untuned_knobs_fixed(t, fixed.head_dim, result.default_knobs, options.restrict_to);
  for (auto& c : enumerate_knobs(t, fixed.head_dim, smem_limit, restrict_to)) {
    if (c.feasible)
      feasible.push_back(c.knobs);
    else
      result.pruned.push_back(std::move(c));
  }

  // Compile every candidate in a small pool; the calling thread times them in order.
  std::vector<std::promise<std::string>> compiled(feasible.size());  // empty string: success
  std::vector<std::future<std::string>> ready;
  std::vector<double> compile_ms(feasible.size(), 0.0);
  for (auto& p : compiled) ready.push_back(p.get_future());
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> pool;
  const int threads = std::min<int>(options.threads, static_cast<int>(std::max<std::size_t>(feasible.size(), 1)));
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (std::size_t i; (i = next.fetch_add(1)) < feasible.size();) {
        try {
          CompileOptions o = fixed;
          o.with_knobs(feasible[i]);
          compile_ms[i] = prepare(variant, o).prepare_ms;
          compiled[i].set_value("");
        } catch (const std::exception& e) {
          compiled[i].set_value(e.what());
        }
      }
    });
  struct JoinPool {
    std::vector<std::thread>& pool;
    std::atomic<std::size_t>& next;
    std::size_t n;
    ~JoinPool() {
      next.store(n);  // stop handing out work, then wait for the compiles in flight
      for (auto& t : pool)
        if (t.joinable()) t.join();
    }
  } join_pool{pool, next, feasible.size()};

  ForwardBenchmark bench(variant, fixed.dtype, fixed.head_dim, problem, scalars, options.bench);
  // The backward's candidates all run after one forward kernel (its defaults for this shape).
  std::shared_ptr<const Kernel> forward_kernel;
  if (backward) {
    CompileOptions f = fixed;
    f.role = TemplateRole::Forward;
    f.template_name.clear();
    forward_kernel = std::make_shared<const Kernel>(compile(variant, f));
  }
  // A timer for one knob set, its kernel compiled (or its backward unit built) once.
  const auto timer_for = [&](const Knobs& knobs) -> std::function<BenchResult()> {
    if (backward) {
      BackwardOptions b;
      b.template_name = fixed.template_name;
      b.knobs = knobs;
      return [&bench, forward_kernel, b] { return bench.time_backward(*forward_kernel, b); };
    }
    CompileOptions o = fixed;
    o.with_knobs(knobs);
    auto kernel = std::make_shared<const Kernel>(compile(variant, o));
    return [&bench, kernel] { return bench.time(*kernel); };
  };
  result.default_result = timer_for(result.default_knobs)();

  TuneProgress progress;
  progress.total = static_cast<int>(feasible.size());
  std::optional<std::size_t> best_index;
  result.candidates.reserve(feasible.size());
  for (std::size_t i = 0; i < feasible.size(); ++i) {
    TuneCandidate c;
    c.knobs = feasible[i];
    c.error = ready[i].get();
    c.compile_ms = compile_ms[i];
    if (c.error.empty()) {
      if (c.knobs == result.default_knobs) {
        c.ms = result.default_result.median_ms;
        c.tflops = result.default_result.tflops;
      } else {
        try {
          const BenchResult r = timer_for(c.knobs)();
          c.ms = r.median_ms;
          c.tflops = r.tflops;
        } catch (const std::exception& e) {
          c.error = e.what();
        }
      }
    }
    if (!c.error.empty()) c.ms = std::numeric_limits<double>::infinity();
    result.candidates.push_back(std::move(c));
    const TuneCandidate& added = result.candidates.back();
    if (std::isfinite(added.ms) && (!best_index || added.ms < result.candidates[*best_index].ms))
      best_index = result.candidates.size() - 1;
    progress.done = static_cast<int>(i + 1);
    progress.last = &added;
    progress.best = best_index ? &result.candidates[*best_index] : nullptr;
    if (options.on_progress) options.on_progress(progress);
  }

  // Verify in order of speed; the first that passes wins.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < result.candidates.size(); ++i)
    if (std::isfinite(result.candidates[i].ms)) order.push_back(i);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return result.candidates[a].ms < result.candidates[b].ms; });
  result.check_problem = check_problem_for(problem, options.check_max_seq);
  for (std::size_t rank = 0; rank < order.size() && rank < 3; ++rank) {
    const TuneCandidate& c = result.candidates[order[rank]];
    if (options.check) {
      CompileOptions o = fixed;
      o.with_knobs(c.knobs);
      if (backward) {
        result.backward_check = check_backward(variant, o, result.check_problem, scalars, options.check_seed);
        if (!result.backward_check->pass) continue;
      } else {
        result.check = check_forward(variant, o, result.check_problem, scalars, options.check_seed);
        if (!result.check->pass) continue;
      }
    }
    result.best = c;
    break;
  }
  // Confirm: time the default and the winner again, alternating, and keep each one's best
  // median, so that the reported pair is measured under the same conditions.
  if (result.best && !(result.best->knobs == result.default_knobs)) {
    const auto time_default = timer_for(result.default_knobs), time_best = timer_for(result.best->knobs);
    for (int round = 0; round < 3; ++round) {
      const BenchResult rd = time_default(), rb = time_best();
      if (rd.median_ms < result.default_result.median_ms) result.default_result = rd;
      if (rb.median_ms < result.best->ms) {
        result.best->ms = rb.median_ms;
        result.best->tflops = rb.tflops;
      }
    }
  }
  if (result.best && options.database) {
    TuningRecord record;
    record.key =
        TuningKey::make(variant, fixed.arch, fixed.dtype, fixed.head_dim,
                        ShapeHint{problem.batch, problem.heads_q, problem.heads_kv, problem.seq_q, problem.seq_k});
    record.template_name = result.template_name;
    record.knobs = result.best->knobs;
    record.variant_name = variant.name();
    record.shape = problem.str();
    record.ms = result.best->ms;
    record.tflops = result.best->tflops;
    record.default_ms = result.default_result.median_ms;
    options.database->put(record);
    result.stored = true;
  }
  return result;
}

}  // namespace

TuneResult tune_forward(const Variant& variant, const CompileOptions& base, const ForwardProblem& problem,
                        const Bindings& scalars, const TuneOptions& options) {
  return tune_role(variant, base, problem, scalars, options, TemplateRole::Forward);
}

TuneResult tune_backward(const Variant& variant, const CompileOptions& base, const ForwardProblem& problem,
                         const Bindings& scalars, const TuneOptions& options) {
  return tune_role(variant, base, problem, scalars, options, TemplateRole::Backward);
}

}  // namespace attnjit
