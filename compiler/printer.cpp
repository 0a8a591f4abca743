// Printer for the text form (see printer.hpp and docs/variant-language.md).
#include "compiler/printer.hpp"

#include <fmt/format.h>

#include <cmath>

namespace attnjit::ir {
namespace {

// Binding strength of each infix form; higher binds tighter. Matches the parser.
int precedence(const Node& n) {
  switch (n.op) {
    case Op::Or: return 1;
    case Op::And: return 2;
    case Op::Eq:
    case Op::Ne: return 3;
    case Op::Lt:
    case Op::Le:
    case Op::Gt:
    case Op::Ge: return 4;
    case Op::Add:
    case Op::Sub: return 5;
    case Op::Mul:
    case Op::Div:
    case Op::Mod: return 6;
    case Op::Neg:
    case Op::Not: return 7;
    case Op::ConstInt: return n.int_value < 0 ? 7 : 8;  // "-3" reads like a prefix form
    case Op::ConstFloat: return n.float_value < 0 ? 7 : 8;
    default: return 8;  // atoms, calls, tensor reads
  }
}

void print(const NodeRef& n, std::string& out);

void print_operand(const NodeRef& child, int min_precedence, std::string& out) {
  if (precedence(*child) < min_precedence) {
    out += '(';
    print(child, out);
    out += ')';
  } else {
    print(child, out);
  }
}

void print(const NodeRef& n, std::string& out) {
  switch (n->op) {
    case Op::ConstBool: out += n->int_value ? "true" : "false"; return;
    case Op::ConstInt: out += std::to_string(n->int_value); return;
    case Op::ConstFloat: out += format_float_literal(n->float_value); return;
    case Op::Index:
    case Op::Param: out += n->name; return;
    case Op::Score: out += "score"; return;
    case Op::TensorRead:
      out += n->name;
      out += '[';
      for (std::size_t i = 0; i < n->args.size(); ++i) {
        if (i) out += ", ";
        print(n->args[i], out);
      }
      out += ']';
      return;
    case Op::Neg:
    case Op::Not: {
      out += op_name(n->op);
      // A literal operand is parenthesized so "-(3)" stays a negation, not the literal -3.
      const NodeRef& a = n->args[0];
      const bool literal = a->op == Op::ConstInt || a->op == Op::ConstFloat;
      const bool nested_sign = a->op == Op::Neg;
      if (literal || nested_sign) {
        out += '(';
        print(a, out);
        out += ')';
      } else {
        print_operand(a, 7, out);
      }
      return;
    }
    default: break;
  }
  if (is_binary(n->op) && n->op != Op::Min && n->op != Op::Max) {
    const int p = precedence(*n);
    print_operand(n->args[0], p, out);  // left associative: equal precedence needs no parentheses on the left
    out += ' ';
    out += op_name(n->op);
    out += ' ';
    print_operand(n->args[1], p + 1, out);
    return;
  }
  // Calls: unary functions, casts, min/max, where.
  out += op_name(n->op);
  out += '(';
  for (std::size_t i = 0; i < n->args.size(); ++i) {
    if (i) out += ", ";
    print(n->args[i], out);
  }
  out += ')';
}

}  // namespace

std::string format_float_literal(double value) {
  if (!std::isfinite(value)) throw std::invalid_argument("non-finite float literal");
  std::string text = fmt::format("{}", value);  // shortest representation that round-trips
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

std::string print_expr(const NodeRef& node) {
  std::string out;
  print(node, out);
  return out;
}

}  // namespace attnjit::ir
