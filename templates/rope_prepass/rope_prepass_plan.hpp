// What the forward templates share about the RoPE pre-passes (templates/rope_prepass.cuh):
// their entry points, their launch and the rotary_dim rule.
#pragma once

#include <fmt/format.h>

#include <cstddef>

#include "compiler/kernel_template.hpp"

namespace attnjit {

inline constexpr const char* kRopeQKernelName = "attnjit_rope_q";  // Q turned once (fwd_sm90)
inline constexpr const char* kRopeKKernelName = "attnjit_rope_k";  // K turned once
inline constexpr unsigned kRopePrepassThreads = 256;               // AJ_ROPE_PREPASS_THREADS

// A variant whose rope turns more dimensions than the head has: the user's error.
inline Support rope_fits_head(const TemplateRequest& r) {
  if (const auto& rope = r.variant->rope(); rope && rope->rotary_dim > r.head_dim)
    return Support::invalid(
        fmt::format("variant '{}': rope rotary_dim {} exceeds head_dim {}; use 0 (whole head) or an even number <= {}",
                    r.variant->name(), rope->rotary_dim, r.head_dim, r.head_dim));
  return Support::yes();
}

// A pre-pass over `rows` rows of each of `heads` heads and `batch` sequences: each thread
// turns about kRopePrepassPairs pairs (the kernels loop, so any grid is correct).
inline constexpr unsigned kRopePrepassPairs = 16;  // AJ_ROPE_PREPASS_ROWS
inline KernelLaunch rope_prepass_launch(const char* kernel, const char* role, int rows, int heads, int batch,
                                        int head_dim) {
  KernelLaunch k;
  k.kernel = kernel;
  k.role = role;
  const std::size_t pairs = static_cast<std::size_t>(rows) * (head_dim / 2);
  const std::size_t per_block = std::size_t{kRopePrepassThreads} * kRopePrepassPairs;
  k.grid = {static_cast<unsigned>(pairs > 0 ? (pairs + per_block - 1) / per_block : 1), static_cast<unsigned>(heads),
            static_cast<unsigned>(batch)};
  k.block = {kRopePrepassThreads, 1, 1};
  return k;
}

}  // namespace attnjit
