// Branch-free exp, exp2, log, log2, tanh and sigmoid in LLVM IR (see llvm_math.hpp).
//
// exp and exp2 reduce to 2^k * p(r) with |r| <= ln2 / 2 (Cody-Waite for exp), p a degree-7
// Taylor polynomial (truncation below 1e-8 relative), and 2^k applied as two exponent-field
// multiplies so that results from the largest float down to the subnormals round once. log
// splits x = 2^e * m with m in [sqrt(1/2), sqrt(2)) (subnormals scaled by 2^23 first) and sums
// the odd series of 2 atanh(s), s = (m - 1) / (m + 1). tanh is expm1(2|x|) / (expm1(2|x|) + 2)
// with expm1 = 2^k * expm1(r) + (2^k - 1), accurate for small |x| too; soft-capping runs it on
// every score, so its expm1(r) is a fitted degree-5 polynomial rather than exp's Taylor one.
#include "compiler/llvm/llvm_math.hpp"

#include <llvm/IR/Constants.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>

#include <cmath>
#include <vector>

namespace attnjit::cpu_llvm {
namespace {

constexpr double kLn2 = 0.69314718055994530942;
constexpr double kLog2e = 1.44269504088896340736;
// ln 2 = kLn2Hi + kLn2Lo with kLn2Hi holding 9 significant bits, so k * kLn2Hi is exact for |k| < 2^15.
constexpr double kLn2Hi = 0.693359375;
constexpr double kLn2Lo = -2.12194440054690582e-4;

llvm::Value* fc(llvm::Value* like, double v) { return llvm::ConstantFP::get(like->getType(), v); }

llvm::Type* int_type_of(llvm::Value* x) {
  llvm::Type* i32 = llvm::Type::getInt32Ty(x->getContext());
  if (auto* vt = llvm::dyn_cast<llvm::VectorType>(x->getType()))
    return llvm::VectorType::get(i32, vt->getElementCount());
  return i32;
}

llvm::Value* ic(llvm::Type* int_type, std::int64_t v) { return llvm::ConstantInt::get(int_type, v, true); }

llvm::Value* min_f(llvm::IRBuilderBase& b, llvm::Value* x, double v) {
  return b.CreateBinaryIntrinsic(llvm::Intrinsic::minnum, x, fc(x, v));
}
llvm::Value* max_f(llvm::IRBuilderBase& b, llvm::Value* x, double v) {
  return b.CreateBinaryIntrinsic(llvm::Intrinsic::maxnum, x, fc(x, v));
}
llvm::Value* fma(llvm::IRBuilderBase& b, llvm::Value* x, llvm::Value* y, llvm::Value* z) {
  return b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {x->getType()}, {x, y, z});
}

// c[0] + x * (c[1] + x * (c[2] + ...)), coefficients rounded to float.
llvm::Value* horner(llvm::IRBuilderBase& b, llvm::Value* x, const std::vector<double>& c) {
  llvm::Value* p = fc(x, static_cast<float>(c.back()));
  for (std::size_t i = c.size() - 1; i-- > 0;) p = fma(b, p, x, fc(x, static_cast<float>(c[i])));
  return p;
}

// 2^k as a float, for integer k in [-126, 127].
llvm::Value* pow2(llvm::IRBuilderBase& b, llvm::Value* k, llvm::Type* float_type) {
  llvm::Value* bits = b.CreateShl(b.CreateAdd(k, ic(k->getType(), 127)), ic(k->getType(), 23));
  return b.CreateBitCast(bits, float_type);
}

// p * 2^k for integer k in [-152, 128], rounded once: two exponent-field multiplies.
llvm::Value* scale_by_pow2(llvm::IRBuilderBase& b, llvm::Value* p, llvm::Value* k) {
  llvm::Value* k1 = b.CreateAShr(k, ic(k->getType(), 1));
  llvm::Value* k2 = b.CreateSub(k, k1);
  return b.CreateFMul(b.CreateFMul(p, pow2(b, k1, p->getType())), pow2(b, k2, p->getType()));
}

std::vector<double> taylor_exp(int degree, double scale) {  // (scale^i / i!) for i = 0..degree
  std::vector<double> c;
  double term = 1.0;
  for (int i = 0; i <= degree; ++i) {
    c.push_back(term);
    term *= scale / (i + 1);
  }
  return c;
}

llvm::Value* keep_nan(llvm::IRBuilderBase& b, llvm::Value* x, llvm::Value* result) {
  return b.CreateSelect(b.CreateFCmpUNO(x, x), x, result);
}

// (k, r) with x = k ln2 + r, |r| <= ln2 / 2, k integral (as float).
std::pair<llvm::Value*, llvm::Value*> reduce_ln2(llvm::IRBuilderBase& b, llvm::Value* x) {
  llvm::Value* k = b.CreateUnaryIntrinsic(llvm::Intrinsic::floor, fma(b, x, fc(x, kLog2e), fc(x, 0.5)));
  llvm::Value* r = fma(b, k, fc(x, -kLn2Hi), x);
  r = fma(b, k, fc(x, -kLn2Lo), r);
  return {k, r};
}

// log(m) for m in [sqrt(1/2), sqrt(2)): 2 atanh(s), s = (m - 1) / (m + 1), to s^11.
llvm::Value* log_of_mantissa(llvm::IRBuilderBase& b, llvm::Value* m) {
  llvm::Value* f = b.CreateFSub(m, fc(m, 1.0));  // exact (Sterbenz)
  llvm::Value* s = b.CreateFDiv(f, b.CreateFAdd(f, fc(m, 2.0)));
  llvm::Value* z = b.CreateFMul(s, s);
  llvm::Value* tail = horner(b, z, {2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9, 2.0 / 11});
  return fma(b, b.CreateFMul(s, z), tail, b.CreateFMul(s, fc(s, 2.0)));
}

// x = 2^e * m for finite x > 0; returns (e as float, m).
std::pair<llvm::Value*, llvm::Value*> split_exponent(llvm::IRBuilderBase& b, llvm::Value* x) {
  llvm::Type* it = int_type_of(x);
  llvm::Value* tiny = b.CreateFCmpOLT(x, fc(x, 0x1p-126));
  llvm::Value* xs = b.CreateSelect(tiny, b.CreateFMul(x, fc(x, 0x1p23)), x);
  llvm::Value* bits = b.CreateBitCast(xs, it);
  llvm::Value* e = b.CreateSub(b.CreateLShr(bits, ic(it, 23)), ic(it, 127));
  e = b.CreateSub(e, b.CreateSelect(tiny, ic(it, 23), ic(it, 0)));
  llvm::Value* m =
      b.CreateBitCast(b.CreateOr(b.CreateAnd(bits, ic(it, 0x7fffff)), ic(it, 0x3f800000)), x->getType());  // [1, 2)
  llvm::Value* big = b.CreateFCmpOGT(m, fc(m, M_SQRT2));
  m = b.CreateSelect(big, b.CreateFMul(m, fc(m, 0.5)), m);
  e = b.CreateAdd(e, b.CreateZExt(big, it));
  return {b.CreateSIToFP(e, x->getType()), m};
}

// The IEEE special cases of log: NaN stays, x < 0 is NaN, log(0) = -inf, log(inf) = inf.
llvm::Value* log_specials(llvm::IRBuilderBase& b, llvm::Value* x, llvm::Value* y) {
  y = b.CreateSelect(b.CreateFCmpOEQ(x, fc(x, INFINITY)), x, y);
  y = b.CreateSelect(b.CreateFCmpOEQ(x, fc(x, 0.0)), fc(x, -INFINITY), y);
  y = b.CreateSelect(b.CreateFCmpOLT(x, fc(x, 0.0)), fc(x, NAN), y);
  return keep_nan(b, x, y);
}

}  // namespace

llvm::Value* emit_exp(llvm::IRBuilderBase& b, llvm::Value* x) {
  llvm::Value* xc = min_f(b, max_f(b, x, -104.0), 89.0);  // beyond: 0 and inf after scaling
  auto [k, r] = reduce_ln2(b, xc);
  llvm::Value* p = horner(b, r, taylor_exp(7, 1.0));
  return keep_nan(b, x, scale_by_pow2(b, p, b.CreateFPToSI(k, int_type_of(x))));
}

llvm::Value* emit_exp2(llvm::IRBuilderBase& b, llvm::Value* x) {
  llvm::Value* xc = min_f(b, max_f(b, x, -151.0), 129.0);
  llvm::Value* k = b.CreateUnaryIntrinsic(llvm::Intrinsic::floor, b.CreateFAdd(xc, fc(x, 0.5)));
  llvm::Value* f = b.CreateFSub(xc, k);  // exact, |f| <= 1/2
  llvm::Value* p = horner(b, f, taylor_exp(7, kLn2));
  return keep_nan(b, x, scale_by_pow2(b, p, b.CreateFPToSI(k, int_type_of(x))));
}

llvm::Value* emit_log(llvm::IRBuilderBase& b, llvm::Value* x) {
  auto [e, m] = split_exponent(b, x);
  llvm::Value* y = fma(b, e, fc(x, kLn2Hi), fma(b, e, fc(x, kLn2Lo), log_of_mantissa(b, m)));
  return log_specials(b, x, y);
}

llvm::Value* emit_log2(llvm::IRBuilderBase& b, llvm::Value* x) {
  auto [e, m] = split_exponent(b, x);
  llvm::Value* y = fma(b, log_of_mantissa(b, m), fc(x, kLog2e), e);
  return log_specials(b, x, y);
}

llvm::Value* emit_tanh(llvm::IRBuilderBase& b, llvm::Value* x) {
  // Soft-capping runs this on every score, so it is counted in operations (23 per vector):
  // |x| >= 9.1 rounds to +-1 in float, and the clamp is written so that NaN passes through it
  // (x86's min with the constant first), which makes a separate NaN select unnecessary.
  llvm::Value* a = b.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x);
  a = b.CreateSelect(b.CreateFCmpOGT(a, fc(x, 9.1)), fc(x, 9.1), a);
  llvm::Value* y = b.CreateFAdd(a, a);
  // y = k ln2 + r by the round-to-nearest of adding 1.5 * 2^23: k sits in the sum's low bits,
  // so 2^k is those bits shifted into the exponent field (k in [0, 27]); defined for NaN too.
  llvm::Type* it = int_type_of(x);
  llvm::Value* shifted = fma(b, y, fc(x, kLog2e), fc(x, 0x1.8p23));
  llvm::Value* k = b.CreateFSub(shifted, fc(x, 0x1.8p23));
  llvm::Value* r = fma(b, k, fc(x, -kLn2Hi), y);
  r = fma(b, k, fc(x, -kLn2Lo), r);
  llvm::Value* two_k = b.CreateBitCast(
      b.CreateAdd(b.CreateShl(b.CreateBitCast(shifted, it), ic(it, 23)), ic(it, 127 << 23)), x->getType());
  // expm1(r) = r * q(r), q of degree 5 fitted for relative error on |r| <= ln2 / 2 (2.3e-8
  // with these float coefficients; tools/math/fit_expm1.py).
  llvm::Value* em = b.CreateFMul(r, horner(b, r,
                                           {1.0, 0.4999999701976776, 0.16666506230831146, 0.041667137295007706,
                                            0.008369066752493382, 0.0013888860121369362}));
  llvm::Value* t = fma(b, two_k, em, b.CreateFSub(two_k, fc(x, 1.0)));  // expm1(y)
  // (arcp: the function's reciprocal-estimates attribute turns it into rcp14 + one Newton step)
  auto* th = llvm::cast<llvm::Instruction>(b.CreateFDiv(t, b.CreateFAdd(t, fc(x, 2.0))));
  th->setHasAllowReciprocal(true);
  return b.CreateBinaryIntrinsic(llvm::Intrinsic::copysign, th, x);
}

llvm::Value* emit_sigmoid(llvm::IRBuilderBase& b, llvm::Value* x) {
  llvm::Value* e = emit_exp(b, b.CreateFNeg(x));
  return b.CreateFDiv(fc(x, 1.0), b.CreateFAdd(fc(x, 1.0), e));
}

}  // namespace attnjit::cpu_llvm
