// The embedded DSL: expression handles with operator overloading.
//
// An `Expr` is a typed handle to an interned IR node. Building one runs nothing on the
// GPU; it only records the computation symbolically. Types are checked here, at the line
// that builds the expression, so a mistake (a float used as a mask, a tensor indexed with
// the wrong number of indices, `%` on floats) is a clear `UserError` naming the operation,
// the offending operand and the fix, never a template error deep inside generated code.
//
// Integer arithmetic is 32-bit; `/` and `%` on ints are floor division and floor modulo
// (Python's convention, so `(q - 64) / 128` groups negative positions correctly), and
// division or modulo by zero gives 0. Mixing int and float promotes the int to float.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "compiler/error.hpp"
#include "compiler/ir.hpp"

namespace attnjit {

class Expr {
 public:
  Expr(int value);        // NOLINT(google-explicit-constructor): literals mix freely with expressions
  Expr(long value);       // NOLINT(google-explicit-constructor)
  Expr(long long value);  // NOLINT(google-explicit-constructor)
  Expr(double value);     // NOLINT(google-explicit-constructor)
  Expr(float value);      // NOLINT(google-explicit-constructor)
  Expr(bool value);       // NOLINT(google-explicit-constructor)
  explicit Expr(ir::NodeRef node);

  const ir::NodeRef& node() const { return node_; }
  ir::Type type() const { return node_->type; }
  std::string str() const;  // canonical text form of this expression

  friend bool same(const Expr& a, const Expr& b) { return a.node_ == b.node_; }

 private:
  ir::NodeRef node_;
};

// Index variables and the score (DESIGN §1).
namespace dsl {
Expr batch_index();   // b
Expr head_index();    // h   (query head)
Expr query_index();   // q   (query position, 0-based)
Expr key_index();     // kv  (key position, 0-based)
Expr query_length();  // q_len   (Sq of this launch)
Expr key_length();    // kv_len  (Sk of this launch)
Expr head_count();    // num_heads (query heads)
Expr score_value();   // score = scale * dot(q_row, k_row), fp32

// Short names as in the text form: `using namespace attnjit::dsl::vars;`.
namespace vars {
inline const Expr b = batch_index();
inline const Expr h = head_index();
inline const Expr q = query_index();
inline const Expr kv = key_index();
inline const Expr q_len = query_length();
inline const Expr kv_len = key_length();
inline const Expr num_heads = head_count();
inline const Expr score = score_value();
}  // namespace vars
}  // namespace dsl

// Named runtime scalars: their values are bound at launch and never cause a recompile.
Expr param_int(const std::string& name);
Expr param_float(const std::string& name);

// A captured device tensor: a named input with declared element type and rank (1-4),
// read at integer positions. The read yields float for f32/f16/bf16, int for i32/i64,
// bool for u8.
class Tensor {
 public:
  Tensor(std::string name, ir::TensorDType dtype, int rank);

  const std::string& name() const { return name_; }
  ir::TensorDType dtype() const { return dtype_; }
  int rank() const { return rank_; }

  Expr at(const std::vector<Expr>& indices) const;
  Expr operator[](const Expr& index) const { return at({index}); }
  template <class... Indices>
  Expr operator()(const Indices&... indices) const {
    return at({Expr(indices)...});
  }

 private:
  std::string name_;
  ir::TensorDType dtype_;
  int rank_;
};

// Operators (types checked at construction).
Expr operator-(const Expr& a);
Expr operator!(const Expr& a);
Expr operator+(const Expr& a, const Expr& b);
Expr operator-(const Expr& a, const Expr& b);
Expr operator*(const Expr& a, const Expr& b);
Expr operator/(const Expr& a, const Expr& b);
Expr operator%(const Expr& a, const Expr& b);
Expr operator<(const Expr& a, const Expr& b);
Expr operator<=(const Expr& a, const Expr& b);
Expr operator>(const Expr& a, const Expr& b);
Expr operator>=(const Expr& a, const Expr& b);
Expr operator==(const Expr& a, const Expr& b);
Expr operator!=(const Expr& a, const Expr& b);
Expr operator&&(const Expr& a, const Expr& b);
Expr operator||(const Expr& a, const Expr& b);

// Functions.
Expr where(const Expr& condition, const Expr& if_true, const Expr& if_false);
Expr min(const Expr& a, const Expr& b);
Expr max(const Expr& a, const Expr& b);
Expr abs(const Expr& a);
Expr exp(const Expr& a);
Expr exp2(const Expr& a);
Expr log(const Expr& a);
Expr log2(const Expr& a);
Expr tanh(const Expr& a);
Expr sigmoid(const Expr& a);
Expr sqrt(const Expr& a);
Expr floor(const Expr& a);
Expr to_float(const Expr& a);  // int or bool to float
Expr to_int(const Expr& a);    // float (truncated toward zero) or bool to int

// The generic builders behind the operators, shared with the text-form parser so that
// both report type errors identically.
Expr apply_unary(ir::Op op, const Expr& a);
Expr apply_binary(ir::Op op, const Expr& a, const Expr& b);
Expr make_index(std::string_view name);  // one of ir::index_names()
Expr make_param(const std::string& name, ir::Type type);

// True when `name` can name a parameter or tensor: an identifier that is not a built-in.
bool is_valid_user_name(std::string_view name);

}  // namespace attnjit
