// The public GPU API (see attention.hpp): codegen, NVRTC through the cache, load, launch.
#include "runtime/api/attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <numbers>
#include <vector>

#include "compiler/codegen.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/api/kernel_internals.hpp"
#include "runtime/api/read_bounds.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "templates/abi.h"
#include "templates/block_mask/block_mask_template.hpp"
#include "templates/decode_sm80/decode_sm80_template.hpp"
#include "templates/fwd_sm80/fwd_sm80_template.hpp"

namespace attnjit {
namespace detail {

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// One context per device ordinal, made on first use (RuntimeFailure without a GPU; UserError
// for an ordinal that does not exist).
const runtime::DeviceContext& device_context(int ordinal) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<runtime::DeviceContext>> contexts;
  std::lock_guard<std::mutex> lock(mutex);
  auto& context = contexts[ordinal];
  if (!context) context = std::make_unique<runtime::DeviceContext>(ordinal);
  return *context;
}

std::string resolve_arch(const std::string& arch, int device) {
  if (arch != "auto") return arch;
  auto& driver = runtime::Driver::instance();
  if (!driver.available())
    throw RuntimeFailure(
        fmt::format("arch 'auto' needs a GPU to ask, but the CUDA driver is unavailable: {}. Pass an "
                    "explicit arch (sm_80, sm_86, sm_89, sm_90, sm_90a)",
                    driver.unavailable_reason()));
  const auto& properties = device_context(device).properties();
  return runtime::choose_auto_arch(properties.compute_major, properties.compute_minor);
}

runtime::NvrtcCompileOptions nvrtc_options(const std::string& arch) {
  runtime::NvrtcCompileOptions o;
  o.set_arch(arch)
      .set_program_name("attnjit_fwd.cu")
      .set_failure_dump_dir(default_kernel_cache().directory() / "failed");
  return o;
}

// A tensor on another GPU than the kernel's would be read through a foreign pointer.
void check_same_device(const DLTensor& t, const std::string& name, int device) {
  if (t.device.device_id != device)
    throw UserError(
        fmt::format("tensor {} is on CUDA device {}, but the kernel was compiled for and loaded on device "
                    "{}; move the tensor, or compile with CompileOptions::with_device({})",
                    name, t.device.device_id, device, t.device.device_id));
}

void check_4d(const DLTensor& t, const char* name, ElementType dtype, int device) {
  if (t.device.device_type != kDLCUDA)
    throw UserError(fmt::format("tensor {} is not in CUDA device memory (DLPack device type {}); move it to the GPU",
                                name, static_cast<int>(t.device.device_type)));
  check_same_device(t, name, device);
  if (t.ndim != 4)
    throw UserError(fmt::format("tensor {} has rank {} (shape {}); expected 4: [batch, heads, seq, head_dim]", name,
                                t.ndim, shape_string(dlpack_shape(t))));
  const DLDataType want = dtype == ElementType::BF16 ? dlpack_bfloat16() : dlpack_float16();
  if (t.dtype.code != want.code || t.dtype.bits != want.bits || t.dtype.lanes != 1)
    throw UserError(
        fmt::format("tensor {} has dtype {} but the kernel was compiled for {}; convert it or compile for {}", name,
                    dlpack_dtype_name(t.dtype), element_type_name(dtype), dlpack_dtype_name(t.dtype)));
  const auto strides = dlpack_strides(t);
  if (strides[3] != 1)
    throw UserError(fmt::format("tensor {} has head_dim stride {}; the last dimension must be contiguous (stride 1)",
                                name, strides[3]));
  for (int d = 0; d < 3; ++d)
    if (strides[static_cast<std::size_t>(d)] % 8 != 0)
      throw UserError(
          fmt::format("tensor {} has stride {} in dimension {}; rows must start on 16-byte boundaries "
                      "(strides multiple of 8 elements)",
                      name, strides[static_cast<std::size_t>(d)], d));
  const auto address = reinterpret_cast<std::uintptr_t>(t.data) + t.byte_offset;
  if (address % 16 != 0)
    throw UserError(fmt::format("tensor {} starts at address {:#x}, which is not 16-byte aligned", name, address));
  for (int d = 0; d < 4; ++d)
    if (t.shape[d] <= 0 || t.shape[d] > 0x7fffffff)
      throw UserError(
          fmt::format("tensor {} has extent {} in dimension {}; extents must be in [1, 2^31)", name, t.shape[d], d));
}

void copy_strides(const DLTensor& t, long long (&out)[3]) {
  const auto s = dlpack_strides(t);
  for (int i = 0; i < 3; ++i) out[i] = s[static_cast<std::size_t>(i)];
}

// Runtime parameters and captured tensors into their slots of the argument block.
void bind_variant_arguments(const ArgumentSlots& slots, const Bindings& bindings, AttnjitFwdArgs& args, int device) {
  for (std::size_t i = 0; i < slots.int_params.size(); ++i)
    args.int_params[i] = static_cast<int>(bound_int(bindings, slots.int_params[i].name));
  for (std::size_t i = 0; i < slots.float_params.size(); ++i)
    args.float_params[i] = static_cast<float>(bound_float(bindings, slots.float_params[i].name));
  for (std::size_t i = 0; i < slots.tensors.size(); ++i) {
    const DLTensor& t = bindings.tensors().at(slots.tensors[i].name);
    if (t.device.device_type != kDLCUDA)
      throw UserError(
          fmt::format("tensor '{}' is not in CUDA device memory; move it to the GPU", slots.tensors[i].name));
    check_same_device(t, "'" + slots.tensors[i].name + "'", device);
    const auto strides = dlpack_strides(t);
    args.tensors[i].data = static_cast<const char*>(t.data) + t.byte_offset;
    args.tensors[i].slot = static_cast<int>(i);
    args.tensors[i].error = nullptr;  // set by forward when the host cannot prove the reads in range
    for (int d = 0; d < t.ndim; ++d) {
      if (t.shape[d] <= 0)
        throw UserError(fmt::format("tensor '{}' has an empty dimension {}; every extent must be at least 1",
                                    slots.tensors[i].name, d));
      args.tensors[i].stride[d] = strides[static_cast<std::size_t>(d)];
      args.tensors[i].size[d] = static_cast<int>(t.shape[d]);
    }
  }
}

// The runs of a document mask's ids (LaunchPlan::runs_slot): [size0, size1, 2] i32 of the
// bound id tensor `source`, contiguous.
std::size_t runs_tensor_bytes(const AttnjitTensorArg& source) {
  return static_cast<std::size_t>(source.size[0]) * static_cast<std::size_t>(source.size[1]) * 2 * sizeof(int);
}

void bind_runs_tensor(AttnjitFwdArgs& args, const LaunchPlan& plan, std::uint64_t address) {
  const AttnjitTensorArg& source = args.tensors[plan.runs_source];
  AttnjitTensorArg& runs = args.tensors[plan.runs_slot];
  runs = AttnjitTensorArg{};
  runs.data = reinterpret_cast<const void*>(address);
  runs.size[0] = source.size[0];
  runs.size[1] = source.size[1];
  runs.size[2] = 2;
  runs.size[3] = 1;
  runs.stride[0] = 2LL * source.size[1];
  runs.stride[1] = 2;
  runs.stride[2] = 1;
  runs.slot = plan.runs_slot;
}

// q, k, v (and o, when given) checked against each other and the kernel (shapes, dtype,
// device, strides), lse when given; the forward argument block for them, without the
// variant's parameters and tensors.
AttnjitFwdArgs attention_arguments(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o,
                                   const DLTensor* lse, ElementType dtype, int head_dim, int device,
                                   double softmax_scale) {
  check_4d(q, "q", dtype, device);
  check_4d(k, "k", dtype, device);
  check_4d(v, "v", dtype, device);
  const auto qs = dlpack_shape(q), ks = dlpack_shape(k), vs = dlpack_shape(v), os = dlpack_shape(o);
  if (qs[3] != head_dim)
    throw UserError(fmt::format("q has head_dim {} but the kernel was compiled for {}; compile with head_dim {}", qs[3],
                                head_dim, qs[3]));
  if (ks[0] != qs[0] || vs != ks || ks[3] != qs[3] || os != qs)
    throw UserError(
        fmt::format("shapes do not match: q {}, k {}, v {}, o {}; expected q and o [B, Hq, Sq, D], k and v "
                    "[B, Hkv, Sk, D]",
                    shape_string(qs), shape_string(ks), shape_string(vs), shape_string(os)));
  if (qs[1] % ks[1] != 0)
    throw UserError(
        fmt::format("heads_q = {} is not a multiple of heads_kv = {}; GQA needs whole groups", qs[1], ks[1]));
  if (qs[1] > 65535 || qs[0] > 65535)
    throw UserError(fmt::format("batch {} or heads {} exceeds 65535, the grid limit", qs[0], qs[1]));
  if (lse) {
    const std::vector<std::int64_t> want = {qs[0], qs[1], qs[2]};
    if (lse->device.device_type != kDLCUDA || lse->dtype.code != kDLFloat || lse->dtype.bits != 32 ||
        dlpack_shape(*lse) != want || dlpack_strides(*lse) != std::vector<std::int64_t>{qs[1] * qs[2], qs[2], 1})
      throw UserError(fmt::format("lse must be a contiguous f32 CUDA tensor of shape {}; got {} {} on device type {}",
                                  shape_string(want), dlpack_dtype_name(lse->dtype), shape_string(dlpack_shape(*lse)),
                                  static_cast<int>(lse->device.device_type)));
    check_same_device(*lse, "lse", device);
  }

  AttnjitFwdArgs args{};
  args.q = static_cast<const char*>(q.data) + q.byte_offset;
  args.k = static_cast<const char*>(k.data) + k.byte_offset;
  args.v = static_cast<const char*>(v.data) + v.byte_offset;
  args.o = static_cast<char*>(o.data) + o.byte_offset;
  args.lse = lse ? reinterpret_cast<float*>(static_cast<char*>(lse->data) + lse->byte_offset) : nullptr;
  copy_strides(q, args.q_stride);
  copy_strides(k, args.k_stride);
  copy_strides(v, args.v_stride);
  copy_strides(o, args.o_stride);
  args.batch = static_cast<int>(qs[0]);
  args.heads_q = static_cast<int>(qs[1]);
  args.heads_kv = static_cast<int>(ks[1]);
  args.seq_q = static_cast<int>(qs[2]);
  args.seq_k = static_cast<int>(ks[2]);
  const double scale = softmax_scale != 0.0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(qs[3]));
  if (!(scale > 0.0) || !std::isfinite(scale))
    throw UserError(
        fmt::format("softmax_scale {} is not allowed; it must be a positive finite number (0 means "
                    "1/sqrt(head_dim)). For a negated or zero scale, write it in the score_mod",
                    softmax_scale));
  args.scale = static_cast<float>(scale);
  args.scale_log2 = static_cast<float>(scale * std::numbers::log2e);
  return args;
}

}  // namespace detail

using namespace detail;

void CompileOptions::validate() const {
  if (!is_supported_head_dim(head_dim))
    throw UserError(fmt::format("head_dim {} is not supported; allowed: 32, 64, 96, 128, 256", head_dim));
  if (arch != "auto" && !runtime::is_supported_architecture(arch))
    throw UserError(fmt::format("arch '{}' is not supported; allowed: auto, sm_80, sm_86, sm_89, sm_90, sm_90a", arch));
  if (!template_name.empty()) TemplateRegistry::instance().get(template_name);  // UserError listing the names
}

runtime::KernelCache& default_kernel_cache() {
  static runtime::KernelCache cache;
  return cache;
}

namespace {
// The template, its knobs (overrides on the tuned or default ones, checked) and the unit.
TemplateRequest generate_unit(const Variant& variant, const CompileOptions& options, PreparedKernel& p) {
  TemplateRequest request;
  request.role = options.role;
  request.variant = &variant;
  request.arch = p.config.arch;
  request.head_dim = options.head_dim;
  request.dtype = options.dtype;
  request.ragged = options.ragged;
  if (options.shape_hint) {
    const ShapeHint& h = *options.shape_hint;
    request.problem = ProblemShape{h.batch, h.heads_q, h.heads_kv, h.seq_q, h.seq_k};
  }
  // Knobs given without a template name pick the template they belong to (--block-m --warps:
  // fwd_sm80, even where fwd_sm90 would be chosen); select then judges that one.
  request.knobs = options.knobs;
  const KernelTemplate& t = TemplateRegistry::instance().select(request, options.template_name);
  request.knobs = Knobs();
  Knobs overrides = options.knobs;
  if (overrides.empty() && options.shape_hint)  // tuned knobs for this shape bucket, if any
    if (auto tuned =
            find_tuned_knobs(variant, t.name(), p.config.arch, options.dtype, options.head_dim, *options.shape_hint)) {
      overrides = *tuned;
      p.config.tuned = true;
    }
  request.knobs = t.resolve_knobs(request, overrides);
  const Support ok = t.check_knobs(request.knobs, options.head_dim, max_shared_memory_for_arch(p.config.arch));
  if (!ok.supported()) throw UserError(fmt::format("template '{}': {}", t.name(), ok.reason()));
  p.kernel_template = &t;
  p.config.template_name = t.name();
  p.config.knobs = request.knobs;
  p.unit = t.generate(request);
  return request;
}

// Codegen plus the cache-key inputs, which prepare() reuses rather than hashing the source twice.
PreparedKernel generate_with_key_inputs(const Variant& variant, const CompileOptions& options,
                                        runtime::CacheKeyInputs& inputs) {
  options.validate();
  PreparedKernel p;
  p.config.head_dim = options.head_dim;
  p.config.dtype = options.dtype;
  p.config.arch = resolve_arch(options.arch, options.device);
  const TemplateRequest request = generate_unit(variant, options, p);
  inputs = runtime::CacheKeyInputs::for_compile(p.unit.body, nvrtc_options(p.config.arch));
  p.cache_key = inputs.key();
  p.source = with_provenance(p.unit, variant, request, p.cache_key);
  return p;
}
}  // namespace

PreparedKernel generate(const Variant& variant, const CompileOptions& options) {
  runtime::CacheKeyInputs inputs;
  return generate_with_key_inputs(variant, options, inputs);
}

PreparedKernel prepare(const Variant& variant, const CompileOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  runtime::CacheKeyInputs inputs;
  PreparedKernel p = generate_with_key_inputs(variant, options, inputs);
  runtime::KernelCache& cache = options.cache ? *options.cache : default_kernel_cache();
  const auto nvrtc = nvrtc_options(p.config.arch);
  p.cached = cache.get_or_compile(
      inputs, [&] { return runtime::CompiledKernel::from(runtime::compile_to_cubin(p.source, nvrtc)); },
      runtime::CacheEntryLabels{variant.text(), p.config.template_name + " " + p.config.knobs.str()});
  // Default knobs that spill (more than a few registers) give way to the template's fallback;
  // knobs the caller or the tuner chose are kept as they are.
  if (options.knobs.empty() && !p.config.tuned && p.cached.metadata &&
      p.cached.metadata->resources.worst_case().spill_store_bytes > kSpillFallbackBytes)
    if (const auto fallback = p.kernel_template->spill_fallback_knobs(p.config.knobs)) {
      PreparedKernel q = prepare(variant, CompileOptions(options).with_knobs(*fallback));
      q.prepare_ms = elapsed_ms(start);  // both compiles
      return q;
    }
  p.prepare_ms = elapsed_ms(start);
  return p;
}

std::size_t BlockMask::size_bytes() const { return buffer_ ? buffer_->size_bytes() : 0; }
std::uint64_t BlockMask::device_address() const { return buffer_ ? buffer_->device_pointer() : 0; }
void BlockMask::copy_to_host(void* host, std::size_t bytes) const {
  if (!buffer_ || bytes > buffer_->size_bytes())
    throw UserError(fmt::format("BlockMask::copy_to_host: {} bytes asked, the mask holds {}", bytes, size_bytes()));
  device_context(device_).make_current();
  buffer_->copy_to_host(host, bytes);
}

std::size_t BlockMask::runs_size_bytes() const { return runs_ ? runs_->size_bytes() : 0; }
void BlockMask::copy_runs_to_host(void* host, std::size_t bytes) const {
  if (!runs_ || bytes > runs_->size_bytes())
    throw UserError(
        fmt::format("BlockMask::copy_runs_to_host: {} bytes asked, the mask holds {}", bytes, runs_size_bytes()));
  device_context(device_).make_current();
  runs_->copy_to_host(host, bytes);
}

void synchronize_device(int device) { device_context(device).synchronize(); }

const PreparedKernel& Kernel::prepared() const {
  state_->require_gpu_unit("prepared()");
  return *state_->prepared;
}
const Variant& Kernel::variant() const { return state_->variant; }
int Kernel::device() const { return state_->device; }
bool Kernel::has_gpu_unit() const { return state_->prepared != nullptr; }
const CpuAttention& Kernel::cpu() const { return state_->cpu_attention(); }

void Kernel::synchronize() const {
  if (!state_->prepared) return;  // the CPU backend runs synchronously
  device_context(state_->device).synchronize();
  state_->report_recorded_read();
}

const CpuAttention& KernelState::cpu_attention() const {
  std::lock_guard<std::mutex> lock(cpu_mutex);
  if (!cpu) cpu = std::make_unique<CpuAttention>(variant, make_cpu_hooks(variant, CpuHookSource::Auto));
  return *cpu;
}

void KernelState::require_gpu_unit(const char* what) const {
  if (prepared) return;
  throw RuntimeFailure(
      fmt::format("{}: kernel '{}' was compiled without a GPU ({}), so it has only the CPU backend; "
                  "call forward with host tensors, or compile on a machine with an NVIDIA GPU",
                  what, variant.name(), no_gpu_reason));
}

const KernelState::ExtraUnit* KernelState::forward_unit(const std::string& template_name, const ProblemShape& hint,
                                                        bool ragged, const Knobs& knobs) const {
  std::lock_guard<std::mutex> lock(extra_forward_mutex);
  const std::string key = forward_unit_key(template_name, ragged, knobs);
  if (auto it = extra_forward.find(key); it != extra_forward.end()) return it->second.get();
  auto& slot = extra_forward[key];  // null until built: a decline is remembered
  CompileOptions co = options;
  co.role = TemplateRole::Forward;
  co.arch = prepared->config.arch;
  co.template_name = template_name;
  co.ragged = ragged;
  // The compiled knobs when they are this template's (a kernel compiled for fwd_sm80 with chosen
  // knobs runs its ragged batches with them too), else the template's defaults.
  co.knobs = template_name == prepared->config.template_name ? prepared->config.knobs : Knobs();
  for (const auto& [name, value] : knobs.values()) co.knobs.set(name, value);
  co.with_shape_hint(hint.batch, hint.heads_q, hint.heads_kv, hint.seq_q, hint.seq_k);
  co.cache = cache;
  std::shared_ptr<const PreparedKernel> p;
  try {
    p = std::make_shared<const PreparedKernel>(prepare(variant, co));
  } catch (const UserError&) {
    return nullptr;  // the template declines this variant
  }
  const runtime::DeviceContext& context = device_context(device);
  if (p->unit.max_dynamic_shared_bytes > context.properties().max_shared_memory_per_block_optin) return nullptr;
  context.make_current();
  auto loaded =
      std::make_unique<LoadedUnit>(*p->cached.cubin, p->unit, context.properties().max_shared_memory_per_block_optin);
  slot = std::make_unique<ExtraUnit>(ExtraUnit{std::move(p), std::move(loaded)});
  return slot.get();
}

const KernelState::ExtraUnit* KernelState::decode_unit(const ProblemShape& hint) const {
  // The default unit is built from the first call's hint; a batch past stream-K's would make its
  // default knobs split-K for every later call, so that one hints at most stream-K's batch.
  ProblemShape default_hint = hint;
  default_hint.batch = std::min(hint.batch, kDecodeStreamKMaxBatch);
  const ExtraUnit* unit = forward_unit(kDecodeTemplateName, default_hint);
  if (unit != nullptr && unit->prepared->config.knobs.get("stream_k") == 1 && hint.batch > kDecodeStreamKMaxBatch)
    return forward_unit(kDecodeTemplateName, hint, /*ragged=*/false, Knobs{{"stream_k", 0}});
  return unit;
}

const KernelState::ExtraUnit* KernelState::built_forward_unit(const std::string& template_name, bool ragged) const {
  std::lock_guard<std::mutex> lock(extra_forward_mutex);
  const auto it = extra_forward.find(forward_unit_key(template_name, ragged));
  return it == extra_forward.end() ? nullptr : it->second.get();
}

Kernel compile(const Variant& variant, const CompileOptions& options) {
  auto& driver = runtime::Driver::instance();
  options.validate();
  if (!driver.available() || driver.device_count() == 0) {
    // No GPU: a Kernel of the CPU backend, its hooks JIT-compiled here (`prepare` with an
    // explicit arch still builds the CUDA unit without a GPU).
    auto state = std::make_shared<Kernel::State>();
    state->variant = variant;
    state->options = options;
    state->device = options.device;
    state->no_gpu_reason =
        driver.available() ? "the CUDA driver sees no device" : "no CUDA driver: " + driver.unavailable_reason();
    state->cpu_attention();
    Kernel k;
    k.state_ = std::move(state);
    return k;
  }
  const runtime::DeviceContext& context = device_context(options.device);
  context.make_current();
  auto state = std::make_shared<Kernel::State>();
  state->variant = variant;
  state->options = options;
  state->device = options.device;
  state->prepared = std::make_shared<const PreparedKernel>(
      prepare(variant, CompileOptions(options).with_role(TemplateRole::Forward)));
  const PreparedKernel& p = *state->prepared;
  const int limit = context.properties().max_shared_memory_per_block_optin;
  if (p.unit.max_dynamic_shared_bytes > limit)
    throw UserError(
        fmt::format("template {} with knobs {} needs {} bytes of shared memory; device {} ({}) allows "
                    "{}. Use smaller tiles",
                    p.config.template_name, p.config.knobs.str(), p.unit.max_dynamic_shared_bytes, options.device,
                    context.properties().name, limit));
  state->cache = options.cache ? options.cache : &default_kernel_cache();
  state->loaded = std::make_unique<LoadedUnit>(*p.cached.cubin, p.unit, limit);
  state->error_record = std::make_unique<runtime::MappedHostBuffer>(sizeof(AttnjitErrorRecord));
  Kernel k;
  k.state_ = std::move(state);
  return k;
}

void Kernel::forward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor* lse,
                     const Bindings& bindings, void* stream, double softmax_scale, const BlockMask* block_mask) const {
  if (q.device.device_type == kDLCPU) {
    if (block_mask != nullptr)
      throw UserError("forward on host tensors (the CPU backend) takes no block_mask: it classifies tiles itself");
    state_->cpu_attention().forward(q, k, v, o, lse, bindings, softmax_scale);
    return;
  }
  state_->require_gpu_unit("forward on CUDA tensors");
  const PreparedKernel& p = *state_->prepared;
  const ElementType dtype = p.config.dtype;
  const int device = state_->device;
  state_->report_recorded_read();  // an earlier launch's, before anything new is queued
  check_4d(o, "o", dtype, device);
  AttnjitFwdArgs args = attention_arguments(q, k, v, o, lse, dtype, p.config.head_dim, device, softmax_scale);
  check_bindings(state_->variant, bindings);
  bind_variant_arguments(p.unit.slots, bindings, args, device);

  ProblemShape problem{args.batch, args.heads_q, args.heads_kv, args.seq_q, args.seq_k};
  problem.multiprocessors = device_context(device).properties().sm_count;
  problem.max_shared_bytes_per_block = device_context(device).properties().max_shared_memory_per_block_optin;
  const bool unproven =
      !p.unit.slots.tensors.empty() && first_unproven_read(state_->variant, problem, p.config.head_dim, bindings);
  // A decode shape goes to the decode unit (built on first use; ATTNJIT_DECODE=0 keeps it off),
  // unless a template was forced, a block mask was given, or the reads need the checked twin.
  if (decode_routing_enabled() && !unproven && block_mask == nullptr && problem.seq_q <= kDecodeMaxSeqQ &&
      state_->options.template_name.empty() && p.config.template_name != kDecodeTemplateName) {
    const ProblemShape hint{problem.batch, problem.heads_q, problem.heads_kv, 1, problem.seq_k};
    if (const KernelState::ExtraUnit* decode = state_->decode_unit(hint)) {
      state_->run_plan(*decode->prepared, *decode->loaded, args, problem, stream, nullptr);
      return;
    }
  }
  const LoadedUnit* unit = state_->loaded.get();
  if (unproven) {
    unit = &state_->checked_unit();
    const auto record = reinterpret_cast<AttnjitErrorRecord*>(state_->error_record->device_pointer());
    std::vector<std::vector<std::int64_t>> extents;
    for (std::size_t i = 0; i < p.unit.slots.tensors.size(); ++i) {
      args.tensors[i].error = record;
      extents.push_back(dlpack_shape(bindings.tensors().at(p.unit.slots.tensors[i].name)));
    }
    std::lock_guard<std::mutex> lock(state_->extents_mutex);
    state_->checked_extents = std::move(extents);
  }
  const std::string declined = state_->run_plan(p, *unit, args, problem, stream, block_mask);
  if (declined.empty()) return;
  // The compiled template cannot take these tensors (e.g. fwd_sm90's TMA descriptors need
  // 16-byte strides): the sm80 template, which reads any row stride, runs the call.
  const KernelState::ExtraUnit* fallback = state_->forward_unit(kFallbackForwardTemplate, problem);
  if (fallback == nullptr || block_mask != nullptr)
    throw UserError(fmt::format("template {} cannot run this call: {}{}", p.config.template_name, declined,
                                block_mask != nullptr ? " (and a prebuilt block mask binds it to this template)"
                                                      : "; compile with the fwd_sm80 template"));
  state_->run_plan(*fallback->prepared, *fallback->loaded, args, problem, stream, nullptr);
}

ProblemShape KernelState::bound_problem(const AttnjitFwdArgs& args, const Bindings& bindings,
                                        const std::string& extent_hint) const {
  ProblemShape problem{args.batch, args.heads_q, args.heads_kv, args.seq_q, args.seq_k};
  problem.multiprocessors = device_context(device).properties().sm_count;
  problem.max_shared_bytes_per_block = device_context(device).properties().max_shared_memory_per_block_optin;
  if (!prepared->unit.slots.tensors.empty())
    if (const auto unproven = first_unproven_read(variant, problem, prepared->config.head_dim, bindings))
      throw UserError(fmt::format("variant '{}': a captured-tensor read cannot be proven in range ({}): {}",
                                  variant.name(), extent_hint, unproven->str()));
  return problem;
}

std::string KernelState::run_plan(const PreparedKernel& p, const LoadedUnit& unit, const AttnjitFwdArgs& fwd,
                                  const ProblemShape& problem, void* stream, const BlockMask* block_mask,
                                  const std::function<void(void* block)>& fill_template_fields) const {
  const LaunchPlan plan = p.launch_plan(problem);
  if (plan.args_bytes > LaunchPlan::kMaxArgumentBytes)
    throw InternalError(fmt::format("template {}: argument block of {} bytes exceeds the kernel parameter limit",
                                    p.config.template_name, plan.args_bytes));
  // The kernels' argument block: the forward block first, the template's own fields after it.
  // Only the template's own fields past the forward block are cleared (finish_args fills them).
  alignas(64) unsigned char block[LaunchPlan::kMaxArgumentBytes];
  auto& args = *new (block) AttnjitFwdArgs(fwd);
  if (plan.args_bytes > sizeof(AttnjitFwdArgs))
    std::memset(block + sizeof(AttnjitFwdArgs), 0, plan.args_bytes - sizeof(AttnjitFwdArgs));
  device_context(device).make_current();
  const bool prebuilt = block_mask != nullptr && !block_mask->empty();
  if (prebuilt && (block_mask->built_by_ != p.cache_key || block_mask->problem_.batch != problem.batch ||
                   block_mask->problem_.heads_q != problem.heads_q || block_mask->problem_.seq_q != problem.seq_q ||
                   block_mask->problem_.seq_k != problem.seq_k || block_mask->size_bytes() < plan.block_mask_bytes))
    throw UserError(fmt::format(
        "block_mask was built for {} by kernel {}; this call is {} on kernel {}. Build it with "
        "this kernel and shape",
        block_mask->problem_.str(), block_mask->built_by_.substr(0, 12), problem.str(), p.cache_key.substr(0, 12)));
  // The block mask is the workspace's last part, so with a prebuilt one the scratch is shorter.
  const std::size_t scratch_bytes = plan.workspace_bytes - (prebuilt ? plan.block_mask_bytes : 0);
  // Runs of a document mask's ids: the prebuilt mask's (computed with its classes, from the same
  // ids), else computed per call after the scratch, sized by the bound id tensor.
  const bool prebuilt_runs = prebuilt && block_mask->runs_ != nullptr;
  const std::size_t runs_at = workspace_aligned(scratch_bytes);
  const std::size_t runs_bytes =
      plan.runs_slot >= 0 && !prebuilt_runs ? runs_tensor_bytes(args.tensors[plan.runs_source]) : 0;
  std::lock_guard<std::mutex> lock(scratch_mutex);
  const std::uint64_t scratch = scratch_bytes + runs_bytes > 0 ? scratch_for(stream, runs_at + runs_bytes) : 0;
  if (scratch_bytes > 0) plan.bind_workspace(args, scratch);
  if (runs_bytes > 0) bind_runs_tensor(args, plan, scratch + runs_at);
  if (prebuilt_runs) bind_runs_tensor(args, plan, block_mask->runs_->device_pointer());
  if (prebuilt) plan.bind_block_mask(args, block_mask->buffer_->device_pointer());
  if (plan.zeroed_bytes > 0) plan.bind_zeroed(args, zeroed_for(stream, plan.zeroed_bytes));
  if (fill_template_fields) fill_template_fields(block);
  if (plan.finish_args)
    if (std::string why = plan.finish_args(block); !why.empty()) return why;
  for (const auto& launch : plan.kernels) {
    if (prebuilt && launch.role == BlockMaskTemplate::kRole) continue;
    if (prebuilt_runs && launch.role == BlockMaskTemplate::kRunsRole) continue;
    this->launch(unit, launch, block, stream);
  }
  return {};
}

bool Kernel::has_block_mask() const {
  state_->require_gpu_unit("has_block_mask()");
  return state_->prepared->unit.facts.mask_reads_tensor;
}

BlockMask Kernel::build_block_mask(int batch, int heads_q, int seq_q, int seq_k, const Bindings& bindings,
                                   void* stream) const {
  state_->require_gpu_unit("build_block_mask");
  const PreparedKernel& p = *state_->prepared;
  if (!has_block_mask())
    throw UserError(fmt::format(
        "variant '{}' has a mask that reads no tensor; its tile classes come from interval analysis and need "
        "no block mask. Call forward without one",
        state_->variant.name()));
  if (batch < 1 || heads_q < 1 || seq_q < 1 || seq_k < 1 || batch > 65535 || heads_q > 65535)
    throw UserError(
        fmt::format("build_block_mask: batch {}, heads_q {}, seq_q {}, seq_k {}; each must be at least 1 "
                    "(batch and heads_q at most 65535)",
                    batch, heads_q, seq_q, seq_k));
  check_bindings(state_->variant, bindings);
  AttnjitFwdArgs args{};
  args.batch = batch;
  args.heads_q = heads_q;
  args.heads_kv = heads_q;
  args.seq_q = seq_q;
  args.seq_k = seq_k;
  bind_variant_arguments(p.unit.slots, bindings, args, state_->device);
  const ProblemShape problem{batch, heads_q, heads_q, seq_q, seq_k};
  const LaunchPlan plan = p.launch_plan(problem);
  device_context(state_->device).make_current();
  auto buffer = std::make_shared<runtime::DeviceBuffer>(plan.block_mask_bytes);
  plan.bind_block_mask(args, buffer->device_pointer());
  // The classes of a mask that reads runs come from runs of these bindings (kept with the mask:
  // the launches are asynchronous).
  std::shared_ptr<runtime::DeviceBuffer> runs;
  if (plan.runs_slot >= 0) {
    runs = std::make_shared<runtime::DeviceBuffer>(
        std::max<std::size_t>(runs_tensor_bytes(args.tensors[plan.runs_source]), 1));
    bind_runs_tensor(args, plan, runs->device_pointer());
  }
  for (const auto& launch : plan.kernels)
    if (launch.role == BlockMaskTemplate::kRole || launch.role == BlockMaskTemplate::kRunsRole)
      state_->launch(*state_->loaded, launch, &args, stream);
  BlockMask mask;
  mask.buffer_ = std::move(buffer);
  mask.runs_ = std::move(runs);
  mask.problem_ = problem;
  mask.built_by_ = p.cache_key;
  mask.device_ = state_->device;
  return mask;
}

}  // namespace attnjit
