// LLVM IR for the CPU hooks: a variant's score_mod and mask_mod, lowered by the compiler
// driver (compiler/pipeline.hpp) into one straight-line program, become the function
// aj_score_tile with the CpuScoreTileFn ABI (compiler/llvm/cpu_hooks.hpp), built with
// IRBuilder straight from the IR (no C++ text, no clang).
//
// The tile is walked row by row and, within a row, `lanes` keys at a time as explicit
// <lanes x float> vectors, so vectorization does not hang on LLVM's cost model (the body is
// emitted once: the last, partial step runs it on a scratch vector between a masked load and
// a masked store). Each instruction of the program is placed at the outermost
// level its operands allow: per tile (parameters, b, h, lengths), per row (what depends on q
// but not on kv or the score: a document id doc[b, q], a slope times q) as scalars, or per
// key as vectors; captured tensor reads become gathers with indices clamped into the extent.
// Semantics are compiler/eval.hpp's in fp32: ints wrap to 32 bits, `/` and `%` are floor
// division and modulo with x / 0 = x % 0 = 0, to_int truncates and saturates (NaN is 0).
#pragma once

#include <memory>

#include "dsl/variant.hpp"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace attnjit::cpu_llvm {

// The one function the module defines.
inline constexpr const char* kScoreTileSymbol = "aj_score_tile";

struct ScoreTileModule {
  std::unique_ptr<llvm::Module> module;
  bool has_score_mod = false;  // score_mod is not the identity
  bool has_mask = false;       // mask_mod is not the constant true
};

// `lanes`: keys per vector step, 1 (scalar code) or a power of two up to 64. The module has
// no target triple or data layout yet (compiler/llvm/llvm_jit.cpp sets them).
ScoreTileModule build_score_tile_module(llvm::LLVMContext& context, const Variant& variant, int lanes);

}  // namespace attnjit::cpu_llvm
