// The CPU hooks by interpretation (see cpu_hooks.hpp): score_mod and mask_mod lowered by the
// compiler driver into straight-line programs and evaluated a row of the tile at a time:
// what depends on neither kv nor the score once per row, the rest one instruction over the
// whole row at a time, with compiler/eval's semantics (ints wrap to 32 bits, floats in
// double, the result rounded to fp32 once). Captured tensor reads are clamped into the bound
// extent, as on the GPU.
//
// CpuScoreTileFn is a plain function pointer with no context argument (the JIT's functions
// need none: they carry the variant in their code). The interpreter's state reaches it
// through a fixed table of trampolines, one per live CpuHooks: kSlots of them at most.
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "compiler/eval.hpp"
#include "compiler/llvm/cpu_hooks.hpp"
#include "compiler/pipeline.hpp"

namespace attnjit {
namespace {

// oi[c] = x[c] OP y[c] for a comparison OP, on float or int columns; false for another op.
template <class T>
bool compare_columns(ir::Op op, const T* x, const T* y, std::int64_t* oi, int cols) {
  switch (op) {
    case ir::Op::Lt:
      for (int c = 0; c < cols; ++c) oi[c] = x[c] < y[c];
      return true;
    case ir::Op::Le:
      for (int c = 0; c < cols; ++c) oi[c] = x[c] <= y[c];
      return true;
    case ir::Op::Gt:
      for (int c = 0; c < cols; ++c) oi[c] = x[c] > y[c];
      return true;
    case ir::Op::Ge:
      for (int c = 0; c < cols; ++c) oi[c] = x[c] >= y[c];
      return true;
    case ir::Op::Eq:
      for (int c = 0; c < cols; ++c) oi[c] = x[c] == y[c];
      return true;
    case ir::Op::Ne:
      for (int c = 0; c < cols; ++c) oi[c] = x[c] != y[c];
      return true;
    default: return false;
  }
}

using ir::Op;
using ir::Value;

// What an instruction reads, decided once so that the per-element loop compares no names.
enum class Leaf : std::uint8_t { None, Const, Score, B, H, Q, Kv, QLen, KvLen, NumHeads, IntParam, FloatParam, Tensor };

struct Step {
  const ir::Node* node = nullptr;
  Leaf leaf = Leaf::None;
  int slot = 0;                // IntParam / FloatParam / Tensor: the slot in CpuHookArgs
  Value constant;              // Const
  std::vector<int> args;       // positions of the operands
  bool varying = false;        // depends on kv or the score: one value per element of a row
  bool feeds_varying = false;  // read by a varying instruction, or the root: needs a column
};

// One lowered root as a straight-line program.
struct Program {
  std::vector<Step> steps;
  int root = 0;
};

Program build_program(const ir::NodeRef& root, ir::Type type, const char* name, const ArgumentSlots& slots) {
  const ir::LoweredExprs lowered = ir::lower({{name, root, type}});
  Program out;
  out.root = lowered.program.roots.at(0);
  const auto slot_of = [](const auto& list, const std::string& n) {
    for (std::size_t i = 0; i < list.size(); ++i)
      if (list[i].name == n) return static_cast<int>(i);
    throw InternalError(fmt::format("interpreted CPU hooks: '{}' has no argument slot", n));
  };
  for (const ir::Instruction& ins : lowered.program.instructions) {
    Step s;
    s.node = ins.node.get();
    s.args = ins.args;
    const ir::Node& n = *ins.node;
    switch (n.op) {
      case Op::ConstBool:
      case Op::ConstInt:
      case Op::ConstFloat:
        s.leaf = Leaf::Const;
        s.constant = ir::eval_leaf(n, ir::EvalEnv{});
        break;
      case Op::Score: s.leaf = Leaf::Score; break;
      case Op::Index: {
        static const std::array<std::pair<const char*, Leaf>, 7> names = {{{"b", Leaf::B},
                                                                           {"h", Leaf::H},
                                                                           {"q", Leaf::Q},
                                                                           {"kv", Leaf::Kv},
                                                                           {"q_len", Leaf::QLen},
                                                                           {"kv_len", Leaf::KvLen},
                                                                           {"num_heads", Leaf::NumHeads}}};
        for (const auto& [text, leaf] : names)
          if (n.name == text) s.leaf = leaf;
        if (s.leaf == Leaf::None) throw InternalError(fmt::format("unknown index variable '{}'", n.name));
        break;
      }
      case Op::Param:
        s.leaf = n.type == ir::Type::Int ? Leaf::IntParam : Leaf::FloatParam;
        s.slot = n.type == ir::Type::Int ? slot_of(slots.int_params, n.name) : slot_of(slots.float_params, n.name);
        break;
      case Op::TensorRead:
        s.leaf = Leaf::Tensor;
        s.slot = slot_of(slots.tensors, n.name);
        break;
      default: break;
    }
    for (const int a : s.args) s.varying |= out.steps[static_cast<std::size_t>(a)].varying;
    s.varying |= s.leaf == Leaf::Kv || s.leaf == Leaf::Score;
    if (s.varying)
      for (const int a : s.args) out.steps[static_cast<std::size_t>(a)].feeds_varying = true;
    out.steps.push_back(std::move(s));
  }
  out.steps[static_cast<std::size_t>(out.root)].feeds_varying = true;
  return out;
}

// Element `offset` of a captured tensor as a double (floats) or an integer.
double load_float(const CpuTensorArg& t, std::int64_t offset) {
  switch (static_cast<ir::TensorDType>(t.dtype)) {
    case ir::TensorDType::F32: return static_cast<const float*>(t.data)[offset];
    case ir::TensorDType::F16: return static_cast<float>(static_cast<const _Float16*>(t.data)[offset]);
    case ir::TensorDType::BF16: {
      const std::uint32_t bits = static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(t.data)[offset]) << 16;
      float x;
      std::memcpy(&x, &bits, sizeof x);
      return x;
    }
    case ir::TensorDType::I32: return static_cast<const std::int32_t*>(t.data)[offset];
    case ir::TensorDType::I64: return static_cast<double>(static_cast<const std::int64_t*>(t.data)[offset]);
    case ir::TensorDType::U8: return static_cast<const std::uint8_t*>(t.data)[offset];
  }
  return 0.0;
}

std::int64_t load_int(const CpuTensorArg& t, std::int64_t offset) {
  switch (static_cast<ir::TensorDType>(t.dtype)) {
    case ir::TensorDType::I32: return static_cast<const std::int32_t*>(t.data)[offset];
    case ir::TensorDType::I64: return ir::wrap_int32(static_cast<const std::int64_t*>(t.data)[offset]);
    case ir::TensorDType::U8: return static_cast<const std::uint8_t*>(t.data)[offset];
    default: return static_cast<std::int64_t>(load_float(t, offset));  // not reached: types are checked
  }
}

// The element offset of a read, each index clamped into the extent (as on the GPU).
std::int64_t clamped_offset(const CpuTensorArg& t, const std::int64_t* index, std::size_t rank) {
  std::int64_t offset = 0;
  for (std::size_t d = 0; d < rank; ++d) {
    const std::int64_t i = index[d] < 0 ? 0 : (index[d] >= t.size[d] ? t.size[d] - 1 : index[d]);
    offset += i * t.stride[d];
  }
  return offset;
}

Value read_value(const CpuTensorArg& t, const ir::Node& read, std::int64_t offset) {
  switch (read.type) {
    case ir::Type::Float: return Value::of_float(load_float(t, offset));
    case ir::Type::Int: return Value::of_int(load_int(t, offset));
    case ir::Type::Bool: return Value::of_bool(load_int(t, offset) != 0);
  }
  return {};
}

// Where one row of a tile is: its indices and its scores.
struct RowEnv {
  std::int64_t b, h, q, kv0;
  int cols;
  const float* score;
};

// The evaluator's scratch: a scalar per instruction (those that do not vary along the row,
// computed once per row) and a column per instruction (those that vary with kv or the
// score, or feed one that does), doubles for floats, integers for ints and bools.
struct Scratch {
  std::vector<Value> scalar;
  std::vector<std::vector<double>> f;
  std::vector<std::vector<std::int64_t>> i;
};

// Evaluates `p` over one row. Instructions that depend on neither kv nor the score are
// evaluated once, with compiler/eval's apply_op; the others column by column, the operator
// chosen once per column (the common ones as plain loops, the rest through apply_op).
void eval_row(const Program& p, const RowEnv& e, const CpuHookArgs& args, Scratch& sc) {
  const std::size_t n = p.steps.size();
  const int cols = e.cols;
  sc.scalar.resize(n);
  sc.f.resize(n);
  sc.i.resize(n);
  std::array<Value, 3> operands;
  for (std::size_t k = 0; k < n; ++k) {
    const Step& s = p.steps[k];
    const bool is_float = s.node->type == ir::Type::Float;
    if (!s.varying) {
      Value& out = sc.scalar[k];
      switch (s.leaf) {
        case Leaf::Const: out = s.constant; break;
        case Leaf::B: out = Value::of_int(e.b); break;
        case Leaf::H: out = Value::of_int(e.h); break;
        case Leaf::Q: out = Value::of_int(e.q); break;
        case Leaf::QLen: out = Value::of_int(args.seq_q); break;
        case Leaf::KvLen: out = Value::of_int(args.seq_k); break;
        case Leaf::NumHeads: out = Value::of_int(args.heads_q); break;
        case Leaf::IntParam: out = Value::of_int(args.int_params[s.slot]); break;
        case Leaf::FloatParam: out = Value::of_float(args.float_params[s.slot]); break;
        case Leaf::Tensor: {
          std::array<std::int64_t, 4> idx{};
          for (std::size_t d = 0; d < s.args.size(); ++d) idx[d] = sc.scalar[static_cast<std::size_t>(s.args[d])].i;
          out = read_value(args.tensors[s.slot], *s.node,
                           clamped_offset(args.tensors[s.slot], idx.data(), s.args.size()));
          break;
        }
        case Leaf::None:
          for (std::size_t a = 0; a < s.args.size(); ++a) operands[a] = sc.scalar[static_cast<std::size_t>(s.args[a])];
          out = ir::apply_op(*s.node, std::span<const Value>(operands.data(), s.args.size()));
          break;
        default: throw InternalError("interpreted CPU hooks: kv or score in a row-uniform instruction");
      }
      if (s.feeds_varying) {  // a column of the one value, for the varying instructions that read it
        if (is_float) {
          sc.f[k].assign(static_cast<std::size_t>(cols), out.f);
        } else {
          sc.i[k].assign(static_cast<std::size_t>(cols), s.node->type == ir::Type::Bool ? out.b : out.i);
        }
      }
      continue;
    }
    if (is_float)
      sc.f[k].resize(static_cast<std::size_t>(cols));
    else
      sc.i[k].resize(static_cast<std::size_t>(cols));
    double* of = is_float ? sc.f[k].data() : nullptr;
    std::int64_t* oi = is_float ? nullptr : sc.i[k].data();
    const auto fa = [&](int a) { return sc.f[static_cast<std::size_t>(s.args[static_cast<std::size_t>(a)])].data(); };
    const auto ia = [&](int a) { return sc.i[static_cast<std::size_t>(s.args[static_cast<std::size_t>(a)])].data(); };
    if (s.leaf == Leaf::Kv) {
      for (int c = 0; c < cols; ++c) oi[c] = e.kv0 + c;
      continue;
    }
    if (s.leaf == Leaf::Score) {
      for (int c = 0; c < cols; ++c) of[c] = e.score[c];
      continue;
    }
    if (s.leaf == Leaf::Tensor) {
      const CpuTensorArg& t = args.tensors[s.slot];
      std::array<const std::int64_t*, 4> index{};
      for (std::size_t d = 0; d < s.args.size(); ++d) index[d] = ia(static_cast<int>(d));
      for (int c = 0; c < cols; ++c) {
        std::array<std::int64_t, 4> idx{};
        for (std::size_t d = 0; d < s.args.size(); ++d) idx[d] = index[d][c];
        const std::int64_t offset = clamped_offset(t, idx.data(), s.args.size());
        if (is_float)
          of[c] = load_float(t, offset);
        else
          oi[c] = s.node->type == ir::Type::Bool ? load_int(t, offset) != 0 : load_int(t, offset);
      }
      continue;
    }
    // Operators: the common ones as loops, with compiler/eval's semantics.
    const ir::Type at = s.node->args.empty() ? s.node->type : s.node->args[0]->type;
    bool done = true;
    if (at == ir::Type::Float && s.args.size() == 2) {
      const double *x = fa(0), *y = fa(1);
      switch (s.node->op) {
        case Op::Add:
          for (int c = 0; c < cols; ++c) of[c] = x[c] + y[c];
          break;
        case Op::Sub:
          for (int c = 0; c < cols; ++c) of[c] = x[c] - y[c];
          break;
        case Op::Mul:
          for (int c = 0; c < cols; ++c) of[c] = x[c] * y[c];
          break;
        case Op::Div:
          for (int c = 0; c < cols; ++c) of[c] = x[c] / y[c];
          break;
        case Op::Min:
          for (int c = 0; c < cols; ++c) of[c] = std::fmin(x[c], y[c]);
          break;
        case Op::Max:
          for (int c = 0; c < cols; ++c) of[c] = std::fmax(x[c], y[c]);
          break;
        default: done = compare_columns(s.node->op, x, y, oi, cols);
      }
    } else if (at == ir::Type::Int && s.args.size() == 2) {
      const std::int64_t *x = ia(0), *y = ia(1);
      switch (s.node->op) {
        case Op::Add:
          for (int c = 0; c < cols; ++c) oi[c] = ir::wrap_int32(x[c] + y[c]);
          break;
        case Op::Sub:
          for (int c = 0; c < cols; ++c) oi[c] = ir::wrap_int32(x[c] - y[c]);
          break;
        case Op::Mul:
          for (int c = 0; c < cols; ++c) oi[c] = ir::wrap_int32(x[c] * y[c]);
          break;
        case Op::Min:
          for (int c = 0; c < cols; ++c) oi[c] = std::min(x[c], y[c]);
          break;
        case Op::Max:
          for (int c = 0; c < cols; ++c) oi[c] = std::max(x[c], y[c]);
          break;
        default: done = compare_columns(s.node->op, x, y, oi, cols);
      }
    } else if (at == ir::Type::Bool && (s.node->op == Op::And || s.node->op == Op::Or)) {
      const std::int64_t *x = ia(0), *y = ia(1);
      if (s.node->op == Op::And)
        for (int c = 0; c < cols; ++c) oi[c] = x[c] && y[c];
      else
        for (int c = 0; c < cols; ++c) oi[c] = x[c] || y[c];
    } else if (s.node->op == Op::Where) {
      const std::int64_t* cond = ia(0);
      if (is_float) {
        const double *x = fa(1), *y = fa(2);
        for (int c = 0; c < cols; ++c) of[c] = cond[c] ? x[c] : y[c];
      } else {
        const std::int64_t *x = ia(1), *y = ia(2);
        for (int c = 0; c < cols; ++c) oi[c] = cond[c] ? x[c] : y[c];
      }
    } else if (at == ir::Type::Float && s.args.size() == 1 && is_float) {
      const double* x = fa(0);
      switch (s.node->op) {
        case Op::Neg:
          for (int c = 0; c < cols; ++c) of[c] = -x[c];
          break;
        case Op::Exp:
          for (int c = 0; c < cols; ++c) of[c] = std::exp(x[c]);
          break;
        case Op::Tanh:
          for (int c = 0; c < cols; ++c) of[c] = std::tanh(x[c]);
          break;
        case Op::Sigmoid:
          for (int c = 0; c < cols; ++c) of[c] = 1.0 / (1.0 + std::exp(-x[c]));
          break;
        default: done = false;
      }
    } else if (s.node->op == Op::ToFloat && at == ir::Type::Int) {
      const std::int64_t* x = ia(0);
      for (int c = 0; c < cols; ++c) of[c] = static_cast<double>(x[c]);
    } else {
      done = false;
    }
    if (done) continue;
    // Anything else: apply_op per element.
    for (int c = 0; c < cols; ++c) {
      for (std::size_t a = 0; a < s.args.size(); ++a) {
        const auto src = static_cast<std::size_t>(s.args[a]);
        const ir::Type t = s.node->args[a]->type;
        operands[a] = t == ir::Type::Float
                          ? Value::of_float(sc.f[src][static_cast<std::size_t>(c)])
                          : (t == ir::Type::Int ? Value::of_int(sc.i[src][static_cast<std::size_t>(c)])
                                                : Value::of_bool(sc.i[src][static_cast<std::size_t>(c)] != 0));
      }
      const Value v = ir::apply_op(*s.node, std::span<const Value>(operands.data(), s.args.size()));
      if (is_float)
        of[c] = v.f;
      else
        oi[c] = s.node->type == ir::Type::Bool ? v.b : v.i;
    }
  }
}

struct InterpretedState {
  Program score_mod, mask_mod;
  bool has_score_mod = false, has_mask = false;

  void score_tile(float* s, std::int64_t ld, int rows, int cols, int b, int h, int q0, int kv0, const CpuHookArgs& args,
                  int apply_mask) const {
    thread_local Scratch mask_scratch, score_scratch;
    const bool masked = apply_mask != 0 && has_mask;
    for (int r = 0; r < rows; ++r) {
      float* row = s + r * ld;
      const RowEnv e{b, h, q0 + r, kv0, cols, row};
      const std::int64_t* admitted = nullptr;
      if (masked) {
        eval_row(mask_mod, e, args, mask_scratch);
        admitted = mask_root_column(mask_scratch);
      }
      const double* modified = nullptr;
      if (has_score_mod) {
        eval_row(score_mod, e, args, score_scratch);
        modified = score_root_column(score_scratch);
      }
      for (int c = 0; c < cols; ++c) {
        if (admitted && !admitted[c])
          row[c] = -std::numeric_limits<float>::infinity();
        else if (modified)
          row[c] = static_cast<float>(modified[c]);
      }
    }
  }

  // The root's values as a column (eval_row gives the root one even when it is row-uniform).
  const std::int64_t* mask_root_column(const Scratch& sc) const {
    return sc.i[static_cast<std::size_t>(mask_mod.root)].data();
  }
  const double* score_root_column(const Scratch& sc) const {
    return sc.f[static_cast<std::size_t>(score_mod.root)].data();
  }
};

// The trampoline table: slot i's function calls the state registered in slot i.
constexpr std::size_t kSlots = 256;
std::array<std::atomic<const InterpretedState*>, kSlots> g_states{};
std::mutex g_states_mutex;

template <std::size_t I>
void trampoline(float* s, std::int64_t ld, int rows, int cols, int b, int h, int q0, int kv0, const CpuHookArgs* args,
                int apply_mask) {
  g_states[I].load(std::memory_order_acquire)->score_tile(s, ld, rows, cols, b, h, q0, kv0, *args, apply_mask);
}

template <std::size_t... I>
constexpr std::array<CpuScoreTileFn, kSlots> make_trampolines(std::index_sequence<I...>) {
  return {&trampoline<I>...};
}
constexpr std::array<CpuScoreTileFn, kSlots> g_trampolines = make_trampolines(std::make_index_sequence<kSlots>{});

}  // namespace

CpuHooks interpreted_cpu_hooks(const Variant& variant) {
  const auto start = std::chrono::steady_clock::now();
  const ArgumentSlots slots = assign_slots(variant);
  auto state = std::make_unique<InterpretedState>();
  state->score_mod = build_program(variant.score_mod().node(), ir::Type::Float, "score_mod", slots);
  state->mask_mod = build_program(variant.mask_mod().node(), ir::Type::Bool, "mask_mod", slots);
  const ir::Node& score = *state->score_mod.steps[static_cast<std::size_t>(state->score_mod.root)].node;
  const ir::Node& mask = *state->mask_mod.steps[static_cast<std::size_t>(state->mask_mod.root)].node;
  state->has_score_mod = score.op != Op::Score;
  state->has_mask = !(mask.op == Op::ConstBool && mask.int_value == 1);

  CpuHooks hooks;
  hooks.has_score_mod = state->has_score_mod;
  hooks.has_mask = state->has_mask;
  std::size_t slot = kSlots;
  {
    std::lock_guard<std::mutex> lock(g_states_mutex);
    for (std::size_t i = 0; i < kSlots && slot == kSlots; ++i)
      if (!g_states[i].load()) slot = i;
    if (slot == kSlots)
      throw RuntimeFailure(
          fmt::format("{} interpreted CPU hook sets are alive, the most this process can hold; release some "
                      "CpuHooks (their `owner`) before interpreting variant '{}'",
                      kSlots, variant.name()));
    g_states[slot] = state.get();
  }
  hooks.score_tile = g_trampolines[slot];
  hooks.owner = std::shared_ptr<void>(state.release(), [slot](void* p) {
    {
      std::lock_guard<std::mutex> lock(g_states_mutex);
      g_states[slot] = nullptr;
    }
    delete static_cast<InterpretedState*>(p);
  });
  hooks.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return hooks;
}

}  // namespace attnjit
