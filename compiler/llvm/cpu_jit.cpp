// The CPU JIT's entry points (see cpu_hooks.hpp), in every build: they forward to
// compiler/llvm/llvm_jit.cpp when LLVM was found and say so clearly when it was not.
#include <fmt/format.h>

#include "compiler/error.hpp"
#include "compiler/llvm/cpu_hooks.hpp"

#if ATTNJIT_HAVE_LLVM
#include "compiler/llvm/llvm_jit.hpp"
#endif

namespace attnjit {
namespace {

#if !ATTNJIT_HAVE_LLVM
constexpr const char* kNoLlvm =
    "this attnjit was built without LLVM, so CPU hooks cannot be JIT-compiled; install llvm-16-dev "
    "(tools/setup.sh does) and rebuild, or use interpreted_cpu_hooks (slow)";
#endif

}  // namespace

void CpuJitOptions::validate() const {
  if (opt_level < 0 || opt_level > 3)
    throw UserError(fmt::format("CpuJitOptions.opt_level is {}; allowed: 0, 1, 2 or 3 (LLVM's -O levels)", opt_level));
  if (vector_width < 0 || vector_width > 64 || (vector_width & (vector_width - 1)) != 0)
    throw UserError(
        fmt::format("CpuJitOptions.vector_width is {}; allowed: 0 (the host's), 1 (scalar) or a power of two up to 64",
                    vector_width));
}

bool cpu_jit_available(std::string* why) {
#if ATTNJIT_HAVE_LLVM
  return cpu_llvm::jit_available(why);
#else
  if (why) *why = kNoLlvm;
  return false;
#endif
}

CpuJitTarget cpu_jit_target() {
#if ATTNJIT_HAVE_LLVM
  return cpu_llvm::host_target();
#else
  throw RuntimeFailure(kNoLlvm);
#endif
}

CpuHooks jit_cpu_hooks(const Variant& variant, const CpuJitOptions& options) {
  options.validate();
#if ATTNJIT_HAVE_LLVM
  return cpu_llvm::jit_hooks(variant, options);
#else
  (void)variant;
  throw RuntimeFailure(kNoLlvm);
#endif
}

std::string cpu_hooks_llvm_ir(const Variant& variant, const CpuJitOptions& options, bool optimized) {
  options.validate();
#if ATTNJIT_HAVE_LLVM
  return cpu_llvm::module_text(variant, options, optimized);
#else
  (void)variant;
  (void)optimized;
  throw RuntimeFailure(kNoLlvm);
#endif
}

}  // namespace attnjit
