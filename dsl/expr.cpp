// Expression builders with type checking at construction (see expr.hpp).
#include "dsl/expr.hpp"

#include <fmt/format.h>

#include <cctype>

#include "compiler/printer.hpp"

namespace attnjit {
namespace {

using ir::Op;
using ir::Type;

std::string describe(const Expr& e) {
  return fmt::format("{} `{}`", ir::type_name(e.type()), ir::print_expr(e.node()));
}

bool is_numeric(Type t) { return t == Type::Int || t == Type::Float; }

Expr promote_to_float(const Expr& e) {
  if (e.type() == Type::Float) return e;
  // A promoted int literal becomes a float literal: `score * 2` prints as `score * 2.0`.
  if (e.node()->op == Op::ConstInt) return Expr(static_cast<double>(e.node()->int_value));
  return Expr(ir::make_node(Op::ToFloat, Type::Float, {e.node()}));
}

[[noreturn]] void fail(const std::string& message) { throw UserError(message); }

void require_numeric(Op op, const Expr& e, std::string_view side) {
  if (is_numeric(e.type())) return;
  fail(
      fmt::format("type error in '{}': {} operand is {}, but '{}' needs int or float. "
                  "To use a condition as a number write where(cond, 1.0, 0.0)",
                  ir::op_name(op), side, describe(e), ir::op_name(op)));
}

void require_bool(Op op, const Expr& e, std::string_view side) {
  if (e.type() == Type::Bool) return;
  fail(fmt::format("type error in '{}': {} operand is {}, but '{}' needs bool. Compare it first, e.g. `{} > 0`",
                   ir::op_name(op), side, describe(e), ir::op_name(op), ir::print_expr(e.node())));
}

bool is_float_function(Op op) {
  switch (op) {
    case Op::Exp:
    case Op::Exp2:
    case Op::Log:
    case Op::Log2:
    case Op::Tanh:
    case Op::Sigmoid:
    case Op::Sqrt:
    case Op::Floor: return true;
    default: return false;
  }
}

}  // namespace

Expr::Expr(int value) : node_(ir::const_int(value)) {}
Expr::Expr(long value) : node_(ir::const_int(value)) {}
Expr::Expr(long long value) : node_(ir::const_int(value)) {}
Expr::Expr(double value) : node_(ir::const_float(value)) {}
Expr::Expr(float value) : node_(ir::const_float(value)) {}
Expr::Expr(bool value) : node_(ir::const_bool(value)) {}
Expr::Expr(ir::NodeRef node) : node_(std::move(node)) {
  if (!node_) throw InternalError("Expr built from a null IR node");
}

std::string Expr::str() const { return ir::print_expr(node_); }

Expr make_index(std::string_view name) {
  if (!ir::is_index_name(name)) throw InternalError(fmt::format("unknown index variable '{}'", name));
  return Expr(ir::make_node(Op::Index, Type::Int, {}, 0, 0.0, std::string(name)));
}

namespace dsl {
Expr batch_index() { return make_index("b"); }
Expr head_index() { return make_index("h"); }
Expr query_index() { return make_index("q"); }
Expr key_index() { return make_index("kv"); }
Expr query_length() { return make_index("q_len"); }
Expr key_length() { return make_index("kv_len"); }
Expr head_count() { return make_index("num_heads"); }
Expr score_value() { return Expr(ir::make_node(Op::Score, Type::Float, {})); }
}  // namespace dsl

bool is_valid_user_name(std::string_view name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return !ir::is_index_name(name) && !ir::is_reserved_word(name);
}

Expr make_param(const std::string& name, Type type) {
  if (!is_valid_user_name(name))
    fail(
        fmt::format("invalid parameter name '{}': use an identifier ([A-Za-z_][A-Za-z0-9_]*) that is not a "
                    "built-in name (b, h, q, kv, q_len, kv_len, num_heads, score) or a function name",
                    name));
  if (type == Type::Bool) fail(fmt::format("parameter '{}' is bool; parameters are int or float", name));
  return Expr(ir::make_node(Op::Param, type, {}, 0, 0.0, name));
}

Expr param_int(const std::string& name) { return make_param(name, Type::Int); }
Expr param_float(const std::string& name) { return make_param(name, Type::Float); }

Tensor::Tensor(std::string name, ir::TensorDType dtype, int rank) : name_(std::move(name)), dtype_(dtype), rank_(rank) {
  if (!is_valid_user_name(name_))
    fail(fmt::format("invalid tensor name '{}': use an identifier that is not a built-in or function name", name_));
  if (rank < 1 || rank > 4) fail(fmt::format("tensor '{}' has rank {}; allowed ranks are 1 to 4", name_, rank));
}

Expr Tensor::at(const std::vector<Expr>& indices) const {
  if (static_cast<int>(indices.size()) != rank_)
    fail(fmt::format("tensor '{}' has rank {} but is indexed with {} {}; give exactly {} index expressions", name_,
                     rank_, indices.size(), indices.size() == 1 ? "index" : "indices", rank_));
  std::vector<ir::NodeRef> args;
  for (std::size_t i = 0; i < indices.size(); ++i) {
    if (indices[i].type() != Type::Int)
      fail(fmt::format("tensor '{}': index {} is {}, but indices must be int. Convert with to_int(...)", name_, i,
                       describe(indices[i])));
    args.push_back(indices[i].node());
  }
  return Expr(ir::make_node(Op::TensorRead, ir::value_type_of(dtype_), std::move(args), rank_, 0.0, name_, dtype_));
}

Expr apply_unary(Op op, const Expr& a) {
  switch (op) {
    case Op::Neg:
    case Op::Abs: require_numeric(op, a, "the"); return Expr(ir::make_node(op, a.type(), {a.node()}));
    case Op::Not: require_bool(op, a, "the"); return Expr(ir::make_node(op, Type::Bool, {a.node()}));
    case Op::ToFloat:
      if (a.type() == Type::Float) return a;
      return Expr(ir::make_node(op, Type::Float, {a.node()}));
    case Op::ToInt:
      if (a.type() == Type::Int) return a;
      return Expr(ir::make_node(op, Type::Int, {a.node()}));
    default: break;
  }
  if (!is_float_function(op)) throw InternalError(fmt::format("'{}' is not a unary operator", ir::op_name(op)));
  require_numeric(op, a, "the");
  return Expr(ir::make_node(op, Type::Float, {promote_to_float(a).node()}));
}

Expr apply_binary(Op op, const Expr& a, const Expr& b) {
  if (op == Op::And || op == Op::Or) {
    require_bool(op, a, "left");
    require_bool(op, b, "right");
    return Expr(ir::make_node(op, Type::Bool, {a.node(), b.node()}));
  }
  if ((op == Op::Eq || op == Op::Ne) && a.type() == Type::Bool && b.type() == Type::Bool)
    return Expr(ir::make_node(op, Type::Bool, {a.node(), b.node()}));
  require_numeric(op, a, "left");
  require_numeric(op, b, "right");
  if (op == Op::Mod && (a.type() != Type::Int || b.type() != Type::Int))
    fail(
        fmt::format("type error in '%': operands are {} and {}, but '%' needs two ints. "
                    "For floats write x - y * floor(x / y)",
                    describe(a), describe(b)));
  const bool both_int = a.type() == Type::Int && b.type() == Type::Int;
  const Expr lhs = both_int ? a : promote_to_float(a);
  const Expr rhs = both_int ? b : promote_to_float(b);
  const Type result = ir::is_comparison(op) ? Type::Bool : lhs.type();
  return Expr(ir::make_node(op, result, {lhs.node(), rhs.node()}));
}

Expr operator-(const Expr& a) { return apply_unary(Op::Neg, a); }
Expr operator!(const Expr& a) { return apply_unary(Op::Not, a); }
Expr operator+(const Expr& a, const Expr& b) { return apply_binary(Op::Add, a, b); }
Expr operator-(const Expr& a, const Expr& b) { return apply_binary(Op::Sub, a, b); }
Expr operator*(const Expr& a, const Expr& b) { return apply_binary(Op::Mul, a, b); }
Expr operator/(const Expr& a, const Expr& b) { return apply_binary(Op::Div, a, b); }
Expr operator%(const Expr& a, const Expr& b) { return apply_binary(Op::Mod, a, b); }
Expr operator<(const Expr& a, const Expr& b) { return apply_binary(Op::Lt, a, b); }
Expr operator<=(const Expr& a, const Expr& b) { return apply_binary(Op::Le, a, b); }
Expr operator>(const Expr& a, const Expr& b) { return apply_binary(Op::Gt, a, b); }
Expr operator>=(const Expr& a, const Expr& b) { return apply_binary(Op::Ge, a, b); }
Expr operator==(const Expr& a, const Expr& b) { return apply_binary(Op::Eq, a, b); }
Expr operator!=(const Expr& a, const Expr& b) { return apply_binary(Op::Ne, a, b); }
Expr operator&&(const Expr& a, const Expr& b) { return apply_binary(Op::And, a, b); }
Expr operator||(const Expr& a, const Expr& b) { return apply_binary(Op::Or, a, b); }

Expr where(const Expr& condition, const Expr& if_true, const Expr& if_false) {
  if (condition.type() != Type::Bool)
    fail(fmt::format("type error in 'where': the condition is {}, but it must be bool. Compare it first, e.g. `{} > 0`",
                     describe(condition), condition.str()));
  Expr a = if_true, b = if_false;
  if (a.type() != b.type()) {
    if (!is_numeric(a.type()) || !is_numeric(b.type()))
      fail(fmt::format("type error in 'where': the branches are {} and {}; they must both be bool or both numeric",
                       describe(a), describe(b)));
    a = promote_to_float(a);
    b = promote_to_float(b);
  }
  return Expr(ir::make_node(Op::Where, a.type(), {condition.node(), a.node(), b.node()}));
}

Expr min(const Expr& a, const Expr& b) { return apply_binary(Op::Min, a, b); }
Expr max(const Expr& a, const Expr& b) { return apply_binary(Op::Max, a, b); }
Expr abs(const Expr& a) { return apply_unary(Op::Abs, a); }
Expr exp(const Expr& a) { return apply_unary(Op::Exp, a); }
Expr exp2(const Expr& a) { return apply_unary(Op::Exp2, a); }
Expr log(const Expr& a) { return apply_unary(Op::Log, a); }
Expr log2(const Expr& a) { return apply_unary(Op::Log2, a); }
Expr tanh(const Expr& a) { return apply_unary(Op::Tanh, a); }
Expr sigmoid(const Expr& a) { return apply_unary(Op::Sigmoid, a); }
Expr sqrt(const Expr& a) { return apply_unary(Op::Sqrt, a); }
Expr floor(const Expr& a) { return apply_unary(Op::Floor, a); }
Expr to_float(const Expr& a) { return apply_unary(Op::ToFloat, a); }
Expr to_int(const Expr& a) { return apply_unary(Op::ToInt, a); }

}  // namespace attnjit
