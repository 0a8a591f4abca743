// The split-K decode template (templates/decode_sm80.cuh): for a few query rows against a long
// kv sequence, the kv sequence is cut into splits processed by separate CTAs whose results a
// combine kernel merges by their LSE, and the query heads of a GQA group share one tile, so
// K and V are read once per kv head. For Sq <= 16 (a shape hint). Not yet run on a GPU, so not
// chosen by default: by name, or by Kernel::forward for Sq <= 16 when decode_routing_enabled().
#pragma once

#include <memory>

#include "compiler/kernel_template.hpp"

namespace attnjit {

std::unique_ptr<KernelTemplate> make_decode_sm80_template();

// The template's name, and the longest query length it is chosen for.
inline constexpr const char* kDecodeTemplateName = "decode_sm80";
inline constexpr int kDecodeMaxSeqQ = 16;

// The split count for a problem: `requested` when non-zero, else enough CTAs to fill
// `target_ctas` (two per SM of an H100 by default), at most one split per kv tile.
// ATTNJIT_DECODE=1 in the environment: Kernel::forward sends Sq <= 16 to this template.
bool decode_routing_enabled();

int decode_splits(const ProblemShape& p, int head_dim, int block_n, int requested, int target_ctas = 264);

}  // namespace attnjit
