// Pass: symbolic differentiation of a score_mod. The backward kernels and the CPU reference
// backward chain dS (the gradient at the modified score) through score_mod to the raw score
// and to every captured float tensor the score_mod reads; this pass gives those partial
// derivatives as IR, simplified like the forward hooks, so both backends evaluate the same
// expressions. Subgradient conventions (where, min, max, abs, floor, casts) and what is not
// differentiable are documented in docs/variant-language.md ("Gradients").
#pragma once

#include <vector>

#include "compiler/ir.hpp"

namespace attnjit::ir {

// One read of a float captured tensor inside score_mod, and the partial derivative of
// score_mod with respect to the value read there.
struct TensorReadGradient {
  NodeRef read;        // the TensorRead node (op == Op::TensorRead, Float type); its args are the index expressions
  NodeRef derivative;  // d score_mod / d read: a Float expression over score, indices, params and tensor reads
  // The read and its derivative are the same for every key of a query row (they use
  // neither kv nor score). Softmax is shift invariant along kv, so the attention's exact
  // gradient through this read is zero: its share is derivative * (sum of the row's dS) and
  // that sum is 0. The backends add nothing for such a read; summing dS would only add the
  // rounding of D = rowsum(dO * O) (the forget gate's query-side read).
  bool row_constant = false;
};

struct ScoreModDerivatives {
  // d score_mod / d score (const_float(1) for the identity).
  NodeRef d_score;
  // One per distinct float TensorRead node reachable in score_mod, in topological order
  // (reads of integer and bool tensors get none). Reads are score_mod's own nodes, as given.
  std::vector<TensorReadGradient> tensor_reads;
};

// Every derivative is simplified (constant_fold, simplify, constant_fold) and type-checked:
// d(score * 2) / d score is the constant 2. Throws attnjit::UserError (compiler/error.hpp)
// naming the sub-expression (printed text form) when something cannot be differentiated: a
// float tensor read whose index depends on the score or on a float tensor read (the
// gradient through an index is undefined), or a score_mod that is not a float expression.
// A read that is constant along each query row is marked row_constant (see above).
ScoreModDerivatives differentiate_score_mod(const NodeRef& score_mod);

}  // namespace attnjit::ir
