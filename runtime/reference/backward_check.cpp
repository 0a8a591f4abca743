// Backward-kernel correctness check against the CPU reference backward (see backward_check.hpp).
#include "runtime/reference/backward_check.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <set>

#include "compiler/error.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/check_tensors.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {

using check_internal::MirroredTensor;

std::vector<std::string> differentiable_tensors(const Variant& variant) {
  std::set<std::string> names;
  for (const auto& n : ir::topological_order({variant.score_mod().node()}))
    if (n->op == ir::Op::TensorRead && n->type == ir::Type::Float) names.insert(n->name);
  if (const auto& gate = variant.output_gate()) names.insert(gate->tensor);  // the gate's own gradient
  return {names.begin(), names.end()};
}

BackwardCheckOptions& BackwardCheckOptions::with_all_tensor_gradients(const Variant& variant) {
  tensor_gradients = differentiable_tensors(variant);
  return *this;
}

void BackwardCheckOptions::validate(const Variant& variant) const {
  if (runs < 1)
    throw UserError(
        fmt::format("backward check runs = {}; allowed: 1 or more (3 to test the deterministic mode)", runs));
  if (!(absolute_floor >= 0.0))
    throw UserError(fmt::format("backward check absolute_floor = {}; allowed: 0 or more", absolute_floor));
  const auto readable = differentiable_tensors(variant);
  std::set<std::string> seen;
  for (const auto& name : tensor_gradients) {
    if (std::find(readable.begin(), readable.end(), name) == readable.end())
      throw UserError(fmt::format(
          "variant '{}' has no gradient for tensor '{}': {}", variant.name(), name,
          readable.empty()
              ? std::string("its score_mod reads no float tensor; ask for no tensor gradient")
              : fmt::format("the tensors with a gradient are {}; ask for one of them", fmt::join(readable, ", "))));
    if (!seen.insert(name).second)
      throw UserError(fmt::format("tensor gradient '{}' is asked for twice; name each tensor once", name));
  }
}

std::string GradientCheck::summary() const {
  return fmt::format("{} max_err={:.3e} naive_err={:.3e} ratio={:.2f}{} {}", name, max_error, naive_error, ratio(),
                     bad_elements ? fmt::format(" bad={}", bad_elements) : std::string(), pass ? "PASS" : "FAIL");
}

const GradientCheck& BackwardCheckResult::at(const std::string& name) const {
  for (const auto& g : gradients)
    if (g.name == name) return g;
  throw InternalError(fmt::format("backward check has no output '{}'", name));
}

std::string BackwardCheckResult::summary() const {
  std::vector<std::string> parts;
  for (const auto& g : gradients) parts.push_back(g.summary());
  std::string runs_text;
  if (runs > 1)
    runs_text = fmt::format(" {} over {} runs{}", deterministic_identical ? "identical" : "NOT identical", runs,
                            deterministic ? " (deterministic)" : "");
  return fmt::format("{}; masked_rows={}{} {}", fmt::join(parts, "; "), fully_masked_rows, runs_text,
                     pass ? "PASS" : "FAIL");
}

GradientCheck compare_gradient(const std::string& name, const DLTensor& got, const std::vector<double>& ref,
                               const std::vector<double>& naive, double absolute_floor,
                               const std::vector<std::int64_t>& must_be_zero) {
  const auto shape = dlpack_shape(got), strides = dlpack_strides(got);
  std::int64_t numel = 1;
  for (auto e : shape) numel *= e;
  if (ref.size() != static_cast<std::size_t>(numel) || naive.size() != ref.size())
    throw UserError(fmt::format("gradient {} has shape {} ({} elements); the reference has {} and the naive run {}",
                                name, shape_string(shape), numel, ref.size(), naive.size()));
  GradientCheck r;
  r.name = name;
  std::vector<std::int64_t> index(shape.size(), 0);  // row-major position of element i
  auto zero = must_be_zero.begin();
  for (std::int64_t i = 0; i < numel; ++i) {
    std::int64_t offset = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) offset += index[d] * strides[d];
    for (std::size_t d = shape.size(); d-- > 0;) {  // advance to element i + 1
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
    const double value = load_as_double(got, offset), want = ref[static_cast<std::size_t>(i)];
    while (zero != must_be_zero.end() && *zero < i) ++zero;
    const bool must_be_0 = zero != must_be_zero.end() && *zero == i;
    r.largest = std::max(r.largest, std::fabs(want));
    if (!std::isfinite(value) || (must_be_0 && value != 0.0)) {
      ++r.bad_elements;
      continue;
    }
    r.max_error = std::max(r.max_error, std::fabs(value - want));
    r.naive_error = std::max(r.naive_error, std::fabs(naive[static_cast<std::size_t>(i)] - want));
  }
  r.pass = r.bad_elements == 0 && r.max_error <= 2.0 * r.naive_error + absolute_floor;
  return r;
}

BackwardCheckResult compare_backward(const HostGradients& got, const ReferenceGradients& ref,
                                     const ReferenceGradients& naive, const std::vector<std::vector<int>>& fully_masked,
                                     double absolute_floor) {
  if (!got.dq || !got.dk || !got.dv) throw UserError("compare_backward needs dq, dk and dv");
  BackwardCheckResult r;
  // dQ of a row that sees no key is exactly zero.
  const auto dq_shape = dlpack_shape(*got.dq);
  if (dq_shape.size() != 4) throw UserError(fmt::format("dq has shape {}; expected rank 4", shape_string(dq_shape)));
  const std::int64_t seq_q = dq_shape[2], dim = dq_shape[3];
  std::vector<std::int64_t> zero_dq;
  for (std::size_t pair = 0; pair < fully_masked.size(); ++pair)
    for (const int row : fully_masked[pair]) {
      ++r.fully_masked_rows;
      for (std::int64_t d = 0; d < dim; ++d)
        zero_dq.push_back((static_cast<std::int64_t>(pair) * seq_q + row) * dim + d);
    }
  std::sort(zero_dq.begin(), zero_dq.end());
  r.gradients.push_back(compare_gradient("dq", *got.dq, ref.dq, naive.dq, absolute_floor, zero_dq));
  r.gradients.push_back(compare_gradient("dk", *got.dk, ref.dk, naive.dk, absolute_floor));
  r.gradients.push_back(compare_gradient("dv", *got.dv, ref.dv, naive.dv, absolute_floor));
  for (const auto& [name, tensor] : got.tensors) {
    const auto want = ref.tensors.find(name), low = naive.tensors.find(name);
    if (want == ref.tensors.end() || low == naive.tensors.end())
      throw UserError(fmt::format("the reference has no gradient for tensor '{}'", name));
    r.gradients.push_back(compare_gradient("d" + name, *tensor, want->second, low->second, absolute_floor));
  }
  r.pass = std::all_of(r.gradients.begin(), r.gradients.end(), [](const GradientCheck& g) { return g.pass; });
  return r;
}

BackwardCheckResult check_backward(const Variant& variant, const CompileOptions& options, const ForwardProblem& problem,
                                   const Bindings& scalars, std::uint64_t seed, const BackwardCheckOptions& check) {
  check.validate(variant);  // before the GPU is touched
  // The template and knobs in `options` choose the backward (as `attnjit bench --backward`); the
  // forward that produces O and LSE is the default one.
  BackwardCheckOptions backward = check;
  if (backward.template_name.empty()) backward.template_name = options.template_name;
  if (backward.knobs.empty()) backward.knobs = options.knobs;
  CompileOptions forward = options;
  forward.with_role(TemplateRole::Forward);
  forward.template_name.clear();
  forward.knobs = Knobs();
  return check_backward(compile(variant, forward), problem, scalars, seed, backward);
}

BackwardCheckResult check_backward(const Kernel& kernel, const ForwardProblem& p, const Bindings& scalars,
                                   std::uint64_t seed, const BackwardCheckOptions& check) {
  const Variant& variant = kernel.variant();
  check.validate(variant);
  const KernelConfig& config = kernel.prepared().config;
  const int dim = config.head_dim;
  const DLDataType dtype = config.dtype == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  std::mt19937_64 rng(seed);

  MirroredTensor q(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor k(dtype, {p.batch, p.heads_kv, p.seq_k, dim});
  MirroredTensor v(dtype, {p.batch, p.heads_kv, p.seq_k, dim});
  MirroredTensor o(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor lse(dlpack_float32(), {p.batch, p.heads_q, p.seq_q});
  MirroredTensor d_out(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor dq(dtype, {p.batch, p.heads_q, p.seq_q, dim});
  MirroredTensor dk(dtype, {p.batch, p.heads_kv, p.seq_k, dim});
  MirroredTensor dv(dtype, {p.batch, p.heads_kv, p.seq_k, dim});
  if (p.bshd_layout)
    for (MirroredTensor* t : {&q, &k, &v, &o, &d_out, &dq, &dk, &dv}) t->use_bshd_strides();
  for (MirroredTensor* t : {&q, &k, &v, &d_out}) {
    check_internal::fill_normal(t->host, rng);
    t->upload();
  }
  const check_internal::CapturedTensors captured = check_internal::make_captured_tensors(variant, p, scalars, dim, rng);

  o.poison();
  lse.poison();
  kernel.forward(q.device_view, k.device_view, v.device_view, o.device_view, &lse.device_view, captured.device, nullptr,
                 check.softmax_scale);
  kernel.synchronize();

  BackwardOptions options;
  options.with_deterministic(check.deterministic).with_knobs(check.knobs);
  options.softmax_scale = check.softmax_scale;
  options.template_name = check.template_name;
  std::map<std::string, std::unique_ptr<MirroredTensor>> gradients;
  for (const auto& name : check.tensor_gradients) {
    auto g = std::make_unique<MirroredTensor>(dlpack_float32(), captured.tensors.at(name)->shape);
    options.with_tensor_gradient(name, g->device_view);
    gradients[name] = std::move(g);
  }
  std::vector<MirroredTensor*> outputs = {&dq, &dk, &dv};
  for (auto& [name, g] : gradients) outputs.push_back(g.get());

  std::vector<std::vector<unsigned char>> first_run;
  bool identical = true;
  for (int run = 0; run < check.runs; ++run) {
    for (MirroredTensor* t : outputs) t->poison();
    kernel.backward(q.device_view, k.device_view, v.device_view, o.device_view, lse.device_view, d_out.device_view,
                    dq.device_view, dk.device_view, dv.device_view, captured.device, nullptr, options);
    kernel.synchronize();
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      MirroredTensor& t = *outputs[i];
      t.download();
      const auto* bytes = static_cast<const unsigned char*>(t.host.data());
      if (run == 0)
        first_run.emplace_back(bytes, bytes + t.host_bytes());
      else
        identical = identical && std::memcmp(first_run[i].data(), bytes, t.host_bytes()) == 0;
    }
  }

  const ReferenceOptions exact = ReferenceOptions().with_scale(check.softmax_scale);
  ReferenceGradients ref = reference_attention_backward(variant, q.host.dl(), k.host.dl(), v.host.dl(), d_out.host.dl(),
                                                        captured.host, exact);
  ReferenceOptions low = exact;
  low.with_naive_precision(config.dtype == ElementType::BF16 ? NaivePrecision::BF16 : NaivePrecision::FP16);
  ReferenceGradients naive =
      reference_attention_backward(variant, q.host.dl(), k.host.dl(), v.host.dl(), d_out.host.dl(), captured.host, low);
  // The output gate's gradient is judged like a captured tensor's (the backward template refuses
  // a gate tensor the score_mod also reads, so the two never add up).
  if (const auto& gate = variant.output_gate()) {
    ref.tensors[gate->tensor] = ref.d_gate;
    naive.tensors[gate->tensor] = naive.d_gate;
  }
  HostGradients got{&dq.host.dl(), &dk.host.dl(), &dv.host.dl(), {}};
  for (auto& [name, g] : gradients) got.tensors[name] = &g->host.dl();
  BackwardCheckResult r = compare_backward(
      got, ref, naive, fully_masked_rows(variant, q.host.dl(), k.host.dl(), captured.host), check.absolute_floor);
  r.runs = check.runs;
  r.deterministic = check.deterministic;
  r.deterministic_identical = identical;
  r.pass = r.pass && (!check.deterministic || identical);
  return r;
}

void print_backward_result(const std::string& label, const ForwardProblem& problem, const BackwardCheckResult& r) {
  std::printf("[ result ] %-22s %s: %s\n", label.c_str(), problem.str().c_str(), r.summary().c_str());
  std::fflush(stdout);
}

}  // namespace attnjit
