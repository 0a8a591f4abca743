// The additive split of a score_mod: which forms split, that the key part never reads q and
// the row part never reads kv, and that col(kv, anchor) + row(q, anchor) evaluates to
// score_mod - score for every anchor, on ALiBi, the forget gate and hand-written sums; and
// what must not split (the score under a function, a second score, a difference read).
#include "compiler/passes/score_split.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "compiler/eval.hpp"
#include "compiler/printer.hpp"
#include "dsl/expr.hpp"
#include "dsl/presets.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;
using ir::split_score_mod;

const Tensor gates("c", ir::TensorDType::F32, 3);
const Tensor bias("bias", ir::TensorDType::F32, 2);

bool reads_index(const ir::NodeRef& n, const std::string& name) {
  for (const auto& m : ir::topological_order({n}))
    if (m->op == ir::Op::Index && m->name == name) return true;
  return false;
}

bool reads_score(const ir::NodeRef& n) {
  for (const auto& m : ir::topological_order({n}))
    if (m->op == ir::Op::Score) return true;
  return false;
}

ir::EvalEnv env_at(int q, int kv, int h) {
  ir::EvalEnv env;
  env.b = 1;
  env.h = h;
  env.q = q;
  env.kv = kv;
  env.q_len = 300;
  env.kv_len = 320;
  env.num_heads = 8;
  env.score = 0.375;
  env.params["p"] = ir::Value::of_float(1.25);
  env.params["k"] = ir::Value::of_int(3);
  // c[b, h, t] = sin(t + 3h + b): distinct per element, so a wrong index shows.
  env.read_tensor = [](const ir::Node&, std::span<const std::int64_t> idx) {
    double x = 0.0;
    for (std::size_t i = 0; i < idx.size(); ++i) x += static_cast<double>(idx[i]) * (i + 1) * 0.37;
    return ir::Value::of_float(std::sin(x));
  };
  return env;
}

// col + row at `anchor` against score_mod - score, over rows, keys, heads and anchors.
void expect_split_sums_to(const Expr& score_mod) {
  const auto split = split_score_mod(score_mod.node());
  ASSERT_TRUE(split.has_value()) << score_mod.str();
  EXPECT_FALSE(reads_index(split->col, "q")) << ir::print_expr(split->col);
  EXPECT_FALSE(reads_index(split->row, "kv")) << ir::print_expr(split->row);
  EXPECT_FALSE(reads_score(split->col) || reads_score(split->row));
  for (int anchor : {0, 7, 128, 250})
    for (int q : {0, 1, 130, 299})
      for (int kv : {0, 5, 131, 319})
        for (int h : {0, 5}) {
          const ir::EvalEnv env = env_at(q, kv, h);
          const auto at_anchor = [&](const ir::NodeRef& n) {
            return ir::evaluate(ir::substitute(n, ir::anchor_index(), Expr(anchor).node()), env).f;
          };
          const double expected = ir::evaluate(score_mod.node(), env).f - env.score;
          const double got = at_anchor(split->col) + at_anchor(split->row);
          EXPECT_NEAR(got, expected, 1e-9 * (1.0 + std::fabs(expected)))
              << score_mod.str() << " at q=" << q << " kv=" << kv << " h=" << h << " anchor=" << anchor;
        }
}

TEST(ScoreSplit, AlibiSplitsAroundTheAnchor) {
  const Expr slope = exp2(-8.0 * to_float(h + 1) / to_float(num_heads));
  expect_split_sums_to(score + slope * to_float(kv - q));
  expect_split_sums_to(score + Tensor("slopes", ir::TensorDType::F32, 1)[h] * to_float(kv - q));
  // The integer difference is split before the conversion: kv - anchor and anchor - q.
  const auto split = split_score_mod((score + slope * to_float(kv - q)).node());
  ASSERT_TRUE(split.has_value());
  EXPECT_TRUE(reads_index(split->col, ir::kAnchorName)) << ir::print_expr(split->col);
  EXPECT_TRUE(reads_index(split->row, ir::kAnchorName)) << ir::print_expr(split->row);
}

TEST(ScoreSplit, ForgetGateReadsSplitIntoRowAndKey) {
  expect_split_sums_to(score + gates(b, h, q + kv_len - q_len) - gates(b, h, kv));
  const auto split = split_score_mod((score + gates(b, h, q) - gates(b, h, kv)).node());
  ASSERT_TRUE(split.has_value());
  EXPECT_FALSE(reads_index(split->col, ir::kAnchorName));  // nothing to center: two reads
}

TEST(ScoreSplit, SumsDifferencesAndUniformFactorsSplit) {
  const Expr p = param_float("p"), k = param_int("k");
  expect_split_sums_to(score - 0.5 * to_float(q - kv));
  expect_split_sums_to(-(to_float(2 * (kv - q) + k) * p) + score);
  expect_split_sums_to(score + to_float(kv) / p - to_float(q) * 3.0 + p);
  expect_split_sums_to((score + to_float(kv)) - (to_float(q) - gates(b, h, kv)));
  // Terms that no element changes land in the row part: the key part is the constant 0.
  const auto split = split_score_mod((score + p * 2.0).node());
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->col, Expr(0.0).node());
}

TEST(ScoreSplit, WhatDoesNotSplit) {
  const Expr slope = exp2(-8.0 * to_float(h + 1) / to_float(num_heads));
  const Expr p = param_float("p");
  const auto refused = [](const Expr& e) { return !split_score_mod(e.node()).has_value(); };
  EXPECT_TRUE(refused(score));                                   // nothing to move
  EXPECT_TRUE(refused(p * tanh(score / p)));                     // the score under a function
  EXPECT_TRUE(refused(score * 2.0 + to_float(kv)));              // the score scaled
  EXPECT_TRUE(refused(score + score + to_float(kv)));            // twice
  EXPECT_TRUE(refused(to_float(kv) - score));                    // negated
  EXPECT_TRUE(refused(score + bias(h, kv - q + q_len - 1)));     // a read at the difference
  EXPECT_TRUE(refused(score + to_float(kv) * to_float(q)));      // a product of both
  EXPECT_TRUE(refused(score + to_float((kv - q) / 4)));          // floor division
  EXPECT_TRUE(refused(score + where(kv > q, slope, 0.0)));       // a choice per pair
  EXPECT_TRUE(refused(score + slope * abs(to_float(kv - q))));   // |kv - q|
  EXPECT_TRUE(refused(score + to_float(kv) / to_float(q + 1)));  // a divisor that varies
}

TEST(ScoreSplit, PresetsThatSplit) {
  for (const auto& [name, expect] : std::vector<std::pair<std::string, bool>>{{"alibi", true},
                                                                              {"alibi_causal", true},
                                                                              {"alibi_tensor", true},
                                                                              {"forget_gate", true},
                                                                              {"causal", false},
                                                                              {"softcap_causal", false},
                                                                              {"relative_bias", false},
                                                                              {"alibi_window_softcap", false}}) {
    const Variant v = presets::by_name(name);
    EXPECT_EQ(split_score_mod(v.score_mod().node()).has_value(), expect) << name;
  }
}

}  // namespace
}  // namespace attnjit
