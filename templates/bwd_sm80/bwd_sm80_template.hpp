// The sm80 backward template (templates/bwd_sm80.cuh): FlashAttention-2's backward with
// cp.async, ldmatrix and mma.sync, for sm_80 and newer. Preprocess (D = rowsum(dO * O)), a
// main kernel per kv block (dK, dV in registers, dQ and captured-tensor gradients added into
// fp32 or fixed-point accumulators) and a postprocess.
#pragma once

#include <memory>

#include "compiler/kernel_template.hpp"

namespace attnjit {

std::unique_ptr<KernelTemplate> make_bwd_sm80_template();

// Dynamic shared memory of the main kernel for these knobs (the formula of bwd_sm80.cuh).
int bwd_sm80_shared_bytes(int head_dim, int block_m, int warps, int stages, int row_pad);

}  // namespace attnjit
