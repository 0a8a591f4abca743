// Symbolic differentiation of a score_mod (see differentiate.hpp).
//
// Forward mode, one variable at a time (the score, then each float tensor read): the DAG is
// walked children first and every float node gets the derivative of its value with respect
// to the variable. A null derivative means "does not depend on the variable" and is kept
// symbolic, so no `x * 0` term is ever built: the evaluator's semantics make `x * 0.0` NaN
// for an infinite x, so simplify cannot remove it afterwards, and d(score * 2) / d score
// would not fold to 2.
#include "compiler/passes/differentiate.hpp"

#include <fmt/format.h>

#include <numbers>
#include <unordered_map>

#include "compiler/error.hpp"
#include "compiler/passes/constant_fold.hpp"
#include "compiler/passes/simplify.hpp"
#include "compiler/passes/type_check.hpp"
#include "compiler/printer.hpp"

namespace attnjit::ir {
namespace {

NodeRef fconst(double v) { return const_float(v); }
NodeRef unary(Op op, const NodeRef& a) { return make_node(op, Type::Float, {a}); }
NodeRef binary(Op op, const NodeRef& a, const NodeRef& b) { return make_node(op, Type::Float, {a, b}); }

// Arithmetic on derivatives, where null is an exact zero.
NodeRef zero_if_null(const NodeRef& d) { return d ? d : fconst(0.0); }
NodeRef neg(const NodeRef& d) { return d ? unary(Op::Neg, d) : nullptr; }
NodeRef add(const NodeRef& a, const NodeRef& b) {
  if (!a) return b;
  if (!b) return a;
  return binary(Op::Add, a, b);
}
NodeRef sub(const NodeRef& a, const NodeRef& b) {
  if (!b) return a;
  if (!a) return neg(b);
  return binary(Op::Sub, a, b);
}
NodeRef scale(const NodeRef& d, const NodeRef& factor) { return d ? binary(Op::Mul, factor, d) : nullptr; }
NodeRef divide(const NodeRef& d, const NodeRef& by) { return d ? binary(Op::Div, d, by) : nullptr; }

// sign(x) with sign(0) = 0 (and sign(NaN) = 0).
NodeRef sign(const NodeRef& x) {
  const NodeRef zero = fconst(0.0);
  return make_node(Op::Where, Type::Float,
                   {make_node(Op::Gt, Type::Bool, {x, zero}), fconst(1.0),
                    make_node(Op::Where, Type::Float, {make_node(Op::Lt, Type::Bool, {x, zero}), fconst(-1.0), zero})});
}

// d n / d variable from the derivatives of n's arguments (null: zero).
NodeRef derivative_of(const NodeRef& n, const std::vector<NodeRef>& d) {
  const auto a = [&](std::size_t i) -> const NodeRef& { return n->args[i]; };
  switch (n->op) {
    case Op::Neg: return neg(d[0]);
    case Op::Abs: return scale(d[0], sign(a(0)));
    case Op::Exp: return scale(d[0], n);
    case Op::Exp2: return scale(d[0], binary(Op::Mul, n, fconst(std::numbers::ln2)));
    case Op::Log: return divide(d[0], a(0));
    case Op::Log2: return divide(d[0], binary(Op::Mul, a(0), fconst(std::numbers::ln2)));
    case Op::Tanh: return scale(d[0], binary(Op::Sub, fconst(1.0), binary(Op::Mul, n, n)));
    case Op::Sigmoid: return scale(d[0], binary(Op::Mul, n, binary(Op::Sub, fconst(1.0), n)));
    case Op::Sqrt: return divide(d[0], binary(Op::Mul, fconst(2.0), n));
    case Op::Floor: return nullptr;    // piecewise constant
    case Op::ToFloat: return nullptr;  // of an int or bool: no gradient flows through them
    case Op::Add: return add(d[0], d[1]);
    case Op::Sub: return sub(d[0], d[1]);
    case Op::Mul: return add(d[0] ? binary(Op::Mul, d[0], a(1)) : nullptr, scale(d[1], a(0)));
    case Op::Div:  // d(a / b) = da / b - (a / b) * db / b
      return sub(divide(d[0], a(1)), divide(scale(d[1], n), a(1)));
    case Op::Min:
    case Op::Max: {
      if (!d[0] && !d[1]) return nullptr;
      const Op pick_first = n->op == Op::Min ? Op::Le : Op::Ge;
      return make_node(Op::Where, Type::Float,
                       {make_node(pick_first, Type::Bool, {a(0), a(1)}), zero_if_null(d[0]), zero_if_null(d[1])});
    }
    case Op::Where:
      if (!d[1] && !d[2]) return nullptr;
      return make_node(Op::Where, Type::Float, {a(0), zero_if_null(d[1]), zero_if_null(d[2])});
    default: break;
  }
  throw InternalError(fmt::format("differentiate: no rule for float '{}' in `{}`", op_name(n->op), print_expr(n)));
}

// d root / d variable, simplified; const 0 when root does not depend on it.
NodeRef differentiate(const NodeRef& root, const NodeRef& variable) {
  std::unordered_map<const Node*, NodeRef> d;
  for (const auto& n : topological_order({root})) {
    if (n == variable) {
      d[n.get()] = fconst(1.0);
      continue;
    }
    // Int and bool values (comparisons, casts to int, integer arithmetic) carry no gradient;
    // leaves other than the variable are constants with respect to it.
    if (n->type != Type::Float || is_leaf(n->op)) continue;
    std::vector<NodeRef> args;
    bool any = false;
    for (const auto& arg : n->args) {
      auto it = d.find(arg.get());
      args.push_back(it == d.end() ? nullptr : it->second);
      any |= args.back() != nullptr;
    }
    if (!any) continue;
    if (NodeRef dn = derivative_of(n, args)) d[n.get()] = std::move(dn);
  }
  auto it = d.find(root.get());
  NodeRef out = it == d.end() ? fconst(0.0) : it->second;
  out = constant_fold(simplify(constant_fold(out)));
  type_check(out, Type::Float);
  return out;
}

bool is_float_read(const NodeRef& n) { return n->op == Op::TensorRead && n->type == Type::Float; }

// A tensor index that depends on the score or on a float tensor read has no gradient (it is
// piecewise constant) and moves the element a tensor gradient lands on with the recomputed
// score, so a backward kernel and the reference could disagree by a whole element. Refused.
void check_indices(const NodeRef& score_mod) {
  // For each node, a variable it depends on (the score or a float read), or null.
  std::unordered_map<const Node*, NodeRef> source;
  for (const auto& n : topological_order({score_mod})) {
    NodeRef from;
    for (const auto& a : n->args) {
      auto it = source.find(a.get());
      if (it != source.end()) from = it->second;
    }
    if (is_float_read(n) && from)
      throw UserError(fmt::format(
          "cannot differentiate score_mod `{}`: the index of the float tensor read `{}` depends on `{}`, and no "
          "gradient flows through a tensor index (it is piecewise constant, and the element the tensor's gradient "
          "lands on would move with the recomputed score). Index float tensors with b, h, q, kv, q_len, kv_len, "
          "num_heads, int parameters and integer tensors only",
          print_expr(score_mod), print_expr(n), print_expr(from)));
    if (n->op == Op::Score || is_float_read(n)) from = n;
    if (from) source[n.get()] = from;
  }
}

// Whether n's value can change from one key of a query row to the next.
bool varies_along_kv(const NodeRef& n) { return row_key_dependence(n).at(n.get()).key; }

}  // namespace

ScoreModDerivatives differentiate_score_mod(const NodeRef& score_mod) {
  if (!score_mod || score_mod->type != Type::Float)
    throw UserError(fmt::format("cannot differentiate `{}`: a score_mod is a float expression, this one is {}",
                                score_mod ? print_expr(score_mod) : "(null)",
                                score_mod ? type_name(score_mod->type) : "null"));
  check_indices(score_mod);
  ScoreModDerivatives out;
  out.d_score = differentiate(score_mod, make_node(Op::Score, Type::Float, {}));
  for (const auto& n : topological_order({score_mod})) {
    if (!is_float_read(n)) continue;
    TensorReadGradient g{n, differentiate(score_mod, n)};
    g.row_constant = !varies_along_kv(n) && !varies_along_kv(g.derivative);
    out.tensor_reads.push_back(std::move(g));
  }
  return out;
}

}  // namespace attnjit::ir
