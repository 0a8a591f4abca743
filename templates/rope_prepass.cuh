// attnjit: RoPE pre-passes of the forward templates: K (fwd_sm80, fwd_sm90) and Q (fwd_sm90,
// whose TMA copies tiles as they are) rotated once into the workspace, where the forward
// kernel reads them. Pasted after sm80_dtype.cuh and rope_pairs.cuh in units whose variant has
// RoPE.
//
// Rows that start on 16 bytes (any layout with R % 16 == 0) go through turn_unit, 16 bytes at a
// time (8 pairs, or 8 copied elements, per unit), the frequencies in a per-CTA table. Otherwise
// each thread turns one pair j of every AJ_ROPE_PREPASS_THREADS * gridDim.x / (D / 2)-th row
// (a grid-stride loop; where the stride is a multiple of D / 2, j stays the thread's): a rotated
// pair turns by its position (the hooks aj_rope_q_position / aj_rope_kv_position) times
// aj_rope_inv_freq(j) in fp32 (rope_sincos, as fwd_sm80 turns its Q rows) and is rounded to the
// input dtype; the dimensions past the rotary ones are copied. The frequency, an fp64 exp2, is
// computed once per thread (once per pair where D / 2 does not divide the block, D=96): once
// per pair it made the passes compute-bound (H200, 2026-11-29:
// 72 us per pass at D=128 S=4k for 64 MB, at 73% of the SM's issue). The host sizes
// gridDim.x to give each thread about AJ_ROPE_PREPASS_ROWS rows (any size is correct).
// Grid: (ceil(rows * D / 2 / (AJ_ROPE_PREPASS_THREADS * AJ_ROPE_PREPASS_ROWS)), heads, batch).
#ifndef ATTNJIT_ROPE_PREPASS_CUH
#define ATTNJIT_ROPE_PREPASS_CUH
#if AJ_HAS_ROPE

#define AJ_ROPE_PREPASS_THREADS 256
#define AJ_ROPE_PREPASS_ROWS 16  // pairs per thread (the host launches so: rope_prepass/rope_prepass_plan.hpp)

namespace aj_rope_prepass {
using aj_sm80::load_element;
using aj_sm80::store_element;
constexpr int D = AJ_HEAD_DIM;
constexpr bool kFixedPair = AJ_ROPE_PREPASS_THREADS % (D / 2) == 0;  // a thread keeps its pair

// The pair of element pair index idx and its frequency: the thread's own where kFixedPair.
__device__ __forceinline__ float frequency(aj_i64 idx, int& pair, float fixed) {
  if (kFixedPair) return fixed;
  pair = (int)(idx % (D / 2));
  return aj_rope_inv_freq(pair);
}

// One pair of a row from src to dst ([.., rows, D] contiguous), turned by inv_freq.
__device__ __forceinline__ void turn_pair(const aj_u16* src, aj_u16* dst, int pair, int position, float inv_freq) {
  int e0, e1;  // the two elements of this pair
  bool turns;
  aj_rope::rope_pair(pair, e0, e1, turns);
  float x0 = load_element(src + e0), x1 = load_element(src + e1);
  if (turns) aj_rope::rope_turn_by(x0, x1, position, inv_freq);
  dst[e0] = store_element(x0);
  dst[e1] = store_element(x1);
}

// The 16-byte path: a unit is 8 rotated pairs (half layout: the pieces [8u, 8u + 8) and
// [R/2 + 8u, R/2 + 8u + 8); interleaved: [16u, 16u + 16)) or, past the R rotary dimensions, 8
// copied elements, so a thread moves 16 bytes per access instead of 2. It needs R % 16 == 0
// and rows that start on 16 bytes (rows_aligned); the pair-at-a-time loop serves the rest.
constexpr int kRotUnits = AJ_ROPE_DIM / 16;
constexpr int kUnits = kRotUnits + (D - AJ_ROPE_DIM) / 8;
constexpr bool kUnitLayout = AJ_ROPE_DIM % 16 == 0 && D % 8 == 0;
struct alignas(16) Piece {
  aj_u16 e[8];
};

// Every row of `base` + b * s[0] + h * s[1] + row * s[2] (elements) starts on 16 bytes.
__device__ __forceinline__ bool rows_aligned(const void* base, const long long (&s)[3]) {
  return ((unsigned long long)base & 15u) == 0 && ((s[0] | s[1] | s[2]) & 7) == 0;
}

// aj_rope_inv_freq(j) of every rotated pair into `table` (shared), once per CTA: every
// thread of the CTA must call it (a barrier).
__device__ __forceinline__ void fill_frequencies(float* table) {
  for (int j = threadIdx.x; j < AJ_ROPE_DIM / 2; j += blockDim.x) table[j] = aj_rope_inv_freq(j);
  __syncthreads();
}

// Unit `unit` of a row from src to dst, turned by the frequencies in `table`.
__device__ __forceinline__ void turn_unit(const aj_u16* src, aj_u16* dst, int unit, int position,
                                          const float* table) {
  if (unit >= kRotUnits) {
    const int e = AJ_ROPE_DIM + 8 * (unit - kRotUnits);
    *(Piece*)(dst + e) = *(const Piece*)(src + e);
    return;
  }
  const int ea = AJ_ROPE_INTERLEAVED ? 16 * unit : 8 * unit;
  const int ec = AJ_ROPE_INTERLEAVED ? ea + 8 : AJ_ROPE_DIM / 2 + 8 * unit;
  Piece a = *(const Piece*)(src + ea), c = *(const Piece*)(src + ec);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    // Pair 8 unit + i: (a[i], c[i]) in the half layout, elements 2i and 2i + 1 of a, c in turn.
    aj_u16& u0 = AJ_ROPE_INTERLEAVED ? (i < 4 ? a.e[2 * i] : c.e[2 * i - 8]) : a.e[i];
    aj_u16& u1 = AJ_ROPE_INTERLEAVED ? (i < 4 ? a.e[2 * i + 1] : c.e[2 * i - 7]) : c.e[i];
    float x0 = load_element(&u0), x1 = load_element(&u1);
    aj_rope::rope_turn_by(x0, x1, position, table[8 * unit + i]);
    u0 = store_element(x0);
    u1 = store_element(x1);
  }
  *(Piece*)(dst + ea) = a;
  *(Piece*)(dst + ec) = c;
}
}  // namespace aj_rope_prepass

// K into args.rope_k, [batch, heads_kv, seq_k, D]. In a ragged batch sequence b's keys come
// from its rows of the packed K and land at rows [0, its length) of its padded
// [seq_k = max_seqlen_k] block, at their positions within the sequence.
extern "C" __global__ void __launch_bounds__(AJ_ROPE_PREPASS_THREADS) attnjit_rope_k(const AttnjitFwdArgs args) {
  using aj_rope_prepass::D;
  const int hk = blockIdx.y, b = blockIdx.z;
  const aj_i64 first = (aj_i64)blockIdx.x * AJ_ROPE_PREPASS_THREADS + threadIdx.x;
  const aj_i64 stride = (aj_i64)gridDim.x * AJ_ROPE_PREPASS_THREADS;  // pairs per step of the loop
#if AJ_RAGGED
  const aj_i64 k_start = args.cu_seqlens_k[b];
#else
  const aj_i64 k_start = 0;
#endif
  if (aj_rope_prepass::kUnitLayout && aj_rope_prepass::rows_aligned(args.k, args.k_stride)) {
    using aj_rope_prepass::kUnits;
    __shared__ float table[D / 2];
    aj_rope_prepass::fill_frequencies(table);
    const aj_i64 units = (aj_i64)aj_seq_len_k(b, args) * kUnits;
    for (aj_i64 idx = first; idx < units; idx += stride) {
      const int row = (int)(idx / kUnits);
      const aj_u16* src =
          (const aj_u16*)args.k + b * args.k_stride[0] + hk * args.k_stride[1] + (k_start + row) * args.k_stride[2];
      aj_u16* dst = (aj_u16*)args.rope_k + (((aj_i64)b * args.heads_kv + hk) * args.seq_k + row) * D;
      aj_rope_prepass::turn_unit(src, dst, (int)(idx % kUnits), aj_rope_kv_position(b, row, args), table);
    }
    return;
  }
  const aj_i64 total = (aj_i64)aj_seq_len_k(b, args) * (D / 2);
  int pair = (int)(first % (D / 2));
  const float fixed = aj_rope_prepass::kFixedPair && first < total ? aj_rope_inv_freq(pair) : 0.f;
  for (aj_i64 idx = first; idx < total; idx += stride) {
    const float inv_freq = aj_rope_prepass::frequency(idx, pair, fixed);
    const int row = (int)(idx / (D / 2));
    const aj_u16* src =
        (const aj_u16*)args.k + b * args.k_stride[0] + hk * args.k_stride[1] + (k_start + row) * args.k_stride[2];
    aj_u16* dst = (aj_u16*)args.rope_k + (((aj_i64)b * args.heads_kv + hk) * args.seq_k + row) * D;
    aj_rope_prepass::turn_pair(src, dst, pair, aj_rope_kv_position(b, row, args), inv_freq);
  }
}

#if AJ_ROPE_Q_PREPASS
// Q into args.rope_q, [batch, heads_q, seq_q, D] (not for ragged batches).
extern "C" __global__ void __launch_bounds__(AJ_ROPE_PREPASS_THREADS) attnjit_rope_q(const AttnjitFwdArgs args) {
  using aj_rope_prepass::D;
  const int h = blockIdx.y, b = blockIdx.z;
  const aj_i64 first = (aj_i64)blockIdx.x * AJ_ROPE_PREPASS_THREADS + threadIdx.x;
  const aj_i64 stride = (aj_i64)gridDim.x * AJ_ROPE_PREPASS_THREADS;  // pairs per step of the loop
  if (aj_rope_prepass::kUnitLayout && aj_rope_prepass::rows_aligned(args.q, args.q_stride)) {
    using aj_rope_prepass::kUnits;
    __shared__ float table[D / 2];
    aj_rope_prepass::fill_frequencies(table);
    const aj_i64 units = (aj_i64)args.seq_q * kUnits;
    for (aj_i64 idx = first; idx < units; idx += stride) {
      const int row = (int)(idx / kUnits);
      const aj_u16* src = (const aj_u16*)args.q + b * args.q_stride[0] + h * args.q_stride[1] + row * args.q_stride[2];
      aj_u16* dst = (aj_u16*)args.rope_q + (((aj_i64)b * args.heads_q + h) * args.seq_q + row) * D;
      aj_rope_prepass::turn_unit(src, dst, (int)(idx % kUnits), aj_rope_q_position(b, row, args), table);
    }
    return;
  }
  const aj_i64 total = (aj_i64)args.seq_q * (D / 2);
  int pair = (int)(first % (D / 2));
  const float fixed = aj_rope_prepass::kFixedPair && first < total ? aj_rope_inv_freq(pair) : 0.f;
  for (aj_i64 idx = first; idx < total; idx += stride) {
    const float inv_freq = aj_rope_prepass::frequency(idx, pair, fixed);
    const int row = (int)(idx / (D / 2));
    const aj_u16* src = (const aj_u16*)args.q + b * args.q_stride[0] + h * args.q_stride[1] + row * args.q_stride[2];
    aj_u16* dst = (aj_u16*)args.rope_q + (((aj_i64)b * args.heads_q + h) * args.seq_q + row) * D;
    aj_rope_prepass::turn_pair(src, dst, pair, aj_rope_q_position(b, row, args), inv_freq);
  }
}
#endif  // AJ_ROPE_Q_PREPASS

#endif  // AJ_HAS_ROPE
#endif  // ATTNJIT_ROPE_PREPASS_CUH
