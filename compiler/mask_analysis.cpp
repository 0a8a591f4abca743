// Mask analysis by interval arithmetic (see mask_analysis.hpp).
#include "compiler/mask_analysis.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "compiler/error.hpp"
#include "compiler/eval.hpp"

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

constexpr std::int64_t kIntMin = std::numeric_limits<std::int32_t>::min();
constexpr std::int64_t kIntMax = std::numeric_limits<std::int32_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

// The abstract value of a node over the box: int range, float range, or bool range
// (lo = false means "can be false", hi = true means "can be true").
struct Abstract {
  std::int64_t ilo = 0, ihi = 0;
  double flo = 0, fhi = 0;
  bool can_false = true, can_true = true;
};

Abstract int_range(std::int64_t lo, std::int64_t hi) {
  Abstract a;
  a.ilo = std::max(lo, kIntMin);
  a.ihi = std::min(hi, kIntMax);
  if (lo < kIntMin || hi > kIntMax) a.ilo = kIntMin, a.ihi = kIntMax;  // may wrap: know nothing
  return a;
}
Abstract float_range(double lo, double hi) {
  Abstract a;
  if (std::isnan(lo) || std::isnan(hi)) lo = -kInf, hi = kInf;
  a.flo = lo;
  a.fhi = hi;
  return a;
}
Abstract bool_range(bool can_false, bool can_true) {
  Abstract a;
  a.can_false = can_false;
  a.can_true = can_true;
  return a;
}
Abstract unknown(Type t) {
  if (t == Type::Int) return int_range(kIntMin, kIntMax);
  if (t == Type::Float) return float_range(-kInf, kInf);
  return bool_range(true, true);
}

// Comparison outcome from the ranges of lhs - rhs (ints) or the two float ranges.
Abstract compare(Op op, double alo, double ahi, double blo, double bhi) {
  if (std::isnan(alo) || std::isnan(ahi) || std::isnan(blo) || std::isnan(bhi)) return bool_range(true, true);
  bool always = false, never = false;
  switch (op) {
    case Op::Lt: always = ahi < blo, never = alo >= bhi; break;
    case Op::Le: always = ahi <= blo, never = alo > bhi; break;
    case Op::Gt: always = alo > bhi, never = ahi <= blo; break;
    case Op::Ge: always = alo >= bhi, never = ahi < blo; break;
    case Op::Eq: always = alo == ahi && blo == bhi && alo == blo, never = ahi < blo || bhi < alo; break;
    case Op::Ne: never = alo == ahi && blo == bhi && alo == blo, always = ahi < blo || bhi < alo; break;
    default: throw InternalError("compare on a non-comparison");
  }
  return bool_range(!always, !never);
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Abstract abstract_op(const Node& n, const std::vector<Abstract>& a, const TileBox& box) {
  const Type arg_type = n.args.empty() ? n.type : n.args[0]->type;
  switch (n.op) {
    case Op::ConstInt: return int_range(n.int_value, n.int_value);
    case Op::ConstFloat: return float_range(n.float_value, n.float_value);
    case Op::ConstBool: return bool_range(n.int_value == 0, n.int_value != 0);
    case Op::Score: return unknown(Type::Float);
    case Op::TensorRead: return unknown(n.type);
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
        return it == box.float_params.end() ? unknown(Type::Float) : float_range(it->second, it->second);
      }
    case Op::Not: return bool_range(a[0].can_true, a[0].can_false);
    case Op::And: return bool_range(a[0].can_false || a[1].can_false, a[0].can_true && a[1].can_true);
    case Op::Or: return bool_range(a[0].can_false && a[1].can_false, a[0].can_true || a[1].can_true);
    case Op::Where: {
      if (!a[0].can_false) return a[1];
      if (!a[0].can_true) return a[2];
      if (n.type == Type::Int) return int_range(std::min(a[1].ilo, a[2].ilo), std::max(a[1].ihi, a[2].ihi));
      if (n.type == Type::Float) return float_range(std::min(a[1].flo, a[2].flo), std::max(a[1].fhi, a[2].fhi));
      return bool_range(a[1].can_false || a[2].can_false, a[1].can_true || a[2].can_true);
    }
    case Op::ToFloat:
      if (arg_type == Type::Int) return float_range(static_cast<double>(a[0].ilo), static_cast<double>(a[0].ihi));
      return float_range(a[0].can_false ? 0.0 : 1.0, a[0].can_true ? 1.0 : 0.0);
    case Op::ToInt:
      if (arg_type == Type::Bool) return int_range(a[0].can_false ? 0 : 1, a[0].can_true ? 1 : 0);
      if (!std::isfinite(a[0].flo) || !std::isfinite(a[0].fhi)) return unknown(Type::Int);
      return int_range(static_cast<std::int64_t>(std::trunc(a[0].flo)),
                       static_cast<std::int64_t>(std::trunc(a[0].fhi)));
    default: break;
  }
  if (is_comparison(n.op)) {
    if (arg_type == Type::Bool) {  // == / != on bools: decided only when both are decided
      const bool decided = (a[0].can_false != a[0].can_true) && (a[1].can_false != a[1].can_true);
      if (!decided) return bool_range(true, true);
      const bool equal = a[0].can_true == a[1].can_true;
      const bool result = n.op == Op::Eq ? equal : !equal;
      return bool_range(!result, result);
    }
    if (arg_type == Type::Int)
      return compare(n.op, static_cast<double>(a[0].ilo), static_cast<double>(a[0].ihi), static_cast<double>(a[1].ilo),
                     static_cast<double>(a[1].ihi));
    return compare(n.op, a[0].flo, a[0].fhi, a[1].flo, a[1].fhi);
  }
  if (arg_type == Type::Int) {
    const std::int64_t alo = a[0].ilo, ahi = a[0].ihi;
    switch (n.op) {
      case Op::Neg: return int_range(-ahi, -alo);
      case Op::Abs:
        if (alo >= 0) return int_range(alo, ahi);
        if (ahi <= 0) return int_range(-ahi, -alo);
        return int_range(0, std::max(-alo, ahi));
      default: break;
    }
    const std::int64_t blo = a[1].ilo, bhi = a[1].ihi;
    switch (n.op) {
      case Op::Add: return int_range(alo + blo, ahi + bhi);
      case Op::Sub: return int_range(alo - bhi, ahi - blo);
      case Op::Mul: {
        const std::int64_t p[4] = {alo * blo, alo * bhi, ahi * blo, ahi * bhi};
        return int_range(*std::min_element(p, p + 4), *std::max_element(p, p + 4));
      }
      case Op::Min: return int_range(std::min(alo, blo), std::min(ahi, bhi));
      case Op::Max: return int_range(std::max(alo, blo), std::max(ahi, bhi));
      case Op::Div:
        if (blo != bhi || blo == 0) return unknown(Type::Int);
        if (blo > 0) return int_range(floor_div(alo, blo), floor_div(ahi, blo));
        return int_range(floor_div(ahi, blo), floor_div(alo, blo));
      case Op::Mod:
        if (blo != bhi || blo <= 0) return unknown(Type::Int);
        if (floor_div(alo, blo) == floor_div(ahi, blo))
          return int_range(alo - floor_div(alo, blo) * blo, ahi - floor_div(ahi, blo) * blo);
        return int_range(0, blo - 1);
      default: return unknown(Type::Int);
    }
  }
  // Floats: only what cannot produce NaN from finite-looking bounds.
  const bool finite0 = std::isfinite(a[0].flo) && std::isfinite(a[0].fhi);
  switch (n.op) {
    case Op::Neg: return float_range(-a[0].fhi, -a[0].flo);
    case Op::Add:
      if (!finite0 || !std::isfinite(a[1].flo) || !std::isfinite(a[1].fhi)) return unknown(Type::Float);
      return float_range(a[0].flo + a[1].flo, a[0].fhi + a[1].fhi);
    case Op::Sub:
      if (!finite0 || !std::isfinite(a[1].flo) || !std::isfinite(a[1].fhi)) return unknown(Type::Float);
      return float_range(a[0].flo - a[1].fhi, a[0].fhi - a[1].flo);
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
  const Abstract r = abstract_value(expr, box);
  return IntRange{r.ilo, r.ihi};
}

TileClass classify_tile(const NodeRef& normalized_mask, const TileBox& box) {
  const Abstract r = abstract_value(normalized_mask, box);
  if (!r.can_true) return TileClass::Empty;
  if (!r.can_false) return TileClass::Full;
  return TileClass::Partial;
}

}  // namespace attnjit::ir
