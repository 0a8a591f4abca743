// Kernel::backward (see attention.hpp): the backward unit, built and loaded on first use per
// template and knobs (without knobs: those `attnjit tune --backward` stored for the shape the
// kernel was compiled for, else the template's defaults); the argument checks; the
// captured-tensor gradient accumulators; the launch plan (preprocess, main kernel, postprocess).
#include <fmt/format.h>

#include <cstdlib>
#include <string>

#include "runtime/api/attention.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/api/kernel_internals.hpp"

namespace attnjit {

using namespace detail;

namespace {

// The backward template a call names, else ATTNJIT_BACKWARD_TEMPLATE's (e.g. bwd_sm80 on a
// Hopper GPU, where bwd_sm90 comes first), else none: the registry picks.
std::string backward_template_name(const BackwardOptions& options) {
  if (!options.template_name.empty()) return options.template_name;
  const char* env = std::getenv("ATTNJIT_BACKWARD_TEMPLATE");
  return env != nullptr ? env : "";
}

const KernelState::ExtraUnit& backward_unit(const KernelState& st, const BackwardOptions& options) {
  const std::string template_name = backward_template_name(options);
  std::lock_guard<std::mutex> lock(st.backward_mutex);
  auto& unit = st.backward_units[template_name + "|" + options.knobs.str()];
  if (!unit) {
    CompileOptions co = st.options;
    co.role = TemplateRole::Backward;
    co.arch = st.prepared->config.arch;
    co.template_name = template_name;
    co.knobs = options.knobs;  // none: the tuning database's for the kernel's shape hint, else the defaults
    co.cache = st.cache;
    const runtime::DeviceContext& context = device_context(st.device);
    context.make_current();
    auto prepared = std::make_shared<const PreparedKernel>(prepare(st.variant, co));
    const int limit = context.properties().max_shared_memory_per_block_optin;
    if (prepared->unit.max_dynamic_shared_bytes > limit)
      throw UserError(
          fmt::format("backward template {} with knobs {} needs {} bytes of shared memory; device {} "
                      "allows {}. Use a smaller block_m or fewer warps",
                      prepared->config.template_name, prepared->config.knobs.str(),
                      prepared->unit.max_dynamic_shared_bytes, st.device, limit));
    auto loaded = std::make_unique<LoadedUnit>(*prepared->cached.cubin, prepared->unit, limit);
    unit = std::make_unique<KernelState::ExtraUnit>(KernelState::ExtraUnit{prepared, std::move(loaded)});
  }
  return *unit;
}

// The fp32 output for the gradient of captured tensor `name`, checked against the bound tensor.
void check_tensor_gradient(const std::string& name, const DLTensor& gradient, const DLTensor& bound, int device) {
  if (gradient.device.device_type != kDLCUDA)
    throw UserError(fmt::format("the gradient of tensor '{}' must be in CUDA device memory", name));
  check_same_device(gradient, "gradient of '" + name + "'", device);
  if (gradient.dtype.code != kDLFloat || gradient.dtype.bits != 32 || gradient.dtype.lanes != 1)
    throw UserError(fmt::format("the gradient of tensor '{}' must be f32 (gradients are returned in fp32); got {}",
                                name, dlpack_dtype_name(gradient.dtype)));
  if (dlpack_shape(gradient) != dlpack_shape(bound))
    throw UserError(fmt::format("the gradient of tensor '{}' has shape {}; the tensor bound has shape {}", name,
                                shape_string(dlpack_shape(gradient)), shape_string(dlpack_shape(bound))));
}

}  // namespace

const PreparedKernel& Kernel::prepared_backward(const BackwardOptions& options) const {
  state_->require_gpu_unit("prepared_backward()");
  return *backward_unit(*state_, options).prepared;
}

void Kernel::backward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor& lse,
                      const DLTensor& d_out, const DLTensor& dq, const DLTensor& dk, const DLTensor& dv,
                      const Bindings& bindings, void* stream, const BackwardOptions& options) const {
  const KernelState& st = *state_;
  st.require_gpu_unit("backward (the CPU backend has no backward yet)");
  const ElementType dtype = st.prepared->config.dtype;
  const int head_dim = st.prepared->config.head_dim;
  const int device = st.device;
  st.report_recorded_read();
  check_4d(o, "o", dtype, device);
  AttnjitBwdArgs bargs{};
  bargs.fwd = attention_arguments(q, k, v, o, &lse, dtype, head_dim, device, options.softmax_scale);
  check_4d(d_out, "d_out", dtype, device);
  check_4d(dq, "dq", dtype, device);
  check_4d(dk, "dk", dtype, device);
  check_4d(dv, "dv", dtype, device);
  const auto qs = dlpack_shape(q), ks = dlpack_shape(k);
  for (const auto& [tensor, name, want] : {std::tuple{&d_out, "d_out", qs}, std::tuple{&dq, "dq", qs},
                                           std::tuple{&dk, "dk", ks}, std::tuple{&dv, "dv", ks}})
    if (dlpack_shape(*tensor) != want)
      throw UserError(fmt::format("{} has shape {}; expected {} (like {})", name, shape_string(dlpack_shape(*tensor)),
                                  shape_string(want), want == qs ? "q" : "k"));
  check_bindings(st.variant, bindings);

  const KernelState::ExtraUnit& unit = backward_unit(st, options);
  const PreparedKernel& p = *unit.prepared;
  bind_variant_arguments(p.unit.slots, bindings, bargs.fwd, device);
  bargs.d_out = static_cast<const char*>(d_out.data) + d_out.byte_offset;
  bargs.dq = static_cast<char*>(dq.data) + dq.byte_offset;
  bargs.dk = static_cast<char*>(dk.data) + dk.byte_offset;
  bargs.dv = static_cast<char*>(dv.data) + dv.byte_offset;
  copy_strides(d_out, bargs.d_out_stride);
  copy_strides(dq, bargs.dq_stride);
  copy_strides(dk, bargs.dk_stride);
  copy_strides(dv, bargs.dv_stride);
  bargs.deterministic = options.deterministic ? 1 : 0;

  // Captured-tensor gradients: an 8-byte accumulator element per tensor element, after the
  // plan's workspace; only the tensors asked for accumulate (the hook skips the others).
  const ProblemShape problem{bargs.fwd.batch, bargs.fwd.heads_q, bargs.fwd.heads_kv, bargs.fwd.seq_q, bargs.fwd.seq_k};
  const LaunchPlan plan = p.launch_plan(problem);
  std::size_t bytes = (plan.workspace_bytes + 255) / 256 * 256;
  std::vector<std::pair<std::size_t, std::size_t>> accumulators;  // (slot, byte offset)
  for (const auto& [name, gradient] : options.tensor_gradients) {
    const auto& readable = p.unit.tensor_gradients;
    if (std::find(readable.begin(), readable.end(), name) == readable.end())
      throw UserError(fmt::format("variant '{}' has no gradient for tensor '{}': {}", st.variant.name(), name,
                                  readable.empty()
                                      ? std::string("its score_mod reads no float tensor")
                                      : fmt::format("the tensors with a gradient are {}", fmt::join(readable, ", "))));
    const DLTensor& bound = bindings.tensors().at(name);
    check_tensor_gradient(name, gradient, bound, device);
    std::size_t slot = 0;
    while (p.unit.slots.tensors[slot].name != name) ++slot;
    const auto strides = dlpack_strides(gradient);
    bargs.tensor_grad[slot] = reinterpret_cast<float*>(static_cast<char*>(gradient.data) + gradient.byte_offset);
    for (std::size_t d = 0; d < strides.size(); ++d) bargs.tensor_grad_stride[slot][d] = strides[d];
    // The output gate's gradient is written by the preprocess directly, with no accumulator.
    if (st.variant.output_gate() && st.variant.output_gate()->tensor == name) continue;
    std::int64_t numel = 1;
    for (auto extent : dlpack_shape(bound)) numel *= extent;
    bargs.tensor_grad_numel[slot] = numel;
    accumulators.emplace_back(slot, bytes);
    bytes += (static_cast<std::size_t>(numel) * 8 + 255) / 256 * 256;
  }

  device_context(device).make_current();
  std::lock_guard<std::mutex> lock(st.scratch_mutex);
  const std::uint64_t base = st.scratch_for(stream, bytes);
  plan.bind_workspace(bargs.fwd, base);
  for (const auto& [slot, offset] : accumulators)
    bargs.tensor_grad_accum[slot] = reinterpret_cast<void*>(base + offset);
  for (const auto& launch : plan.kernels) st.launch(*unit.loaded, launch, &bargs, stream);
}

}  // namespace attnjit
