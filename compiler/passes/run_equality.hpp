// Pass: document masks as per-row key intervals. A document mask compares the ids of a query
// row and a key, `doc[b, q] == doc[b, kv]`: per element of a tile that is a load of the key's
// id (32 per thread and tile on fwd_sm90) and a compare. When every id's positions form one
// run (ids sorted along the row, as packed sequences are), the keys that pass are exactly the
// run that holds the row's position, an interval [lo, hi] the row alone determines.
//
// rewrite_run_equality finds one `T[i0, e] == T[i0, kv]` (T an i32 tensor of rank 2, i0
// independent of q and kv, e independent of kv, the second index exactly kv) and returns the
// mask with it replaced by
//     where(lo <= hi, kv >= lo && kv <= hi, T[i0, e] == T[i0, kv])
// with lo = R[i0, e, 0] and hi = R[i0, e, 1] reads of a derived tensor R (i32, [size0, size1,
// 2]) that a pre-pass kernel computes from T before the forward kernel (templates/
// tensor_runs.cuh): the run holding position e, its first and last index (INT_MIN / INT_MAX
// for a run that reaches the row's start / end, which keeps clamped reads exact), or lo > hi
// at every position of a row whose ids are not monotone (a value may then come back after
// another), where the original compare decides. The result equals the mask at every point.
// Since lo <= hi holds at every position of a row of T or at none, a kernel tests it once per
// tile and evaluates `fast_mask` (no fallback, so no per-element load) where it holds, the
// original mask elsewhere: a per-element select between the two costs a predicated load and
// its address per element (H200, 2026-12-01: 294 -> 182 TFLOP/s on a 3-document mask).
#pragma once

#include <optional>
#include <string>

#include "compiler/ir.hpp"

namespace attnjit::ir {

struct RunEquality {
  NodeRef mask;        // the rewritten mask
  std::string tensor;  // T
  std::string runs;    // R's name (kRunsPrefix + T)
  NodeRef monotone;    // lo <= hi: the row's ids are monotone (uniform over the row of T)
  NodeRef fast_mask;   // the mask with `kv >= lo && kv <= hi` for the where (valid where monotone)
};

inline constexpr const char* kRunsPrefix = "aj_runs_";

// The rewrite of the first run equality in `mask` (post-order), or nothing when it has none.
std::optional<RunEquality> rewrite_run_equality(const NodeRef& mask);

// A document mask whose compare is a conjunct of the whole mask, `T[b, q] == T[b, kv] && rest`
// (T the tensor of `mask`'s run equality, in either order; the row's index may be written
// `q + kv_len - q_len`, which is q where the kernel uses this, at equal lengths): `rest`, the
// conjunction of the other conjuncts (the constant true when there are none), or nothing.
// Inside one run of T's row b
// (a document, when the ids are sorted) the mask is `rest`: fwd_sm90 then schedules query blocks
// and key tiles from each document's first row (templates/doc_items.cuh).
std::optional<NodeRef> document_rest(const NodeRef& mask);

}  // namespace attnjit::ir
