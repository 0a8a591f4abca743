// Expected-failure tests: every user mistake is a UserError whose text names the field,
// the offending value, what is allowed, and the remedy (DESIGN §5, §7.10). Parse errors
// also point at the exact line and column with a caret under the culprit.
#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "compiler/eval.hpp"
#include "dsl/expr.hpp"
#include "dsl/parser.hpp"
#include "dsl/presets.hpp"
#include "dsl/variant.hpp"
#include "runtime/api/bindings.hpp"
#include "runtime/api/dlpack_view.hpp"

namespace attnjit {
namespace {

using namespace dsl::vars;

// Runs `f`, which must throw UserError, and returns its message ("" and a failure otherwise).
std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::User);
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UserError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected a UserError, but nothing was thrown";
  return {};
}

// Every phrase must occur in the message.
void expect_phrases(const std::string& message, std::initializer_list<std::string_view> phrases) {
  for (auto p : phrases)
    EXPECT_NE(message.find(p), std::string::npos) << "missing phrase: " << p << "\nin message:\n" << message;
}

std::string parse_error(std::string_view text) {
  return user_error_of([&] { (void)Variant::parse(text); });
}

// The message of a parse error ends with the offending line and a caret under `column`.
void expect_caret(const std::string& message, std::string_view line_text, int column) {
  const std::string expected = "\n  " + std::string(line_text) + "\n  " + std::string(column - 1, ' ') + "^";
  EXPECT_TRUE(message.size() >= expected.size() &&
              message.compare(message.size() - expected.size(), expected.size(), expected) == 0)
      << "expected the message to end with:" << expected << "\nmessage:\n"
      << message;
}

// ---- types checked when expressions are built ------------------------------------------

TEST(UserErrors, FloatUsedAsMask) {
  const auto m = user_error_of([] { Variant().with_mask_mod(score); });
  expect_phrases(m, {"mask_mod must be a bool expression", "got float `score`", "e.g. `score > 0`"});
}

TEST(UserErrors, BoolUsedAsScore) {
  const auto m = user_error_of([] { Variant().with_score_mod(kv <= q); });
  expect_phrases(
      m, {"score_mod must be a float expression", "got bool `kv <= q`", "belongs in mask_mod", "to_float(...)"});
}

TEST(UserErrors, BoolInArithmetic) {
  const auto m = user_error_of([] { (void)((kv <= q) + 1); });
  expect_phrases(
      m, {"type error in '+'", "left operand is bool `kv <= q`", "needs int or float", "where(cond, 1.0, 0.0)"});
  const auto right = user_error_of([] { (void)(score * (q > kv)); });
  expect_phrases(right, {"type error in '*'", "right operand is bool `q > kv`"});
}

TEST(UserErrors, ModuloOnFloats) {
  const auto m = user_error_of([] { (void)(score % 2.0); });
  expect_phrases(m, {"type error in '%'", "float `score`", "float `2.0`", "needs two ints", "x - y * floor(x / y)"});
}

TEST(UserErrors, LogicalAndOnInts) {
  const auto m = user_error_of([] { (void)(q && kv); });
  expect_phrases(m, {"type error in '&&'", "left operand is int `q`", "needs bool", "Compare it first, e.g. `q > 0`"});
}

TEST(UserErrors, NotOnFloat) {
  const auto m = user_error_of([] { (void)!score; });
  expect_phrases(m, {"type error in '!'", "float `score`", "needs bool"});
}

TEST(UserErrors, FloatFunctionOfBool) {
  const auto m = user_error_of([] { (void)exp(kv < q); });
  expect_phrases(m, {"type error in 'exp'", "bool `kv < q`", "needs int or float"});
}

TEST(UserErrors, WhereWithNonBoolCondition) {
  const auto m = user_error_of([] { (void)where(q - kv, score, 0.0); });
  expect_phrases(m, {"type error in 'where'", "the condition is int `q - kv`", "must be bool", "`q - kv > 0`"});
}

TEST(UserErrors, WhereWithMismatchedBranches) {
  const auto m = user_error_of([] { (void)where(kv <= q, true, score); });
  expect_phrases(
      m, {"type error in 'where'", "the branches are bool `true` and float `score`", "both be bool or both numeric"});
}

// ---- tensors and names -----------------------------------------------------------------

TEST(UserErrors, TensorIndexedWithWrongNumberOfIndices) {
  const Tensor slopes("slopes", ir::TensorDType::F32, 1);
  const auto m = user_error_of([&] { (void)slopes(h, q); });
  expect_phrases(m, {"tensor 'slopes' has rank 1 but is indexed with 2 indices", "give exactly 1 index expressions"});
  const Tensor doc("doc", ir::TensorDType::I32, 2);
  const auto one = user_error_of([&] { (void)doc[b]; });
  expect_phrases(one, {"tensor 'doc' has rank 2 but is indexed with 1 index", "give exactly 2"});
}

TEST(UserErrors, TensorIndexedByFloat) {
  const Tensor bias("bias", ir::TensorDType::F32, 2);
  const auto m = user_error_of([&] { (void)bias(h, score * 2.0); });
  expect_phrases(m, {"tensor 'bias': index 1 is float `score * 2.0`", "indices must be int", "to_int(...)"});
}

TEST(UserErrors, InvalidTensorRank) {
  const auto m = user_error_of([] { Tensor("t5", ir::TensorDType::F32, 5); });
  expect_phrases(m, {"tensor 't5' has rank 5", "allowed ranks are 1 to 4"});
  expect_phrases(user_error_of([] { Tensor("t0", ir::TensorDType::F32, 0); }), {"has rank 0", "1 to 4"});
}

TEST(UserErrors, InvalidOrReservedParamName) {
  expect_phrases(user_error_of([] { (void)param_int("2window"); }),
                 {"invalid parameter name '2window'", "[A-Za-z_][A-Za-z0-9_]*"});
  expect_phrases(user_error_of([] { (void)param_float("kv"); }),
                 {"invalid parameter name 'kv'", "not a built-in name (b, h, q, kv, q_len, kv_len, num_heads, score)"});
  expect_phrases(user_error_of([] { (void)param_float("exp"); }), {"invalid parameter name 'exp'", "function name"});
  expect_phrases(user_error_of([] { (void)make_param("flag", ir::Type::Bool); }),
                 {"parameter 'flag' is bool", "parameters are int or float"});
}

TEST(UserErrors, InvalidTensorName) {
  expect_phrases(user_error_of([] { Tensor("score", ir::TensorDType::F32, 1); }),
                 {"invalid tensor name 'score'", "not a built-in or function name"});
}

TEST(UserErrors, NameUsedAsBothParamAndTensor) {
  const Tensor x("x", ir::TensorDType::F32, 1);
  const auto m = user_error_of([&] { Variant().with_score_mod(score + param_float("x") + x[h]); });
  expect_phrases(m, {"the name 'x' is used for both a parameter and a tensor", "rename one"});
}

TEST(UserErrors, ParamUsedWithTwoTypes) {
  const auto m = user_error_of([] { Variant().with_score_mod(score + param_float("w") + to_float(param_int("w"))); });
  expect_phrases(m, {"parameter 'w' is used both as", "int", "float", "give each its own name"});
}

// ---- presets and composition -------------------------------------------------------------

TEST(UserErrors, UnknownPresetListsAvailableOnes) {
  const auto m = user_error_of([] { (void)presets::by_name("causall"); });
  expect_phrases(
      m, {"unknown preset 'causall'", "available presets: dense, causal,", "sliding_window", "`attnjit variant list`"});
}

TEST(UserErrors, ComposingConflictingRope) {
  RopeHook a, b2;
  b2.theta = 500000.0;
  const auto m = user_error_of([&] { (void)presets::rope(a).then(presets::rope(b2)); });
  expect_phrases(m, {"cannot compose", "both declare RoPE with different settings", "keep one"});
  // Identical settings compose fine.
  EXPECT_NO_THROW((void)presets::rope(a).then(presets::rope(a)));
}

TEST(UserErrors, InvalidRopeSettings) {
  RopeHook bad_theta;
  bad_theta.theta = -1.0;
  expect_phrases(user_error_of([&] { Variant().with_rope(bad_theta); }), {"rope theta is -1", "must be positive"});
  RopeHook odd;
  odd.rotary_dim = 7;
  expect_phrases(user_error_of([&] { Variant().with_rope(odd); }),
                 {"rope rotary_dim is 7", "0 (whole head) or a positive even number"});
}

TEST(UserErrors, RopeOffsetParameter) {
  RopeHook bad_name;
  bad_name.offset_param = "q";
  expect_phrases(user_error_of([&] { Variant().with_rope(bad_name); }),
                 {"rope offset parameter name 'q' is not allowed", "e.g. \"pos\"", "leave it empty"});
  bad_name.offset_param = "aj_pos";
  expect_phrases(user_error_of([&] { Variant().with_rope(bad_name); }), {"'aj_pos' is not allowed"});

  // The offset is an int parameter: the same name used as a float elsewhere is a conflict,
  // and the variant keeps its previous hooks.
  RopeHook hook;
  hook.offset_param = "pos";
  Variant v = Variant().with_score_mod(score * param_float("pos"));
  expect_phrases(
      user_error_of([&] { v.with_rope(hook); }),
      {"parameter 'pos' is used both as the rope offset (int) and as float", "give the offset its own name"});
  EXPECT_FALSE(v.rope().has_value());
  // ... and a name cannot be the offset and a tensor.
  expect_phrases(user_error_of([&] {
                   (void)presets::output_gate(OutputGateHook{"pos", ir::TensorDType::F32, 3}).then(presets::rope(hook));
                 }),
                 {"the name 'pos' is used for both a parameter and a tensor; rename one"});
  // Two RoPE declarations that differ only in the offset do not compose.
  RopeHook other = hook;
  other.offset_param = "start";
  expect_phrases(user_error_of([&] { (void)presets::rope(hook).then(presets::rope(other)); }),
                 {"both declare RoPE with different settings"});
}

// ---- the text form: positions, carets, messages ----------------------------------------

TEST(ParseErrors, UnknownNameSuggestsDeclaration) {
  const std::string text = "score: score + slope[h];";
  const auto m = parse_error(text);
  expect_phrases(m, {"variant text, line 1, column 16: unknown name 'slope'", "Declared parameters: none",
                     "declared tensors: none", "built-ins: b, h, q, kv, q_len, kv_len, num_heads, score",
                     "Declare it first, e.g. `param slope: int;`"});
  expect_caret(m, text, 16);
}

TEST(ParseErrors, MissingClosingParenthesis) {
  const std::string text = "score: (score + 1.0;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 1, column 20: expected ')' but found ';'"});
  expect_caret(m, text, 20);
  expect_phrases(parse_error("score: exp(score"), {"line 1, column 17: expected ')' but found the end of the text"});
}

TEST(ParseErrors, UnexpectedCharacter) {
  const std::string text = "score: score @ 2.0;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 1, column 14: unexpected character '@'"});
  expect_caret(m, text, 14);
}

TEST(ParseErrors, UnterminatedString) {
  const std::string text = "variant \"mine;\nscore: score;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 1, column 9: unterminated string: add the closing '\"'"});
  expect_caret(m, "variant \"mine;", 9);
}

TEST(ParseErrors, UnknownStatement) {
  const auto m = parse_error("scor: score * 2.0;");
  expect_phrases(
      m, {"line 1, column 1: unknown statement 'scor'", "allowed: variant, param, tensor, score, mask, rope, gate"});
}

TEST(ParseErrors, DuplicateStatement) {
  const std::string text = "mask: kv <= q;\nscore: score;\nmask: q <= kv;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 3, column 1: 'mask' is given twice; give it once"});
  expect_caret(m, "mask: q <= kv;", 1);
}

TEST(ParseErrors, UnknownDtype) {
  const auto m = parse_error("tensor t: f8, rank=1;\nscore: score + t[h];");
  expect_phrases(m, {"line 1, column 11: unknown tensor dtype 'f8'", "allowed: f32, f16, bf16, i32, i64, u8"});
}

TEST(ParseErrors, BadRank) {
  const auto m = parse_error("tensor t: f32, rank=5;\nscore: score + t[h];");
  expect_phrases(m, {"line 1, column 21: tensor rank '5' is not allowed; use 1, 2, 3 or 4"});
  expect_phrases(parse_error("tensor t: f32, rank=x;"), {"tensor rank 'x' is not allowed"});
}

TEST(ParseErrors, BadParamType) {
  const auto m = parse_error("param w: bool;\nmask: w;");
  expect_phrases(m, {"line 1, column 10: parameter type 'bool' is not allowed; use int or float"});
}

TEST(ParseErrors, DeclaredButUnused) {
  const std::string text = "param window: int;\nscore: score * 2.0;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 1, column 7: 'window' is declared but never used; remove the declaration"});
  expect_caret(m, "param window: int;", 7);
}

TEST(ParseErrors, DeclaredTwiceOrReservedName) {
  expect_phrases(parse_error("param x: int;\ntensor x: f32, rank=1;\nscore: score;"),
                 {"line 2, column 8: 'x' is already declared; declare each name once"});
  expect_phrases(
      parse_error("param kv_len: int;"),
      {"line 1, column 7: 'kv_len' is a built-in or reserved word and cannot be declared; choose another name"});
}

TEST(ParseErrors, IntegerLiteralOutOfRange) {
  const auto m = parse_error("mask: q < 3000000000;");
  expect_phrases(m, {"line 1, column 11: integer literal 3000000000 does not fit in 32 bits; ints are 32-bit"});
  // The most negative 32-bit value is fine, one below is not.
  EXPECT_NO_THROW((void)parse_expression("q > -2147483648"));
  expect_phrases(user_error_of([] { (void)parse_expression("q > -2147483649"); }),
                 {"integer literal -2147483649 does not fit in 32 bits"});
}

TEST(ParseErrors, TypeErrorReportedAtTheOperator) {
  const std::string text = "mask: kv <= q && q;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 1, column 15: type error in '&&': right operand is int `q`, but '&&' needs bool"});
  expect_caret(m, text, 15);
  // A function call's type error points at the function name.
  expect_phrases(parse_error("score: score + where(q, 1.0, 2.0);"),
                 {"line 1, column 16: type error in 'where': the condition is int `q`"});
}

TEST(ParseErrors, WrongArgumentCount) {
  expect_phrases(parse_error("score: exp(score, 1.0);"), {"line 1, column 8: 'exp' takes 1 argument, got 2"});
  expect_phrases(parse_error("score: min(score);"), {"line 1, column 8: 'min' takes 2 arguments, got 1"});
}

TEST(ParseErrors, WrongRootTypeReportedAtTheExpression) {
  const auto m = parse_error("variant \"v\";\nscore:   kv <= q;");
  expect_phrases(m, {"line 2, column 10: score_mod must be a float expression, got bool `kv <= q`"});
}

TEST(ParseErrors, TensorMustBeIndexedWithItsRank) {
  expect_phrases(parse_error("tensor slopes: f32, rank=1;\nscore: score + slopes;"),
                 {"line 2, column 22: tensor 'slopes' must be indexed, e.g. slopes[h]"});
  expect_phrases(parse_error("tensor slopes: f32, rank=1;\nscore: score + slopes[h, q];"),
                 {"line 2, column 16: tensor 'slopes' has rank 1 but is indexed with 2 indices"});
}

TEST(ParseErrors, ExactLineAndColumnInMultiLineInput) {
  const std::string text =
      "# a sliding window with a typo\n"
      "variant \"window\";\n"
      "param window: int;\n"
      "score: score;\n"
      "mask:  kv <= q &&\n"
      "       q - kv < windw;\n";
  const auto m = parse_error(text);
  expect_phrases(m, {"variant text, line 6, column 17: unknown name 'windw'", "Declared parameters: window"});
  expect_caret(m, "       q - kv < windw;", 17);
  // The first line of the message is exactly the position and the problem.
  EXPECT_EQ(m.substr(0, m.find('\n')).rfind("variant text, line 6, column 17: unknown name 'windw'.", 0), 0u) << m;
}

TEST(ParseErrors, TabsInTheCaretLineKeepTheCaretAligned) {
  const std::string text = "score:\tscore\t$;";
  const auto m = parse_error(text);
  expect_phrases(m, {"line 1, column 14: unexpected character '$'"});
  EXPECT_NE(m.find("\n  score:\tscore\t$;\n        \t     \t^"), std::string::npos) << m;
}

TEST(ParseErrors, RopeOffsetMustNameADeclaredIntParameter) {
  const std::string undeclared = "rope: theta=10000, dim=64, layout=half, offset=pos;";
  auto m = parse_error(undeclared);
  expect_phrases(m, {"line 1, column 48: rope offset parameter 'pos' is not declared; add `param pos: int;`"});
  expect_caret(m, undeclared, 48);

  m = parse_error("param pos: float;\nrope: theta=10000, offset=pos;");
  expect_phrases(
      m, {"line 2, column 27: rope offset parameter 'pos' is declared float", "must be int", "`param pos: int;`"});
  expect_caret(m, "rope: theta=10000, offset=pos;", 27);

  expect_phrases(parse_error("rope: offset=7;"),
                 {"line 1, column 14: rope offset '7' is not allowed; name a declared int parameter, e.g. offset=pos"});
  expect_phrases(parse_error("rope: shift=pos;"),
                 {"line 1, column 7: unknown rope setting 'shift'; allowed: theta, dim, layout, offset"});
  expect_phrases(parse_error("param pos: int;\nrope: offset=pos, offset=pos;"),
                 {"line 2, column 19: rope setting 'offset' is given twice"});
  // Declared after the rope statement is fine (statement order is free); used by rope only
  // counts as used.
  EXPECT_EQ(Variant::parse("rope: offset=pos;\nparam pos: int;").rope()->offset_param, "pos");
}

TEST(ParseErrors, SingleExpressionTrailingText) {
  const auto m = user_error_of([] { (void)parse_expression("q - kv )"); });
  expect_phrases(m, {"line 1, column 8: unexpected ')' after the expression"});
}

// ---- run-time bindings and evaluation ----------------------------------------------------

TEST(BindingErrors, UnboundParam) {
  const auto m = user_error_of([] { check_bindings(presets::sliding_window(), Bindings{}); });
  expect_phrases(m, {"parameter 'window' (int)", "is not bound", "bind it with set(\"window\", value)"});
}

TEST(BindingErrors, UnknownBindingName) {
  Bindings bindings;
  bindings.set("window", 4).set("windw", 3);
  const auto m = user_error_of([&] { check_bindings(presets::sliding_window(), bindings); });
  expect_phrases(m, {"binding 'windw' names no parameter of variant", "it declares: window (int)"});
}

TEST(BindingErrors, NonIntegerForIntParam) {
  Bindings bindings;
  bindings.set("window", 2.5);
  const auto m = user_error_of([&] { check_bindings(presets::sliding_window(), bindings); });
  expect_phrases(m, {"parameter 'window' is int but was bound to 2.5", "bind a 32-bit integer"});
}

TEST(BindingErrors, WrongTensorDtypeAndRank) {
  const Variant v = presets::by_name("alibi_tensor");
  HostTensor ints(dlpack_int32(), {8});
  Bindings wrong_dtype;
  wrong_dtype.set("slopes", ints.dl());
  expect_phrases(
      user_error_of([&] { check_bindings(v, wrong_dtype); }),
      {"tensor 'slopes' has dtype i32 but the variant declares f32", "convert it or change the declaration"});
  HostTensor matrix(dlpack_float32(), {2, 4});
  Bindings wrong_rank;
  wrong_rank.set("slopes", matrix.dl());
  expect_phrases(user_error_of([&] { check_bindings(v, wrong_rank); }),
                 {"tensor 'slopes' has rank 2", "but the variant declares rank 1"});
  Bindings missing;
  expect_phrases(user_error_of([&] { check_bindings(v, missing); }),
                 {"tensor 'slopes' (f32, rank 1)", "is not bound", "set(\"slopes\", tensor)"});
}

TEST(BindingErrors, EvaluatingWithAnUnboundParam) {
  const Expr e = score + param_float("bias");
  const auto m = user_error_of([&] { (void)ir::evaluate(e.node(), ir::EvalEnv{}); });
  expect_phrases(m, {"parameter 'bias' (float) has no value", "bind it before running"});
}

}  // namespace
}  // namespace attnjit
