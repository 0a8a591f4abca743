// The CPU backend's tile operations, all in fp32: loads that widen bf16 / fp16 / fp32 tiles
// (any strides) to fp32 once, the two products of attention (S = scale * Q K^T and
// O += P V) as register-blocked micro-kernels (K packed once per tile), the online
// softmax's row operations (a vectorized exp), and the rounding store.
//
// The loops are compiled for several instruction sets (AVX-512, AVX2 + FMA, baseline x86-64)
// and the best one the CPU has is picked when the library loads (GCC's target_clones), so the
// library itself stays built for any x86-64.
#pragma once

#include <cstdint>
#include <string>

namespace attnjit::cpu {

// The element type of Q, K, V and O in memory.
enum class Storage : int { F32, F16, BF16 };

// out[r * ld + c] = element (r, c) of a rows x cols tile at `base` (strides in elements).
void load_tile(Storage storage, const void* base, std::int64_t row_stride, std::int64_t col_stride, int rows, int cols,
               float* out, std::int64_t ld);
// Element (r, c) of the tile at `base` = in[r * ld + c] (times row_scale[r] when given, in
// fp32) rounded (to nearest even) once.
void store_tile(Storage storage, const float* in, std::int64_t ld, int rows, int cols, void* base,
                std::int64_t row_stride, std::int64_t col_stride, const float* row_scale = nullptr);

// Keys per panel of a packed K tile: panel p holds keys 16p .. 16p + 15 as [dim][16].
constexpr int kKeyPanel = 16;
inline std::int64_t packed_keys_floats(int cols, int dim) {
  return static_cast<std::int64_t>((cols + kKeyPanel - 1) / kKeyPanel) * kKeyPanel * dim;
}
// Widens `cols` keys (rows of K at `base`) to fp32 into panels; the last panel is padded with
// zero keys.
void pack_keys(Storage storage, const void* base, std::int64_t row_stride, std::int64_t col_stride, int cols, int dim,
               float* packed);

// S[rows x cols] = alpha * Q K^T with Q fp32 rows (ldq) and K packed by pack_keys. Writes
// whole panels: columns up to the next multiple of 16 (zero keys give scores of 0 there).
void scores(int rows, int cols, int dim, float alpha, const float* q, std::int64_t ldq, const float* packed, float* s,
            std::int64_t lds);
// O[rows x width] += P[rows x k] V[k x width], all fp32 rows; `width` a multiple of 16.
void accumulate_pv(int rows, int width, int k, const float* p, std::int64_t ldp, const float* v, std::int64_t ldv,
                   float* o, std::int64_t ldo);

float max_of(const float* x, int n);  // -inf for n == 0
// x[i] = exp(scale * x[i] - shift) (exactly 0 where x[i] is -inf); returns the sum. `shift` is
// finite, `scale` positive (scores left unscaled by the products take the softmax scale here).
float exp_shifted_sum(float* x, int n, float shift, float scale = 1.0f);
void scale_in_place(float* x, int n, float factor);

// The instruction sets the products are built for, in increasing order.
enum class Isa : int { Sse2, Avx2, Avx512 };
Isa best_isa();      // the best this CPU runs
Isa products_isa();  // the one in use: best_isa() unless use_products_isa chose another
// Runs the products with `isa` from now on, process-wide (tests of every path; benchmarks).
// UserError when the CPU lacks it.
void use_products_isa(Isa isa);

// "built-in AVX-512 micro-kernels": what computes the products on this CPU.
std::string gemm_backend();

// ---- AMX tiles for the bf16 products (runtime/cpu/cpu_kernels_amx.cpp) --------------------
bool amx_products_supported();  // the CPU has AMX-BF16 and the OS granted the tile state
bool amx_products_available();  // supported, not turned off, and bf16_products_available()
// Turns the tiles on or off process-wide (tests of both paths; benchmarks). UserError when
// turned on where they are not supported.
void use_amx_products(bool on);
// The tiles' share of scores_bf16 / accumulate_pv_bf16: `rows` a multiple of 16, any `panels`,
// `pairs` (words per row of Q) of 16; O over `steps` x 16 pairs of P and V, `width` a multiple
// of 32. Same operands as the vdpbf16ps path.
void scores_amx(int rows, int panels, int pairs, float alpha, const std::uint32_t* q, std::int64_t ldq,
                const std::uint32_t* packed, float* s, std::int64_t lds);
void accumulate_pv_amx(int rows, int width, int steps, const std::uint32_t* p, std::int64_t ldp, const std::uint32_t* v,
                       float* o, std::int64_t ldo);

// ---- bf16 dot products (runtime/cpu/cpu_kernels_bf16.cpp) ---------------------------------
// For bf16 storage where the CPU has AVX512_BF16 (vdpbf16ps: two exact bf16 products added to
// an fp32 lane, twice the multiply-adds per instruction of the fp32 path). Operands are words of
// two bf16 consecutive along the reduction; an odd length pads the last word with a zero.
// P is rounded to bf16 before P V, as the GPU kernels round it.
bool bf16_products_available();  // the CPU has it and products_isa() is Avx512
// Rows of a bf16 matrix (strides in elements), or fp32 rows rounded, as (dim + 1) / 2 words each.
void pack_rows_bf16(const std::uint16_t* base, std::int64_t row_stride, std::int64_t col_stride, int rows, int dim,
                    std::uint32_t* out, std::int64_t ld);
void pack_rows_bf16(const float* in, std::int64_t ld_in, int rows, int dim, std::uint32_t* out, std::int64_t ld);
// Keys (rows of words from pack_rows_bf16) into panels of 16 keys, [pairs][16]; zero keys pad.
void pack_keys_bf16(const std::uint32_t* rows, std::int64_t ld, int cols, int dim, std::uint32_t* packed);
// V rows [k x dim_v] as [(k + 1) / 2][width] words (the two keys of a pair per column); columns
// dim_v..width are zero.
void pack_values_bf16(const std::uint16_t* base, std::int64_t row_stride, std::int64_t col_stride, int k, int dim_v,
                      int width, std::uint32_t* packed);
// exp_shifted_sum with P written straight as (n + 1) / 2 words of bf16 pairs along the keys
// (rounded to nearest even; an odd n pads the last word with a zero) instead of in place; the
// sum is of the fp32 values, as exp_shifted_sum's. Its exp is exp2 of a degree-6 polynomial
// (relative error ~1e-7, five orders below the bf16 rounding that follows).
float exp_shifted_sum_bf16(const float* x, int n, float shift, float scale, std::uint32_t* words);
// max_of and exp_shifted_sum_bf16 of one row of 1..kShortRowKeys keys in one call, the row held
// in registers between the two: *m_new = max(m_old, scale * max(x)); then, unless that is
// -inf (P all zero, returns 0), P = exp(scale * x - *m_new) as words and their fp32 sum. A
// band's 16-row slices (272 keys) paid a second pass over the row and two calls per row.
constexpr int kShortRowKeys = 320;
float softmax_short_row_bf16(const float* x, int n, float scale, float m_old, float* m_new, std::uint32_t* words);
// The same for fp32 products: P = exp(scale * x - *m_new) in place (as exp_shifted_sum's).
float softmax_short_row(float* x, int n, float scale, float m_old, float* m_new);
// S = alpha * Q K^T (whole panels written, as scores()); O += P V (width a multiple of 16).
// Where the CPU has AMX-BF16 tiles (amx_products_available) their whole blocks of 16 rows run on
// the tiles (runtime/cpu/cpu_kernels_amx.cpp), the rest on vdpbf16ps.
void scores_bf16(int rows, int cols, int dim, float alpha, const std::uint32_t* q, std::int64_t ldq,
                 const std::uint32_t* packed, float* s, std::int64_t lds);
void accumulate_pv_bf16(int rows, int width, int k, const std::uint32_t* p, std::int64_t ldp, const std::uint32_t* v,
                        float* o, std::int64_t ldo);

}  // namespace attnjit::cpu
