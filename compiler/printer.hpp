// Canonical text form of IR expressions: C-like infix with the fewest parentheses that
// keep the structure, and floats printed so that they parse back to the same bits.
// parse(print(e)) is structurally identical to e (same interned node, same hash).
#pragma once

#include <string>

#include "compiler/ir.hpp"

namespace attnjit::ir {

std::string print_expr(const NodeRef& node);

// A float literal that re-parses to exactly `value` and always reads as a float.
std::string format_float_literal(double value);

}  // namespace attnjit::ir
