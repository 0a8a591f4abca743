// The Hopper backward template (templates/bwd_sm90.cuh on top of bwd_sm80.cuh): bwd_sm80's
// kernels with the five products of the main kernel by wgmma from shared memory (a warpgroup
// per 64 keys, 128-byte-swizzled tiles); sm_90a only, head dims 64 and 128.
#pragma once

#include <memory>

#include "compiler/kernel_template.hpp"

namespace attnjit {

std::unique_ptr<KernelTemplate> make_bwd_sm90_template();

// Dynamic shared memory of the main kernel (templates/bwd_sm90.cuh's layout).
int bwd_sm90_shared_bytes(int head_dim, int stages, int dq_bulk);

}  // namespace attnjit
