// Mask analysis by interval arithmetic (see mask_analysis.hpp).
#include "compiler/mask_analysis.hpp"

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "compiler/error.hpp"
#include "compiler/eval.hpp"
#include "templates/interval.h"

namespace attnjit::ir {
namespace {

// An affine form: sum(coef * leaf) + constant. Leaves are keyed by their structural hash,
// so the rebuilt expression (and the generated code, and its cache key) is the same in
// every process.
using TermKey = std::pair<std::uint64_t, std::uint64_t>;
struct Affine {
  std::map<TermKey, std::pair<NodeRef, std::int64_t>> terms;
  std::int64_t constant = 0;
};

bool is_variable_leaf(const NodeRef& n) { return n->op == Op::Index || (n->op == Op::Param && n->type == Type::Int); }

// True when every coefficient and the constant fit in 32 bits. Beyond that the 32-bit
// arithmetic of the mask may wrap where the 64-bit rewritten form would not, so such
// forms are not rewritten (the plain interval analysis then says "unknown").
bool fits_int32(const Affine& a) {
  const auto ok = [](std::int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; };
  if (!ok(a.constant)) return false;
  for (const auto& [key, term] : a.terms)
    if (!ok(term.second)) return false;
  return true;
}

std::optional<Affine> linearize_unchecked(const NodeRef& n);

std::optional<Affine> linearize(const NodeRef& n) {
  auto a = linearize_unchecked(n);
  if (a && !fits_int32(*a)) return std::nullopt;
  return a;
}

std::optional<Affine> linearize_unchecked(const NodeRef& n) {
  if (n->type != Type::Int) return std::nullopt;
  if (n->op == Op::ConstInt) return Affine{{}, n->int_value};
  if (is_variable_leaf(n)) {
    Affine a;
    a.terms[TermKey{n->hash.hi, n->hash.lo}] = {n, 1};
    return a;
  }
  auto combine = [](Affine a, const Affine& b, std::int64_t sign) {
    for (const auto& [key, term] : b.terms) {
      auto& slot = a.terms[key];
      slot.first = term.first;
      slot.second += sign * term.second;
    }
    a.constant += sign * b.constant;
    return a;
  };
  auto scale = [](Affine a, std::int64_t k) {
    for (auto& [key, term] : a.terms) term.second *= k;
    a.constant *= k;
    return a;
  };
  switch (n->op) {
    case Op::Add:
    case Op::Sub: {
      auto a = linearize(n->args[0]), b = linearize(n->args[1]);
      if (!a || !b) return std::nullopt;
      return combine(*a, *b, n->op == Op::Add ? 1 : -1);
    }
    case Op::Neg: {
      auto a = linearize(n->args[0]);
      if (!a) return std::nullopt;
      return scale(*a, -1);
    }
    case Op::Mul: {
      auto a = linearize(n->args[0]), b = linearize(n->args[1]);
      if (!a || !b) return std::nullopt;
      if (a->terms.empty()) return scale(*b, a->constant);
      if (b->terms.empty()) return scale(*a, b->constant);
      return std::nullopt;
    }
    default: return std::nullopt;
  }
}

// Builds sum(coef * var) + c as IR with each variable once.
NodeRef build_affine(const Affine& a) {
  NodeRef sum;
  // Positive terms first, so `kv - q` reads as such rather than `-1 * q + kv`.
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& [key, term] : a.terms) {
      const std::int64_t coef = term.second;
      if (coef == 0 || (pass == 0) != (coef > 0)) continue;
      if (sum && coef < 0) {
        NodeRef t = coef == -1 ? term.first : make_node(Op::Mul, Type::Int, {const_int(-coef), term.first});
        sum = make_node(Op::Sub, Type::Int, {sum, t});
        continue;
      }
      NodeRef t = coef == 1 ? term.first : make_node(Op::Mul, Type::Int, {const_int(coef), term.first});
      sum = sum ? make_node(Op::Add, Type::Int, {sum, t}) : t;
    }
  }
  if (!sum) return const_int(a.constant);
  return a.constant == 0 ? sum : make_node(Op::Add, Type::Int, {sum, const_int(a.constant)});
}

// The abstract value of a node over the box: an int, float or bool range (the types and
// every operation on them are templates/interval.h, shared with the generated CUDA).
struct Abstract {
  AjIv i = aj_iv_unknown();
  AjFv f = aj_fv_unknown();
  AjBv b = aj_bv_unknown();
};

Abstract of(AjIv v) {
  Abstract a;
  a.i = v;
  return a;
}
Abstract of(AjFv v) {
  Abstract a;
  a.f = v;
  return a;
}
Abstract of(AjBv v) {
  Abstract a;
  a.b = v;
  return a;
}
Abstract int_range(std::int64_t lo, std::int64_t hi) { return of(aj_iv(lo, hi)); }
Abstract unknown(Type t) {
  if (t == Type::Int) return of(aj_iv_unknown());
  if (t == Type::Float) return of(aj_fv_unknown());
  return of(aj_bv_unknown());
}

Abstract abstract_op(const Node& n, const std::vector<Abstract>& a, const TileBox& box) {
  const Type arg_type = n.args.empty() ? n.type : n.args[0]->type;
  switch (n.op) {
    case Op::ConstInt: return int_range(n.int_value, n.int_value);
    case Op::ConstFloat: return of(aj_fv(n.float_value, n.float_value));
    case Op::ConstBool: return of(aj_bv(n.int_value == 0, n.int_value != 0));
    case Op::Score: return unknown(Type::Float);
    case Op::TensorRead: {
      if (!box.tensor_range) return unknown(n.type);
      std::vector<IntRange> index;
      for (const Abstract& i : a) index.push_back(IntRange{i.i.lo, i.i.hi});
      const auto range = box.tensor_range(n, index);
      if (!range || !(range->first <= range->second)) return unknown(n.type);
      if (n.type == Type::Float) return of(aj_fv(range->first, range->second));
      if (n.type == Type::Bool) return of(aj_bv(range->first <= 0.0, range->second != 0.0 || range->first != 0.0));
      return of(
          aj_iv(static_cast<long long>(std::floor(range->first)), static_cast<long long>(std::ceil(range->second))));
    }
    case Op::Index: {
      if (n.name == "b") return int_range(box.b.lo, box.b.hi);
      if (n.name == "h") return int_range(box.h.lo, box.h.hi);
      if (n.name == "q") return int_range(box.q.lo, box.q.hi);
      if (n.name == "kv") return int_range(box.kv.lo, box.kv.hi);
      if (n.name == "q_len") return int_range(box.q_len, box.q_len);
      if (n.name == "kv_len") return int_range(box.kv_len, box.kv_len);
      return int_range(box.num_heads, box.num_heads);
    }
    case Op::Param:
      if (n.type == Type::Int) {
        auto it = box.int_params.find(n.name);
        return it == box.int_params.end() ? unknown(Type::Int) : int_range(it->second, it->second);
      } else {
        auto it = box.float_params.find(n.name);
        return it == box.float_params.end() ? unknown(Type::Float) : of(aj_fv(it->second, it->second));
      }
    case Op::Not: return of(aj_bv_not(a[0].b));
    case Op::And: return of(aj_bv_and(a[0].b, a[1].b));
    case Op::Or: return of(aj_bv_or(a[0].b, a[1].b));
    case Op::Where:
      if (n.type == Type::Int) return of(aj_iv_where(a[0].b, a[1].i, a[2].i));
      if (n.type == Type::Float) return of(aj_fv_where(a[0].b, a[1].f, a[2].f));
      return of(aj_bv_where(a[0].b, a[1].b, a[2].b));
    case Op::ToFloat: return of(arg_type == Type::Int ? aj_fv_from_int(a[0].i) : aj_fv_from_bool(a[0].b));
    case Op::ToInt: return of(arg_type == Type::Bool ? aj_iv_from_bool(a[0].b) : aj_iv_from_float(a[0].f));
    default: break;
  }
  if (is_comparison(n.op)) {
    if (arg_type == Type::Bool) return of(n.op == Op::Eq ? aj_bv_eq(a[0].b, a[1].b) : aj_bv_ne(a[0].b, a[1].b));
    if (arg_type == Type::Int) return of(aj_iv_cmp(interval_comparison(n.op), a[0].i, a[1].i));
    return of(aj_fv_cmp(interval_comparison(n.op), a[0].f, a[1].f));
  }
  if (arg_type == Type::Int) {
    switch (n.op) {
      case Op::Neg: return of(aj_iv_neg(a[0].i));
      case Op::Abs: return of(aj_iv_abs(a[0].i));
      case Op::Add: return of(aj_iv_add(a[0].i, a[1].i));
      case Op::Sub: return of(aj_iv_sub(a[0].i, a[1].i));
      case Op::Mul: return of(aj_iv_mul(a[0].i, a[1].i));
      case Op::Min: return of(aj_iv_min(a[0].i, a[1].i));
      case Op::Max: return of(aj_iv_max(a[0].i, a[1].i));
      case Op::Div: return of(aj_iv_div(a[0].i, a[1].i));
      case Op::Mod: return of(aj_iv_mod(a[0].i, a[1].i));
      default: return unknown(Type::Int);
    }
  }
  switch (n.op) {
    case Op::Neg: return of(aj_fv_neg(a[0].f));
    case Op::Add: return of(aj_fv_add(a[0].f, a[1].f));
    case Op::Sub: return of(aj_fv_sub(a[0].f, a[1].f));
    default: return unknown(Type::Float);
  }
}

}  // namespace

NodeRef normalize_for_intervals(const NodeRef& mask) {
  return rewrite_bottom_up(mask, [](const NodeRef& n) -> NodeRef {
    if (!is_comparison(n->op) || n->args[0]->type != Type::Int) return n;
    auto lhs = linearize(n->args[0]), rhs = linearize(n->args[1]);
    if (!lhs || !rhs) return n;
    for (const auto& [key, term] : rhs->terms) {
      auto& slot = lhs->terms[key];
      slot.first = term.first;
      slot.second -= term.second;
    }
    lhs->constant -= rhs->constant;
    if (!fits_int32(*lhs)) return n;
    // Keep the constant on the right: sum(coef * var) OP -c.
    const std::int64_t c = lhs->constant;
    lhs->constant = 0;
    return make_node(n->op, Type::Bool, {build_affine(*lhs), const_int(-c)});
  });
}

namespace {
Abstract abstract_value(const NodeRef& root, const TileBox& box) {
  std::unordered_map<const Node*, Abstract> values;
  for (const auto& n : topological_order({root})) {
    std::vector<Abstract> args;
    for (const auto& a : n->args) args.push_back(values.at(a.get()));
    values[n.get()] = abstract_op(*n, args, box);
  }
  return values.at(root.get());
}
}  // namespace

IntRange int_range_of(const NodeRef& expr, const TileBox& box) {
  if (expr->type != Type::Int) throw InternalError("int_range_of on a non-int expression");
  const AjIv r = abstract_value(expr, box).i;
  return IntRange{r.lo, r.hi};
}

static_assert(static_cast<int>(TileClass::Empty) == AJ_TILE_EMPTY &&
                  static_cast<int>(TileClass::Partial) == AJ_TILE_PARTIAL &&
                  static_cast<int>(TileClass::Full) == AJ_TILE_FULL,
              "TileClass must match templates/interval.h");

TileClass classify_tile(const NodeRef& normalized_mask, const TileBox& box) {
  return static_cast<TileClass>(aj_tile_class_of(abstract_value(normalized_mask, box).b));
}

AjCmp interval_comparison(Op op) {
  switch (op) {
    case Op::Lt: return AJ_CMP_LT;
    case Op::Le: return AJ_CMP_LE;
    case Op::Gt: return AJ_CMP_GT;
    case Op::Ge: return AJ_CMP_GE;
    case Op::Eq: return AJ_CMP_EQ;
    case Op::Ne: return AJ_CMP_NE;
    default: throw InternalError("interval_comparison on '" + std::string(op_name(op)) + "', not a comparison");
  }
}

}  // namespace attnjit::ir
