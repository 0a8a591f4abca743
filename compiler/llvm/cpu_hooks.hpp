// The variant's per-score hooks for the CPU backend (runtime/cpu): score_mod and mask_mod
// applied to a whole tile of fp32 scores at once, so that the compiled form can vectorize
// across a row of keys. Two producers share this one signature:
//   jit_cpu_hooks          the IR lowered to LLVM IR and JIT-compiled for the host CPU (ORC
//                          LLJIT), through the kernel cache;
//   interpreted_cpu_hooks  the IR evaluated per element by compiler/eval (no LLVM needed):
//                          the fallback, and an independent check of the JIT.
// Parameters and captured tensors sit in CpuHookArgs at the slots assign_slots gives them
// (compiler/codegen/hook_emitter.hpp), as in the GPU's AttnjitFwdArgs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "dsl/variant.hpp"

namespace attnjit {

namespace runtime {
class KernelCache;
}

// A captured tensor as the hooks see it: host pointer, strides and sizes in elements. Reads
// clamp each index into [0, size - 1], so every size must be at least 1. The JIT reads by the
// dtype the variant declares: `dtype` must equal it (the caller checks the binding).
struct CpuTensorArg {
  const void* data;
  std::int64_t stride[4];
  std::int64_t size[4];
  int dtype; /* ir::TensorDType as int */
};

struct CpuHookArgs {
  int seq_q = 0, seq_k = 0, heads_q = 0;
  std::int32_t int_params[16] = {};
  float float_params[16] = {};
  CpuTensorArg tensors[8] = {};
};

// s[r * ld + c] holds scale * dot(q_row, k_row) for query q0 + r and key kv0 + c; afterwards
// score_mod(...) where the mask admits the pair (mask not evaluated when apply_mask == 0), else -inf.
using CpuScoreTileFn = void (*)(float* s, std::int64_t ld, int rows, int cols, int b, int h, int q0, int kv0,
                                const CpuHookArgs* args, int apply_mask);

struct CpuHooks {
  CpuScoreTileFn score_tile = nullptr;
  bool has_score_mod = false, has_mask = false;
  std::shared_ptr<void> owner;  // keeps score_tile alive (the JIT's code, the interpreter's state)
  double compile_ms = 0;
  bool cache_hit = false;
};

// How jit_cpu_hooks compiles.
struct CpuJitOptions {
  // Where compiled objects are kept, keyed by (emitted LLVM IR, opt level, CPU name and
  // features, LLVM version): null is the process-wide kernel cache (ATTNJIT_CACHE_DIR, ...).
  runtime::KernelCache* cache = nullptr;
  bool use_cache = true;  // false: compile every time and store nothing
  int opt_level = 2;      // LLVM's -O level for the hooks, 0..3
  // Keys per vector step: 0 is the host's (16 with AVX-512, 8 with AVX, else 4); 1 is scalar code.
  int vector_width = 0;

  CpuJitOptions& with_cache(runtime::KernelCache* v) {
    cache = v;
    return *this;
  }
  CpuJitOptions& with_use_cache(bool v) {
    use_cache = v;
    return *this;
  }
  CpuJitOptions& with_opt_level(int v) {
    opt_level = v;
    return *this;
  }
  CpuJitOptions& with_vector_width(int v) {
    vector_width = v;
    return *this;
  }
  void validate() const;  // UserError naming the field
};

// JIT-compiles the variant's score_mod and mask_mod into score_tile for this host CPU.
// UserError for what the CPU backend cannot do (say what); RuntimeFailure when LLVM is absent.
CpuHooks jit_cpu_hooks(const Variant& variant, const CpuJitOptions& options = {});  // LLVM (compiler/llvm)
CpuHooks interpreted_cpu_hooks(const Variant& variant);                             // compiler/eval.hpp

// Whether jit_cpu_hooks works in this build on this machine; when not, `why` says what is
// missing (this build has no LLVM: install llvm-16-dev and rebuild; or LLVM cannot target the CPU).
bool cpu_jit_available(std::string* why = nullptr);

// The host CPU as the JIT sees it (detected at run time): LLVM's name for it, its features
// (+avx2,+fma,...), the target triple, the vector width jit_cpu_hooks uses, LLVM's version.
// RuntimeFailure without LLVM.
struct CpuJitTarget {
  std::string triple, cpu, features, llvm_version;
  int vector_width = 0;
};
CpuJitTarget cpu_jit_target();

// The LLVM IR module jit_cpu_hooks compiles for `variant` (`optimized`: after LLVM's
// passes), for reading (`attnjit emit --arch cpu`). RuntimeFailure without LLVM.
std::string cpu_hooks_llvm_ir(const Variant& variant, const CpuJitOptions& options = {}, bool optimized = false);

}  // namespace attnjit
