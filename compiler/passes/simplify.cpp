#include "compiler/passes/simplify.hpp"

namespace attnjit::ir {
namespace {

bool is_int_const(const NodeRef& n, std::int64_t v) { return n->op == Op::ConstInt && n->int_value == v; }
bool is_float_const(const NodeRef& n, double v) { return n->op == Op::ConstFloat && n->float_value == v; }
bool is_zero(const NodeRef& n) { return is_int_const(n, 0) || is_float_const(n, 0.0); }
bool is_one(const NodeRef& n) { return is_int_const(n, 1) || is_float_const(n, 1.0); }
bool is_bool_const(const NodeRef& n, bool v) { return n->op == Op::ConstBool && (n->int_value != 0) == v; }

NodeRef simplify_node(const NodeRef& n) {
  const auto arg = [&](std::size_t i) -> const NodeRef& { return n->args[i]; };
  const bool ints = !n->args.empty() && arg(0)->type == Type::Int;
  switch (n->op) {
    case Op::Add:  // ints only: for floats, -0.0 + 0.0 is +0.0, so x + 0.0 is not x
      if (ints && is_zero(arg(1))) return arg(0);
      if (ints && is_zero(arg(0))) return arg(1);
      break;
    case Op::Sub:
      if (is_zero(arg(1))) return arg(0);
      if (ints && arg(0) == arg(1)) return const_int(0);
      break;
    case Op::Mul:
      if (is_one(arg(1))) return arg(0);
      if (is_one(arg(0))) return arg(1);
      if (ints && (is_zero(arg(0)) || is_zero(arg(1)))) return const_int(0);
      break;
    case Op::Div:
      if (is_one(arg(1))) return arg(0);
      break;
    case Op::Mod:
      if (is_one(arg(1))) return const_int(0);
      break;
    case Op::Neg:
      if (arg(0)->op == Op::Neg) return arg(0)->args[0];
      break;
    case Op::Not:
      if (arg(0)->op == Op::Not) return arg(0)->args[0];
      break;
    case Op::And:
      if (is_bool_const(arg(0), true)) return arg(1);
      if (is_bool_const(arg(1), true)) return arg(0);
      if (is_bool_const(arg(0), false) || is_bool_const(arg(1), false)) return const_bool(false);
      if (arg(0) == arg(1)) return arg(0);
      break;
    case Op::Or:
      if (is_bool_const(arg(0), false)) return arg(1);
      if (is_bool_const(arg(1), false)) return arg(0);
      if (is_bool_const(arg(0), true) || is_bool_const(arg(1), true)) return const_bool(true);
      if (arg(0) == arg(1)) return arg(0);
      break;
    case Op::Where:
      if (is_bool_const(arg(0), true)) return arg(1);
      if (is_bool_const(arg(0), false)) return arg(2);
      if (arg(1) == arg(2)) return arg(1);
      if (arg(0)->op == Op::Not) return make_node(Op::Where, n->type, {arg(0)->args[0], arg(2), arg(1)});
      break;
    case Op::Min:
    case Op::Max:
      if (arg(0) == arg(1)) return arg(0);
      break;
    case Op::Eq:
    case Op::Le:
    case Op::Ge:
      if (ints && arg(0) == arg(1)) return const_bool(true);
      break;
    case Op::Ne:
    case Op::Lt:
    case Op::Gt:
      if (ints && arg(0) == arg(1)) return const_bool(false);
      break;
    default: break;
  }
  return n;
}

}  // namespace

NodeRef simplify(const NodeRef& root) {
  // Iterate to a fixed point: one rewrite can expose another (where(!c, a, a)).
  NodeRef current = root;
  for (int round = 0; round < 8; ++round) {
    NodeRef next = rewrite_bottom_up(current, simplify_node);
    if (next == current) break;
    current = next;
  }
  return current;
}

}  // namespace attnjit::ir
