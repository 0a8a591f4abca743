// LLVM IR for the CPU hooks (see llvm_codegen.hpp).
#include "compiler/llvm/llvm_codegen.hpp"

#include <fmt/format.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/Metadata.h>
#include <llvm/IR/Module.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <unordered_map>
#include <vector>

#include "compiler/codegen/hook_emitter.hpp"
#include "compiler/error.hpp"
#include "compiler/llvm/cpu_hooks.hpp"
#include "compiler/llvm/llvm_math.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/printer.hpp"

namespace attnjit::cpu_llvm {
namespace {

using ir::Op;
using ir::Type;

// Where an instruction is computed: once per call, once per row (scalars), or per key (vectors).
enum class Level : std::uint8_t { Tile, Row, Key };

// The values computed at one level of the loop nest; lookups fall back to the enclosing levels.
struct Scope {
  Scope(const Scope* enclosing, Level at) : parent(enclosing), level(at) {}
  const Scope* parent;
  Level level;
  std::unordered_map<int, llvm::Value*> values;
  mutable std::unordered_map<int, llvm::Value*> splats;  // outer scalars broadcast to vectors
  // Leaves of this level: q (Row); kv and the score (Key).
  llvm::Value* q = nullptr;
  llvm::Value* kv = nullptr;
  llvm::Value* score = nullptr;
};

// A captured tensor's fields, loaded once per call.
struct TensorFields {
  llvm::Value* data = nullptr;
  llvm::Value* stride[4] = {};
  llvm::Value* max_index[4] = {};  // i32: min(size - 1, INT32_MAX)
};

class TileEmitter {
 public:
  TileEmitter(llvm::Module& module, const ir::Program& program, const ArgumentSlots& slots, int lanes)
      : ctx_(module.getContext()), module_(module), program_(program), slots_(slots), lanes_(lanes), b_(ctx_) {
    levels_.resize(program.instructions.size());
    for (std::size_t i = 0; i < program.instructions.size(); ++i) {
      const ir::Instruction& ins = program.instructions[i];
      Level level = Level::Tile;
      if (ins.node->op == Op::Score || (ins.node->op == Op::Index && ins.node->name == "kv")) level = Level::Key;
      if (ins.node->op == Op::Index && ins.node->name == "q") level = Level::Row;
      for (int a : ins.args) level = std::max(level, levels_[static_cast<std::size_t>(a)]);
      levels_[i] = level;
    }
    score_root_ = program.roots.at(0);
    mask_root_ = program.roots.at(1);
    score_needed_ = reachable(score_root_);
    mask_needed_ = reachable(mask_root_);
    all_needed_.resize(score_needed_.size());
    for (std::size_t i = 0; i < all_needed_.size(); ++i) all_needed_[i] = score_needed_[i] || mask_needed_[i];
  }

  void emit(bool has_score_mod, bool has_mask);

 private:
  std::vector<bool> reachable(int root) const {
    std::vector<bool> seen(program_.instructions.size(), false);
    seen[static_cast<std::size_t>(root)] = true;
    for (std::size_t i = program_.instructions.size(); i-- > 0;)
      if (seen[i])
        for (int a : program_.instructions[i].args) seen[static_cast<std::size_t>(a)] = true;
    return seen;
  }

  const ir::Node& node(int i) const { return *program_.instructions[static_cast<std::size_t>(i)].node; }

  // ---- types and constants ----
  bool vector(const Scope& s) const { return s.level == Level::Key && lanes_ > 1; }
  llvm::Type* scalar_type(Type t) const {
    return t == Type::Float ? b_.getFloatTy() : (t == Type::Int ? b_.getInt32Ty() : b_.getInt1Ty());
  }
  llvm::Type* widen(llvm::Type* t, const Scope& s) const {
    return vector(s) ? llvm::FixedVectorType::get(t, static_cast<unsigned>(lanes_)) : t;
  }
  llvm::Value* splat_if(llvm::Value* v, const Scope& s) {
    return vector(s) && !v->getType()->isVectorTy() ? b_.CreateVectorSplat(static_cast<unsigned>(lanes_), v) : v;
  }
  llvm::Value* iconst(llvm::Type* t, std::int64_t v) const { return llvm::ConstantInt::get(t, v, true); }
  llvm::Value* iota() const {
    std::vector<llvm::Constant*> lanes;
    for (int i = 0; i < lanes_; ++i) lanes.push_back(b_.getInt32(static_cast<std::uint32_t>(i)));
    return llvm::ConstantVector::get(lanes);
  }

  // ---- loads from CpuHookArgs ----
  llvm::Value* field_address(std::size_t offset) {
    return b_.CreateConstInBoundsGEP1_64(b_.getInt8Ty(), args_, offset);
  }
  llvm::Value* load_i32(std::size_t offset, const char* name) {
    return b_.CreateAlignedLoad(b_.getInt32Ty(), field_address(offset), llvm::Align(4), name);
  }

  // ---- values ----
  llvm::Value* lookup(const Scope& s, int i) {
    for (const Scope* at = &s; at; at = at->parent) {
      auto found = at->values.find(i);
      if (found == at->values.end()) continue;
      if (at == &s || !vector(s) || found->second->getType()->isVectorTy()) return found->second;
      auto [splat, inserted] = s.splats.try_emplace(i, nullptr);
      if (inserted) splat->second = b_.CreateVectorSplat(static_cast<unsigned>(lanes_), found->second);
      return splat->second;
    }
    throw InternalError(fmt::format("CPU codegen: '{}' is used before it is computed",
                                    ir::print_expr(program_.instructions[static_cast<std::size_t>(i)].node)));
  }
  bool computed(const Scope& s, int i) const {
    for (const Scope* at = &s; at; at = at->parent)
      if (at->values.count(i)) return true;
    return false;
  }
  // Emits, in program order, every instruction of `s`'s level that `needed` marks and no
  // enclosing scope has computed.
  void materialize(Scope& s, const std::vector<bool>& needed) {
    for (std::size_t i = 0; i < program_.instructions.size(); ++i) {
      const int at = static_cast<int>(i);
      if (needed[i] && levels_[i] == s.level && !computed(s, at)) s.values[at] = instruction(s, at);
    }
  }
  llvm::Value* instruction(Scope& s, int i);
  llvm::Value* leaf(Scope& s, const ir::Node& n);
  llvm::Value* tensor_read(Scope& s, const ir::Node& n, const std::vector<llvm::Value*>& index);
  llvm::Value* floor_div_mod(const Scope& s, bool mod, llvm::Value* a, llvm::Value* d);

  // ---- loops ----
  void emit_rows(Scope& tile, bool masked, llvm::BasicBlock* exit);
  void emit_keys(Scope& row, llvm::Value* row_ptr, bool masked);
  llvm::Value* key_step(Scope& row, llvm::Value* c, llvm::Value* x, bool masked);

  llvm::LLVMContext& ctx_;
  llvm::Module& module_;
  const ir::Program& program_;
  const ArgumentSlots& slots_;
  const int lanes_;
  mutable llvm::IRBuilder<> b_;
  std::vector<Level> levels_;
  int score_root_ = 0, mask_root_ = 0;
  std::vector<bool> score_needed_, mask_needed_, all_needed_;
  bool has_score_mod_ = false;

  llvm::Function* fn_ = nullptr;
  llvm::Value* scratch_ = nullptr;  // <lanes x float> for the partial last step of a row
  llvm::Value *s_ = nullptr, *ld_ = nullptr, *rows_ = nullptr, *cols_ = nullptr, *b_index_ = nullptr,
              *h_index_ = nullptr, *q0_ = nullptr, *kv0_ = nullptr, *args_ = nullptr, *apply_mask_ = nullptr;
  std::unordered_map<std::string, TensorFields> tensors_;
};

llvm::Value* TileEmitter::leaf(Scope& s, const ir::Node& n) {
  switch (n.op) {
    case Op::ConstBool: return b_.getInt1(n.int_value != 0);
    case Op::ConstInt: return b_.getInt32(static_cast<std::uint32_t>(ir::wrap_int32(n.int_value)));
    case Op::ConstFloat: return llvm::ConstantFP::get(b_.getFloatTy(), static_cast<float>(n.float_value));
    case Op::Score: return s.score;
    case Op::Index:
      if (n.name == "b") return b_index_;
      if (n.name == "h") return h_index_;
      if (n.name == "q") return s.q;
      if (n.name == "kv") return s.kv;
      if (n.name == "q_len") return load_i32(offsetof(CpuHookArgs, seq_q), "q_len");
      if (n.name == "kv_len") return load_i32(offsetof(CpuHookArgs, seq_k), "kv_len");
      if (n.name == "num_heads") return load_i32(offsetof(CpuHookArgs, heads_q), "num_heads");
      break;
    case Op::Param: {
      const auto& list = n.type == Type::Int ? slots_.int_params : slots_.float_params;
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (list[i].name != n.name) continue;
        if (n.type == Type::Int) return load_i32(offsetof(CpuHookArgs, int_params) + 4 * i, n.name.c_str());
        return b_.CreateAlignedLoad(b_.getFloatTy(), field_address(offsetof(CpuHookArgs, float_params) + 4 * i),
                                    llvm::Align(4), n.name);
      }
      throw InternalError(fmt::format("CPU codegen: parameter '{}' has no argument slot", n.name));
    }
    default: break;
  }
  throw InternalError(fmt::format("CPU codegen: no leaf rule for '{}' ({})", ir::op_name(n.op), n.name));
}

// f16 bits (i32, zero-extended) to float: normal, subnormal (exact through an int-to-float
// conversion), infinity and NaN, with the sign put back last.
llvm::Value* half_to_float(llvm::IRBuilderBase& b, llvm::Value* h, llvm::Type* float_type) {
  llvm::Type* it = h->getType();
  const auto c = [&](std::int64_t v) { return llvm::ConstantInt::get(it, v); };
  llvm::Value* sign = b.CreateShl(b.CreateAnd(h, c(0x8000)), c(16));
  llvm::Value* e = b.CreateAnd(b.CreateLShr(h, c(10)), c(0x1f));
  llvm::Value* m = b.CreateAnd(h, c(0x3ff));
  llvm::Value* normal = b.CreateOr(b.CreateShl(b.CreateAdd(e, c(112)), c(23)), b.CreateShl(m, c(13)));
  llvm::Value* special = b.CreateOr(c(0x7f800000), b.CreateShl(m, c(13)));
  llvm::Value* subnormal =
      b.CreateBitCast(b.CreateFMul(b.CreateSIToFP(m, float_type), llvm::ConstantFP::get(float_type, 0x1p-24)), it);
  llvm::Value* bits = b.CreateSelect(b.CreateICmpEQ(e, c(31)), special, normal);
  bits = b.CreateSelect(b.CreateICmpEQ(e, c(0)), subnormal, bits);
  return b.CreateBitCast(b.CreateOr(bits, sign), float_type);
}

llvm::Value* TileEmitter::tensor_read(Scope& s, const ir::Node& n, const std::vector<llvm::Value*>& index) {
  const TensorFields& t = tensors_.at(n.name);
  llvm::Value* offset = nullptr;
  for (std::size_t d = 0; d < index.size(); ++d) {
    llvm::Value* i = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smin, index[d], splat_if(t.max_index[d], s));
    i = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smax, i, llvm::Constant::getNullValue(i->getType()));
    llvm::Value* term = b_.CreateMul(b_.CreateSExt(i, widen(b_.getInt64Ty(), s)), splat_if(t.stride[d], s));
    offset = offset ? b_.CreateAdd(offset, term) : term;
  }
  llvm::Type* element = nullptr;
  switch (n.tensor_dtype) {
    case ir::TensorDType::F32: element = b_.getFloatTy(); break;
    case ir::TensorDType::F16:
    case ir::TensorDType::BF16: element = b_.getInt16Ty(); break;
    case ir::TensorDType::I32: element = b_.getInt32Ty(); break;
    case ir::TensorDType::I64: element = b_.getInt64Ty(); break;
    case ir::TensorDType::U8: element = b_.getInt8Ty(); break;
  }
  llvm::Value* address = b_.CreateGEP(element, t.data, offset, n.name + ".at");
  const llvm::Align align(element->getPrimitiveSizeInBits() / 8);
  llvm::Value* raw = vector(s) ? static_cast<llvm::Value*>(b_.CreateMaskedGather(widen(element, s), address, align))
                               : b_.CreateAlignedLoad(element, address, align);
  raw->setName(n.name);
  llvm::Type* i32 = widen(b_.getInt32Ty(), s);
  switch (n.tensor_dtype) {
    case ir::TensorDType::F32: return raw;
    case ir::TensorDType::F16: return half_to_float(b_, b_.CreateZExt(raw, i32), widen(b_.getFloatTy(), s));
    case ir::TensorDType::BF16:
      return b_.CreateBitCast(b_.CreateShl(b_.CreateZExt(raw, i32), iconst(i32, 16)), widen(b_.getFloatTy(), s));
    case ir::TensorDType::I32: return raw;
    case ir::TensorDType::I64: return b_.CreateTrunc(raw, i32);
    case ir::TensorDType::U8: return b_.CreateICmpNE(raw, llvm::Constant::getNullValue(raw->getType()));
  }
  return raw;
}

// Floor division or modulo with x / 0 = x % 0 = 0 and x / -1 = -x wrapped (compiler/eval).
// Per-key vectors divided by a non-constant go through double (exact for 32-bit operands:
// the quotient's rounding error is below 2^-22 / |d|, less than its distance to the next
// integer), since x86 has no vector integer division.
llvm::Value* TileEmitter::floor_div_mod(const Scope& s, bool mod, llvm::Value* a, llvm::Value* d) {
  llvm::Type* it = a->getType();
  llvm::Value* zero = llvm::Constant::getNullValue(it);
  llvm::Value* by_zero = b_.CreateICmpEQ(d, zero);
  llvm::Value* by_minus_one = b_.CreateICmpEQ(d, iconst(it, -1));
  llvm::Value* special = b_.CreateOr(by_zero, by_minus_one);
  llvm::Value* safe = b_.CreateSelect(special, iconst(it, 1), d);
  llvm::Value* q = nullptr;
  llvm::Value* r = nullptr;
  if (vector(s) && !llvm::isa<llvm::Constant>(d)) {
    llvm::Type* dt = widen(b_.getDoubleTy(), s);
    llvm::Value* qd = b_.CreateFDiv(b_.CreateSIToFP(a, dt), b_.CreateSIToFP(safe, dt));
    q = b_.CreateFPToSI(b_.CreateUnaryIntrinsic(llvm::Intrinsic::floor, qd), it);
    r = b_.CreateSub(a, b_.CreateMul(safe, q));
  } else {
    q = b_.CreateSDiv(a, safe);
    r = b_.CreateSRem(a, safe);
    llvm::Value* adjust = b_.CreateAnd(b_.CreateICmpNE(r, zero), b_.CreateICmpSLT(b_.CreateXor(r, safe), zero));
    q = b_.CreateSub(q, b_.CreateZExt(adjust, it));
    r = b_.CreateAdd(r, b_.CreateSelect(adjust, safe, zero));
  }
  if (mod) return b_.CreateSelect(special, zero, r);
  return b_.CreateSelect(by_zero, zero, b_.CreateSelect(by_minus_one, b_.CreateNeg(a), q));
}

llvm::Value* TileEmitter::instruction(Scope& s, int i) {
  const ir::Instruction& ins = program_.instructions[static_cast<std::size_t>(i)];
  const ir::Node& n = *ins.node;
  std::vector<llvm::Value*> a;
  for (int arg : ins.args) a.push_back(lookup(s, arg));
  if (n.op == Op::TensorRead) return tensor_read(s, n, a);
  if (ir::is_leaf(n.op)) return leaf(s, n);
  const Type t = n.args[0]->type;
  const bool is_int = t == Type::Int, is_float = t == Type::Float;
  llvm::Value* v = nullptr;
  switch (n.op) {
    case Op::Neg: v = is_int ? b_.CreateNeg(a[0]) : b_.CreateFNeg(a[0]); break;
    case Op::Not: v = b_.CreateNot(a[0]); break;
    case Op::Abs:
      v = is_int ? b_.CreateBinaryIntrinsic(llvm::Intrinsic::abs, a[0], b_.getFalse())
                 : b_.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, a[0]);
      break;
    case Op::Exp: v = emit_exp(b_, a[0]); break;
    case Op::Exp2: v = emit_exp2(b_, a[0]); break;
    case Op::Log: v = emit_log(b_, a[0]); break;
    case Op::Log2: v = emit_log2(b_, a[0]); break;
    case Op::Tanh: v = emit_tanh(b_, a[0]); break;
    case Op::Sigmoid: v = emit_sigmoid(b_, a[0]); break;
    case Op::Sqrt: v = b_.CreateUnaryIntrinsic(llvm::Intrinsic::sqrt, a[0]); break;
    case Op::Floor: v = b_.CreateUnaryIntrinsic(llvm::Intrinsic::floor, a[0]); break;
    case Op::ToFloat: {
      llvm::Type* ft = widen(b_.getFloatTy(), s);
      v = is_int ? b_.CreateSIToFP(a[0], ft) : (is_float ? a[0] : b_.CreateUIToFP(a[0], ft));
      break;
    }
    case Op::ToInt: {
      llvm::Type* i32 = widen(b_.getInt32Ty(), s);
      if (is_float)
        v = b_.CreateIntrinsic(llvm::Intrinsic::fptosi_sat, {i32, a[0]->getType()}, {a[0]});
      else
        v = is_int ? a[0] : b_.CreateZExt(a[0], i32);
      break;
    }
    case Op::Add: v = is_int ? b_.CreateAdd(a[0], a[1]) : b_.CreateFAdd(a[0], a[1]); break;
    case Op::Sub: v = is_int ? b_.CreateSub(a[0], a[1]) : b_.CreateFSub(a[0], a[1]); break;
    case Op::Mul: v = is_int ? b_.CreateMul(a[0], a[1]) : b_.CreateFMul(a[0], a[1]); break;
    case Op::Div:
      if (is_int) {
        v = floor_div_mod(s, false, a[0], a[1]);
      } else if (vector(s) && levels_[static_cast<std::size_t>(ins.args[1])] != Level::Key) {
        // A divisor the keys share (soft-cap's `score / softcap`): a * (1 / b), the reciprocal
        // scalar and loop-invariant (hoisted out of the key loop), a multiply per vector; within
        // 1.5 ulp of the division, which costs a vdivps per vector. (The row scope holds b unbroadcast.)
        llvm::Value* inverse =
            b_.CreateFDiv(llvm::ConstantFP::get(b_.getFloatTy(), 1.0), lookup(*s.parent, ins.args[1]));
        v = b_.CreateFMul(a[0], b_.CreateVectorSplat(static_cast<unsigned>(lanes_), inverse));
      } else {
        v = b_.CreateFDiv(a[0], a[1]);
      }
      break;
    case Op::Mod:
      if (!is_int) break;
      v = floor_div_mod(s, true, a[0], a[1]);
      break;
    case Op::Min:
      v = b_.CreateBinaryIntrinsic(is_int ? llvm::Intrinsic::smin : llvm::Intrinsic::minnum, a[0], a[1]);
      break;
    case Op::Max:
      v = b_.CreateBinaryIntrinsic(is_int ? llvm::Intrinsic::smax : llvm::Intrinsic::maxnum, a[0], a[1]);
      break;
    case Op::Lt: v = is_float ? b_.CreateFCmpOLT(a[0], a[1]) : b_.CreateICmpSLT(a[0], a[1]); break;
    case Op::Le: v = is_float ? b_.CreateFCmpOLE(a[0], a[1]) : b_.CreateICmpSLE(a[0], a[1]); break;
    case Op::Gt: v = is_float ? b_.CreateFCmpOGT(a[0], a[1]) : b_.CreateICmpSGT(a[0], a[1]); break;
    case Op::Ge: v = is_float ? b_.CreateFCmpOGE(a[0], a[1]) : b_.CreateICmpSGE(a[0], a[1]); break;
    case Op::Eq: v = is_float ? b_.CreateFCmpOEQ(a[0], a[1]) : b_.CreateICmpEQ(a[0], a[1]); break;
    case Op::Ne: v = is_float ? b_.CreateFCmpUNE(a[0], a[1]) : b_.CreateICmpNE(a[0], a[1]); break;
    case Op::And: v = b_.CreateAnd(a[0], a[1]); break;
    case Op::Or: v = b_.CreateOr(a[0], a[1]); break;
    case Op::Where: v = b_.CreateSelect(a[0], a[1], a[2]); break;
    default: break;
  }
  if (!v) throw InternalError(fmt::format("CPU codegen: no rule for '{}' on {}", ir::op_name(n.op), ir::type_name(t)));
  return v;
}

// One step of `lanes` keys (or one key) starting at column c: the new scores.
llvm::Value* TileEmitter::key_step(Scope& row, llvm::Value* c, llvm::Value* x, bool masked) {
  Scope key{&row, Level::Key};
  key.score = x;
  llvm::Value* kv = b_.CreateAdd(kv0_, c, "kv");
  key.kv = lanes_ > 1 ? b_.CreateAdd(b_.CreateVectorSplat(static_cast<unsigned>(lanes_), kv), iota(), "kv") : kv;
  materialize(key, masked ? all_needed_ : score_needed_);
  llvm::Value* out = has_score_mod_ ? lookup(key, score_root_) : x;
  if (masked) {
    llvm::Value* minus_inf = llvm::ConstantFP::getInfinity(x->getType(), true);
    out = b_.CreateSelect(lookup(key, mask_root_), out, minus_inf, "masked");
  }
  return out;
}

// The keys of one row, `lanes` at a time: first two whole steps per iteration (their
// independent chains interleave: a soft-cap's tanh is a chain of some 25 dependent
// operations), then one step per iteration, whose last, partial step runs on a scratch vector
// filled by a masked load and written back by a masked store.
void TileEmitter::emit_keys(Scope& row, llvm::Value* row_ptr, bool masked) {
  llvm::Type* f32 = b_.getFloatTy();
  llvm::Type* step_type = lanes_ > 1 ? llvm::FixedVectorType::get(f32, static_cast<unsigned>(lanes_)) : f32;
  llvm::Value* lanes = b_.getInt32(static_cast<std::uint32_t>(lanes_));
  llvm::BasicBlock* entry = b_.GetInsertBlock();
  llvm::BasicBlock* pairs_cond = llvm::BasicBlock::Create(ctx_, "keys.pairs", fn_);
  llvm::BasicBlock* pairs_body = llvm::BasicBlock::Create(ctx_, "keys.pair", fn_);
  llvm::BasicBlock* cond = llvm::BasicBlock::Create(ctx_, "keys", fn_);
  llvm::Value* two = b_.getInt32(static_cast<std::uint32_t>(2 * lanes_));
  llvm::Value* last_start = b_.CreateSub(cols_, lanes, "last_start");
  b_.CreateBr(pairs_cond);

  b_.SetInsertPoint(pairs_cond);
  llvm::PHINode* cp = b_.CreatePHI(b_.getInt32Ty(), 2, "cp");
  cp->addIncoming(b_.getInt32(0), entry);
  b_.CreateCondBr(b_.CreateICmpSLE(b_.CreateAdd(cp, two), cols_), pairs_body, cond);

  b_.SetInsertPoint(pairs_body);
  llvm::Value* c1 = b_.CreateAdd(cp, lanes, "c1");
  llvm::Value* at0 = b_.CreateInBoundsGEP(f32, row_ptr, b_.CreateSExt(cp, b_.getInt64Ty()), "at0");
  llvm::Value* at1 = b_.CreateInBoundsGEP(f32, row_ptr, b_.CreateSExt(c1, b_.getInt64Ty()), "at1");
  llvm::Value* x0 = b_.CreateAlignedLoad(step_type, at0, llvm::Align(4), "score0");
  llvm::Value* x1 = b_.CreateAlignedLoad(step_type, at1, llvm::Align(4), "score1");
  llvm::Value* y0 = key_step(row, cp, x0, masked);
  llvm::Value* y1 = key_step(row, c1, x1, masked);
  b_.CreateAlignedStore(y0, at0, llvm::Align(4));
  b_.CreateAlignedStore(y1, at1, llvm::Align(4));
  cp->addIncoming(b_.CreateAdd(cp, two, "cp.next"), b_.GetInsertBlock());
  b_.CreateBr(pairs_cond);

  llvm::BasicBlock* before = pairs_cond;  // the single steps start where the pairs stopped
  b_.SetInsertPoint(cond);
  llvm::BasicBlock* pick = llvm::BasicBlock::Create(ctx_, "keys.pick", fn_);
  llvm::BasicBlock* partial = llvm::BasicBlock::Create(ctx_, "keys.partial", fn_);
  llvm::BasicBlock* step = llvm::BasicBlock::Create(ctx_, "keys.step", fn_);
  llvm::BasicBlock* next = llvm::BasicBlock::Create(ctx_, "keys.next", fn_);
  llvm::BasicBlock* write_back = llvm::BasicBlock::Create(ctx_, "keys.write_back", fn_);
  llvm::BasicBlock* done = llvm::BasicBlock::Create(ctx_, "keys.done", fn_);

  llvm::PHINode* c = b_.CreatePHI(b_.getInt32Ty(), 2, "c");
  c->addIncoming(cp, before);
  b_.CreateCondBr(b_.CreateICmpSLT(c, cols_), pick, done);

  b_.SetInsertPoint(pick);
  llvm::Value* at = b_.CreateInBoundsGEP(f32, row_ptr, b_.CreateSExt(c, b_.getInt64Ty()), "at");
  llvm::Value* full = b_.CreateICmpSLE(c, last_start, "full");
  b_.CreateCondBr(full, step, partial);

  const auto active_lanes = [&] {
    return b_.CreateICmpSLT(iota(), b_.CreateVectorSplat(static_cast<unsigned>(lanes_), b_.CreateSub(cols_, c)),
                            "active");
  };
  // (With one lane every step is full and these blocks are dead; they stay for the phi's sake.)
  b_.SetInsertPoint(partial);
  llvm::Value* rest = lanes_ > 1
                          ? static_cast<llvm::Value*>(b_.CreateMaskedLoad(step_type, at, llvm::Align(4), active_lanes(),
                                                                          llvm::Constant::getNullValue(step_type)))
                          : b_.CreateAlignedLoad(step_type, at, llvm::Align(4));
  b_.CreateAlignedStore(rest, scratch_, llvm::Align(4));
  b_.CreateBr(step);

  b_.SetInsertPoint(step);
  llvm::PHINode* where = b_.CreatePHI(b_.getPtrTy(), 2, "step_at");
  where->addIncoming(at, pick);
  where->addIncoming(scratch_, partial);
  llvm::Value* x = b_.CreateAlignedLoad(step_type, where, llvm::Align(4), "score");
  b_.CreateAlignedStore(key_step(row, c, x, masked), where, llvm::Align(4));
  b_.CreateCondBr(full, next, write_back);

  b_.SetInsertPoint(next);
  c->addIncoming(b_.CreateAdd(c, lanes, "c.next"), next);
  b_.CreateBr(cond);

  b_.SetInsertPoint(write_back);
  llvm::Value* result = b_.CreateAlignedLoad(step_type, scratch_, llvm::Align(4));
  if (lanes_ > 1)
    b_.CreateMaskedStore(result, at, llvm::Align(4), active_lanes());
  else
    b_.CreateAlignedStore(result, at, llvm::Align(4));
  b_.CreateBr(done);
  b_.SetInsertPoint(done);
}

void TileEmitter::emit_rows(Scope& tile, bool masked, llvm::BasicBlock* exit) {
  llvm::BasicBlock* before = b_.GetInsertBlock();
  llvm::BasicBlock* cond = llvm::BasicBlock::Create(ctx_, masked ? "rows.masked" : "rows", fn_);
  llvm::BasicBlock* body = llvm::BasicBlock::Create(ctx_, masked ? "row.masked" : "row", fn_);
  b_.CreateBr(cond);
  b_.SetInsertPoint(cond);
  llvm::PHINode* r = b_.CreatePHI(b_.getInt32Ty(), 2, "r");
  r->addIncoming(b_.getInt32(0), before);
  b_.CreateCondBr(b_.CreateICmpSLT(r, rows_), body, exit);

  b_.SetInsertPoint(body);
  Scope row{&tile, Level::Row};
  row.q = b_.CreateAdd(q0_, r, "q");
  llvm::Value* row_ptr =
      b_.CreateInBoundsGEP(b_.getFloatTy(), s_, b_.CreateMul(b_.CreateSExt(r, b_.getInt64Ty()), ld_), "row");
  materialize(row, masked ? all_needed_ : score_needed_);
  emit_keys(row, row_ptr, masked);
  r->addIncoming(b_.CreateAdd(r, b_.getInt32(1), "r.next"), b_.GetInsertBlock());
  b_.CreateBr(cond);
}

void TileEmitter::emit(bool has_score_mod, bool has_mask) {
  has_score_mod_ = has_score_mod;
  llvm::Type* ptr = b_.getPtrTy();
  llvm::Type* i32 = b_.getInt32Ty();
  auto* type =
      llvm::FunctionType::get(b_.getVoidTy(), {ptr, b_.getInt64Ty(), i32, i32, i32, i32, i32, i32, ptr, i32}, false);
  fn_ = llvm::Function::Create(type, llvm::Function::ExternalLinkage, kScoreTileSymbol, module_);
  fn_->setDoesNotThrow();
  fn_->addFnAttr(llvm::Attribute::NoSync);
  fn_->addFnAttr(llvm::Attribute::WillReturn);
  // Divisions marked arcp (tanh's) become a reciprocal estimate refined by one Newton step
  // (about 2^-23 relative at worst with AVX2's 12-bit estimate) instead of a divide.
  fn_->addFnAttr("reciprocal-estimates", "divf:1,vec-divf:1");
  for (unsigned p : {0u, 8u}) {
    fn_->addParamAttr(p, llvm::Attribute::NoAlias);
    fn_->addParamAttr(p, llvm::Attribute::NoCapture);
  }
  fn_->addParamAttr(8, llvm::Attribute::ReadOnly);
  const char* names[] = {"s", "ld", "rows", "cols", "b", "h", "q0", "kv0", "args", "apply_mask"};
  llvm::Value** values[] = {&s_, &ld_, &rows_, &cols_, &b_index_, &h_index_, &q0_, &kv0_, &args_, &apply_mask_};
  for (unsigned i = 0; i < 10; ++i) {
    fn_->getArg(i)->setName(names[i]);
    *values[i] = fn_->getArg(i);
  }

  llvm::BasicBlock* entry = llvm::BasicBlock::Create(ctx_, "entry", fn_);
  llvm::BasicBlock* exit = llvm::BasicBlock::Create(ctx_, "exit", fn_);
  b_.SetInsertPoint(entry);
  scratch_ = b_.CreateAlloca(
      lanes_ > 1 ? llvm::FixedVectorType::get(b_.getFloatTy(), static_cast<unsigned>(lanes_)) : b_.getFloatTy(),
      nullptr, "rest");
  // Every captured tensor's fields, loaded once.
  for (const auto& ins : program_.instructions) {
    const ir::Node& n = *ins.node;
    if (n.op != Op::TensorRead || tensors_.count(n.name)) continue;
    std::size_t slot = slots_.tensors.size();
    for (std::size_t i = 0; i < slots_.tensors.size(); ++i)
      if (slots_.tensors[i].name == n.name) slot = i;
    if (slot == slots_.tensors.size())
      throw InternalError(fmt::format("CPU codegen: tensor '{}' has no argument slot", n.name));
    const std::size_t base = offsetof(CpuHookArgs, tensors) + slot * sizeof(CpuTensorArg);
    TensorFields t;
    t.data =
        b_.CreateAlignedLoad(ptr, field_address(base + offsetof(CpuTensorArg, data)), llvm::Align(8), n.name + ".data");
    for (std::size_t d = 0; d < static_cast<std::size_t>(n.int_value); ++d) {
      t.stride[d] = b_.CreateAlignedLoad(b_.getInt64Ty(), field_address(base + offsetof(CpuTensorArg, stride) + 8 * d),
                                         llvm::Align(8), fmt::format("{}.stride{}", n.name, d));
      llvm::Value* size =
          b_.CreateAlignedLoad(b_.getInt64Ty(), field_address(base + offsetof(CpuTensorArg, size) + 8 * d),
                               llvm::Align(8), fmt::format("{}.size{}", n.name, d));
      llvm::Value* last = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smin, b_.CreateSub(size, b_.getInt64(1)),
                                                   b_.getInt64(std::numeric_limits<std::int32_t>::max()));
      t.max_index[d] = b_.CreateTrunc(last, i32, fmt::format("{}.last{}", n.name, d));
    }
    tensors_[n.name] = t;
  }

  Scope tile{nullptr, Level::Tile};
  materialize(tile, score_needed_);
  llvm::BasicBlock* plain = llvm::BasicBlock::Create(ctx_, "plain", fn_);
  if (has_mask) {
    llvm::BasicBlock* masked = llvm::BasicBlock::Create(ctx_, "masked", fn_);
    b_.CreateCondBr(b_.CreateICmpNE(apply_mask_, b_.getInt32(0), "use_mask"), masked, plain);
    b_.SetInsertPoint(masked);
    Scope masked_tile{&tile, Level::Tile};
    materialize(masked_tile, mask_needed_);
    emit_rows(masked_tile, true, exit);
  } else {
    b_.CreateBr(plain);
  }
  b_.SetInsertPoint(plain);
  if (has_score_mod) {
    emit_rows(tile, false, exit);
  } else {
    b_.CreateBr(exit);
  }
  b_.SetInsertPoint(exit);
  b_.CreateRetVoid();
}

}  // namespace

ScoreTileModule build_score_tile_module(llvm::LLVMContext& context, const Variant& variant, int lanes) {
  if (lanes < 1 || lanes > 64 || (lanes & (lanes - 1)) != 0)
    throw InternalError(fmt::format("CPU codegen: {} lanes; expected 1 or a power of two up to 64", lanes));
  const ArgumentSlots slots = assign_slots(variant);
  const ir::LoweredExprs lowered = ir::lower(
      {{"score_mod", variant.score_mod().node(), Type::Float}, {"mask_mod", variant.mask_mod().node(), Type::Bool}});
  const ir::NodeRef& score = lowered.roots[0].root;
  const ir::NodeRef& mask = lowered.roots[1].root;

  ScoreTileModule out;
  out.has_score_mod = score->op != Op::Score;
  out.has_mask = !(mask->op == Op::ConstBool && mask->int_value == 1);
  out.module = std::make_unique<llvm::Module>("attnjit_cpu_hooks", context);
  // Provenance: the lowered hooks and the vector width, as named metadata.
  llvm::NamedMDNode* provenance = out.module->getOrInsertNamedMetadata("attnjit.hooks");
  for (const std::string& line :
       {"score_mod: " + ir::print_expr(score), "mask_mod: " + ir::print_expr(mask), fmt::format("lanes: {}", lanes)})
    provenance->addOperand(llvm::MDNode::get(context, llvm::MDString::get(context, line)));
  TileEmitter(*out.module, lowered.program, slots, lanes).emit(out.has_score_mod, out.has_mask);
  return out;
}

}  // namespace attnjit::cpu_llvm
