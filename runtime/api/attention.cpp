// The public GPU API (see attention.hpp): codegen, NVRTC through the cache, load, launch.
#include "runtime/api/attention.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <numbers>
#include <vector>

#include "runtime/driver/cuda_driver.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "templates/abi.h"

namespace attnjit {
namespace {

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

runtime::DeviceContext& device_context() {
  static runtime::DeviceContext context(0);  // throws RuntimeFailure (cached by the caller) without a GPU
  return context;
}

std::string resolve_arch(const std::string& arch) {
  if (arch != "auto") return arch;
  auto& driver = runtime::Driver::instance();
  if (!driver.available())
    throw RuntimeFailure(
        fmt::format("arch 'auto' needs a GPU to ask, but the CUDA driver is unavailable: {}. Pass an "
                    "explicit arch (sm_80, sm_86, sm_89, sm_90, sm_90a)",
                    driver.unavailable_reason()));
  return device_context().properties().arch;
}

runtime::NvrtcCompileOptions nvrtc_options(const std::string& arch) {
  runtime::NvrtcCompileOptions o;
  o.set_arch(arch)
      .set_program_name("attnjit_fwd.cu")
      .set_failure_dump_dir(default_kernel_cache().directory() / "failed");
  return o;
}

void check_4d(const DLTensor& t, const char* name, ElementType dtype) {
  if (t.device.device_type != kDLCUDA)
    throw UserError(fmt::format("tensor {} is not in CUDA device memory (DLPack device type {}); move it to the GPU",
                                name, static_cast<int>(t.device.device_type)));
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
void bind_variant_arguments(const ArgumentSlots& slots, const Bindings& bindings, AttnjitFwdArgs& args) {
  for (std::size_t i = 0; i < slots.int_params.size(); ++i)
    args.int_params[i] = static_cast<int>(bound_int(bindings, slots.int_params[i].name));
  for (std::size_t i = 0; i < slots.float_params.size(); ++i)
    args.float_params[i] = static_cast<float>(bound_float(bindings, slots.float_params[i].name));
  for (std::size_t i = 0; i < slots.tensors.size(); ++i) {
    const DLTensor& t = bindings.tensors().at(slots.tensors[i].name);
    if (t.device.device_type != kDLCUDA)
      throw UserError(
          fmt::format("tensor '{}' is not in CUDA device memory; move it to the GPU", slots.tensors[i].name));
    const auto strides = dlpack_strides(t);
    args.tensors[i].data = static_cast<const char*>(t.data) + t.byte_offset;
    for (int d = 0; d < t.ndim; ++d) {
      if (t.shape[d] <= 0)
        throw UserError(fmt::format("tensor '{}' has an empty dimension {}; every extent must be at least 1",
                                    slots.tensors[i].name, d));
      args.tensors[i].stride[d] = strides[static_cast<std::size_t>(d)];
      args.tensors[i].size[d] = static_cast<int>(t.shape[d]);
    }
  }
}

// The tile-class buffer of the block-mask kernel: [B', H', q_tiles, kv_tiles] bytes.
struct BlockMaskLayout {
  unsigned q_tiles = 0, kv_tiles = 0, planes = 0;  // planes = B' * H'
  long long stride[3] = {0, 0, 0};                 // bytes; 0 for a dimension of extent 1
  std::size_t bytes = 0;
};

BlockMaskLayout block_mask_layout(const PreparedKernel& p, int batch, int heads_q, int seq_q, int seq_k) {
  BlockMaskLayout l;
  l.q_tiles = static_cast<unsigned>((seq_q + p.config.schedule.block_m - 1) / p.config.schedule.block_m);
  l.kv_tiles = static_cast<unsigned>((seq_k + p.config.schedule.block_n - 1) / p.config.schedule.block_n);
  const long long heads = p.generated.block_mask_per_head ? heads_q : 1;
  const long long batches = p.generated.block_mask_per_batch ? batch : 1;
  l.stride[2] = l.kv_tiles;
  l.stride[1] = p.generated.block_mask_per_head ? static_cast<long long>(l.q_tiles) * l.kv_tiles : 0;
  l.stride[0] = p.generated.block_mask_per_batch ? heads * l.q_tiles * l.kv_tiles : 0;
  l.planes = static_cast<unsigned>(batches * heads);
  l.bytes = static_cast<std::size_t>(batches * heads) * l.q_tiles * l.kv_tiles;
  return l;
}

void set_tile_classes(AttnjitFwdArgs& args, CUdeviceptr buffer, const BlockMaskLayout& l) {
  args.tile_classes = reinterpret_cast<unsigned char*>(buffer);
  for (int i = 0; i < 3; ++i) args.tile_class_stride[i] = l.stride[i];
}

// One CTA of 128 threads (AJ_BM_THREADS) per (kv tile, q tile, plane).
runtime::LaunchConfig block_mask_launch(const BlockMaskLayout& l, void* stream) {
  runtime::LaunchConfig launch;
  launch.set_grid(l.kv_tiles, l.q_tiles, l.planes).set_block(128).set_stream(static_cast<CUstream>(stream));
  return launch;
}

}  // namespace

void CompileOptions::validate() const {
  if (!is_supported_head_dim(head_dim))
    throw UserError(fmt::format("head_dim {} is not supported; allowed: 32, 64, 96, 128, 256", head_dim));
  if (arch != "auto" && !runtime::is_supported_architecture(arch))
    throw UserError(fmt::format("arch '{}' is not supported; allowed: auto, sm_80, sm_86, sm_89, sm_90, sm_90a", arch));
  resolved_schedule().validate(head_dim);
}

runtime::KernelCache& default_kernel_cache() {
  static runtime::KernelCache cache;
  return cache;
}

namespace {
// Codegen plus the cache-key inputs, which prepare() reuses rather than hashing the source twice.
PreparedKernel generate_with_key_inputs(const Variant& variant, const CompileOptions& options,
                                        runtime::CacheKeyInputs& inputs) {
  options.validate();
  PreparedKernel p;
  p.config = KernelConfig{options.head_dim, options.dtype, options.resolved_schedule(), resolve_arch(options.arch)};
  if (!options.schedule && options.shape_hint)  // a tuned schedule for this shape bucket, if any
    if (auto tuned = find_tuned_schedule(variant, p.config.arch, options.dtype, options.head_dim, *options.shape_hint))
      p.config.schedule = *tuned;
  p.generated = generate_forward(variant, p.config);
  inputs = runtime::CacheKeyInputs::for_compile(p.generated.body, nvrtc_options(p.config.arch));
  p.cache_key = inputs.key();
  p.source = p.generated.with_header(variant, p.config, p.cache_key);
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
      runtime::CacheEntryLabels{variant.text(), p.config.schedule.str()});
  p.prepare_ms = elapsed_ms(start);
  return p;
}

struct Kernel::State {
  Variant variant;
  std::shared_ptr<const PreparedKernel> prepared;
  std::unique_ptr<runtime::LoadedLibrary> library;
  std::unique_ptr<runtime::KernelFunction> function;
  std::unique_ptr<runtime::KernelFunction> block_mask_function;  // null: the mask reads no tensor

  // Scratch tile classes for forward calls without a prebuilt BlockMask: one buffer per
  // stream (two streams never share one), grown as needed. A grown-out buffer may still be
  // read by queued work, so it is kept until the Kernel goes. The mutex covers the lookup
  // and both launches, so calls from several threads on one stream cannot interleave.
  mutable std::mutex scratch_mutex;
  mutable std::map<CUstream, std::unique_ptr<runtime::DeviceBuffer>> scratch;
  mutable std::vector<std::unique_ptr<runtime::DeviceBuffer>> retired;
};

std::size_t BlockMask::size_bytes() const { return buffer_ ? buffer_->size_bytes() : 0; }
std::uint64_t BlockMask::device_address() const { return buffer_ ? buffer_->device_pointer() : 0; }
void BlockMask::copy_to_host(void* host, std::size_t bytes) const {
  if (!buffer_ || bytes > buffer_->size_bytes())
    throw UserError(fmt::format("BlockMask::copy_to_host: {} bytes asked, the mask holds {}", bytes, size_bytes()));
  device_context().make_current();
  buffer_->copy_to_host(host, bytes);
}

void synchronize_device() { device_context().synchronize(); }

const PreparedKernel& Kernel::prepared() const { return *state_->prepared; }
const Variant& Kernel::variant() const { return state_->variant; }

Kernel compile(const Variant& variant, const CompileOptions& options) {
  auto& driver = runtime::Driver::instance();
  if (!driver.available())
    throw RuntimeFailure(
        fmt::format("no CUDA driver: {}; run on a machine with an NVIDIA GPU, or use `prepare` with an "
                    "explicit arch to compile without one",
                    driver.unavailable_reason()));
  device_context().make_current();
  auto state = std::make_shared<Kernel::State>();
  state->variant = variant;
  state->prepared = std::make_shared<const PreparedKernel>(prepare(variant, options));
  const PreparedKernel& p = *state->prepared;
  const int smem = p.generated.shared_memory_bytes;
  const int limit = device_context().properties().max_shared_memory_per_block_optin;
  if (smem > limit)
    throw UserError(fmt::format("schedule {} needs {} bytes of shared memory; this GPU allows {}. Use smaller tiles",
                                p.config.schedule.str(), smem, limit));
  state->library = std::make_unique<runtime::LoadedLibrary>(*p.cached.cubin);
  state->function = std::make_unique<runtime::KernelFunction>(state->library->kernel(p.generated.kernel_name));
  state->function->set_max_dynamic_shared_memory(smem);
  if (p.generated.has_block_mask())
    state->block_mask_function =
        std::make_unique<runtime::KernelFunction>(state->library->kernel(p.generated.block_mask_kernel_name));
  Kernel k;
  k.state_ = std::move(state);
  return k;
}

void Kernel::forward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor* lse,
                     const Bindings& bindings, void* stream, double softmax_scale, const BlockMask* block_mask) const {
  const PreparedKernel& p = *state_->prepared;
  const ElementType dtype = p.config.dtype;
  check_4d(q, "q", dtype);
  check_4d(k, "k", dtype);
  check_4d(v, "v", dtype);
  check_4d(o, "o", dtype);
  const auto qs = dlpack_shape(q), ks = dlpack_shape(k), vs = dlpack_shape(v), os = dlpack_shape(o);
  if (qs[3] != p.config.head_dim)
    throw UserError(fmt::format("q has head_dim {} but the kernel was compiled for {}; compile with head_dim {}", qs[3],
                                p.config.head_dim, qs[3]));
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
  }
  check_bindings(state_->variant, bindings);

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

  bind_variant_arguments(p.generated.slots, bindings, args);

  runtime::LaunchConfig launch;
  const unsigned blocks_m =
      static_cast<unsigned>((args.seq_q + p.config.schedule.block_m - 1) / p.config.schedule.block_m);
  launch.set_grid(blocks_m, static_cast<unsigned>(args.heads_q), static_cast<unsigned>(args.batch))
      .set_block(static_cast<unsigned>(p.config.schedule.num_warps * 32))
      .set_dynamic_shared_bytes(static_cast<unsigned>(p.generated.shared_memory_bytes))
      .set_stream(static_cast<CUstream>(stream));
  device_context().make_current();
  if (!p.generated.has_block_mask()) {
    runtime::launch(*state_->function, launch, args);
    return;
  }
  const BlockMaskLayout layout = block_mask_layout(p, args.batch, args.heads_q, args.seq_q, args.seq_k);
  if (block_mask != nullptr && !block_mask->empty()) {
    if (block_mask->batch_ != args.batch || block_mask->heads_q_ != args.heads_q || block_mask->seq_q_ != args.seq_q ||
        block_mask->seq_k_ != args.seq_k || block_mask->block_m_ != p.config.schedule.block_m ||
        block_mask->block_n_ != p.config.schedule.block_n)
      throw UserError(fmt::format(
          "block_mask was built for batch {}, heads_q {}, seq_q {}, seq_k {} with {}x{} tiles; this call has "
          "batch {}, heads_q {}, seq_q {}, seq_k {} with {}x{} tiles. Build it with this kernel and shape",
          block_mask->batch_, block_mask->heads_q_, block_mask->seq_q_, block_mask->seq_k_, block_mask->block_m_,
          block_mask->block_n_, args.batch, args.heads_q, args.seq_q, args.seq_k, p.config.schedule.block_m,
          p.config.schedule.block_n));
    set_tile_classes(args, block_mask->buffer_->device_pointer(), layout);
    runtime::launch(*state_->function, launch, args);
    return;
  }
  const State& st = *state_;
  std::lock_guard<std::mutex> lock(st.scratch_mutex);
  auto& buffer = st.scratch[static_cast<CUstream>(stream)];
  if (!buffer || buffer->size_bytes() < layout.bytes) {
    if (buffer) st.retired.push_back(std::move(buffer));
    buffer = std::make_unique<runtime::DeviceBuffer>(layout.bytes);
  }
  set_tile_classes(args, buffer->device_pointer(), layout);
  runtime::launch(*st.block_mask_function, block_mask_launch(layout, stream), args);
  runtime::launch(*st.function, launch, args);
}

bool Kernel::has_block_mask() const { return state_->prepared->generated.has_block_mask(); }

BlockMask Kernel::build_block_mask(int batch, int heads_q, int seq_q, int seq_k, const Bindings& bindings,
                                   void* stream) const {
  const PreparedKernel& p = *state_->prepared;
  if (!p.generated.has_block_mask())
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
  bind_variant_arguments(p.generated.slots, bindings, args);
  const BlockMaskLayout layout = block_mask_layout(p, batch, heads_q, seq_q, seq_k);
  device_context().make_current();
  auto buffer = std::make_shared<runtime::DeviceBuffer>(layout.bytes);
  set_tile_classes(args, buffer->device_pointer(), layout);
  runtime::launch(*state_->block_mask_function, block_mask_launch(layout, stream), args);
  BlockMask mask;
  mask.buffer_ = std::move(buffer);
  mask.batch_ = batch;
  mask.heads_q_ = heads_q;
  mask.seq_q_ = seq_q;
  mask.seq_k_ = seq_k;
  mask.block_m_ = p.config.schedule.block_m;
  mask.block_n_ = p.config.schedule.block_n;
  for (int i = 0; i < 3; ++i) mask.stride_[i] = layout.stride[i];
  return mask;
}

}  // namespace attnjit
