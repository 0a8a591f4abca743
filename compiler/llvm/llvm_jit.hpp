// The LLVM side of jit_cpu_hooks (compiler/llvm/cpu_hooks.hpp), compiled only when LLVM was
// found: host CPU detection, LLVM's optimization pipeline, object emission, the kernel
// cache, and loading into one process-wide ORC LLJIT (a JITDylib per loaded object, removed
// when the last CpuHooks that uses it goes away).
#pragma once

#include <string>

#include "compiler/llvm/cpu_hooks.hpp"

namespace attnjit::cpu_llvm {

bool jit_available(std::string* why);
CpuJitTarget host_target();
CpuHooks jit_hooks(const Variant& variant, const CpuJitOptions& options);
std::string module_text(const Variant& variant, const CpuJitOptions& options, bool optimized);

}  // namespace attnjit::cpu_llvm
