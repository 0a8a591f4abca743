// The sm80 forward template (templates/fwd_sm80.cuh): the FlashAttention-2 structure with
// cp.async, ldmatrix and mma.sync, for sm_80 and newer; the fallback on every arch.
#pragma once

#include <memory>

#include "compiler/kernel_template.hpp"

namespace attnjit {

// Serves every arch and any row stride: the forward of last resort (Kernel::forward falls back
// to it when a faster template cannot take a call's tensors).
inline constexpr const char* kFallbackForwardTemplate = "fwd_sm80";

std::unique_ptr<KernelTemplate> make_fwd_sm80_template();

}  // namespace attnjit
