// Pass: type check. The DSL checks types as expressions are built, so a failure here
// means a node was made without the builders (a bug in a pass or the parser). Running it
// first and after every rewriting pass catches such bugs at their source.
#pragma once

#include "compiler/ir.hpp"

namespace attnjit::ir {

// Throws InternalError naming the first ill-typed node. `expected` is the root's type.
void type_check(const NodeRef& root, Type expected);

}  // namespace attnjit::ir
