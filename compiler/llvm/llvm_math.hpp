// Transcendental functions for the CPU hooks, emitted inline as LLVM IR (compiler/llvm).
//
// Why not the llvm.exp / llvm.log intrinsics: on x86 they lower to scalar calls into libm
// (expf, logf, ...) one lane at a time, which stops a score tile from vectorizing, and a
// vector math library (libmvec, SVML) would have to be found and loaded into the JIT at run
// time. These are written with plain IR (range reduction by integer bit tricks, polynomials,
// selects for the special values) and no branches, so the same code serves a scalar `float`
// and any `<N x float>`, and LLVM keeps it in vector registers.
//
// Accuracy (tests/compiler/cpu_hooks_test.cpp, against fp64 rounded once, on 4000 inputs of
// both signs log-uniform in [2^-30, 2^8] and the edge values): at most 1 ulp for each, judged
// absolutely (2^-24) where the result is near 0; NaN, infinities, zeros, subnormal inputs and
// results, overflow and underflow as in libm.
#pragma once

namespace llvm {
class IRBuilderBase;
class Value;
}  // namespace llvm

namespace attnjit::cpu_llvm {

// Each takes and returns float or <N x float>.
llvm::Value* emit_exp(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_exp2(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_log(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_log2(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_tanh(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_sigmoid(llvm::IRBuilderBase& b, llvm::Value* x);  // 1 / (1 + exp(-x))

}  // namespace attnjit::cpu_llvm
