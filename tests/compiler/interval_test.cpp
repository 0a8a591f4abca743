// templates/interval.h, the interval arithmetic shared by the compile-time mask analysis and
// the generated CUDA: every operation on random small ranges contains the result of the IR's
// own semantics (ir::apply_op) at every point, and is exact where interval arithmetic can be
// (ints, bools, int comparisons). The comparison enum agrees with the IR's comparison
// operators; the emitted hooks carry the header and name comparisons by enum; NVRTC compiles
// the header with a kernel that calls every operation.
#include "templates/interval.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "compiler/eval.hpp"
#include "compiler/ir.hpp"
#include "compiler/mask_analysis.hpp"
#include "dsl/presets.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"

namespace attnjit {
namespace {

using ir::Op;
using ir::Type;
using ir::Value;

constexpr std::int64_t kIntMin = std::numeric_limits<std::int32_t>::min();
constexpr std::int64_t kIntMax = std::numeric_limits<std::int32_t>::max();

const Op kComparisons[] = {Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::Eq, Op::Ne};
const AjBv kBoolRanges[] = {{true, false}, {false, true}, {true, true}};  // false, true, either

std::string str(AjIv a) { return "[" + std::to_string(a.lo) + ", " + std::to_string(a.hi) + "]"; }
std::string str(AjFv a) { return "[" + std::to_string(a.lo) + ", " + std::to_string(a.hi) + "]"; }
std::string str(AjBv a) {
  return std::string("{") + (a.can_false ? "false" : "") + (a.can_false && a.can_true ? "," : "") +
         (a.can_true ? "true" : "") + "}";
}
bool is_unknown(AjIv a) { return a.lo == kIntMin && a.hi == kIntMax; }

// A node of `op` over arguments of the given types (apply_op reads only op and argument types).
ir::NodeRef node_of(Op op, Type result, const std::vector<Type>& arg_types) {
  std::vector<ir::NodeRef> args;
  for (Type t : arg_types)
    args.push_back(t == Type::Int ? ir::const_int(0) : (t == Type::Float ? ir::const_float(0) : ir::const_bool(false)));
  return ir::make_node(op, result, args);
}

std::vector<Value> members(AjIv a) {
  std::vector<Value> out;
  for (std::int64_t v = a.lo; v <= a.hi; ++v) out.push_back(Value::of_int(v));
  return out;
}
std::vector<Value> members(AjBv a) {
  std::vector<Value> out;
  if (a.can_false) out.push_back(Value::of_bool(false));
  if (a.can_true) out.push_back(Value::of_bool(true));
  return out;
}
// Floats: both bounds and random points between (a sample: containment only).
std::vector<Value> members(AjFv a, std::mt19937_64& rng) {
  std::vector<Value> out = {Value::of_float(a.lo), Value::of_float(a.hi)};
  if (std::isfinite(a.lo) && std::isfinite(a.hi))
    for (int i = 0; i < 12; ++i)
      out.push_back(Value::of_float(std::uniform_real_distribution<double>(a.lo, a.hi)(rng)));
  return out;
}

struct Rng {
  std::mt19937_64 gen{20250101};
  std::int64_t uni(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen);
  }
  AjIv iv(std::int64_t lo = -20, std::int64_t hi = 20) {
    const std::int64_t a = uni(lo, hi);
    const std::int64_t b = uni(0, 3) == 0 ? a : std::min(hi, a + uni(0, 9));
    return AjIv{a, b};
  }
  AjFv fv() {
    if (uni(0, 15) == 0) return uni(0, 1) ? aj_fv_unknown() : AjFv{-aj_iv_inf(), uni(-5, 5) * 1.0};
    const double a = uni(-40, 40) * 0.25 + (uni(0, 1) ? 0.0 : 0.1);
    const double b = uni(0, 3) == 0 ? a : a + uni(0, 20) * 0.25;
    return AjFv{a, b};
  }
  AjBv bv() { return kBoolRanges[uni(0, 2)]; }
};

// The int values of `op` applied at every point of the arguments' box.
struct Hull {
  std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = std::numeric_limits<std::int64_t>::min();
  void add(std::int64_t v) { lo = std::min(lo, v), hi = std::max(hi, v); }
};

TEST(IntervalArithmetic, IntOpsContainAndAreExactOnSmallRanges) {
  Rng r;
  struct IntOp {
    Op op;
    std::function<AjIv(AjIv, AjIv)> f;
    bool unary;
  };
  const std::vector<IntOp> ops = {
      {Op::Neg, [](AjIv a, AjIv) { return aj_iv_neg(a); }, true},
      {Op::Abs, [](AjIv a, AjIv) { return aj_iv_abs(a); }, true},
      {Op::Add, aj_iv_add, false},
      {Op::Sub, aj_iv_sub, false},
      {Op::Mul, aj_iv_mul, false},
      {Op::Min, aj_iv_min, false},
      {Op::Max, aj_iv_max, false},
      {Op::Div, aj_iv_div, false},
      {Op::Mod, aj_iv_mod, false},
  };
  long checked = 0, bounded_divmod = 0;
  for (const auto& io : ops) {
    const ir::NodeRef node =
        io.unary ? node_of(io.op, Type::Int, {Type::Int}) : node_of(io.op, Type::Int, {Type::Int, Type::Int});
    for (int round = 0; round < 3000; ++round) {
      const AjIv a = r.iv();
      // Divisors: mostly a constant (the only bounded case), sometimes zero or a range.
      const bool divmod = io.op == Op::Div || io.op == Op::Mod;
      AjIv b = r.iv();
      if (divmod && r.uni(0, 3) != 0) {
        const std::int64_t d = r.uni(-9, 9);
        b = AjIv{d, d};
      }
      const AjIv got = io.f(a, b);
      ASSERT_LE(got.lo, got.hi);
      Hull truth;
      for (const Value& x : members(a))
        for (const Value& y : io.unary ? std::vector<Value>{Value::of_int(0)} : members(b)) {
          const Value args[] = {x, y};
          truth.add(ir::apply_op(*node, std::span<const Value>(args, io.unary ? 1 : 2)).i);
          ++checked;
        }
      const std::string what = std::string(ir::op_name(io.op)) + " " + str(a) + (io.unary ? "" : " " + str(b));
      ASSERT_TRUE(got.lo <= truth.lo && truth.hi <= got.hi)
          << what << " -> " << str(got) << " misses [" << truth.lo << ", " << truth.hi << "]";
      if (divmod && is_unknown(got)) {
        // Bounded exactly when the divisor is a constant (and positive, for %).
        EXPECT_TRUE(b.lo != b.hi || b.lo == 0 || (io.op == Op::Mod && b.lo < 0)) << what;
        continue;
      }
      bounded_divmod += divmod;
      EXPECT_EQ(got.lo, truth.lo) << what << " -> " << str(got);
      EXPECT_EQ(got.hi, truth.hi) << what << " -> " << str(got);
    }
  }
  EXPECT_GT(bounded_divmod, 2000);
  std::cout << "[ interval ] int ops: " << checked << " points checked\n";
}

TEST(IntervalArithmetic, IntRangesThatMayLeaveInt32AreUnknown) {
  const AjIv near_max{kIntMax - 3, kIntMax}, small{0, 5};
  EXPECT_TRUE(is_unknown(aj_iv_add(near_max, small)));
  EXPECT_TRUE(is_unknown(aj_iv_sub(AjIv{kIntMin, kIntMin + 2}, small)));
  EXPECT_TRUE(is_unknown(aj_iv_neg(AjIv{kIntMin, 0})));
  EXPECT_TRUE(is_unknown(aj_iv_mul(AjIv{65536, 65536}, AjIv{32768, 32768})));
  EXPECT_TRUE(is_unknown(aj_iv(0, kIntMax + 1LL)));
  EXPECT_FALSE(is_unknown(aj_iv_add(AjIv{kIntMax - 9, kIntMax - 5}, small)));
  EXPECT_EQ(aj_iv_add(AjIv{kIntMax - 9, kIntMax - 5}, small).hi, kIntMax);
}

TEST(IntervalArithmetic, ConversionsContainAndAreExact) {
  Rng r;
  const ir::NodeRef to_int = node_of(Op::ToInt, Type::Int, {Type::Float});
  const ir::NodeRef bool_to_int = node_of(Op::ToInt, Type::Int, {Type::Bool});
  const ir::NodeRef to_float = node_of(Op::ToFloat, Type::Float, {Type::Int});
  const ir::NodeRef bool_to_float = node_of(Op::ToFloat, Type::Float, {Type::Bool});
  for (int round = 0; round < 2000; ++round) {
    // float -> int: truncation; exact (monotone) when both bounds are finite and in int32.
    const AjFv f = r.fv();
    const AjIv i = aj_iv_from_float(f);
    Hull truth;
    for (const Value& x : members(f, r.gen)) {
      const Value args[] = {x};
      truth.add(ir::apply_op(*to_int, args).i);
    }
    ASSERT_TRUE(i.lo <= truth.lo && truth.hi <= i.hi) << str(f) << " -> " << str(i);
    if (std::isfinite(f.lo) && std::isfinite(f.hi)) {
      EXPECT_EQ(i.lo, truth.lo) << str(f);
      EXPECT_EQ(i.hi, truth.hi) << str(f);
    } else {
      EXPECT_TRUE(is_unknown(i)) << str(f);
    }
    // int -> float: exact.
    const AjIv a = r.iv();
    const AjFv g = aj_fv_from_int(a);
    EXPECT_EQ(g.lo, static_cast<double>(a.lo));
    EXPECT_EQ(g.hi, static_cast<double>(a.hi));
    for (const Value& x : members(a)) {
      const Value args[] = {x};
      const double v = ir::apply_op(*to_float, args).f;
      ASSERT_TRUE(g.lo <= v && v <= g.hi);
    }
  }
  // Bounds beyond int32 (saturating on the GPU): unknown, never a wrong range.
  EXPECT_TRUE(is_unknown(aj_iv_from_float(AjFv{0.0, 3e9})));
  EXPECT_TRUE(is_unknown(aj_iv_from_float(AjFv{-3e9, 0.0})));
  EXPECT_TRUE(is_unknown(aj_iv_from_float(AjFv{1e30, 1e30})));
  EXPECT_EQ(aj_iv_from_float(AjFv{-2147483648.9, 2147483647.9}).lo, kIntMin);
  EXPECT_EQ(aj_iv_from_float(AjFv{-2147483648.9, 2147483647.9}).hi, kIntMax);
  // bool -> int / float: exact.
  for (const AjBv b : kBoolRanges) {
    const AjIv i = aj_iv_from_bool(b);
    const AjFv f = aj_fv_from_bool(b);
    Hull truth;
    for (const Value& x : members(b)) {
      const Value args[] = {x};
      truth.add(ir::apply_op(*bool_to_int, args).i);
      EXPECT_EQ(ir::apply_op(*bool_to_float, args).f, static_cast<double>(ir::apply_op(*bool_to_int, args).i));
    }
    EXPECT_EQ(i.lo, truth.lo) << str(b);
    EXPECT_EQ(i.hi, truth.hi) << str(b);
    EXPECT_EQ(f.lo, static_cast<double>(truth.lo)) << str(b);
    EXPECT_EQ(f.hi, static_cast<double>(truth.hi)) << str(b);
  }
}

TEST(IntervalArithmetic, FloatOpsContainSampledResults) {
  Rng r;
  const ir::NodeRef neg = node_of(Op::Neg, Type::Float, {Type::Float});
  const ir::NodeRef add = node_of(Op::Add, Type::Float, {Type::Float, Type::Float});
  const ir::NodeRef sub = node_of(Op::Sub, Type::Float, {Type::Float, Type::Float});
  long checked = 0;
  for (int round = 0; round < 3000; ++round) {
    const AjFv a = r.fv(), b = r.fv();
    const AjFv n = aj_fv_neg(a), s = aj_fv_add(a, b), d = aj_fv_sub(a, b);
    for (const AjFv& v : {n, s, d}) ASSERT_FALSE(std::isnan(v.lo) || std::isnan(v.hi));
    for (const Value& x : members(a, r.gen)) {
      const Value one[] = {x};
      const double nv = ir::apply_op(*neg, one).f;
      ASSERT_TRUE(n.lo <= nv && nv <= n.hi) << "-" << str(a) << " -> " << str(n) << " misses " << nv;
      for (const Value& y : members(b, r.gen)) {
        const Value two[] = {x, y};
        const double sv = ir::apply_op(*add, two).f, dv = ir::apply_op(*sub, two).f;
        // inf - inf is NaN: the op must then have said "unknown".
        if (std::isnan(sv))
          EXPECT_TRUE(std::isinf(s.lo) && std::isinf(s.hi));
        else
          ASSERT_TRUE(s.lo <= sv && sv <= s.hi) << str(a) << " + " << str(b) << " -> " << str(s) << " misses " << sv;
        if (std::isnan(dv))
          EXPECT_TRUE(std::isinf(d.lo) && std::isinf(d.hi));
        else
          ASSERT_TRUE(d.lo <= dv && dv <= d.hi) << str(a) << " - " << str(b) << " -> " << str(d) << " misses " << dv;
        ++checked;
      }
    }
  }
  // A NaN bound widens to everything; the result of a NaN-free op stays NaN-free.
  const AjFv nan = aj_fv(std::nan(""), 1.0);
  EXPECT_TRUE(std::isinf(nan.lo) && nan.lo < 0 && std::isinf(nan.hi) && nan.hi > 0);
  std::cout << "[ interval ] float ops: " << checked << " sampled pairs checked\n";
}

TEST(IntervalArithmetic, WhereContainsBothBranchesItCanTake) {
  Rng r;
  for (int round = 0; round < 2000; ++round) {
    const AjBv c = r.bv();
    const AjIv a = r.iv(), b = r.iv();
    const AjIv wi = aj_iv_where(c, a, b);
    Hull truth;
    for (const Value& cv : members(c))
      for (const Value& v : members(cv.b ? a : b)) truth.add(v.i);
    EXPECT_EQ(wi.lo, truth.lo) << str(c) << " ? " << str(a) << " : " << str(b);
    EXPECT_EQ(wi.hi, truth.hi) << str(c) << " ? " << str(a) << " : " << str(b);

    const AjFv fa = r.fv(), fb = r.fv();
    const AjFv wf = aj_fv_where(c, fa, fb);
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const Value& cv : members(c)) {
      const AjFv& side = cv.b ? fa : fb;
      lo = std::min(lo, side.lo), hi = std::max(hi, side.hi);
    }
    EXPECT_EQ(wf.lo, lo) << str(c) << " ? " << str(fa) << " : " << str(fb);
    EXPECT_EQ(wf.hi, hi) << str(c) << " ? " << str(fa) << " : " << str(fb);
  }
}

TEST(IntervalArithmetic, BoolOpsAreExact) {
  const ir::NodeRef not_ = node_of(Op::Not, Type::Bool, {Type::Bool});
  const ir::NodeRef and_ = node_of(Op::And, Type::Bool, {Type::Bool, Type::Bool});
  const ir::NodeRef or_ = node_of(Op::Or, Type::Bool, {Type::Bool, Type::Bool});
  const ir::NodeRef eq = node_of(Op::Eq, Type::Bool, {Type::Bool, Type::Bool});
  const ir::NodeRef ne = node_of(Op::Ne, Type::Bool, {Type::Bool, Type::Bool});
  const ir::NodeRef where = node_of(Op::Where, Type::Bool, {Type::Bool, Type::Bool, Type::Bool});
  const auto expect_exact = [](AjBv got, const std::vector<bool>& outcomes, const std::string& what) {
    const bool can_false = std::count(outcomes.begin(), outcomes.end(), false) > 0;
    const bool can_true = std::count(outcomes.begin(), outcomes.end(), true) > 0;
    EXPECT_EQ(got.can_false, can_false) << what << " -> " << str(got);
    EXPECT_EQ(got.can_true, can_true) << what << " -> " << str(got);
  };
  for (const AjBv a : kBoolRanges) {
    std::vector<bool> n;
    for (const Value& x : members(a)) {
      const Value one[] = {x};
      n.push_back(ir::apply_op(*not_, one).b);
    }
    expect_exact(aj_bv_not(a), n, "!" + str(a));
    EXPECT_EQ(aj_bv_decided(a), members(a).size() == 1) << str(a);
    for (const AjBv b : kBoolRanges) {
      std::vector<bool> ands, ors, eqs, nes;
      for (const Value& x : members(a))
        for (const Value& y : members(b)) {
          const Value two[] = {x, y};
          ands.push_back(ir::apply_op(*and_, two).b);
          ors.push_back(ir::apply_op(*or_, two).b);
          eqs.push_back(ir::apply_op(*eq, two).b);
          nes.push_back(ir::apply_op(*ne, two).b);
        }
      const std::string pair = str(a) + ", " + str(b);
      expect_exact(aj_bv_and(a, b), ands, "and " + pair);
      expect_exact(aj_bv_or(a, b), ors, "or " + pair);
      expect_exact(aj_bv_eq(a, b), eqs, "== " + pair);
      expect_exact(aj_bv_ne(a, b), nes, "!= " + pair);
      for (const AjBv c : kBoolRanges) {
        std::vector<bool> ws;
        for (const Value& cv : members(c))
          for (const Value& x : members(a))
            for (const Value& y : members(b)) {
              const Value three[] = {cv, x, y};
              ws.push_back(ir::apply_op(*where, three).b);
            }
        expect_exact(aj_bv_where(c, a, b), ws, "where " + str(c) + ", " + pair);
      }
    }
  }
}

// Every comparison, by its enum from ir::interval_comparison: exact on int ranges (the
// outcomes over the box are exactly "always", "never" or "either"), sound on float ranges.
TEST(IntervalArithmetic, EveryComparisonIsExactOnIntsAndSoundOnFloats) {
  Rng r;
  long checked = 0;
  int decided = 0;
  for (const Op op : kComparisons) {
    const AjCmp cmp = ir::interval_comparison(op);
    const ir::NodeRef int_node = node_of(op, Type::Bool, {Type::Int, Type::Int});
    const ir::NodeRef float_node = node_of(op, Type::Bool, {Type::Float, Type::Float});
    for (int round = 0; round < 2000; ++round) {
      const AjIv a = r.iv(-8, 8), b = r.iv(-8, 8);
      bool can_false = false, can_true = false;
      for (const Value& x : members(a))
        for (const Value& y : members(b)) {
          const Value two[] = {x, y};
          (ir::apply_op(*int_node, two).b ? can_true : can_false) = true;
          ++checked;
        }
      const AjBv got = aj_iv_cmp(cmp, a, b);
      const std::string what =
          str(a) + " " + std::string(ir::op_name(op)) + " " + str(b) + " (" + aj_cmp_name(cmp) + ")";
      ASSERT_EQ(got.can_false, can_false) << what << " -> " << str(got);
      ASSERT_EQ(got.can_true, can_true) << what << " -> " << str(got);
      decided += aj_bv_decided(got);

      const AjFv fa = r.fv(), fb = r.fv();
      const AjBv fgot = aj_fv_cmp(cmp, fa, fb);
      for (const Value& x : members(fa, r.gen))
        for (const Value& y : members(fb, r.gen)) {
          const Value two[] = {x, y};
          const bool v = ir::apply_op(*float_node, two).b;
          ASSERT_TRUE(v ? fgot.can_true : fgot.can_false)
              << str(fa) << " " << ir::op_name(op) << " " << str(fb) << " -> " << str(fgot) << " misses " << v;
        }
    }
  }
  EXPECT_GT(decided, 3000);
  // NaN bounds decide nothing.
  const double nan = std::nan("");
  for (const Op op : kComparisons) {
    const AjBv got = aj_cmp(ir::interval_comparison(op), nan, nan, 0.0, 0.0);
    EXPECT_TRUE(got.can_false && got.can_true);
  }
  std::cout << "[ interval ] comparisons: " << checked << " int points checked\n";
}

TEST(IntervalArithmetic, ComparisonEnumNamesAndMapping) {
  EXPECT_EQ(ir::interval_comparison(Op::Lt), AJ_CMP_LT);
  EXPECT_EQ(ir::interval_comparison(Op::Le), AJ_CMP_LE);
  EXPECT_EQ(ir::interval_comparison(Op::Gt), AJ_CMP_GT);
  EXPECT_EQ(ir::interval_comparison(Op::Ge), AJ_CMP_GE);
  EXPECT_EQ(ir::interval_comparison(Op::Eq), AJ_CMP_EQ);
  EXPECT_EQ(ir::interval_comparison(Op::Ne), AJ_CMP_NE);
  EXPECT_STREQ(aj_cmp_name(AJ_CMP_LT), "AJ_CMP_LT");
  EXPECT_STREQ(aj_cmp_name(AJ_CMP_LE), "AJ_CMP_LE");
  EXPECT_STREQ(aj_cmp_name(AJ_CMP_GT), "AJ_CMP_GT");
  EXPECT_STREQ(aj_cmp_name(AJ_CMP_GE), "AJ_CMP_GE");
  EXPECT_STREQ(aj_cmp_name(AJ_CMP_EQ), "AJ_CMP_EQ");
  EXPECT_STREQ(aj_cmp_name(AJ_CMP_NE), "AJ_CMP_NE");
  EXPECT_THROW(ir::interval_comparison(Op::Add), InternalError);
  EXPECT_EQ(aj_tile_class_of(AjBv{true, false}), static_cast<int>(ir::TileClass::Empty));
  EXPECT_EQ(aj_tile_class_of(AjBv{false, true}), static_cast<int>(ir::TileClass::Full));
  EXPECT_EQ(aj_tile_class_of(AjBv{true, true}), static_cast<int>(ir::TileClass::Partial));
}

TEST(IntervalArithmetic, HeaderIsEmbeddedAndMatchesTheSourceTree) {
  const auto names = runtime::embedded_template_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "interval.h"), names.end());
  if (getenv("ATTNJIT_TEMPLATE_DIR") == nullptr) {
    std::ifstream in(std::string(ATTNJIT_SOURCE_DIR) + "/templates/interval.h", std::ios::binary);
    const std::string on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(runtime::load_template("interval.h"), on_disk);
  }
}

// The emitted hooks carry the header (so every template that pastes them gets it) and call it
// with comparison names, not numbers.
TEST(IntervalArithmetic, EmittedTileClassUsesTheSharedHeader) {
  const Variant v = presets::sliding_window().then(presets::prefix_lm());
  const EmittedHooks hooks = emit_hooks(v, assign_slots(v));
  const std::string& s = hooks.source;
  const std::string header = runtime::load_template("interval.h");
  ASSERT_NE(s.find(header), std::string::npos) << s.substr(0, 400);
  EXPECT_NE(s.find("aj_iv_cmp(AJ_CMP_"), std::string::npos) << s;
  for (const char* code :
       {"aj_iv_cmp(0,", "aj_iv_cmp(1,", "aj_iv_cmp(2,", "aj_iv_cmp(3,", "aj_iv_cmp(4,", "aj_iv_cmp(5,"})
    EXPECT_EQ(s.find(code), std::string::npos) << code;
  EXPECT_LT(s.find(header), s.find("aj_tile_class(")) << "the header must come before the hook that calls it";
  // Pasting the header twice (hooks and any template that also pastes it) is harmless.
  EXPECT_NE(header.find("#ifndef ATTNJIT_INTERVAL_H"), std::string::npos);
  EXPECT_EQ(runtime::load_template("hooks.cuh").find("AjIv"), std::string::npos);
}

// NVRTC compiles the header (twice, include-guarded) with a kernel that calls every operation.
TEST(IntervalArithmetic, NvrtcCompilesTheHeaderWithEveryOperation) {
  const std::string header = runtime::load_template("interval.h");
  const std::string kernel = R"(
extern "C" __global__ void aj_interval_probe(const long long* in, const double* fin, int* out) {
  const AjIv a = aj_iv(in[0], in[1]), b = aj_iv(in[2], in[3]);
  const AjFv f = aj_fv(fin[0], fin[1]), g = aj_fv(fin[2], fin[3]);
  const AjBv c = aj_iv_cmp(AJ_CMP_LT, a, b);
  AjIv i = aj_iv_add(aj_iv_sub(a, b), aj_iv_mul(a, b));
  i = aj_iv_min(aj_iv_max(i, aj_iv_neg(a)), aj_iv_abs(b));
  i = aj_iv_where(c, aj_iv_div(i, b), aj_iv_mod(i, b));
  i = aj_iv_add(i, aj_iv_add(aj_iv_from_float(f), aj_iv_from_bool(c)));
  AjFv h = aj_fv_where(c, aj_fv_add(f, g), aj_fv_sub(aj_fv_neg(f), g));
  h = aj_fv_add(h, aj_fv_add(aj_fv_from_int(i), aj_fv_from_bool(c)));
  AjBv m = aj_bv_and(aj_iv_cmp(AJ_CMP_LE, i, b), aj_fv_cmp(AJ_CMP_GE, h, g));
  m = aj_bv_or(m, aj_bv_not(aj_fv_cmp(AJ_CMP_NE, f, aj_fv_unknown())));
  m = aj_bv_where(c, m, aj_bv_eq(m, aj_bv_ne(c, aj_bv(false, true))));
  m = aj_bv_and(m, aj_iv_cmp(AJ_CMP_EQ, i, aj_iv_unknown()));
  m = aj_bv_or(m, aj_iv_cmp(AJ_CMP_GT, a, i));
  out[0] = aj_tile_class_of(aj_bv_or(m, aj_bv_unknown()));
  out[1] = (int)i.lo;
  out[2] = aj_cmp_name(AJ_CMP_NE)[0];
}
)";
  for (const std::string arch : {"sm_80", "sm_90a"}) {
    const auto compiled = runtime::compile_to_cubin(
        header + header + kernel,
        runtime::NvrtcCompileOptions().set_arch(arch).set_program_name("interval_probe.cu").set_resource_report(false));
    EXPECT_FALSE(compiled.cubin.empty()) << arch << "\n" << compiled.log;
  }
}

}  // namespace
}  // namespace attnjit
