#include "compiler/passes/score_split.hpp"

#include <functional>
#include <unordered_map>

namespace attnjit::ir {
namespace {

// What a node reads among the per-element inputs.
struct Reads {
  bool q = false, kv = false, score = false;
};

class Splitter {
 public:
  // A value as key part + row part; a null part is zero. `ok` false: not separable.
  struct Parts {
    NodeRef col, row;
    bool ok = true;
  };

  Reads reads(const NodeRef& n) {
    auto it = reads_.find(n.get());
    if (it != reads_.end()) return it->second;
    Reads r{n->op == Op::Index && n->name == "q", n->op == Op::Index && n->name == "kv", n->op == Op::Score};
    for (const auto& a : n->args) {
      const Reads c = reads(a);
      r.q |= c.q;
      r.kv |= c.kv;
      r.score |= c.score;
    }
    reads_[n.get()] = r;
    return r;
  }

  // Float or int value `n` (no score inside) as col + row.
  Parts split(const NodeRef& n) {
    const Reads r = reads(n);
    if (r.score) return fail();
    // Terms uniform over the block (b, h, parameters) go to the row part: they cost nothing.
    if (!r.kv) return {nullptr, n};
    if (!r.q) return {n, nullptr};
    switch (n->op) {
      case Op::Add:
      case Op::Sub: {
        const Parts a = split(n->args[0]), b = split(n->args[1]);
        if (!a.ok || !b.ok) return fail();
        return {combine(n->op, a.col, b.col, n->type), combine(n->op, a.row, b.row, n->type)};
      }
      case Op::Neg: {
        const Parts a = split(n->args[0]);
        if (!a.ok) return fail();
        return {negate(a.col), negate(a.row)};
      }
      case Op::Mul:
      case Op::Div: {
        // Distribute over a factor that neither row nor key changes: (c + r) * f = c f + r f.
        const bool left_uniform = !reads(n->args[0]).q && !reads(n->args[0]).kv;
        const bool right_uniform = !reads(n->args[1]).q && !reads(n->args[1]).kv;
        if (n->op == Op::Div && n->type == Type::Int) return fail();  // floor division does not distribute
        if (!right_uniform && !(n->op == Op::Mul && left_uniform)) return fail();
        const NodeRef& factor = right_uniform ? n->args[1] : n->args[0];
        const Parts a = split(right_uniform ? n->args[0] : n->args[1]);
        if (!a.ok) return fail();
        const auto scaled = [&](const NodeRef& part) -> NodeRef {
          if (!part) return nullptr;
          if (n->op == Op::Div) return make_node(Op::Div, n->type, {part, factor});
          return right_uniform ? make_node(Op::Mul, n->type, {part, factor})
                               : make_node(Op::Mul, n->type, {factor, part});
        };
        return {scaled(a.col), scaled(a.row)};
      }
      case Op::ToFloat: {
        if (n->args[0]->type != Type::Int) return fail();
        // An integer sum i = c(kv) + r(q) splits exactly around the anchor before it is
        // converted: float(c + r(anchor)) + float(r(q) - r(anchor)).
        const Parts a = split(n->args[0]);
        if (!a.ok) return fail();
        if (!a.row) return {to_float(a.col), nullptr};
        if (!a.col) return {nullptr, to_float(a.row)};
        const NodeRef at_anchor = substitute(a.row, make_node(Op::Index, Type::Int, {}, 0, 0.0, "q"), anchor_index());
        return {to_float(make_node(Op::Add, Type::Int, {a.col, at_anchor})),
                to_float(make_node(Op::Sub, Type::Int, {a.row, at_anchor}))};
      }
      default: return fail();
    }
  }

 private:
  static Parts fail() { return {nullptr, nullptr, false}; }
  static NodeRef negate(const NodeRef& n) { return n ? make_node(Op::Neg, n->type, {n}) : nullptr; }
  static NodeRef to_float(const NodeRef& n) { return make_node(Op::ToFloat, Type::Float, {n}); }
  static NodeRef combine(Op op, const NodeRef& a, const NodeRef& b, Type type) {
    if (!b) return a;
    if (!a) return op == Op::Sub ? negate(b) : b;
    return make_node(op, type, {a, b});
  }

  std::unordered_map<const Node*, Reads> reads_;
};

}  // namespace

NodeRef anchor_index() { return make_node(Op::Index, Type::Int, {}, 0, 0.0, kAnchorName); }

std::optional<ScoreSplit> split_score_mod(const NodeRef& score_mod) {
  if (score_mod->type != Type::Float || score_mod->op == Op::Score) return std::nullopt;
  Splitter splitter;
  // The top level: a signed sum whose terms are the score once, with sign +, and separable terms.
  int score_sign = 0, score_count = 0;
  NodeRef col, row;
  bool ok = true;
  const auto add = [](const NodeRef& acc, const NodeRef& part, int sign) -> NodeRef {
    if (!part) return acc;
    if (!acc) return sign > 0 ? part : make_node(Op::Neg, Type::Float, {part});
    return make_node(sign > 0 ? Op::Add : Op::Sub, Type::Float, {acc, part});
  };
  const std::function<void(const NodeRef&, int)> walk = [&](const NodeRef& n, int sign) {
    if (!ok) return;
    if (n->op == Op::Score) {
      score_sign = sign;
      ++score_count;
      return;
    }
    if (splitter.reads(n).score && (n->op == Op::Add || n->op == Op::Sub || n->op == Op::Neg)) {
      if (n->op == Op::Neg) return walk(n->args[0], -sign);
      walk(n->args[0], sign);
      walk(n->args[1], n->op == Op::Sub ? -sign : sign);
      return;
    }
    const Splitter::Parts p = splitter.split(n);
    if (!p.ok) {
      ok = false;
      return;
    }
    col = add(col, p.col, sign);
    row = add(row, p.row, sign);
  };
  walk(score_mod, 1);
  if (!ok || score_count != 1 || score_sign != 1) return std::nullopt;
  const NodeRef zero = const_float(0.0);
  return ScoreSplit{col ? col : zero, row ? row : zero};
}

}  // namespace attnjit::ir
