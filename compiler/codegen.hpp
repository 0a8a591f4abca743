// Codegen: lowers a variant plus a kernel configuration to one self-contained CUDA
// translation unit for NVRTC (no includes, no include path).
//
// The unit is: a provenance header (variant text, schedule, cache key), the kernel ABI
// (templates/abi.h), the helper templates, the configuration macros, three generated hook
// functions (aj_score_mod, aj_mask_mod, aj_tile_class) that keep the user's names for
// parameters and tensors, and the kernel template; when the mask reads a tensor, also the
// block-mask kernel (templates/block_mask.cuh). The generated code is meant to be read.
#pragma once

#include <string>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/schedule.hpp"
#include "dsl/variant.hpp"

namespace attnjit {

struct KernelConfig {
  int head_dim = 128;
  ElementType dtype = ElementType::BF16;
  Schedule schedule;
  std::string arch = "sm_90a";
};

struct GeneratedSource {
  std::string body;         // everything after the provenance header: what the cache key hashes
  std::string kernel_name;  // "attnjit_fwd"
  ArgumentSlots slots;
  int shared_memory_bytes = 0;

  // When the mask reads a tensor, the unit also holds a block-mask kernel
  // (templates/block_mask.cuh) that writes the tile classes the forward kernel reads
  // through args.tile_classes; empty otherwise. Its buffer is [B', H', q_tiles, kv_tiles]
  // bytes with B' = batch if block_mask_per_batch else 1, H' = heads_q if
  // block_mask_per_head else 1 (the classes do not depend on an index the mask never uses).
  std::string block_mask_kernel_name;
  bool block_mask_per_batch = false;
  bool block_mask_per_head = false;
  bool has_block_mask() const { return !block_mask_kernel_name.empty(); }

  // The full translation unit: the provenance header (with `cache_key`) followed by body.
  std::string with_header(const Variant& variant, const KernelConfig& config, const std::string& cache_key) const;
};

// Throws UserError for what the GPU path cannot do yet (unsupported hooks, too many
// parameters or tensors, an invalid schedule).
GeneratedSource generate_forward(const Variant& variant, const KernelConfig& config);

}  // namespace attnjit
