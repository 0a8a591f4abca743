// Pass: constant folding. Evaluates every operator whose operands are all constants, with
// the evaluator's exact semantics (so folding never changes a value), and leaves alone
// float results that are not finite (they have no literal in the text form).
#pragma once

#include "compiler/ir.hpp"

namespace attnjit::ir {

NodeRef constant_fold(const NodeRef& root);

}  // namespace attnjit::ir
