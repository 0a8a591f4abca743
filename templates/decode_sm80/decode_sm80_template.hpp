// The decode template (templates/decode_sm80.cuh): for a few query rows against a long kv
// sequence, the kv sequence is cut into pieces processed by separate CTAs whose results the
// last piece to finish merges by their LSE, and the query heads of a GQA group share one tile,
// so K and V are read once per kv head. Stream-K (the default) cuts all sequences' kv tiles
// into equal CTA ranges, from the lengths on the device; split-K (stream_k = 0) cuts each
// sequence's capacity into the same number of splits. For Sq <= 16: Kernel::forward sends such calls to it by
// itself (decode_routing_enabled()); by name (a shape hint) otherwise. Measured on an H200
// (docs/benchmarks.md, 2026-11-28): 3.1-3.7x the bandwidth of fwd_sm80 on decode shapes.
#pragma once

#include <memory>

#include "compiler/kernel_template.hpp"

namespace attnjit {

std::unique_ptr<KernelTemplate> make_decode_sm80_template();

// The template's name, and the longest query length it is chosen for.
inline constexpr const char* kDecodeTemplateName = "decode_sm80";
inline constexpr int kDecodeMaxSeqQ = 16;
// The most sequences a stream-K launch takes (each CTA keeps the batch's tile prefix in shared
// memory: AJ_STREAM_K_MAX_BATCH in templates/decode_schedule.h, checked equal); larger batches run split-K.
inline constexpr int kDecodeStreamKMaxBatch = 1024;

// Kernel::forward sends Sq <= 16 to this template unless ATTNJIT_DECODE=0 is in the environment.
bool decode_routing_enabled();

// The split count for a problem: `requested` when non-zero, else the fewest splits whose CTAs
// keep the last of their waves over `slots` (resident CTAs on the whole GPU) at least 85% as
// busy as the best split count does; never more splits than kv tiles, and a count whose splits
// hold equal numbers of tiles (what the launch plan makes of it).
int decode_splits(const ProblemShape& p, int block_n, int requested, int slots);

}  // namespace attnjit
