// The compiler's intermediate representation: a typed, hash-consed DAG of expression nodes.
//
// Every node is immutable and interned: two structurally equal expressions are the same
// object, so equality is pointer equality and common subexpressions are shared by
// construction. Each node carries a structural hash (XXH3-128 over its operator, type,
// payload and its children's hashes) that depends only on the structure, never on
// pointer values or construction order, so it is stable across processes and runs and
// can key caches.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace attnjit::ir {

// Scalar type of an expression node.
enum class Type : std::uint8_t { Bool, Int, Float };

// Element type of a captured tensor in device memory.
enum class TensorDType : std::uint8_t { F32, F16, BF16, I32, I64, U8 };

enum class Op : std::uint8_t {
  // leaves
  ConstBool,
  ConstInt,
  ConstFloat,
  Index,       // payload.name: b, h, q, kv, q_len, kv_len, num_heads
  Score,       // the scaled logit scale * dot(q_row, k_row), fp32
  Param,       // a named runtime scalar (Int or Float)
  TensorRead,  // tensor[args...]; payload: name, dtype, rank
  // unary
  Neg,
  Not,
  Abs,
  Exp,
  Exp2,
  Log,
  Log2,
  Tanh,
  Sigmoid,
  Sqrt,
  Floor,
  ToFloat,
  ToInt,
  // binary
  Add,
  Sub,
  Mul,
  Div,
  Mod,
  Min,
  Max,
  Lt,
  Le,
  Gt,
  Ge,
  Eq,
  Ne,
  And,
  Or,
  // ternary
  Where,
};

struct Hash128 {
  std::uint64_t lo = 0, hi = 0;
  friend bool operator==(const Hash128&, const Hash128&) = default;
  std::string hex() const;  // 32 lowercase hex digits, hi first
};

struct Node;
using NodeRef = std::shared_ptr<const Node>;

struct Node {
  Op op;
  Type type;
  std::vector<NodeRef> args;
  std::int64_t int_value = 0;                   // ConstInt, ConstBool (0/1); TensorRead: rank
  double float_value = 0.0;                     // ConstFloat
  std::string name;                             // Index, Param, TensorRead
  TensorDType tensor_dtype = TensorDType::F32;  // TensorRead
  Hash128 hash;
};

// Interning constructor: returns the unique node equal to the one described. It checks
// nothing beyond arity; callers (the DSL builders, the parser, the passes) check types.
NodeRef make_node(Op op, Type type, std::vector<NodeRef> args, std::int64_t int_value = 0, double float_value = 0.0,
                  std::string name = {}, TensorDType tensor_dtype = TensorDType::F32);

NodeRef const_bool(bool v);
NodeRef const_int(std::int64_t v);
NodeRef const_float(double v);

// Number of live interned nodes (for tests of the interning table).
std::size_t interned_node_count();

// Classification helpers.
bool is_leaf(Op op);
bool is_unary(Op op);
bool is_binary(Op op);
bool is_comparison(Op op);
bool is_constant(const NodeRef& n);
int arity(Op op);

// Names as they appear in the text form.
std::string_view op_name(Op op);             // "+", "exp", "where", ...
std::string_view type_name(Type t);          // "bool", "int", "float"
std::string_view dtype_name(TensorDType t);  // "f32", "bf16", ...
bool parse_dtype(std::string_view text, TensorDType& out);
Type value_type_of(TensorDType t);  // the expression type a read of this dtype yields

// The built-in index variables, in the order they are documented.
const std::vector<std::string>& index_names();
bool is_index_name(std::string_view name);
// Words of the text form that cannot name a parameter or tensor (functions, keywords, `score`).
bool is_reserved_word(std::string_view name);

// Rebuilds `n` with `f` applied to each child first (post-order, memoized per call).
// `f` receives the node with already-rewritten children and returns its replacement.
NodeRef rewrite_bottom_up(const NodeRef& n, const std::function<NodeRef(const NodeRef&)>& f);

// All distinct nodes reachable from the roots, children before parents.
std::vector<NodeRef> topological_order(const std::vector<NodeRef>& roots);

// Replaces every occurrence of `from` by `to` within `n`.
NodeRef substitute(const NodeRef& n, const NodeRef& from, const NodeRef& to);

// What a node's value depends on within one (query row, key) pair: `row` if it uses q, `key`
// if it uses kv or the score (directly or through a tensor read's index). Nodes using neither
// are the same over a whole tile. For every node reachable from `root`.
struct RowKeyDependence {
  bool row = false, key = false;
};
std::unordered_map<const Node*, RowKeyDependence> row_key_dependence(const NodeRef& root);

// Which batch / head indices an expression mentions (tensor indices included: a read varies
// only with its indices) and the captured tensors it reads, by name, each once.
struct IndexUses {
  bool batch = false, head = false;
  std::vector<std::string> tensors;
};
IndexUses index_uses(const NodeRef& root);

}  // namespace attnjit::ir
