// Forward-kernel timing: CUDA events around each launch, warm-up first, rotation over
// several input sets so repeated runs do not measure the L2 cache, and the median of
// many launches. Throughput counts only the (b, h, q, kv) pairs the mask admits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/api/attention.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit {

struct BenchOptions {
  int warmup = 10;
  int repetitions = 50;
  int input_sets = 0;  // 0: enough sets to exceed 4x the GPU's L2 cache (at most 8)
  int documents = 3;   // int tensors (document ids) are split into this many equal documents
  // Forward of a mask that reads tensors: the tile classes built once (Kernel::build_block_mask)
  // and passed to every timed call, as FlexAttention's create_block_mask is used, instead of the
  // block-mask kernel before each call. No effect on other masks.
  bool prebuilt_block_mask = false;
  BenchOptions& with_repetitions(int r) {
    repetitions = r;
    return *this;
  }
  void validate() const;
};

struct BenchResult {
  std::string variant;
  ForwardProblem problem;
  int head_dim = 0;
  std::string dtype;
  std::string template_name;     // the kernel template ("fwd_sm80")
  std::string schedule;          // its knobs, Knobs::str()
  std::string pass = "forward";  // or "backward", "backward deterministic"
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double density = 1.0;      // admitted (q, kv) pairs / all pairs
  double tflops = 0;         // 4 * pairs * D / time, admitted pairs only
  double bandwidth_gbs = 0;  // Q, K, V read once and O written once, over the median time
  int input_sets = 0;
  // One JSON object on one line (the fields above, problem flattened); a pure function of the
  // result, so it needs no GPU.
  std::string json() const;
  std::string csv() const;  // one line, the columns of csv_header()
  static std::string csv_header();
};

// The keys in use per sequence that `ForwardBenchmark::time_kv_cache` (`attnjit bench
// --kv-lens`) takes: one per sequence of `problem`, each in 0..Sk; a UserError naming the bad
// count or length otherwise.
void check_kv_cache_lengths(const std::vector<int>& seq_lens, const ForwardProblem& problem);

// Fraction of (b, h, q, kv) pairs the mask admits; exact via tile classes and per-element
// evaluation of partial tiles, or estimated from evenly spaced query rows when exact
// counting would evaluate more than `max_evaluations` elements.
double mask_density(const Variant& variant, const ForwardProblem& problem, const Bindings& bindings,
                    std::int64_t max_evaluations = 50'000'000);

// Input sets allocated and filled once for one variant, dtype, head dim and problem; `time`
// then measures any kernel compiled for them (the autotuner's candidates share one set).
class ForwardBenchmark {
 public:
  ForwardBenchmark(const Variant& variant, ElementType dtype, int head_dim, const ForwardProblem& problem,
                   const Bindings& scalars, const BenchOptions& bench = {});
  ~ForwardBenchmark();
  ForwardBenchmark(const ForwardBenchmark&) = delete;
  ForwardBenchmark& operator=(const ForwardBenchmark&) = delete;
  // Warm-up, then the median of the timed launches. RuntimeFailure if a launch fails.
  BenchResult time(const Kernel& kernel);
  // The same for Kernel::backward (after one forward per input set for O and LSE); the
  // throughput counts 2.5x the forward's FLOPs (five matrix products instead of two).
  // `tensor_gradients`: captured tensors whose gradient is computed too (fp32 buffers here).
  BenchResult time_backward(const Kernel& kernel, const BackwardOptions& options,
                            const std::vector<std::string>& tensor_gradients = {});
  // Kernel::forward_kv_cache on the same K and V with every sequence at seq_k keys: a
  // contiguous cache (page_size 0), or K and V read as pages of `page_size` keys
  // [B * seq_k / page_size, page_size, Hkv, D] in a shuffled block table (the values in a page
  // do not matter to the time). Needs seq_q <= 16.
  // `seq_lens` (B entries, each at most Sk; empty: every sequence at Sk): keys in use per
  // sequence; GB/s then count the K and V bytes of those lengths.
  BenchResult time_kv_cache(const Kernel& kernel, int page_size, const std::vector<int>& seq_lens = {});
  // Kernel::forward_ragged on a packed batch of `lengths.size()` (= batch) prefill sequences,
  // sequence b with lengths[b] queries and keys (each at most seq_q and seq_k), in views of the
  // same buffers. TFLOP/s count each sequence's admitted pairs; set beside time() of the
  // padded batch, that is the cost of ragged packing per admitted pair.
  BenchResult time_ragged(const Kernel& kernel, const std::vector<int>& lengths);

 private:
  BenchResult result_of(const Kernel& kernel, const std::vector<double>& sorted_times);
  struct State;
  std::unique_ptr<State> state_;
};

// compile + ForwardBenchmark::time_backward: the forward with the template's default knobs,
// the backward with `options`' template and knobs.
BenchResult benchmark_backward(const Variant& variant, const CompileOptions& options, const ForwardProblem& problem,
                               const Bindings& scalars, bool deterministic,
                               const std::vector<std::string>& tensor_gradients = {}, const BenchOptions& bench = {});

// compile + ForwardBenchmark::time.
BenchResult benchmark_forward(const Variant& variant, const CompileOptions& options, const ForwardProblem& problem,
                              const Bindings& scalars, const BenchOptions& bench = {});

}  // namespace attnjit
