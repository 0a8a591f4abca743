// attnjit forward attention kernel for sm_80 and newer (FlashAttention-2 structure).
//
// Pasted last into the generated translation unit, after abi.h, common.cuh, sm80_dtype.cuh, rope_pairs.cuh, the
// configuration macros and the hook functions (aj_score_mod, aj_mask_mod, aj_tile_class,
// and the row hooks aj_rope_* / aj_output_gate when on). See docs/kernels.md for the full
// description.
//
// Configuration macros (defined by codegen):
//   AJ_HEAD_DIM    32, 64, 96, 128, 256
//   AJ_BLOCK_M     64 or 128       query rows per CTA
//   AJ_BLOCK_N     32, 64 or 128   keys per kv tile
//   AJ_NUM_WARPS   4 or 8          each warp owns AJ_BLOCK_M / AJ_NUM_WARPS (16 or 32) rows
//   AJ_STAGES      1 or 2          kv buffers in shared memory (2 = K and V of the next
//                                  tile load while the current one is computed)
//   AJ_DTYPE_BF16 / AJ_DTYPE_FP16  exactly one defined to 1
//   AJ_HAS_SCORE_MOD, AJ_HAS_MASK  0 or 1
//   AJ_HAS_BLOCK_MASK optional, 0/1: the mask reads tensors; tile classes come from
//                  args.tile_classes (built by templates/block_mask.cuh) when it is non-null
//   AJ_HAS_ROPE    optional, 0/1: rotate Q and K rows in shared memory once they land
//                  (hooks aj_rope_inv_freq, aj_rope_q_position, aj_rope_kv_position), with
//   AJ_ROPE_DIM    rotated dimensions per row (even, <= AJ_HEAD_DIM; default the whole head)
//   AJ_ROPE_INTERLEAVED 0/1: pairs (j, j + AJ_ROPE_DIM / 2) or (2j, 2j + 1)
//   AJ_HAS_OUTPUT_GATE optional, 0/1: O *= aj_output_gate(b, h, q, d, args) at the epilogue,
//   AJ_OUTPUT_GATE_PER_ELEMENT 0/1: one gate per row (rank 3) or per element (rank 4)
//   AJ_Q_IN_REGS   optional, 0/1: keep the Q fragments in registers for the whole kv loop
//                  (default: 1 when a warp's Q slice is at most 16 x 128 or 32 x 64
//                  elements, i.e. (BLOCK_M / NUM_WARPS / 16) * HEAD_DIM <= 128; otherwise
//                  Q is re-read from shared memory with ldmatrix for every kv tile)
// Good defaults, measured on an H100 (docs/kernels.md has the sweep):
//   D = 32, 64 : BLOCK_M 128, BLOCK_N 64, 4 warps, 2 stages (Q in registers)
//   D = 96, 128: BLOCK_M 128, BLOCK_N 64, 4 warps, 1 stage  (FlashAttention-2's load order)
//   D = 256    : BLOCK_M 64,  BLOCK_N 32, 4 warps, 2 stages (not tuned)
// 4 warps owning 32 rows each beat 8 warps owning 16: every K/V fragment read from shared
// memory feeds two mma instead of one, and shared-memory bandwidth is the limit.
//
// Dynamic shared memory, in bytes (the host computes the same formula):
//   AJ_SMEM_BYTES = (AJ_BLOCK_M + 2 * AJ_STAGES * AJ_BLOCK_N) * (AJ_HEAD_DIM + 8) * 2
// Rows are padded by 8 elements (16 bytes) so ldmatrix and cp.async are conflict-free.
// With RoPE, a static table of 3 * AJ_ROPE_DIM / 2 floats (at most 1.5 KiB) comes on top.
#ifndef ATTNJIT_FWD_SM80_CUH
#define ATTNJIT_FWD_SM80_CUH

#if !defined(AJ_HEAD_DIM) || !defined(AJ_BLOCK_M) || !defined(AJ_BLOCK_N) || \
    !defined(AJ_NUM_WARPS) || !defined(AJ_STAGES) || !defined(AJ_HAS_SCORE_MOD) || \
    !defined(AJ_HAS_MASK)
#error "attnjit fwd_sm80: a configuration macro (AJ_HEAD_DIM, AJ_BLOCK_M, AJ_BLOCK_N, AJ_NUM_WARPS, AJ_STAGES, AJ_HAS_SCORE_MOD, AJ_HAS_MASK) is missing"
#endif
#if !(AJ_HEAD_DIM == 32 || AJ_HEAD_DIM == 64 || AJ_HEAD_DIM == 96 || AJ_HEAD_DIM == 128 || \
      AJ_HEAD_DIM == 256)
#error "attnjit fwd_sm80: AJ_HEAD_DIM must be 32, 64, 96, 128 or 256"
#endif
#if !(AJ_BLOCK_M == 64 || AJ_BLOCK_M == 128)
#error "attnjit fwd_sm80: AJ_BLOCK_M must be 64 or 128"
#endif
#if !(AJ_BLOCK_N == 32 || AJ_BLOCK_N == 64 || AJ_BLOCK_N == 128)
#error "attnjit fwd_sm80: AJ_BLOCK_N must be 32, 64 or 128"
#endif
#if !(AJ_NUM_WARPS == 4 || AJ_NUM_WARPS == 8)
#error "attnjit fwd_sm80: AJ_NUM_WARPS must be 4 or 8"
#endif
#if !(AJ_BLOCK_M / AJ_NUM_WARPS == 16 || AJ_BLOCK_M / AJ_NUM_WARPS == 32)
#error "attnjit fwd_sm80: AJ_BLOCK_M / AJ_NUM_WARPS must be 16 or 32 (BLOCK_M 64 needs 4 warps)"
#endif
// Accumulators per thread: O is (rows/16) * HEAD_DIM/2 floats, S is (rows/16) * BLOCK_N/2;
// beyond 192 the kernel cannot stay in 255 registers and spills heavily.
#if (AJ_BLOCK_M / AJ_NUM_WARPS / 16) * (AJ_HEAD_DIM + AJ_BLOCK_N) > 384
#error "attnjit fwd_sm80: too many accumulators per thread: need (BLOCK_M/NUM_WARPS/16)*(HEAD_DIM+BLOCK_N) <= 384 (e.g. D=128 with 32-row warps needs BLOCK_N <= 64; D=256 needs 16-row warps)"
#endif
#if !(AJ_STAGES == 1 || AJ_STAGES == 2)
#error "attnjit fwd_sm80: AJ_STAGES must be 1 or 2"
#endif
#ifndef AJ_RAGGED
#define AJ_RAGGED 0  // 1: a ragged batch (AttnjitFwdArgs::cu_seqlens_q / cu_seqlens_k)
#endif
#ifndef AJ_HAS_BLOCK_MASK
#define AJ_HAS_BLOCK_MASK 0
#endif
#ifndef AJ_HAS_ROPE
#define AJ_HAS_ROPE 0
#endif
#if AJ_HAS_ROPE
#ifndef AJ_ROPE_DIM
#define AJ_ROPE_DIM AJ_HEAD_DIM
#endif
#ifndef AJ_ROPE_INTERLEAVED
#define AJ_ROPE_INTERLEAVED 0
#endif
#if AJ_ROPE_DIM < 2 || AJ_ROPE_DIM % 2 != 0 || AJ_ROPE_DIM > AJ_HEAD_DIM
#error "attnjit fwd_sm80: AJ_ROPE_DIM (the rope rotary_dim) must be even, at least 2 and at most AJ_HEAD_DIM"
#endif
#endif
#ifndef AJ_HAS_OUTPUT_GATE
#define AJ_HAS_OUTPUT_GATE 0
#endif
#if AJ_HAS_OUTPUT_GATE && !defined(AJ_OUTPUT_GATE_PER_ELEMENT)
#define AJ_OUTPUT_GATE_PER_ELEMENT 0
#endif

#define AJ_SMEM_ROW (AJ_HEAD_DIM + 8)
#define AJ_SMEM_BYTES ((AJ_BLOCK_M + 2 * AJ_STAGES * AJ_BLOCK_N) * (AJ_HEAD_DIM + 8) * 2)

#ifndef AJ_Q_IN_REGS
#if (AJ_BLOCK_M / AJ_NUM_WARPS / 16) * AJ_HEAD_DIM <= 128
#define AJ_Q_IN_REGS 1
#else
#define AJ_Q_IN_REGS 0
#endif
#endif

namespace aj_fwd {

constexpr int D = AJ_HEAD_DIM;
constexpr int BM = AJ_BLOCK_M;
constexpr int BN = AJ_BLOCK_N;
constexpr int NW = AJ_NUM_WARPS;
constexpr int NT = NW * 32;
constexpr int WM = BM / NW;  // rows per warp
constexpr int MT = WM / 16;  // 16-row mma tiles per warp
constexpr int RS = AJ_SMEM_ROW;  // smem row stride, elements
constexpr int RSB = RS * 2;      // smem row stride, bytes
constexpr int KD = D / 16;       // k steps of QK^T
constexpr int NN = BN / 8;       // 8-key column tiles of S
constexpr int KN = BN / 16;      // k steps of PV
constexpr int ND = D / 8;        // 8-wide column tiles of O
constexpr int CPR = D / 8;       // 16-byte chunks per row

using namespace aj_sm80;  // mma, pack2, load_element, store_element (sm80_dtype.cuh)
#if AJ_HAS_ROPE
using namespace aj_rope;  // rope_sincos, rope_pair, rope_turn_approx (rope_pairs.cuh)
#endif

// Copies rows [row0, row0 + ROWS) of a [*, D] matrix with row stride `stride` (elements)
// into shared memory at `sbase` (padded rows); rows >= nrows are zero-filled.
template <int ROWS>
__device__ __forceinline__ void load_tile(aj_u32 sbase, const aj_u16* g, aj_i64 stride, int row0,
                                          int nrows, int tid) {
  if constexpr (NT % CPR == 0) {
    // Each thread copies one fixed 16-byte column chunk of every RPI-th row: one pointer
    // and one increment live across the kv loop, not one address per copy.
    constexpr int RPI = NT / CPR;
    constexpr int ITERS = (ROWS + RPI - 1) / RPI;
    const int r0 = tid / CPR;
    const int c = tid % CPR;
    const aj_u16* src = g + (aj_i64)(row0 + r0) * stride + c * 8;
    const aj_i64 step = (aj_i64)RPI * stride;
    const aj_u32 dst = sbase + r0 * RSB + c * 16;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      if (ROWS % RPI == 0 || r0 + i * RPI < ROWS) {
        const bool ok = row0 + r0 + i * RPI < nrows;
        aj_cp_async_16(dst + i * RPI * RSB, ok ? src : g, ok ? 16 : 0);
      }
      src += step;
    }
  } else {
    constexpr int TOTAL = ROWS * CPR;
    constexpr int ITERS = (TOTAL + NT - 1) / NT;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int idx = tid + i * NT;
      if (TOTAL % NT == 0 || idx < TOTAL) {
        const int r = idx / CPR;
        const int c = idx % CPR;
        const int row = row0 + r;
        const bool ok = row < nrows;
        const aj_u16* src = g + (ok ? (aj_i64)row * stride : (aj_i64)0) + c * 8;
        aj_cp_async_16(sbase + r * RSB + c * 16, src, ok ? 16 : 0);
      }
    }
  }
}

// Masks the S fragment of one kv tile in place (excluded pairs become -inf).
// BOUND: apply kv < seq_k; MASK: apply the variant's mask, its row and key parts computed once
// (aj_mask_row / aj_mask_col) and paired per element.
template <bool BOUND, bool MASK>
__device__ __forceinline__ void prepare_scores(float (&s)[MT][NN][4], int b, int h, int q_base,
                                               int kv_base, int seq_q, int seq_k, const AttnjitFwdArgs& args) {
  (void)b; (void)h; (void)q_base; (void)kv_base;
  // Hooks only ever see in-range indices (captured tensors may be indexed by them).
  int qc[MT][2];
  AjMaskRow rows[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      qc[mt][r] = min(q_base + mt * 16 + r * 8, seq_q - 1);
      if (MASK) rows[mt][r] = aj_mask_row(b, h, qc[mt][r], args);
    }
#pragma unroll
  for (int j = 0; j < NN; ++j) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int kv = kv_base + j * 8 + c;
      const int kvc = kv < seq_k ? kv : seq_k - 1;
      AjMaskCol col;
      if (MASK) col = aj_mask_col(b, h, kvc, args);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          bool keep = true;
          if (BOUND) keep = kv < seq_k;
          if (MASK) keep = keep && aj_mask_pair(rows[mt][r], col, b, h, qc[mt][r], kvc, args);
          s[mt][j][2 * r + c] = keep ? s[mt][j][2 * r + c] : AJ_NEG_INF;
        }
      (void)col;
    }
  }
}

#if AJ_HAS_SCORE_MOD
// score_mod on every element of the tile, in one copy (masks are applied after it by
// prepare_scores): the hook can be large, and one copy keeps NVRTC compile time down.
__device__ __forceinline__ void apply_score_mod(float (&s)[MT][NN][4], int b, int h, int q_base,
                                                int kv_base, int seq_q, int seq_k, const AttnjitFwdArgs& args) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < NN; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = q_base + mt * 16 + (e >> 1) * 8;
        const int kv = kv_base + j * 8 + (e & 1);
        const int qc = q < seq_q ? q : seq_q - 1;
        const int kvc = kv < seq_k ? kv : seq_k - 1;
        s[mt][j][e] = aj_score_mod(s[mt][j][e] * args.scale, b, h, qc, kvc, args);
      }
    }
  }
}
#endif

#if AJ_HAS_ROPE
// ---- RoPE on tiles in shared memory ----------------------------------------------------
// Pair j of a row at position p turns by the angle p * w_j, w_j = aj_rope_inv_freq(j), in
// fp32; the rotated row is rounded to the input dtype in place (what a separate RoPE pass
// would store). Work split: a chunk is RPW consecutive pairs of one row (RPW elements of
// each half in the Half layout, 2 * RPW adjacent elements in the Interleaved one). When the
// RCH chunks of a row divide the thread count, thread tid owns chunk tid % RCH of rows
// tid / RCH + i * RRPI: its frequencies never change, so it takes one sin/cos per pair for
// its first row and reaches each next row (RRPI positions further) by a complex multiply
// with (cos, sin)(RRPI * w_j) from a per-CTA table. Otherwise (rotary dims that are not a
// power of two), every chunk takes its own sin/cos. Shared memory is read and written with
// plain C++ accesses, so the compiler keeps all of a thread's row loads in flight at once
// (and keeps them on their side of every __syncthreads).
constexpr int RD = AJ_ROPE_DIM;
constexpr int RH = RD / 2;  // rotated pairs per row
constexpr int RPW = RH % 4 == 0 ? 4 : (RH % 2 == 0 ? 2 : 1);
constexpr int RCH = RH / RPW;  // chunks per row
constexpr bool ROPE_STEPPED = NT % RCH == 0;
constexpr int RRPI = ROPE_STEPPED ? NT / RCH : 1;  // rows between a thread's chunks

// w_j and the rotation by RRPI positions; written once per CTA (rope_init_table), then read-only.
struct RopeTable {
  float w[RH];
  float step_cos[RH];
  float step_sin[RH];
};
__shared__ __align__(16) RopeTable rope_table;

__device__ __forceinline__ void rope_init_table(int tid) {
  for (int j = tid; j < RH; j += NT) {
    const float w = aj_rope_inv_freq(j);
    rope_table.w[j] = w;
    float sn, cs;
    sincosf((float)RRPI * w, &sn, &cs);  // RRPI is a power of two: the product is exact
    rope_table.step_cos[j] = cs;
    rope_table.step_sin[j] = sn;
  }
}

__device__ __forceinline__ void unpack2(aj_u32 v, float& lo, float& hi) {
#if defined(AJ_IS_BF16)
  aj_unpack_bf16x2(v, lo, hi);
#else
  aj_unpack_fp16x2(v, lo, hi);
#endif
}

// N consecutive 16-bit elements of a row, loaded and stored as one access.
template <int N>
struct RopeVec;
template <>
struct __align__(16) RopeVec<8> { aj_u32 w[4]; };
template <>
struct __align__(8) RopeVec<4> { aj_u32 w[2]; };
template <>
struct __align__(4) RopeVec<2> { aj_u32 w[1]; };
template <>
struct __align__(2) RopeVec<1> { aj_u16 h; };

template <int N>
__device__ __forceinline__ void rope_to_float(const RopeVec<N>& v, float (&x)[N]) {
  if constexpr (N == 1) {
#if defined(AJ_IS_BF16)
    x[0] = aj_bf16_to_float(v.h);
#else
    x[0] = aj_fp16_to_float(v.h);
#endif
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) unpack2(v.w[i], x[2 * i], x[2 * i + 1]);
  }
}
template <int N>
__device__ __forceinline__ RopeVec<N> rope_from_float(const float (&x)[N]) {
  RopeVec<N> v;
  if constexpr (N == 1) {
#if defined(AJ_IS_BF16)
    v.h = aj_float_to_bf16(x[0]);
#else
    v.h = aj_float_to_fp16(x[0]);
#endif
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) v.w[i] = pack2(x[2 * i], x[2 * i + 1]);
  }
  return v;
}

// One chunk of a row as it sits in shared memory.
struct RopeChunk {
#if AJ_ROPE_INTERLEAVED
  RopeVec<2 * RPW> v;  // elements 2 j0 .. 2 (j0 + RPW) - 1
#else
  RopeVec<RPW> lo, hi;  // elements j0 .. j0 + RPW - 1 and their partners RH further
#endif
};

__device__ __forceinline__ RopeChunk rope_load(const unsigned char* row, int j0) {
  RopeChunk c;
#if AJ_ROPE_INTERLEAVED
  c.v = *reinterpret_cast<const RopeVec<2 * RPW>*>(row + j0 * 4);
#else
  c.lo = *reinterpret_cast<const RopeVec<RPW>*>(row + j0 * 2);
  c.hi = *reinterpret_cast<const RopeVec<RPW>*>(row + (j0 + RH) * 2);
#endif
  return c;
}

// Rotates chunk `c` (pairs j0 .. j0 + RPW - 1 of `row`) by (cs, sn) and stores it back.
__device__ __forceinline__ void rope_turn_store(unsigned char* row, int j0, const RopeChunk& c,
                                                const float (&cs)[RPW], const float (&sn)[RPW]) {
#if AJ_ROPE_INTERLEAVED
  float v[2 * RPW];
  rope_to_float<2 * RPW>(c.v, v);
#pragma unroll
  for (int i = 0; i < RPW; ++i) {
    const float x = v[2 * i], y = v[2 * i + 1];
    v[2 * i] = x * cs[i] - y * sn[i];
    v[2 * i + 1] = x * sn[i] + y * cs[i];
  }
  *reinterpret_cast<RopeVec<2 * RPW>*>(row + j0 * 4) = rope_from_float<2 * RPW>(v);
#else
  float x[RPW], y[RPW];
  rope_to_float<RPW>(c.lo, x);
  rope_to_float<RPW>(c.hi, y);
#pragma unroll
  for (int i = 0; i < RPW; ++i) {
    const float xr = x[i] * cs[i] - y[i] * sn[i];
    y[i] = x[i] * sn[i] + y[i] * cs[i];
    x[i] = xr;
  }
  *reinterpret_cast<RopeVec<RPW>*>(row + j0 * 2) = rope_from_float<RPW>(x);
  *reinterpret_cast<RopeVec<RPW>*>(row + (j0 + RH) * 2) = rope_from_float<RPW>(y);
#endif
}

// Rotates the first RD dimensions of rows [0, ROWS) of the tile at `tile` (shared memory,
// padded rows of RSB bytes); row r sits at position pos0 + r. Rows past the sequence were
// zero-filled and stay zero.
template <int ROWS>
__device__ __forceinline__ void rope_tile(unsigned char* tile, int pos0, int tid) {
  if constexpr (ROPE_STEPPED) {
    constexpr int ITERS = (ROWS + RRPI - 1) / RRPI;
    const int r0 = tid / RCH;
    const int j0 = (tid % RCH) * RPW;
    if (ROWS % RRPI != 0 && r0 >= ROWS) return;
    unsigned char* first = tile + r0 * RSB;
    // Every row's chunk first, so the loads are in flight together; then the turns.
    RopeChunk chunk[ITERS];
#pragma unroll
    for (int it = 0; it < ITERS; ++it)
      if (ROWS % RRPI == 0 || r0 + it * RRPI < ROWS) chunk[it] = rope_load(first + it * RRPI * RSB, j0);
    float cs[RPW], sn[RPW], step_c[RPW], step_s[RPW];
    const float p = (float)(pos0 + r0);
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      rope_sincos(p * rope_table.w[j0 + i], sn[i], cs[i]);
      step_c[i] = rope_table.step_cos[j0 + i];
      step_s[i] = rope_table.step_sin[j0 + i];
    }
#pragma unroll
    for (int it = 0; it < ITERS; ++it) {
      if (ROWS % RRPI == 0 || r0 + it * RRPI < ROWS) rope_turn_store(first + it * RRPI * RSB, j0, chunk[it], cs, sn);
      if (it + 1 < ITERS) {
#pragma unroll
        for (int i = 0; i < RPW; ++i) {
          const float c2 = cs[i] * step_c[i] - sn[i] * step_s[i];
          sn[i] = sn[i] * step_c[i] + cs[i] * step_s[i];
          cs[i] = c2;
        }
      }
    }
  } else {
    constexpr int TOTAL = ROWS * RCH;
    constexpr int ITERS = (TOTAL + NT - 1) / NT;
#pragma unroll 1
    for (int it = 0; it < ITERS; ++it) {
      const int idx = tid + it * NT;
      if (TOTAL % NT == 0 || idx < TOTAL) {
        const int r = idx / RCH;
        const int j0 = (idx % RCH) * RPW;
        unsigned char* row = tile + r * RSB;
        const RopeChunk chunk = rope_load(row, j0);
        const float p = (float)(pos0 + r);
        float cs[RPW], sn[RPW];
#pragma unroll
        for (int i = 0; i < RPW; ++i) rope_sincos(p * rope_table.w[j0 + i], sn[i], cs[i]);
        rope_turn_store(row, j0, chunk, cs, sn);
      }
    }
  }
}
#endif  // AJ_HAS_ROPE

}  // namespace aj_fwd

extern "C" __global__ void __launch_bounds__(AJ_NUM_WARPS * 32)
    attnjit_fwd(const AttnjitFwdArgs args) {
  using namespace aj_fwd;
  extern __shared__ __align__(128) unsigned char aj_smem[];

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t = lane & 3;

  // Heaviest query blocks (causal) first for a better tail. (Ragged batches measured slower,
  // 2026-11-29, with the sequences fastest instead: docs/perf-notes.md.)
  const int m_block = (int)gridDim.x - 1 - (int)blockIdx.x;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int hk = h / (args.heads_q / args.heads_kv);
#if AJ_RAGGED
  // This sequence's rows of the packed Q, K, V and O (the batch strides are 0).
  const aj_i64 q_start = args.cu_seqlens_q[b], k_start = args.cu_seqlens_k[b];
  const int seq_q = aj_seq_len_q(b, args);
  const int seq_k = aj_seq_len_k(b, args);
#else
  const aj_i64 q_start = 0, k_start = 0;
  const int seq_q = args.seq_q;
  const int seq_k = args.seq_k;
#endif
  const int q0 = m_block * BM;
  const int q_hi = min(q0 + BM, seq_q) - 1;
#if AJ_RAGGED
  if (q0 >= seq_q) return;  // the grid covers the longest sequence
#endif

  const aj_u16* qg = (const aj_u16*)args.q + b * args.q_stride[0] + q_start * args.q_stride[2] + h * args.q_stride[1];
#if AJ_HAS_ROPE
  // K was rotated once per (b, kv head) by attnjit_rope_k into args.rope_k, [B, Hkv, Sk, D]
  // contiguous: a K row is turned once, not once per query block and query head.
  const aj_u16* kg = (const aj_u16*)args.rope_k + ((aj_i64)b * args.heads_kv + hk) * (aj_i64)args.seq_k * D;
#else
  const aj_u16* kg = (const aj_u16*)args.k + b * args.k_stride[0] + k_start * args.k_stride[2] + hk * args.k_stride[1];
#endif
  const aj_u16* vg = (const aj_u16*)args.v + b * args.v_stride[0] + k_start * args.v_stride[2] + hk * args.v_stride[1];
  aj_u16* og = (aj_u16*)args.o + b * args.o_stride[0] + q_start * args.o_stride[2] + h * args.o_stride[1];
#if AJ_HAS_ROPE
  const aj_i64 qs = args.q_stride[2], ks = D, vs = args.v_stride[2], os = args.o_stride[2];
#else
  const aj_i64 qs = args.q_stride[2], ks = args.k_stride[2], vs = args.v_stride[2],
               os = args.o_stride[2];
#endif

  const aj_u32 s_q = aj_smem_addr(aj_smem);
  const aj_u32 s_k = s_q + BM * RSB;                // AJ_STAGES buffers of BN rows
  const aj_u32 s_v = s_k + AJ_STAGES * BN * RSB;    // AJ_STAGES buffers of BN rows
  constexpr aj_u32 KV_STAGE_BYTES = BN * RSB;

  const int n_tiles = (seq_k + BN - 1) / BN;
#if AJ_HAS_BLOCK_MASK
  // Classes built by attnjit_block_mask (templates/block_mask.cuh) for this q tile, if given.
  const unsigned char* tile_classes =
      args.tile_classes == nullptr
          ? nullptr
          : args.tile_classes + (aj_i64)b * args.tile_class_stride[0] + (aj_i64)h * args.tile_class_stride[1] +
                (aj_i64)m_block * args.tile_class_stride[2];
#endif
  // A tile at a time, every thread: the warp-wide walk (AjTileChunk) made this kernel spill at
  // D=128 on sm_80 (soft-cap 0 -> 32 bytes, ALiBi and the window 0 -> 8), not measured on an
  // sm_80 GPU, so the walk that served there stays.
  auto next_tile = [&](int n, int& cls) -> int {
    for (; n < n_tiles; ++n) {
#if AJ_HAS_BLOCK_MASK
      if (tile_classes != nullptr) {
        cls = tile_classes[n];
        if (cls != 0) return n;
        continue;
      }
#endif
      const int kv_lo = n * BN;
      const int kv_hi = min(kv_lo + BN, seq_k) - 1;
      cls = aj_tile_class(b, h, q0, q_hi, kv_lo, kv_hi, args);
      if (cls != 0) return n;
    }
    return n_tiles;
  };

  int cls = 0;
  int n = next_tile(0, cls);

  // Q tile and the first kv tile.
  load_tile<BM>(s_q, qg, qs, q0, seq_q, tid);
  if (n < n_tiles) {
    load_tile<BN>(s_k, kg, ks, n * BN, seq_k, tid);
#if AJ_STAGES == 2
    load_tile<BN>(s_v, vg, vs, n * BN, seq_k, tid);
#endif
  }
  aj_cp_async_commit();

#if AJ_HAS_ROPE
  // RoPE: Q turns here, once it has landed (K arrives turned, from attnjit_rope_k).
  rope_init_table(tid);
  if (n < n_tiles) {
    aj_cp_async_wait<0>();
    __syncthreads();  // every thread's copies of Q, and the table, are visible
    rope_tile<BM>(aj_smem, aj_rope_q_position(b, q0, args), tid);
    // No barrier here: the next one (before the Q fragments are read into registers, or at
    // the top of the kv loop) orders these writes before any read of Q.
  }
#endif

  // Per-lane ldmatrix offsets (bytes).
  const aj_u32 q_lane = (aj_u32)((warp * WM + (lane & 15)) * RSB + (lane >> 4) * 16);
  const aj_u32 k_lane = (aj_u32)(((lane & 7) + ((lane >> 4) << 3)) * RSB + ((lane >> 3) & 1) * 16);
  const aj_u32 v_lane = (aj_u32)(((lane & 7) + (((lane >> 3) & 1) << 3)) * RSB + (lane >> 4) * 16);

  float o[MT][ND][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < ND; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][j][e] = 0.f;
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    row_max[mt][0] = row_max[mt][1] = AJ_NEG_INF;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }
#if AJ_HAS_SCORE_MOD
  const float mult = AJ_LOG2E;
#else
  const float mult = args.scale_log2;
#endif

#if AJ_Q_IN_REGS
  aj_u32 qf[MT][KD][4];
  if (n < n_tiles) {
    aj_cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < KD; ++kk)
        aj_ldmatrix_x4(qf[mt][kk], s_q + q_lane + mt * 16 * RSB + kk * 32);
  }
#endif

  int stage = 0;
  while (n < n_tiles) {
    int next_cls = 0;
    const int next = next_tile(n + 1, next_cls);
    const aj_u32 sk = s_k + stage * KV_STAGE_BYTES;
    const aj_u32 sv = s_v + stage * KV_STAGE_BYTES;

#if AJ_STAGES == 2
    // Prefetch the whole next tile into the other stage, then wait for this one.
    if (next < n_tiles) {
      load_tile<BN>(s_k + (stage ^ 1) * KV_STAGE_BYTES, kg, ks, next * BN, seq_k, tid);
      load_tile<BN>(s_v + (stage ^ 1) * KV_STAGE_BYTES, vg, vs, next * BN, seq_k, tid);
      aj_cp_async_commit();
      aj_cp_async_wait<1>();
    } else {
      aj_cp_async_wait<0>();
    }
#else
    // One buffer each: V(n) loads while S = Q K(n)^T is computed; K(next) loads while
    // the softmax and P V(n) run.
    load_tile<BN>(s_v, vg, vs, n * BN, seq_k, tid);
    aj_cp_async_commit();
    aj_cp_async_wait<1>();
#endif
    __syncthreads();

    // ---- S = Q K^T -------------------------------------------------------------
    float s[MT][NN][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
#if !AJ_Q_IN_REGS
      aj_u32 qk[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        aj_ldmatrix_x4(qk[mt], s_q + q_lane + mt * 16 * RSB + kk * 32);
#endif
#pragma unroll
      for (int jn = 0; jn < NN / 2; ++jn) {
        aj_u32 kb[4];
        aj_ldmatrix_x4(kb, sk + k_lane + jn * 16 * RSB + kk * 32);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#if AJ_Q_IN_REGS
          const aj_u32* a = qf[mt][kk];
#else
          const aj_u32* a = qk[mt];
#endif
          mma(s[mt][2 * jn], a, kb[0], kb[1]);
          mma(s[mt][2 * jn + 1], a, kb[2], kb[3]);
        }
      }
    }

#if AJ_STAGES == 1
    __syncthreads();  // every warp is done with K(n)
    if (next < n_tiles) load_tile<BN>(s_k, kg, ks, next * BN, seq_k, tid);
    aj_cp_async_commit();
#endif

    // ---- score_mod, masks ----------------------------------------------------------
    {
      const int q_base = q0 + warp * WM + g;
      const int kv_base = n * BN + 2 * t;
      const bool ragged = n * BN + BN > seq_k;
#if AJ_HAS_SCORE_MOD
      apply_score_mod(s, b, h, q_base, kv_base, seq_q, seq_k, args);
#endif
#if AJ_HAS_MASK
      if (cls == 1) {
        prepare_scores<true, true>(s, b, h, q_base, kv_base, seq_q, seq_k, args);
      } else
#endif
      if (ragged) {
        prepare_scores<true, false>(s, b, h, q_base, kv_base, seq_q, seq_k, args);
      }
    }

    // ---- online softmax (exp2 domain) --------------------------------------------------
    aj_u32 p[MT][KN][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = row_max[mt][r];
#pragma unroll
        for (int j = 0; j < NN; ++j) mx = fmaxf(mx, fmaxf(s[mt][j][2 * r], s[mt][j][2 * r + 1]));
        mx = fmaxf(mx, aj_shfl_xor(mx, 1));
        mx = fmaxf(mx, aj_shfl_xor(mx, 2));
        // A row with no included key so far keeps max -inf: use 0 to avoid inf - inf.
        const float ms = (mx == AJ_NEG_INF) ? 0.f : mx * mult;
        const float alpha = aj_exp2(row_max[mt][r] * mult - ms);
        row_max[mt][r] = mx;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NN; ++j) {
          const float p0 = aj_exp2(s[mt][j][2 * r] * mult - ms);
          const float p1 = aj_exp2(s[mt][j][2 * r + 1] * mult - ms);
          s[mt][j][2 * r] = p0;
          s[mt][j][2 * r + 1] = p1;
          sum += p0 + p1;
        }
        row_sum[mt][r] = row_sum[mt][r] * alpha + sum;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
          o[mt][j][2 * r] *= alpha;
          o[mt][j][2 * r + 1] *= alpha;
        }
      }
#pragma unroll
      for (int kk = 0; kk < KN; ++kk) {
        p[mt][kk][0] = pack2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        p[mt][kk][1] = pack2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        p[mt][kk][2] = pack2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        p[mt][kk][3] = pack2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
    }

#if AJ_STAGES == 1
    if (next < n_tiles) {
      aj_cp_async_wait<1>();
    } else {
      aj_cp_async_wait<0>();
    }
    __syncthreads();
#endif

    // ---- O += P V ----------------------------------------------------------------------
#pragma unroll
    for (int kk = 0; kk < KN; ++kk) {
#pragma unroll
      for (int jd = 0; jd < ND / 2; ++jd) {
        aj_u32 vb[4];
        aj_ldmatrix_x4_trans(vb, sv + v_lane + kk * 16 * RSB + jd * 32);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma(o[mt][2 * jd], p[mt][kk], vb[0], vb[1]);
          mma(o[mt][2 * jd + 1], p[mt][kk], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // this stage may be overwritten by the next prefetch

    n = next;
    cls = next_cls;
#if AJ_STAGES == 2
    stage ^= 1;
#endif
  }
  // With no kv tile at all the Q copies (issued by every thread, into every warp's rows)
  // may still be in flight: wait for them before the rows are reused for staging.
  aj_cp_async_wait<0>();
  __syncthreads();

  // ---- epilogue: normalize, LSE, stage rows in smem (this warp's Q rows), store -------
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = row_sum[mt][r];
      l += aj_shfl_xor(l, 1);
      l += aj_shfl_xor(l, 2);
      const bool any = l > 0.f;
      const float inv = any ? 1.0f / l : 0.f;
      const int lrow = warp * WM + mt * 16 + r * 8 + g;
      const int q = q0 + lrow;
      if (args.lse != nullptr && t == 0 && q < seq_q) {
        const float lse = any ? (row_max[mt][r] * mult + aj_log2(l)) * AJ_LN2 : AJ_NEG_INF;
#if AJ_RAGGED
        args.lse[(aj_i64)h * args.total_q + q_start + q] = lse;
#else
        args.lse[((aj_i64)b * args.heads_q + h) * seq_q + q] = lse;
#endif
      }
#if AJ_HAS_OUTPUT_GATE
      // O *= sigmoid(gate) in fp32 before the one rounding to the output dtype. Rows past
      // seq_q are never stored; their reads stay in range.
      const int qg = q < seq_q ? q : seq_q - 1;
#if !AJ_OUTPUT_GATE_PER_ELEMENT
      const float row_gate = aj_output_gate(b, h, qg, 0, args);
#endif
#endif
#pragma unroll
      for (int j = 0; j < ND; ++j) {
        float o0 = o[mt][j][2 * r] * inv, o1 = o[mt][j][2 * r + 1] * inv;
#if AJ_HAS_OUTPUT_GATE
#if AJ_OUTPUT_GATE_PER_ELEMENT
        o0 *= aj_output_gate(b, h, qg, j * 8 + 2 * t, args);
        o1 *= aj_output_gate(b, h, qg, j * 8 + 2 * t + 1, args);
#else
        o0 *= row_gate;
        o1 *= row_gate;
#endif
#endif
        const aj_u32 packed = pack2(o0, o1);
        aj_st_shared_u32(s_q + lrow * RSB + (j * 8 + 2 * t) * 2, packed);
      }
    }
  }
  __syncwarp();
  {
    constexpr int TOTAL = WM * CPR;
    constexpr int ITERS = (TOTAL + 31) / 32;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int idx = lane + i * 32;
      if (TOTAL % 32 == 0 || idx < TOTAL) {
        const int r = idx / CPR;
        const int c = idx % CPR;
        const int lrow = warp * WM + r;
        const int q = q0 + lrow;
        if (q < seq_q) {
          aj_u32 v[4];
          aj_ld_shared_v4(s_q + lrow * RSB + c * 16, v);
          aj_st_global_v4(og + (aj_i64)q * os + c * 8, v);
        }
      }
    }
  }
}

#endif  // ATTNJIT_FWD_SM80_CUH
