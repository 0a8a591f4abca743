// attnjit: RoPE pre-passes of the forward templates: K (fwd_sm80, fwd_sm90) and Q (fwd_sm90,
// whose TMA copies tiles as they are) rotated once into the workspace, where the forward
// kernel reads them. Pasted after sm80_dtype.cuh and rope_pairs.cuh in units whose variant has
// RoPE.
//
// One thread per (row, pair of elements): a rotated pair turns by its position (the hooks
// aj_rope_q_position / aj_rope_kv_position) times aj_rope_inv_freq(j) in fp32 (rope_sincos,
// as fwd_sm80 turns its Q rows) and is rounded to the input dtype; the dimensions past the
// rotary ones are copied. The frequencies (an fp64 exp2 each) are computed once per CTA into
// shared memory instead of once per pair (H200, 2026-11-29: rope_causal D=128 S=4k 430 -> 439
// TFLOP/s; each pass still takes ~72 us at 73% of the SM's issue: a CTA turns only 4 rows,
// so the table is still an fp64 exp2 per 4 pairs).
// Grid: (ceil(rows * D / 2 / AJ_ROPE_PREPASS_THREADS), heads, batch).
#ifndef ATTNJIT_ROPE_PREPASS_CUH
#define ATTNJIT_ROPE_PREPASS_CUH
#if AJ_HAS_ROPE

#define AJ_ROPE_PREPASS_THREADS 256

namespace aj_rope_prepass {
using aj_sm80::load_element;
using aj_sm80::store_element;
constexpr int D = AJ_HEAD_DIM;

// aj_rope_inv_freq(j) for every pair j of a row, into `table` (shared); the CTA's threads
// share the work and meet at a barrier, so every thread of the CTA must call it.
__device__ __forceinline__ void fill_frequencies(float* table) {
  for (int j = threadIdx.x; j < D / 2; j += blockDim.x) table[j] = aj_rope_inv_freq(j);
  __syncthreads();
}

// One pair of a row from src to dst ([.., rows, D] contiguous), turned by the table's frequency.
__device__ __forceinline__ void turn_pair(const aj_u16* src, aj_u16* dst, int pair, int position,
                                          const float* table) {
  int e0, e1;  // the two elements of this pair
  bool turns;
  aj_rope::rope_pair(pair, e0, e1, turns);
  float x0 = load_element(src + e0), x1 = load_element(src + e1);
  if (turns) aj_rope::rope_turn_by(x0, x1, position, table[pair]);
  dst[e0] = store_element(x0);
  dst[e1] = store_element(x1);
}
}  // namespace aj_rope_prepass

// K into args.rope_k, [batch, heads_kv, seq_k, D]. In a ragged batch sequence b's keys come
// from its rows of the packed K and land at rows [0, its length) of its padded
// [seq_k = max_seqlen_k] block, at their positions within the sequence.
extern "C" __global__ void __launch_bounds__(AJ_ROPE_PREPASS_THREADS) attnjit_rope_k(const AttnjitFwdArgs args) {
  using aj_rope_prepass::D;
  const int hk = blockIdx.y, b = blockIdx.z;
  const aj_i64 idx = (aj_i64)blockIdx.x * AJ_ROPE_PREPASS_THREADS + threadIdx.x;
#if AJ_RAGGED
  const aj_i64 k_start = args.cu_seqlens_k[b];
#else
  const aj_i64 k_start = 0;
#endif
  __shared__ float inv_freq[D / 2];
  aj_rope_prepass::fill_frequencies(inv_freq);
  if (idx >= (aj_i64)aj_seq_len_k(b, args) * (D / 2)) return;
  const int row = (int)(idx / (D / 2)), pair = (int)(idx % (D / 2));
  const aj_u16* src =
      (const aj_u16*)args.k + b * args.k_stride[0] + hk * args.k_stride[1] + (k_start + row) * args.k_stride[2];
  aj_u16* dst = (aj_u16*)args.rope_k + (((aj_i64)b * args.heads_kv + hk) * args.seq_k + row) * D;
  aj_rope_prepass::turn_pair(src, dst, pair, aj_rope_kv_position(b, row, args), inv_freq);
}

#if AJ_ROPE_Q_PREPASS
// Q into args.rope_q, [batch, heads_q, seq_q, D] (not for ragged batches).
extern "C" __global__ void __launch_bounds__(AJ_ROPE_PREPASS_THREADS) attnjit_rope_q(const AttnjitFwdArgs args) {
  using aj_rope_prepass::D;
  const int h = blockIdx.y, b = blockIdx.z;
  const aj_i64 idx = (aj_i64)blockIdx.x * AJ_ROPE_PREPASS_THREADS + threadIdx.x;
  __shared__ float inv_freq[D / 2];
  aj_rope_prepass::fill_frequencies(inv_freq);
  if (idx >= (aj_i64)args.seq_q * (D / 2)) return;
  const int row = (int)(idx / (D / 2)), pair = (int)(idx % (D / 2));
  const aj_u16* src = (const aj_u16*)args.q + b * args.q_stride[0] + h * args.q_stride[1] + row * args.q_stride[2];
  aj_u16* dst = (aj_u16*)args.rope_q + (((aj_i64)b * args.heads_q + h) * args.seq_q + row) * D;
  aj_rope_prepass::turn_pair(src, dst, pair, aj_rope_q_position(b, row, args), inv_freq);
}
#endif  // AJ_ROPE_Q_PREPASS

#endif  // AJ_HAS_ROPE
#endif  // ATTNJIT_ROPE_PREPASS_CUH
