// Runs a compiled kernel's backward on random inputs and judges every gradient against the
// CPU reference backward by FlashAttention's rule: per output (dQ, dK, dV and each captured
// tensor gradient asked for), the kernel's max error against the fp64 reference must be at
// most twice the error of a naive backward in the same precision
// (runtime/reference/reference_backward.hpp, ReferenceOptions::naive), plus a small absolute
// floor. Used by `attnjit check --backward` and by the GPU tests.
//
// One check: fresh random Q, K, V, dO and captured tensors (the shapes of check_forward),
// Kernel::forward for O and LSE, then Kernel::backward with every output poisoned with NaN
// bytes first (an element it does not write cannot pass). The fp64 reference and the naive
// emulation run on the same (rounded) inputs, every row (the backward needs them all: keep
// B * Hq * Sq * Sk * D to a few 10^9, e.g. Hq = 4, 1000 x 1537, D = 128). Rows with no
// admissible key (the variant's mask, e.g. bottom-right causal with Sq > Sk) must get
// exactly zero dQ. With `runs` > 1 the backward runs again on the same inputs and the bytes
// of every output are compared (the deterministic mode must be bit-identical).
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/api/attention.hpp"
#include "runtime/reference/forward_check.hpp"
#include "runtime/reference/reference_backward.hpp"

namespace attnjit {

// The floor of the 2x rule, as the forward's: it only matters where the naive error is ~0.
inline constexpr double kGradientErrorFloor = 1e-6;

// How check_backward runs the kernel's backward.
struct BackwardCheckOptions {
  bool deterministic = false;                 // BackwardOptions::deterministic
  int runs = 1;                               // backward launches compared byte for byte (>= 1)
  std::vector<std::string> tensor_gradients;  // captured tensors whose gradient is asked for and checked
  double softmax_scale = 0.0;                 // forward and backward; 0 means 1/sqrt(head_dim)
  std::string template_name;                  // BackwardOptions::template_name
  Knobs knobs;                                // BackwardOptions::knobs
  double absolute_floor = kGradientErrorFloor;

  BackwardCheckOptions& with_deterministic(bool v) {
    deterministic = v;
    return *this;
  }
  BackwardCheckOptions& with_runs(int n) {
    runs = n;
    return *this;
  }
  BackwardCheckOptions& with_tensor_gradient(const std::string& name) {
    tensor_gradients.push_back(name);
    return *this;
  }
  // Every captured tensor with a gradient (differentiable_tensors).
  BackwardCheckOptions& with_all_tensor_gradients(const Variant& variant);
  BackwardCheckOptions& with_softmax_scale(double v) {
    softmax_scale = v;
    return *this;
  }
  BackwardCheckOptions& with_template(std::string name) {
    template_name = std::move(name);
    return *this;
  }
  BackwardCheckOptions& with_knobs(const Knobs& v) {
    knobs = v;
    return *this;
  }

  // UserError for runs < 1, a negative floor, or a tensor name without a gradient in this
  // variant (naming the ones that have one). Needs no GPU.
  void validate(const Variant& variant) const;
};

// The captured float tensors score_mod reads and the output gate's tensor, sorted: the ones
// with a gradient.
std::vector<std::string> differentiable_tensors(const Variant& variant);

// One output's judgement.
struct GradientCheck {
  std::string name;               // "dq", "dk", "dv", or "d<tensor>"
  double max_error = 0;           // max |kernel - fp64 reference| over the finite elements
  double naive_error = 0;         // max |naive - fp64 reference| over the same elements
  double largest = 0;             // max |fp64 reference|: the gradient's own scale
  std::int64_t bad_elements = 0;  // NaN / infinite / unwritten, or nonzero where it must be 0
  bool pass = false;              // bad_elements == 0 && max_error <= 2 * naive_error + floor

  double ratio() const { return naive_error > 0 ? max_error / naive_error : 0.0; }
  std::string summary() const;  // "dq max_err=... naive_err=... ratio=... PASS"
};

struct BackwardCheckResult {
  std::vector<GradientCheck> gradients;  // dq, dk, dv, then the tensor gradients by name
  std::int64_t fully_masked_rows = 0;    // of B * Hq * Sq
  int runs = 1;
  bool deterministic = false;
  // runs > 1: every output was byte-identical in every run. Required when deterministic.
  bool deterministic_identical = true;
  bool pass = false;

  // The check of output `name` ("dq", "dk", "dv", "d<tensor>"); InternalError when absent.
  const GradientCheck& at(const std::string& name) const;
  std::string summary() const;
};

// Compiles (the default forward; the backward unit, of the template and knobs in `options` unless
// `check` names them, is built on first use) and checks.
BackwardCheckResult check_backward(const Variant& variant, const CompileOptions& options, const ForwardProblem& problem,
                                   const Bindings& scalars, std::uint64_t seed, const BackwardCheckOptions& check = {});
// The same check of an already compiled kernel. Needs a GPU (RuntimeFailure without one).
BackwardCheckResult check_backward(const Kernel& kernel, const ForwardProblem& problem, const Bindings& scalars,
                                   std::uint64_t seed, const BackwardCheckOptions& check = {});

// The judgement on host arrays, so that it runs (and is tested) without a GPU.
// compare_gradient: `got` is a host tensor (f16, bf16, f32 or f64, any rank and strides);
// `ref` and `naive` are contiguous in its shape (row-major). Elements whose contiguous index
// is in `must_be_zero` (sorted) count as bad unless exactly 0. A UserError when the sizes
// disagree.
GradientCheck compare_gradient(const std::string& name, const DLTensor& got, const std::vector<double>& ref,
                               const std::vector<double>& naive, double absolute_floor = kGradientErrorFloor,
                               const std::vector<std::int64_t>& must_be_zero = {});

// The kernel's gradients as host tensors, for compare_backward.
struct HostGradients {
  const DLTensor* dq = nullptr;
  const DLTensor* dk = nullptr;
  const DLTensor* dv = nullptr;
  std::map<std::string, const DLTensor*> tensors;  // by captured tensor name
};

// Every output of `got` against `ref` and `naive` (same inputs; naive with
// ReferenceOptions::naive). `fully_masked` is per (b, h) pair as fully_masked_rows gives it:
// their dQ rows must be exactly 0. Passes when every gradient passes (check_backward then
// records the runs and also requires identical runs in the deterministic mode). A UserError
// when a tensor gradient of `got` has no reference.
BackwardCheckResult compare_backward(const HostGradients& got, const ReferenceGradients& ref,
                                     const ReferenceGradients& naive, const std::vector<std::vector<int>>& fully_masked,
                                     double absolute_floor = kGradientErrorFloor);

// Prints one line: "[ result ] <label> <problem>: <summary>", as the GPU tests do.
void print_backward_result(const std::string& label, const ForwardProblem& problem, const BackwardCheckResult& r);

}  // namespace attnjit
