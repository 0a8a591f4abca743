// The Hopper forward template (templates/fwd_sm90.cuh): TMA into a shared-memory ring on
// mbarriers, wgmma, one producer and two or three consumer warpgroups; sm_90a only. Chosen
// before fwd_sm80 on compute capability 9.0 for head dims 64, 128 and 256.
#pragma once

#include <memory>
#include <string>

#include "compiler/kernel_template.hpp"

namespace attnjit {

inline constexpr const char* kFwdSm90TemplateName = "fwd_sm90";

std::unique_ptr<KernelTemplate> make_fwd_sm90_template();

// The unit's wgmma wrappers: aj_wgmma_ss_qk (m64 n`block_n` k16, both operands from shared
// memory, K-major) and aj_wgmma_rs_pv (m64 n`head_dim` k16, A from registers, B transposed),
// fp32 accumulators, for the unit's dtype. Generated because the operand lists depend on N.
std::string wgmma_wrappers(ElementType dtype, int block_n, int head_dim);
// aj_wgmma_ss_tt: m64 n`n` k16 with both operands MN-major in shared memory (the backward's
// dQ = dS K, templates/bwd_sm90.cuh).
std::string wgmma_ss_transposed_wrapper(ElementType dtype, int n);

// Dynamic shared memory of the kernel (templates/fwd_sm90.cuh states the same formula).
int fwd_sm90_shared_bytes(int head_dim, int block_n, int consumers, int stages, int q_buffers = 1);
// ... plus this for a split score_mod's key-part tables (AJ_SPLIT_TABLES), where they fit.
int fwd_sm90_split_table_bytes(int block_n, int consumers);

}  // namespace attnjit
