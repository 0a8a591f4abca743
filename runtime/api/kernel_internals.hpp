// Internals shared by the API's translation units (attention.cpp: compile and forward;
// backward.cpp): device contexts, argument checks and binding, loaded units and the state
// behind a Kernel. Not installed.
#pragma once

#include <dlpack/dlpack.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/api/attention.hpp"
#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/driver/kernel_trace.hpp"
#include "templates/abi.h"

namespace attnjit {
namespace detail {

double elapsed_ms(std::chrono::steady_clock::time_point start);
// One context per device ordinal, made on first use.
const runtime::DeviceContext& device_context(int ordinal);
std::string resolve_arch(const std::string& arch, int device);
runtime::NvrtcCompileOptions nvrtc_options(const std::string& arch);
// UserErrors naming the tensor: another device than the kernel's; not a 4-d CUDA tensor of
// the kernel's dtype with head_dim stride 1 and 16-byte aligned rows.
void check_same_device(const DLTensor& t, const std::string& name, int device);
void check_4d(const DLTensor& t, const char* name, ElementType dtype, int device);
void copy_strides(const DLTensor& t, long long (&out)[3]);
// q, k, v, o (and lse when given) checked against each other and the kernel; the forward
// argument block for them, without the variant's parameters and tensors.
AttnjitFwdArgs attention_arguments(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o,
                                   const DLTensor* lse, ElementType dtype, int head_dim, int device,
                                   double softmax_scale);
// Runtime parameters and captured tensors into their slots of the argument block.
void bind_variant_arguments(const ArgumentSlots& slots, const Bindings& bindings, AttnjitFwdArgs& args, int device);
// The derived runs tensor of a plan (LaunchPlan::runs_slot): its bytes, and its argument at `address`.
std::size_t runs_tensor_bytes(const AttnjitTensorArg& source);
void bind_runs_tensor(AttnjitFwdArgs& args, const LaunchPlan& plan, std::uint64_t address);

// A loaded unit's entry points by name.
struct LoadedUnit {
  std::unique_ptr<runtime::LoadedLibrary> library;
  std::map<std::string, std::unique_ptr<runtime::KernelFunction>> functions;

  // `optin_limit`: the device's opt-in shared memory per block. Each kernel may take the unit's
  // largest dynamic request, less what its own static shared memory leaves of that limit (a
  // plan's small kernels, such as the block mask's, have static shared memory and need less).
  LoadedUnit(const std::string& cubin, const GeneratedUnit& unit, int optin_limit) {
    library = std::make_unique<runtime::LoadedLibrary>(cubin);
    for (const auto& name : unit.kernel_names) {
      auto function = std::make_unique<runtime::KernelFunction>(library->kernel(name));
      const int static_bytes = function->attribute(CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
      function->set_max_dynamic_shared_memory(std::min(unit.max_dynamic_shared_bytes, optin_limit - static_bytes));
      functions[name] = std::move(function);
    }
  }
};

struct KernelState {
  Variant variant;
  CompileOptions options;  // as given to compile(): the backward unit is built from them
  int device = 0;
  std::shared_ptr<const PreparedKernel> prepared;
  runtime::KernelCache* cache = nullptr;
  std::unique_ptr<LoadedUnit> loaded;

  // The same unit with AJ_CHECK_READS on (templates/hooks.cuh), compiled through the cache
  // and loaded the first time a launch's captured-tensor reads cannot be proven in range.
  mutable std::mutex checked_mutex;
  mutable std::unique_ptr<LoadedUnit> checked;
  const LoadedUnit& checked_unit() const {
    std::lock_guard<std::mutex> lock(checked_mutex);
    if (!checked) {
      const PreparedKernel& p = *prepared;
      const std::string body =
          "#define AJ_CHECK_READS 1  // the checked twin (runtime/api/attention.cpp)\n" + p.unit.body;
      const auto nvrtc = nvrtc_options(p.config.arch);
      const auto result = cache->get_or_compile(
          runtime::CacheKeyInputs::for_compile(body, nvrtc),
          [&] { return runtime::CompiledKernel::from(runtime::compile_to_cubin(body, nvrtc)); },
          runtime::CacheEntryLabels{variant.text(), p.config.template_name + " " + p.config.knobs.str() + " checked"});
      checked = std::make_unique<LoadedUnit>(*result.cubin, p.unit,
                                             device_context(device).properties().max_shared_memory_per_block_optin);
    }
    return *checked;
  }

  // A unit beside the forward one, prepared and loaded on first use: the backward units by
  // template and knobs (runtime/api/backward.cpp), the split-K decode unit.
  struct ExtraUnit {
    std::shared_ptr<const PreparedKernel> prepared;
    std::unique_ptr<LoadedUnit> loaded;
  };
  mutable std::mutex backward_mutex;
  mutable std::map<std::string, std::unique_ptr<ExtraUnit>> backward_units;

  // Forward units of other templates than the compiled one, prepared and loaded on first use,
  // by template name: decode_sm80 for Sq <= kDecodeMaxSeqQ, fwd_sm80 for a call whose tensors
  // the compiled template's plan cannot take (strides a TMA descriptor cannot express). Null
  // when that template declines the variant or does not fit the device; decided once each.
  mutable std::mutex extra_forward_mutex;
  mutable std::map<std::string, std::unique_ptr<ExtraUnit>> extra_forward;  // null entry: declined
  // `ragged`: the template's unit for ragged batches (CompileOptions::ragged), kept apart.
  // `knobs`: knobs that override the template's defaults, a unit of their own.
  const ExtraUnit* forward_unit(const std::string& template_name, const ProblemShape& hint, bool ragged = false,
                                const Knobs& knobs = Knobs()) const;
  // That unit if an earlier forward_unit call built it, else null (never builds).
  const ExtraUnit* built_forward_unit(const std::string& template_name, bool ragged) const;
  static std::string forward_unit_key(const std::string& template_name, bool ragged, const Knobs& knobs = Knobs()) {
    return template_name + (ragged ? " ragged" : "") + (knobs.empty() ? "" : " " + knobs.str());
  }
  // The decode unit for a call of `hint`'s shape: the template's default (stream-K, whatever the
  // first call's batch), or a split-K unit beside it for a batch larger than stream-K takes.
  // Null when the template declines.
  const ExtraUnit* decode_unit(const ProblemShape& hint) const;

  // The CPU backend of the variant (runtime/cpu), built on the first forward with host tensors,
  // or by compile() where there is no GPU; then `prepared` and `loaded` stay null and
  // `no_gpu_reason` says why.
  mutable std::mutex cpu_mutex;
  mutable std::unique_ptr<CpuAttention> cpu;
  std::string no_gpu_reason;
  const CpuAttention& cpu_attention() const;
  // RuntimeFailure naming `what` when this Kernel has no CUDA unit (compiled without a GPU).
  void require_gpu_unit(const char* what) const;

  // The per-stream scratch of at least `bytes` (call with scratch_mutex held): a grown-out
  // buffer may still be read by queued work, so it is kept until the Kernel goes.
  std::uint64_t scratch_for(void* stream, std::size_t bytes) const {
    return per_stream_buffer(scratch, stream, bytes, false);
  }

  // Counters the plan's kernels leave at zero (LaunchPlan::zeroed_bytes), per stream: zeroed
  // once when allocated, never shared with the scratch (call with scratch_mutex held).
  std::uint64_t zeroed_for(void* stream, std::size_t bytes) const {
    return per_stream_buffer(zeroed, stream, bytes, true);
  }

  // `stream`'s buffer in `buffers`, grown (a new one, zeroed when asked) to at least `bytes`.
  std::uint64_t per_stream_buffer(std::map<CUstream, std::unique_ptr<runtime::DeviceBuffer>>& buffers, void* stream,
                                  std::size_t bytes, bool zero) const {
    auto& buffer = buffers[static_cast<CUstream>(stream)];
    if (!buffer || buffer->size_bytes() < bytes) {
      if (buffer) retired.push_back(std::move(buffer));
      buffer = std::make_unique<runtime::DeviceBuffer>(bytes);
      if (zero) buffer->fill_bytes(0);
    }
    return buffer->device_pointer();
  }
  mutable std::map<CUstream, std::unique_ptr<runtime::DeviceBuffer>> zeroed;

  // Workspace for forward calls (the block mask's tile classes) without a prebuilt
  // BlockMask: one buffer per stream (two streams never share one), grown as needed. A
  // grown-out buffer may still be read by queued work, so it is kept until the Kernel goes.
  // The mutex covers the lookup and the plan's launches, so calls from several threads on
  // one stream cannot interleave.
  mutable std::mutex scratch_mutex;
  mutable std::map<CUstream, std::unique_ptr<runtime::DeviceBuffer>> scratch;
  mutable std::vector<std::unique_ptr<runtime::DeviceBuffer>> retired;

  // Where the device records the first out-of-range read of a captured tensor (host-mapped,
  // so it is read without a copy); used only by launches whose reads the host could not prove.
  std::unique_ptr<runtime::MappedHostBuffer> error_record;

  // The extents of the tensors bound to the last checked launch, for the report.
  mutable std::mutex extents_mutex;
  mutable std::vector<std::vector<std::int64_t>> checked_extents;

  // Throws the recorded out-of-range read, if a finished launch left one, and clears it.
  void report_recorded_read() const {
    auto* r = static_cast<volatile AttnjitErrorRecord*>(error_record->host_pointer());
    const unsigned long long word = r->word;
    if (word == 0) return;
    r->word = 0;
    const int slot = static_cast<int>((word >> 40) & 0xff), dim = static_cast<int>((word >> 32) & 0xff);
    const int index = static_cast<int>(static_cast<std::uint32_t>(word & 0xffffffffu));
    const ArgumentSlots& slots = prepared->unit.slots;
    const std::string tensor = static_cast<std::size_t>(slot) < slots.tensors.size()
                                   ? slots.tensors[static_cast<std::size_t>(slot)].name
                                   : "?";
    std::string extent = "?";
    {
      std::lock_guard<std::mutex> lock(extents_mutex);
      if (static_cast<std::size_t>(slot) < checked_extents.size() &&
          static_cast<std::size_t>(dim) < checked_extents[static_cast<std::size_t>(slot)].size())
        extent = std::to_string(checked_extents[static_cast<std::size_t>(slot)][static_cast<std::size_t>(dim)]);
    }
    throw UserError(fmt::format(
        "variant '{}' read captured tensor '{}' at index {} in dimension {}, whose extent is {} (in a launch since "
        "the last check; the read was clamped, so that launch's output is wrong). Bind a tensor that covers every "
        "index the variant reads for this problem, or keep the index expression in range",
        variant.name(), tensor, index, dim, extent));
  }

  // The problem of the forward block `args` with the device's facts the launch plans use; for
  // calls that have no checked twin (KV caches, ragged batches), a UserError naming the first
  // captured-tensor read the host cannot prove in range, with `extent_hint` (what the tensors
  // must cover) in the message.
  ProblemShape bound_problem(const AttnjitFwdArgs& args, const Bindings& bindings,
                             const std::string& extent_hint) const;

  // Runs a forward plan of `p` (this kernel's or another template's unit) on the forward block
  // `fwd`: builds the plan's argument block, binds the workspace (or a prebuilt block mask)
  // and launches. Returns "" or, when the plan's finish_args declines these tensors, why
  // (nothing launched). `fill_template_fields`, when set, writes the caller's part of the
  // template's own fields (past the forward block) before finish_args runs.
  std::string run_plan(const PreparedKernel& p, const LoadedUnit& unit, const AttnjitFwdArgs& fwd,
                       const ProblemShape& problem, void* stream, const BlockMask* block_mask,
                       const std::function<void(void* block)>& fill_template_fields = {}) const;

  // `args`: the argument block the kernel takes (AttnjitFwdArgs, or AttnjitBwdArgs for backward units).
  void launch(const LoadedUnit& unit, const KernelLaunch& k, const void* args, void* stream) const {
    runtime::LaunchConfig config;
    config.set_grid(k.grid.x, k.grid.y, k.grid.z)
        .set_block(k.block.x, k.block.y, k.block.z)
        .set_dynamic_shared_bytes(static_cast<unsigned>(k.dynamic_shared_bytes))
        .set_stream(static_cast<CUstream>(stream));
    runtime::launch(*unit.functions.at(k.kernel), config, args);
    if (!runtime::kernel_trace_path().empty()) runtime::dump_kernel_trace(*unit.library, k.kernel);
  }
};

}  // namespace detail

struct Kernel::State : detail::KernelState {};

}  // namespace attnjit
