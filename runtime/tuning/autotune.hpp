// The autotuner: searches the knob space of the chosen kernel template (TemplateRegistry::
// select, or the forced template) for one variant and shape. Infeasible knob settings are
// pruned by the template's check_knobs before compiling (compiler/knob_space.hpp); the rest
// compile in parallel threads through `prepare` while the calling thread loads and times
// each one as soon as it is ready (ForwardBenchmark, one set of inputs for all). A candidate that fails
// to compile or launch scores infinity and the search goes on. The winner is checked
// against the CPU reference (check_forward, on a smaller problem of the same kind when the
// shape is large) before it is stored in the tuning database under the template's name.
// Only the knobs change. tune_backward does the same for a backward template (bwd_sm80):
// Kernel::backward of one forward kernel with each candidate's knobs, check_backward.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "compiler/knob_space.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/cache/tuning_db.hpp"
#include "runtime/reference/backward_check.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/tuning/benchmark.hpp"

namespace attnjit {

struct TuneCandidate {
  Knobs knobs;                                          // of TuneResult::template_name
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
  // Per knob, the values to try instead of the template's (knob name -> values, in order);
  // a knob the chosen template lacks is a UserError naming its knobs.
  std::map<std::string, std::vector<int>> restrict_to;
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
  std::string template_name;   // the template whose knobs were searched
  Knobs default_knobs;         // its default for the request
  BenchResult default_result;  // the default knobs, timed in the same run
  std::optional<TuneCandidate> best;
  std::vector<TuneCandidate> candidates;              // compiled and timed (or failed)
  std::vector<KnobCandidate> pruned;                  // infeasible, with the reason
  std::optional<ForwardCheckResult> check;            // the winner's check, when run (tune_forward)
  std::optional<BackwardCheckResult> backward_check;  // the same for tune_backward
  ForwardProblem check_problem;
  bool backward = false;  // tune_backward's result: times are of Kernel::backward
  bool stored = false;
  double speedup() const { return best && best->ms > 0 ? default_result.median_ms / best->ms : 0.0; }
};

// The problem the winner is checked on: the same head ratio, mask kind and Sq:Sk proportion,
// scaled down so that the CPU reference stays within seconds.
ForwardProblem check_problem_for(const ForwardProblem& problem, int max_seq);

// Needs a GPU. `base` gives head_dim, dtype, arch, device and the template (empty: the one
// TemplateRegistry::select picks for the request with this problem); its knobs are ignored
// and its shape hint is replaced by `problem`.
TuneResult tune_forward(const Variant& variant, const CompileOptions& base, const ForwardProblem& problem,
                        const Bindings& scalars, const TuneOptions& options = {});

// The backward's knobs (template role Backward; `base.template_name` may name one, e.g.
// bwd_sm80). The forward that gives O and LSE is compiled once with its own defaults for this
// shape; each candidate times Kernel::backward (fp32 atomics; the deterministic mode takes the
// same knobs) after it. The default is the knob set Kernel::backward uses without a tuning
// record (the template's fallback included where its defaults spill). The record is stored
// under the backward template's name: a kernel compiled with this shape hint finds it in
// Kernel::backward, as compile() finds a forward record.
TuneResult tune_backward(const Variant& variant, const CompileOptions& base, const ForwardProblem& problem,
                         const Bindings& scalars, const TuneOptions& options = {});

}  // namespace attnjit
