// Hook emission (see hook_emitter.hpp).
#include "compiler/codegen/hook_emitter.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <unordered_map>

#include "compiler/mask_analysis.hpp"
#include "compiler/passes/differentiate.hpp"
#include "compiler/passes/run_equality.hpp"
#include "compiler/passes/score_split.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/printer.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/interval.h"

namespace attnjit {
namespace {

constexpr int kMaxParams = 16;  // ATTNJIT_MAX_PARAMS in templates/abi.h
constexpr int kMaxTensors = 8;  // ATTNJIT_MAX_TENSORS

using ir::Node;
using ir::NodeRef;
using ir::Op;
using ir::Type;

std::string c_type(Type t) { return t == Type::Float ? "float" : (t == Type::Int ? "int" : "bool"); }

std::string float_literal(double v) {
  return ir::format_float_literal(static_cast<double>(static_cast<float>(v))) + "f";
}

// Emits scalar C expressions for IR nodes; shared nodes are referred to by temporary name.
class ScalarEmitter {
 public:
  explicit ScalarEmitter(const ArgumentSlots& slots) : slots_(slots) {}

  std::unordered_map<const Node*, std::string> temporaries;

  std::string expr(const NodeRef& n, bool allow_temporary = true) const {
    if (allow_temporary) {
      auto it = temporaries.find(n.get());
      if (it != temporaries.end()) return it->second;
    }
    const auto a = [&](std::size_t i) { return expr(n->args[i]); };
    switch (n->op) {
      case Op::ConstBool: return n->int_value ? "true" : "false";
      case Op::ConstInt: return n->int_value < 0 ? fmt::format("({})", n->int_value) : std::to_string(n->int_value);
      case Op::ConstFloat:
        return n->float_value < 0 ? "(" + float_literal(n->float_value) + ")" : float_literal(n->float_value);
      case Op::Index:
      case Op::Param: return n->name;
      case Op::Score: return "score";
      case Op::TensorRead: {
        std::string idx;
        for (std::size_t i = 0; i < n->args.size(); ++i) idx += ", " + a(i);
        return fmt::format("aj_read_{}({}, aj_offset{}({}{}))", ir::dtype_name(n->tensor_dtype), n->name,
                           n->args.size(), n->name, idx);
      }
      case Op::Neg: return "(-" + a(0) + ")";
      case Op::Not: return "(!" + a(0) + ")";
      case Op::Abs: return n->type == Type::Int ? "abs(" + a(0) + ")" : "fabsf(" + a(0) + ")";
      case Op::Exp: return "expf(" + a(0) + ")";
      case Op::Exp2: return "exp2f(" + a(0) + ")";
      case Op::Log: return "logf(" + a(0) + ")";
      case Op::Log2: return "log2f(" + a(0) + ")";
      case Op::Tanh: return "aj_tanh(" + a(0) + ")";
      case Op::Sigmoid: return "aj_sigmoid(" + a(0) + ")";
      case Op::Sqrt: return "sqrtf(" + a(0) + ")";
      case Op::Floor: return "floorf(" + a(0) + ")";
      case Op::ToFloat: return "(float)(" + a(0) + ")";
      case Op::ToInt: return n->args[0]->type == Type::Bool ? "(int)(" + a(0) + ")" : "aj_to_int(" + a(0) + ")";
      case Op::Div:
        if (n->type == Type::Int) return "aj_floordiv(" + a(0) + ", " + a(1) + ")";
        // a * rcp.approx(b), within 2 ulp of a / b: IEEE division is a reciprocal, a Newton
        // step and a slow-path branch per element, and ptxas cannot hoist it; the reciprocal of
        // a divisor that no element changes (soft-cap's `score / softcap`) is computed once.
        return "(" + a(0) + " * aj_rcp(" + a(1) + "))";
      case Op::Mod: return "aj_floormod(" + a(0) + ", " + a(1) + ")";
      case Op::Min: return (n->type == Type::Int ? "min(" : "fminf(") + a(0) + ", " + a(1) + ")";
      case Op::Max: return (n->type == Type::Int ? "max(" : "fmaxf(") + a(0) + ", " + a(1) + ")";
      case Op::Where: return "(" + a(0) + " ? " + a(1) + " : " + a(2) + ")";
      default: break;
    }
    if (ir::is_binary(n->op)) return "(" + a(0) + " " + std::string(ir::op_name(n->op)) + " " + a(1) + ")";
    throw InternalError(fmt::format("codegen: no scalar form for '{}'", ir::op_name(n->op)));
  }

  // Declarations of the leaves a body uses: index lengths, parameters and tensors by name.
  std::string leaf_declarations(const std::vector<NodeRef>& roots, bool interval_form) const {
    std::set<std::string> lengths;
    std::set<std::string> params, tensors;
    for (const auto& n : ir::topological_order(roots)) {
      if (n->op == Op::Index && (n->name == "q_len" || n->name == "kv_len" || n->name == "num_heads"))
        lengths.insert(n->name);
      if (n->op == Op::Param) params.insert(n->name);
      if (n->op == Op::TensorRead && !interval_form) tensors.insert(n->name);
    }
    std::string out;
    const std::unordered_map<std::string, std::string> length_field = {
        {"q_len", "aj_q_len(b, args)"}, {"kv_len", "aj_kv_len(b, args)"}, {"num_heads", "args.heads_q"}};
    for (const auto& l : lengths)
      out += interval_form
                 ? fmt::format("  const AjIv {} = aj_iv({}, {});\n", l, length_field.at(l), length_field.at(l))
                 : fmt::format("  const int {} = {};\n", l, length_field.at(l));
    for (std::size_t i = 0; i < slots_.int_params.size(); ++i)
      if (params.count(slots_.int_params[i].name))
        out += interval_form ? fmt::format("  const AjIv {0} = aj_iv(args.int_params[{1}], args.int_params[{1}]);\n",
                                           slots_.int_params[i].name, i)
                             : fmt::format("  const int {} = args.int_params[{}];\n", slots_.int_params[i].name, i);
    for (std::size_t i = 0; i < slots_.float_params.size(); ++i)
      if (params.count(slots_.float_params[i].name))
        out += interval_form
                   ? fmt::format("  const AjFv {0} = aj_fv(args.float_params[{1}], args.float_params[{1}]);\n",
                                 slots_.float_params[i].name, i)
                   : fmt::format("  const float {} = args.float_params[{}];\n", slots_.float_params[i].name, i);
    for (std::size_t i = 0; i < slots_.tensors.size(); ++i)
      if (tensors.count(slots_.tensors[i].name))
        out += fmt::format("  const AttnjitTensorArg& {} = args.tensors[{}];\n", slots_.tensors[i].name, i);
    for (std::size_t i = 0; i < slots_.derived.size(); ++i)
      if (tensors.count(slots_.derived[i].name))
        out += fmt::format("  const AttnjitTensorArg& {} = args.tensors[{}];  // derived (the runtime computes it)\n",
                           slots_.derived[i].name, slots_.tensors.size() + i);
    return out;
  }

 private:
  const ArgumentSlots& slots_;
};

// One hook body from a straight-line program: temporaries for shared nodes, then the result.
// `given`: nodes emitted as the given text instead (the raw score's folded products).
std::string scalar_body(const ir::Program& program, int root, ScalarEmitter& emit,
                        const std::unordered_map<const Node*, std::string>& given = {}) {
  std::string out;
  emit.temporaries = given;
  int next = 0;
  // Only temporaries reachable from this root, in program order.
  std::set<const Node*> reachable;
  for (const auto& n : ir::topological_order({program.instructions[static_cast<std::size_t>(root)].node}))
    reachable.insert(n.get());
  for (int i : program.shared()) {
    const NodeRef& n = program.instructions[static_cast<std::size_t>(i)].node;
    if (!reachable.count(n.get()) || i == root) continue;
    const std::string name = fmt::format("aj_t{}", next++);
    out += fmt::format("  const {} {} = {};  // {}\n", c_type(n->type), name, emit.expr(n), ir::print_expr(n));
    emit.temporaries[n.get()] = name;
  }
  out += fmt::format("  return {};\n", emit.expr(program.instructions[static_cast<std::size_t>(root)].node));
  return out;
}

std::string interval_statements(const NodeRef& mask, std::unordered_map<const Node*, std::string>& names,
                                const std::set<const Node*>* only, const char* prefix);

// The mask over a whole tile from the hulls of its fields (the block-mask kernel, before it
// walks elements): the range of each row field over the tile's rows and of each column field
// over its keys, then the pair evaluated in interval arithmetic with q and kv as the tile's
// ranges. Sound because every element's fields lie in their hulls: a document mask's tile
// whose rows and keys all hold one id is full, and one whose ids do not overlap is empty,
// without reading its 16k elements. Only int and bool fields (the kernel's float fields are
// rounded where the intervals are exact).
std::string mask_hull_hooks(const NodeRef& mask, const std::vector<NodeRef>& row_fields,
                            const std::vector<NodeRef>& col_fields, const std::vector<NodeRef>& pair_nodes,
                            const ScalarEmitter& emit) {
  bool usable = !row_fields.empty() || !col_fields.empty();
  for (const auto* fields : {&row_fields, &col_fields})
    for (const auto& f : *fields) usable = usable && (f->type == Type::Int || f->type == Type::Bool);
  if (!usable) return "#define AJ_MASK_HULL 0  // no int or bool fields to take hulls of\n\n";
  std::string s =
      "// hulls of the mask's fields over a tile, and the pair's interval over them\n#define AJ_MASK_HULL 1\n";
  // struct `iv` (a hull per field of `point`), and aj_<prefix>_none / _add / _join / _shfl.
  const auto side = [&](const char* iv, const char* point, const char* prefix, const std::vector<NodeRef>& fields) {
    std::string decl, none, add, join, shfl;
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (fields[i]->type == Type::Int) {
        decl += fmt::format(" AjIv f{};", i);
        none += fmt::format("{}AjIv{{AJ_INT_MAX, AJ_INT_MIN}}", i ? ", " : "");
        add +=
            fmt::format("  a.f{0}.lo = aj_min64(a.f{0}.lo, v.f{0});\n  a.f{0}.hi = aj_max64(a.f{0}.hi, v.f{0});\n", i);
        join += fmt::format(
            "  a.f{0}.lo = aj_min64(a.f{0}.lo, o.f{0}.lo);\n  a.f{0}.hi = aj_max64(a.f{0}.hi, o.f{0}.hi);\n", i);
        shfl += fmt::format(
            "  o.f{0}.lo = __shfl_xor_sync(0xffffffffu, a.f{0}.lo, lanes);\n"
            "  o.f{0}.hi = __shfl_xor_sync(0xffffffffu, a.f{0}.hi, lanes);\n",
            i);
      } else {
        decl += fmt::format(" AjBv f{};", i);
        none += fmt::format("{}AjBv{{false, false}}", i ? ", " : "");
        add += fmt::format("  a.f{0}.can_false |= !v.f{0};\n  a.f{0}.can_true |= v.f{0};\n", i);
        join += fmt::format("  a.f{0}.can_false |= o.f{0}.can_false;\n  a.f{0}.can_true |= o.f{0}.can_true;\n", i);
        shfl += fmt::format(
            "  o.f{0}.can_false = __shfl_xor_sync(0xffffffffu, (int)a.f{0}.can_false, lanes) != 0;\n"
            "  o.f{0}.can_true = __shfl_xor_sync(0xffffffffu, (int)a.f{0}.can_true, lanes) != 0;\n",
            i);
      }
    }
    std::string out = fmt::format("struct {} {{{} }};\n", iv, decl);
    out += fmt::format("__device__ __forceinline__ {0} aj_{1}_none() {{ return {0}{{{2}}}; }}\n", iv, prefix, none);
    out +=
        fmt::format("__device__ __forceinline__ void aj_{0}_add({1}& a, const {2}& v) {{\n  (void)a; (void)v;\n{3}}}\n",
                    prefix, iv, point, add);
    out += fmt::format(
        "__device__ __forceinline__ void aj_{0}_join({1}& a, const {1}& o) {{\n  (void)a; (void)o;\n{2}}}\n", prefix,
        iv, join);
    out += fmt::format(
        "__device__ __forceinline__ {1} aj_{0}_shfl(const {1}& a, int lanes) {{\n  {1} o = a;\n  (void)lanes;\n{2}  "
        "return o;\n}}\n",
        prefix, iv, shfl);
    return out;
  };
  s += side("AjMaskRowIv", "AjMaskRow", "mask_row_iv", row_fields);
  s += side("AjMaskColIv", "AjMaskCol", "mask_col_iv", col_fields);
  std::unordered_map<const Node*, std::string> names;
  for (std::size_t i = 0; i < row_fields.size(); ++i) names[row_fields[i].get()] = fmt::format("row.f{}", i);
  for (std::size_t i = 0; i < col_fields.size(); ++i) names[col_fields[i].get()] = fmt::format("col.f{}", i);
  s += "__device__ __forceinline__ int aj_mask_hull_class(const AjMaskRowIv& row, const AjMaskColIv& col, int b,\n"
       "                                                  int h, int q_lo, int q_hi, int kv_lo, int kv_hi,\n"
       "                                                  const AttnjitFwdArgs& args) {\n"
       "  (void)row; (void)col; (void)b; (void)h; (void)q_lo; (void)q_hi; (void)kv_lo; (void)kv_hi; (void)args;\n";
  std::vector<NodeRef> leaves;
  for (const auto& n : pair_nodes)
    if (!names.count(n.get()) && (n->op == Op::Index || n->op == Op::Param)) leaves.push_back(n);
  s += emit.leaf_declarations(leaves, true);
  std::set<const Node*> in_pair;
  for (const auto& n : pair_nodes) in_pair.insert(n.get());
  return s + interval_statements(mask, names, &in_pair, "aj_h") + "}\n\n";
}

// The mask split for tiles. Per element of a tile the mask repeats what its query row or its
// key determines alone (a document id read, `q + kv_len - q_len`): aj_mask_row and aj_mask_col
// compute those parts ("fields": computed nodes one side determines, used where the other side
// is needed too), once per row and per key; aj_mask_pair combines them per element. `suffix`
// names a second split of another form of the mask (AjMaskRow<suffix>, aj_mask_pair<suffix>,
// ...), which gets no hull hooks.
std::string split_mask_hooks(const NodeRef& mask, ScalarEmitter& emit, const std::string& suffix = "") {
  using Uses = ir::RowKeyDependence;
  const auto uses = ir::row_key_dependence(mask);
  const auto order = ir::topological_order({mask});
  std::vector<NodeRef> row_fields, col_fields;
  std::set<const Node*> is_field;
  const auto consider = [&](const NodeRef& n, const Uses& user) {
    if (n->args.empty() || is_field.count(n.get())) return;  // leaves are read where used
    const Uses& u = uses.at(n.get());
    if (!u.key && user.key)
      row_fields.push_back(n);
    else if (!u.row && u.key && user.row)
      col_fields.push_back(n);
    else
      return;
    is_field.insert(n.get());
  };
  for (const auto& n : order)
    for (const auto& a : n->args) consider(a, uses.at(n.get()));
  consider(mask, Uses{true, true});  // the result is used per element
  // Children first, so a field inside another is computed (and named) before it.
  std::unordered_map<const Node*, std::size_t> position;
  for (std::size_t i = 0; i < order.size(); ++i) position[order[i].get()] = i;
  for (auto* fields : {&row_fields, &col_fields})
    std::sort(fields->begin(), fields->end(),
              [&](const NodeRef& a, const NodeRef& b) { return position.at(a.get()) < position.at(b.get()); });

  // Nodes a body evaluates from `roots`, not descending into fields other than the roots.
  const auto evaluated = [&](const std::vector<NodeRef>& roots, bool stop_at_fields) {
    std::vector<NodeRef> out, stack(roots.begin(), roots.end());
    std::set<const Node*> seen;
    while (!stack.empty()) {
      NodeRef n = stack.back();
      stack.pop_back();
      if (!seen.insert(n.get()).second) continue;
      out.push_back(n);
      if (stop_at_fields && is_field.count(n.get())) continue;
      for (const auto& a : n->args) stack.push_back(a);
    }
    return out;
  };
  const std::string row_type = "AjMaskRow" + suffix, col_type = "AjMaskCol" + suffix;
  const auto side = [&](const std::string& type, const char* index, const std::vector<NodeRef>& fields) {
    std::string fields_decl, body, values;
    emit.temporaries.clear();
    for (std::size_t i = 0; i < fields.size(); ++i) {
      fields_decl += fmt::format(" {} f{};", c_type(fields[i]->type), i);
      body += fmt::format("  const {} f{} = {};  // {}\n", c_type(fields[i]->type), i, emit.expr(fields[i]),
                          ir::print_expr(fields[i]));
      emit.temporaries[fields[i].get()] = fmt::format("f{}", i);
      values += fmt::format("{}f{}", i ? ", " : "", i);
    }
    std::string out = fmt::format("struct {} {{{} }};\n", type, fields_decl);
    out += fmt::format(
        "__device__ __forceinline__ {0} aj_mask_{1}{3}(int b, int h, int {2}, const AttnjitFwdArgs& args) {{\n", type,
        std::string(index) == "q" ? "row" : "col", index, suffix);
    out += fmt::format("  (void)b; (void)h; (void){}; (void)args;\n", index);
    out += emit.leaf_declarations(evaluated(fields, false), false) + body;
    out += fmt::format("  return {}{{{}}};\n}}\n", type, values);
    return out;
  };
  std::string s = "// mask_mod split for tiles: the parts one query row or one key determines, then the pair\n";
  s += side(row_type, "q", row_fields);
  s += side(col_type, "kv", col_fields);
  emit.temporaries.clear();
  for (std::size_t i = 0; i < row_fields.size(); ++i) emit.temporaries[row_fields[i].get()] = fmt::format("row.f{}", i);
  for (std::size_t i = 0; i < col_fields.size(); ++i) emit.temporaries[col_fields[i].get()] = fmt::format("col.f{}", i);
  s += fmt::format(
      "__device__ __forceinline__ bool aj_mask_pair{}(const {}& row, const {}& col, int b, int h, int q, int kv,\n"
      "                                             const AttnjitFwdArgs& args) {{\n",
      suffix, row_type, col_type);
  s += "  (void)row; (void)col; (void)b; (void)h; (void)q; (void)kv; (void)args;\n";
  std::vector<NodeRef> pair_leaves;  // what the pair reads itself, outside the fields
  for (const auto& n : evaluated({mask}, true))
    if (!is_field.count(n.get()) && (n->op == Op::Index || n->op == Op::Param || n->op == Op::TensorRead))
      pair_leaves.push_back(n);
  s += emit.leaf_declarations(pair_leaves, false);
  s += fmt::format("  return {};\n}}\n\n", emit.expr(mask));
  emit.temporaries.clear();
  if (!suffix.empty()) return s;
  return s + mask_hull_hooks(mask, row_fields, col_fields, evaluated({mask}, true), emit);
}

// score_mod on the raw product q . k, with the softmax scale folded into the factor score is
// first multiplied or divided by: soft-cap's `score / softcap` becomes `raw * (scale *
// rcp(softcap))`, one multiply per element instead of two (the factor is computed once per
// tile). Only when every use of `score` is such a product with a factor that depends on
// neither q, kv nor the score. fwd_sm90 calls aj_score_mod_raw where AJ_SCORE_MOD_RAW is 1.
std::string raw_score_hook(const ir::Program& program, int root, ScalarEmitter& emit) {
  const NodeRef& score_mod = program.instructions[static_cast<std::size_t>(root)].node;
  const auto uses = ir::row_key_dependence(score_mod);
  const auto uniform = [&](const NodeRef& n) {
    for (const auto& m : ir::topological_order({n}))
      if (m->op == Op::Score) return false;
    return !uses.at(n.get()).row && !uses.at(n.get()).key;
  };
  std::unordered_map<const Node*, std::string> folded;
  bool foldable = score_mod->op != Op::Score;
  for (const auto& n : ir::topological_order({score_mod}))
    for (std::size_t i = 0; i < n->args.size() && foldable; ++i) {
      if (n->args[i]->op != Op::Score) continue;
      const bool product = n->args.size() == 2 && (n->op == Op::Mul || (n->op == Op::Div && i == 0));
      if (!product || n->args[1 - i]->op == Op::Score || !uniform(n->args[1 - i])) {
        foldable = false;
        break;
      }
      const NodeRef& factor = n->args[1 - i];
      folded[n.get()] = n->op == Op::Mul ? fmt::format("(raw * (scale * {}))", emit.expr(factor))
                                         : fmt::format("(raw * (scale * aj_rcp({})))", emit.expr(factor));
    }
  if (!foldable || folded.empty())
    return "#define AJ_SCORE_MOD_RAW 0  // score_mod does not start with score times a uniform factor\n\n";
  std::string s = "// score_mod of the raw product: the softmax scale folded into the score's factor\n";
  s += "#define AJ_SCORE_MOD_RAW 1\n";
  s += "__device__ __forceinline__ float aj_score_mod_raw(float raw, float scale, int b, int h, int q, int kv,\n"
       "                                                 const AttnjitFwdArgs& args) {\n";
  s += "  (void)b; (void)h; (void)q; (void)kv; (void)args;\n";
  s += emit.leaf_declarations({score_mod}, false);
  s += scalar_body(program, root, emit, folded);
  emit.temporaries.clear();
  return s + "}\n\n";
}

// A float tensor read at an index that neither q nor kv changes (learned ALiBi slopes[h]).
bool reads_block_uniform_float_tensor(const NodeRef& score) {
  const auto uses = ir::row_key_dependence(score);
  for (const auto& n : ir::topological_order({score}))
    if (n->op == Op::TensorRead && n->type == Type::Float && !uses.at(n.get()).row && !uses.at(n.get()).key)
      return true;
  return false;
}

// The additive split of score_mod (compiler/passes/score_split.cpp): when score_mod = score +
// col(kv) + row(q), aj_score_col and aj_score_row around an anchor row (AJ_SCORE_SPLIT 1), so a
// kernel can add the key part once per key of a tile and leave the row part to the LSE.
std::string split_score_hooks(const NodeRef& score, ScalarEmitter& emit, HookFacts& facts) {
  // Not for learned per-head factors: their gradient sums every row's error in D = rowsum(dO *
  // O) (O rounded to the output type) times the row's key distances, so it follows O's last
  // bits, which the split redraws: learned slopes fp16 D=64 GQA went from 1.60 to 2.02 times
  // the naive error (H200, 2026-11-30). Until the backward computes that term exactly.
  if (reads_block_uniform_float_tensor(score))
    return "#define AJ_SCORE_SPLIT 0  // a learned per-head factor (docs/kernels.md, score split)\n\n";
  const std::optional<ir::ScoreSplit> split = ir::split_score_mod(score);
  facts.score_split = split.has_value();
  if (!split)
    return score->op == Op::Score ? "#define AJ_SCORE_SPLIT 0  // no score_mod\n\n"
                                  : "#define AJ_SCORE_SPLIT 0  // score_mod is not score + (key part) + (row part)\n\n";
  const ir::LoweredExprs lowered =
      ir::lower({{"score_col", split->col, Type::Float}, {"score_row", split->row, Type::Float}});
  std::string s = "// score_mod split: score + aj_score_col(kv) + aj_score_row(q), both around an anchor query row\n";
  s += "#define AJ_SCORE_SPLIT 1\n";
  const auto part = [&](const char* name, const char* index, int root) {
    const NodeRef& n = lowered.roots[static_cast<std::size_t>(root)].root;
    std::string out = fmt::format("// {}: {}\n", name, ir::print_expr(n));
    out += fmt::format(
        "__device__ __forceinline__ float aj_score_{}(int b, int h, int {}, int {}, const AttnjitFwdArgs& args) {{\n",
        name, index, ir::kAnchorName);
    out += fmt::format("  (void)b; (void)h; (void){}; (void){}; (void)args;\n", index, ir::kAnchorName);
    out += emit.leaf_declarations({n}, false);
    out += scalar_body(lowered.program, lowered.program.roots[static_cast<std::size_t>(root)], emit);
    return out + "}\n";
  };
  s += part("col", "kv", 0);
  s += part("row", "q", 1);
  emit.temporaries.clear();
  return s + "\n";
}

std::string interval_value(const NodeRef& n, const std::unordered_map<const Node*, std::string>& names) {
  const auto a = [&](std::size_t i) { return names.at(n->args[i].get()); };
  const Type arg_type = n->args.empty() ? n->type : n->args[0]->type;
  switch (n->op) {
    case Op::ConstInt: return fmt::format("aj_iv({0}LL, {0}LL)", n->int_value);
    case Op::ConstFloat: return fmt::format("aj_fv({0}, {0})", ir::format_float_literal(n->float_value));
    case Op::ConstBool: return n->int_value ? "aj_bv(false, true)" : "aj_bv(true, false)";
    case Op::Index:
      if (n->name == "q") return "aj_iv(q_lo, q_hi)";
      if (n->name == "kv") return "aj_iv(kv_lo, kv_hi)";
      if (n->name == "b" || n->name == "h") return fmt::format("aj_iv({0}, {0})", n->name);
      return n->name;  // lengths, declared above
    case Op::Param: return n->name;
    case Op::Score: return "aj_fv_unknown()";
    case Op::TensorRead:
      return n->type == Type::Int ? "aj_iv_unknown()"
                                  : (n->type == Type::Float ? "aj_fv_unknown()" : "aj_bv_unknown()");
    case Op::Not: return "aj_bv_not(" + a(0) + ")";
    case Op::And: return "aj_bv_and(" + a(0) + ", " + a(1) + ")";
    case Op::Or: return "aj_bv_or(" + a(0) + ", " + a(1) + ")";
    case Op::Where:
      return fmt::format("aj_{}_where({}, {}, {})",
                         n->type == Type::Int ? "iv" : (n->type == Type::Float ? "fv" : "bv"), a(0), a(1), a(2));
    case Op::ToFloat: return (arg_type == Type::Int ? "aj_fv_from_int(" : "aj_fv_from_bool(") + a(0) + ")";
    case Op::ToInt: return (arg_type == Type::Float ? "aj_iv_from_float(" : "aj_iv_from_bool(") + a(0) + ")";
    default: break;
  }
  if (ir::is_comparison(n->op)) {
    if (arg_type == Type::Bool) return fmt::format("aj_bv_{}({}, {})", n->op == Op::Eq ? "eq" : "ne", a(0), a(1));
    return fmt::format("aj_{}_cmp({}, {}, {})", arg_type == Type::Int ? "iv" : "fv",
                       aj_cmp_name(ir::interval_comparison(n->op)), a(0), a(1));
  }
  if (arg_type == Type::Int) {
    static const std::unordered_map<Op, std::string> int_ops = {{Op::Neg, "neg"}, {Op::Abs, "abs"}, {Op::Add, "add"},
                                                                {Op::Sub, "sub"}, {Op::Mul, "mul"}, {Op::Min, "min"},
                                                                {Op::Max, "max"}, {Op::Div, "div"}, {Op::Mod, "mod"}};
    auto it = int_ops.find(n->op);
    if (it == int_ops.end()) return "aj_iv_unknown()";
    return n->args.size() == 1 ? fmt::format("aj_iv_{}({})", it->second, a(0))
                               : fmt::format("aj_iv_{}({}, {})", it->second, a(0), a(1));
  }
  if (n->op == Op::Neg) return "aj_fv_neg(" + a(0) + ")";
  if (n->op == Op::Add) return "aj_fv_add(" + a(0) + ", " + a(1) + ")";
  if (n->op == Op::Sub) return "aj_fv_sub(" + a(0) + ", " + a(1) + ")";
  return "aj_fv_unknown()";
}

// The interval of each node of `mask` (those in `only`, when given; nodes already in `names`
// are given, as the hull's fields), as statements `const AjIv <prefix>N = ...`, then the class.
std::string interval_statements(const NodeRef& mask, std::unordered_map<const Node*, std::string>& names,
                                const std::set<const Node*>* only, const char* prefix) {
  std::string out;
  int next = 0;
  for (const auto& n : ir::topological_order({mask})) {
    if ((only && !only->count(n.get())) || names.count(n.get())) continue;
    if (n->op == Op::Param ||
        (n->op == Op::Index && n->name != "q" && n->name != "kv" && n->name != "b" && n->name != "h")) {
      names[n.get()] = n->name;
      continue;
    }
    const std::string type = n->type == Type::Int ? "AjIv" : (n->type == Type::Float ? "AjFv" : "AjBv");
    const std::string name = fmt::format("{}{}", prefix, next++);
    out += fmt::format("  const {} {} = {};  // {}\n", type, name, interval_value(n, names), ir::print_expr(n));
    names[n.get()] = name;
  }
  return out + fmt::format("  return aj_tile_class_of({});\n", names.at(mask.get()));
}

std::string interval_body(const NodeRef& normalized_mask, const ScalarEmitter& emit) {
  std::unordered_map<const Node*, std::string> names;
  return emit.leaf_declarations({normalized_mask}, true) + interval_statements(normalized_mask, names, nullptr, "aj_r");
}

}  // namespace

bool score_mod_splits(const ir::NodeRef& score_mod) {
  return !reads_block_uniform_float_tensor(score_mod) && ir::split_score_mod(score_mod).has_value();
}

std::string comment_block(const std::string& text, const std::string& prefix) {
  std::string out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += prefix + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

ArgumentSlots assign_slots(const Variant& variant) {
  ArgumentSlots slots;
  for (const auto& p : variant.params()) (p.type == Type::Int ? slots.int_params : slots.float_params).push_back(p);
  slots.tensors = variant.tensors();
  if (slots.int_params.size() > kMaxParams || slots.float_params.size() > kMaxParams)
    throw UserError(fmt::format("variant '{}' has {} int and {} float parameters; at most {} of each are supported",
                                variant.name(), slots.int_params.size(), slots.float_params.size(), kMaxParams));
  if (slots.tensors.size() > kMaxTensors)
    throw UserError(fmt::format("variant '{}' captures {} tensors; at most {} are supported", variant.name(),
                                slots.tensors.size(), kMaxTensors));
  return slots;
}

bool add_run_slots(const Variant& variant, ArgumentSlots& slots) {
  if (!slots.derived.empty() || slots.tensors.size() >= kMaxTensors) return false;
  const ir::LoweredExprs lowered = ir::lower({{"mask_mod", variant.mask_mod().node(), Type::Bool}});
  const auto runs = ir::rewrite_run_equality(lowered.roots[0].root);
  if (!runs) return false;
  for (const auto& t : slots.tensors)
    if (t.name == runs->runs) return false;  // the user took the name
  slots.derived.push_back(TensorDecl{runs->runs, ir::TensorDType::I32, 3});
  return true;
}

namespace {

// The slot of int parameter `name` in args.int_params (InternalError if slots lack it).
std::size_t int_param_slot(const ArgumentSlots& slots, const std::string& name) {
  for (std::size_t i = 0; i < slots.int_params.size(); ++i)
    if (slots.int_params[i].name == name) return i;
  throw InternalError(fmt::format("codegen: int parameter '{}' has no argument slot", name));
}

std::size_t tensor_slot(const ArgumentSlots& slots, const std::string& name) {
  for (std::size_t i = 0; i < slots.tensors.size(); ++i)
    if (slots.tensors[i].name == name) return i;
  throw InternalError(fmt::format("codegen: tensor '{}' has no argument slot", name));
}

// The row hooks: RoPE on Q and K rows at load and the output gate at the epilogue. The
// macros say which are on (the template treats an absent macro as off); the functions
// carry what depends on the variant (theta, the offset parameter's slot, the gate tensor's
// slot and dtype), the template owns the traversal of its tiles.
void emit_row_hooks(const Variant& variant, const ArgumentSlots& slots, EmittedHooks& out) {
  std::string& s = out.source;
  const auto& rope = variant.rope();
  out.facts.has_rope = rope.has_value();
  s += "// ---- row hooks: RoPE on Q and K rows at load, output gate at the epilogue ----\n";
  if (!rope) {
    s += "#define AJ_HAS_ROPE 0\n";
  } else {
    const bool interleaved = rope->layout == RopeHook::Layout::Interleaved;
    s += fmt::format("// rope: theta={}, dim={}{}, layout={}, offset={}\n", ir::format_float_literal(rope->theta),
                     rope->rotary_dim, rope->rotary_dim == 0 ? " (the whole head)" : "",
                     interleaved ? "interleaved" : "half",
                     rope->offset_param.empty() ? "none" : rope->offset_param + " (runtime int parameter)");
    s += "#define AJ_HAS_ROPE 1\n";
    s += fmt::format("#define AJ_ROPE_DIM {}  // rotated dimensions per row\n",
                     rope->rotary_dim == 0 ? std::string("AJ_HEAD_DIM") : std::to_string(rope->rotary_dim));
    s += fmt::format("#define AJ_ROPE_INTERLEAVED {}  // 0: pairs (j, j + AJ_ROPE_DIM / 2); 1: pairs (2j, 2j + 1)\n",
                     interleaved ? 1 : 0);
    s += "// Inverse frequency of rotated pair j: theta^(-2j / AJ_ROPE_DIM), in double, rounded once to fp32.\n";
    s += "__device__ __forceinline__ float aj_rope_inv_freq(int j) {\n";
    s += fmt::format("  return (float)exp2((double)j * (-2.0 * {:.17g} / AJ_ROPE_DIM));  // log2(theta) = {:.17g}\n",
                     std::log2(rope->theta), std::log2(rope->theta));
    s += "}\n";
    const std::string offset_decl = rope->offset_param.empty()
                                        ? std::string()
                                        : fmt::format("  const int {} = args.int_params[{}];\n", rope->offset_param,
                                                      int_param_slot(slots, rope->offset_param));
    const std::string plus_offset = rope->offset_param.empty() ? "" : " + " + rope->offset_param;
    s += "// Absolute positions: query row q of sequence b sits at q + kv_len - q_len (bottom-right aligned,\n";
    s += "// with sequence b's own lengths in a KV-cache or ragged call), key row kv at\n";
    s += fmt::format("// kv{}.\n", rope->offset_param.empty() ? "" : ", both plus the offset parameter");
    s += "__device__ __forceinline__ int aj_rope_q_position(int b, int q, const AttnjitFwdArgs& args) {\n";
    s += offset_decl;
    s += fmt::format("  return q + aj_kv_len(b, args) - aj_q_len(b, args){};\n}}\n", plus_offset);
    s += "__device__ __forceinline__ int aj_rope_kv_position(int b, int kv, const AttnjitFwdArgs& args) {\n";
    s += offset_decl.empty() ? "  (void)b;\n  (void)args;\n" : "  (void)b;\n" + offset_decl;
    s += fmt::format("  return kv{};\n}}\n", plus_offset);
  }

  const auto& gate = variant.output_gate();
  out.facts.has_output_gate = gate.has_value();
  out.facts.output_gate_per_element = gate && gate->rank == 4;
  if (!gate) {
    s += "#define AJ_HAS_OUTPUT_GATE 0\n\n";
    return;
  }
  const std::size_t slot = tensor_slot(slots, gate->tensor);
  const bool per_element = gate->rank == 4;
  s += fmt::format("// output gate: O *= sigmoid({}[b, h, q{}]) ({}, rank {})\n", gate->tensor,
                   per_element ? ", d" : "", ir::dtype_name(gate->dtype), gate->rank);
  s += "#define AJ_HAS_OUTPUT_GATE 1\n";
  s += fmt::format("#define AJ_OUTPUT_GATE_PER_ELEMENT {}  // 0: one gate per row (d is ignored); 1: per element\n",
                   per_element ? 1 : 0);
  s += fmt::format("#define AJ_OUTPUT_GATE_SLOT {}  // args.tensors[] slot of the gate tensor\n", slot);
  s += "// The factor sigmoid(gate) for output element (b, h, q, d); reads are clamped to the tensor.\n";
  s += "__device__ __forceinline__ float aj_output_gate(int b, int h, int q, int d, const AttnjitFwdArgs& args) {\n";
  // The tensor keeps the user's name unless that name is the d argument itself.
  const std::string t = gate->tensor == "d" ? fmt::format("args.tensors[{}]", slot) : gate->tensor;
  if (gate->tensor != "d") s += fmt::format("  const AttnjitTensorArg& {} = args.tensors[{}];\n", gate->tensor, slot);
  if (!per_element) s += "  (void)d;\n";
  s += fmt::format(
      "  return aj_sigmoid(aj_read_{}({}, {}));\n}}\n\n", ir::dtype_name(gate->dtype), t,
      per_element ? fmt::format("aj_offset4({}, b, h, q, d)", t) : fmt::format("aj_offset3({}, b, h, q)", t));
}

}  // namespace

EmittedHooks emit_hooks(const Variant& variant, const ArgumentSlots& slots) {
  EmittedHooks out;
  const ir::LoweredExprs lowered = ir::lower(
      {{"score_mod", variant.score_mod().node(), Type::Float}, {"mask_mod", variant.mask_mod().node(), Type::Bool}});
  const NodeRef& score = lowered.roots[0].root;
  const NodeRef& mask = lowered.roots[1].root;
  out.facts.has_score_mod = score->op != Op::Score;
  out.facts.has_mask = !(mask->op == Op::ConstBool && mask->int_value == 1);
  const NodeRef normalized = ir::normalize_for_intervals(mask);
  // A mask that reads a tensor gets its tile classes from the GPU: interval analysis cannot
  // see through the read. The classes depend on b (h) only when the mask mentions it.
  const ir::IndexUses mask_uses = ir::index_uses(mask);
  out.facts.mask_reads_tensor = !mask_uses.tensors.empty();
  out.facts.mask_uses_batch = mask_uses.batch;
  out.facts.mask_uses_head = mask_uses.head;

  ScalarEmitter emit(slots);
  std::string& s = out.source;
  // The interval arithmetic aj_tile_class calls: the header the compile-time analysis
  // (compiler/mask_analysis.cpp) is built from, pasted whole (include-guarded).
  s += runtime::load_template("interval.h");
  s += "\n";
  s += fmt::format("// score_mod: {}\n", ir::print_expr(score));
  s += "__device__ __forceinline__ float aj_score_mod(float score, int b, int h, int q, int kv, const AttnjitFwdArgs& "
       "args) {\n";
  s += emit.leaf_declarations({score}, false);
  s += scalar_body(lowered.program, lowered.program.roots[0], emit);
  s += "}\n\n";

  s += raw_score_hook(lowered.program, lowered.program.roots[0], emit);
  s += split_score_hooks(score, emit, out.facts);

  s += fmt::format("// mask_mod: {}\n", ir::print_expr(mask));
  s += "__device__ __forceinline__ bool aj_mask_mod(int b, int h, int q, int kv, const AttnjitFwdArgs& args) {\n";
  s += emit.leaf_declarations({mask}, false);
  s += scalar_body(lowered.program, lowered.program.roots[1], emit);
  s += "}\n\n";
  s += split_mask_hooks(mask, emit);
  // Templates that asked for it (add_run_slots): a document mask's compare as the row's run
  // too, for the rows whose ids are monotone.
  std::optional<ir::RunEquality> runs;
  if (!slots.derived.empty()) runs = ir::rewrite_run_equality(mask);
  if (runs && runs->runs == slots.derived[0].name) {
    out.facts.runs_source = static_cast<int>(tensor_slot(slots, runs->tensor));
    out.facts.runs_slot = static_cast<int>(slots.tensors.size());
    s += fmt::format(
        "// {0}[i, j]: the run of {1} holding position j of row i (lo, hi), or lo > hi everywhere in a row of\n"
        "// {1} that is not monotone (compiler/passes/run_equality.hpp, templates/tensor_runs.cuh). Where\n"
        "// aj_mask_runs_ok holds, the mask is {2}\n",
        runs->runs, runs->tensor, ir::print_expr(runs->fast_mask));
    s += "#define AJ_MASK_RUNS 1\n";
    s += "__device__ __forceinline__ bool aj_mask_runs_ok(int b, int h, int q, const AttnjitFwdArgs& args) {\n";
    s += "  (void)b; (void)h; (void)q; (void)args;\n";
    s += emit.leaf_declarations({runs->monotone}, false);
    s += fmt::format("  return {};\n}}\n", emit.expr(runs->monotone));
    s += split_mask_hooks(runs->fast_mask, emit, "_runs");
    if (const auto rest = ir::document_rest(mask)) {
      out.facts.document_rest = true;
      s += fmt::format(
          "// The mask is {0}[b, q] == {0}[b, kv] && rest: inside one document (a run of {0}) it is\n"
          "// rest = {1}\n",
          runs->tensor, ir::print_expr(*rest));
      s += "#define AJ_MASK_DOC 1\n";
      s += split_mask_hooks(*rest, emit, "_doc");
      s += "// tile class of rest alone, by interval arithmetic\n";
      s += "__device__ __forceinline__ int aj_tile_class_doc(int b, int h, int q_lo, int q_hi, int kv_lo, int kv_hi,\n"
           "                                                 const AttnjitFwdArgs& args) {\n";
      s += "  (void)b; (void)h; (void)q_lo; (void)q_hi; (void)kv_lo; (void)kv_hi; (void)args;\n";
      s += interval_body(ir::normalize_for_intervals(*rest), emit);
      s += "}\n";
    }
  }

  s += fmt::format("// tile class by interval arithmetic over: {}\n", ir::print_expr(normalized));
  s += "// 0 = empty (skip), 1 = partial (mask per element), 2 = full (no mask)\n";
  s += "__device__ __forceinline__ int aj_tile_class(int b, int h, int q_lo, int q_hi, int kv_lo, int kv_hi,\n"
       "                                             const AttnjitFwdArgs& args) {\n";
  s += interval_body(normalized, emit);
  s += "}\n\n";
  emit_row_hooks(variant, slots, out);
  return out;
}

EmittedGradHook emit_score_mod_grad_hook(const Variant& variant, const ArgumentSlots& slots) {
  const ir::ScoreModDerivatives derivatives = ir::differentiate_score_mod(variant.score_mod().node());
  // Roots: d/d score, then per read its derivative and its index expressions.
  std::vector<ir::NamedRoot> roots = {{"d_score", derivatives.d_score, Type::Float}};
  for (std::size_t r = 0; r < derivatives.tensor_reads.size(); ++r) {
    const auto& read = derivatives.tensor_reads[r];
    if (read.row_constant) continue;  // no add: its exact share is zero
    roots.push_back({fmt::format("d_read{}", r), read.derivative, Type::Float});
    for (std::size_t i = 0; i < read.read->args.size(); ++i)
      roots.push_back({fmt::format("read{}_index{}", r, i), read.read->args[i], Type::Int});
  }
  const ir::LoweredExprs lowered = ir::lower(roots);
  std::vector<NodeRef> lowered_roots;
  for (const auto& r : lowered.roots) lowered_roots.push_back(r.root);

  EmittedGradHook out;
  ScalarEmitter emit(slots);
  std::string& s = out.source;
  s += "// ---- gradient hook (compiler/passes/differentiate.cpp) ----\n";
  s += fmt::format("// d score_mod / d score = {}\n", ir::print_expr(lowered_roots[0]));
  struct GradAdd {
    std::size_t slot, derivative;
    std::vector<std::size_t> index;
    std::string tensor;
  };
  std::vector<GradAdd> adds;
  std::size_t at = 1;
  for (const auto& read : derivatives.tensor_reads) {
    if (std::find(out.grad_tensors.begin(), out.grad_tensors.end(), read.read->name) == out.grad_tensors.end())
      out.grad_tensors.push_back(read.read->name);
    if (read.row_constant) {
      s += fmt::format("// d {}: constant along each query row, so its share is exactly 0 (softmax shift invariance)\n",
                       ir::print_expr(read.read));
      continue;
    }
    s += fmt::format("// d score_mod / d {} = {}\n", ir::print_expr(read.read), ir::print_expr(lowered_roots[at]));
    GradAdd add{tensor_slot(slots, read.read->name), at++, {}, read.read->name};
    for (std::size_t i = 0; i < read.read->args.size(); ++i) add.index.push_back(at++);
    adds.push_back(add);
  }
  s += fmt::format("#define AJ_HAS_TENSOR_GRADS {}\n", out.grad_tensors.empty() ? 0 : 1);
  s += "// Returns ds * d score_mod / d score; adds ds * d score_mod / d T[i] to T's gradient for each read.\n";
  s += "__device__ __forceinline__ float aj_score_mod_grad(float score, float ds, int b, int h, int q, int kv,\n"
       "                                                   const AttnjitBwdArgs& bargs) {\n";
  s += "  const AttnjitFwdArgs& args = bargs.fwd;\n";
  s += "  (void)score; (void)b; (void)h; (void)q; (void)kv; (void)args;\n";
  s += emit.leaf_declarations(lowered_roots, false);
  // Temporaries for nodes the roots share, then the statements.
  emit.temporaries.clear();
  int next = 0;
  std::set<int> root_positions(lowered.program.roots.begin(), lowered.program.roots.end());
  for (int i : lowered.program.shared()) {
    if (root_positions.count(i)) continue;
    const NodeRef& n = lowered.program.instructions[static_cast<std::size_t>(i)].node;
    const std::string name = fmt::format("aj_t{}", next++);
    s += fmt::format("  const {} {} = {};  // {}\n", c_type(n->type), name, emit.expr(n), ir::print_expr(n));
    emit.temporaries[n.get()] = name;
  }
  std::vector<std::string> values;
  for (const auto& root : lowered_roots) values.push_back(emit.expr(root));
  for (const auto& add : adds) {
    std::string index;
    for (std::size_t i : add.index) index += ", " + values[i];
    s += fmt::format("  aj_grad_add(bargs, {}, aj_grad_offset{}(args.tensors[{}]{}), ds * {});  // d {}\n", add.slot,
                     add.index.size(), add.slot, index, values[add.derivative], add.tensor);
  }
  s += fmt::format("  return ds * {};\n}}\n\n", values[0]);
  return out;
}

}  // namespace attnjit
