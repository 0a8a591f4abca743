// The CPU backend's tile operations (see cpu_kernels.hpp).
//
// The loops are written over GCC vector extensions of 16 floats, which each target clone
// lowers to its own registers (one zmm, two ymm, four xmm). This file is compiled with
// -O3 -ffp-contract=fast (CMakeLists.txt) so that a * b + c becomes an FMA where there is one.
#include "runtime/cpu/cpu_kernels.hpp"

#include <fmt/format.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "compiler/error.hpp"

#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of inline helpers; nothing is exported

#define AJ_INLINE __attribute__((always_inline)) inline
#define AJ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace attnjit::cpu {
namespace {

using vf = float __attribute__((vector_size(64)));
using vi = std::int32_t __attribute__((vector_size(64)));
constexpr int kLanes = 16;

AJ_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
AJ_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
AJ_INLINE vf splat(float x) { return vf{} + x; }  // for constants (folded); the products use intrinsics

AJ_INLINE float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

AJ_INLINE std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

using vu = std::uint32_t __attribute__((vector_size(64)));
using vh = std::uint16_t __attribute__((vector_size(32)));

// float_to_bf16 on 16 lanes: round to nearest even, NaN kept quiet.
AJ_INLINE vh float_to_bf16(vf f) {
  vu bits;
  std::memcpy(&bits, &f, sizeof bits);
  const vu rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const vu nan = (bits >> 16) | 0x40u;
  return __builtin_convertvector((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded, vh);
}

}  // namespace

AJ_CPU_CLONES void load_tile(Storage storage, const void* base, std::int64_t row_stride, std::int64_t col_stride,
                             int rows, int cols, float* out, std::int64_t ld) {
  for (int r = 0; r < rows; ++r) {
    float* dst = out + r * ld;
    switch (storage) {
      case Storage::F32: {
        const float* src = static_cast<const float*>(base) + r * row_stride;
        if (col_stride == 1)
          std::memcpy(dst, src, sizeof(float) * static_cast<std::size_t>(cols));
        else
          for (int c = 0; c < cols; ++c) dst[c] = src[c * col_stride];
        break;
      }
      case Storage::F16: {
        const _Float16* src = static_cast<const _Float16*>(base) + r * row_stride;
        if (col_stride == 1)
          for (int c = 0; c < cols; ++c) dst[c] = static_cast<float>(src[c]);
        else
          for (int c = 0; c < cols; ++c) dst[c] = static_cast<float>(src[c * col_stride]);
        break;
      }
      case Storage::BF16: {
        const std::uint16_t* src = static_cast<const std::uint16_t*>(base) + r * row_stride;
        if (col_stride == 1)
          for (int c = 0; c < cols; ++c) dst[c] = bf16_to_float(src[c]);
        else
          for (int c = 0; c < cols; ++c) dst[c] = bf16_to_float(src[c * col_stride]);
        break;
      }
    }
  }
}

AJ_CPU_CLONES void store_tile(Storage storage, const float* in, std::int64_t ld, int rows, int cols, void* base,
                              std::int64_t row_stride, std::int64_t col_stride, const float* row_scale) {
  for (int r = 0; r < rows; ++r) {
    const float* src = in + r * ld;
    const float f = row_scale ? row_scale[r] : 1.0f;
    switch (storage) {
      case Storage::F32: {
        float* dst = static_cast<float*>(base) + r * row_stride;
        if (col_stride == 1 && !row_scale)  // the fp32 window's O stores ran element by element (2% of its time)
          std::memcpy(dst, src, sizeof(float) * static_cast<std::size_t>(cols));
        else
          for (int c = 0; c < cols; ++c) dst[c * col_stride] = src[c] * f;
        break;
      }
      case Storage::F16: {
        _Float16* dst = static_cast<_Float16*>(base) + r * row_stride;
        for (int c = 0; c < cols; ++c) dst[c * col_stride] = static_cast<_Float16>(src[c] * f);
        break;
      }
      case Storage::BF16: {
        std::uint16_t* dst = static_cast<std::uint16_t*>(base) + r * row_stride;
        int c = 0;
        if (col_stride == 1)  // whole vectors: a band's or a short row's store was 3% of its call
          for (; c + kLanes <= cols; c += kLanes) {
            const vh h = float_to_bf16(load(src + c) * f);
            std::memcpy(dst + c, &h, sizeof h);
          }
        for (; c < cols; ++c) dst[c * col_stride] = float_to_bf16(src[c] * f);
        break;
      }
    }
  }
}

// Four running maxima, so that consecutive vectors do not wait for each other's compare.
AJ_CPU_CLONES float max_of(const float* x, int n) {
  float m = -std::numeric_limits<float>::infinity();
  int i = 0;
  if (n >= kLanes) {
    vf acc[4] = {load(x), load(x), load(x), load(x)};
    for (i = kLanes; i + 4 * kLanes <= n; i += 4 * kLanes)
      for (int a = 0; a < 4; ++a) {
        const vf v = load(x + i + a * kLanes);
        acc[a] = v > acc[a] ? v : acc[a];
      }
    for (; i + kLanes <= n; i += kLanes) {
      const vf v = load(x + i);
      acc[0] = v > acc[0] ? v : acc[0];
    }
    for (int a = 1; a < 4; ++a) acc[0] = acc[a] > acc[0] ? acc[a] : acc[0];
    for (int l = 0; l < kLanes; ++l) m = std::max(m, acc[0][l]);
  }
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

namespace {

constexpr float kExpLow = -87.33654f;  // exp below it is 0 here

// exp(x) of 16 lanes = 2^n * p(r), x = n ln2 + r (Cody-Waite), |r| <= ln2 / 2, p a degree-7
// polynomial (Cephes' expf coefficients; relative error ~2e-7). Lanes below kExpLow (and -inf)
// give exactly 0.
AJ_INLINE vf exp_lanes(vf v0) {
  constexpr float kLog2e = 1.44269504088896341f, kRound = 12582912.0f;  // 1.5 * 2^23
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  const vi dead = v0 < kExpLow;
  const vf v = dead ? splat(kExpLow) : v0;
  const vf fn = (v * kLog2e + kRound) - kRound;  // round to nearest
  vf r = v - fn * kLn2Hi;
  r = r - fn * kLn2Lo;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const vi e = (__builtin_convertvector(fn, vi) + 127) << 23;
  const vf y = p * (vf)e;  // 2^n, by its bits
  return dead ? splat(0.0f) : y;
}

AJ_INLINE float exp_tail(float* x, int n, float shift, float scale) {  // the keys past whole vectors
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float v = x[i] * scale - shift;
    x[i] = v < kExpLow ? 0.0f : __builtin_expf(v);
    sum += x[i];
  }
  return sum;
}

// softmax_short_row for V whole vectors and n - 16 V (< 16) keys after them.
template <int V>
AJ_INLINE float short_row(float* x, int n, float scale, float m_old, float* m_new) {
  vf v[V > 0 ? V : 1];
  float mx = -std::numeric_limits<float>::infinity();
  if constexpr (V > 0) {
#pragma GCC unroll 32
    for (int i = 0; i < V; ++i) v[i] = load(x + kLanes * i);
    vf vmax = v[0];
#pragma GCC unroll 32
    for (int i = 1; i < V; ++i) vmax = v[i] > vmax ? v[i] : vmax;
    for (int l = 0; l < kLanes; ++l) mx = std::max(mx, vmax[l]);
  }
  for (int i = kLanes * V; i < n; ++i) mx = std::max(mx, x[i]);
  const float m = std::max(m_old, mx * scale);
  *m_new = m;
  if (m == -std::numeric_limits<float>::infinity()) {
    std::fill_n(x, n, 0.0f);
    return 0.0f;
  }
  float sum = 0.0f;
  if constexpr (V > 0) {
    vf acc = splat(0.0f);
#pragma GCC unroll 32
    for (int i = 0; i < V; ++i) {
      const vf y = exp_lanes(v[i] * scale - m);
      store(x + kLanes * i, y);
      acc += y;
    }
    for (int l = 0; l < kLanes; ++l) sum += acc[l];
  }
  return sum + exp_tail(x + kLanes * V, n - kLanes * V, m, scale);
}

template <int... V>
AJ_INLINE float short_row_of(std::integer_sequence<int, V...>, float* x, int n, float scale, float m_old,
                             float* m_new) {
  float sum = 0.0f;
  const int whole = n / kLanes;
  ((whole == V ? (sum = short_row<V>(x, n, scale, m_old, m_new), true) : false) || ...);
  return sum;
}

}  // namespace

AJ_CPU_CLONES float exp_shifted_sum(float* x, int n, float shift, float scale) {
  vf acc = splat(0.0f);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const vf y = exp_lanes(load(x + i) * scale - shift);
    store(x + i, y);
    acc += y;
  }
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum + exp_tail(x + i, n - i, shift, scale);
}

AJ_CPU_CLONES float softmax_short_row(float* x, int n, float scale, float m_old, float* m_new) {
  return short_row_of(std::make_integer_sequence<int, kShortRowKeys / kLanes + 1>(), x, n, scale, m_old, m_new);
}

AJ_CPU_CLONES void scale_in_place(float* x, int n, float factor) {
  for (int i = 0; i < n; ++i) x[i] *= factor;
}

// ---- the products -----------------------------------------------------------------
//
// Register-blocked micro-kernels: S = alpha * Q K^T reads Q rows in place (each element
// broadcast) and K from panels of 16 keys, [dim][16] each, packed once per tile; O += P V
// reads P rows in place and V rows (16-float aligned widths). An R x W micro-tile keeps R
// rows by W vectors of the output in registers over the whole reduction, sized to each
// instruction set's registers: AVX-512 (32 zmm) 8 x 2 and 12 x 2 (P V: two vectors of V over
// 256 keys are 32 KiB, which stay in L1 while 12 rows at a time pass; 4 x 4 measured 10%
// slower, its 64 KiB of V coming from L2), AVX2 (16 ymm) 6 x 2 and
// 3 x 4, SSE2 (16 xmm) 3 x 4 and 3 x 4. Written with intrinsics: GCC 12 turns a broadcast
// written with vector extensions into lane-by-lane inserts or stack round trips.

namespace {

#define AJ_ISA_INLINE(isa) __attribute__((target(isa))) inline

struct Avx512 {
  using V = __m512;
  static constexpr int kWidth = 16;
  static AJ_ISA_INLINE("avx512f") V zero() { return _mm512_setzero_ps(); }
  static AJ_ISA_INLINE("avx512f") V load(const float* p) { return _mm512_loadu_ps(p); }
  static AJ_ISA_INLINE("avx512f") void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static AJ_ISA_INLINE("avx512f") V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static AJ_ISA_INLINE("avx512f") V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static AJ_ISA_INLINE("avx512f") V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};

struct Avx2 {
  using V = __m256;
  static constexpr int kWidth = 8;
  static AJ_ISA_INLINE("avx2,fma") V zero() { return _mm256_setzero_ps(); }
  static AJ_ISA_INLINE("avx2,fma") V load(const float* p) { return _mm256_loadu_ps(p); }
  static AJ_ISA_INLINE("avx2,fma") void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static AJ_ISA_INLINE("avx2,fma") V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static AJ_ISA_INLINE("avx2,fma") V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static AJ_ISA_INLINE("avx2,fma") V mul(V a, V b) { return _mm256_mul_ps(a, b); }
};

struct Sse2 {
  using V = __m128;
  static constexpr int kWidth = 4;
  static inline V zero() { return _mm_setzero_ps(); }
  static inline V load(const float* p) { return _mm_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm_storeu_ps(p, v); }
  static inline V broadcast(const float* p) { return _mm_set1_ps(*p); }
  static inline V fma(V a, V b, V c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
  static inline V mul(V a, V b) { return _mm_mul_ps(a, b); }
};

// R rows by W vectors of S; vector w covers keys [w * kWidth, (w + 1) * kWidth) of the group,
// which lie in panel w * kWidth / 16.
template <class I, int R, int W>
inline void score_tile(const float* q, std::int64_t ldq, const float* kp, int dim, float alpha, float* s,
                       std::int64_t lds) {
  using V = typename I::V;
  constexpr int kPer = kLanes / I::kWidth;  // vectors per panel
  V acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) acc[r][w] = I::zero();
  const float* kw[W];
#pragma GCC unroll 8
  for (int w = 0; w < W; ++w) kw[w] = kp + static_cast<std::int64_t>(w / kPer) * dim * kLanes + (w % kPer) * I::kWidth;
  for (int d = 0; d < dim; ++d) {
    V b[W];
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) b[w] = I::load(kw[w] + d * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V a = I::broadcast(q + r * ldq + d);
#pragma GCC unroll 8
      for (int w = 0; w < W; ++w) acc[r][w] = I::fma(a, b[w], acc[r][w]);
    }
  }
  const V scale = I::broadcast(&alpha);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) I::store(s + r * lds + w * I::kWidth, I::mul(acc[r][w], scale));
}

// W vectors of keys (a multiple of a panel) against every row, R rows at a time.
template <class I, int R, int W>
inline void score_rows(int rows, int dim, float alpha, const float* q, std::int64_t ldq, const float* kp, float* s,
                       std::int64_t lds) {
  int i = 0;
  for (; i + R <= rows; i += R) score_tile<I, R, W>(q + i * ldq, ldq, kp, dim, alpha, s + i * lds, lds);
  for (; i < rows; ++i) score_tile<I, 1, W>(q + i * ldq, ldq, kp, dim, alpha, s + i * lds, lds);
}

template <class I, int R, int W>
inline void scores_impl(int rows, int cols, int dim, float alpha, const float* q, std::int64_t ldq, const float* packed,
                        float* s, std::int64_t lds) {
  constexpr int kPer = kLanes / I::kWidth;
  static_assert(W % kPer == 0, "a micro-tile covers whole panels");
  constexpr int kPanels = W / kPer;
  const int panels = (cols + kLanes - 1) / kLanes;
  int p = 0;
  for (; p + kPanels <= panels; p += kPanels)
    score_rows<I, R, W>(rows, dim, alpha, q, ldq, packed + static_cast<std::int64_t>(p) * dim * kLanes, s + p * kLanes,
                        lds);
  for (; p < panels; ++p)
    score_rows<I, R, kPer>(rows, dim, alpha, q, ldq, packed + static_cast<std::int64_t>(p) * dim * kLanes,
                           s + p * kLanes, lds);
}

template <class I, int R, int W>
inline void pv_tile(const float* pr, std::int64_t ldp, const float* v, std::int64_t ldv, int k, float* o,
                    std::int64_t ldo) {
  using V = typename I::V;
  V acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) acc[r][w] = I::load(o + r * ldo + w * I::kWidth);
  for (int kk = 0; kk < k; ++kk) {
    V b[W];
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) b[w] = I::load(v + kk * ldv + w * I::kWidth);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V a = I::broadcast(pr + r * ldp + kk);
#pragma GCC unroll 8
      for (int w = 0; w < W; ++w) acc[r][w] = I::fma(a, b[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) I::store(o + r * ldo + w * I::kWidth, acc[r][w]);
}

template <class I, int R, int W>
inline void pv_rows(int rows, int k, const float* p, std::int64_t ldp, const float* v, std::int64_t ldv, float* o,
                    std::int64_t ldo) {
  int i = 0;
  for (; i + R <= rows; i += R) pv_tile<I, R, W>(p + i * ldp, ldp, v, ldv, k, o + i * ldo, ldo);
  // The rows left: 4 at a time (a 16-row slice is 12 + 4 with R = 12), then one by one.
  if constexpr (R > 4)
    for (; i + 4 <= rows; i += 4) pv_tile<I, 4, W>(p + i * ldp, ldp, v, ldv, k, o + i * ldo, ldo);
  for (; i < rows; ++i) pv_tile<I, 1, W>(p + i * ldp, ldp, v, ldv, k, o + i * ldo, ldo);
}

template <class I, int R, int W>
inline void pv_impl(int rows, int width, int k, const float* p, std::int64_t ldp, const float* v, std::int64_t ldv,
                    float* o, std::int64_t ldo) {
  const int vectors = width / I::kWidth;
  int j = 0;
  for (; j + W <= vectors; j += W) pv_rows<I, R, W>(rows, k, p, ldp, v + j * I::kWidth, ldv, o + j * I::kWidth, ldo);
  for (; j < vectors; ++j) pv_rows<I, R, 1>(rows, k, p, ldp, v + j * I::kWidth, ldv, o + j * I::kWidth, ldo);
}

struct Products {
  using ScoresFn = void (*)(int, int, int, float, const float*, std::int64_t, const float*, float*, std::int64_t);
  using PvFn = void (*)(int, int, int, const float*, std::int64_t, const float*, std::int64_t, float*, std::int64_t);
  ScoresFn scores;
  PvFn pv;
  const char* name;
};

__attribute__((target("avx512f"), flatten)) void scores_avx512(int rows, int cols, int dim, float alpha, const float* q,
                                                               std::int64_t ldq, const float* packed, float* s,
                                                               std::int64_t lds) {
  scores_impl<Avx512, 8, 2>(rows, cols, dim, alpha, q, ldq, packed, s, lds);
}
__attribute__((target("avx2,fma"), flatten)) void scores_avx2(int rows, int cols, int dim, float alpha, const float* q,
                                                              std::int64_t ldq, const float* packed, float* s,
                                                              std::int64_t lds) {
  scores_impl<Avx2, 6, 2>(rows, cols, dim, alpha, q, ldq, packed, s, lds);
}
__attribute__((flatten)) void scores_sse2(int rows, int cols, int dim, float alpha, const float* q, std::int64_t ldq,
                                          const float* packed, float* s, std::int64_t lds) {
  scores_impl<Sse2, 3, 4>(rows, cols, dim, alpha, q, ldq, packed, s, lds);
}
__attribute__((target("avx512f"), flatten)) void pv_avx512(int rows, int width, int k, const float* p, std::int64_t ldp,
                                                           const float* v, std::int64_t ldv, float* o,
                                                           std::int64_t ldo) {
  pv_impl<Avx512, 12, 2>(rows, width, k, p, ldp, v, ldv, o, ldo);
}
__attribute__((target("avx2,fma"), flatten)) void pv_avx2(int rows, int width, int k, const float* p, std::int64_t ldp,
                                                          const float* v, std::int64_t ldv, float* o,
                                                          std::int64_t ldo) {
  pv_impl<Avx2, 3, 4>(rows, width, k, p, ldp, v, ldv, o, ldo);
}
__attribute__((flatten)) void pv_sse2(int rows, int width, int k, const float* p, std::int64_t ldp, const float* v,
                                      std::int64_t ldv, float* o, std::int64_t ldo) {
  pv_impl<Sse2, 3, 4>(rows, width, k, p, ldp, v, ldv, o, ldo);
}

const Products kProducts[] = {
    {scores_sse2, pv_sse2, "SSE2"}, {scores_avx2, pv_avx2, "AVX2"}, {scores_avx512, pv_avx512, "AVX-512"}};

// The instruction set the products run with: the best the CPU has, unless a test chose one.
std::atomic<int>& products_choice() {
  static std::atomic<int> choice{static_cast<int>(best_isa())};
  return choice;
}
const Products& products() { return kProducts[products_choice().load(std::memory_order_relaxed)]; }

}  // namespace

namespace {
// One panel: keys [j0, j0 + n) (n <= 16) of K into [dim][16], zero keys after n.
template <class T, class Widen>
AJ_INLINE void pack_panel(const T* k, std::int64_t row_stride, std::int64_t col_stride, int n, int dim, float* dst,
                          Widen widen) {
  const T* rows[kLanes];
  for (int j = 0; j < kLanes; ++j) rows[j] = k + (j < n ? j : 0) * row_stride;
  if (n == kLanes) {
    for (int d = 0; d < dim; ++d)
#pragma GCC unroll 16
      for (int j = 0; j < kLanes; ++j) dst[d * kLanes + j] = widen(rows[j][d * col_stride]);
    return;
  }
  for (int d = 0; d < dim; ++d)
    for (int j = 0; j < kLanes; ++j) dst[d * kLanes + j] = j < n ? widen(rows[j][d * col_stride]) : 0.0f;
}
}  // namespace

AJ_CPU_CLONES void pack_keys(Storage storage, const void* base, std::int64_t row_stride, std::int64_t col_stride,
                             int cols, int dim, float* packed) {
  if (storage == Storage::F32 && col_stride == 1 && bf16_products_available()) {
    // fp32 keys are 32-bit words, as bf16 pairs are: the same 16 x 16 register transposes. A
    // 256-key window in fp32 spent 14% of its time packing keys element by element (it packs
    // about twice the keys per admitted pair that causal does).
    pack_keys_bf16(static_cast<const std::uint32_t*>(base), row_stride, cols, 2 * dim,
                   reinterpret_cast<std::uint32_t*>(packed));
    return;
  }
  for (int j0 = 0; j0 < cols; j0 += kLanes) {
    const int n = std::min(kLanes, cols - j0);
    float* dst = packed + static_cast<std::int64_t>(j0) * dim;
    switch (storage) {
      case Storage::F32:
        pack_panel(static_cast<const float*>(base) + j0 * row_stride, row_stride, col_stride, n, dim, dst,
                   [](float x) { return x; });
        break;
      case Storage::F16:
        pack_panel(static_cast<const _Float16*>(base) + j0 * row_stride, row_stride, col_stride, n, dim, dst,
                   [](_Float16 x) { return static_cast<float>(x); });
        break;
      case Storage::BF16:
        pack_panel(static_cast<const std::uint16_t*>(base) + j0 * row_stride, row_stride, col_stride, n, dim, dst,
                   [](std::uint16_t x) { return bf16_to_float(x); });
        break;
    }
  }
}

void scores(int rows, int cols, int dim, float alpha, const float* q, std::int64_t ldq, const float* packed, float* s,
            std::int64_t lds) {
  products().scores(rows, cols, dim, alpha, q, ldq, packed, s, lds);
}

void accumulate_pv(int rows, int width, int k, const float* p, std::int64_t ldp, const float* v, std::int64_t ldv,
                   float* o, std::int64_t ldo) {
  products().pv(rows, width, k, p, ldp, v, ldv, o, ldo);
}

Isa best_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
  return Isa::Sse2;
}

Isa products_isa() { return static_cast<Isa>(products_choice().load()); }

void use_products_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_isa()))
    throw UserError(fmt::format("this CPU cannot run the {} micro-kernels; it has {} at best",
                                kProducts[static_cast<int>(isa)].name, kProducts[static_cast<int>(best_isa())].name));
  products_choice().store(static_cast<int>(isa));
}

std::string gemm_backend() {
  std::string s = fmt::format("built-in {} micro-kernels", products().name);
  if (amx_products_available())
    s += " (bf16: AMX tiles)";
  else if (bf16_products_available())
    s += " (bf16: vdpbf16ps)";
  return s;
}

}  // namespace attnjit::cpu
