// Parser for the variant text form (docs/variant-language.md).
//
// Hand-written recursive descent with precedence climbing. Expressions are built through
// the same DSL builders as C++ code, so type rules and messages are identical; any error
// is rethrown as a UserError that points at the line and column with a caret.
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <map>
#include <set>

#include "dsl/parser.hpp"

namespace attnjit {
namespace {

enum class Tok { Ident, Int, Float, String, Punct, End };

struct Token {
  Tok kind;
  std::string text;
  std::size_t offset;  // into the source
};

struct Position {
  int line, column;
  std::string line_text;
};

Position locate(std::string_view src, std::size_t offset) {
  Position p{1, 1, {}};
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < offset && i < src.size(); ++i) {
    if (src[i] == '\n') {
      ++p.line;
      line_start = i + 1;
    }
  }
  p.column = static_cast<int>(offset - line_start) + 1;
  const std::size_t line_end = src.find('\n', line_start);
  p.line_text = std::string(
      src.substr(line_start, line_end == std::string_view::npos ? std::string_view::npos : line_end - line_start));
  return p;
}

[[noreturn]] void fail_at(std::string_view src, std::size_t offset, const std::string& message) {
  const Position p = locate(src, offset);
  std::string caret(static_cast<std::size_t>(p.column - 1), ' ');
  for (std::size_t i = 0; i < caret.size() && i < p.line_text.size(); ++i)
    if (p.line_text[i] == '\t') caret[i] = '\t';
  throw UserError(
      fmt::format("variant text, line {}, column {}: {}\n  {}\n  {}^", p.line, p.column, message, p.line_text, caret));
}

std::vector<Token> tokenize(std::string_view src) {
  std::vector<Token> out;
  std::size_t i = 0;
  static const std::vector<std::string_view> two_char = {"<=", ">=", "==", "!=", "&&", "||"};
  while (i < src.size()) {
    const char c = src[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (c == '#' || (c == '/' && i + 1 < src.size() && src[i + 1] == '/')) {
      while (i < src.size() && src[i] != '\n') ++i;
      continue;
    }
    const std::size_t start = i;
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (i < src.size() && (std::isalnum(static_cast<unsigned char>(src[i])) || src[i] == '_')) ++i;
      out.push_back({Tok::Ident, std::string(src.substr(start, i - start)), start});
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || (c == '.' && i + 1 < src.size() && std::isdigit(src[i + 1]))) {
      bool is_float = false;
      while (i < src.size() && std::isdigit(static_cast<unsigned char>(src[i]))) ++i;
      if (i < src.size() && src[i] == '.') {
        is_float = true;
        ++i;
        while (i < src.size() && std::isdigit(static_cast<unsigned char>(src[i]))) ++i;
      }
      if (i < src.size() && (src[i] == 'e' || src[i] == 'E')) {
        std::size_t j = i + 1;
        if (j < src.size() && (src[j] == '+' || src[j] == '-')) ++j;
        if (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j]))) {
          is_float = true;
          i = j;
          while (i < src.size() && std::isdigit(static_cast<unsigned char>(src[i]))) ++i;
        }
      }
      if (i < src.size() && (std::isalpha(static_cast<unsigned char>(src[i])) || src[i] == '_'))
        fail_at(src, i, fmt::format("unexpected '{}' right after a number", src[i]));
      out.push_back({is_float ? Tok::Float : Tok::Int, std::string(src.substr(start, i - start)), start});
      continue;
    }
    if (c == '"') {
      std::string value;
      ++i;
      while (i < src.size() && src[i] != '"' && src[i] != '\n') {
        if (src[i] == '\\' && i + 1 < src.size()) ++i;
        value += src[i++];
      }
      if (i >= src.size() || src[i] != '"') fail_at(src, start, "unterminated string: add the closing '\"'");
      ++i;
      out.push_back({Tok::String, value, start});
      continue;
    }
    bool matched = false;
    for (auto op : two_char)
      if (src.substr(i, 2) == op) {
        out.push_back({Tok::Punct, std::string(op), start});
        i += 2;
        matched = true;
        break;
      }
    if (matched) continue;
    if (std::string_view("()[],;:=+-*/%<>!").find(c) != std::string_view::npos) {
      out.push_back({Tok::Punct, std::string(1, c), start});
      ++i;
      continue;
    }
    fail_at(src, start, fmt::format("unexpected character '{}'", c));
  }
  out.push_back({Tok::End, "", src.size()});
  return out;
}

struct BinaryOp {
  std::string_view text;
  int precedence;
  ir::Op op;
};

const std::vector<BinaryOp>& binary_ops() {
  static const std::vector<BinaryOp> ops = {
      {"||", 1, ir::Op::Or}, {"&&", 2, ir::Op::And}, {"==", 3, ir::Op::Eq}, {"!=", 3, ir::Op::Ne},
      {"<", 4, ir::Op::Lt},  {"<=", 4, ir::Op::Le},  {">", 4, ir::Op::Gt},  {">=", 4, ir::Op::Ge},
      {"+", 5, ir::Op::Add}, {"-", 5, ir::Op::Sub},  {"*", 6, ir::Op::Mul}, {"/", 6, ir::Op::Div},
      {"%", 6, ir::Op::Mod},
  };
  return ops;
}

const std::map<std::string, ir::Op, std::less<>>& unary_functions() {
  static const std::map<std::string, ir::Op, std::less<>> fns = {
      {"abs", ir::Op::Abs},     {"exp", ir::Op::Exp},       {"exp2", ir::Op::Exp2},       {"log", ir::Op::Log},
      {"log2", ir::Op::Log2},   {"tanh", ir::Op::Tanh},     {"sigmoid", ir::Op::Sigmoid}, {"sqrt", ir::Op::Sqrt},
      {"floor", ir::Op::Floor}, {"float", ir::Op::ToFloat}, {"int", ir::Op::ToInt},
  };
  return fns;
}

class Parser {
 public:
  Parser(std::string_view src, const Declarations& decls) : src_(src), tokens_(tokenize(src)), decls_(decls) {}

  Variant parse_variant() {
    Variant v("custom");
    std::set<std::string> seen;
    std::optional<Expr> score, mask;
    std::optional<RopeHook> rope;
    std::optional<Token> gate;
    while (peek().kind != Tok::End) {
      const Token keyword = expect_ident("a statement (variant, param, tensor, score, mask, rope, gate)");
      static const std::set<std::string, std::less<>> allowed = {"variant", "param", "tensor", "score",
                                                                 "mask",    "rope",  "gate"};
      if (!allowed.count(keyword.text))
        fail_at(src_, keyword.offset,
                fmt::format("unknown statement '{}'; allowed: variant, param, tensor, score, mask, rope, gate",
                            keyword.text));
      if (keyword.text != "param" && keyword.text != "tensor" && !seen.insert(keyword.text).second)
        fail_at(src_, keyword.offset, fmt::format("'{}' is given twice; give it once", keyword.text));
      if (keyword.text == "variant") {
        const Token name = next();
        if (name.kind != Tok::String)
          fail_at(src_, name.offset, "expected the variant name as a string, e.g. \"mine\"");
        try {
          v.with_name(name.text);
        } catch (const UserError& e) {
          fail_at(src_, name.offset, e.what());
        }
      } else if (keyword.text == "param") {
        parse_param();
      } else if (keyword.text == "tensor") {
        parse_tensor();
      } else if (keyword.text == "score" || keyword.text == "mask") {
        expect(":");
        const std::size_t at = peek().offset;
        Expr e = parse_expr(0);
        try {
          if (keyword.text == "score")
            v.with_score_mod(e);
          else
            v.with_mask_mod(e);
        } catch (const UserError& err) {
          fail_at(src_, at, err.what());
        }
      } else if (keyword.text == "rope") {
        expect(":");
        rope = parse_rope();
      } else {
        expect(":");
        gate = expect_ident("the name of a declared tensor");
      }
      expect(";");
    }
    if (rope && !rope->offset_param.empty()) {
      auto it = decls_.params.find(rope->offset_param);
      if (it == decls_.params.end())
        fail_at(src_, rope_offset_param_offset_,
                fmt::format("rope offset parameter '{}' is not declared; add `param {}: int;`", rope->offset_param,
                            rope->offset_param));
      if (it->second != ir::Type::Int)
        fail_at(src_, rope_offset_param_offset_,
                fmt::format("rope offset parameter '{}' is declared {}; a position offset must be int, declare "
                            "`param {}: int;`",
                            rope->offset_param, ir::type_name(it->second), rope->offset_param));
    }
    if (rope) {
      try {
        v.with_rope(*rope);
      } catch (const UserError& e) {
        fail_at(src_, rope_offset_, e.what());
      }
    }
    if (gate) {
      auto it = decls_.tensors.find(gate->text);
      if (it == decls_.tensors.end())
        fail_at(
            src_, gate->offset,
            fmt::format("gate tensor '{}' is not declared; add `tensor {}: bf16, rank=3;`", gate->text, gate->text));
      try {
        v.with_output_gate(OutputGateHook{gate->text, it->second.dtype, it->second.rank});
      } catch (const UserError& e) {
        fail_at(src_, gate->offset, e.what());
      }
    }
    check_all_declarations_used(v);
    return v;
  }

  Expr parse_single_expression() {
    Expr e = parse_expr(0);
    if (peek().kind != Tok::End)
      fail_at(src_, peek().offset, fmt::format("unexpected '{}' after the expression", peek().text));
    return e;
  }

  Declarations& declarations() { return decls_; }

 private:
  const Token& peek() const { return tokens_[pos_]; }
  Token next() {
    Token t = tokens_[pos_];
    if (t.kind != Tok::End) ++pos_;
    return t;
  }
  bool accept(std::string_view punct) {
    if (peek().kind == Tok::Punct && peek().text == punct) {
      ++pos_;
      return true;
    }
    return false;
  }
  static std::string describe(const Token& t) {
    return t.kind == Tok::End ? std::string("the end of the text") : "'" + t.text + "'";
  }
  void expect(std::string_view punct) {
    if (!accept(punct))
      fail_at(src_, peek().offset, fmt::format("expected '{}' but found {}", punct, describe(peek())));
  }
  Token expect_ident(std::string_view what) {
    if (peek().kind != Tok::Ident)
      fail_at(src_, peek().offset, fmt::format("expected {} but found {}", what, describe(peek())));
    return next();
  }

  void declare_name(const Token& name) {
    if (!is_valid_user_name(name.text))
      fail_at(
          src_, name.offset,
          fmt::format("'{}' is a built-in or reserved word and cannot be declared; choose another name", name.text));
    if (decls_.params.count(name.text) || decls_.tensors.count(name.text))
      fail_at(src_, name.offset, fmt::format("'{}' is already declared; declare each name once", name.text));
  }

  void parse_param() {
    const Token name = expect_ident("a parameter name");
    declare_name(name);
    expect(":");
    const Token type = expect_ident("a parameter type (int or float)");
    if (type.text != "int" && type.text != "float")
      fail_at(src_, type.offset, fmt::format("parameter type '{}' is not allowed; use int or float", type.text));
    decls_.params[name.text] = type.text == "int" ? ir::Type::Int : ir::Type::Float;
    declared_order_.push_back(name);
  }

  void parse_tensor() {
    const Token name = expect_ident("a tensor name");
    declare_name(name);
    expect(":");
    const Token dtype = expect_ident("a tensor dtype (f32, f16, bf16, i32, i64, u8)");
    ir::TensorDType d{};
    if (!ir::parse_dtype(dtype.text, d))
      fail_at(src_, dtype.offset,
              fmt::format("unknown tensor dtype '{}'; allowed: f32, f16, bf16, i32, i64, u8", dtype.text));
    expect(",");
    const Token rank_kw = expect_ident("'rank'");
    if (rank_kw.text != "rank")
      fail_at(src_, rank_kw.offset, fmt::format("expected 'rank' but found '{}'", rank_kw.text));
    expect("=");
    const Token rank = next();
    if (rank.kind != Tok::Int || rank.text.size() > 1 || rank.text[0] < '1' || rank.text[0] > '4')
      fail_at(src_, rank.offset, fmt::format("tensor rank {} is not allowed; use 1, 2, 3 or 4", describe(rank)));
    decls_.tensors.emplace(name.text, TensorDecl{name.text, d, rank.text[0] - '0'});
    declared_order_.push_back(name);
  }

  RopeHook parse_rope() {
    RopeHook rope;
    rope_offset_ = peek().offset;
    std::set<std::string> keys;
    do {
      const Token key = expect_ident("a rope setting (theta, dim, layout, offset)");
      if (!keys.insert(key.text).second)
        fail_at(src_, key.offset, fmt::format("rope setting '{}' is given twice", key.text));
      expect("=");
      const Token value = next();
      if (key.text == "theta") {
        if (value.kind != Tok::Float && value.kind != Tok::Int)
          fail_at(src_, value.offset, "rope theta must be a number, e.g. theta=10000.0");
        rope.theta = std::strtod(value.text.c_str(), nullptr);
      } else if (key.text == "dim") {
        if (value.kind != Tok::Int) fail_at(src_, value.offset, "rope dim must be an integer (0 = whole head)");
        rope.rotary_dim = std::atoi(value.text.c_str());
      } else if (key.text == "layout") {
        if (value.text != "half" && value.text != "interleaved")
          fail_at(src_, value.offset,
                  fmt::format("rope layout {} is not allowed; use half or interleaved", describe(value)));
        rope.layout = value.text == "half" ? RopeHook::Layout::Half : RopeHook::Layout::Interleaved;
      } else if (key.text == "offset") {
        if (value.kind != Tok::Ident)
          fail_at(src_, value.offset,
                  fmt::format("rope offset {} is not allowed; name a declared int parameter, e.g. offset=pos "
                              "with `param pos: int;` (its value is bound at launch)",
                              describe(value)));
        rope.offset_param = value.text;
        rope_offset_param_offset_ = value.offset;
      } else {
        fail_at(src_, key.offset,
                fmt::format("unknown rope setting '{}'; allowed: theta, dim, layout, offset", key.text));
      }
    } while (accept(","));
    return rope;
  }

  void check_all_declarations_used(const Variant& v) {
    std::set<std::string> used;
    for (const auto& p : v.params()) used.insert(p.name);
    for (const auto& t : v.tensors()) used.insert(t.name);
    for (const auto& tok : declared_order_)
      if (!used.count(tok.text))
        fail_at(src_, tok.offset, fmt::format("'{}' is declared but never used; remove the declaration", tok.text));
  }

  Expr parse_expr(int min_precedence) {
    Expr lhs = parse_unary();
    while (peek().kind == Tok::Punct) {
      const BinaryOp* found = nullptr;
      for (const auto& op : binary_ops())
        if (op.text == peek().text) found = &op;
      if (!found || found->precedence < min_precedence) break;
      const Token op_token = next();
      Expr rhs = parse_expr(found->precedence + 1);
      lhs = build(op_token, [&] { return apply_binary(found->op, lhs, rhs); });
    }
    return lhs;
  }

  template <class F>
  Expr build(const Token& at, F&& f) {
    try {
      return f();
    } catch (const UserError& e) {
      fail_at(src_, at.offset, e.what());
    }
  }

  Expr parse_unary() {
    if (peek().kind == Tok::Punct && peek().text == "-") {
      const Token minus = next();
      if (peek().kind == Tok::Int || peek().kind == Tok::Float) return parse_number(next(), true);
      Expr operand = parse_unary();
      return build(minus, [&] { return apply_unary(ir::Op::Neg, operand); });
    }
    if (peek().kind == Tok::Punct && peek().text == "!") {
      const Token bang = next();
      Expr operand = parse_unary();
      return build(bang, [&] { return apply_unary(ir::Op::Not, operand); });
    }
    return parse_primary();
  }

  Expr parse_number(const Token& t, bool negative) {
    const std::string text = (negative ? "-" : "") + t.text;
    if (t.kind == Tok::Float) return Expr(std::strtod(text.c_str(), nullptr));
    long long value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || value < INT32_MIN || value > INT32_MAX)
      fail_at(src_, t.offset, fmt::format("integer literal {} does not fit in 32 bits; ints are 32-bit", text));
    return Expr(value);
  }

  std::vector<Expr> parse_arguments(std::string_view close) {
    std::vector<Expr> args;
    if (!accept(close)) {
      do {
        args.push_back(parse_expr(0));
      } while (accept(","));
      expect(close);
    }
    return args;
  }

  Expr parse_primary() {
    const Token t = next();
    switch (t.kind) {
      case Tok::Int:
      case Tok::Float: return parse_number(t, false);
      case Tok::Punct:
        if (t.text == "(") {
          Expr e = parse_expr(0);
          expect(")");
          return e;
        }
        fail_at(src_, t.offset, fmt::format("expected an expression but found '{}'", t.text));
      case Tok::String: fail_at(src_, t.offset, "a string is not an expression");
      case Tok::End: fail_at(src_, t.offset, "expected an expression but the text ended");
      case Tok::Ident: break;
    }
    if (t.text == "true" || t.text == "false") return Expr(t.text == "true");
    if (t.text == "score") return dsl::score_value();
    if (ir::is_index_name(t.text)) return make_index(t.text);
    if (auto fn = unary_functions().find(t.text); fn != unary_functions().end()) return parse_call(t, fn->second, 1);
    if (t.text == "min") return parse_call(t, ir::Op::Min, 2);
    if (t.text == "max") return parse_call(t, ir::Op::Max, 2);
    if (t.text == "where") return parse_call(t, ir::Op::Where, 3);
    if (auto p = decls_.params.find(t.text); p != decls_.params.end()) return make_param(t.text, p->second);
    if (auto tensor = decls_.tensors.find(t.text); tensor != decls_.tensors.end()) {
      if (!accept("["))
        fail_at(src_, peek().offset, fmt::format("tensor '{}' must be indexed, e.g. {}[h]", t.text, t.text));
      std::vector<Expr> indices = parse_arguments("]");
      const Tensor handle(t.text, tensor->second.dtype, tensor->second.rank);
      return build(t, [&] { return handle.at(indices); });
    }
    fail_at(src_, t.offset, unknown_name_message(t.text));
  }

  Expr parse_call(const Token& fn, ir::Op op, std::size_t arity) {
    if (!accept("("))
      fail_at(src_, peek().offset, fmt::format("'{}' is a function; call it as {}(...)", fn.text, fn.text));
    std::vector<Expr> args = parse_arguments(")");
    if (args.size() != arity)
      fail_at(src_, fn.offset,
              fmt::format("'{}' takes {} argument{}, got {}", fn.text, arity, arity == 1 ? "" : "s", args.size()));
    return build(fn, [&] {
      if (op == ir::Op::Where) return where(args[0], args[1], args[2]);
      if (arity == 2) return apply_binary(op, args[0], args[1]);
      return apply_unary(op, args[0]);
    });
  }

  std::string unknown_name_message(const std::string& name) const {
    std::string params, tensors;
    for (const auto& [n, t] : decls_.params) params += (params.empty() ? "" : ", ") + n;
    for (const auto& [n, t] : decls_.tensors) tensors += (tensors.empty() ? "" : ", ") + n;
    return fmt::format(
        "unknown name '{}'. Declared parameters: {}; declared tensors: {}; built-ins: b, h, q, kv, "
        "q_len, kv_len, num_heads, score. Declare it first, e.g. `param {}: int;`",
        name, params.empty() ? "none" : params, tensors.empty() ? "none" : tensors, name);
  }

  std::string_view src_;
  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  Declarations decls_;
  std::vector<Token> declared_order_;
  std::size_t rope_offset_ = 0;
  std::size_t rope_offset_param_offset_ = 0;  // where `offset=NAME` names the parameter
};

}  // namespace

Variant Variant::parse(std::string_view text) { return Parser(text, Declarations{}).parse_variant(); }

Expr parse_expression(std::string_view text, const Declarations& declarations) {
  return Parser(text, declarations).parse_single_expression();
}

}  // namespace attnjit
