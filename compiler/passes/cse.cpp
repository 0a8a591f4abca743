#include "compiler/passes/cse.hpp"

#include <fmt/format.h>

#include <unordered_map>

#include "compiler/error.hpp"
#include "compiler/printer.hpp"

namespace attnjit::ir {

Program eliminate_common_subexpressions(const std::vector<NodeRef>& roots) {
  Program p;
  std::unordered_map<const Node*, int> position;
  for (const auto& n : topological_order(roots)) {
    Instruction ins{n, {}, 0};
    for (const auto& a : n->args) {
      const int at = position.at(a.get());
      ins.args.push_back(at);
      ++p.instructions[static_cast<std::size_t>(at)].uses;
    }
    position[n.get()] = static_cast<int>(p.instructions.size());
    p.instructions.push_back(std::move(ins));
  }
  for (const auto& r : roots) {
    const int at = position.at(r.get());
    p.roots.push_back(at);
    ++p.instructions[static_cast<std::size_t>(at)].uses;
  }
  return p;
}

std::vector<int> Program::shared() const {
  std::vector<int> out;
  for (std::size_t i = 0; i < instructions.size(); ++i)
    if (instructions[i].uses > 1 && !is_leaf(instructions[i].node->op)) out.push_back(static_cast<int>(i));
  return out;
}

std::string Program::str(const std::vector<std::string>& root_names) const {
  std::string out;
  const auto temps = shared();
  for (std::size_t t = 0; t < temps.size(); ++t)
    out += fmt::format("  t{} = {}   # used {} times\n", t, print_expr(instructions[temps[t]].node),
                       instructions[temps[t]].uses);
  for (std::size_t r = 0; r < roots.size(); ++r)
    out += fmt::format("  {} = {}\n", r < root_names.size() ? root_names[r] : fmt::format("root{}", r),
                       print_expr(instructions[roots[r]].node));
  return out;
}

void evaluate_program(const Program& program, const EvalEnv& env, std::vector<Value>& scratch,
                      std::vector<Value>& root_values) {
  scratch.resize(program.instructions.size());
  std::vector<Value> args;
  std::vector<std::int64_t> indices;
  for (std::size_t i = 0; i < program.instructions.size(); ++i) {
    const Instruction& ins = program.instructions[i];
    const Node& n = *ins.node;
    if (n.op == Op::TensorRead) {
      indices.clear();
      for (int a : ins.args) indices.push_back(scratch[static_cast<std::size_t>(a)].i);
      if (!env.read_tensor) throw UserError(fmt::format("tensor '{}' is read but no tensor is bound", n.name));
      scratch[i] = env.read_tensor(n, indices);
    } else if (is_leaf(n.op)) {
      scratch[i] = eval_leaf(n, env);
    } else {
      args.clear();
      for (int a : ins.args) args.push_back(scratch[static_cast<std::size_t>(a)]);
      scratch[i] = apply_op(n, args);
    }
  }
  root_values.clear();
  for (int r : program.roots) root_values.push_back(scratch[static_cast<std::size_t>(r)]);
}

}  // namespace attnjit::ir
