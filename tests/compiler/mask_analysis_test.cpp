// Mask analysis (compiler/mask_analysis) against brute force: for every preset mask and
// composition, random sequence lengths, tile sizes and parameter values, every tile's class
// must be sound (Empty only when the mask is false at every (q, kv) of the tile, Full only
// when it is true everywhere), and exact for the affine masks (causal, bottom-right causal,
// sliding window, prefix-LM). Also property tests of normalize_for_intervals (same value at
// every point) and int_range_of (contains every value over the box).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "compiler/eval.hpp"
#include "compiler/mask_analysis.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/printer.hpp"
#include "dsl/presets.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;
using ir::TileClass;

const char* class_name(TileClass c) {
  return c == TileClass::Empty ? "Empty" : (c == TileClass::Full ? "Full" : "Partial");
}

struct MaskCase {
  std::string name;
  Variant variant;
  bool exact;  // classification must be exact (affine comparisons only)
};

std::vector<MaskCase> mask_cases() {
  using presets::CausalAlignment;
  return {
      {"causal", presets::causal(), true},
      {"causal_bottom_right", presets::causal(CausalAlignment::BottomRight), true},
      {"sliding_window", presets::sliding_window(), true},
      {"prefix_lm", presets::prefix_lm(), true},
      {"strided", presets::strided(), false},
      {"shifted_sparse", presets::shifted_sparse(), false},
      {"sliding_window&prefix_lm", presets::sliding_window().then(presets::prefix_lm()), false},
      {"causal_bottom_right&sliding_window",
       presets::causal(CausalAlignment::BottomRight).then(presets::sliding_window()), false},
      {"strided&prefix_lm", presets::strided().then(presets::prefix_lm()), false},
      {"shifted_sparse&causal", presets::shifted_sparse().then(presets::causal()), false},
      {"document", presets::document(), false},
      {"document&causal", presets::document().then(presets::causal()), false},
      {"document&sliding_window", presets::document().then(presets::sliding_window()), false},
  };
}

struct Totals {
  long tiles = 0, empty = 0, full = 0, partial = 0, points = 0;
};

// One random launch: sizes, parameters, tile shape, head; checks every tile of the grid.
// `normalized` holds the forms to classify with, named (the DSL's mask and the lowered one).
void check_one_launch(const MaskCase& mc, const ir::NodeRef& mask,
                      const std::vector<std::pair<std::string, ir::NodeRef>>& normalized_forms, std::mt19937_64& rng,
                      Totals& totals) {
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  const std::int64_t sq = uni(1, 300), sk = uni(1, 300);
  static const int bms[] = {16, 64, 128}, bns[] = {16, 32, 64, 128};
  const int bm = bms[uni(0, 2)], bn = bns[uni(0, 3)];
  static const int heads[] = {2, 4, 8};
  const std::int64_t num_heads = heads[uni(0, 2)];
  const std::int64_t h = uni(0, num_heads - 1);
  const std::int64_t b = uni(0, 1);
  const std::unordered_map<std::string, std::int64_t> params = {{"window", uni(1, 200)},
                                                                {"prefix_len", uni(0, 300)},
                                                                {"stride", uni(1, 8)},
                                                                {"local", uni(1, 64)},
                                                                {"group", uni(1, 64)}};
  // Packed documents: ids nondecreasing along kv, per batch.
  std::vector<std::vector<std::int64_t>> doc(2, std::vector<std::int64_t>(static_cast<std::size_t>(sk)));
  for (auto& row : doc) {
    std::int64_t id = 0;
    for (auto& v : row) {
      if (uni(0, 40) == 0) ++id;
      v = id;
    }
  }

  ir::EvalEnv env;
  env.b = b;
  env.h = h;
  env.q_len = sq;
  env.kv_len = sk;
  env.num_heads = num_heads;
  for (const auto& [k, v] : params) env.params[k] = ir::Value::of_int(v);
  env.read_tensor = [&](const ir::Node& read, std::span<const std::int64_t> idx) {
    EXPECT_EQ(read.name, "doc");
    const auto bi = std::clamp<std::int64_t>(idx[0], 0, 1);
    const auto ki = std::clamp<std::int64_t>(idx[1], 0, sk - 1);  // the GPU clamps too
    return ir::Value::of_int(doc[static_cast<std::size_t>(bi)][static_cast<std::size_t>(ki)]);
  };

  // The mask at every point, from the original expression.
  std::vector<char> grid(static_cast<std::size_t>(sq * sk));
  for (std::int64_t qi = 0; qi < sq; ++qi)
    for (std::int64_t ki = 0; ki < sk; ++ki) {
      env.q = qi;
      env.kv = ki;
      grid[static_cast<std::size_t>(qi * sk + ki)] = ir::evaluate(mask, env).b ? 1 : 0;
    }
  totals.points += sq * sk;

  ir::TileBox box;
  box.b = {b, b};
  box.h = {h, h};
  box.q_len = sq;
  box.kv_len = sk;
  box.num_heads = num_heads;
  box.int_params = params;
  for (std::int64_t q0 = 0; q0 < sq; q0 += bm)
    for (std::int64_t k0 = 0; k0 < sk; k0 += bn) {
      box.q = {q0, std::min(q0 + bm, sq) - 1};
      box.kv = {k0, std::min(k0 + bn, sk) - 1};
      bool any_true = false, any_false = false;
      for (std::int64_t qi = box.q.lo; qi <= box.q.hi; ++qi)
        for (std::int64_t ki = box.kv.lo; ki <= box.kv.hi; ++ki)
          (grid[static_cast<std::size_t>(qi * sk + ki)] ? any_true : any_false) = true;
      for (const auto& form : normalized_forms) {
        const std::string& which = form.first;
        const ir::NodeRef& normalized = form.second;
        const TileClass c = ir::classify_tile(normalized, box);
        ++totals.tiles;
        (c == TileClass::Empty ? totals.empty : (c == TileClass::Full ? totals.full : totals.partial))++;
        const auto describe = [&] {
          std::string s = mc.name + " (" + which + ") Sq=" + std::to_string(sq) + " Sk=" + std::to_string(sk) +
                          " bm=" + std::to_string(bm) + " bn=" + std::to_string(bn) + " h=" + std::to_string(h) +
                          " heads=" + std::to_string(num_heads) + " tile q[" + std::to_string(box.q.lo) + "," +
                          std::to_string(box.q.hi) + "] kv[" + std::to_string(box.kv.lo) + "," +
                          std::to_string(box.kv.hi) + "]";
          for (const auto& [k, v] : params) s += " " + k + "=" + std::to_string(v);
          return s + " normalized: " + ir::print_expr(normalized);
        };
        if (c == TileClass::Empty)
          ASSERT_FALSE(any_true) << "classified Empty but some pair is unmasked: " << describe();
        if (c == TileClass::Full) ASSERT_FALSE(any_false) << "classified Full but some pair is masked: " << describe();
        if (mc.exact) {
          const TileClass truth = !any_true ? TileClass::Empty : (!any_false ? TileClass::Full : TileClass::Partial);
          ASSERT_EQ(c, truth) << "not exact: got " << class_name(c) << ", brute force " << class_name(truth) << ": "
                              << describe();
        }
      }
    }
}

TEST(MaskAnalysis, TileClassesAgreeWithBruteForce) {
  std::mt19937_64 rng(20240611);
  Totals totals;
  for (const auto& mc : mask_cases()) {
    const ir::NodeRef mask = mc.variant.mask_mod().node();
    const ir::NodeRef normalized = ir::normalize_for_intervals(mask);
    // What codegen classifies: the mask after the pass pipeline.
    const ir::LoweredExprs lowered = ir::lower({{"mask_mod", mask, ir::Type::Bool}});
    const ir::NodeRef lowered_normalized = ir::normalize_for_intervals(lowered.roots[0].root);
    const Totals before = totals;
    for (int launch = 0; launch < 14; ++launch) {
      check_one_launch(mc, mask, {{"dsl", normalized}, {"lowered", lowered_normalized}}, rng, totals);
      if (HasFatalFailure()) return;
    }
    std::cout << "[ mask     ] " << mc.name << ": " << (totals.tiles - before.tiles) << " tiles ("
              << (totals.empty - before.empty) << " empty, " << (totals.full - before.full) << " full, "
              << (totals.partial - before.partial) << " partial)\n";
    // A document mask reads a tensor: never Full on its own. Affine masks must decide some tiles.
    if (mc.name == "document") EXPECT_EQ(totals.full, before.full);
    if (mc.exact) EXPECT_GT((totals.empty - before.empty) + (totals.full - before.full), 0) << mc.name;
  }
  std::cout << "[ mask     ] checked " << totals.tiles << " tiles (" << totals.points << " points): " << totals.empty
            << " empty, " << totals.full << " full, " << totals.partial << " partial\n";
  EXPECT_GT(totals.tiles, 5000);
}

// ---- random expressions -------------------------------------------------------------

struct RandomExprs {
  std::mt19937_64& rng;
  bool affine_only;

  std::int64_t uni(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  }

  Expr leaf() {
    switch (uni(0, 9)) {
      case 0: return b;
      case 1: return h;
      case 2:
      case 3: return q;
      case 4:
      case 5: return kv;
      case 6: return uni(0, 2) == 0 ? q_len : (uni(0, 1) ? kv_len : num_heads);
      case 7: return param_int(uni(0, 1) ? "p" : "w");
      default: return Expr(static_cast<int>(uni(-20, 20)));
    }
  }

  Expr int_expr(int depth) {
    if (depth <= 0 || uni(0, 3) == 0) return leaf();
    const int choice = static_cast<int>(uni(0, affine_only ? 4 : 10));
    switch (choice) {
      case 0: return int_expr(depth - 1) + int_expr(depth - 1);
      case 1: return int_expr(depth - 1) - int_expr(depth - 1);
      case 2: return Expr(static_cast<int>(uni(-4, 4))) * int_expr(depth - 1);
      case 3: return int_expr(depth - 1) * Expr(static_cast<int>(uni(-4, 4)));
      case 4: return -int_expr(depth - 1);
      case 5: return int_expr(depth - 1) * int_expr(depth - 1);
      case 6: return min(int_expr(depth - 1), int_expr(depth - 1));
      case 7: return max(int_expr(depth - 1), int_expr(depth - 1));
      case 8: return abs(int_expr(depth - 1));
      case 9: {
        const Expr d = uni(0, 2) ? Expr(static_cast<int>(uni(-7, 7))) : int_expr(depth - 1);
        return uni(0, 1) ? int_expr(depth - 1) / d : int_expr(depth - 1) % d;
      }
      default: return where(bool_expr(depth - 1), int_expr(depth - 1), int_expr(depth - 1));
    }
  }

  Expr comparison(int depth) {
    const Expr a = int_expr(depth), c = int_expr(depth);
    switch (uni(0, 5)) {
      case 0: return a < c;
      case 1: return a <= c;
      case 2: return a > c;
      case 3: return a >= c;
      case 4: return a == c;
      default: return a != c;
    }
  }

  Expr bool_expr(int depth) {
    if (depth <= 0 || uni(0, 2) == 0) return comparison(std::max(depth, 1));
    switch (uni(0, 3)) {
      case 0: return bool_expr(depth - 1) && bool_expr(depth - 1);
      case 1: return bool_expr(depth - 1) || bool_expr(depth - 1);
      case 2: return !bool_expr(depth - 1);
      default: return where(bool_expr(depth - 1), bool_expr(depth - 1), bool_expr(depth - 1));
    }
  }
};

struct RandomPoint {
  ir::TileBox box;
  ir::EvalEnv env;
};

// A random box (small values, so no int32 wraparound) and a random point inside it.
ir::TileBox random_box(std::mt19937_64& rng) {
  auto uni = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  ir::TileBox box;
  auto range = [&](std::int64_t max) {
    const std::int64_t lo = uni(0, max), hi = std::min(max, lo + uni(0, 40));
    return ir::IntRange{lo, hi};
  };
  box.num_heads = uni(1, 16);
  box.q_len = uni(1, 300);
  box.kv_len = uni(1, 300);
  box.b = range(3);
  box.h = range(box.num_heads - 1);
  box.q = range(box.q_len - 1);
  box.kv = range(box.kv_len - 1);
  box.int_params = {{"p", uni(-50, 50)}, {"w", uni(0, 200)}};
  return box;
}

ir::EvalEnv random_point_in(const ir::TileBox& box, std::mt19937_64& rng) {
  auto pick = [&](ir::IntRange r) { return std::uniform_int_distribution<std::int64_t>(r.lo, r.hi)(rng); };
  ir::EvalEnv env;
  env.b = pick(box.b);
  env.h = pick(box.h);
  env.q = pick(box.q);
  env.kv = pick(box.kv);
  env.q_len = box.q_len;
  env.kv_len = box.kv_len;
  env.num_heads = box.num_heads;
  for (const auto& [k, v] : box.int_params) env.params[k] = ir::Value::of_int(v);
  return env;
}

TEST(MaskAnalysis, NormalizeForIntervalsPreservesValues) {
  std::mt19937_64 rng(7);
  int checked = 0, rewritten = 0;
  for (int round = 0; round < 3000; ++round) {
    RandomExprs gen{rng, /*affine_only=*/round % 2 == 0};
    const Expr mask = gen.bool_expr(3);
    const ir::NodeRef normalized = ir::normalize_for_intervals(mask.node());
    ASSERT_EQ(normalized->type, ir::Type::Bool);
    if (normalized.get() != mask.node().get()) ++rewritten;
    const ir::TileBox box = random_box(rng);
    for (int i = 0; i < 20; ++i) {
      const ir::EvalEnv env = random_point_in(box, rng);
      ASSERT_EQ(ir::evaluate(mask.node(), env).b, ir::evaluate(normalized, env).b)
          << "mask: " << mask.str() << "\nnormalized: " << ir::print_expr(normalized) << "\nat b=" << env.b
          << " h=" << env.h << " q=" << env.q << " kv=" << env.kv;
      ++checked;
    }
    // Soundness of the classification on the same random masks.
    const TileClass c = ir::classify_tile(normalized, box);
    if (c != TileClass::Partial) {
      for (int i = 0; i < 20; ++i) {
        const ir::EvalEnv env = random_point_in(box, rng);
        ASSERT_EQ(ir::evaluate(mask.node(), env).b, c == TileClass::Full)
            << class_name(c) << " is wrong for " << mask.str() << " at q=" << env.q << " kv=" << env.kv;
      }
    }
  }
  std::cout << "[ mask     ] normalize_for_intervals: " << checked << " points, " << rewritten
            << " of 3000 masks rewritten\n";
  EXPECT_GT(rewritten, 1000);
}

TEST(MaskAnalysis, NormalizedAffineComparisonNamesEachVariableOnce) {
  // (q + 3) - (kv - q) < window + q  ->  one q, one kv, one window, a constant on the right.
  const Expr m = (q + 3) - (kv - q) < param_int("window") + q;
  const std::string text = ir::print_expr(ir::normalize_for_intervals(m.node()));
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (std::size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("window"), 1) << text;
  EXPECT_EQ(count("kv"), 1) << text;
  EXPECT_EQ(count("q"), 1) << text;  // q appears once (the `kv` above has no q)
}

TEST(MaskAnalysis, IntRangeOfContainsEveryValue) {
  std::mt19937_64 rng(11);
  long checked = 0;
  int bounded = 0;
  for (int round = 0; round < 3000; ++round) {
    RandomExprs gen{rng, /*affine_only=*/false};
    const Expr e = gen.int_expr(4);
    const ir::TileBox box = random_box(rng);
    const ir::IntRange r = ir::int_range_of(e.node(), box);
    ASSERT_LE(r.lo, r.hi) << e.str();
    if (r.lo > std::numeric_limits<std::int32_t>::min() || r.hi < std::numeric_limits<std::int32_t>::max()) ++bounded;
    // Corners of the box and random points.
    for (int i = 0; i < 30; ++i) {
      ir::EvalEnv env = random_point_in(box, rng);
      if (i < 4) {
        env.q = (i & 1) ? box.q.hi : box.q.lo;
        env.kv = (i & 2) ? box.kv.hi : box.kv.lo;
      }
      const std::int64_t v = ir::evaluate(e.node(), env).i;
      ASSERT_TRUE(v >= r.lo && v <= r.hi) << e.str() << " = " << v << " outside [" << r.lo << ", " << r.hi
                                          << "] at b=" << env.b << " h=" << env.h << " q=" << env.q << " kv=" << env.kv;
      ++checked;
    }
  }
  std::cout << "[ mask     ] int_range_of: " << checked << " values checked, " << bounded
            << " of 3000 ranges bounded\n";
  EXPECT_GT(bounded, 500);
}

TEST(MaskAnalysis, IntRangeOfIsTightForAffineIndexArithmetic) {
  ir::TileBox box;
  box.q = {64, 127};
  box.kv = {0, 31};
  box.q_len = 200;
  box.kv_len = 300;
  const auto r = ir::int_range_of((kv - q + q_len - 1).node(), box);
  EXPECT_EQ(r.lo, 0 - 127 + 199);
  EXPECT_EQ(r.hi, 31 - 64 + 199);
  const auto m = ir::int_range_of(((kv + 3) % 8).node(), box);
  EXPECT_EQ(m.lo, 0);
  EXPECT_EQ(m.hi, 7);
}

}  // namespace
}  // namespace attnjit

namespace attnjit {
namespace {

// Known issue (reported, not fixed): normalize_for_intervals folds constants in int64, while the
// mask is evaluated with 32-bit wraparound (compiler/eval.hpp, the GPU). When the constants of
// the two sides cancel only in int64, the normalized comparison differs from the mask, and
// classify_tile calls a tile Full although the mask is false on most of it.
TEST(MaskAnalysis, NormalizeKeepsInt32WraparoundSemantics) {
  using namespace attnjit::dsl::vars;
  const Expr mask = kv + 2147483647 > kv - 1;  // false for kv >= 1 (kv + INT_MAX wraps)
  const ir::NodeRef normalized = ir::normalize_for_intervals(mask.node());
  ir::EvalEnv env;
  env.kv = 5;
  EXPECT_EQ(ir::evaluate(mask.node(), env).b, ir::evaluate(normalized, env).b) << ir::print_expr(normalized);
  ir::TileBox box;
  box.q = {0, 63};
  box.kv = {0, 63};
  EXPECT_NE(ir::classify_tile(normalized, box), ir::TileClass::Full) << ir::print_expr(normalized);
}

}  // namespace
}  // namespace attnjit
