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
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "compiler/kernel_template.hpp"
#include "compiler/knobs.hpp"
#include "compiler/schedule.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/cache/kernel_cache.hpp"
#include "runtime/cache/tuning_db.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"

namespace attnjit {
namespace runtime {
class DeviceBuffer;
}

struct CompileOptions {
  int head_dim = 128;
  ElementType dtype = ElementType::BF16;
  std::string arch = "auto";  // "auto": the current device's; or sm_80, sm_86, sm_89, sm_90, sm_90a
  // The kernel template (`attnjit templates`); empty: the best one that can implement the
  // request (TemplateRegistry::select).
  std::string template_name;
  // Knob overrides on top of the template's default (or tuned) knobs; unknown names are a
  // UserError naming the template's knobs.
  Knobs knobs;
  std::optional<ShapeHint> shape_hint;  // the shape the kernel will mostly run on: selects tuned knobs
  bool ragged = false;  // the unit for ragged batches (Kernel::forward_ragged builds it; fwd_sm80, fwd_sm90)
  runtime::KernelCache* cache = nullptr;  // empty: the process-wide cache (ATTNJIT_CACHE_DIR, ...)
  int device = 0;                         // CUDA device ordinal the kernel is loaded and launched on (and "auto" asks)
  // Forward, or Backward: prepare/generate build the backward unit (`attnjit compile
  // --backward`); compile() always loads the forward, Kernel::backward builds its own.
  TemplateRole role = TemplateRole::Forward;

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
  CompileOptions& with_template(std::string name) {
    template_name = std::move(name);
    return *this;
  }
  CompileOptions& with_knobs(const Knobs& v) {
    knobs = v;
    return *this;
  }
  // The fwd_sm80 template with exactly this schedule.
  CompileOptions& with_schedule(const Schedule& v) { return with_template("fwd_sm80").with_knobs(v.to_knobs()); }
  // With no knob overrides, generate/prepare/compile use the tuning database's knobs for
  // this shape's bucket (runtime/cache/tuning_db.hpp) when there are some.
  CompileOptions& with_shape_hint(int batch, int heads_q, int heads_kv, int seq_q, int seq_k) {
    shape_hint = ShapeHint{batch, heads_q, heads_kv, seq_q, seq_k};
    return *this;
  }
  CompileOptions& with_device(int ordinal) {
    device = ordinal;
    return *this;
  }
  CompileOptions& with_role(TemplateRole v) {
    role = v;
    return *this;
  }
  CompileOptions& with_cache(runtime::KernelCache* v) {
    cache = v;
    return *this;
  }

  void validate() const;  // UserError naming the field, value, allowed set
};

// What a kernel was built for: the resolved target, template and knobs.
struct KernelConfig {
  int head_dim = 128;
  ElementType dtype = ElementType::BF16;
  std::string arch;
  std::string template_name;
  Knobs knobs;
  bool tuned = false;  // the knobs came from the tuning database
};

// Generated and compiled, not yet loaded: what `attnjit emit/compile` print.
struct PreparedKernel {
  KernelConfig config;
  const KernelTemplate* kernel_template = nullptr;  // from TemplateRegistry, lives forever
  GeneratedUnit unit;
  std::string source;  // the full translation unit, provenance header included
  std::string cache_key;
  runtime::CacheLookupResult cached;  // cubin + metadata + where it came from
  double prepare_ms = 0;              // codegen + cache lookup (+ NVRTC on a miss)

  LaunchPlan launch_plan(const ProblemShape& problem) const { return kernel_template->launch_plan(unit, problem); }
};

// Codegen only (no NVRTC). `arch` must be explicit.
PreparedKernel generate(const Variant& variant, const CompileOptions& options);
// Codegen + NVRTC through the cache. `arch` must be explicit, or "auto" with a GPU.
PreparedKernel prepare(const Variant& variant, const CompileOptions& options);

runtime::KernelCache& default_kernel_cache();

class CpuAttention;
namespace detail {
struct KernelState;
}

// The tile classes of a mask that reads tensors (documents, learned masks), built on the GPU
// by `Kernel::build_block_mask` and reusable across forward calls (e.g. every layer of a
// model) while the shape (batch, heads_q, seq_q, seq_k) and the mask tensors' contents stay
// the same. Device memory, shared by copies; empty when default-constructed.
class BlockMask {
 public:
  bool empty() const { return buffer_ == nullptr; }
  std::size_t size_bytes() const;
  // The tile classes: [B', H', q_tiles, kv_tiles] bytes (0 empty, 1 partial, 2 full), B' = batch
  // or 1, H' = heads_q or 1 (templates/block_mask/block_mask_template.hpp).
  std::uint64_t device_address() const;
  void copy_to_host(void* host, std::size_t bytes) const;  // synchronous; for tests and inspection
  // A document mask's runs, built with the classes where the kernel reads them (fwd_sm90, knob
  // doc_runs; 0 bytes otherwise): int32 [size0, size1, 2] of the id tensor, (lo, hi) per
  // position (compiler/passes/run_equality.hpp). Synchronous; for tests and inspection.
  std::size_t runs_size_bytes() const;
  void copy_runs_to_host(void* host, std::size_t bytes) const;

 private:
  friend class Kernel;
  friend struct detail::KernelState;
  std::shared_ptr<const runtime::DeviceBuffer> buffer_;
  // A document mask's runs (compiler/passes/run_equality.hpp) computed with the classes from the
  // same ids; forward calls given this mask read them instead of computing their own.
  std::shared_ptr<const runtime::DeviceBuffer> runs_;
  ProblemShape problem_;
  int device_ = 0;
  std::string built_by_;  // the cache key of the kernel that built it
};

// How Kernel::backward runs.
struct BackwardOptions {
  // Bit-identical results run to run: dQ and tensor gradients accumulate in fixed point
  // (integer sums do not depend on the order of the atomics); otherwise fp32 atomics.
  bool deterministic = false;
  double softmax_scale = 0.0;  // as in forward; 0 means 1/sqrt(head_dim)
  // Gradients of captured float tensors the score_mod reads, by tensor name: an fp32 CUDA
  // tensor of the captured tensor's shape (any strides), overwritten. A name the variant
  // does not read with a gradient (an integer tensor, a mask-only tensor) is a UserError.
  std::map<std::string, DLTensor> tensor_gradients;
  // The backward template and knob overrides (`attnjit templates`); no knobs: the ones `attnjit
  // tune --backward` stored for the shape hint the kernel was compiled with, else the defaults.
  std::string template_name;
  Knobs knobs;

  BackwardOptions& with_deterministic(bool v) {
    deterministic = v;
    return *this;
  }
  BackwardOptions& with_tensor_gradient(const std::string& tensor, const DLTensor& gradient) {
    tensor_gradients[tensor] = gradient;
    return *this;
  }
  BackwardOptions& with_knobs(const Knobs& v) {
    knobs = v;
    return *this;
  }
};

// The keys and values of a decode step (Kernel::forward_kv_cache): the cache as a server keeps
// it, with the number of keys in use per sequence.
//   paged:      k, v [num_pages, page_size, Hkv, D] and block_table int32 [B, max_pages] (stride 1
//               along a row): key j of sequence b is row j % page_size of page
//               block_table[b][j / page_size]. Entries past a sequence's last page are not read;
//               an entry outside [0, num_pages) is clamped into it.
//   contiguous: k, v [B, Hkv, capacity, D], any strides (a vAttention-style virtual allocation
//               is one), no block table.
// seq_lens: int32 [B] (stride 1), the keys in use per sequence, clamped into [0, capacity]
// (capacity = max_pages * page_size when paged); a sequence with none gives O = 0 and
// LSE = -inf. All on the kernel's device; k, v and q share the dtype.
struct KvCache {
  DLTensor k{}, v{};
  DLTensor seq_lens{};
  std::optional<DLTensor> block_table;  // set: paged
};

// A ragged batch (Kernel::forward_ragged): sequences packed one after another instead of padded.
// cu_seqlens_q / cu_seqlens_k: int32 [B + 1] CUDA tensors, non-decreasing from 0 to the packed
// totals: sequence b owns query rows [cu_seqlens_q[b], cu_seqlens_q[b + 1]) and key rows
// [cu_seqlens_k[b], cu_seqlens_k[b + 1]). max_seqlen_q / max_seqlen_k: at least the longest of
// each (the grid covers that many queries; rows of a longer sequence would be left unwritten).
// These are read on the device and trusted, like a block table.
struct RaggedBatch {
  DLTensor cu_seqlens_q{}, cu_seqlens_k{};
  int max_seqlen_q = 0, max_seqlen_k = 0;
};

// A compiled variant. With a GPU, compile() loads its CUDA unit; forward on host (kDLCPU)
// tensors runs the CPU backend (runtime/cpu) instead, built on first use. Without a GPU,
// compile() makes a CPU-only Kernel: forward takes host tensors, and what needs the CUDA unit
// (prepared, backward, build_block_mask, forward on CUDA tensors) is a RuntimeFailure saying why.
class Kernel {
 public:
  const PreparedKernel& prepared() const;
  const Variant& variant() const;
  int device() const;               // the CUDA device ordinal it was loaded on
  bool has_gpu_unit() const;        // false: compiled where there is no GPU (CPU backend only)
  const CpuAttention& cpu() const;  // the CPU backend of the variant (JIT-compiled hooks)

  // Waits for the device, then reports (UserError naming the tensor, dimension, index and
  // extent) an out-of-range read of a captured tensor by a launch since the last check. Such
  // reads are recorded only where the host could not prove every read in range; forward
  // also reports a finished launch's record before it queues another.
  void synchronize() const;

  // q: [B, Hq, Sq, D], k/v: [B, Hkv, Sk, D] (any strides with the last one 1 and rows
  // 16-byte aligned; BSHD layouts are views with permuted strides), o like q, lse
  // [B, Hq, Sq] f32 contiguous or null. All on the current CUDA device, or all host tensors
  // (the CPU backend runs them, synchronously; `stream` and `block_mask` do not apply). `stream`
  // is a CUstream / cudaStream_t (null: the legacy default stream); 0 scale means 1/sqrt(D).
  //
  // When the mask reads a tensor, forward first launches the block-mask kernel on `stream`
  // (tile classes into a scratch buffer owned by this Kernel, one per stream, grown as
  // needed), unless `block_mask` (from build_block_mask, same shape) is given. Concurrent
  // forward calls on one Kernel from several threads are safe: a mutex covers the scratch
  // lookup and both launches.
  void forward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor* lse,
               const Bindings& bindings = {}, void* stream = nullptr, double softmax_scale = 0.0,
               const BlockMask* block_mask = nullptr) const;

  // A decode step against a KV cache: q [B, Hq, Sq, D] with Sq <= 16. Each sequence computes
  // what forward would over its own seq_lens[b] keys: the hooks see q in [0, Sq), kv in
  // [0, seq_lens[b]) and kv_len = seq_lens[b] (bottom-right aligned masks put the queries at
  // the sequence's last positions, so there seq_lens[b] >= Sq: the step's own tokens are in the
  // cache, or the variant may read positions before the sequence's start); o like q, lse [B, Hq, Sq] f32 or null. Runs
  // the split-K decode template (its unit is built on first use); RoPE variants are not served yet (UserError).
  // Asynchronous on `stream`.
  void forward_kv_cache(const DLTensor& q, const KvCache& cache, const DLTensor& o, const DLTensor* lse,
                        const Bindings& bindings = {}, void* stream = nullptr, double softmax_scale = 0.0) const;
  // The unit forward_kv_cache and forward's decode-shaped calls (Sq <= 16, no template forced)
  // run (decode_sm80), or null before one of them built it. A call of more than 1024 sequences
  // (stream-K's limit) runs a split-K unit built beside it; this still names the default one.
  const PreparedKernel* prepared_decode() const;

  // A ragged batch: q [total_q, Hq, D], k and v [total_k, Hkv, D] (any token and head strides,
  // the last dimension contiguous), o like q, lse f32 [Hq, total_q] contiguous or null. Each
  // sequence computes what forward would for it alone: the hooks see b, q and kv within the
  // sequence and its own q_len and kv_len; a sequence without keys gives O = 0, LSE = -inf.
  // Runs fwd_sm90's ragged unit for a kernel compiled for fwd_sm90 (ATTNJIT_RAGGED_SM90=0 in the
  // environment opts out), else, or where it declines (RoPE), fwd_sm80's (built on first use, see
  // prepared_ragged). A mask that reads tensors launches the block-mask kernel first, its tile
  // classes per sequence over the longest sequence's tiles. Asynchronous on `stream`.
  void forward_ragged(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor* lse,
                      const RaggedBatch& batch, const Bindings& bindings = {}, void* stream = nullptr,
                      double softmax_scale = 0.0) const;
  // The unit forward_ragged runs (the compiled knobs when this kernel was compiled for its
  // template, else that template's defaults), or null before the first forward_ragged call built it.
  const PreparedKernel* prepared_ragged() const;

  // Gradients of a forward call: q, k, v and o, lse as forward took and gave them (lse is
  // required), d_out like o; writes dq like q, dk and dv like k and v (GQA: summed over the
  // query heads of a group), and the captured-tensor gradients of `options`. The first call
  // (per backward knobs) generates, compiles and loads the backward unit. Same checks as
  // forward; asynchronous on `stream`.
  void backward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor& lse,
                const DLTensor& d_out, const DLTensor& dq, const DLTensor& dk, const DLTensor& dv,
                const Bindings& bindings = {}, void* stream = nullptr, const BackwardOptions& options = {}) const;
  // The backward unit for these options (prepared and loaded on first use).
  const PreparedKernel& prepared_backward(const BackwardOptions& options = {}) const;

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

// Prepares and loads on device `options.device` (its primary context); every launch goes there
// and every tensor must live there.
Kernel compile(const Variant& variant, const CompileOptions& options = {});

// Waits for all work on a device; a failed kernel surfaces here as RuntimeFailure.
void synchronize_device(int device = 0);

}  // namespace attnjit
