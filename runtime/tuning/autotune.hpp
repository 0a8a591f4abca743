// The autotuner: searches the schedule space for one variant and shape. Infeasible
// schedules are pruned before compiling (compiler/schedule_space.hpp); the rest compile in
// parallel threads through `prepare` while the calling thread loads and times each one as
// soon as it is ready (ForwardBenchmark, one set of inputs for all). A candidate that fails
// to compile or launch scores infinity and the search goes on. The winner is checked
// against the CPU reference (check_forward, on a smaller problem of the same kind when the
// shape is large) before it is stored in the tuning database. Only the schedule changes.
#pragma once

#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "compiler/schedule_space.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/tuning/benchmark.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/cache/tuning_db.hpp"

namespace attnjit {

struct TuneCandidate {
  Schedule schedule;
  double ms = std::numeric_limits<double>::infinity();  // median; infinity when it failed
  double tflops = 0;
  double compile_ms = 0;
  std::string error;  // why it failed; empty when timed
};

struct TuneProgress {
  int done = 0, total = 0;
  const TuneCandidate* last = nullptr;
  const TuneCandidate* best = nullptr;  // null until one succeeds
};

struct TuneOptions {
  ScheduleSpace space;
  int threads = 4;                  // NVRTC compile threads
  BenchOptions bench{5, 20, 0, 3};  // warm-up, timed launches, input sets, documents
  bool check = true;                // verify the winner against the reference before storing
  int check_max_seq = 1024;         // the check's problem is scaled down to at most this length
  std::uint64_t check_seed = 7;
  TuningDatabase* database = nullptr;  // where the winner goes; null: not stored
  std::function<void(const TuneProgress&)> on_progress;

  void validate() const;  // UserError on out-of-range values
};

struct TuneResult {
  std::string variant;
  ForwardProblem problem;
  int head_dim = 0;
  std::string arch, dtype;
  Schedule default_schedule;
  BenchResult default_result;  // the default heuristic's schedule, timed in the same run
  std::optional<TuneCandidate> best;
  std::vector<TuneCandidate> candidates;    // compiled and timed (or failed)
  std::vector<ScheduleCandidate> pruned;    // infeasible, with the reason
  std::optional<ForwardCheckResult> check;  // the winner's check, when run
  ForwardProblem check_problem;
  bool stored = false;
  double speedup() const { return best && best->ms > 0 ? default_result.median_ms / best->ms : 0.0; }
};

// The problem the winner is checked on: the same head ratio, mask kind and Sq:Sk proportion,
// scaled down so that the CPU reference stays within seconds.
ForwardProblem check_problem_for(const ForwardProblem& problem, int max_seq);

// Needs a GPU. `base` gives head_dim, dtype and arch; its schedule and shape hint are ignored.
TuneResult tune_forward(const Variant& variant, const CompileOptions& base, const ForwardProblem& problem,
                        const Bindings& scalars, const TuneOptions& options = {});

}  // namespace attnjit
