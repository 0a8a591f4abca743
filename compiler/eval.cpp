// CPU evaluation of IR expressions (see eval.hpp).
#include "compiler/eval.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "compiler/error.hpp"

namespace attnjit::ir {
namespace {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  if (b == 0) return 0;
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

std::int64_t floor_mod(std::int64_t a, std::int64_t b) {
  if (b == 0) return 0;
  std::int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

std::int64_t saturating_to_int(double v) {
  if (std::isnan(v)) return 0;
  constexpr double lo = std::numeric_limits<std::int32_t>::min();
  constexpr double hi = std::numeric_limits<std::int32_t>::max();
  return static_cast<std::int64_t>(std::trunc(std::clamp(v, lo, hi)));
}

double as_float(const Node& n, const Value& v) {
  if (n.type == Type::Float) return v.f;
  if (n.type == Type::Int) return static_cast<double>(v.i);
  return v.b ? 1.0 : 0.0;
}

}  // namespace

std::int64_t wrap_int32(std::int64_t v) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(v)); }

Value eval_leaf(const Node& n, const EvalEnv& env) {
  switch (n.op) {
    case Op::ConstBool: return Value::of_bool(n.int_value != 0);
    case Op::ConstInt: return Value::of_int(wrap_int32(n.int_value));
    case Op::ConstFloat: return Value::of_float(n.float_value);
    case Op::Score: return Value::of_float(env.score);
    case Op::Index:
      if (n.name == "b") return Value::of_int(env.b);
      if (n.name == "h") return Value::of_int(env.h);
      if (n.name == "q") return Value::of_int(env.q);
      if (n.name == "kv") return Value::of_int(env.kv);
      if (n.name == "q_len") return Value::of_int(env.q_len);
      if (n.name == "kv_len") return Value::of_int(env.kv_len);
      if (n.name == "num_heads") return Value::of_int(env.num_heads);
      throw InternalError(fmt::format("unknown index variable '{}'", n.name));
    case Op::Param: {
      auto it = env.params.find(n.name);
      if (it == env.params.end())
        throw UserError(
            fmt::format("parameter '{}' ({}) has no value; bind it before running", n.name, type_name(n.type)));
      return n.type == Type::Int ? Value::of_int(wrap_int32(it->second.i)) : it->second;
    }
    default: throw InternalError(fmt::format("eval_leaf on non-leaf '{}'", op_name(n.op)));
  }
}

Value apply_op(const Node& n, std::span<const Value> a) {
  const bool is_int = n.args.empty() ? false : n.args[0]->type == Type::Int;
  switch (n.op) {
    case Op::Neg: return is_int ? Value::of_int(wrap_int32(-a[0].i)) : Value::of_float(-a[0].f);
    case Op::Not: return Value::of_bool(!a[0].b);
    case Op::Abs: return is_int ? Value::of_int(wrap_int32(std::llabs(a[0].i))) : Value::of_float(std::fabs(a[0].f));
    case Op::Exp: return Value::of_float(std::exp(a[0].f));
    case Op::Exp2: return Value::of_float(std::exp2(a[0].f));
    case Op::Log: return Value::of_float(std::log(a[0].f));
    case Op::Log2: return Value::of_float(std::log2(a[0].f));
    case Op::Tanh: return Value::of_float(std::tanh(a[0].f));
    case Op::Sigmoid: return Value::of_float(1.0 / (1.0 + std::exp(-a[0].f)));
    case Op::Sqrt: return Value::of_float(std::sqrt(a[0].f));
    case Op::Floor: return Value::of_float(std::floor(a[0].f));
    case Op::ToFloat: return Value::of_float(as_float(*n.args[0], a[0]));
    case Op::ToInt:
      if (n.args[0]->type == Type::Bool) return Value::of_int(a[0].b ? 1 : 0);
      return Value::of_int(saturating_to_int(as_float(*n.args[0], a[0])));
    case Op::And: return Value::of_bool(a[0].b && a[1].b);
    case Op::Or: return Value::of_bool(a[0].b || a[1].b);
    case Op::Where: return a[0].b ? a[1] : a[2];
    default: break;
  }
  const Type t = n.args[0]->type;
  if (t == Type::Bool) {  // == and != on bools
    if (n.op == Op::Eq) return Value::of_bool(a[0].b == a[1].b);
    if (n.op == Op::Ne) return Value::of_bool(a[0].b != a[1].b);
  } else if (t == Type::Int) {
    const std::int64_t x = a[0].i, y = a[1].i;
    switch (n.op) {
      case Op::Add: return Value::of_int(wrap_int32(x + y));
      case Op::Sub: return Value::of_int(wrap_int32(x - y));
      case Op::Mul: return Value::of_int(wrap_int32(x * y));
      case Op::Div: return Value::of_int(wrap_int32(floor_div(x, y)));
      case Op::Mod: return Value::of_int(wrap_int32(floor_mod(x, y)));
      case Op::Min: return Value::of_int(std::min(x, y));
      case Op::Max: return Value::of_int(std::max(x, y));
      case Op::Lt: return Value::of_bool(x < y);
      case Op::Le: return Value::of_bool(x <= y);
      case Op::Gt: return Value::of_bool(x > y);
      case Op::Ge: return Value::of_bool(x >= y);
      case Op::Eq: return Value::of_bool(x == y);
      case Op::Ne: return Value::of_bool(x != y);
      default: break;
    }
  } else {
    const double x = a[0].f, y = a[1].f;
    switch (n.op) {
      case Op::Add: return Value::of_float(x + y);
      case Op::Sub: return Value::of_float(x - y);
      case Op::Mul: return Value::of_float(x * y);
      case Op::Div: return Value::of_float(x / y);
      case Op::Min: return Value::of_float(std::fmin(x, y));
      case Op::Max: return Value::of_float(std::fmax(x, y));
      case Op::Lt: return Value::of_bool(x < y);
      case Op::Le: return Value::of_bool(x <= y);
      case Op::Gt: return Value::of_bool(x > y);
      case Op::Ge: return Value::of_bool(x >= y);
      case Op::Eq: return Value::of_bool(x == y);
      case Op::Ne: return Value::of_bool(x != y);
      default: break;
    }
  }
  throw InternalError(fmt::format("apply_op: no rule for '{}' on {}", op_name(n.op), type_name(t)));
}

Value evaluate(const NodeRef& root, const EvalEnv& env) {
  std::unordered_map<const Node*, Value> values;
  for (const auto& n : topological_order({root})) {
    if (n->op == Op::TensorRead) {
      std::vector<std::int64_t> idx;
      for (const auto& a : n->args) idx.push_back(values.at(a.get()).i);
      if (!env.read_tensor)
        throw UserError(fmt::format("tensor '{}' is read but no tensor is bound; bind it before running", n->name));
      values[n.get()] = env.read_tensor(*n, idx);
    } else if (is_leaf(n->op)) {
      values[n.get()] = eval_leaf(*n, env);
    } else {
      std::vector<Value> args;
      for (const auto& a : n->args) args.push_back(values.at(a.get()));
      values[n.get()] = apply_op(*n, args);
    }
  }
  return values.at(root.get());
}

}  // namespace attnjit::ir
