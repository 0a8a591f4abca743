// The compiler driver: runs the passes in one fixed, linear order over a variant's
// expressions. With ATTNJIT_DUMP=ir in the environment it prints the IR after each pass
// to stderr, so a surprising kernel can be traced back to the pass that made it.
#pragma once

#include <string>
#include <vector>

#include "compiler/passes/cse.hpp"

namespace attnjit::ir {

struct NamedRoot {
  std::string name;  // e.g. "score_mod"
  NodeRef root;
  Type type;  // the type the root must have
};

struct LoweredExprs {
  std::vector<NamedRoot> roots;  // after folding and simplification
  Program program;               // straight-line form of all roots together
};

LoweredExprs lower(const std::vector<NamedRoot>& roots);

}  // namespace attnjit::ir
