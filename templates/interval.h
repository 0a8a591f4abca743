// attnjit interval arithmetic: the range an expression takes over a tile, for the tile
// classifier (empty / partial / full).
//
// One file, two compilers: compiler/mask_analysis.cpp includes it for the compile-time
// analysis, and codegen pastes it verbatim into every generated CUDA translation unit
// (ahead of the aj_tile_class hook, which calls these functions). Host and device
// therefore classify a tile with the same code by construction. Plain C++ only: no
// headers, no exceptions, nothing NVRTC would need an include path for.
//
// Values are abstract: AjIv is an int range (the mask's ints are 32-bit; a range that may
// leave int32 may wrap, so it becomes "unknown", the whole int32 range), AjFv a float
// range (never NaN: a NaN bound widens it to [-inf, inf]), AjBv the truth values an
// expression can take. Every operation contains the exact result set: the analysis may
// answer "partial" where it could have decided, never the wrong class.
#ifndef ATTNJIT_INTERVAL_H
#define ATTNJIT_INTERVAL_H

#ifndef AJ_HOST_DEVICE
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define AJ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AJ_HOST_DEVICE inline
#endif
#endif

#define AJ_INT_MIN (-2147483647LL - 1)
#define AJ_INT_MAX 2147483647LL

struct AjIv { long long lo, hi; };          // int range, within [AJ_INT_MIN, AJ_INT_MAX]
struct AjFv { double lo, hi; };             // float range, no NaN bound
struct AjBv { bool can_false, can_true; };  // bool range

// Comparison operators, by name (the generated code spells them the same way).
enum AjCmp : int { AJ_CMP_LT = 0, AJ_CMP_LE, AJ_CMP_GT, AJ_CMP_GE, AJ_CMP_EQ, AJ_CMP_NE };

AJ_HOST_DEVICE const char* aj_cmp_name(AjCmp op) {
  switch (op) {
    case AJ_CMP_LT: return "AJ_CMP_LT";
    case AJ_CMP_LE: return "AJ_CMP_LE";
    case AJ_CMP_GT: return "AJ_CMP_GT";
    case AJ_CMP_GE: return "AJ_CMP_GE";
    case AJ_CMP_EQ: return "AJ_CMP_EQ";
    case AJ_CMP_NE: return "AJ_CMP_NE";
  }
  return "AJ_CMP_NE";
}

// ---- scalar helpers --------------------------------------------------------------
AJ_HOST_DEVICE double aj_iv_inf() {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff0000000000000LL);
#else
  return __builtin_huge_val();
#endif
}
AJ_HOST_DEVICE bool aj_finite(double x) { return x == x && x - x == 0.0; }
AJ_HOST_DEVICE long long aj_min64(long long a, long long b) { return b < a ? b : a; }
AJ_HOST_DEVICE long long aj_max64(long long a, long long b) { return a < b ? b : a; }
AJ_HOST_DEVICE double aj_mind(double a, double b) { return b < a ? b : a; }
AJ_HOST_DEVICE double aj_maxd(double a, double b) { return a < b ? b : a; }
// Division rounding toward negative infinity (b != 0).
AJ_HOST_DEVICE long long aj_floordiv64(long long a, long long b) {
  long long q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// ---- constructors ----------------------------------------------------------------
AJ_HOST_DEVICE AjIv aj_iv_unknown() { return AjIv{AJ_INT_MIN, AJ_INT_MAX}; }
AJ_HOST_DEVICE AjIv aj_iv(long long lo, long long hi) {
  if (lo < AJ_INT_MIN || hi > AJ_INT_MAX) return aj_iv_unknown();  // may wrap: unknown
  return AjIv{lo, hi};
}
AJ_HOST_DEVICE AjFv aj_fv_unknown() { return AjFv{-aj_iv_inf(), aj_iv_inf()}; }
AJ_HOST_DEVICE AjFv aj_fv(double lo, double hi) {
  if (lo != lo || hi != hi) return aj_fv_unknown();
  return AjFv{lo, hi};
}
AJ_HOST_DEVICE AjBv aj_bv(bool can_false, bool can_true) { return AjBv{can_false, can_true}; }
AJ_HOST_DEVICE AjBv aj_bv_unknown() { return AjBv{true, true}; }

// ---- int ranges ------------------------------------------------------------------
AJ_HOST_DEVICE AjIv aj_iv_neg(AjIv a) { return aj_iv(-a.hi, -a.lo); }
AJ_HOST_DEVICE AjIv aj_iv_abs(AjIv a) {
  if (a.lo >= 0) return a;
  if (a.hi <= 0) return aj_iv(-a.hi, -a.lo);
  return aj_iv(0, aj_max64(-a.lo, a.hi));
}
AJ_HOST_DEVICE AjIv aj_iv_add(AjIv a, AjIv b) { return aj_iv(a.lo + b.lo, a.hi + b.hi); }
AJ_HOST_DEVICE AjIv aj_iv_sub(AjIv a, AjIv b) { return aj_iv(a.lo - b.hi, a.hi - b.lo); }
AJ_HOST_DEVICE AjIv aj_iv_mul(AjIv a, AjIv b) {
  const long long p0 = a.lo * b.lo, p1 = a.lo * b.hi, p2 = a.hi * b.lo, p3 = a.hi * b.hi;
  return aj_iv(aj_min64(aj_min64(p0, p1), aj_min64(p2, p3)), aj_max64(aj_max64(p0, p1), aj_max64(p2, p3)));
}
AJ_HOST_DEVICE AjIv aj_iv_min(AjIv a, AjIv b) { return aj_iv(aj_min64(a.lo, b.lo), aj_min64(a.hi, b.hi)); }
AJ_HOST_DEVICE AjIv aj_iv_max(AjIv a, AjIv b) { return aj_iv(aj_max64(a.lo, b.lo), aj_max64(a.hi, b.hi)); }
// Floor division and modulo (Python semantics, as aj_floordiv / aj_floormod), bounded
// only for a constant divisor.
AJ_HOST_DEVICE AjIv aj_iv_div(AjIv a, AjIv b) {
  if (b.lo != b.hi || b.lo == 0) return aj_iv_unknown();
  if (b.lo > 0) return aj_iv(aj_floordiv64(a.lo, b.lo), aj_floordiv64(a.hi, b.lo));
  return aj_iv(aj_floordiv64(a.hi, b.lo), aj_floordiv64(a.lo, b.lo));
}
AJ_HOST_DEVICE AjIv aj_iv_mod(AjIv a, AjIv b) {
  if (b.lo != b.hi || b.lo <= 0) return aj_iv_unknown();
  const long long qa = aj_floordiv64(a.lo, b.lo), qb = aj_floordiv64(a.hi, b.lo);
  if (qa == qb) return aj_iv(a.lo - qa * b.lo, a.hi - qb * b.lo);
  return aj_iv(0, b.lo - 1);
}
AJ_HOST_DEVICE AjIv aj_iv_where(AjBv c, AjIv a, AjIv b) {
  if (!c.can_false) return a;
  if (!c.can_true) return b;
  return aj_iv(aj_min64(a.lo, b.lo), aj_max64(a.hi, b.hi));
}
// Float -> int truncates toward zero; a bound outside int32 (or not finite) is unknown.
AJ_HOST_DEVICE AjIv aj_iv_from_float(AjFv a) {
  if (!(a.lo > -2147483649.0 && a.hi < 2147483648.0)) return aj_iv_unknown();
  return aj_iv((long long)a.lo, (long long)a.hi);
}
AJ_HOST_DEVICE AjIv aj_iv_from_bool(AjBv a) { return aj_iv(a.can_false ? 0 : 1, a.can_true ? 1 : 0); }

// ---- float ranges (only what cannot produce NaN from finite bounds) --------------
AJ_HOST_DEVICE AjFv aj_fv_neg(AjFv a) { return aj_fv(-a.hi, -a.lo); }
AJ_HOST_DEVICE bool aj_fv_finite(AjFv a) { return aj_finite(a.lo) && aj_finite(a.hi); }
AJ_HOST_DEVICE AjFv aj_fv_add(AjFv a, AjFv b) {
  if (!aj_fv_finite(a) || !aj_fv_finite(b)) return aj_fv_unknown();
  return aj_fv(a.lo + b.lo, a.hi + b.hi);
}
AJ_HOST_DEVICE AjFv aj_fv_sub(AjFv a, AjFv b) {
  if (!aj_fv_finite(a) || !aj_fv_finite(b)) return aj_fv_unknown();
  return aj_fv(a.lo - b.hi, a.hi - b.lo);
}
AJ_HOST_DEVICE AjFv aj_fv_where(AjBv c, AjFv a, AjFv b) {
  if (!c.can_false) return a;
  if (!c.can_true) return b;
  return aj_fv(aj_mind(a.lo, b.lo), aj_maxd(a.hi, b.hi));
}
AJ_HOST_DEVICE AjFv aj_fv_from_int(AjIv a) { return aj_fv((double)a.lo, (double)a.hi); }
AJ_HOST_DEVICE AjFv aj_fv_from_bool(AjBv a) { return aj_fv(a.can_false ? 0.0 : 1.0, a.can_true ? 1.0 : 0.0); }

// ---- bool ranges -----------------------------------------------------------------
AJ_HOST_DEVICE AjBv aj_bv_not(AjBv a) { return AjBv{a.can_true, a.can_false}; }
AJ_HOST_DEVICE AjBv aj_bv_and(AjBv a, AjBv b) { return AjBv{a.can_false || b.can_false, a.can_true && b.can_true}; }
AJ_HOST_DEVICE AjBv aj_bv_or(AjBv a, AjBv b) { return AjBv{a.can_false && b.can_false, a.can_true || b.can_true}; }
AJ_HOST_DEVICE AjBv aj_bv_where(AjBv c, AjBv a, AjBv b) {
  if (!c.can_false) return a;
  if (!c.can_true) return b;
  return AjBv{a.can_false || b.can_false, a.can_true || b.can_true};
}
AJ_HOST_DEVICE bool aj_bv_decided(AjBv a) { return a.can_false != a.can_true; }
// == / != on bools: decided only when both sides are.
AJ_HOST_DEVICE AjBv aj_bv_eq(AjBv a, AjBv b) {
  if (!aj_bv_decided(a) || !aj_bv_decided(b)) return aj_bv_unknown();
  const bool r = a.can_true == b.can_true;
  return AjBv{!r, r};
}
AJ_HOST_DEVICE AjBv aj_bv_ne(AjBv a, AjBv b) { return aj_bv_not(aj_bv_eq(a, b)); }

// ---- comparisons -----------------------------------------------------------------
// `a op b` for a in [alo, ahi], b in [blo, bhi]: always true, never true, or either.
AJ_HOST_DEVICE AjBv aj_cmp(AjCmp op, double alo, double ahi, double blo, double bhi) {
  if (alo != alo || ahi != ahi || blo != blo || bhi != bhi) return aj_bv_unknown();
  bool always = false, never = false;
  switch (op) {
    case AJ_CMP_LT: always = ahi < blo; never = alo >= bhi; break;
    case AJ_CMP_LE: always = ahi <= blo; never = alo > bhi; break;
    case AJ_CMP_GT: always = alo > bhi; never = ahi <= blo; break;
    case AJ_CMP_GE: always = alo >= bhi; never = ahi < blo; break;
    case AJ_CMP_EQ: always = alo == ahi && blo == bhi && alo == blo; never = ahi < blo || bhi < alo; break;
    case AJ_CMP_NE: never = alo == ahi && blo == bhi && alo == blo; always = ahi < blo || bhi < alo; break;
  }
  return AjBv{!always, !never};
}
AJ_HOST_DEVICE AjBv aj_iv_cmp(AjCmp op, AjIv a, AjIv b) {
  return aj_cmp(op, (double)a.lo, (double)a.hi, (double)b.lo, (double)b.hi);
}
AJ_HOST_DEVICE AjBv aj_fv_cmp(AjCmp op, AjFv a, AjFv b) { return aj_cmp(op, a.lo, a.hi, b.lo, b.hi); }

// ---- the tile class --------------------------------------------------------------
// From the mask's range over the tile: 0 empty (skip), 1 partial (mask per element),
// 2 full (no mask); the values of attnjit::ir::TileClass and of tile_classes in abi.h.
enum AjTileClass : int { AJ_TILE_EMPTY = 0, AJ_TILE_PARTIAL = 1, AJ_TILE_FULL = 2 };
AJ_HOST_DEVICE int aj_tile_class_of(AjBv m) {
  return !m.can_true ? AJ_TILE_EMPTY : (!m.can_false ? AJ_TILE_FULL : AJ_TILE_PARTIAL);
}

#endif  // ATTNJIT_INTERVAL_H
