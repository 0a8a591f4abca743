// The schedule: how a variant is computed (tile sizes, warps, pipeline stages), kept
// apart from what is computed. Heuristics choose a default; a user or the autotuner can
// override it; `validate` rejects what the kernel template cannot instantiate.
#pragma once

#include <string>

#include "compiler/knobs.hpp"

namespace attnjit {

enum class ElementType { BF16, FP16 };
std::string element_type_name(ElementType t);             // "bf16" / "fp16"
ElementType parse_element_type(const std::string& text);  // UserError listing the allowed names

struct Schedule {
  int block_m = 128;  // query rows per CTA
  int block_n = 64;   // keys per kv tile
  int num_warps = 4;  // each warp owns block_m / num_warps rows (16 or 32)
  int stages = 1;     // kv buffers in shared memory (2 = double buffering)

  Schedule& with_block_m(int v) {
    block_m = v;
    return *this;
  }
  Schedule& with_block_n(int v) {
    block_n = v;
    return *this;
  }
  Schedule& with_num_warps(int v) {
    num_warps = v;
    return *this;
  }
  Schedule& with_stages(int v) {
    stages = v;
    return *this;
  }

  // Throws UserError naming the field, the value and the allowed set. The one-argument form
  // checks shared memory against 227 KiB, the largest opt-in limit of any sm_80+ part; pass
  // the device's (or the arch's, max_shared_memory_for_arch) opt-in limit for a tighter check.
  void validate(int head_dim) const;
  void validate(int head_dim, int max_shared_memory_bytes) const;
  // Dynamic shared memory the forward kernel needs (templates/fwd_sm80.cuh's formula).
  int shared_memory_bytes(int head_dim) const;
  std::string str() const;  // "block_m=128 block_n=64 warps=4 stages=1"

  // The fwd_sm80 template's knobs: block_m, block_n, warps, stages.
  Knobs to_knobs() const;
  static Schedule from_knobs(const Knobs& knobs);  // InternalError when a knob is missing

  // The measured default for a head dimension (docs/kernels.md).
  static Schedule default_for(int head_dim);

  friend bool operator==(const Schedule&, const Schedule&) = default;
};

// The opt-in dynamic shared memory limit per block of an arch (sm_80: 163 KiB; sm_86, sm_89:
// 99 KiB; sm_90, sm_90a: 227 KiB); 227 KiB for an unknown name.
int max_shared_memory_for_arch(const std::string& arch);

// Head dimensions the forward kernel supports.
bool is_supported_head_dim(int head_dim);

}  // namespace attnjit
