// The CPU backend: attention forward for any variant on host tensors, with no GPU.
//
// A tiled FlashAttention-2 loop in fp32: each task is a block of query rows of one (batch,
// head); it walks the key tiles that the mask can admit, computes S = scale * Q K^T and
// O += P V with cpu_kernels' register-blocked micro-kernels and keeps the softmax online.
// bf16 inputs on a CPU with AVX512_BF16 take bf16 products (vdpbf16ps, P rounded to bf16 as
// on the GPU) unless CpuOptions::bf16_products is off; everything else is fp32.
// Tile classes come from the host interval analysis (compiler/mask_analysis): empty tiles
// are never computed, full ones skip the mask, and only partial ones evaluate it per
// element (there, each 16-row slice only on the 16-key panels not proven full). The
// variant's score_mod and mask_mod run on whole score tiles through the CpuHooks
// (compiler/llvm/cpu_hooks.hpp): JIT-compiled by LLVM when attnjit has it, else interpreted.
// RoPE (on Q and K rows as they are loaded) and the output gate (at the end) are applied in
// fp32 here. Tasks run on the process's thread pool (runtime/cpu/thread_pool).
//
// Phases are explicit (DESIGN §7.8): compile_cpu builds the hooks; CpuAttention::forward
// checks every tensor and binding, then runs.
//
//   attnjit::CpuAttention attn = attnjit::compile_cpu(presets::causal());
//   attn.forward(q, k, v, o, &lse, bindings);
#pragma once

#include <dlpack/dlpack.h>

#include <memory>
#include <string>
#include <utility>

#include "compiler/llvm/cpu_hooks.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"

namespace attnjit {
namespace cpu {
struct TileClassTable;
}

// Who makes the hooks: the LLVM JIT, the interpreter, or the JIT when this build has it.
enum class CpuHookSource { Auto, Jit, Interpreted };
std::string cpu_hook_source_name(CpuHookSource source);  // "auto", "jit", "interpreted"

struct CpuOptions {
  CpuHookSource hooks = CpuHookSource::Auto;
  int threads = 0;  // workers of the process pool to use; 0: all of them (one per CPU it may run on)
  // Query rows per task and keys per tile (the products' sizes). 0 rows: 256 when that still
  // leaves four tasks per worker, else 128 (64 for up to 64 queries). Masks are classified on
  // 64-key sub-tiles, so block_kv must be a multiple of 64; blocks of 64 rows, and the 128 or
  // 256 of the default, also get 16-row x 16-key classes inside partial sub-tiles, so a narrow
  // band (a sliding window) or a causal diagonal computes little more than its admitted pairs.
  // 0 keys: cpu_block_kv picks per call (512 at head dims up to 128, else 256).
  int block_q = 0;
  int block_kv = 0;
  // bf16 inputs where the CPU has AVX512_BF16: products of bf16 pairs summed in fp32, with P
  // rounded to bf16 before P V as the GPU kernels do (1.6-1.85x the fp32 path on the
  // development machine). false: widen to fp32 and keep P in fp32.
  bool bf16_products = true;

  CpuOptions& with_hooks(CpuHookSource v) {
    hooks = v;
    return *this;
  }
  CpuOptions& with_threads(int v) {
    threads = v;
    return *this;
  }
  CpuOptions& with_bf16_products(bool v) {
    bf16_products = v;
    return *this;
  }
  CpuOptions& with_blocks(int q, int kv) {
    block_q = q;
    block_kv = kv;
    return *this;
  }
  void validate() const;  // UserError naming the field, value, allowed set
};

// The keys per tile a call with this head dim runs: options.block_kv, or when 0, 512 up to
// D=128 and 256 above. On the AVX-512 development machine (2026-11-30) 512 keys at D=128 made a
// 256-key window 2-6% faster and causal 1-2% (a band's rows then sit in one run, not two);
// dense was unchanged. At D=64, 512 made dense bf16 5% faster than 256.
int cpu_block_kv(const CpuOptions& options, int head_dim);

// Whether the LLVM JIT of the hooks (jit_cpu_hooks) can run: attnjit was configured with
// LLVM found, and the JIT can target this CPU (cpu_jit_available).
bool cpu_backend_has_jit();
// The hooks from `source` (Auto: the JIT when available, else the interpreter). A
// RuntimeFailure when `source` is Jit and this build has no LLVM.
CpuHooks make_cpu_hooks(const Variant& variant, CpuHookSource source);

class CpuAttention {
 public:
  // Takes hooks made for `variant` (make_cpu_hooks, jit_cpu_hooks or interpreted_cpu_hooks).
  CpuAttention(const Variant& variant, CpuHooks hooks, const CpuOptions& options = {});

  const Variant& variant() const;
  const CpuHooks& hooks() const;
  const CpuOptions& options() const;

  // q: [B, Hq, Sq, D], k: [B, Hkv, Sk, D], v: [B, Hkv, Sk, Dv], o: [B, Hq, Sq, Dv], all host
  // memory of one dtype (bf16, fp16 or f32), any strides; Hq a multiple of Hkv (GQA/MQA:
  // query head h reads kv head h / (Hq / Hkv)). lse: f32 [B, Hq, Sq] (any strides) or null;
  // the natural log of the softmax denominator. Captured tensors bound in host memory.
  // 0 scale means 1/sqrt(D). A fully masked row gets O = 0 and LSE = -inf. O is rounded to
  // its dtype once, at the end. Blocks the calling thread until done; safe to call from
  // several threads at once (a call that finds the pool busy runs on its own thread).
  void forward(const DLTensor& q, const DLTensor& k, const DLTensor& v, const DLTensor& o, const DLTensor* lse,
               const Bindings& bindings = {}, double softmax_scale = 0.0) const;

  // What one forward call did, for benchmarks: tiles computed (full / partial) and skipped,
  // counted in 64-key sub-tiles of block_q rows.
  struct Stats {
    long long full_tiles = 0, partial_tiles = 0, empty_tiles = 0;
    double classify_ms = 0;       // building the tile classes (near 0 when the last call's are reused)
    bool classes_reused = false;  // the last call's tile classes served this one
    int block_q = 0;              // the query rows per task
  };
  Stats last_stats() const;  // of the last forward call on this object (any thread)

 private:
  struct State;
  struct TileClasses {
    std::shared_ptr<const cpu::TileClassTable> table;
    int block_q = 0;  // the rows per task the table was made for
    bool reused = false;
  };
  static TileClasses tile_classes(State& state, int batch, int heads_q, int seq_q, int seq_k, const Bindings& bindings);
  std::shared_ptr<State> state_;
};

// make_cpu_hooks(variant, options.hooks), then the CpuAttention.
CpuAttention compile_cpu(const Variant& variant, const CpuOptions& options = {});

}  // namespace attnjit
