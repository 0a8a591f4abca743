// Direct evaluation of IR expressions on the CPU: the semantics every backend must match.
//
// Floats are evaluated in double (the reference is fp64); ints wrap to 32 bits like the
// GPU's; `/` and `%` on ints are floor division/modulo with x/0 = x%0 = 0; to_int
// truncates toward zero and saturates (NaN gives 0).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "compiler/ir.hpp"

namespace attnjit::ir {

// One scalar value; which field is meaningful follows the node's type.
struct Value {
  double f = 0.0;
  std::int64_t i = 0;
  bool b = false;

  static Value of_float(double v) { return Value{v, 0, false}; }
  static Value of_int(std::int64_t v) { return Value{0.0, v, false}; }
  static Value of_bool(bool v) { return Value{0.0, 0, v}; }
};

// What leaves evaluate to.
struct EvalEnv {
  std::int64_t b = 0, h = 0, q = 0, kv = 0, q_len = 1, kv_len = 1, num_heads = 1;
  double score = 0.0;
  std::unordered_map<std::string, Value> params;
  // Reads element `indices` of the named tensor; must return a Value of the read's type.
  std::function<Value(const Node& read, std::span<const std::int64_t> indices)> read_tensor;
};

// Applies one operator to already evaluated arguments (constant folding uses this too).
Value apply_op(const Node& node, std::span<const Value> args);

// Evaluates a leaf from the environment; throws UserError for an unbound parameter.
Value eval_leaf(const Node& node, const EvalEnv& env);

Value evaluate(const NodeRef& root, const EvalEnv& env);

// Wraps an integer to the 32-bit range, as the GPU computes.
std::int64_t wrap_int32(std::int64_t v);

}  // namespace attnjit::ir
