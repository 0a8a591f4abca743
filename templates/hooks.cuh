// attnjit hook support: what generated hook functions call besides common.cuh.
//
// Tensor reads (indices clamped to the tensor's extent: the GPU never reads outside a
// bound tensor; the CPU reference reports such reads as errors) and the interval
// arithmetic of the tile classifier, which mirrors compiler/mask_analysis.cpp operation
// for operation so that the GPU and the CPU analysis agree.
#ifndef ATTNJIT_HOOKS_CUH
#define ATTNJIT_HOOKS_CUH

__device__ __forceinline__ long long aj_clamp_index(int i, int size) {
  return i < 0 ? 0 : (i >= size ? size - 1 : i);
}
__device__ __forceinline__ long long aj_offset1(const AttnjitTensorArg& t, int i0) {
  return aj_clamp_index(i0, t.size[0]) * t.stride[0];
}
__device__ __forceinline__ long long aj_offset2(const AttnjitTensorArg& t, int i0, int i1) {
  return aj_offset1(t, i0) + aj_clamp_index(i1, t.size[1]) * t.stride[1];
}
__device__ __forceinline__ long long aj_offset3(const AttnjitTensorArg& t, int i0, int i1, int i2) {
  return aj_offset2(t, i0, i1) + aj_clamp_index(i2, t.size[2]) * t.stride[2];
}
__device__ __forceinline__ long long aj_offset4(const AttnjitTensorArg& t, int i0, int i1, int i2, int i3) {
  return aj_offset3(t, i0, i1, i2) + aj_clamp_index(i3, t.size[3]) * t.stride[3];
}
__device__ __forceinline__ float aj_read_f32(const AttnjitTensorArg& t, long long o) { return ((const float*)t.data)[o]; }
__device__ __forceinline__ float aj_read_f16(const AttnjitTensorArg& t, long long o) {
  return aj_fp16_to_float(((const aj_u16*)t.data)[o]);
}
__device__ __forceinline__ float aj_read_bf16(const AttnjitTensorArg& t, long long o) {
  return aj_bf16_to_float(((const aj_u16*)t.data)[o]);
}
__device__ __forceinline__ int aj_read_i32(const AttnjitTensorArg& t, long long o) { return ((const int*)t.data)[o]; }
__device__ __forceinline__ int aj_read_i64(const AttnjitTensorArg& t, long long o) {
  return (int)((const long long*)t.data)[o];
}
__device__ __forceinline__ bool aj_read_u8(const AttnjitTensorArg& t, long long o) {
  return ((const unsigned char*)t.data)[o] != 0;
}
__device__ __forceinline__ int aj_to_int(float x) {
  int r;
  asm("cvt.rzi.sat.s32.f32 %0, %1;" : "=r"(r) : "f"(x));  // truncate, saturate, NaN -> 0
  return r;
}

// ---- interval arithmetic for the tile classifier --------------------------------
#define AJ_INT_MIN (-2147483647LL - 1)
#define AJ_INT_MAX 2147483647LL
struct AjIv { long long lo, hi; };     // int range
struct AjFv { double lo, hi; };        // float range
struct AjBv { bool can_false, can_true; };

__device__ __forceinline__ AjIv aj_iv(long long lo, long long hi) {
  if (lo < AJ_INT_MIN || hi > AJ_INT_MAX) return AjIv{AJ_INT_MIN, AJ_INT_MAX};  // may wrap: unknown
  return AjIv{lo, hi};
}
__device__ __forceinline__ AjIv aj_iv_unknown() { return AjIv{AJ_INT_MIN, AJ_INT_MAX}; }
__device__ __forceinline__ AjFv aj_fv(double lo, double hi) {
  if (lo != lo || hi != hi) return AjFv{-__longlong_as_double(0x7ff0000000000000LL), __longlong_as_double(0x7ff0000000000000LL)};
  return AjFv{lo, hi};
}
__device__ __forceinline__ AjFv aj_fv_unknown() { return aj_fv(0.0 / 0.0, 0.0); }
__device__ __forceinline__ bool aj_finite(double x) { return x == x && x - x == 0.0; }
__device__ __forceinline__ AjBv aj_bv(bool can_false, bool can_true) { return AjBv{can_false, can_true}; }
__device__ __forceinline__ AjBv aj_bv_unknown() { return AjBv{true, true}; }

__device__ __forceinline__ long long aj_min64(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long aj_max64(long long a, long long b) { return a > b ? a : b; }
__device__ __forceinline__ long long aj_floordiv64(long long a, long long b) {
  long long q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

__device__ __forceinline__ AjIv aj_iv_neg(AjIv a) { return aj_iv(-a.hi, -a.lo); }
__device__ __forceinline__ AjIv aj_iv_abs(AjIv a) {
  if (a.lo >= 0) return a;
  if (a.hi <= 0) return aj_iv(-a.hi, -a.lo);
  return aj_iv(0, aj_max64(-a.lo, a.hi));
}
__device__ __forceinline__ AjIv aj_iv_add(AjIv a, AjIv b) { return aj_iv(a.lo + b.lo, a.hi + b.hi); }
__device__ __forceinline__ AjIv aj_iv_sub(AjIv a, AjIv b) { return aj_iv(a.lo - b.hi, a.hi - b.lo); }
__device__ __forceinline__ AjIv aj_iv_mul(AjIv a, AjIv b) {
  const long long p0 = a.lo * b.lo, p1 = a.lo * b.hi, p2 = a.hi * b.lo, p3 = a.hi * b.hi;
  return aj_iv(aj_min64(aj_min64(p0, p1), aj_min64(p2, p3)), aj_max64(aj_max64(p0, p1), aj_max64(p2, p3)));
}
__device__ __forceinline__ AjIv aj_iv_min(AjIv a, AjIv b) { return aj_iv(aj_min64(a.lo, b.lo), aj_min64(a.hi, b.hi)); }
__device__ __forceinline__ AjIv aj_iv_max(AjIv a, AjIv b) { return aj_iv(aj_max64(a.lo, b.lo), aj_max64(a.hi, b.hi)); }
__device__ __forceinline__ AjIv aj_iv_div(AjIv a, AjIv b) {
  if (b.lo != b.hi || b.lo == 0) return aj_iv_unknown();
  if (b.lo > 0) return aj_iv(aj_floordiv64(a.lo, b.lo), aj_floordiv64(a.hi, b.lo));
  return aj_iv(aj_floordiv64(a.hi, b.lo), aj_floordiv64(a.lo, b.lo));
}
__device__ __forceinline__ AjIv aj_iv_mod(AjIv a, AjIv b) {
  if (b.lo != b.hi || b.lo <= 0) return aj_iv_unknown();
  const long long qa = aj_floordiv64(a.lo, b.lo), qb = aj_floordiv64(a.hi, b.lo);
  if (qa == qb) return aj_iv(a.lo - qa * b.lo, a.hi - qb * b.lo);
  return aj_iv(0, b.lo - 1);
}
__device__ __forceinline__ AjIv aj_iv_where(AjBv c, AjIv a, AjIv b) {
  if (!c.can_false) return a;
  if (!c.can_true) return b;
  return aj_iv(aj_min64(a.lo, b.lo), aj_max64(a.hi, b.hi));
}
__device__ __forceinline__ AjIv aj_iv_from_float(AjFv a) {
  if (!aj_finite(a.lo) || !aj_finite(a.hi)) return aj_iv_unknown();
  return aj_iv((long long)trunc(a.lo), (long long)trunc(a.hi));
}
__device__ __forceinline__ AjIv aj_iv_from_bool(AjBv a) { return aj_iv(a.can_false ? 0 : 1, a.can_true ? 1 : 0); }

__device__ __forceinline__ AjFv aj_fv_neg(AjFv a) { return aj_fv(-a.hi, -a.lo); }
__device__ __forceinline__ AjFv aj_fv_add(AjFv a, AjFv b) {
  if (!aj_finite(a.lo) || !aj_finite(a.hi) || !aj_finite(b.lo) || !aj_finite(b.hi)) return aj_fv_unknown();
  return aj_fv(a.lo + b.lo, a.hi + b.hi);
}
__device__ __forceinline__ AjFv aj_fv_sub(AjFv a, AjFv b) {
  if (!aj_finite(a.lo) || !aj_finite(a.hi) || !aj_finite(b.lo) || !aj_finite(b.hi)) return aj_fv_unknown();
  return aj_fv(a.lo - b.hi, a.hi - b.lo);
}
__device__ __forceinline__ AjFv aj_fv_where(AjBv c, AjFv a, AjFv b) {
  if (!c.can_false) return a;
  if (!c.can_true) return b;
  return aj_fv(a.lo < b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi);
}
__device__ __forceinline__ AjFv aj_fv_from_int(AjIv a) { return aj_fv((double)a.lo, (double)a.hi); }
__device__ __forceinline__ AjFv aj_fv_from_bool(AjBv a) { return aj_fv(a.can_false ? 0.0 : 1.0, a.can_true ? 1.0 : 0.0); }

__device__ __forceinline__ AjBv aj_bv_not(AjBv a) { return AjBv{a.can_true, a.can_false}; }
__device__ __forceinline__ AjBv aj_bv_and(AjBv a, AjBv b) {
  return AjBv{a.can_false || b.can_false, a.can_true && b.can_true};
}
__device__ __forceinline__ AjBv aj_bv_or(AjBv a, AjBv b) { return AjBv{a.can_false && b.can_false, a.can_true || b.can_true}; }
__device__ __forceinline__ AjBv aj_bv_where(AjBv c, AjBv a, AjBv b) {
  if (!c.can_false) return a;
  if (!c.can_true) return b;
  return AjBv{a.can_false || b.can_false, a.can_true || b.can_true};
}
__device__ __forceinline__ bool aj_bv_decided(AjBv a) { return a.can_false != a.can_true; }
__device__ __forceinline__ AjBv aj_bv_eq(AjBv a, AjBv b) {
  if (!aj_bv_decided(a) || !aj_bv_decided(b)) return aj_bv_unknown();
  const bool r = a.can_true == b.can_true;
  return AjBv{!r, r};
}
__device__ __forceinline__ AjBv aj_bv_ne(AjBv a, AjBv b) { return aj_bv_not(aj_bv_eq(a, b)); }

// Comparisons over ranges; op: 0 <, 1 <=, 2 >, 3 >=, 4 ==, 5 !=.
__device__ __forceinline__ AjBv aj_cmp(int op, double alo, double ahi, double blo, double bhi) {
  if (alo != alo || ahi != ahi || blo != blo || bhi != bhi) return aj_bv_unknown();
  bool always = false, never = false;
  switch (op) {
    case 0: always = ahi < blo; never = alo >= bhi; break;
    case 1: always = ahi <= blo; never = alo > bhi; break;
    case 2: always = alo > bhi; never = ahi <= blo; break;
    case 3: always = alo >= bhi; never = ahi < blo; break;
    case 4: always = alo == ahi && blo == bhi && alo == blo; never = ahi < blo || bhi < alo; break;
    default: never = alo == ahi && blo == bhi && alo == blo; always = ahi < blo || bhi < alo; break;
  }
  return AjBv{!always, !never};
}
__device__ __forceinline__ AjBv aj_iv_cmp(int op, AjIv a, AjIv b) {
  return aj_cmp(op, (double)a.lo, (double)a.hi, (double)b.lo, (double)b.hi);
}
__device__ __forceinline__ AjBv aj_fv_cmp(int op, AjFv a, AjFv b) { return aj_cmp(op, a.lo, a.hi, b.lo, b.hi); }

// The tile class from the mask's range: 0 empty, 1 partial, 2 full.
__device__ __forceinline__ int aj_tile_class_of(AjBv m) { return !m.can_true ? 0 : (!m.can_false ? 2 : 1); }

#endif  // ATTNJIT_HOOKS_CUH
