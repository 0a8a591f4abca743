// The public GPU API: compile a variant into a kernel, then run it.
//
// Phases are explicit (DESIGN §7.8): `prepare` generates and compiles (NVRTC, through the
// cache) and needs no GPU when the arch is given; `compile` also loads the cubin on the
// device; `Kernel::forward` checks every tensor and binding, then launches.
//
//   attnjit::Kernel k = attnjit::compile(presets::causal(), CompileOptions().with_head_dim(128));
//   k.forward(q, k_tensor, v, o, &lse, bindings, stream);
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "compiler/codegen.hpp"
#include "compiler/schedule.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/cache/kernel_cache.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/cache/tuning_db.hpp"

namespace attnjit {
namespace runtime {
class DeviceBuffer;
}

struct CompileOptions {
  int head_dim = 128;
  ElementType dtype = ElementType::BF16;
  std::string arch = "auto";              // "auto": the current device's; or sm_80, sm_86, sm_89, sm_90, sm_90a
  std::optional<Schedule> schedule;       // empty: the tuned one for shape_hint, else Schedule::default_for(head_dim)
  std::optional<ShapeHint> shape_hint;    // the shape the kernel will mostly run on: selects a tuned schedule
  runtime::KernelCache* cache = nullptr;  // empty: the process-wide cache (ATTNJIT_CACHE_DIR, ...)

  CompileOptions& with_head_dim(int v) {
    head_dim = v;
    return *this;
  }
  CompileOptions& with_dtype(ElementType v) {
    dtype = v;
    return *this;
  }
  CompileOptions& with_arch(std::string v) {
    arch = std::move(v);
    return *this;
  }
  CompileOptions& with_schedule(const Schedule& v) {
    schedule = v;
    return *this;
  }
  // With no explicit schedule, generate/prepare/compile use the tuning database's schedule for
  // this shape's bucket (runtime/cache/tuning_db.hpp) when there is one.
  CompileOptions& with_shape_hint(int batch, int heads_q, int heads_kv, int seq_q, int seq_k) {
    shape_hint = ShapeHint{batch, heads_q, heads_kv, seq_q, seq_k};
    return *this;
  }
  CompileOptions& with_cache(runtime::KernelCache* v) {
    cache = v;
    return *this;
  }

  void validate() const;  // UserError naming the field, value, allowed set
  Schedule resolved_schedule() const { return schedule ? *schedule : Schedule::default_for(head_dim); }
};

// Generated and compiled, not yet loaded: what `attnjit emit/compile` print.
struct PreparedKernel {
  KernelConfig config;
  GeneratedSource generated;
  std::string source;  // the full translation unit, provenance header included
  std::string cache_key;
  runtime::CacheLookupResult cached;  // cubin + metadata + where it came from
  double prepare_ms = 0;              // codegen + cache lookup (+ NVRTC on a miss)
};

// Codegen only (no NVRTC). `arch` must be explicit.
PreparedKernel generate(const Variant& variant, const CompileOptions& options);
// Codegen + NVRTC through the cache. `arch` must be explicit, or "auto" with a GPU.
PreparedKernel prepare(const Variant& variant, const CompileOptions& options);

runtime::KernelCache& default_kernel_cache();

// The tile classes of a mask that reads tensors (documents, learned masks), built on the GPU
// by `Kernel::build_block_mask` and reusable across forward calls (e.g. every layer of a
// model) while the shape (batch, heads_q, seq_q, seq_k) and the mask tensors' contents stay
// the same. Device memory, shared by copies; empty when default-constructed.
class BlockMask {
 public:
  bool empty() const { return buffer_ == nullptr; }
  std::size_t size_bytes() const;
  // The tile classes: [B', H', q_tiles, kv_tiles] bytes (0 empty, 1 partial, 2 full), B' = batch
  // or 1, H' = heads_q or 1 (GeneratedSource::block_mask_per_batch / _per_head).
  std::uint64_t device_address() const;
  void copy_to_host(void* host, std::size_t bytes) const;  // synchronous; for tests and inspection

 private:
  friend class Kernel;
  std::shared_ptr<const runtime::DeviceBuffer> buffer_;
  int batch_ = 0, heads_q_ = 0, seq_q_ = 0, seq_k_ = 0;
  int block_m_ = 0, block_n_ = 0;
  long long stride_[3] = {0, 0, 0};
};

class Kernel {
 public:
  const PreparedKernel& prepared() const;
  const Variant& variant() const;

  // q: [B, Hq, Sq, D], k/v: [B, Hkv, Sk, D] (any strides with the last one 1 and rows
  // 16-byte aligned; BSHD layouts are views with permuted strides), o like q, lse
  // [B, Hq, Sq] f32 contiguous or null. All on the current CUDA device. `stream` is a
  // CUstream / cudaStream_t (null: the legacy default stream); 0 scale means 1/sqrt(D).
  //
  // When the mask reads a tensor, forward first launches the block-mask kernel on `stream`
  // (tile classes into a scratch buffer owned by this Kernel, one per stream, grown as
  // needed), unless `block_mask` (from build_block_mask, same shape) is given. Concurrent
  // forward calls on one Kernel from several threads are safe: a mutex covers the scratch
  // lookup and both launches.
  void forward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor* lse,
               const Bindings& bindings = {}, void* stream = nullptr, double softmax_scale = 0.0,
               const BlockMask* block_mask = nullptr) const;

  // Whether the mask reads a tensor, so that tile classes are built on the GPU.
  bool has_block_mask() const;
  // Builds the tile classes once (launch on `stream`, asynchronous) for reuse across forward
  // calls with this shape and these mask tensors. UserError when the mask reads no tensor.
  BlockMask build_block_mask(int batch, int heads_q, int seq_q, int seq_k, const Bindings& bindings,
                             void* stream = nullptr) const;

 private:
  friend Kernel compile(const Variant& variant, const CompileOptions& options);
  struct State;
  std::shared_ptr<const State> state_;
};

// Prepares and loads on the current device (device 0's primary context).
Kernel compile(const Variant& variant, const CompileOptions& options = {});

// Waits for all work on attnjit's device; a failed kernel surfaces here as RuntimeFailure.
void synchronize_device();

}  // namespace attnjit
