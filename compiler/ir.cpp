// Interning table and structural hashing for the IR (see ir.hpp).
#include "compiler/ir.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <unordered_map>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace attnjit::ir {
namespace {

struct HashKey {
  std::size_t operator()(const Hash128& h) const {
    return static_cast<std::size_t>(h.lo ^ (h.hi * 0x9e3779b97f4a7c15ULL));
  }
};

// The table holds weak references: a node lives as long as some expression uses it.
struct InternTable {
  std::mutex mutex;
  std::unordered_multimap<Hash128, std::weak_ptr<const Node>, HashKey> nodes;
};

InternTable& table() {
  static auto* t = new InternTable();  // never destroyed: nodes may outlive static destructors
  return *t;
}

Hash128 structural_hash(const Node& n) {
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  XXH3_128bits_reset(&state);
  const std::array<std::uint8_t, 3> head = {static_cast<std::uint8_t>(n.op), static_cast<std::uint8_t>(n.type),
                                            static_cast<std::uint8_t>(n.tensor_dtype)};
  XXH3_128bits_update(&state, head.data(), head.size());
  XXH3_128bits_update(&state, &n.int_value, sizeof n.int_value);
  std::uint64_t float_bits = 0;
  std::memcpy(&float_bits, &n.float_value, sizeof float_bits);
  XXH3_128bits_update(&state, &float_bits, sizeof float_bits);
  const std::uint64_t name_size = n.name.size();
  XXH3_128bits_update(&state, &name_size, sizeof name_size);
  XXH3_128bits_update(&state, n.name.data(), n.name.size());
  for (const auto& a : n.args) {
    XXH3_128bits_update(&state, &a->hash.lo, sizeof a->hash.lo);
    XXH3_128bits_update(&state, &a->hash.hi, sizeof a->hash.hi);
  }
  const XXH128_hash_t h = XXH3_128bits_digest(&state);
  return Hash128{h.low64, h.high64};
}

bool same_structure(const Node& a, const Node& b) {
  if (a.op != b.op || a.type != b.type || a.int_value != b.int_value || a.name != b.name ||
      a.tensor_dtype != b.tensor_dtype || a.args.size() != b.args.size())
    return false;
  if (std::memcmp(&a.float_value, &b.float_value, sizeof a.float_value) != 0) return false;
  for (std::size_t i = 0; i < a.args.size(); ++i)
    if (a.args[i] != b.args[i]) return false;  // children are interned
  return true;
}

}  // namespace

std::string Hash128::hex() const { return fmt::format("{:016x}{:016x}", hi, lo); }

NodeRef make_node(Op op, Type type, std::vector<NodeRef> args, std::int64_t int_value, double float_value,
                  std::string name, TensorDType tensor_dtype) {
  auto node = std::make_shared<Node>();
  node->op = op;
  node->type = type;
  node->args = std::move(args);
  node->int_value = int_value;
  node->float_value = float_value == 0.0 ? 0.0 : float_value;  // one zero: -0.0 folds to +0.0
  node->name = std::move(name);
  node->tensor_dtype = tensor_dtype;
  node->hash = structural_hash(*node);

  auto& t = table();
  std::lock_guard lock(t.mutex);
  auto [first, last] = t.nodes.equal_range(node->hash);
  for (auto it = first; it != last;) {
    if (auto existing = it->second.lock()) {
      if (same_structure(*existing, *node)) return existing;
      ++it;
    } else {
      it = t.nodes.erase(it);  // drop entries whose node has died
    }
  }
  t.nodes.emplace(node->hash, node);
  return node;
}

NodeRef const_bool(bool v) { return make_node(Op::ConstBool, Type::Bool, {}, v ? 1 : 0); }
NodeRef const_int(std::int64_t v) { return make_node(Op::ConstInt, Type::Int, {}, v); }
NodeRef const_float(double v) { return make_node(Op::ConstFloat, Type::Float, {}, 0, v); }

std::size_t interned_node_count() {
  auto& t = table();
  std::lock_guard lock(t.mutex);
  std::size_t live = 0;
  for (const auto& [hash, weak] : t.nodes) live += weak.expired() ? 0 : 1;
  return live;
}

bool is_leaf(Op op) { return op <= Op::TensorRead; }
bool is_unary(Op op) { return op >= Op::Neg && op <= Op::ToInt; }
bool is_binary(Op op) { return op >= Op::Add && op <= Op::Or; }
bool is_comparison(Op op) { return op >= Op::Lt && op <= Op::Ne; }
bool is_constant(const NodeRef& n) {
  return n->op == Op::ConstBool || n->op == Op::ConstInt || n->op == Op::ConstFloat;
}
int arity(Op op) {
  if (op == Op::TensorRead) return -1;  // variable: the tensor's rank
  if (is_leaf(op)) return 0;
  if (is_unary(op)) return 1;
  if (is_binary(op)) return 2;
  return 3;
}

std::string_view op_name(Op op) {
  switch (op) {
    case Op::ConstBool: return "const_bool";
    case Op::ConstInt: return "const_int";
    case Op::ConstFloat: return "const_float";
    case Op::Index: return "index";
    case Op::Score: return "score";
    case Op::Param: return "param";
    case Op::TensorRead: return "tensor read";
    case Op::Neg: return "-";
    case Op::Not: return "!";
    case Op::Abs: return "abs";
    case Op::Exp: return "exp";
    case Op::Exp2: return "exp2";
    case Op::Log: return "log";
    case Op::Log2: return "log2";
    case Op::Tanh: return "tanh";
    case Op::Sigmoid: return "sigmoid";
    case Op::Sqrt: return "sqrt";
    case Op::Floor: return "floor";
    case Op::ToFloat: return "float";
    case Op::ToInt: return "int";
    case Op::Add: return "+";
    case Op::Sub: return "-";
    case Op::Mul: return "*";
    case Op::Div: return "/";
    case Op::Mod: return "%";
    case Op::Min: return "min";
    case Op::Max: return "max";
    case Op::Lt: return "<";
    case Op::Le: return "<=";
    case Op::Gt: return ">";
    case Op::Ge: return ">=";
    case Op::Eq: return "==";
    case Op::Ne: return "!=";
    case Op::And: return "&&";
    case Op::Or: return "||";
    case Op::Where: return "where";
  }
  return "?";
}

std::string_view type_name(Type t) {
  switch (t) {
    case Type::Bool: return "bool";
    case Type::Int: return "int";
    case Type::Float: return "float";
  }
  return "?";
}

namespace {
constexpr std::array<std::pair<TensorDType, std::string_view>, 6> kDTypeNames = {{
    {TensorDType::F32, "f32"},
    {TensorDType::F16, "f16"},
    {TensorDType::BF16, "bf16"},
    {TensorDType::I32, "i32"},
    {TensorDType::I64, "i64"},
    {TensorDType::U8, "u8"},
}};
}  // namespace

std::string_view dtype_name(TensorDType t) {
  for (const auto& [d, n] : kDTypeNames)
    if (d == t) return n;
  return "?";
}

bool parse_dtype(std::string_view text, TensorDType& out) {
  for (const auto& [d, n] : kDTypeNames)
    if (n == text) {
      out = d;
      return true;
    }
  return false;
}

Type value_type_of(TensorDType t) {
  switch (t) {
    case TensorDType::F32:
    case TensorDType::F16:
    case TensorDType::BF16: return Type::Float;
    case TensorDType::I32:
    case TensorDType::I64: return Type::Int;
    case TensorDType::U8: return Type::Bool;
  }
  return Type::Float;
}

const std::vector<std::string>& index_names() {
  static const std::vector<std::string> names = {"b", "h", "q", "kv", "q_len", "kv_len", "num_heads"};
  return names;
}

bool is_index_name(std::string_view name) {
  for (const auto& n : index_names())
    if (n == name) return true;
  return false;
}

bool is_reserved_word(std::string_view name) {
  // Generated CUDA uses these: the aj_/attnjit prefixes, the hook argument block, C++
  // keywords and the math functions hooks call.
  if (name.starts_with("aj_") || name.starts_with("attnjit") || name.starts_with("__")) return true;
  static const std::vector<std::string_view> generated = {
      "args",          "auto",     "break",    "case",   "char",     "class",     "const",
      "continue",      "default",  "delete",   "do",     "double",   "else",      "enum",
      "extern",        "for",      "goto",     "if",     "inline",   "long",      "namespace",
      "new",           "operator", "private",  "public", "register", "return",    "short",
      "signed",        "sizeof",   "static",   "struct", "switch",   "template",  "this",
      "typedef",       "union",    "unsigned", "using",  "virtual",  "void",      "volatile",
      "while",         "expf",     "exp2f",    "logf",   "log2f",    "sqrtf",     "floorf",
      "fabsf",         "fminf",    "fmaxf",    "tanhf",  "trunc",    "threadIdx", "blockIdx",
      "blockDim",      "gridDim",  "warpSize", "half",   "nullptr",  "constexpr", "AttnjitTensorArg",
      "AttnjitFwdArgs"};
  for (auto w : generated)
    if (w == name) return true;
  static const std::vector<std::string_view> words = {
      "score",   "true",  "false",  "where",   "min",  "max",   "abs",   "exp", "exp2",
      "log",     "log2",  "tanh",   "sigmoid", "sqrt", "floor", "float", "int", "bool",
      "variant", "param", "tensor", "mask",    "rope", "rank"};  // not "gate": the output gate preset names its tensor
                                                                 // so
  for (auto w : words)
    if (w == name) return true;
  return false;
}

NodeRef rewrite_bottom_up(const NodeRef& root, const std::function<NodeRef(const NodeRef&)>& f) {
  std::unordered_map<const Node*, NodeRef> done;
  for (const auto& n : topological_order({root})) {
    std::vector<NodeRef> args;
    args.reserve(n->args.size());
    bool changed = false;
    for (const auto& a : n->args) {
      args.push_back(done.at(a.get()));
      changed |= args.back() != a;
    }
    NodeRef rebuilt =
        changed ? make_node(n->op, n->type, std::move(args), n->int_value, n->float_value, n->name, n->tensor_dtype)
                : n;
    done[n.get()] = f(rebuilt);
  }
  return done.at(root.get());
}

std::vector<NodeRef> topological_order(const std::vector<NodeRef>& roots) {
  std::vector<NodeRef> order;
  std::unordered_map<const Node*, bool> seen;
  // Iterative post-order so deep expressions cannot overflow the stack.
  std::vector<std::pair<NodeRef, std::size_t>> stack;
  for (const auto& r : roots) {
    if (!r || seen.count(r.get())) continue;
    stack.emplace_back(r, 0);
    seen[r.get()] = true;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->args.size()) {
        const NodeRef child = node->args[next++];
        if (!seen.count(child.get())) {
          seen[child.get()] = true;
          stack.emplace_back(child, 0);
        }
      } else {
        order.push_back(node);
        stack.pop_back();
      }
    }
  }
  return order;
}

NodeRef substitute(const NodeRef& n, const NodeRef& from, const NodeRef& to) {
  return rewrite_bottom_up(n, [&](const NodeRef& x) { return x == from ? to : x; });
}

std::unordered_map<const Node*, RowKeyDependence> row_key_dependence(const NodeRef& root) {
  std::unordered_map<const Node*, RowKeyDependence> out;
  for (const auto& n : topological_order({root})) {
    RowKeyDependence d{n->op == Op::Index && n->name == "q",
                       n->op == Op::Score || (n->op == Op::Index && n->name == "kv")};
    for (const auto& a : n->args) {
      d.row |= out.at(a.get()).row;
      d.key |= out.at(a.get()).key;
    }
    out[n.get()] = d;
  }
  return out;
}

IndexUses index_uses(const NodeRef& root) {
  IndexUses out;
  for (const auto& n : topological_order({root})) {
    out.batch |= n->op == Op::Index && n->name == "b";
    out.head |= n->op == Op::Index && n->name == "h";
    if (n->op == Op::TensorRead && std::find(out.tensors.begin(), out.tensors.end(), n->name) == out.tensors.end())
      out.tensors.push_back(n->name);
  }
  return out;
}

}  // namespace attnjit::ir
