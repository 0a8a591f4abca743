// Kernel::forward_ragged: packed sequences with cumulative lengths, run by fwd_sm80's ragged
// unit (templates/fwd_sm80.cuh with AJ_RAGGED 1), or by fwd_sm90's (templates/fwd_sm90.cuh with
// AJ_RAGGED 1) for a kernel compiled for fwd_sm90 (ATTNJIT_RAGGED_SM90=0 in the environment
// opts out, to fwd_sm80's).
#include <fmt/format.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/api/kernel_internals.hpp"
#include "templates/fwd_sm80/fwd_sm80_template.hpp"
#include "templates/fwd_sm90/fwd_sm90_template.hpp"

namespace attnjit {

using namespace detail;

namespace {

// A packed [tokens, heads, D] tensor viewed as [1, heads, tokens, D], the layout the forward
// checks take; `shape` and `strides` hold the view's arrays.
DLTensor token_view(const DLTensor& t, const char* name, std::int64_t (&shape)[4], std::int64_t (&strides)[4]) {
  if (t.ndim != 3)
    throw UserError(fmt::format("ragged tensor {} has rank {} (shape {}); expected 3: [tokens, heads, head_dim]", name,
                                t.ndim, shape_string(dlpack_shape(t))));
  const auto s = dlpack_strides(t);
  shape[0] = 1, shape[1] = t.shape[1], shape[2] = t.shape[0], shape[3] = t.shape[2];
  strides[0] = s[0] * t.shape[0], strides[1] = s[1], strides[2] = s[0], strides[3] = s[2];
  DLTensor view = t;
  view.ndim = 4;
  view.shape = shape;
  view.strides = strides;
  return view;
}

const int* cumulative_lengths(const DLTensor& t, const char* name, std::int64_t batch, int device) {
  if (t.device.device_type != kDLCUDA)
    throw UserError(fmt::format("{} is not in CUDA device memory; move it to the GPU", name));
  check_same_device(t, name, device);
  if (t.dtype.code != kDLInt || t.dtype.bits != 32 || t.dtype.lanes != 1 || t.ndim != 1 || t.shape[0] != batch + 1 ||
      dlpack_strides(t)[0] != 1)
    throw UserError(fmt::format("{} must be a contiguous int32 tensor of {} entries (batch + 1); got {} of shape {}",
                                name, batch + 1, dlpack_dtype_name(t.dtype), shape_string(dlpack_shape(t))));
  return reinterpret_cast<const int*>(static_cast<const char*>(t.data) + t.byte_offset);
}

// The template whose ragged unit runs first: the compiled kernel's fwd_sm90 unless opted out of
// (ATTNJIT_RAGGED_SM90=0), else fwd_sm80.
bool ragged_on_hopper(const PreparedKernel& compiled) {
  const char* opt_out = std::getenv("ATTNJIT_RAGGED_SM90");
  return compiled.config.template_name == kFwdSm90TemplateName && !(opt_out != nullptr && std::string(opt_out) == "0");
}

}  // namespace

void Kernel::forward_ragged(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o,
                            const DLTensor* lse, const RaggedBatch& batch, const Bindings& bindings, void* stream,
                            double softmax_scale) const {
  state_->require_gpu_unit("forward_ragged");
  const PreparedKernel& p = *state_->prepared;
  const int device = state_->device;
  state_->report_recorded_read();
  std::int64_t shapes[4][4], strides[4][4];
  const DLTensor q4 = token_view(q, "q", shapes[0], strides[0]), k4 = token_view(k, "k", shapes[1], strides[1]);
  const DLTensor v4 = token_view(v, "v", shapes[2], strides[2]), o4 = token_view(o, "o", shapes[3], strides[3]);
  check_4d(o4, "o", p.config.dtype, device);
  AttnjitFwdArgs args =
      attention_arguments(q4, k4, v4, o4, nullptr, p.config.dtype, p.config.head_dim, device, softmax_scale);
  const std::int64_t sequences = batch.cu_seqlens_q.ndim == 1 ? batch.cu_seqlens_q.shape[0] - 1 : 0;
  if (sequences < 1 || sequences > 65535)
    throw UserError(fmt::format("cu_seqlens_q must hold batch + 1 entries for 1 to 65535 sequences; got shape {}",
                                shape_string(dlpack_shape(batch.cu_seqlens_q))));
  args.cu_seqlens_q = cumulative_lengths(batch.cu_seqlens_q, "cu_seqlens_q", sequences, device);
  args.cu_seqlens_k = cumulative_lengths(batch.cu_seqlens_k, "cu_seqlens_k", sequences, device);
  if (batch.max_seqlen_q < 1 || batch.max_seqlen_q > q.shape[0] || batch.max_seqlen_k < 1 ||
      batch.max_seqlen_k > k.shape[0])
    throw UserError(fmt::format("max_seqlen_q {} and max_seqlen_k {} must be in [1, total tokens] ({} and {})",
                                batch.max_seqlen_q, batch.max_seqlen_k, q.shape[0], k.shape[0]));
  args.total_q = static_cast<int>(q.shape[0]);
  args.batch = static_cast<int>(sequences);
  args.seq_q = batch.max_seqlen_q;
  args.seq_k = batch.max_seqlen_k;
  args.q_stride[0] = args.k_stride[0] = args.v_stride[0] = args.o_stride[0] = 0;  // the offsets come per sequence
  if (lse) {
    const std::vector<std::int64_t> want = {q.shape[1], q.shape[0]};
    if (lse->device.device_type != kDLCUDA || lse->dtype.code != kDLFloat || lse->dtype.bits != 32 ||
        lse->dtype.lanes != 1 || dlpack_shape(*lse) != want ||
        dlpack_strides(*lse) != std::vector<std::int64_t>{q.shape[0], 1})
      throw UserError(fmt::format("lse must be a contiguous f32 CUDA tensor of shape {}; got {} {}", shape_string(want),
                                  dlpack_dtype_name(lse->dtype), shape_string(dlpack_shape(*lse))));
    check_same_device(*lse, "lse", device);
    args.lse = reinterpret_cast<float*>(static_cast<char*>(lse->data) + lse->byte_offset);
  }
  check_bindings(state_->variant, bindings);
  bind_variant_arguments(p.unit.slots, bindings, args, device);

  const ProblemShape problem = state_->bound_problem(
      args, bindings,
      fmt::format("bind tensors that cover sequences of {} queries and {} keys", args.seq_q, args.seq_k));
  args.total_k = static_cast<int>(k.shape[0]);
  if (ragged_on_hopper(p)) {
    // fwd_sm90's unit where it serves the variant and the TMA can read the tensors; else fwd_sm80's.
    if (const KernelState::ExtraUnit* hopper = state_->forward_unit(kFwdSm90TemplateName, problem, /*ragged=*/true))
      if (state_->run_plan(*hopper->prepared, *hopper->loaded, args, problem, stream, nullptr).empty()) return;
  }
  const KernelState::ExtraUnit* unit = state_->forward_unit(kFallbackForwardTemplate, problem, /*ragged=*/true);
  if (unit == nullptr)
    throw UserError(
        fmt::format("variant '{}' at head_dim {}: ragged batches are not served for it (fwd_sm80 declines "
                    "it; see `attnjit templates`)",
                    state_->variant.name(), p.config.head_dim));
  const std::string declined = state_->run_plan(*unit->prepared, *unit->loaded, args, problem, stream, nullptr);
  if (!declined.empty()) throw UserError(fmt::format("forward_ragged: {}", declined));
}

const PreparedKernel* Kernel::prepared_ragged() const {
  state_->require_gpu_unit("prepared_ragged()");
  if (ragged_on_hopper(*state_->prepared))
    if (const KernelState::ExtraUnit* hopper = state_->built_forward_unit(kFwdSm90TemplateName, /*ragged=*/true))
      return hopper->prepared.get();
  const KernelState::ExtraUnit* unit = state_->built_forward_unit(kFallbackForwardTemplate, /*ragged=*/true);
  return unit ? unit->prepared.get() : nullptr;
}

}  // namespace attnjit
