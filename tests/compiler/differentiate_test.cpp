// The differentiation pass: derivative expressions per operator checked against central
// finite differences of the evaluator, the subgradient conventions of docs/variant-language.md
// checked structurally, the simplified forms (d(score * 2) / d score is the constant 2), one
// entry per distinct float tensor read, and the UserError for an index that depends on the
// score or on a float tensor read.
#include "compiler/passes/differentiate.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "compiler/eval.hpp"
#include "compiler/printer.hpp"
#include "dsl/expr.hpp"
#include "dsl/presets.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;
using ir::differentiate_score_mod;

const Tensor T("T", ir::TensorDType::F32, 1);
const Tensor U("U", ir::TensorDType::BF16, 2);
const Tensor doc("doc", ir::TensorDType::I32, 1);

// Evaluates `e` at the given score, with every float read of T yielding `t` and of U
// yielding `u`, doc[i] = i, h = 1, param `p` = 0.75.
double eval_at(const ir::NodeRef& e, double score_value, double t, double u = 0.5) {
  ir::EvalEnv env;
  env.h = 1;
  env.q = 3;
  env.kv = 5;
  env.score = score_value;
  env.params["p"] = ir::Value::of_float(0.75);
  env.read_tensor = [&](const ir::Node& read, std::span<const std::int64_t> idx) {
    if (read.name == "doc") return ir::Value::of_int(idx[0]);
    return ir::Value::of_float(read.name == "T" ? t : u);
  };
  return ir::evaluate(e, env).f;
}

void expect_same(const ir::NodeRef& got, const Expr& expected) {
  EXPECT_EQ(got, expected.node()) << "got `" << ir::print_expr(got) << "`, expected `" << expected.str() << "`";
}

TEST(Differentiate, IdentityAndLinearFormsSimplifyToConstants) {
  auto d = differentiate_score_mod(score.node());
  expect_same(d.d_score, Expr(1.0));
  EXPECT_TRUE(d.tensor_reads.empty());
  expect_same(differentiate_score_mod((score * 2.0).node()).d_score, Expr(2.0));
  expect_same(differentiate_score_mod((2.0 * score).node()).d_score, Expr(2.0));
  expect_same(differentiate_score_mod((score / 4.0).node()).d_score, Expr(0.25));
  expect_same(differentiate_score_mod((-score).node()).d_score, Expr(-1.0));
  expect_same(differentiate_score_mod((3.0 - score).node()).d_score, Expr(-1.0));
  expect_same(differentiate_score_mod((score + score).node()).d_score, Expr(2.0));
  expect_same(differentiate_score_mod(Expr(1.5).node()).d_score, Expr(0.0));
  // Index arithmetic is a constant with respect to the score.
  expect_same(differentiate_score_mod((score + 0.5 * to_float(kv - q)).node()).d_score, Expr(1.0));
  expect_same(differentiate_score_mod((score * to_float(h)).node()).d_score, to_float(h));
  expect_same(differentiate_score_mod((score * param_float("p")).node()).d_score, param_float("p"));
}

TEST(Differentiate, PresetsDifferentiateToTheirKnownForms) {
  for (const auto& preset : presets::registry()) {
    SCOPED_TRACE(preset.name);
    const Variant v = preset.make();
    const auto d = differentiate_score_mod(v.score_mod().node());
    if (v.score_mod().node() == score.node() || preset.name == "alibi" || preset.name == "alibi_causal")
      expect_same(d.d_score, Expr(1.0));
    if (preset.name == "alibi_tensor") {
      expect_same(d.d_score, Expr(1.0));
      ASSERT_EQ(d.tensor_reads.size(), 1u);
      expect_same(d.tensor_reads[0].derivative, to_float(kv - q));
    }
    if (preset.name == "relative_bias") {
      ASSERT_EQ(d.tensor_reads.size(), 1u);
      expect_same(d.tensor_reads[0].derivative, Expr(1.0));
    }
    if (preset.name == "forget_gate") {  // c[b, h, q + kv_len - q_len] - c[b, h, kv]: two reads, +1 and -1
      expect_same(d.d_score, Expr(1.0));
      ASSERT_EQ(d.tensor_reads.size(), 2u);
      expect_same(d.tensor_reads[0].derivative, Expr(1.0));
      expect_same(d.tensor_reads[1].derivative, Expr(-1.0));
      // The query-side read is the same for every key of a row: its exact share is zero.
      EXPECT_TRUE(d.tensor_reads[0].row_constant);
      EXPECT_FALSE(d.tensor_reads[1].row_constant);
    }
    for (const auto& r : d.tensor_reads) {
      EXPECT_EQ(r.read->op, ir::Op::TensorRead);
      EXPECT_EQ(r.read->type, ir::Type::Float);
    }
  }
}

// Each smooth operator: the derivative expression against a central difference of the
// score_mod, with respect to the score and to the value read from T.
// Softmax is shift invariant along kv: a read whose value and derivative are the same for
// every key of a query row contributes nothing; one that moves with kv or the score does.
TEST(Differentiate, MarksReadsThatAreConstantAlongAQueryRow) {
  const auto row_constant = [](const Expr& e) {
    const auto d = differentiate_score_mod(e.node());
    EXPECT_EQ(d.tensor_reads.size(), 1u) << e.str();
    return !d.tensor_reads.empty() && d.tensor_reads[0].row_constant;
  };
  EXPECT_TRUE(row_constant(score + T[h]));
  EXPECT_TRUE(row_constant(score + 2.0 * T[h] * to_float(q) + T[h] * T[h]));
  EXPECT_TRUE(row_constant(score + U(h, q + kv_len - q_len)));
  EXPECT_FALSE(row_constant(score + U(h, kv)));                        // the read moves with kv
  EXPECT_FALSE(row_constant(score + T[h] * to_float(kv - q)));         // ALiBi: the derivative does
  EXPECT_FALSE(row_constant(score * T[h]));                            // the derivative is the score
  EXPECT_FALSE(row_constant(tanh(score + T[h])));                      // through the score
  EXPECT_FALSE(row_constant(score + where(kv < q, T[h], Expr(0.0))));  // a branch on kv
}

TEST(Differentiate, SmoothOperatorsMatchFiniteDifferences) {
  const Expr t = T[h];
  const std::vector<std::pair<std::string, Expr>> cases = {
      {"exp", exp(score * t)},
      {"exp2", exp2(score - t)},
      {"log", log(score * score + t)},
      {"log2", log2(t * t + exp(score))},
      {"tanh", 2.5 * tanh(score / (2.5 + t))},
      {"sigmoid", sigmoid(score * t) * score},
      {"sqrt", sqrt(score * score + t * t + 1.0)},
      {"div", (score + 1.0) / (t + 3.0) - t / (score + 4.0)},
      {"neg_sub", -(score - t * t) - (t - score * score)},
      {"mul_shared", t * score * t + score * score * score},
      {"bf16_read", score * U(h, q) + U(h, q) * U(h, q)},
      {"param", param_float("p") * score * t},
  };
  for (const auto& [name, e] : cases) {
    SCOPED_TRACE(name + ": " + e.str());
    const auto d = differentiate_score_mod(e.node());
    for (const double s : {-1.3, 0.4, 2.1})
      for (const double tv : {0.3, 1.7}) {
        constexpr double step = 1e-5;
        const double fd_score = (eval_at(e.node(), s + step, tv) - eval_at(e.node(), s - step, tv)) / (2 * step);
        EXPECT_NEAR(eval_at(d.d_score, s, tv), fd_score, 1e-7 * (1 + std::fabs(fd_score))) << "s=" << s;
        for (const auto& r : d.tensor_reads) {
          const bool is_t = r.read->name == "T";
          const auto f = [&](double x) { return is_t ? eval_at(e.node(), s, x) : eval_at(e.node(), s, tv, x); };
          const double x0 = is_t ? tv : 0.5;
          const double fd = (f(x0 + step) - f(x0 - step)) / (2 * step);
          EXPECT_NEAR(eval_at(r.derivative, s, tv), fd, 1e-7 * (1 + std::fabs(fd)))
              << r.read->name << " at s=" << s << " t=" << tv;
        }
      }
  }
}

TEST(Differentiate, WhereTakesTheBranchDerivative) {
  const Expr e = where(score > 0.0, score * 3.0, score * T[h]);
  const auto d = differentiate_score_mod(e.node());
  expect_same(d.d_score, where(score > 0.0, Expr(3.0), T[h]));
  ASSERT_EQ(d.tensor_reads.size(), 1u);
  expect_same(d.tensor_reads[0].derivative, where(score > 0.0, Expr(0.0), score));
  // No gradient through the condition, even when it reads a float tensor.
  const auto c = differentiate_score_mod(where(T[h] > 0.0, score, Expr(1.0)).node());
  expect_same(c.d_score, where(T[h] > 0.0, Expr(1.0), Expr(0.0)));
  ASSERT_EQ(c.tensor_reads.size(), 1u);
  expect_same(c.tensor_reads[0].derivative, Expr(0.0));
}

TEST(Differentiate, MinAndMaxPickTheSmallerOrLargerOperandTiesToTheFirst) {
  const Expr t = T[h];
  auto d = differentiate_score_mod(min(score, t).node());
  expect_same(d.d_score, where(score <= t, Expr(1.0), Expr(0.0)));
  expect_same(d.tensor_reads.at(0).derivative, where(score <= t, Expr(0.0), Expr(1.0)));
  d = differentiate_score_mod(max(score, t).node());
  expect_same(d.d_score, where(score >= t, Expr(1.0), Expr(0.0)));
  expect_same(d.tensor_reads.at(0).derivative, where(score >= t, Expr(0.0), Expr(1.0)));
  // At a tie the gradient goes to the first operand only.
  EXPECT_EQ(eval_at(d.d_score, 0.7, 0.7), 1.0);
  EXPECT_EQ(eval_at(d.tensor_reads.at(0).derivative, 0.7, 0.7), 0.0);
  // A constant operand: the derivative is 0 on its side.
  expect_same(differentiate_score_mod(min(score * 2.0, Expr(5.0)).node()).d_score,
              where(score * 2.0 <= 5.0, Expr(2.0), Expr(0.0)));
}

TEST(Differentiate, AbsIsSignWithZeroAtZero) {
  const auto d = differentiate_score_mod(abs(score).node());
  expect_same(d.d_score, where(score > 0.0, Expr(1.0), where(score < 0.0, Expr(-1.0), Expr(0.0))));
  EXPECT_EQ(eval_at(d.d_score, 0.0, 0.0), 0.0);
  EXPECT_EQ(eval_at(d.d_score, -2.0, 0.0), -1.0);
  EXPECT_EQ(eval_at(d.d_score, 1e-300, 0.0), 1.0);
  const auto scaled = differentiate_score_mod(abs(score * 3.0 - 1.0).node());
  EXPECT_EQ(eval_at(scaled.d_score, 1.0, 0.0), 3.0);
  EXPECT_EQ(eval_at(scaled.d_score, 0.0, 0.0), -3.0);
  EXPECT_EQ(eval_at(scaled.d_score, 1.0 / 3.0 + 1e-9, 0.0), 3.0);
}

TEST(Differentiate, PiecewiseConstantOperatorsCarryNoGradient) {
  expect_same(differentiate_score_mod(floor(score).node()).d_score, Expr(0.0));
  expect_same(differentiate_score_mod(to_float(to_int(score * 4.0)).node()).d_score, Expr(0.0));
  expect_same(differentiate_score_mod(where(score > 1.0, Expr(1.0), Expr(-1.0)).node()).d_score, Expr(0.0));
  expect_same(differentiate_score_mod(to_float(score > 0.5 && score < 2.0).node()).d_score, Expr(0.0));
  expect_same(differentiate_score_mod((score + floor(score * T[h])).node()).d_score, Expr(1.0));
  expect_same(differentiate_score_mod((score + to_float(to_int(score) % 3)).node()).d_score, Expr(1.0));
  // The floor of a read gives its read an entry with derivative 0.
  const auto d = differentiate_score_mod((score + floor(T[h])).node());
  ASSERT_EQ(d.tensor_reads.size(), 1u);
  expect_same(d.tensor_reads[0].derivative, Expr(0.0));
}

TEST(Differentiate, OneEntryPerDistinctFloatReadInTopologicalOrder) {
  const Expr a = T[h], bq = U(h, q), bk = U(h, kv);
  // a is read three times (one interned node); the two U reads differ by their index.
  const Expr e = a * score + a + bq * a - bk + to_float(doc[kv]);
  const auto d = differentiate_score_mod(e.node());
  ASSERT_EQ(d.tensor_reads.size(), 3u);  // doc is an int tensor: no entry
  std::vector<ir::NodeRef> order;
  for (const auto& n : ir::topological_order({e.node()}))
    if (n->op == ir::Op::TensorRead && n->type == ir::Type::Float) order.push_back(n);
  ASSERT_EQ(order.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(d.tensor_reads[i].read, order[i]) << i;
  for (const auto& r : d.tensor_reads) {
    if (r.read == a.node()) EXPECT_EQ(eval_at(r.derivative, 2.0, 0.3, 0.5), 2.0 + 1.0 + 0.5);
    if (r.read == bq.node()) EXPECT_EQ(eval_at(r.derivative, 2.0, 0.3, 0.5), 0.3);
    if (r.read == bk.node()) expect_same(r.derivative, Expr(-1.0));
  }
  expect_same(d.d_score, a);
}

// The message names the read, what its index depends on, and what an index may use.
void expect_refused(const Expr& e, const std::string& read, const std::string& culprit) {
  try {
    differentiate_score_mod(e.node());
    ADD_FAILURE() << "expected a UserError for " << e.str();
  } catch (const UserError& err) {
    const std::string what = err.what();
    EXPECT_NE(what.find("`" + read + "`"), std::string::npos) << what;
    EXPECT_NE(what.find("depends on `" + culprit + "`"), std::string::npos) << what;
    EXPECT_NE(what.find("cannot differentiate"), std::string::npos) << what;
    EXPECT_NE(what.find("int parameters and integer tensors"), std::string::npos) << what;
  }
}

TEST(Differentiate, FloatReadAtAScoreDependentIndexIsAUserError) {
  expect_refused(score + T[to_int(score * 4.0)], "T[int(score * 4.0)]", "score");
  expect_refused(score * U(h, to_int(T[h])), "U[h, int(T[h])]", "T[h]");
  // Through an integer tensor and a condition, too.
  expect_refused(score + T[doc[to_int(score)]], "T[doc[int(score)]]", "score");
  expect_refused(score + T[where(score > 0.0, Expr(1), Expr(2))], "T[where(score > 0.0, 1, 2)]", "score");
  // An integer tensor at a score-dependent index is allowed and carries no gradient.
  const auto d = differentiate_score_mod((score + to_float(doc[to_int(score)])).node());
  expect_same(d.d_score, Expr(1.0));
  EXPECT_TRUE(d.tensor_reads.empty());
  // Float reads at int-parameter and int-tensor indices are fine.
  EXPECT_NO_THROW(differentiate_score_mod((score + T[doc[kv] + param_int("n")]).node()));
}

TEST(Differentiate, NonFloatScoreModIsAUserError) {
  EXPECT_THROW(differentiate_score_mod((score > 0.0).node()), UserError);
  EXPECT_THROW(differentiate_score_mod(nullptr), UserError);
}

}  // namespace
}  // namespace attnjit
