// The CPU backend's bf16 products (see cpu_kernels.hpp, "bf16 dot products").
//
// vdpbf16ps (AVX512_BF16) multiplies pairs of bf16 and adds both products to an fp32 lane:
// 32 multiply-adds per instruction where the fp32 path's FMA does 16. Operands are packed so
// that each 32-bit word holds the two elements of one reduction step: Q rows and P rows as
// consecutive pairs (a word broadcast per row), K as panels of 16 keys [pairs][16], V as
// [pairs][width] (a load gives 16 columns). Micro-tiles as the fp32 path: S 8 rows x 2
// panels, O 4 rows x 4 vectors of 16 columns.
// GCC 12's vmaxps / vrndscaleps / vscalefps / reduce intrinsics pass _mm512_undefined_*() as
// their unused merge source, which -W(maybe-)uninitialized reports (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/cpu/cpu_kernels.hpp"

#define AJ_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

namespace attnjit::cpu {
namespace {

constexpr int kLanes = 16;

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline std::uint32_t pair(std::uint16_t lo, std::uint16_t hi) {
  return static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
}

template <int R, int W>
AJ_BF16 inline void score_tile(const std::uint32_t* q, std::int64_t ldq, const std::uint32_t* kp, int pairs,
                               float alpha, float* s, std::int64_t lds) {
  __m512 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_setzero_ps();
  for (int i = 0; i < pairs; ++i) {
    __m512bh b[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w)
      b[w] = (__m512bh)_mm512_loadu_si512(kp + static_cast<std::int64_t>(w) * pairs * kLanes + i * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[r * ldq + i]));
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_dpbf16_ps(acc[r][w], a, b[w]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(s + r * lds + w * kLanes, _mm512_mul_ps(acc[r][w], scale));
}

template <int R, int W>
AJ_BF16 inline void score_rows(int rows, int pairs, float alpha, const std::uint32_t* q, std::int64_t ldq,
                               const std::uint32_t* kp, float* s, std::int64_t lds) {
  int i = 0;
  for (; i + R <= rows; i += R) score_tile<R, W>(q + i * ldq, ldq, kp, pairs, alpha, s + i * lds, lds);
  for (; i < rows; ++i) score_tile<1, W>(q + i * ldq, ldq, kp, pairs, alpha, s + i * lds, lds);
}

template <int R, int W>
AJ_BF16 inline void pv_tile(const std::uint32_t* p, std::int64_t ldp, const std::uint32_t* v, int width, int pairs,
                            float* o, std::int64_t ldo) {
  __m512 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_loadu_ps(o + r * ldo + w * kLanes);
  for (int i = 0; i < pairs; ++i) {
    __m512bh b[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w)
      b[w] = (__m512bh)_mm512_loadu_si512(v + static_cast<std::int64_t>(i) * width + w * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(p[r * ldp + i]));
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_dpbf16_ps(acc[r][w], a, b[w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(o + r * ldo + w * kLanes, acc[r][w]);
}

template <int R, int W>
AJ_BF16 inline void pv_rows(int rows, int width, int pairs, const std::uint32_t* p, std::int64_t ldp,
                            const std::uint32_t* v, float* o, std::int64_t ldo) {
  int i = 0;
  for (; i + R <= rows; i += R) pv_tile<R, W>(p + i * ldp, ldp, v, width, pairs, o + i * ldo, ldo);
  for (; i < rows; ++i) pv_tile<1, W>(p + i * ldp, ldp, v, width, pairs, o + i * ldo, ldo);
}

}  // namespace

bool bf16_products_available() {
  static const bool here = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return here && products_isa() == Isa::Avx512;
}

void pack_rows_bf16(const std::uint16_t* base, std::int64_t row_stride, std::int64_t col_stride, int rows, int dim,
                    std::uint32_t* out, std::int64_t ld) {
  const int pairs = (dim + 1) / 2;
  for (int r = 0; r < rows; ++r) {
    const std::uint16_t* src = base + r * row_stride;
    std::uint32_t* dst = out + r * ld;
    if (col_stride == 1 && dim % 2 == 0) {
      std::memcpy(dst, src, sizeof(std::uint32_t) * static_cast<std::size_t>(pairs));
      continue;
    }
    for (int i = 0; i < pairs; ++i) {
      const int d = 2 * i;
      dst[i] = pair(src[d * col_stride], d + 1 < dim ? src[(d + 1) * col_stride] : 0);
    }
  }
}

void pack_rows_bf16(const float* in, std::int64_t ld_in, int rows, int dim, std::uint32_t* out, std::int64_t ld) {
  const int pairs = (dim + 1) / 2;
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < pairs; ++i) {
      const int d = 2 * i;
      out[r * ld + i] = pair(float_to_bf16(in[r * ld_in + d]), d + 1 < dim ? float_to_bf16(in[r * ld_in + d + 1]) : 0);
    }
}

// A panel's 16 keys x `pairs` words, transposed 16 x 16 words at a time in registers (three
// rounds of in-lane unpacks and 128-bit lane shuffles). Gathers did the same at a word per
// lane and cost a band (a sliding window, which packs twice the keys per pair of causal) 13%
// of its time on the development machine. Keys past `cols` and words past `pairs` are zero.
AJ_BF16 void pack_keys_bf16(const std::uint32_t* rows, std::int64_t ld, int cols, int dim, std::uint32_t* packed) {
  const int pairs = (dim + 1) / 2;
  for (int j0 = 0; j0 < cols; j0 += kLanes) {
    const int keys = std::min(kLanes, cols - j0);
    std::uint32_t* dst = packed + static_cast<std::int64_t>(j0) * pairs;
    for (int i0 = 0; i0 < pairs; i0 += kLanes) {
      const int words = std::min(kLanes, pairs - i0);
      const __mmask16 in = words == kLanes ? 0xffff : static_cast<__mmask16>((1u << words) - 1u);
      __m512i r[kLanes], t[kLanes];
      for (int j = 0; j < kLanes; ++j)
        r[j] = j < keys ? _mm512_maskz_loadu_epi32(in, rows + static_cast<std::int64_t>(j0 + j) * ld + i0)
                        : _mm512_setzero_si512();
      // Pairs of rows interleaved by word, then by two words: t[4g + c] holds words c, c + 4,
      // c + 8 and c + 12 (one per 128-bit lane) of rows 4g .. 4g + 3.
      for (int j = 0; j < kLanes; j += 2) {
        t[j] = _mm512_unpacklo_epi32(r[j], r[j + 1]);
        t[j + 1] = _mm512_unpackhi_epi32(r[j], r[j + 1]);
      }
      for (int g = 0; g < kLanes; g += 4) {
        r[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        r[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        r[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        r[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
      }
      // Word c + 4L of every row: lane L of each group's r[4g + c], groups in order.
      for (int c = 0; c < 4; ++c) {
        const __m512i lo01 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44),
                      lo23 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
        const __m512i hi01 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xee),
                      hi23 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xee);
        const __m512i word[4] = {_mm512_shuffle_i32x4(lo01, lo23, 0x88), _mm512_shuffle_i32x4(lo01, lo23, 0xdd),
                                 _mm512_shuffle_i32x4(hi01, hi23, 0x88), _mm512_shuffle_i32x4(hi01, hi23, 0xdd)};
        for (int l = 0; l < 4; ++l)
          if (c + 4 * l < words) _mm512_storeu_si512(dst + static_cast<std::int64_t>(i0 + c + 4 * l) * kLanes, word[l]);
      }
    }
  }
}

// With unit column strides, 32 columns of two rows interleave into 32 words with two
// vpermt2w; otherwise element by element.
AJ_BF16 void pack_values_bf16(const std::uint16_t* base, std::int64_t row_stride, std::int64_t col_stride, int k,
                              int dim_v, int width, std::uint32_t* packed) {
  const int pairs = (k + 1) / 2;
  // Word m of the first (second) half: column m (16 + m) of the first row, then of the second.
  alignas(64) std::uint16_t lo_index[32], hi_index[32];
  for (int m = 0; m < 16; ++m) {
    lo_index[2 * m] = static_cast<std::uint16_t>(m), lo_index[2 * m + 1] = static_cast<std::uint16_t>(32 + m);
    hi_index[2 * m] = static_cast<std::uint16_t>(16 + m), hi_index[2 * m + 1] = static_cast<std::uint16_t>(48 + m);
  }
  const __m512i lo_idx = _mm512_load_si512(lo_index), hi_idx = _mm512_load_si512(hi_index);
  for (int i = 0; i < pairs; ++i) {
    const std::uint16_t* r0 = base + static_cast<std::int64_t>(2 * i) * row_stride;
    const std::uint16_t* r1 = 2 * i + 1 < k ? r0 + row_stride : nullptr;
    std::uint32_t* dst = packed + static_cast<std::int64_t>(i) * width;
    int d = 0;
    if (col_stride == 1)
      for (; d < dim_v; d += 32) {
        const int n = std::min(32, dim_v - d);
        const __mmask32 m = n == 32 ? 0xffffffffu : static_cast<__mmask32>((1u << n) - 1u);
        const __m512i a = _mm512_maskz_loadu_epi16(m, r0 + d);
        const __m512i b = r1 ? _mm512_maskz_loadu_epi16(m, r1 + d) : _mm512_setzero_si512();
        const __mmask16 lo_words = n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1u);
        const __mmask16 hi_words = n > 16 ? static_cast<__mmask16>((1u << (n - 16)) - 1u) : 0;
        _mm512_mask_storeu_epi32(dst + d, lo_words, _mm512_permutex2var_epi16(a, lo_idx, b));
        _mm512_mask_storeu_epi32(dst + d + 16, hi_words, _mm512_permutex2var_epi16(a, hi_idx, b));
      }
    for (; d < dim_v; ++d) dst[d] = pair(r0[d * col_stride], r1 ? r1[d * col_stride] : 0);
    std::fill(dst + dim_v, dst + width, 0u);
  }
}

// exp2 of 16 lanes (t >= -200): 2^t = 2^n * 2^r, n = round(t), |r| <= 1/2, 2^r by its Taylor
// polynomial of degree 6 (relative error below 1.2e-7), 2^n applied by vscalefps (which also
// takes t = -200 to exactly 0).
AJ_BF16 inline __m512 exp2_lanes(__m512 t) {
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.5403530393381609e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146428443e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291076284772e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504108664821580e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650695910071e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718055994531e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

AJ_BF16 float exp_shifted_sum_bf16(const float* x, int n, float shift, float scale, std::uint32_t* words) {
  // exp(scale * x - shift) = 2^(x * scale log2 e - shift log2 e); -inf (and anything below
  // 2^-200) gives exactly 0.
  const __m512 a = _mm512_set1_ps(scale * 1.44269504088896341f), c = _mm512_set1_ps(-shift * 1.44269504088896341f);
  const __m512 low = _mm512_set1_ps(-200.0f);
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    const __m512 lo = exp2_lanes(_mm512_max_ps(_mm512_fmadd_ps(_mm512_loadu_ps(x + i), a, c), low));
    const __m512 hi = exp2_lanes(_mm512_max_ps(_mm512_fmadd_ps(_mm512_loadu_ps(x + i + kLanes), a, c), low));
    acc = _mm512_add_ps(acc, _mm512_add_ps(lo, hi));
    _mm512_storeu_si512(words + i / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  // The last 1..31 keys under masks: lanes past them are zero, so an odd count pads its last
  // word with a zero, and only (left + 1) / 2 words are written.
  const int left = n - i;
  if (left > 0) {
    const __mmask16 m0 = left >= kLanes ? 0xffff : static_cast<__mmask16>((1u << left) - 1u);
    const __mmask16 m1 = left > kLanes ? static_cast<__mmask16>((1u << (left - kLanes)) - 1u) : 0;
    const __mmask16 out = static_cast<__mmask16>((1u << ((left + 1) / 2)) - 1u);
    const __m512 lo = _mm512_maskz_mov_ps(
        m0, exp2_lanes(_mm512_max_ps(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, x + i), a, c), low)));
    // A tail of at most 16 keys (a band's 17th panel) leaves the upper vector's exp out.
    const __m512 hi =
        m1 == 0
            ? _mm512_setzero_ps()
            : _mm512_maskz_mov_ps(
                  m1, exp2_lanes(_mm512_max_ps(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, x + i + kLanes), a, c), low)));
    acc = _mm512_add_ps(acc, _mm512_add_ps(lo, hi));
    _mm512_mask_storeu_epi32(words + i / 2, out, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  return _mm512_reduce_add_ps(acc);
}

namespace {

// softmax_short_row_bf16 for a row of V vectors (16 (V - 1) < n <= 16 V keys), held in
// registers between the max and the exp.
template <int V>
AJ_BF16 float short_row(const float* x, int n, float scale, float m_old, float* m_new, std::uint32_t* words) {
  const int last = n - kLanes * (V - 1);  // 1..16 keys in the last vector
  const __mmask16 tail = last == kLanes ? 0xffff : static_cast<__mmask16>((1u << last) - 1u);
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 v[V];
#pragma GCC unroll 32
  for (int i = 0; i + 1 < V; ++i) v[i] = _mm512_loadu_ps(x + kLanes * i);
  v[V - 1] = _mm512_mask_loadu_ps(neg_inf, tail, x + kLanes * (V - 1));  // lanes past n: -inf
  __m512 mx = v[0];
#pragma GCC unroll 32
  for (int i = 1; i < V; ++i) mx = _mm512_max_ps(mx, v[i]);
  const float m = std::max(m_old, _mm512_reduce_max_ps(mx) * scale);
  *m_new = m;
  if (m == -std::numeric_limits<float>::infinity()) {  // nothing admitted yet: P = 0
    std::fill_n(words, (n + 1) / 2, 0u);
    return 0.0f;
  }
  const __m512 a = _mm512_set1_ps(scale * 1.44269504088896341f), c = _mm512_set1_ps(-m * 1.44269504088896341f);
  const __m512 low = _mm512_set1_ps(-200.0f);
  __m512 acc = _mm512_setzero_ps();
#pragma GCC unroll 32
  for (int i = 0; i < V; i += 2) {
    const __m512 lo = exp2_lanes(_mm512_max_ps(_mm512_fmadd_ps(v[i], a, c), low));
    const __m512 hi = i + 1 < V ? exp2_lanes(_mm512_max_ps(_mm512_fmadd_ps(v[i + 1], a, c), low)) : _mm512_setzero_ps();
    acc = _mm512_add_ps(acc, _mm512_add_ps(lo, hi));
    const int keys = std::min(2 * kLanes, n - kLanes * i);  // this pair of vectors' keys
    const __mmask16 out = keys == 2 * kLanes ? 0xffff : static_cast<__mmask16>((1u << ((keys + 1) / 2)) - 1u);
    _mm512_mask_storeu_epi32(words + kLanes * i / 2, out, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  return _mm512_reduce_add_ps(acc);
}

template <int... V>
constexpr auto short_row_table(std::integer_sequence<int, V...>) {
  return std::array<float (*)(const float*, int, float, float, float*, std::uint32_t*), sizeof...(V)>{
      &short_row<V + 1>...};
}

}  // namespace

AJ_BF16 float softmax_short_row_bf16(const float* x, int n, float scale, float m_old, float* m_new,
                                     std::uint32_t* words) {
  static constexpr auto table = short_row_table(std::make_integer_sequence<int, kShortRowKeys / kLanes>());
  return table[static_cast<std::size_t>((n + kLanes - 1) / kLanes - 1)](x, n, scale, m_old, m_new, words);
}

AJ_BF16 void scores_bf16(int rows, int cols, int dim, float alpha, const std::uint32_t* q, std::int64_t ldq,
                         const std::uint32_t* packed, float* s, std::int64_t lds) {
  const int pairs = (dim + 1) / 2;
  const int panels = (cols + kLanes - 1) / kLanes;
  if (pairs % 16 == 0 && rows >= 16 && amx_products_available()) {
    // Whole blocks of 16 rows on the AMX tiles; the rows past them below.
    const int tile_rows = rows / 16 * 16;
    scores_amx(tile_rows, panels, pairs, alpha, q, ldq, packed, s, lds);
    if (tile_rows < rows)
      scores_bf16(rows - tile_rows, cols, dim, alpha, q + static_cast<std::int64_t>(tile_rows) * ldq, ldq, packed,
                  s + static_cast<std::int64_t>(tile_rows) * lds, lds);
    return;
  }
  int p = 0;
  for (; p + 2 <= panels; p += 2)
    score_rows<8, 2>(rows, pairs, alpha, q, ldq, packed + static_cast<std::int64_t>(p) * pairs * kLanes, s + p * kLanes,
                     lds);
  for (; p < panels; ++p)
    score_rows<8, 1>(rows, pairs, alpha, q, ldq, packed + static_cast<std::int64_t>(p) * pairs * kLanes, s + p * kLanes,
                     lds);
}

AJ_BF16 void accumulate_pv_bf16(int rows, int width, int k, const std::uint32_t* p, std::int64_t ldp,
                                const std::uint32_t* v, float* o, std::int64_t ldo) {
  const int pairs = (k + 1) / 2, vectors = width / kLanes;
  if (rows >= 16 && pairs >= 16 && width % 32 == 0 && amx_products_available()) {
    // Whole steps of 16 pairs for whole blocks of 16 rows on the AMX tiles; their last pairs
    // and the rows past them below.
    const int tile_rows = rows / 16 * 16, steps = pairs / 16;
    accumulate_pv_amx(tile_rows, width, steps, p, ldp, v, o, ldo);
    if (steps * 16 < pairs)
      accumulate_pv_bf16(tile_rows, width, k - steps * 32, p + steps * 16, ldp,
                         v + static_cast<std::int64_t>(steps) * 16 * width, o, ldo);
    if (tile_rows < rows)
      accumulate_pv_bf16(rows - tile_rows, width, k, p + static_cast<std::int64_t>(tile_rows) * ldp, ldp, v,
                         o + static_cast<std::int64_t>(tile_rows) * ldo, ldo);
    return;
  }
  int j = 0;
  // Rows of 128 floats or more: 8 rows x 2 vectors, so that a 32-column slab of V (17 KiB over
  // a band's 136 key pairs) stays in L1 while every 8 rows pass; 4 x 4 read a 64-column slab
  // (35 KiB) from L2 for every 4 rows. Development machine, D=128 bf16, alternating libraries:
  // window 3.43 -> 3.16 ms, causal 11.18 -> 10.84, dense 22.6 -> 21.1. At D=64 (the whole row
  // 4 vectors) 4 x 4 stays (window 1.73 against 1.77).
  if (width >= 128)
    for (; j + 2 <= vectors; j += 2) pv_rows<8, 2>(rows, width, pairs, p, ldp, v + j * kLanes, o + j * kLanes, ldo);
  for (; j + 4 <= vectors; j += 4) pv_rows<4, 4>(rows, width, pairs, p, ldp, v + j * kLanes, o + j * kLanes, ldo);
  for (; j < vectors; ++j) pv_rows<4, 1>(rows, width, pairs, p, ldp, v + j * kLanes, o + j * kLanes, ldo);
}

}  // namespace attnjit::cpu
