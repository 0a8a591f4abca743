// Pass: document masks as per-row key intervals (see run_equality.hpp).
#include "compiler/passes/run_equality.hpp"

#include <vector>

#include "compiler/eval.hpp"

namespace attnjit::ir {

namespace {

bool is_index(const NodeRef& n, const char* name) { return n->op == Op::Index && n->name == name; }

// T[i0, e] == T[i0, kv] in either order: the row-side read, or null.
NodeRef row_read_of(const NodeRef& eq, const std::unordered_map<const Node*, RowKeyDependence>& uses) {
  if (eq->op != Op::Eq) return nullptr;
  for (int side = 0; side < 2; ++side) {
    const NodeRef& row = eq->args[static_cast<std::size_t>(side)];
    const NodeRef& key = eq->args[static_cast<std::size_t>(1 - side)];
    if (row->op != Op::TensorRead || key->op != Op::TensorRead || row->name != key->name) continue;
    if (row->tensor_dtype != TensorDType::I32 || row->args.size() != 2) continue;
    const NodeRef& i0 = row->args[0];
    const auto& u0 = uses.at(i0.get());
    if (key->args[0] != i0 || u0.row || u0.key) continue;
    if (!is_index(key->args[1], "kv") || uses.at(row->args[1].get()).key) continue;
    return row;
  }
  return nullptr;
}

void conjuncts(const NodeRef& n, std::vector<NodeRef>& out) {
  if (n->op != Op::And) {
    out.push_back(n);
    return;
  }
  for (const auto& a : n->args) conjuncts(a, out);
}

// `kv >= a && kv <= b && kv <= c && rest` as `kv >= a && kv <= min(b, c) && rest`, the bounds
// being row-only: a row then holds two bounds instead of three (fwd_sm90 at D=128 spilled its Q
// descriptors with the third, 56 bytes in the main loop).
NodeRef merge_key_bounds(const NodeRef& mask) {
  std::vector<NodeRef> terms, lower, upper, rest;
  conjuncts(mask, terms);
  const auto uses = row_key_dependence(mask);
  for (const auto& t : terms) {
    const bool le = t->op == Op::Le, ge = t->op == Op::Ge;
    if ((le || ge) && is_index(t->args[0], "kv") && !uses.at(t->args[1].get()).key)
      (le ? upper : lower).push_back(t->args[1]);
    else if ((le || ge) && is_index(t->args[1], "kv") && !uses.at(t->args[0].get()).key)
      (le ? lower : upper).push_back(t->args[0]);
    else
      rest.push_back(t);
  }
  if (lower.size() < 2 && upper.size() < 2) return mask;
  const NodeRef kv = make_node(Op::Index, Type::Int, {}, 0, 0.0, "kv");
  const auto fold = [](std::vector<NodeRef> v, Op op) {
    NodeRef out = v[0];
    for (std::size_t i = 1; i < v.size(); ++i) out = make_node(op, Type::Int, {out, v[i]});
    return out;
  };
  std::vector<NodeRef> merged;
  if (!lower.empty()) merged.push_back(make_node(Op::Ge, Type::Bool, {kv, fold(lower, Op::Max)}));
  if (!upper.empty()) merged.push_back(make_node(Op::Le, Type::Bool, {kv, fold(upper, Op::Min)}));
  merged.insert(merged.end(), rest.begin(), rest.end());
  NodeRef out = merged[0];
  for (std::size_t i = 1; i < merged.size(); ++i) out = make_node(Op::And, Type::Bool, {out, merged[i]});
  return out;
}

// Whether `e` is the query row's position when the lengths agree: `q` itself, or a sum of q,
// q_len, kv_len and constants (`q + kv_len - q_len`, the bottom-right alignment) that equals q
// at q_len == kv_len (checked at a few points).
bool row_position(const NodeRef& e) {
  if (is_index(e, "q")) return true;
  for (const auto& n : topological_order({e})) {
    const bool leaf =
        (n->op == Op::Index && (n->name == "q" || n->name == "q_len" || n->name == "kv_len")) || n->op == Op::ConstInt;
    if (!leaf && n->op != Op::Add && n->op != Op::Sub && n->op != Op::Neg) return false;
  }
  for (const std::int64_t q : {0, 1, 37, 1000})
    for (const std::int64_t len : {1, 64, 4097}) {
      EvalEnv env;
      env.q = q;
      env.q_len = env.kv_len = len;
      if (evaluate(e, env).i != q) return false;
    }
  return true;
}

NodeRef and_all(const std::vector<NodeRef>& terms) {
  if (terms.empty()) return const_bool(true);
  NodeRef out = terms[0];
  for (std::size_t i = 1; i < terms.size(); ++i) out = make_node(Op::And, Type::Bool, {out, terms[i]});
  return out;
}

}  // namespace

std::optional<RunEquality> rewrite_run_equality(const NodeRef& mask) {
  const auto uses = row_key_dependence(mask);
  for (const auto& n : topological_order({mask})) {
    const NodeRef row = row_read_of(n, uses);
    if (!row) continue;
    const NodeRef& i0 = row->args[0];
    const NodeRef& e = row->args[1];
    const NodeRef kv = make_node(Op::Index, Type::Int, {}, 0, 0.0, "kv");
    RunEquality out;
    out.tensor = row->name;
    out.runs = kRunsPrefix + row->name;
    const auto bound = [&](int which) {
      return make_node(Op::TensorRead, Type::Int, {i0, e, const_int(which)}, 3, 0.0, out.runs, TensorDType::I32);
    };
    const NodeRef lo = bound(0), hi = bound(1);
    const NodeRef in_run = make_node(
        Op::And, Type::Bool, {make_node(Op::Ge, Type::Bool, {kv, lo}), make_node(Op::Le, Type::Bool, {kv, hi})});
    const NodeRef compare = make_node(
        Op::Eq, Type::Bool, {row, make_node(Op::TensorRead, Type::Int, {i0, kv}, 2, 0.0, row->name, TensorDType::I32)});
    out.monotone = make_node(Op::Le, Type::Bool, {lo, hi});
    const NodeRef replacement = make_node(Op::Where, Type::Bool, {out.monotone, in_run, compare});
    out.mask = substitute(mask, n, replacement);
    out.fast_mask = merge_key_bounds(substitute(out.mask, replacement, in_run));
    return out;
  }
  return std::nullopt;
}

std::optional<NodeRef> document_rest(const NodeRef& mask) {
  const auto runs = rewrite_run_equality(mask);
  if (!runs) return std::nullopt;
  const auto uses = row_key_dependence(mask);
  std::vector<NodeRef> terms, rest;
  conjuncts(mask, terms);
  bool found = false;
  for (const auto& t : terms) {
    const NodeRef row = found ? nullptr : row_read_of(t, uses);
    if (row && row->name == runs->tensor && is_index(row->args[0], "b") && row_position(row->args[1]))
      found = true;
    else
      rest.push_back(t);
  }
  if (!found) return std::nullopt;
  return and_all(rest);
}

}  // namespace attnjit::ir
