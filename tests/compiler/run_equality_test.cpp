// Document masks as per-row key intervals (compiler/passes/run_equality.hpp): which compares
// are rewritten, and that the rewritten mask equals the original at every (q, kv), reads
// clamped into the tensor as the GPU clamps them, beside runs computed as
// templates/tensor_runs.cuh defines them, for ids in order (up, down, constant) and out of
// order (where the rewritten mask falls back to the compare), and that the fast form (no key
// read) is exact wherever the runs are valid.
#include "compiler/passes/run_equality.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "compiler/eval.hpp"
#include "compiler/printer.hpp"
#include "dsl/expr.hpp"
#include "dsl/presets.hpp"
#include "support/document_runs.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;
using ir::document_rest;
using ir::rewrite_run_equality;

const Tensor doc("doc", ir::TensorDType::I32, 2);

// Both masks at every (q, kv) of a window around the ids' row (out-of-range reads clamp).
void expect_equal_everywhere(const ir::NodeRef& mask, const std::vector<int>& ids, int q_len) {
  const auto rewritten = rewrite_run_equality(mask);
  ASSERT_TRUE(rewritten.has_value());
  const auto runs = document_runs(ids);
  const auto clamp = [&](std::int64_t i, std::int64_t size) { return std::clamp<std::int64_t>(i, 0, size - 1); };
  ir::EvalEnv env;
  env.q_len = q_len;
  env.kv_len = static_cast<std::int64_t>(ids.size());
  env.read_tensor = [&](const ir::Node& read, std::span<const std::int64_t> at) {
    const std::int64_t j = clamp(at[1], env.kv_len);
    if (read.name == "doc") return ir::Value::of_int(ids[static_cast<std::size_t>(j)]);
    EXPECT_EQ(read.name, rewritten->runs);
    const auto& r = runs[static_cast<std::size_t>(j)];
    return ir::Value::of_int(clamp(at[2], 2) == 0 ? r.first : r.second);
  };
  int admitted = 0;
  for (env.q = -2; env.q < q_len + 2; ++env.q)
    for (env.kv = -3; env.kv < env.kv_len + 3; ++env.kv) {
      const bool want = ir::evaluate(mask, env).b;
      ASSERT_EQ(ir::evaluate(rewritten->mask, env).b, want) << "q " << env.q << " kv " << env.kv;
      // The kernel's fast form (no key read) wherever the row's runs are valid, and they are
      // valid at every row or at none.
      const bool runs_valid = ir::evaluate(rewritten->monotone, env).b;
      ASSERT_EQ(runs_valid, runs[0].first <= runs[0].second) << "q " << env.q;
      if (runs_valid) ASSERT_EQ(ir::evaluate(rewritten->fast_mask, env).b, want) << "q " << env.q << " kv " << env.kv;
      admitted += want;
    }
  EXPECT_GT(admitted, 0);
}

TEST(RunEquality, RewritesTheDocumentPresets) {
  for (const char* name : {"document", "document_causal"}) {
    const auto r = rewrite_run_equality(presets::by_name(name).mask_mod().node());
    ASSERT_TRUE(r.has_value()) << name;
    EXPECT_EQ(r->tensor, "doc");
    EXPECT_EQ(r->runs, "aj_runs_doc");
    const std::string row = "q + kv_len - q_len";  // both presets align the query to the keys' end
    EXPECT_EQ(ir::print_expr(r->monotone), "aj_runs_doc[b, " + row + ", 0] <= aj_runs_doc[b, " + row + ", 1]");
    if (std::string(name) == "document_causal")  // the row's two upper bounds merged: two fields, not three
      EXPECT_EQ(ir::print_expr(r->fast_mask),
                "kv >= aj_runs_doc[b, " + row + ", 0] && kv <= min(aj_runs_doc[b, " + row + ", 1], " + row + ")");
    for (const auto& n : ir::topological_order({r->fast_mask}))
      EXPECT_FALSE(n->op == ir::Op::TensorRead && n->name == "doc") << ir::print_expr(r->fast_mask);
  }
}

TEST(RunEquality, LeavesOtherComparesAlone) {
  const Tensor scores("s", ir::TensorDType::F32, 2);
  const Tensor ids3("ids", ir::TensorDType::I32, 3);
  for (const Expr& mask : {doc(b, q) == doc(b, kv + 1),      // the key's index is not kv itself
                           doc(b, q) == doc(h, kv),          // different rows
                           doc(q, q) == doc(q, kv),          // the row index uses q
                           doc(b, kv - 1) == doc(b, kv),     // the query side reads by kv
                           scores(b, q) == scores(b, kv),    // not int ids
                           ids3(b, h, q) == ids3(b, h, kv),  // not rank 2
                           doc(b, q) <= doc(b, kv)})         // not an equality
    EXPECT_FALSE(rewrite_run_equality(mask.node()).has_value()) << ir::print_expr(mask.node());
}

TEST(RunEquality, EqualsTheCompareForIdsInAndOutOfOrder) {
  const Expr shifted = q + kv_len - q_len;
  const std::vector<ir::NodeRef> masks = {
      (doc(b, q) == doc(b, kv)).node(),
      (doc(b, shifted) == doc(b, kv) && kv <= shifted).node(),
      (doc(b, kv) == doc(b, q / 2) || kv == 0).node(),
  };
  const std::vector<std::vector<int>> rows = {
      {0, 0, 0, 1, 1, 2, 2, 2, 2, 3},  // up
      {5, 5, 3, 3, 3, 1, 0, 0, 0, 0},  // down
      {4, 4, 4, 4, 4, 4, 4},           // one run
      {0, 0, 1, 1, 0, 0, 2, 2, 1},     // out of order: 0 and 1 come back
      {7},
  };
  for (const auto& mask : masks)
    for (const auto& ids : rows)
      for (const int q_len : {static_cast<int>(ids.size()), 3}) expect_equal_everywhere(mask, ids, q_len);
}

// The mask inside one document (fwd_sm90's work items aligned to documents): the other conjuncts
// of a mask whose compare is a conjunct, with the row read at q (or at q + kv_len - q_len, which
// is q at equal lengths, the only case the kernel lists documents for).
TEST(DocumentRest, IsTheOtherConjunctsOfADocumentMask) {
  const Expr shifted = q + kv_len - q_len;
  const auto rest = [](const Expr& mask) {
    const auto r = document_rest(mask.node());
    return r ? ir::print_expr(*r) : std::string("(none)");
  };
  EXPECT_EQ(rest(presets::by_name("document").mask_mod()), "true");
  EXPECT_EQ(rest(presets::by_name("document_causal").mask_mod()), "kv <= q + kv_len - q_len");
  EXPECT_EQ(rest(doc(b, q) == doc(b, kv) && kv <= q && q - kv < 64), "kv <= q && q - kv < 64");
  EXPECT_EQ(rest(kv <= q && doc(b, kv) == doc(b, q)), "kv <= q");  // either side, either place
  EXPECT_EQ(rest(doc(b, shifted) == doc(b, kv)), "true");
  // Not inside one document: the compare under an `or`, another row than b, a row index that
  // is not the query's position, another shift.
  EXPECT_EQ(rest(doc(b, q) == doc(b, kv) || kv == 0), "(none)");
  EXPECT_EQ(rest(doc(h, q) == doc(h, kv)), "(none)");
  EXPECT_EQ(rest(doc(b, q / 2) == doc(b, kv)), "(none)");
  EXPECT_EQ(rest(doc(b, q + 1) == doc(b, kv)), "(none)");
  EXPECT_EQ(rest(doc(b, q + kv_len) == doc(b, kv)), "(none)");
  EXPECT_EQ(rest(kv <= q), "(none)");
}

// Inside a document's run (positions of equal ids, at equal lengths), the mask equals `rest`.
TEST(DocumentRest, EqualsTheMaskInsideEveryRun) {
  const Expr mask = doc(b, q + kv_len - q_len) == doc(b, kv) && kv <= q + kv_len - q_len && q - kv < 3;
  const auto rest = document_rest(mask.node());
  ASSERT_TRUE(rest.has_value());
  const std::vector<int> ids = {0, 0, 0, 1, 1, 2, 2, 2, 2, 3};
  ir::EvalEnv env;
  env.q_len = env.kv_len = static_cast<std::int64_t>(ids.size());
  env.read_tensor = [&](const ir::Node&, std::span<const std::int64_t> at) {
    return ir::Value::of_int(ids[static_cast<std::size_t>(at[1])]);
  };
  int inside = 0;
  for (env.q = 0; env.q < env.q_len; ++env.q)
    for (env.kv = 0; env.kv < env.kv_len; ++env.kv) {
      if (ids[static_cast<std::size_t>(env.q)] != ids[static_cast<std::size_t>(env.kv)]) continue;
      ++inside;
      EXPECT_EQ(ir::evaluate(*rest, env).b, ir::evaluate(mask.node(), env).b) << "q " << env.q << " kv " << env.kv;
    }
  EXPECT_EQ(inside, 9 + 4 + 16 + 1);
}

}  // namespace
}  // namespace attnjit
