// Pass: common-subexpression elimination. Interning already shares equal subexpressions
// in the DAG; this pass turns the DAG into a straight-line program in which each distinct
// node is computed once, and marks the nodes used more than once, which codegen binds to
// named temporaries. The reference and the property tests evaluate this program, so what
// the GPU runs and what they check have the same shape.
#pragma once

#include <string>
#include <vector>

#include "compiler/eval.hpp"
#include "compiler/ir.hpp"

namespace attnjit::ir {

struct Instruction {
  NodeRef node;
  std::vector<int> args;  // positions of the operands in Program::instructions
  int uses = 0;           // how many instructions (and roots) read this one
};

struct Program {
  std::vector<Instruction> instructions;  // topological order
  std::vector<int> roots;                 // positions of the roots, in the order given

  // Non-leaf instructions read more than once: computed once into a temporary.
  std::vector<int> shared() const;
  std::string str(const std::vector<std::string>& root_names) const;
};

Program eliminate_common_subexpressions(const std::vector<NodeRef>& roots);

// Evaluates every instruction once; returns the roots' values. `scratch` is reused
// between calls to avoid allocation in the reference's inner loop.
void evaluate_program(const Program& program, const EvalEnv& env, std::vector<Value>& scratch,
                      std::vector<Value>& root_values);

}  // namespace attnjit::ir
