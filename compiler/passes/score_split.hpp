// Pass: the additive split of a score_mod. Many biases are a sum of a part only the key
// determines and a part only the query row determines: ALiBi's slope[h] * (kv - q), a forget
// gate's c[b, h, q] - c[b, h, kv]. Softmax ignores a per-row constant, so a kernel need not
// evaluate the bias per element: the key part once per key of a tile (shared by every row),
// the row part once per row for the LSE only.
//
// When score_mod = score + col + row with col free of q and row free of kv (and neither
// reading the score), split_score_mod returns both, taken around an anchor row: an Index node
// named `aj_anchor` that a kernel binds to one query row of its block, so that integer
// differences such as kv - q are split exactly into (kv - anchor) and (anchor - q) and stay
// small near the diagonal, where the probabilities are large. For any anchor,
// col(kv, anchor) + row(q, anchor) equals score_mod - score up to fp32 rounding.
#pragma once

#include <optional>

#include "compiler/ir.hpp"

namespace attnjit::ir {

struct ScoreSplit {
  NodeRef col;  // Float; reads kv, b, h, aj_anchor, parameters, tensors; never q or the score
  NodeRef row;  // Float; reads q, b, h, aj_anchor, parameters, tensors; never kv or the score
};

// The anchor row index (Int) the split's parts read.
NodeRef anchor_index();
inline constexpr const char* kAnchorName = "aj_anchor";

// The split of `score_mod`, or nothing when it is not score + (key part) + (row part) in the
// forms the pass knows: sums, differences and negations; products and quotients by factors
// that use neither q nor kv; int-to-float conversions of integer sums. The identity
// score_mod (score alone) has no split: there is nothing to move.
std::optional<ScoreSplit> split_score_mod(const NodeRef& score_mod);

}  // namespace attnjit::ir
