// attnjit backward attention kernels for sm_80 and newer (FlashAttention-2 structure).
//
// Pasted last into the generated translation unit, after abi.h, common.cuh, hooks.cuh, the
// configuration macros and the hooks (aj_score_mod, aj_mask_mod, aj_tile_class and the
// gradient hook aj_score_mod_grad). Three kernels, launched in this order (docs/kernels.md):
//   attnjit_bwd_preprocess   D = rowsum(dO * O) per query row; zeroes the dQ and
//                            captured-tensor gradient accumulators
//   attnjit_bwd              one CTA per (kv block, kv head, batch): recomputes P from Q, K
//                            and the forward's LSE for every query block of every query head
//                            of its group, keeps dK and dV in registers (so GQA sums over a
//                            group without atomics) and adds dQ into the fp32 / fixed-point
//                            accumulator
//   attnjit_bwd_postprocess  dQ and the tensor gradients from their accumulators
//
// Configuration macros (defined by codegen):
//   AJ_HEAD_DIM    64 or 128
//   AJ_BLOCK_M     32 or 64        query rows per step of the kv block's loop
//   AJ_NUM_WARPS   4 or 8          each warp owns 16 keys: AJ_BLOCK_N = 16 * AJ_NUM_WARPS
//   AJ_STAGES      1 or 2          Q / dO buffers (2: the next step's rows load meanwhile)
//   AJ_ROW_PAD     0 or 8 (the knob row_pad; default 0): elements between the shared-memory rows
//                  of K, V, Q and dO past the head dim. 0: rows D apart (32-byte aligned like
//                  their global sources) with 16-byte chunk c of row r at c ^ (r % 8), which keeps
//                  ldmatrix conflict-free; 8: padded rows, conflict-free too, but every other row
//                  16 bytes off its source's 32-byte alignment (the copies then ask L2 for 1.5x
//                  the sectors, H200 ncu).
//   AJ_DTYPE_BF16 / AJ_DTYPE_FP16  exactly one defined to 1
//   AJ_HAS_SCORE_MOD, AJ_HAS_MASK, AJ_HAS_TENSOR_GRADS  0 or 1
//   AJ_HAS_BLOCK_MASK, AJ_BLOCK_N  a mask that reads tensors: attnjit_block_mask (block_mask.cuh,
//                  pasted after this file) classifies the BM x BN tiles first, from the tensors
//   AJ_HAS_ROPE, AJ_HAS_OUTPUT_GATE (and their macros, from the row hooks): with RoPE,
//   attnjit_bwd_rope first writes Q and K rotated into the workspace, the main kernel keeps dK
//   in the rotated frame (fp32 workspace) and attnjit_bwd_rope_dk and the postprocess turn
//   dK and dQ back; with the gate, the preprocess also writes dO * sigmoid(gate) for the main
//   kernel and the gate's gradient.
//
// Shared memory, bytes: K and V (2 * BN rows), Q and dO (2 * STAGES * BM rows) of
// (AJ_HEAD_DIM + AJ_ROW_PAD) elements, dS^T (BN rows of BM + 8; BM with AJ_WGMMA), LSE and D
// (2 * STAGES * BM floats); bwd_sm90.cuh's dQ staging (AJ_DQ_BULK) after them.
#ifndef ATTNJIT_BWD_SM80_CUH
#define ATTNJIT_BWD_SM80_CUH

#if !defined(AJ_HEAD_DIM) || !defined(AJ_BLOCK_M) || !defined(AJ_NUM_WARPS) || !defined(AJ_STAGES) || \
    !defined(AJ_HAS_SCORE_MOD) || !defined(AJ_HAS_MASK) || !defined(AJ_HAS_TENSOR_GRADS)
#error "attnjit bwd_sm80: a configuration macro is missing"
#endif
#if !(AJ_HEAD_DIM == 64 || AJ_HEAD_DIM == 128)
#error "attnjit bwd_sm80: AJ_HEAD_DIM must be 64 or 128"
#endif
#if !(AJ_BLOCK_M == 32 || AJ_BLOCK_M == 64)
#error "attnjit bwd_sm80: AJ_BLOCK_M must be 32 or 64"
#endif
#if !(AJ_NUM_WARPS == 4 || AJ_NUM_WARPS == 8)
#error "attnjit bwd_sm80: AJ_NUM_WARPS must be 4 or 8"
#endif
#if !(AJ_STAGES == 1 || AJ_STAGES == 2)
#error "attnjit bwd_sm80: AJ_STAGES must be 1 or 2"
#endif
#ifndef AJ_HAS_BLOCK_MASK
#define AJ_HAS_BLOCK_MASK 0
#endif
#ifndef AJ_HAS_ROPE
#define AJ_HAS_ROPE 0
#endif
#ifndef AJ_HAS_OUTPUT_GATE
#define AJ_HAS_OUTPUT_GATE 0
#endif

#ifndef AJ_ROW_PAD
#define AJ_ROW_PAD 0
#endif
// AJ_DQ_ORDERED 1 (bwd_sm90's knob dq_ordered): deterministic calls add dQ in fp32, the kv
// blocks of a query block taking turns in descending order (a counter per query block,
// AttnjitBwdArgs::dq_turns), instead of order-free fixed-point atomics; the CTAs run last kv
// block first, so a CTA only waits for CTAs started before it.
#ifndef AJ_DQ_ORDERED
#define AJ_DQ_ORDERED 0
#endif
#if AJ_ROW_PAD != 0 && AJ_ROW_PAD != 8
#error "attnjit bwd_sm80: AJ_ROW_PAD 0 or 8"
#endif
// AJ_WGMMA 1: template bwd_sm90 (sm_90a), the products by wgmma (bwd_sm90.cuh, pasted before).
#ifndef AJ_WGMMA
#define AJ_WGMMA 0
#endif
#ifndef AJ_BWD90_P_BEFORE_DP
#define AJ_BWD90_P_BEFORE_DP 0
#endif
#ifndef AJ_BWD90_LOAD_AFTER_BARRIER
#define AJ_BWD90_LOAD_AFTER_BARRIER 0
#endif
#ifndef AJ_DQ_BULK
#define AJ_DQ_BULK 0
#endif
#ifndef AJ_DQ_BEFORE_DK
#define AJ_DQ_BEFORE_DK 0
#endif

namespace aj_bwd {

template <bool B>
struct aj_bool_tag {
  static constexpr bool value = B;
};

constexpr int D = AJ_HEAD_DIM;
constexpr int BM = AJ_BLOCK_M;  // query rows per step
constexpr int NW = AJ_NUM_WARPS;
constexpr int NT = NW * 32;
constexpr int BN = 16 * NW;  // keys per CTA, 16 per warp
constexpr int RS = D + AJ_ROW_PAD;  // row stride of K, V, Q, dO in shared memory, elements
constexpr int RSB = RS * 2;
constexpr int PSB = AJ_WGMMA ? BM * 2 : (BM + 8) * 2;  // row stride of dS^T, bytes
constexpr int KD = D / 16;         // k steps over the head dimension
constexpr int NQ = BM / 8;         // 8-column tiles of S^T (query columns)
constexpr int KQ = BM / 16;        // k steps over query rows (dV, dK)
constexpr int ND = D / 8;          // 8-column tiles of dK, dV
constexpr int CPR = D / 8;         // 16-byte chunks per row
// dQ = dS K: the warps tile [BM query rows] x [D]: QT tiles of 16 rows, DQ_PARTS column parts.
constexpr int QT = BM / 16;
constexpr int DQ_PARTS = NW / QT;
constexpr int DQ_COLS = D / DQ_PARTS;
constexpr int DQ_ND = DQ_COLS / 8;
static_assert(DQ_COLS % 16 == 0, "dQ column parts must be multiples of 16");

constexpr int SMEM_K = 0;
constexpr int SMEM_V = SMEM_K + BN * RSB;
constexpr int SMEM_Q = SMEM_V + BN * RSB;
constexpr int SMEM_DO = SMEM_Q + AJ_STAGES * BM * RSB;
constexpr int SMEM_DS = SMEM_DO + AJ_STAGES * BM * RSB;
constexpr int SMEM_LSE = SMEM_DS + BN * PSB;
constexpr int SMEM_DELTA = SMEM_LSE + AJ_STAGES * BM * 4;
constexpr int SMEM_BYTES = SMEM_DELTA + AJ_STAGES * BM * 4;

using namespace aj_sm80;  // mma, pack2, load_element, store_element (sm80_dtype.cuh)

// Where 16-byte chunk c of row r of K, V, Q or dO lies, bytes from the tile's start.
__device__ __forceinline__ aj_u32 chunk_at(int r, int c) {
#if AJ_ROW_PAD == 0
  return (aj_u32)(r * RSB + ((c ^ (r & 7)) << 4));
#else
  return (aj_u32)(r * RSB + c * 16);
#endif
}
// A lane's ldmatrix offset (chunk_at of its row and first chunk) moved `bytes` (a multiple of 32,
// within the row) to the right: with swizzled rows the chunk index's bits above the lane's own
// are XORed, which is the same as adding them before the swizzle (RSB a power of two). The XOR
// is issued beside its ldmatrix (volatile): hoisted, every offset of an unrolled loop would hold
// a register, and block_m 64 would spill.
__device__ __forceinline__ aj_u32 right_of(aj_u32 lane_offset, int bytes) {
#if AJ_ROW_PAD == 0
  aj_u32 moved;
  asm volatile("xor.b32 %0, %1, %2;" : "=r"(moved) : "r"(lane_offset), "r"(bytes));
  return moved;
#else
  return lane_offset + (aj_u32)bytes;
#endif
}
// Where 16-byte chunk c of row r of a ROWS-row tile of K, V, Q or dO lies.
template <int ROWS>
__device__ __forceinline__ aj_u32 tile_at(int r, int c) {
#if AJ_WGMMA
  return aj_bwd90::tile_chunk_at<ROWS>(r, c);  // wgmma's 128-byte-swizzled chunks of 64 columns
#else
  return chunk_at(r, c);
#endif
}
#if AJ_HAS_ROPE
using namespace aj_rope;  // rope_pair, rope_turn (rope_pairs.cuh)
#endif

// Rows [row0, row0 + ROWS) of a [*, D] matrix (row stride `stride`, elements) into shared
// memory at `sbase`; rows >= nrows are zero-filled. Thread tid copies chunk tid % CPR of rows
// tid / CPR + i * (NT / CPR): one pointer, stepped, instead of an address per chunk.
static_assert(NT % CPR == 0, "whole rows per pass of the CTA");
template <int ROWS>
__device__ __forceinline__ void load_rows(aj_u32 sbase, const aj_u16* g, aj_i64 stride, int row0, int nrows,
                                          int tid) {
  constexpr int ROW_STEP = NT / CPR;
  const int r0 = tid / CPR, c = tid % CPR;
  const aj_u16* src = g + (aj_i64)(row0 + r0) * stride + c * 8;
  const aj_i64 step = (aj_i64)ROW_STEP * stride;
#pragma unroll
  for (int i = 0; i < (ROWS + ROW_STEP - 1) / ROW_STEP; ++i, src += step) {
    const int r = r0 + i * ROW_STEP;
    if (ROWS % ROW_STEP == 0 || r < ROWS) {
      const bool ok = row0 + r < nrows;
      aj_cp_async_16(sbase + tile_at<ROWS>(r, c), ok ? src : g, ok ? 16 : 0);
    }
  }
}

// The dQ accumulator keeps each query block's BM x D sums in the main kernel's fragment
// order, not row-major, so that one warp instruction's adds cover whole cache lines (a
// row-major order touches eight lines per instruction). Only the postprocess reads it back,
// through dq_slot. Element (row, col) of a block belongs to warp part * QT + row / 16,
// register (j, e = r * 2 + e2) of lane g * 4 + t. Scalar adds (fixed point, or before
// sm_90): slot ((warp * DQ_ND + j) * 4 + e) * 32 + lane, 32 consecutive words per
// instruction. fp32 on sm_90: ((warp * DQ_ND + j) * 32 + lane) * 4 + e, one 16-byte vector
// add per lane and j (red.global.add.v4.f32), a quarter of the instructions.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define AJ_DQ_VECTOR_ADDS 1
#else
#define AJ_DQ_VECTOR_ADDS 0
#endif
static_assert(QT * DQ_PARTS == NW, "every warp owns exactly one 16-row tile of dQ");
#if AJ_WGMMA && AJ_DQ_BULK
static_assert(aj_bwd90::SMEM_DQ_STAGE == SMEM_BYTES, "dQ staging right after the LSE and D rows");
static_assert(DQ_ND * 4 * 32 == 1024, "a warp's dQ slots: one 1024-slot staging area");
#endif
__device__ __forceinline__ int dq_slot(int row, int col, bool vector_adds) {
  const int qt = row >> 4, g = row & 7, r = (row >> 3) & 1;
  const int part = col / DQ_COLS, c = col % DQ_COLS;
  const int j = c >> 3, lane = g * 4 + ((c >> 1) & 3), e = r * 2 + (c & 1);
  const int wj = (part * QT + qt) * DQ_ND + j;
  return vector_adds ? (wj * 32 + lane) * 4 + e : (wj * 4 + e) * 32 + lane;
}
__device__ __forceinline__ void add_f32x4(float* p, const float (&v)[4]) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(v[0]), "f"(v[1]), "f"(v[2]), "f"(v[3])
               : "memory");
}
#if AJ_DQ_ORDERED
#if !AJ_DQ_VECTOR_ADDS
#error "attnjit bwd: AJ_DQ_ORDERED needs sm_90's vector adds"
#endif
// Ordered dQ: waits until the query block's turn counter reaches `target` (acquire: the adds
// the counter counts are visible after it).
__device__ __forceinline__ void wait_turn(const int* turn, int target) {
  for (;;) {
    int seen;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(seen) : "l"(turn) : "memory");
    if (seen >= target) return;
    asm volatile("nanosleep.u32 64;" ::: "memory");
  }
}
// After the warp's adds (ordered before this lane's fence by the __syncwarp before the call):
// they become visible before the count does.
__device__ __forceinline__ void pass_turn(int* turn) {
  __threadfence();
  atomicAdd(turn, 1);
}
#endif
// Offset of query block m's accumulator (blocks of BM * D elements, per (b, h)).
__device__ __forceinline__ aj_i64 dq_block_offset(int b, int h, int m, int heads_q, int seq_q) {
  const int m_blocks = (seq_q + BM - 1) / BM;
  return (((aj_i64)b * heads_q + h) * m_blocks + m) * (BM * D);
}

#if AJ_HAS_BLOCK_MASK
// A mask that reads tensors: an edge step's bounds and mask tests of this thread's S^T fragment
// (keys kv_base + 8 (e / 2), queries q0 + 8 j + 2 t + e % 2), bit j * 4 + e, computed before S
// and dP hold registers. Beside S, dP, dK and dV the tests' temporaries made such masks spill
// at block_m 64 (document D=128 on sm_90a: 92 bytes, 4 so), and fall back to block_m 32. The
// other masks keep the same tests inline in grad_tile (their instructions, measured, unchanged).
__device__ __forceinline__ aj_u32 edge_keep_bits(int cls, int b, int h, int q0, int kv_base, int t, int seq_q,
                                                 int seq_k, const AttnjitFwdArgs& args) {
  static_assert(NQ * 4 <= 32, "one bit per element of a thread's S^T fragment");
  AjMaskCol cols[2];
  if (cls == 1)
    for (int r = 0; r < 2; ++r) cols[r] = aj_mask_col(b, h, min(kv_base + 8 * r, seq_k - 1), args);
  aj_u32 bits = 0u;
#pragma unroll
  for (int j = 0; j < NQ; ++j) {
    AjMaskRow rows[2];
    if (cls == 1)
      for (int c = 0; c < 2; ++c) rows[c] = aj_mask_row(b, h, min(q0 + j * 8 + 2 * t + c, seq_q - 1), args);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int kv = kv_base + (e >> 1) * 8, q = q0 + j * 8 + 2 * t + (e & 1);
      bool keep = kv < seq_k;
      if (cls == 1)
        keep = keep && aj_mask_pair(rows[e & 1], cols[e >> 1], b, h, q < seq_q ? q : seq_q - 1,
                                    kv < seq_k ? kv : seq_k - 1, args);
      bits |= (keep ? 1u : 0u) << (j * 4 + e);
    }
  }
  return bits;
}
#endif

}  // namespace aj_bwd

#if AJ_HAS_ROPE
// ---- RoPE: Q and K rotated into the workspace (the main kernel reads them there) ----------
// One thread per (row, pair). Grid (ceil(max(seq_q, seq_k) * D / 2 / 256), heads_q + heads_kv,
// batch): y < heads_q is a query head, the others kv heads.
extern "C" __global__ void __launch_bounds__(256) attnjit_bwd_rope(const AttnjitBwdArgs args) {
  using namespace aj_bwd;
  const AttnjitFwdArgs& f = args.fwd;
  const bool is_q = (int)blockIdx.y < f.heads_q;
  const int head = is_q ? blockIdx.y : blockIdx.y - f.heads_q, b = blockIdx.z;
  const int rows = is_q ? f.seq_q : f.seq_k;
  const aj_i64 idx = (aj_i64)blockIdx.x * 256 + threadIdx.x;
  if (idx >= (aj_i64)rows * (D / 2)) return;
  const int row = (int)(idx / (D / 2)), j = (int)(idx % (D / 2));
  const aj_u16* src = is_q ? (const aj_u16*)f.q + b * f.q_stride[0] + head * f.q_stride[1] + row * f.q_stride[2]
                           : (const aj_u16*)f.k + b * f.k_stride[0] + head * f.k_stride[1] + row * f.k_stride[2];
  aj_u16* dst = (aj_u16*)(is_q ? args.rope_q : f.rope_k) +
                (((aj_i64)b * (is_q ? f.heads_q : f.heads_kv) + head) * rows + row) * D;
  int e0, e1;
  bool turns;
  rope_pair(j, e0, e1, turns);
  float x0 = load_element(src + e0), x1 = load_element(src + e1);
  if (turns) rope_turn(x0, x1, is_q ? aj_rope_q_position(b, row, f) : aj_rope_kv_position(b, row, f), j, 1.f);
  dst[e0] = store_element(x0);
  dst[e1] = store_element(x1);
}

// ---- RoPE: dK turned back from the rotated frame (fp32 workspace) into dk ------------------
// Grid (ceil(seq_k * D / 2 / 256), heads_kv, batch), 256 threads.
extern "C" __global__ void __launch_bounds__(256) attnjit_bwd_rope_dk(const AttnjitBwdArgs args) {
  using namespace aj_bwd;
  const AttnjitFwdArgs& f = args.fwd;
  const int hk = blockIdx.y, b = blockIdx.z;
  const aj_i64 idx = (aj_i64)blockIdx.x * 256 + threadIdx.x;
  if (idx >= (aj_i64)f.seq_k * (D / 2)) return;
  const int row = (int)(idx / (D / 2)), j = (int)(idx % (D / 2));
  const float* src = args.dk_rotated + (((aj_i64)b * f.heads_kv + hk) * f.seq_k + row) * D;
  aj_u16* dst = (aj_u16*)args.dk + b * args.dk_stride[0] + hk * args.dk_stride[1] + row * args.dk_stride[2];
  int e0, e1;
  bool turns;
  rope_pair(j, e0, e1, turns);
  float x0 = src[e0], x1 = src[e1];
  if (turns) rope_turn(x0, x1, aj_rope_kv_position(b, row, f), j, -1.f);
  dst[e0] = store_element(x0);
  dst[e1] = store_element(x1);
}
#endif

// ---- D = rowsum(dO * O); zeroed accumulators ----------------------------------------------
// Grid (ceil(seq_q / 16), heads_q, batch), 128 threads: each warp takes 4 rows.
extern "C" __global__ void __launch_bounds__(128) attnjit_bwd_preprocess(const AttnjitBwdArgs args) {
  using namespace aj_bwd;
  const AttnjitFwdArgs& f = args.fwd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = blockIdx.y, b = blockIdx.z;
  for (int r = 0; r < 4; ++r) {
    const int q = blockIdx.x * 16 + warp * 4 + r;
    if (q >= f.seq_q) break;
    const aj_u16* o = (const aj_u16*)f.o + b * f.o_stride[0] + h * f.o_stride[1] + q * f.o_stride[2];
    const aj_u16* d_o =
        (const aj_u16*)args.d_out + b * args.d_out_stride[0] + h * args.d_out_stride[1] + q * args.d_out_stride[2];
    const aj_i64 row = ((aj_i64)b * f.heads_q + h) * f.seq_q + q;
    float sum = 0.f;
#if AJ_HAS_OUTPUT_GATE
    // O = O_attn * s with s = sigmoid(gate): the main kernel takes dO * s (the gradient of
    // O_attn), rounded to the storage type, and d gate = dO * O * (1 - s) (summed over d for a
    // rank-3 gate), written straight into the caller's fp32 gradient when asked for. D =
    // rowsum(dO * O) in exact arithmetic; computed here from that rounded dO * s and O / s
    // (O_attn), so that it matches the dP the main kernel computes from the same dO * s: from
    // the unrounded dO * O, dK's error reached twice the naive computation's (H200, seed 13).
    aj_u16* d_o_gated = (aj_u16*)args.d_out_gated + row * D;
    float* d_gate = args.tensor_grad[AJ_OUTPUT_GATE_SLOT];
    const aj_i64* gs = args.tensor_grad_stride[AJ_OUTPUT_GATE_SLOT];
    float gate_sum = 0.f;
    for (int d = lane; d < D; d += 32) {
      const float od = load_element(o + d), dod = load_element(d_o + d), sg = aj_output_gate(b, h, q, d, f);
      const aj_u16 dog = store_element(dod * sg);
      d_o_gated[d] = dog;
      if (sg > 0.f) sum += load_element(&dog) * (od / sg);  // (s = 0: dO * s and O are 0)
#if AJ_OUTPUT_GATE_PER_ELEMENT
      if (d_gate != nullptr) d_gate[b * gs[0] + h * gs[1] + q * gs[2] + d * gs[3]] = dod * od * (1.f - sg);
#else
      gate_sum += dod * od * (1.f - sg);
#endif
    }
#if !AJ_OUTPUT_GATE_PER_ELEMENT
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) gate_sum += aj_shfl_xor(gate_sum, m);
    if (lane == 0 && d_gate != nullptr) d_gate[b * gs[0] + h * gs[1] + q * gs[2]] = gate_sum;
#endif
    (void)gate_sum;
#else
    for (int d = lane; d < D; d += 32) sum += load_element(o + d) * load_element(d_o + d);
#endif
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) sum += aj_shfl_xor(sum, m);
    if (lane == 0) args.delta[row] = sum;
  }
  {
    // This CTA's 16 rows of the (b, h) accumulator, in its fragment order (8 bytes per element
    // either way); the last CTA also zeroes the padding up to a whole query block.
    const aj_i64 block0 = dq_block_offset(b, h, 0, f.heads_q, f.seq_q);
    const aj_i64 end = (aj_i64)((f.seq_q + BM - 1) / BM) * BM * D;
    const aj_i64 lo = (aj_i64)blockIdx.x * 16 * D, hi = blockIdx.x + 1 == gridDim.x ? end : lo + 16 * D;
    unsigned long long* acc = (unsigned long long*)args.dq_accum + block0;
    for (aj_i64 i = lo + threadIdx.x; i < hi; i += 128) acc[i] = 0ull;
#if AJ_DQ_ORDERED
    // The turn counter of the query block whose first rows are this CTA's.
    if (threadIdx.x == 0 && blockIdx.x * 16 % BM == 0)
      args.dq_turns[((aj_i64)b * f.heads_q + h) * ((f.seq_q + BM - 1) / BM) + blockIdx.x * 16 / BM] = 0;
#endif
  }
#if AJ_HAS_TENSOR_GRADS
  const aj_i64 threads = (aj_i64)gridDim.x * gridDim.y * gridDim.z * blockDim.x;
  const aj_i64 id = (((aj_i64)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
  for (int slot = 0; slot < ATTNJIT_MAX_TENSORS; ++slot) {
    if (args.tensor_grad_accum[slot] == nullptr) continue;
    for (aj_i64 i = id; i < args.tensor_grad_numel[slot]; i += threads)
      ((unsigned long long*)args.tensor_grad_accum[slot])[i] = 0ull;
  }
#endif
}

// ---- the main kernel ----------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(AJ_NUM_WARPS * 32) attnjit_bwd(const AttnjitBwdArgs bargs) {
  using namespace aj_bwd;
  extern __shared__ __align__(128) unsigned char aj_smem[];
  const AttnjitFwdArgs& args = bargs.fwd;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
#if AJ_DQ_ORDERED
  // Deterministic: kv blocks add dQ last block first, and the CTAs start in that order.
  const int n_block = bargs.deterministic ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
#else
  const int n_block = blockIdx.x;
#endif
  const int hk = blockIdx.y, b = blockIdx.z;
  const int group = args.heads_q / args.heads_kv;
  const int seq_q = args.seq_q, seq_k = args.seq_k;
  const int kv0 = n_block * BN;
  const int m_blocks = (seq_q + BM - 1) / BM;

#if AJ_WGMMA
  const aj_u32 s_base = (aj_smem_addr(aj_smem) + 1023u) & ~1023u;  // the swizzle's atom
  unsigned char* const smem = aj_smem + (s_base - aj_smem_addr(aj_smem));
#else
  const aj_u32 s_base = aj_smem_addr(aj_smem);
  unsigned char* const smem = aj_smem;
#endif
  const aj_u32 s_k = s_base + SMEM_K, s_v = s_base + SMEM_V, s_q = s_base + SMEM_Q, s_do = s_base + SMEM_DO,
               s_ds = s_base + SMEM_DS;
  float* s_lse = (float*)(smem + SMEM_LSE);
  float* s_delta = (float*)(smem + SMEM_DELTA);
#if AJ_DQ_BULK
  const aj_u32 s_dq_stage = s_base + aj_bwd90::SMEM_DQ_STAGE + warp * aj_bwd90::DQ_STAGE_BYTES;
#endif

#if AJ_HAS_ROPE
  const aj_u16* kg = (const aj_u16*)args.rope_k + ((aj_i64)b * args.heads_kv + hk) * (aj_i64)seq_k * D;
  const aj_i64 k_row_stride = D;
#else
  const aj_u16* kg = (const aj_u16*)args.k + b * args.k_stride[0] + hk * args.k_stride[1];
  const aj_i64 k_row_stride = args.k_stride[2];
#endif
  const aj_u16* vg = (const aj_u16*)args.v + b * args.v_stride[0] + hk * args.v_stride[1];
  aj_cp_async_commit();  // keep the group count uniform: K and V join the first step's group
  aj_bwd::load_rows<BN>(s_k, kg, k_row_stride, kv0, seq_k, tid);
  aj_bwd::load_rows<BN>(s_v, vg, args.v_stride[2], kv0, seq_k, tid);

  // The steps of this CTA: (query head h of the group, query block m) whose tile is not
  // empty, heads outer; a step past the group's last head ends the loop.
  struct Step {
    int h, m, cls;
  };
  const int h_end = (hk + 1) * group;
  // The class of tile (query block m, kv block n) of head h.
  auto tile_class_of = [&](int h, int m, int n) -> int {
#if AJ_HAS_BLOCK_MASK
    // A mask that reads tensors: the classes attnjit_block_mask built for these tiles.
    if (args.tile_classes != nullptr)
      return args.tile_classes[(aj_i64)b * args.tile_class_stride[0] + (aj_i64)h * args.tile_class_stride[1] +
                               (aj_i64)m * args.tile_class_stride[2] + n];
#endif
    const int q0 = m * BM;
    return aj_tile_class(b, h, q0, min(q0 + BM, seq_q) - 1, n * BN, min(n * BN + BN, seq_k) - 1, args);
  };
  const int h_begin = hk * group;
#if AJ_WGMMA
  // A warp-wide walk over each head's query blocks (AjTileChunk); every warp computes the same
  // steps, so they agree across the CTA without a barrier.
  AjTileChunk chunk;
  int chunk_h = -1;
  auto next_step = [&](int h, int m) -> Step {
    for (; h < h_end; ++h, m = 0) {
      if (h != chunk_h) chunk = AjTileChunk{}, chunk_h = h;
      int cls = 0;
      m = chunk.next(m, m_blocks, cls, [&](int i) { return tile_class_of(h, i, n_block); });
      if (m < m_blocks) return {h, m, cls};
    }
    return {h_end, 0, 0};
  };
#else
  // A tile at a time, every thread: the warp-wide walk's registers made bwd_sm80's D=128 kernels
  // spill (document: 8 -> 36 bytes, past the fallback's limit).
  const int kv_hi = min(kv0 + BN, seq_k) - 1;
  auto next_step = [&](int h, int m) -> Step {
    for (; h < h_end; ++h, m = 0)
      for (; m < m_blocks; ++m) {
#if AJ_HAS_BLOCK_MASK
        if (args.tile_classes != nullptr) {
          const int cls = tile_class_of(h, m, n_block);
          if (cls != 0) return {h, m, cls};
          continue;
        }
#endif
        const int q0 = m * BM;
        const int cls = aj_tile_class(b, h, q0, min(q0 + BM, seq_q) - 1, kv0, kv_hi, args);
        if (cls != 0) return {h, m, cls};
      }
    return {h_end, 0, 0};
  };
#endif
  auto after = [&](const Step& st) { return next_step(st.h, st.m + 1); };
#if AJ_DQ_ORDERED
  // How many kv blocks after this one add to query block m of head h (their tiles there are not
  // empty): 32 classified at once, a lane each.
  auto kv_blocks_after = [&](int h, int m) -> int {
    int count = 0;
    for (int first = n_block + 1; first < (int)gridDim.x; first += 32) {
      const int n = first + lane;
      count += __popc(__ballot_sync(~0u, n < (int)gridDim.x && tile_class_of(h, m, n) != 0));
    }
    return count;
  };
#endif
  // Q and dO of a step into buffer `stage` (cp.async); its LSE and D into registers of the
  // first BM threads, stored by store_row_stats once the loads have landed.
  float row_lse = 0.f, row_delta = 0.f;
  auto load_step = [&](const Step& st, int stage) {
    const int h = st.h;
    const int q0 = st.m * BM;
#if AJ_HAS_ROPE
    const aj_u16* qg = (const aj_u16*)bargs.rope_q + ((aj_i64)b * args.heads_q + h) * (aj_i64)seq_q * D;
    const aj_i64 q_row_stride = D;
#else
    const aj_u16* qg = (const aj_u16*)args.q + b * args.q_stride[0] + h * args.q_stride[1];
    const aj_i64 q_row_stride = args.q_stride[2];
#endif
#if AJ_HAS_OUTPUT_GATE
    const aj_u16* dog = (const aj_u16*)bargs.d_out_gated + ((aj_i64)b * args.heads_q + h) * (aj_i64)seq_q * D;
    const aj_i64 do_row_stride = D;
#else
    const aj_u16* dog = (const aj_u16*)bargs.d_out + b * bargs.d_out_stride[0] + h * bargs.d_out_stride[1];
    const aj_i64 do_row_stride = bargs.d_out_stride[2];
#endif
    aj_bwd::load_rows<BM>(s_q + stage * BM * RSB, qg, q_row_stride, q0, seq_q, tid);
    aj_bwd::load_rows<BM>(s_do + stage * BM * RSB, dog, do_row_stride, q0, seq_q, tid);
    aj_cp_async_commit();
    static_assert(BM <= NT, "one thread per query row of a step");
    if (tid < BM) {
      const int q = q0 + tid;
      const aj_i64 row = ((aj_i64)b * args.heads_q + h) * seq_q + q;
      row_lse = q < seq_q ? args.lse[row] : AJ_NEG_INF;
      row_delta = q < seq_q ? bargs.delta[row] : 0.f;
    }
  };
  // Rows past seq_q and fully masked rows (LSE -inf) get +inf: exp2(s - inf) = 0 there.
  auto store_row_stats = [&](int stage) {
    if (tid < BM) {
      s_lse[stage * BM + tid] = row_lse == AJ_NEG_INF ? -AJ_NEG_INF : row_lse * AJ_LOG2E;
      s_delta[stage * BM + tid] = row_delta;
    }
  };

  // Per-lane ldmatrix offsets (bytes): A from [m][k] rows; B from [n][k] rows (also A from
  // [k][m] rows with .trans); B from [k][n] rows with .trans.
  // Columns move through right_of, rows by multiples of 8 (row % 8, the swizzle's key, kept)
  // added after it.
#if !AJ_WGMMA
  const aj_u32 a_lane = chunk_at(warp * 16 + (lane & 15), lane >> 4);
  const aj_u32 nk_lane = chunk_at((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  const aj_u32 kn_lane = chunk_at((lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4);
  const aj_u32 dsT_lane = (aj_u32)(((lane & 7) + ((lane >> 4) << 3)) * PSB + ((lane >> 3) & 1) * 16);
#endif

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.f;

  Step step = next_step(h_begin, 0);
  if (step.h < h_end) {
    load_step(step, 0);
    store_row_stats(0);
  }
  int stage = 0;
#if !AJ_WGMMA
  const int dq_qt = warp % QT, dq_part = warp / QT;  // this warp's tile of dQ
#endif

  while (step.h < h_end) {
    const Step next = after(step);
#if AJ_BWD90_LOAD_AFTER_BARRIER
    aj_cp_async_wait<0>();  // this step's rows, copied since the last step's first barrier
#elif AJ_STAGES == 2
    if (next.h < h_end) {
      load_step(next, stage ^ 1);
      aj_cp_async_wait<1>();
    } else {
      aj_cp_async_wait<0>();
    }
#else
    aj_cp_async_wait<0>();
#endif
#if AJ_WGMMA
    aj_fence_proxy_async();  // the copies, before wgmma reads them
#endif
    __syncthreads();
#if AJ_BWD90_LOAD_AFTER_BARRIER
    if (next.h < h_end) load_step(next, stage ^ 1);  // (every reader of that buffer is past the barrier)
#endif
    const int h = step.h, cls = step.cls;
    const int q0 = step.m * BM;
    const aj_u32 sq = s_q + stage * BM * RSB, sdo = s_do + stage * BM * RSB;
    const float* lse2 = s_lse + stage * BM;
    const float* delta = s_delta + stage * BM;
#if AJ_HAS_BLOCK_MASK
    const bool edge_step = cls == 1 || kv0 + BN > seq_k || q0 + BM > seq_q;
    const aj_u32 keep_bits =
        edge_step ? edge_keep_bits(cls, b, h, q0, kv0 + warp * 16 + g, t, seq_q, seq_k, args) : ~0u;
#endif

    // ---- S^T = K Q^T and dP^T = V dO^T (this warp's 16 keys x BM queries) --------------
    float s[NQ][4], dp[NQ][4];
#if AJ_WGMMA
    aj_bwd90::issue_scores(aj_bwd90::flat(s), aj_bwd90::flat(dp), s_k, s_v, sq, sdo, warp >> 2);
    aj_bwd90::wait_scores(aj_bwd90::flat(s), aj_bwd90::flat(dp));  // (or S^T only: AJ_BWD90_P_BEFORE_DP)
#else
#pragma unroll
    for (int j = 0; j < NQ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      aj_u32 ka[4], va[4];
      aj_ldmatrix_x4(ka, s_k + right_of(a_lane, kk * 32));
      aj_ldmatrix_x4(va, s_v + right_of(a_lane, kk * 32));
#pragma unroll
      for (int jn = 0; jn < NQ / 2; ++jn) {
        aj_u32 qb[4], ob[4];
        aj_ldmatrix_x4(qb, sq + right_of(nk_lane, kk * 32) + jn * 16 * RSB);
        aj_ldmatrix_x4(ob, sdo + right_of(nk_lane, kk * 32) + jn * 16 * RSB);
        mma(s[2 * jn], ka, qb[0], qb[1]);
        mma(s[2 * jn + 1], ka, qb[2], qb[3]);
        mma(dp[2 * jn], va, ob[0], ob[1]);
        mma(dp[2 * jn + 1], va, ob[2], ob[3]);
      }
    }
#endif

    // ---- P = exp(score_mod(s) - LSE), masked; dS = P (dP - D) chained through score_mod --
    // Branch-free per element (exp2 of every element, masked ones selected away). Only edge
    // steps (a partial tile class, keys past seq_k or query rows past seq_q) clamp indices and
    // test bounds and the mask: the choice is made once per step, not per element.
    const int kv_base = kv0 + warp * 16 + g;
    auto grad_tile = [&](auto edge_tag, auto p_only_tag) {
      constexpr bool EDGE = decltype(edge_tag)::value;
      constexpr bool P_ONLY = decltype(p_only_tag)::value;  // P into s; dS after dP^T is waited for
#if AJ_HAS_MASK && !AJ_HAS_BLOCK_MASK
      // The mask's key parts of this thread's two keys, its row parts per query pair below.
      AjMaskCol cols[2];
      if (EDGE && cls == 1)
        for (int r = 0; r < 2; ++r) cols[r] = aj_mask_col(b, h, min(kv_base + 8 * r, seq_k - 1), args);
#endif
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
        const float2 lse_pair = *(const float2*)(lse2 + j * 8 + 2 * t);
        const float2 delta_pair = *(const float2*)(delta + j * 8 + 2 * t);
#if AJ_HAS_MASK && !AJ_HAS_BLOCK_MASK
        AjMaskRow rows[2];
        if (EDGE && cls == 1)
          for (int c = 0; c < 2; ++c) rows[c] = aj_mask_row(b, h, min(q0 + j * 8 + 2 * t + c, seq_q - 1), args);
#endif
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kv = kv_base + (e >> 1) * 8;
          const int q = q0 + j * 8 + 2 * t + (e & 1);
          const float row_lse = (e & 1) ? lse_pair.y : lse_pair.x;
          const float row_delta = (e & 1) ? delta_pair.y : delta_pair.x;
          int qc = q, kvc = kv;
          bool keep = true;
          if (EDGE) {
            qc = q < seq_q ? q : seq_q - 1;  // hooks only see in-range indices
            kvc = kv < seq_k ? kv : seq_k - 1;
#if AJ_HAS_BLOCK_MASK
            keep = (keep_bits >> (j * 4 + e)) & 1u;
#else
            keep = kv < seq_k;
#if AJ_HAS_MASK
            if (cls == 1) keep = keep && aj_mask_pair(rows[e & 1], cols[e >> 1], b, h, qc, kvc, args);
#endif
#endif
          }
          (void)qc, (void)kvc;
#if AJ_HAS_SCORE_MOD
          const float raw = s[j][e] * args.scale;
          float p = aj_exp2(aj_score_mod(raw, b, h, qc, kvc, args) * AJ_LOG2E - row_lse);
#else
          float p = aj_exp2(s[j][e] * args.scale_log2 - row_lse);
#endif
          if (EDGE) p = keep ? p : 0.f;
          if constexpr (P_ONLY) {
            s[j][e] = p;
            continue;
          }
          float ds = p * (dp[j][e] - row_delta);
#if AJ_HAS_SCORE_MOD && AJ_HAS_TENSOR_GRADS
          if (ds != 0.f) ds = aj_score_mod_grad(raw, ds, b, h, qc, kvc, bargs);  // (it adds into tensor gradients)
#elif AJ_HAS_SCORE_MOD
          const float chained = aj_score_mod_grad(raw, ds, b, h, qc, kvc, bargs);
          ds = ds != 0.f ? chained : 0.f;
#endif
          s[j][e] = p;
          dp[j][e] = ds;
        }
      }
    };
#if AJ_BWD90_P_BEFORE_DP
    // P while the tensor cores compute dP^T; then dS = P (dP - D) (bwd_sm90.cuh says when).
    if (cls == 1 || kv0 + BN > seq_k || q0 + BM > seq_q)
      grad_tile(aj_bool_tag<true>{}, aj_bool_tag<true>{});
    else
      grad_tile(aj_bool_tag<false>{}, aj_bool_tag<true>{});
    aj_bwd90::wait_dp(aj_bwd90::flat(dp));
#pragma unroll
    for (int j = 0; j < NQ; ++j) {
      const float2 delta_pair = *(const float2*)(delta + j * 8 + 2 * t);
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[j][e] = s[j][e] * (dp[j][e] - ((e & 1) ? delta_pair.y : delta_pair.x));
    }
#else
    if (cls == 1 || kv0 + BN > seq_k || q0 + BM > seq_q)
      grad_tile(aj_bool_tag<true>{}, aj_bool_tag<false>{});
    else
      grad_tile(aj_bool_tag<false>{}, aj_bool_tag<false>{});
#endif

    // ---- dV += P^T dO, dK += dS^T Q ----------------------------------------------------
#if AJ_WGMMA
    aj_u32 pa[KQ][4], da[KQ][4];
#pragma unroll
    for (int kk = 0; kk < KQ; ++kk) {
      aj_bwd90::a_fragment(pa[kk], s, kk);
      aj_bwd90::a_fragment(da[kk], dp, kk);
      aj_bwd90::store_ds(s_ds, da[kk], kk, warp * 16 + g, t);  // dS^T, for dQ = dS K below
    }
#if AJ_DQ_BEFORE_DK
    aj_bwd90::issue_dv(aj_bwd90::flat(dv), pa, sdo);  // (dK after dQ, below)
#else
    aj_bwd90::issue_dv_dk(aj_bwd90::flat(dv), aj_bwd90::flat(dk), pa, da, sq, sdo);
#endif
    aj_fence_proxy_async();  // dS^T, before wgmma reads it
#else
#pragma unroll
    for (int kk = 0; kk < KQ; ++kk) {
      aj_u32 pa[4], da[4];
      pa[0] = pack2(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack2(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      da[0] = pack2(dp[2 * kk][0], dp[2 * kk][1]);
      da[1] = pack2(dp[2 * kk][2], dp[2 * kk][3]);
      da[2] = pack2(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
      da[3] = pack2(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
      // dS^T rows of this warp to shared memory, for dQ = dS K below.
      const aj_u32 row0 = s_ds + (warp * 16 + g) * PSB + (kk * 16 + 2 * t) * 2;
      aj_st_shared_u32(row0, da[0]);
      aj_st_shared_u32(row0 + 8 * PSB, da[1]);
      aj_st_shared_u32(row0 + 16, da[2]);
      aj_st_shared_u32(row0 + 8 * PSB + 16, da[3]);
#pragma unroll
      for (int jd = 0; jd < ND / 2; ++jd) {
        aj_u32 ob[4], qb[4];
        aj_ldmatrix_x4_trans(ob, sdo + right_of(kn_lane, jd * 32) + kk * 16 * RSB);
        aj_ldmatrix_x4_trans(qb, sq + right_of(kn_lane, jd * 32) + kk * 16 * RSB);
        mma(dv[2 * jd], pa, ob[0], ob[1]);
        mma(dv[2 * jd + 1], pa, ob[2], ob[3]);
        mma(dk[2 * jd], da, qb[0], qb[1]);
        mma(dk[2 * jd + 1], da, qb[2], qb[3]);
      }
    }
#endif
    __syncthreads();  // dS^T complete

    // ---- dQ += dS K (this warp's 16 query rows x DQ_COLS columns), into the accumulator ---
    {
      float dq[DQ_ND][4];
#if AJ_WGMMA
#if AJ_DQ_BEFORE_DK
      aj_bwd90::dq_then_dk(aj_bwd90::flat(dq), s_ds, s_k, warp >> 2, aj_bwd90::flat(dv), aj_bwd90::flat(dk), pa, da, sq);
#else
      aj_bwd90::dq(aj_bwd90::flat(dq), s_ds, s_k, warp >> 2, aj_bwd90::flat(dv), aj_bwd90::flat(dk), pa, da);
#endif
#else
#pragma unroll
      for (int j = 0; j < DQ_ND; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        aj_u32 a[4];
        aj_ldmatrix_x4_trans(a, s_ds + dsT_lane + kk * 16 * PSB + dq_qt * 32);
#pragma unroll
        for (int jd = 0; jd < DQ_ND / 2; ++jd) {
          aj_u32 kb[4];
          aj_ldmatrix_x4_trans(kb, s_k + right_of(kn_lane, dq_part * DQ_COLS * 2 + jd * 32) + kk * 16 * RSB);
          mma(dq[2 * jd], a, kb[0], kb[1]);
          mma(dq[2 * jd + 1], a, kb[2], kb[3]);
        }
      }
#endif
      // Into this warp's slots of the block (dq_slot), padding rows included (their sums are 0).
      const aj_i64 block = dq_block_offset(b, h, step.m, args.heads_q, seq_q) + warp * (DQ_ND * 4 * 32);
#if AJ_DQ_BULK
      aj_bwd90::dq_bulk_add(bargs, block, dq, lane, s_dq_stage);
#else
#if AJ_DQ_ORDERED
      if (bargs.deterministic) {
        // This warp's turn at the query block: after every warp of the kv blocks above this one
        // that add to it (warp-uniform count); then fp32 adds, then the turn passes on.
        int* const turn = bargs.dq_turns + ((aj_i64)b * args.heads_q + h) * m_blocks + step.m;
        const int before = kv_blocks_after(h, step.m);
        if (lane == 0) wait_turn(turn, before * AJ_NUM_WARPS);
        __syncwarp();
        float* acc = (float*)bargs.dq_accum + block + lane * 4;
#pragma unroll
        for (int j = 0; j < DQ_ND; ++j) add_f32x4(acc + j * 128, dq[j]);
        __syncwarp();
        if (lane == 0) pass_turn(turn);
      } else
#endif
      if (bargs.deterministic) {
        unsigned long long* acc = (unsigned long long*)bargs.dq_accum + block + lane;
#pragma unroll
        for (int j = 0; j < DQ_ND; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) aj_accumulate_fixed(acc + (j * 4 + e) * 32, dq[j][e]);
      } else {
#if AJ_DQ_VECTOR_ADDS
        float* acc = (float*)bargs.dq_accum + block + lane * 4;
#pragma unroll
        for (int j = 0; j < DQ_ND; ++j) add_f32x4(acc + j * 128, dq[j]);
#else
        float* acc = (float*)bargs.dq_accum + block + lane;
#pragma unroll
        for (int j = 0; j < DQ_ND; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) atomicAdd(acc + (j * 4 + e) * 32, dq[j][e]);
#endif
      }
#endif
    }
#if AJ_DQ_BEFORE_DK
    aj_bwd90::finish_dk(aj_bwd90::flat(dk), da);
#endif
#if AJ_STAGES == 2
    if (next.h < h_end) store_row_stats(stage ^ 1);  // (that buffer's last reader was the step before)
#endif
#if !AJ_BWD90_LOAD_AFTER_BARRIER
    __syncthreads();  // dS^T, Q and dO of this stage may be overwritten
#endif
#if AJ_STAGES == 1
    if (next.h < h_end) {
      load_step(next, 0);
      store_row_stats(0);
    }
#else
    stage ^= 1;
#endif
    step = next;
  }
  aj_cp_async_commit();  // K and V, when there was no step at all
  aj_cp_async_wait<0>();

  // ---- epilogue: dK (times the softmax scale) and dV of this warp's 16 keys --------------
  aj_u16* dkg = (aj_u16*)bargs.dk + b * bargs.dk_stride[0] + hk * bargs.dk_stride[1];
  aj_u16* dvg = (aj_u16*)bargs.dv + b * bargs.dv_stride[0] + hk * bargs.dv_stride[1];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int kv = kv0 + warp * 16 + g + r * 8;
    if (kv >= seq_k) continue;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      const int d = j * 8 + 2 * t;
#if AJ_HAS_ROPE
      // In the rotated frame, in fp32: attnjit_bwd_rope_dk turns it back and rounds once.
      float* dkr = bargs.dk_rotated + (((aj_i64)b * args.heads_kv + hk) * seq_k + kv) * D + d;
      dkr[0] = dk[j][2 * r] * args.scale;
      dkr[1] = dk[j][2 * r + 1] * args.scale;
#else
      *(aj_u32*)(dkg + kv * bargs.dk_stride[2] + d) = pack2(dk[j][2 * r] * args.scale, dk[j][2 * r + 1] * args.scale);
#endif
      *(aj_u32*)(dvg + kv * bargs.dv_stride[2] + d) = pack2(dv[j][2 * r], dv[j][2 * r + 1]);
    }
  }
#if AJ_DQ_BULK
  aj_bwd90::dq_bulk_drain(lane);  // (after the epilogue's stores: only the staging must outlive it)
#endif
}

// ---- dQ (times the softmax scale) and the tensor gradients from their accumulators ---------
// Grid (ceil(seq_q / 16), heads_q, batch), 128 threads.
extern "C" __global__ void __launch_bounds__(128) attnjit_bwd_postprocess(const AttnjitBwdArgs args) {
  using namespace aj_bwd;
  const AttnjitFwdArgs& f = args.fwd;
  const int h = blockIdx.y, b = blockIdx.z;
  // The main kernel's dQ: fixed point in scalar slots when deterministic (unless the kv blocks
  // took turns, AJ_DQ_ORDERED: fp32), else fp32, in vector slots on sm_90.
  const int fixed_dq = args.deterministic && !AJ_DQ_ORDERED;
  const bool vector_adds = AJ_DQ_VECTOR_ADDS && !fixed_dq;
#if AJ_HAS_ROPE
  // dQ in the rotated frame, turned back pair by pair.
  for (int i = threadIdx.x; i < 16 * (D / 2); i += 128) {
    const int q = blockIdx.x * 16 + i / (D / 2), j = i % (D / 2);
    if (q >= f.seq_q) break;
    int e0, e1;
    bool turns;
    rope_pair(j, e0, e1, turns);
    const aj_i64 block = dq_block_offset(b, h, q / BM, f.heads_q, f.seq_q);
    float x0 = aj_accumulated(args.dq_accum, block + dq_slot(q % BM, e0, vector_adds), fixed_dq) * f.scale;
    float x1 = aj_accumulated(args.dq_accum, block + dq_slot(q % BM, e1, vector_adds), fixed_dq) * f.scale;
    if (turns) rope_turn(x0, x1, aj_rope_q_position(b, q, f), j, -1.f);
    aj_u16* out = (aj_u16*)args.dq + b * args.dq_stride[0] + h * args.dq_stride[1] + q * args.dq_stride[2];
    out[e0] = store_element(x0);
    out[e1] = store_element(x1);
  }
#else
  for (int i = threadIdx.x; i < 16 * D; i += 128) {
    const int q = blockIdx.x * 16 + i / D, d = i % D;
    if (q >= f.seq_q) break;
    const aj_i64 block = dq_block_offset(b, h, q / BM, f.heads_q, f.seq_q);
    const float v = aj_accumulated(args.dq_accum, block + dq_slot(q % BM, d, vector_adds), fixed_dq) * f.scale;
    ((aj_u16*)args.dq)[b * args.dq_stride[0] + h * args.dq_stride[1] + q * args.dq_stride[2] + d] = store_element(v);
  }
#endif
#if AJ_HAS_TENSOR_GRADS
  const aj_i64 threads = (aj_i64)gridDim.x * gridDim.y * gridDim.z * blockDim.x;
  const aj_i64 id = (((aj_i64)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
  for (int slot = 0; slot < ATTNJIT_MAX_TENSORS; ++slot) {
    // (the output gate's gradient, which has no accumulator, was written by the preprocess)
    if (args.tensor_grad[slot] == nullptr || args.tensor_grad_accum[slot] == nullptr) continue;
    const AttnjitTensorArg& t = f.tensors[slot];
    for (aj_i64 i = id; i < args.tensor_grad_numel[slot]; i += threads) {
      // i is row-major over the tensor's shape; the output may have any strides.
      aj_i64 rest = i, offset = 0;
      for (int dim = 3; dim >= 0; --dim) {
        const int size = t.size[dim] > 0 ? t.size[dim] : 1;
        offset += (rest % size) * args.tensor_grad_stride[slot][dim];
        rest /= size;
      }
      args.tensor_grad[slot][offset] = aj_accumulated(args.tensor_grad_accum[slot], i, args.deterministic);
    }
  }
#endif
}

#endif  // ATTNJIT_BWD_SM80_CUH
