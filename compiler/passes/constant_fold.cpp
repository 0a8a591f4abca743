#include "compiler/passes/constant_fold.hpp"

#include <cmath>

#include "compiler/eval.hpp"

namespace attnjit::ir {

NodeRef constant_fold(const NodeRef& root) {
  return rewrite_bottom_up(root, [](const NodeRef& n) -> NodeRef {
    if (is_leaf(n->op)) return n;
    std::vector<Value> args;
    for (const auto& a : n->args) {
      if (!is_constant(a)) return n;
      args.push_back(eval_leaf(*a, EvalEnv{}));
    }
    const Value v = apply_op(*n, args);
    switch (n->type) {
      case Type::Bool: return const_bool(v.b);
      case Type::Int: return const_int(v.i);
      case Type::Float:
        return std::isfinite(v.f) && !(v.f == 0.0 && std::signbit(v.f)) ? const_float(v.f)
                                                                        : n;  // literals have no -0.0
    }
    return n;
  });
}

}  // namespace attnjit::ir
