#include "compiler/passes/type_check.hpp"

#include <fmt/format.h>

#include "compiler/error.hpp"
#include "compiler/printer.hpp"

namespace attnjit::ir {
namespace {

bool numeric(Type t) { return t == Type::Int || t == Type::Float; }

// The type a well-formed node of this op must have, or nullopt-like false when ill-formed.
bool well_typed(const Node& n) {
  const auto arg = [&](std::size_t i) { return n.args[i]->type; };
  if (arity(n.op) >= 0 && static_cast<int>(n.args.size()) != arity(n.op)) return false;
  switch (n.op) {
    case Op::ConstBool: return n.type == Type::Bool;
    case Op::ConstInt:
    case Op::Index: return n.type == Type::Int;
    case Op::ConstFloat:
    case Op::Score: return n.type == Type::Float;
    case Op::Param: return numeric(n.type);
    case Op::TensorRead:
      if (static_cast<std::int64_t>(n.args.size()) != n.int_value || n.type != value_type_of(n.tensor_dtype))
        return false;
      for (const auto& a : n.args)
        if (a->type != Type::Int) return false;
      return true;
    case Op::Neg:
    case Op::Abs: return numeric(arg(0)) && n.type == arg(0);
    case Op::Not: return arg(0) == Type::Bool && n.type == Type::Bool;
    case Op::ToFloat: return arg(0) != Type::Float && n.type == Type::Float;
    case Op::ToInt: return arg(0) != Type::Int && n.type == Type::Int;
    case Op::And:
    case Op::Or: return arg(0) == Type::Bool && arg(1) == Type::Bool && n.type == Type::Bool;
    case Op::Where: return arg(0) == Type::Bool && arg(1) == arg(2) && n.type == arg(1);
    case Op::Mod: return arg(0) == Type::Int && arg(1) == Type::Int && n.type == Type::Int;
    case Op::Eq:
    case Op::Ne: return arg(0) == arg(1) && n.type == Type::Bool;
    default: break;
  }
  if (is_comparison(n.op)) return numeric(arg(0)) && arg(0) == arg(1) && n.type == Type::Bool;
  if (is_binary(n.op)) return numeric(arg(0)) && arg(0) == arg(1) && n.type == arg(0);
  // Float functions.
  return arg(0) == Type::Float && n.type == Type::Float;
}

}  // namespace

void type_check(const NodeRef& root, Type expected) {
  for (const auto& n : topological_order({root}))
    if (!well_typed(*n))
      throw InternalError(
          fmt::format("ill-typed IR node '{}' of type {} in `{}`", op_name(n->op), type_name(n->type), print_expr(n)));
  if (root->type != expected)
    throw InternalError(fmt::format("expression `{}` has type {}, expected {}", print_expr(root), type_name(root->type),
                                    type_name(expected)));
}

}  // namespace attnjit::ir
