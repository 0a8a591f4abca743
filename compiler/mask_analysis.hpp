// Mask analysis: answers, for a whole tile of (q, kv) pairs, whether the mask is false
// everywhere (empty: skip the tile, never load it), true everywhere (full: no per-element
// mask needed), or mixed (partial).
//
// It works by interval arithmetic over the mask expression. To make it exact for the
// masks people write (causal, windows, prefixes, strided patterns), every comparison of
// two affine integer expressions in b, h, q, kv, the lengths and runtime parameters is
// first rewritten as `sum(coef * var) + c OP 0`, in which each variable appears once, so
// plain interval arithmetic gives its exact range over the tile. Anything it cannot
// bound (tensor reads, float arithmetic beyond + and -) makes the answer "partial": the
// analysis is conservative, never wrong. The arithmetic itself lives in one header,
// templates/interval.h, which this analysis includes and codegen pastes into the generated
// CUDA, so the GPU's per-tile answer (aj_tile_class) is computed by the same code.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>

#include "compiler/ir.hpp"

enum AjCmp : int;  // templates/interval.h: a comparison operator over ranges

namespace attnjit::ir {

enum class TileClass : int { Empty = 0, Partial = 1, Full = 2 };

struct IntRange {
  std::int64_t lo, hi;
};

// The box of index values a tile covers (inclusive), and the launch's scalars.
struct TileBox {
  IntRange b{0, 0}, h{0, 0}, q{0, 0}, kv{0, 0};
  std::int64_t q_len = 1, kv_len = 1, num_heads = 1;
  std::unordered_map<std::string, std::int64_t> int_params;
  std::unordered_map<std::string, double> float_params;
  // Optional: the values a captured tensor read can take when its indices range over `index`
  // (one range per dimension), e.g. found by scanning the bound tensor on the host (the CPU
  // backend classifies document masks so). Empty, or nullopt from it: the read is unknown.
  std::function<std::optional<std::pair<double, double>>(const Node& read, std::span<const IntRange> index)>
      tensor_range;
};

// Rewrites comparisons of affine int expressions into the single-occurrence form above.
// The result computes the same boolean as `mask` at every point.
NodeRef normalize_for_intervals(const NodeRef& mask);

// The range an int expression takes over the box (used to size tensors a variant reads).
IntRange int_range_of(const NodeRef& expr, const TileBox& box);

// Classifies the tile using the normalized mask.
TileClass classify_tile(const NodeRef& normalized_mask, const TileBox& box);

// The AjCmp (templates/interval.h) that evaluates comparison `op` over ranges (codegen emits
// its name, aj_cmp_name). InternalError when `op` is not a comparison.
AjCmp interval_comparison(Op op);

}  // namespace attnjit::ir
