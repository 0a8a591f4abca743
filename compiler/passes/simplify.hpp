// Pass: algebraic simplification. Applies identities that hold exactly under the
// evaluator's semantics (x + 0, x * 1, !!x, where(true, a, b), integer x - x, ...), so
// simplification never changes a value. Float rewrites that could change rounding, NaN or
// infinity behaviour (x * 0, reassociation) are deliberately not done.
#pragma once

#include "compiler/ir.hpp"

namespace attnjit::ir {

NodeRef simplify(const NodeRef& root);

}  // namespace attnjit::ir
