// Property tests for the IR: random well-typed expressions built through the DSL builders
// round-trip through the text form to the same interned node, and the rewriting passes
// (constant folding, simplification, CSE + straight-line evaluation) never change a value.
// Also: structural hashes are stable across runs and processes and independent of the
// order in which unrelated nodes were built, and equal expressions are interned once.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "compiler/eval.hpp"
#include "compiler/ir.hpp"
#include "compiler/passes/constant_fold.hpp"
#include "compiler/passes/cse.hpp"
#include "compiler/passes/simplify.hpp"
#include "compiler/printer.hpp"
#include "dsl/expr.hpp"
#include "dsl/parser.hpp"
#include "dsl/presets.hpp"
#include "dsl/variant.hpp"

namespace attnjit {
namespace {

using ir::Op;
using ir::Type;

constexpr int kMaxDepth = 6;
constexpr int kExpressionsPerType = 400;  // x3 result types = 1200 expressions
constexpr int kPointsPerExpression = 6;

// The declarations every generated expression may use.
Declarations test_declarations() {
  Declarations d;
  d.params["pi"] = Type::Int;
  d.params["pj"] = Type::Int;
  d.params["pf"] = Type::Float;
  d.params["pg"] = Type::Float;
  d.tensors["tf"] = TensorDecl{"tf", ir::TensorDType::F32, 1};
  d.tensors["tf2"] = TensorDecl{"tf2", ir::TensorDType::F32, 2};
  d.tensors["ti"] = TensorDecl{"ti", ir::TensorDType::I32, 2};
  d.tensors["tb"] = TensorDecl{"tb", ir::TensorDType::U8, 1};
  d.tensors["tb3"] = TensorDecl{"tb3", ir::TensorDType::U8, 3};
  return d;
}

// Random well-typed expressions through the same builders user code and the parser use.
class ExprGenerator {
 public:
  explicit ExprGenerator(std::uint64_t seed) : rng_(seed) {
    for (const auto& [name, decl] : test_declarations().tensors) tensors_.emplace_back(name, decl.dtype, decl.rank);
  }

  Expr gen(Type t, int depth) {
    if (depth >= kMaxDepth || chance(depth == 0 ? 0.05 : 0.25)) return leaf(t, depth);
    switch (t) {
      case Type::Int: return gen_int(depth);
      case Type::Float: return gen_float(depth);
      case Type::Bool: return gen_bool(depth);
    }
    return leaf(t, depth);
  }

 private:
  bool chance(double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p; }
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  Type numeric() { return chance(0.5) ? Type::Int : Type::Float; }

  // A tensor read at `depth`; its indices sit one level below and are usually leaves.
  Expr tensor_read(ir::TensorDType dtype, int depth) {
    std::vector<const Tensor*> candidates;
    for (const auto& t : tensors_)
      if (t.dtype() == dtype) candidates.push_back(&t);
    const Tensor& t = *candidates[static_cast<std::size_t>(pick(static_cast<int>(candidates.size())))];
    std::vector<Expr> indices;
    for (int i = 0; i < t.rank(); ++i)
      indices.push_back(depth + 1 < kMaxDepth && chance(0.3) ? gen(Type::Int, depth + 1) : leaf(Type::Int, depth + 1));
    return t.at(indices);
  }

  // A leaf at `depth`; a tensor read counts as a leaf here but needs one level for its indices.
  Expr leaf(Type t, int depth) {
    const bool tensor_ok = depth < kMaxDepth;
    static const std::array<const char*, 7> index_names = {"b", "h", "q", "kv", "q_len", "kv_len", "num_heads"};
    static const std::array<long long, 14> ints = {0,  1,  -1,  2,     -2,    3,          7,
                                                   -9, 64, 128, -1000, 65536, 2147483647, -2147483647 - 1};
    static const std::array<double, 14> floats = {0.0,  1.0,  -1.0, 0.5,   -0.5, 2.0,   -2.5,
                                                  3.25, 1e-3, 1e10, -1e-7, 0.1,  100.0, -0.0};
    switch (t) {
      case Type::Int:
        switch (pick(5)) {
          case 0:
          case 1: return make_index(index_names[static_cast<std::size_t>(pick(7))]);
          case 2: return Expr(ints[static_cast<std::size_t>(pick(14))]);
          case 3: return param_int(chance(0.5) ? "pi" : "pj");
          default:
            if (tensor_ok) return tensor_read(ir::TensorDType::I32, depth);
            return make_index("q");
        }
      case Type::Float:
        switch (pick(6)) {
          case 0:
          case 1: return dsl::score_value();
          case 2: return Expr(floats[static_cast<std::size_t>(pick(14))]);
          case 3: return Expr(std::uniform_real_distribution<double>(-50.0, 50.0)(rng_));
          case 4: return param_float(chance(0.5) ? "pf" : "pg");
          default:
            if (tensor_ok) return tensor_read(ir::TensorDType::F32, depth);
            return dsl::score_value();
        }
      case Type::Bool:
        switch (pick(3)) {
          case 0: return Expr(true);
          case 1: return Expr(false);
          default:
            if (tensor_ok) return tensor_read(ir::TensorDType::U8, depth);
            return Expr(true);
        }
    }
    return Expr(0);
  }

  // A binary op whose two operands are sometimes the very same subexpression, so that
  // x - x, min(x, x), x == x and friends reach the simplifier.
  Expr binary(Op op, Type lhs_type, Type rhs_type, int depth) {
    Expr a = gen(lhs_type, depth + 1);
    if (lhs_type == rhs_type && chance(0.15)) return apply_binary(op, a, a);
    return apply_binary(op, a, gen(rhs_type, depth + 1));
  }

  Expr where_of(Type branch, int depth) {
    Expr c = gen(Type::Bool, depth + 1);
    if (chance(0.2)) c = !c;  // where(!c, a, b) is rewritten by simplify
    Expr a = gen(branch == Type::Float && chance(0.3) ? Type::Int : branch, depth + 1);
    if (chance(0.15)) return where(c, a, a);
    return where(c, a, gen(branch, depth + 1));
  }

  Expr gen_int(int depth) {
    static const std::array<Op, 7> binops = {Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Mod, Op::Min, Op::Max};
    switch (pick(7)) {
      case 0: return apply_unary(Op::Neg, gen(Type::Int, depth + 1));
      case 1: return apply_unary(Op::Abs, gen(Type::Int, depth + 1));
      case 2: return apply_unary(Op::ToInt, gen(chance(0.7) ? Type::Float : Type::Bool, depth + 1));
      case 3: return where_of(Type::Int, depth);
      default: return binary(binops[static_cast<std::size_t>(pick(7))], Type::Int, Type::Int, depth);
    }
  }

  Expr gen_float(int depth) {
    static const std::array<Op, 10> unops = {Op::Neg,  Op::Abs,  Op::Exp,     Op::Exp2, Op::Log,
                                             Op::Log2, Op::Tanh, Op::Sigmoid, Op::Sqrt, Op::Floor};
    static const std::array<Op, 6> binops = {Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Min, Op::Max};
    switch (pick(6)) {
      case 0:
      case 1: {
        const Op op = unops[static_cast<std::size_t>(pick(10))];
        // Float functions also take ints (promoted); negation and abs keep the type.
        const Type arg = (op == Op::Neg || op == Op::Abs) ? Type::Float : numeric();
        return apply_unary(op, gen(arg, depth + 1));
      }
      case 2: return apply_unary(Op::ToFloat, gen(chance(0.7) ? Type::Int : Type::Bool, depth + 1));
      case 3: return where_of(Type::Float, depth);
      default: {
        // At least one float operand; the other may be an int (promoted).
        const Op op = binops[static_cast<std::size_t>(pick(6))];
        const int shape = pick(3);
        return binary(op, shape == 1 ? Type::Int : Type::Float, shape == 2 ? Type::Int : Type::Float, depth);
      }
    }
  }

  Expr gen_bool(int depth) {
    static const std::array<Op, 6> comparisons = {Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::Eq, Op::Ne};
    switch (pick(7)) {
      case 0: return apply_unary(Op::Not, gen(Type::Bool, depth + 1));
      case 1: return binary(Op::And, Type::Bool, Type::Bool, depth);
      case 2: return binary(Op::Or, Type::Bool, Type::Bool, depth);
      case 3: return binary(chance(0.5) ? Op::Eq : Op::Ne, Type::Bool, Type::Bool, depth);
      case 4: return where_of(Type::Bool, depth);
      default: return binary(comparisons[static_cast<std::size_t>(pick(6))], numeric(), numeric(), depth);
    }
  }

  std::mt19937_64 rng_;
  std::vector<Tensor> tensors_;
};

// Tensor contents: a deterministic function of the tensor's name and the indices.
std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}

ir::Value tensor_value(const ir::Node& read, std::span<const std::int64_t> indices) {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : read.name) h = mix(h, static_cast<unsigned char>(c));
  for (auto i : indices) h = mix(h, static_cast<std::uint64_t>(i));
  h ^= h >> 29;
  switch (read.type) {
    case Type::Float:
      return ir::Value::of_float(static_cast<double>(static_cast<std::int64_t>(h % 4001) - 2000) / 64.0);
    case Type::Int: return ir::Value::of_int(static_cast<std::int64_t>(h % 201) - 100);
    case Type::Bool: return ir::Value::of_bool((h & 1) != 0);
  }
  return {};
}

ir::EvalEnv random_env(std::mt19937_64& rng) {
  auto uniform_int = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  ir::EvalEnv env;
  env.b = uniform_int(0, 3);
  env.h = uniform_int(0, 7);
  env.q = uniform_int(0, 40);
  env.kv = uniform_int(0, 40);
  env.q_len = uniform_int(1, 64);
  env.kv_len = uniform_int(1, 64);
  env.num_heads = uniform_int(1, 16);
  env.score = std::uniform_real_distribution<double>(-20.0, 20.0)(rng);
  if (uniform_int(0, 9) == 0) env.score = 0.0;
  env.params["pi"] = ir::Value::of_int(uniform_int(-50, 50));
  env.params["pj"] = ir::Value::of_int(uniform_int(-3, 3));
  env.params["pf"] = ir::Value::of_float(std::uniform_real_distribution<double>(-10.0, 10.0)(rng));
  env.params["pg"] = ir::Value::of_float(uniform_int(-2, 2));  // sometimes exactly 0
  env.read_tensor = tensor_value;
  return env;
}

// Exact equality of two values of type `t`: NaN matches NaN, infinities match by sign.
bool same_value(Type t, const ir::Value& a, const ir::Value& b) {
  switch (t) {
    case Type::Bool: return a.b == b.b;
    case Type::Int: return a.i == b.i;
    case Type::Float:
      if (std::isnan(a.f) || std::isnan(b.f)) return std::isnan(a.f) && std::isnan(b.f);
      return a.f == b.f;  // covers same-signed infinities
  }
  return false;
}

std::string show(Type t, const ir::Value& v) {
  switch (t) {
    case Type::Bool: return v.b ? "true" : "false";
    case Type::Int: return std::to_string(v.i);
    case Type::Float: {
      std::ostringstream s;
      s.precision(17);
      s << v.f;
      return s.str();
    }
  }
  return "?";
}

std::string describe_env(const ir::EvalEnv& env) {
  std::ostringstream s;
  s.precision(17);
  s << "b=" << env.b << " h=" << env.h << " q=" << env.q << " kv=" << env.kv << " q_len=" << env.q_len
    << " kv_len=" << env.kv_len << " num_heads=" << env.num_heads << " score=" << env.score
    << " pi=" << env.params.at("pi").i << " pj=" << env.params.at("pj").i << " pf=" << env.params.at("pf").f
    << " pg=" << env.params.at("pg").f;
  return s.str();
}

std::vector<Expr> generate_corpus() {
  ExprGenerator gen(20240917);
  std::vector<Expr> out;
  for (int i = 0; i < kExpressionsPerType; ++i)
    for (Type t : {Type::Float, Type::Bool, Type::Int}) out.push_back(gen.gen(t, 0));
  return out;
}

TEST(IrProperty, CorpusIsLargeDeepAndCoversEveryOperator) {
  const auto corpus = generate_corpus();
  ASSERT_GE(corpus.size(), 1000u);
  std::set<Op> ops;
  std::set<std::string> index_names;
  std::set<ir::TensorDType> dtypes;
  bool negative_int = false, negative_float = false, zero = false, one = false;
  std::size_t max_depth = 0;
  std::vector<ir::NodeRef> roots;
  for (const auto& e : corpus) roots.push_back(e.node());
  for (const auto& n : ir::topological_order(roots)) {
    ops.insert(n->op);
    if (n->op == Op::Index) index_names.insert(n->name);
    if (n->op == Op::TensorRead) dtypes.insert(n->tensor_dtype);
    if (n->op == Op::ConstInt && n->int_value < 0) negative_int = true;
    if (n->op == Op::ConstFloat && n->float_value < 0) negative_float = true;
    if ((n->op == Op::ConstInt && n->int_value == 0) || (n->op == Op::ConstFloat && n->float_value == 0.0)) zero = true;
    if ((n->op == Op::ConstInt && n->int_value == 1) || (n->op == Op::ConstFloat && n->float_value == 1.0)) one = true;
  }
  // Depth of each root (leaves have depth 0).
  std::map<const ir::Node*, std::size_t> depth;
  for (const auto& n : ir::topological_order(roots)) {
    std::size_t d = 0;
    for (const auto& a : n->args) d = std::max(d, depth[a.get()] + 1);
    depth[n.get()] = d;
    max_depth = std::max(max_depth, d);
  }
  for (int o = static_cast<int>(Op::ConstBool); o <= static_cast<int>(Op::Where); ++o)
    EXPECT_TRUE(ops.count(static_cast<Op>(o)))
        << "no generated expression uses '" << ir::op_name(static_cast<Op>(o)) << "'";
  EXPECT_EQ(index_names.size(), ir::index_names().size());
  EXPECT_EQ(dtypes.size(), 3u);  // f32, i32, u8
  EXPECT_TRUE(negative_int && negative_float && zero && one);
  // The generator nests at most kMaxDepth builder calls; the IR may be deeper by the
  // int-to-float promotions the builders insert implicitly (at most one per level).
  EXPECT_GE(max_depth, static_cast<std::size_t>(kMaxDepth));
  EXPECT_LE(max_depth, static_cast<std::size_t>(2 * kMaxDepth + 1));
}

TEST(IrProperty, PrintParseRoundTripIsTheSameInternedNode) {
  const Declarations decls = test_declarations();
  const auto corpus = generate_corpus();
  int checked = 0;
  for (const auto& e : corpus) {
    const std::string text = ir::print_expr(e.node());
    Expr back(0);
    try {
      back = parse_expression(text, decls);
    } catch (const Error& err) {
      ADD_FAILURE() << "printed text does not parse back:\n  " << text << "\n" << err.what();
      continue;
    }
    EXPECT_EQ(back.node().get(), e.node().get()) << "text: " << text << "\nreparsed as: " << back.str();
    EXPECT_EQ(back.node()->hash, e.node()->hash) << text;
    EXPECT_EQ(ir::print_expr(back.node()), text);
    // The passes' outputs are expressions too and must round-trip the same way.
    for (const auto& transformed : {ir::constant_fold(e.node()), ir::simplify(e.node())}) {
      const std::string t = ir::print_expr(transformed);
      EXPECT_EQ(parse_expression(t, decls).node().get(), transformed.get()) << "transformed text: " << t;
    }
    ++checked;
  }
  EXPECT_GE(checked, 1000);
}

TEST(IrProperty, PassesPreserveValues) {
  const auto corpus = generate_corpus();
  std::mt19937_64 rng(77);
  int checked = 0, changed_by_fold = 0, changed_by_simplify = 0, shared_programs = 0;
  std::vector<ir::Value> scratch, roots;
  for (const auto& e : corpus) {
    const ir::NodeRef original = e.node();
    const Type t = original->type;
    const ir::NodeRef folded = ir::constant_fold(original);
    const ir::NodeRef simplified = ir::simplify(original);
    const ir::NodeRef both = ir::simplify(ir::constant_fold(original));
    changed_by_fold += folded != original;
    changed_by_simplify += simplified != original;
    EXPECT_EQ(folded->type, t);
    EXPECT_EQ(simplified->type, t);
    const ir::Program program = ir::eliminate_common_subexpressions({original});
    const ir::Program program_both = ir::eliminate_common_subexpressions({both});
    shared_programs += !program.shared().empty();
    for (int p = 0; p < kPointsPerExpression; ++p) {
      const ir::EvalEnv env = random_env(rng);
      const ir::Value want = ir::evaluate(original, env);
      const auto check = [&](const char* what, const ir::Value& got, const ir::NodeRef& form) {
        EXPECT_TRUE(same_value(t, want, got))
            << what << " changed the value at " << describe_env(env) << "\n  original:    " << ir::print_expr(original)
            << " = " << show(t, want) << "\n  transformed: " << ir::print_expr(form) << " = " << show(t, got);
      };
      check("constant_fold", ir::evaluate(folded, env), folded);
      check("simplify", ir::evaluate(simplified, env), simplified);
      check("constant_fold+simplify", ir::evaluate(both, env), both);
      ir::evaluate_program(program, env, scratch, roots);
      ASSERT_EQ(roots.size(), 1u);
      check("eliminate_common_subexpressions+evaluate_program", roots[0], original);
      ir::evaluate_program(program_both, env, scratch, roots);
      check("all passes + evaluate_program", roots[0], both);
    }
    ++checked;
  }
  EXPECT_GE(checked, 1000);
  // The corpus must actually exercise the passes, not only run them.
  EXPECT_GT(changed_by_fold, 50);
  EXPECT_GT(changed_by_simplify, 50);
  EXPECT_GT(shared_programs, 50);
}

// Targeted cases the random corpus reaches only rarely: a negative zero produced at run
// time or by folding must keep its sign, since 1 / -0.0 is -inf.
TEST(IrProperty, PassesPreserveTheSignOfZero) {
  using namespace dsl::vars;
  ir::EvalEnv env;
  env.score = -0.5;  // score * 0.0 is -0.0
  const Expr negative_zero = score * 0.0;
  const std::vector<Expr> cases = {
      1.0 / (negative_zero + 0.0),  // x + 0.0 is not x when x is -0.0
      1.0 / (0.0 + negative_zero),
      1.0 / (negative_zero - 0.0),
      1.0 / (negative_zero * 1.0),
      1.0 / -Expr(0.0),  // folding -(0.0) must not produce +0.0
      1.0 / (Expr(-0.5) * 0.0),
  };
  for (const auto& e : cases) {
    const ir::Value want = ir::evaluate(e.node(), env);
    for (const auto& [what, form] : {std::pair<const char*, ir::NodeRef>{"constant_fold", ir::constant_fold(e.node())},
                                     {"simplify", ir::simplify(e.node())}}) {
      const ir::Value got = ir::evaluate(form, env);
      EXPECT_TRUE(same_value(Type::Float, want, got))
          << what << ": " << e.str() << " = " << want.f << " but " << ir::print_expr(form) << " = " << got.f;
    }
  }
}

// ---- hashing and interning ---------------------------------------------------------

Expr fixed_expression() {
  using namespace dsl::vars;
  const Tensor slopes("slopes", ir::TensorDType::F32, 1);
  return where(kv <= q && (q - kv) < param_int("window"), score + slopes[h] * to_float(kv - q), -1.0e30);
}

TEST(IrHash, FixedExpressionHashIsStableAcrossBuilds) {
  // Computed once and pasted: a change here means every cache key changes. If the
  // structure or the hash function changed on purpose, update the constant.
  EXPECT_EQ(fixed_expression().node()->hash.hex(), "3db2c8291c79a7888adbef815375833b");
  EXPECT_EQ(fixed_expression().str(), "where(kv <= q && q - kv < window, score + slopes[h] * float(kv - q), -1e+30)");
}

TEST(IrHash, VariantHashIsStableAcrossProcesses) {
  const std::string text = "param window: int; score: score * 0.5; mask: kv <= q && q - kv < window;";
  const std::string in_process = Variant::parse(text).hash().hex();
  std::vector<std::string> lines;
  for (int run = 0; run < 2; ++run) {
    const std::string command = std::string("'") + ATTNJIT_CLI_PATH + "' variant check '" + text + "' 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    std::array<char, 4096> buf{};
    while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
    ASSERT_EQ(pclose(pipe), 0) << out;
    std::string hash_line;
    std::istringstream lines_in(out);
    for (std::string line; std::getline(lines_in, line);)
      if (line.rfind("# ok: hash ", 0) == 0) hash_line = line;
    ASSERT_FALSE(hash_line.empty()) << out;
    lines.push_back(hash_line);
  }
  EXPECT_EQ(lines[0], lines[1]);
  EXPECT_EQ(lines[0], "# ok: hash " + in_process);
}

TEST(IrHash, IndependentOfConstructionOrderOfUnrelatedNodes) {
  using namespace dsl::vars;
  const auto build = [] {
    using namespace dsl::vars;
    return (score + param_float("zz_bias") * to_float(q - kv)) / (abs(score) + 3.5);
  };
  ir::Hash128 first, second;
  std::string first_text;
  {
    // Unrelated nodes first, in one order; then the expression built left to right.
    std::vector<Expr> unrelated = {q * 17 + 3, exp(score * 0.25), param_int("zz_unrelated") % 5, q_len - kv_len};
    const Expr e = build();
    first = e.node()->hash;
    first_text = e.str();
  }
  // Everything above is dead now, so the interning table forgets it.
  {
    // Other unrelated nodes, in the reverse order, and the expression built right to left.
    std::vector<Expr> unrelated = {kv_len - q_len, param_int("zz_unrelated") % 5, sigmoid(score - 1.0), h * 3};
    const Expr denominator = abs(score) + 3.5;
    const Expr diff = to_float(q - kv);
    const Expr bias = param_float("zz_bias");
    const Expr e = (score + bias * diff) / denominator;
    second = e.node()->hash;
    EXPECT_EQ(e.str(), first_text);
  }
  EXPECT_EQ(first, second);
  // And a third time, after unrelated nodes that collide on nothing but names.
  const Expr noise = param_float("zz_bias_other") + to_float(kv - q);
  EXPECT_EQ(build().node()->hash, first);
}

TEST(IrHash, DistinguishesStructure) {
  using namespace dsl::vars;
  EXPECT_NE((q - kv).node()->hash, (kv - q).node()->hash);
  EXPECT_NE(Expr(1).node()->hash, Expr(1.0).node()->hash);
  EXPECT_NE(param_int("w").node()->hash, param_float("w").node()->hash);
  EXPECT_NE(Tensor("t", ir::TensorDType::F32, 1)[h].node()->hash, Tensor("t", ir::TensorDType::F16, 1)[h].node()->hash);
  EXPECT_NE(Tensor("t", ir::TensorDType::F32, 1)[h].node()->hash, Tensor("u", ir::TensorDType::F32, 1)[h].node()->hash);
}

TEST(IrInterning, SeparatelyBuiltEqualExpressionsArePointerEqual) {
  using namespace dsl::vars;
  const Tensor doc("doc", ir::TensorDType::I32, 2);
  const Expr a = doc(b, q) == doc(b, kv) && kv <= q;
  const Expr b2 = doc.at({dsl::batch_index(), dsl::query_index()}) == doc.at({dsl::batch_index(), dsl::key_index()}) &&
                  dsl::key_index() <= dsl::query_index();
  EXPECT_TRUE(same(a, b2));
  EXPECT_EQ(a.node().get(), b2.node().get());
  // Via the parser as well.
  Declarations decls;
  decls.tensors["doc"] = TensorDecl{"doc", ir::TensorDType::I32, 2};
  EXPECT_EQ(parse_expression("doc[b, q] == doc[b, kv] && kv <= q", decls).node().get(), a.node().get());
  // Rebuilding an existing expression adds no nodes to the table.
  const std::size_t before = ir::interned_node_count();
  const Expr again = doc(b, q) == doc(b, kv) && kv <= q;
  EXPECT_EQ(ir::interned_node_count(), before);
  EXPECT_TRUE(same(again, a));
  // Shared subexpressions are one node.
  const Expr twice = (q - kv) * (q - kv);
  EXPECT_EQ(twice.node()->args[0].get(), twice.node()->args[1].get());
}

TEST(VariantRoundTrip, EveryPresetParsesBackToTheSameTextAndHash) {
  ASSERT_FALSE(presets::registry().empty());
  for (const auto& info : presets::registry()) {
    SCOPED_TRACE(info.name);
    const Variant v = info.make();
    const std::string text = v.text();
    Variant back;
    ASSERT_NO_THROW(back = Variant::parse(text)) << text;
    EXPECT_EQ(back.text(), text);
    EXPECT_EQ(back.hash(), v.hash());
    EXPECT_EQ(back.name(), v.name());
    EXPECT_TRUE(same(back.score_mod(), v.score_mod()));
    EXPECT_TRUE(same(back.mask_mod(), v.mask_mod()));
    EXPECT_EQ(back.rope(), v.rope());
    EXPECT_EQ(back.output_gate(), v.output_gate());
  }
}

// The row hooks' settings beyond the presets: a runtime RoPE offset (an int parameter, also
// shared with a mask), partial and interleaved rotation, rank-4 f32 and rank-3 f16 gates.
TEST(VariantRoundTrip, RowHookSettingsParseBackToTheSameVariant) {
  using namespace dsl::vars;
  RopeHook offset;
  offset.rotary_dim = 64;
  offset.offset_param = "pos";
  RopeHook interleaved{500000.0, 32, RopeHook::Layout::Interleaved, "start"};
  const std::vector<Variant> variants = {
      presets::rope(offset).then(presets::causal(presets::CausalAlignment::BottomRight)),
      presets::rope(interleaved).then(presets::output_gate(OutputGateHook{"g4", ir::TensorDType::F32, 4})),
      presets::rope(offset).then(Variant("offset_mask").with_mask_mod(kv <= q + param_int("pos"))),
      presets::output_gate(OutputGateHook{"gh", ir::TensorDType::F16, 3}).then(presets::sliding_window()),
      presets::rope(RopeHook{2.0, 6, RopeHook::Layout::Half, ""}),
  };
  for (const Variant& v : variants) {
    const std::string text = v.text();
    SCOPED_TRACE(text);
    Variant back;
    ASSERT_NO_THROW(back = Variant::parse(text));
    EXPECT_EQ(back.text(), text);
    EXPECT_EQ(back.hash(), v.hash());
    EXPECT_EQ(back.rope(), v.rope());
    EXPECT_EQ(back.output_gate(), v.output_gate());
    EXPECT_EQ(back.params(), v.params());
    EXPECT_EQ(back.tensors(), v.tensors());
  }
  // The offset is declared once as an int parameter, also when the mask reads it too.
  EXPECT_EQ(variants[0].params(), (std::vector<ParamDecl>{{"pos", ir::Type::Int}}));
  EXPECT_EQ(variants[2].params(), (std::vector<ParamDecl>{{"pos", ir::Type::Int}}));
  EXPECT_NE(variants[0].text().find("param pos: int;\n"), std::string::npos) << variants[0].text();
  EXPECT_NE(variants[0].text().find("rope: theta=10000.0, dim=64, layout=half, offset=pos;\n"), std::string::npos)
      << variants[0].text();
  EXPECT_NE(variants[1].text().find("layout=interleaved, offset=start;"), std::string::npos) << variants[1].text();
  EXPECT_EQ(variants[4].text().find("offset"), std::string::npos) << variants[4].text();

  // The brief's spelling (integer theta, any statement order) reads to the same variant.
  const Variant written = Variant::parse(
      "rope: theta=10000, dim=64, layout=half, offset=pos;\nparam pos: int;\nmask: kv <= q + kv_len - q_len;");
  EXPECT_EQ(written.hash(), variants[0].hash());
  // The offset's name is part of the variant; its value is not (a binding).
  RopeHook renamed = offset;
  renamed.offset_param = "cache_len";
  EXPECT_NE(presets::rope(renamed).hash(), presets::rope(offset).hash());
  RopeHook none = offset;
  none.offset_param.clear();
  EXPECT_NE(presets::rope(none).hash(), presets::rope(offset).hash());
}

}  // namespace
}  // namespace attnjit
