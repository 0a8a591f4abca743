// attnjit split-K decode kernel for sm_80 and newer (FlashDecoding's structure, with the
// query heads of a GQA group packed as rows of one tile).
//
// Pasted last into the generated unit, after abi.h, common.cuh, hooks.cuh, the
// configuration macros, the hooks, sm80_dtype.cuh, rope_pairs.cuh and decode_schedule.h (the
// pieces and stream-K's ranges, shared with the host tests). One kernel:
//   attnjit_decode   grid (splits, heads_kv * row_blocks, batch), 32 * AJ_NUM_WARPS threads.
//                    The rows of a kv head's tile are (query head of the group, query) pairs,
//                    row = g * seq_q + q: every K and V byte is read once per kv head and
//                    split, not once per query head. Split s takes the kv tiles
//                    [s * tiles_per_split, (s + 1) * tiles_per_split) and writes its O
//                    (normalized, fp32) and LSE per row to the workspace; the split that
//                    finishes last for its (sequence, kv head, row block) (a counter in
//                    split_counters) merges all of them by their LSE, applies the output gate
//                    and writes O (input dtype) and the LSE. No second kernel: the merge runs
//                    in the tail of the last split, with no launch between.
//
// K and V come from a contiguous cache [batch, heads_kv, seq_k, head_dim] (any strides) or from
// a paged one (AttnjitDecodeArgs::block_table); with per-sequence lengths (fwd.seq_lens_k) the
// hooks see each sequence's own kv_len, and splits past a sequence's end write LSE = -inf.
//
// Configuration macros (defined by codegen):
//   AJ_HEAD_DIM    64 or 128
//   AJ_BLOCK_N     keys per kv tile: 32 or 64
//   AJ_STAGES      kv tiles in the cp.async ring: 2 to 4 (AJ_STAGES - 1 loads in flight)
//   AJ_NUM_WARPS   4: each warp owns 16 rows, AJ_NUM_WARPS * 16 rows per CTA (or, when a CTA's
//                  rows fit in 16, a quarter of each tile's keys for all of them)
//   AJ_CTAS_PER_SM 2: the __launch_bounds__ minimum, which the host's split rule assumes
//   AJ_STREAM_K    0: split-K as above; 1: stream-K (LeanAttention): a 1-D grid, CTA c takes
//                  the c-th of gridDim.x equal ranges of all (sequence, kv head, row block)
//                  kv tiles laid end to end, a piece per unit its range touches; each unit's
//                  pieces merge as the splits do. Lengths that differ keep every CTA busy.
//   AJ_HAS_SCORE_MOD, AJ_HAS_MASK  0 or 1 (and the row-hook macros). With RoPE, the Q rows turn
//                  once in the ring before they go to registers, and each K tile turns in
//                  its ring slot once it has landed (a barrier more per tile), pair by pair.
//   AJ_ROPE_STEPPED 0 or 1 (the knob rope_steps, default 1): with 1, and when the threads divide
//                  into whole rows of rotated pairs, each thread turns one pair j of every
//                  (NT / pairs)-th row of a K tile: a sin/cos of its first row per tile, the next
//                  rows by a complex multiply with (cos, sin) of the step, whose angle w_j times
//                  the row stride it computes once (key positions are kv + an offset per
//                  sequence, so rows of a tile are consecutive positions).
//   AJ_ROW_PAD     0, 8 or 16 (the knob row_pad; default 0, with RoPE 8): elements between rows
//                  of shared memory past the head dim. 0 aligns every row with its global source
//                  and XORs its 16-byte chunk index with row % 8 (ldmatrix conflict-free); 8 keeps
//                  ldmatrix conflict-free by padding, but an odd row then starts 16 bytes into a
//                  32-byte sector, and the copies ask L2 for 1.5x the sectors; 16 aligns every
//                  row by padding (ldmatrix then has 2-way conflicts).
// Shared memory: AJ_STAGES * 2 * AJ_BLOCK_N * (AJ_HEAD_DIM + AJ_ROW_PAD) * 2 bytes (dynamic), the ring of
// K and V tiles, whose first slots the Q rows pass through before it starts; 4 KiB (static) for
// a paged split's block-table entries.
#ifndef ATTNJIT_DECODE_SM80_CUH
#define ATTNJIT_DECODE_SM80_CUH

#if !defined(AJ_HEAD_DIM) || !defined(AJ_BLOCK_N) || !defined(AJ_STAGES) || !defined(AJ_NUM_WARPS) || \
    !defined(AJ_CTAS_PER_SM) || !defined(AJ_HAS_SCORE_MOD) || !defined(AJ_HAS_MASK)
#error "attnjit decode_sm80: a configuration macro is missing"
#endif
#if !(AJ_HEAD_DIM == 64 || AJ_HEAD_DIM == 128) || !(AJ_BLOCK_N == 32 || AJ_BLOCK_N == 64) || AJ_NUM_WARPS != 4 || \
    AJ_STAGES < 2 || AJ_STAGES > 4
#error "attnjit decode_sm80: AJ_HEAD_DIM 64 or 128, AJ_BLOCK_N 32 or 64, AJ_STAGES 2..4, AJ_NUM_WARPS 4"
#endif

#ifndef AJ_STREAM_K
#define AJ_STREAM_K 0
#endif
#ifndef AJ_ROPE_STEPPED
#define AJ_ROPE_STEPPED 0
#endif
#ifndef AJ_ROW_PAD
#define AJ_ROW_PAD 0
#endif
#if AJ_ROW_PAD != 8 && AJ_ROW_PAD != 16 && AJ_ROW_PAD != 0
#error "attnjit decode_sm80: AJ_ROW_PAD 0, 8 or 16"
#endif

namespace aj_dec {

using namespace aj_sm80;  // mma, pack2, load_element, store_element (sm80_dtype.cuh)
#if AJ_HAS_ROPE
using namespace aj_rope;  // rope_pair, rope_turn_approx (rope_pairs.cuh)
#endif

constexpr int D = AJ_HEAD_DIM;
constexpr int BN = AJ_BLOCK_N;
constexpr int ST = AJ_STAGES;
constexpr int NW = AJ_NUM_WARPS;
constexpr int NT = NW * 32;
constexpr int BM = 16 * NW;  // rows per CTA
constexpr int RS = D + AJ_ROW_PAD;  // shared-memory row stride, elements
constexpr int RSB = RS * 2;
constexpr int KD = D / 16;
constexpr int NN = BN / 8;
constexpr int KN = BN / 16;
constexpr int ND = D / 8;
constexpr int CPR = D / 8;  // 16-byte chunks per row

#if AJ_ROW_PAD == 0
static_assert(CPR >= 8, "the swizzle permutes 8 chunks of a row");
// The swizzled layout: where 16-byte chunk `chunk` of row `row` of a tile (or of the Q rows)
// lies, in bytes from its start; `key` is row % 8, which callers often know without the row.
// (The padded layouts keep the address arithmetic they had as the default, before 2026-11-30.)
__device__ __forceinline__ aj_u32 chunk_at(int row, int chunk, int key) {
  return (aj_u32)(row * RSB + ((chunk ^ key) << 4));
}
// Element e of row `row` of a tile at `tile`.
__device__ __forceinline__ aj_u16* element_at(unsigned char* tile, int row, int e) {
  return reinterpret_cast<aj_u16*>(tile + chunk_at(row, e >> 3, row & 7)) + (e & 7);
}
#endif
// Whether a tile's keys can be split between the warps in k-steps of 16 (BN = 64).
constexpr bool KEY_SPLIT = (BN / NW) % 16 == 0;

template <int N>
struct KeyCount {
  static constexpr int value = N;
};
static_assert(2 * ST * BN >= BM, "the Q rows pass through the ring");

// Block-table entries of a split staged in shared memory (a paged cache): enough for 16k keys
// in pages of 16; a split that needs more reads the table from global memory.
constexpr int TABLE_CACHE = 1024;

// Where the K and V rows of one (sequence, kv head) live: contiguous from `k` / `v` with
// `k_row` / `v_row` between keys, or, when `table` is set, in pages (`k_page` / `v_page`
// apart) listed by the sequence's block-table row, `cached` entries of it from `first_page`
// on in shared memory.
struct KvSource {
  const aj_u16* k;
  const aj_u16* v;
  aj_i64 k_row, v_row, k_page, v_page;
  const int* table;  // this sequence's row of the block table, or null (contiguous)
  const int* cached;  // shared-memory copy of entries [first_page, first_page + cached_count)
  int first_page, cached_count;
  int page_size, num_pages;

  __device__ __forceinline__ int page(int index) const {
    const int i = index - first_page;
    const int p = (i >= 0 && i < cached_count) ? cached[i] : table[index];
    return min(max(p, 0), num_pages - 1);
  }
};

// Keys [key0, key0 + BN) of K and V into shared memory at `sk` and `sv`; keys past `keys` are
// zero-filled. A thread copies one 16-byte column of RPT consecutive rows (tid / CPR) * RPT + i:
// its source pointers step one row at a time, and with pages they are set from the block table
// where its rows enter a page, which for a page size that RPT divides is once per tile.
__device__ __forceinline__ void load_kv(aj_u32 sk, aj_u32 sv, const KvSource& src, int key0, int keys, int tid) {
  constexpr int RPT = BN * CPR / NT;  // rows per thread
  static_assert(NT % CPR == 0 && (BN * CPR) % NT == 0, "each thread copies one column of a run of rows");
  const int r0 = tid / CPR * RPT, c = tid % CPR;
#if AJ_ROW_PAD != 0
  const aj_u32 column = (aj_u32)(r0 * RSB + c * 16);
#endif
  int key = key0 + r0;
  const bool paged = src.table != nullptr;
  int page = 0, offset = key;
  if (paged) {
    page = key / src.page_size;
    offset = key - page * src.page_size;
  }
  // This thread's rows of K and V: set from the block table where `stale`, else stepped.
  const aj_u16 *kp = src.k + c * 8 + (aj_i64)offset * src.k_row, *vp = src.v + c * 8 + (aj_i64)offset * src.v_row;
  bool stale = paged;
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const bool ok = key < keys;
    if (ok && stale) {
      const aj_i64 at = src.page(page);
      kp = src.k + c * 8 + at * src.k_page + (aj_i64)offset * src.k_row;
      vp = src.v + c * 8 + at * src.v_page + (aj_i64)offset * src.v_row;
      stale = false;
    }
#if AJ_ROW_PAD == 0
    const aj_u32 at = chunk_at(r0 + i, c, (r0 + i) & 7);
    aj_cp_async_16(sk + at, ok ? kp : src.k, ok ? 16 : 0);
    aj_cp_async_16(sv + at, ok ? vp : src.v, ok ? 16 : 0);
#else
    aj_cp_async_16(sk + column + i * RSB, ok ? kp : src.k, ok ? 16 : 0);
    aj_cp_async_16(sv + column + i * RSB, ok ? vp : src.v, ok ? 16 : 0);
#endif
    ++key;
    kp += src.k_row;
    vp += src.v_row;
    if (paged && ++offset == src.page_size) {
      offset = 0;
      ++page;
      stale = true;
    }
  }
}

#if AJ_HAS_ROPE
// RoPE on rows [0, ROWS) of a tile in shared memory (RSB bytes apart from `tile`): row r turns
// by position(r); its rounded result replaces it, as a separate RoPE pass would store it.
// Zero-filled rows stay zero.
template <int ROWS, typename Position>
__device__ __forceinline__ void rope_rows(unsigned char* tile, const Position& position, int tid) {
  constexpr int RH = AJ_ROPE_DIM / 2;  // turned pairs per row
  for (int i = tid; i < ROWS * RH; i += NT) {
    const int r = i / RH, j = i % RH;
    int e0, e1;
    bool turns;
    rope_pair(j, e0, e1, turns);
#if AJ_ROW_PAD == 0
    aj_u16 *p0 = element_at(tile, r, e0), *p1 = element_at(tile, r, e1);
    float x0 = load_element(p0), x1 = load_element(p1);
    rope_turn_approx(x0, x1, position(r), j);
    *p0 = store_element(x0);
    *p1 = store_element(x1);
#else
    aj_u16* row = reinterpret_cast<aj_u16*>(tile + r * RSB);
    float x0 = load_element(row + e0), x1 = load_element(row + e1);
    rope_turn_approx(x0, x1, position(r), j);
    row[e0] = store_element(x0);
    row[e1] = store_element(x1);
#endif
  }
}
#endif

#if AJ_HAS_ROPE
// Stepped K turns (AJ_ROPE_STEPPED): thread tid owns rotated pair tid % ROPE_PAIRS of the rows
// tid / ROPE_PAIRS + k * ROPE_STRIDE.
constexpr int ROPE_PAIRS = AJ_ROPE_DIM / 2;
constexpr bool KV_ROPE_STEPPED = AJ_ROPE_STEPPED && NT % ROPE_PAIRS == 0;
constexpr int ROPE_STRIDE = KV_ROPE_STEPPED ? NT / ROPE_PAIRS : 1;

// This thread's pair: its frequency w and the turn by ROPE_STRIDE positions.
struct RopeSteps {
  float w, step_cos, step_sin;
};
__device__ __forceinline__ RopeSteps rope_steps_of(int tid) {
  RopeSteps st;
  st.w = aj_rope_inv_freq(tid % ROPE_PAIRS);
  sincosf((float)ROPE_STRIDE * st.w, &st.step_sin, &st.step_cos);  // a power of two times w: exact
  return st;
}

// RoPE on the K tile at `tile` (RSB-byte rows) whose row r sits at position pos0 + r: this
// thread's pair of its rows, rounded in place as rope_rows stores them.
__device__ __forceinline__ void rope_kv_tile(unsigned char* tile, int pos0, const RopeSteps& st, int tid) {
  const int j = tid % ROPE_PAIRS, r0 = tid / ROPE_PAIRS;
  int e0, e1;
  bool turns;
  rope_pair(j, e0, e1, turns);
  float sn, cs;
  rope_sincos((float)(pos0 + r0) * st.w, sn, cs);
#pragma unroll
  for (int r = r0; r < BN; r += ROPE_STRIDE) {
#if AJ_ROW_PAD == 0
    aj_u16 *p0 = element_at(tile, r, e0), *p1 = element_at(tile, r, e1);
    const float x0 = load_element(p0), x1 = load_element(p1);
    *p0 = store_element(x0 * cs - x1 * sn);
    *p1 = store_element(x1 * cs + x0 * sn);
#else
    aj_u16* row = reinterpret_cast<aj_u16*>(tile + r * RSB);
    const float x0 = load_element(row + e0), x1 = load_element(row + e1);
    row[e0] = store_element(x0 * cs - x1 * sn);
    row[e1] = store_element(x1 * cs + x0 * sn);
#endif
    const float next_cs = cs * st.step_cos - sn * st.step_sin;
    sn = sn * st.step_cos + cs * st.step_sin;
    cs = next_cs;
  }
}
#endif

// Query row (b, h, q): the pieces' O and LSE merged by their LSE, then the output gate; one
// warp per row. `at(k)` is where piece k's LSE for this row lies in partial_lse (its O row at
// D times that in partial_o). The partials were written by other CTAs of this launch: read
// through L2. Lane l holds piece l's weight (32 pieces a round) and owns D / 32 adjacent
// columns, one vector load per piece: the pieces' loads are independent and issued together,
// not one L2 round trip per (piece, column) as a column loop over pieces would.
template <typename PieceAt>
__device__ __forceinline__ void merge_pieces(const AttnjitDecodeArgs& dargs, int b, int h, int q, int lane, int pieces,
                                             const PieceAt& at) {
  const AttnjitFwdArgs& args = dargs.fwd;
  const aj_i64 row = ((aj_i64)b * args.heads_q + h) * args.seq_q + q;
  float m = AJ_NEG_INF;
  for (int s = lane; s < pieces; s += 32) m = fmaxf(m, __ldcg(dargs.partial_lse + at(s)));
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) m = fmaxf(m, aj_shfl_xor(m, k));
  float total = 0.f;
  if (m != AJ_NEG_INF)
    for (int s = lane; s < pieces; s += 32) total += expf(__ldcg(dargs.partial_lse + at(s)) - m);
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) total += aj_shfl_xor(total, k);
  const float lse = m == AJ_NEG_INF ? AJ_NEG_INF : m + logf(total);
  if (args.lse != nullptr && lane == 0) args.lse[row] = lse;

  constexpr int E = D / 32;  // 2 or 4 columns per lane
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
  if (lse != AJ_NEG_INF)
    for (int s0 = 0; s0 < pieces; s0 += 32) {
      const int mine = s0 + lane;
      const float w = mine < pieces ? expf(__ldcg(dargs.partial_lse + at(mine)) - lse) : 0.f;
      const int count = min(32, pieces - s0);
#pragma unroll 4
      for (int j = 0; j < count; ++j) {
        const float wj = __shfl_sync(0xffffffffu, w, j);
        const float* src = dargs.partial_o + at(s0 + j) * D + lane * E;
        float x[E];
        if constexpr (E == 4) {
          const float4 v = __ldcg(reinterpret_cast<const float4*>(src));
          x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
        } else {
          const float2 v = __ldcg(reinterpret_cast<const float2*>(src));
          x[0] = v.x, x[1] = v.y;
        }
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] += wj * x[e];
      }
    }
  aj_u16* out = (aj_u16*)args.o + b * args.o_stride[0] + h * args.o_stride[1] + q * args.o_stride[2] + lane * E;
#if AJ_HAS_OUTPUT_GATE && !AJ_OUTPUT_GATE_PER_ELEMENT
  const float row_gate = aj_output_gate(b, h, q, 0, args);
#endif
#pragma unroll
  for (int e = 0; e < E; ++e) {
#if AJ_HAS_OUTPUT_GATE
#if AJ_OUTPUT_GATE_PER_ELEMENT
    acc[e] *= aj_output_gate(b, h, q, lane * E + e, args);
#else
    acc[e] *= row_gate;
#endif
#endif
    out[e] = store_element(acc[e]);
  }
}

// The pieces (AjDecodePiece) and the stream-K ranges are templates/decode_schedule.h's.
using Piece = AjDecodePiece;

__device__ __forceinline__ void decode_piece(const AttnjitDecodeArgs& dargs, const Piece& piece) {
  extern __shared__ __align__(128) unsigned char aj_smem[];
  const AttnjitFwdArgs& args = dargs.fwd;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int b = piece.b, hk = piece.hk, rb = piece.rb;
  const int group = args.heads_q / args.heads_kv;
  const int seq_q = args.seq_q, seq_k = aj_seq_len_k(b, args);
  const int rows = group * seq_q;
  const int r0 = rb * BM;
  const int tile_begin = piece.tile_begin, tile_end = piece.tile_end;
  // Where piece k's partial row `row` (of this row block's rows) lies in partial_lse.
  const auto partial_at = [&](int k, int row) -> aj_i64 {
#if AJ_STREAM_K
    return (aj_i64)aj_decode_piece_slot(piece, k) * dargs.slot_rows + (row - r0);
#else
    return (((aj_i64)k * args.batch + b) * args.heads_kv + hk) * rows + row;
#endif
  };
  // A CTA whose rows fit in 16 (a GQA group of up to 16 heads at Sq = 1, 4 heads at Sq = 4)
  // splits each kv tile's keys between its warps instead: every warp takes the same 16 rows
  // and BN / NW keys of each tile, and the warps' partial softmax states are merged at the end.
  // Otherwise warp w owns rows 16 w .. 16 w + 15 over all keys, and a warp whose rows are all
  // past the tile's rows loads and synchronizes but skips the products and the softmax.
  const bool split_keys = KEY_SPLIT && rows - r0 <= 16;
  const int row_warp = split_keys ? 0 : warp;
  const bool warp_active = r0 + row_warp * 16 < rows;

  // The ring: stage i holds K at s_ring + 2 i BN rows and V after it.
  const aj_u32 s_ring = aj_smem_addr(aj_smem);
  const bool paged = dargs.block_table != nullptr;
  __shared__ int s_table[TABLE_CACHE];
  KvSource src{(const aj_u16*)args.k + (paged ? 0 : b * args.k_stride[0]) + hk * args.k_stride[1],
               (const aj_u16*)args.v + (paged ? 0 : b * args.v_stride[0]) + hk * args.v_stride[1],
               args.k_stride[2],
               args.v_stride[2],
               args.k_stride[0],
               args.v_stride[0],
               paged ? dargs.block_table + b * dargs.block_table_stride : nullptr,
               s_table,
               0,
               0,
               paged ? dargs.page_size : 1,
               dargs.num_pages};
  if (paged && tile_begin < tile_end) {
    // This split's entries of the block table, read once (published by the barrier below).
    src.first_page = tile_begin * BN / src.page_size;
    const int count = (min(tile_end * BN, seq_k) - 1) / src.page_size - src.first_page + 1;
    src.cached_count = count <= TABLE_CACHE ? count : 0;
    for (int i = tid; i < src.cached_count; i += NT) s_table[i] = src.table[src.first_page + i];
  }

  // Q rows of this tile: row r is query r % seq_q of query head hk * group + r / seq_q. They
  // pass through the ring's first slots into registers before the ring is filled.
  for (int idx = tid; idx < BM * CPR; idx += NT) {
    const int r = idx / CPR, c = idx % CPR, row = r0 + r;
    const bool ok = row < rows;
    const int h = hk * group + (ok ? row / seq_q : 0), q = ok ? row % seq_q : 0;
#if AJ_ROW_PAD == 0
    aj_cp_async_16(s_ring + chunk_at(r, c, r & 7),
#else
    aj_cp_async_16(s_ring + r * RSB + c * 16,
#endif
                   (const aj_u16*)args.q + b * args.q_stride[0] + h * args.q_stride[1] + q * args.q_stride[2] + c * 8,
                   ok ? 16 : 0);
  }
  aj_cp_async_commit();

  // This thread's two rows (g and g + 8 of its warp's 16).
  int row_h[2], row_q[2];
  bool row_ok[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = r0 + row_warp * 16 + g + i * 8;
    row_ok[i] = row < rows;
    row_h[i] = hk * group + (row_ok[i] ? row / seq_q : group - 1);
    row_q[i] = row_ok[i] ? row % seq_q : seq_q - 1;  // hooks only see in-range indices
  }

  // The class of kv tile n over every (head, query range) of this tile's rows: empty when
  // every head's part is empty, full when every one is full, else partial.
  const int g_lo = r0 / seq_q, g_hi = (min(r0 + BM, rows) - 1) / seq_q;
  auto tile_class = [&](int n) -> int {
    const int kv_lo = n * BN, kv_hi = min(kv_lo + BN, seq_k) - 1;
    bool any = false, all_full = true;
    for (int gi = g_lo; gi <= g_hi; ++gi) {
      const int q_lo = max(r0, gi * seq_q) - gi * seq_q;
      const int q_hi = min(min(r0 + BM, rows), (gi + 1) * seq_q) - 1 - gi * seq_q;
      const int c = aj_tile_class(b, hk * group + gi, q_lo, q_hi, kv_lo, kv_hi, args);
      any = any || c != 0;
      all_full = all_full && c == 2;
    }
    return !any ? 0 : (all_full ? 2 : 1);
  };
  // The first non-empty tile at or after n (tile_end when none); its class in `cls`.
  auto next_tile = [&](int n, int& cls) -> int {
    for (; n < tile_end; ++n) {
      cls = tile_class(n);
      if (cls != 0) return n;
    }
    return tile_end;
  };

#if AJ_ROW_PAD == 0
  // This lane's ldmatrix rows and chunks (Q, K, V^T); each row is lane % 8 modulo 8.
  const int q_lane_row = row_warp * 16 + (lane & 15), q_lane_chunk = lane >> 4;
  const int k_lane_row = (lane & 7) + ((lane >> 4) << 3), k_lane_chunk = (lane >> 3) & 1;
  const int v_lane_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_lane_chunk = lane >> 4;
  const int lane_key = lane & 7;
#else
  const aj_u32 q_lane = (aj_u32)((row_warp * 16 + (lane & 15)) * RSB + (lane >> 4) * 16);
  const aj_u32 k_lane = (aj_u32)(((lane & 7) + ((lane >> 4) << 3)) * RSB + ((lane >> 3) & 1) * 16);
  const aj_u32 v_lane = (aj_u32)(((lane & 7) + (((lane >> 3) & 1) << 3)) * RSB + (lane >> 4) * 16);
#endif

  aj_cp_async_wait<0>();
  __syncthreads();
#if AJ_HAS_ROPE
  rope_rows<BM>(aj_smem, [&](int r) { return r0 + r < rows ? aj_rope_q_position(b, (r0 + r) % seq_q, args) : 0; }, tid);
  __syncthreads();
  const RopeSteps rope_steps = KV_ROPE_STEPPED ? rope_steps_of(tid) : RopeSteps{};
#endif
  aj_u32 qf[KD][4];
#pragma unroll
  for (int kk = 0; kk < KD; ++kk)
#if AJ_ROW_PAD == 0
    aj_ldmatrix_x4(qf[kk], s_ring + chunk_at(q_lane_row, q_lane_chunk + 2 * kk, lane_key));
#else
    aj_ldmatrix_x4(qf[kk], s_ring + q_lane + kk * 32);
#endif
  __syncthreads();  // the ring may now overwrite the Q rows

  // Prologue: the first ST - 1 admitted tiles in flight, one commit group per slot (empty
  // groups keep the count uniform).
  int cls = 0, load_cls = 0;
  int n = next_tile(tile_begin, cls);
  int n_load = n;
#pragma unroll
  for (int i = 0; i < ST - 1; ++i) {
    if (n_load < tile_end) {
      load_kv(s_ring + 2 * i * BN * RSB, s_ring + (2 * i + 1) * BN * RSB, src, n_load * BN, seq_k, tid);
      n_load = next_tile(n_load + 1, load_cls);
    }
    aj_cp_async_commit();
  }

  float o[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[j][e] = 0.f;
  float row_max[2] = {AJ_NEG_INF, AJ_NEG_INF}, row_sum[2] = {0.f, 0.f};
#if AJ_HAS_SCORE_MOD
  const float mult = AJ_LOG2E;
#else
  const float mult = args.scale_log2;
#endif

  int stage = 0;
  while (n < tile_end) {
    aj_cp_async_wait<ST - 2>();  // tile n has landed (this thread's copies) ...
    __syncthreads();             // ... everyone's, and the slot computed last is free
    {
      const int free_stage = (stage + ST - 1) % ST;
      if (n_load < tile_end) {
        load_kv(s_ring + 2 * free_stage * BN * RSB, s_ring + (2 * free_stage + 1) * BN * RSB, src, n_load * BN, seq_k,
                tid);
        n_load = next_tile(n_load + 1, load_cls);
      }
      aj_cp_async_commit();
    }
    const aj_u32 sk = s_ring + 2 * stage * BN * RSB, sv = sk + BN * RSB;
#if AJ_HAS_ROPE
    const int key0 = n * BN;
    if constexpr (KV_ROPE_STEPPED)
      rope_kv_tile(aj_smem + 2 * stage * BN * RSB, aj_rope_kv_position(b, key0, args), rope_steps, tid);
    else
      rope_rows<BN>(aj_smem + 2 * stage * BN * RSB, [&](int r) { return aj_rope_kv_position(b, key0 + r, args); },
                    tid);
    __syncthreads();  // the turned tile, before any warp reads it
#endif

    // S, the hooks, the online softmax and O += P V over KEYS keys of the tile from key koff.
    const auto tile_math = [&](auto key_count, int koff) {
      constexpr int KEYS = decltype(key_count)::value;
      constexpr int NNK = KEYS / 8, KNK = KEYS / 16;
      float s[NNK][4];
#pragma unroll
      for (int j = 0; j < NNK; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk)
#pragma unroll
        for (int jn = 0; jn < NNK / 2; ++jn) {
          aj_u32 kb[4];
#if AJ_ROW_PAD == 0
          aj_ldmatrix_x4(kb, sk + chunk_at(k_lane_row + koff + jn * 16, k_lane_chunk + 2 * kk, lane_key));
#else
          aj_ldmatrix_x4(kb, sk + k_lane + (koff + jn * 16) * RSB + kk * 32);
#endif
          mma(s[2 * jn], qf[kk], kb[0], kb[1]);
          mma(s[2 * jn + 1], qf[kk], kb[2], kb[3]);
        }

      // score_mod and masks, per element with its row's head and query.
#pragma unroll
      for (int j = 0; j < NNK; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = e >> 1;
          const int kv = n * BN + koff + j * 8 + 2 * t + (e & 1);
          const int kvc = kv < seq_k ? kv : seq_k - 1;
          float v = s[j][e];
#if AJ_HAS_SCORE_MOD
          v = aj_score_mod(v * args.scale, b, row_h[i], row_q[i], kvc, args);
#endif
          bool keep = row_ok[i] && kv < seq_k;
#if AJ_HAS_MASK
          if (cls == 1) keep = keep && aj_mask_mod(b, row_h[i], row_q[i], kvc, args);
#endif
          s[j][e] = keep ? v : AJ_NEG_INF;
        }

      // Online softmax (exp2 domain), then O += P V.
      aj_u32 p[KNK][4];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = row_max[r];
#pragma unroll
        for (int j = 0; j < NNK; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
        mx = fmaxf(mx, aj_shfl_xor(mx, 1));
        mx = fmaxf(mx, aj_shfl_xor(mx, 2));
        const float ms = (mx == AJ_NEG_INF) ? 0.f : mx * mult;
        const float alpha = aj_exp2(row_max[r] * mult - ms);
        row_max[r] = mx;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NNK; ++j) {
          s[j][2 * r] = aj_exp2(s[j][2 * r] * mult - ms);
          s[j][2 * r + 1] = aj_exp2(s[j][2 * r + 1] * mult - ms);
          sum += s[j][2 * r] + s[j][2 * r + 1];
        }
        row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
          o[j][2 * r] *= alpha;
          o[j][2 * r + 1] *= alpha;
        }
      }
#pragma unroll
      for (int kk = 0; kk < KNK; ++kk) {
        p[kk][0] = pack2(s[2 * kk][0], s[2 * kk][1]);
        p[kk][1] = pack2(s[2 * kk][2], s[2 * kk][3]);
        p[kk][2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        p[kk][3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
#pragma unroll
      for (int kk = 0; kk < KNK; ++kk)
#pragma unroll
        for (int jd = 0; jd < ND / 2; ++jd) {
          aj_u32 vb[4];
#if AJ_ROW_PAD == 0
          aj_ldmatrix_x4_trans(vb, sv + chunk_at(v_lane_row + koff + kk * 16, v_lane_chunk + 2 * jd, lane_key));
#else
          aj_ldmatrix_x4_trans(vb, sv + v_lane + (koff + kk * 16) * RSB + jd * 32);
#endif
          mma(o[2 * jd], p[kk], vb[0], vb[1]);
          mma(o[2 * jd + 1], p[kk], vb[2], vb[3]);
        }
    };
    if constexpr (KEY_SPLIT) {
      if (split_keys) tile_math(KeyCount<BN / NW>{}, warp * (BN / NW));
    }
    if (!split_keys && warp_active) tile_math(KeyCount<BN>{}, 0);
    n = next_tile(n + 1, cls);
    stage = (stage + 1) % ST;
  }
  aj_cp_async_wait<0>();

  if (split_keys) {
    // The warps' states for the same rows, merged into warp 0 by their maxima: the ring is free
    // now; warp w > 0 leaves its O, maxima and (per-thread) sums there, lane by lane.
    constexpr int VALUES = 4 * ND + 4;
    static_assert((NW - 1) * VALUES * 32 * 4 <= ST * 2 * BN * RSB, "the warps' states fit in the ring");
    float* merge = reinterpret_cast<float*>(aj_smem);
    __syncthreads();
    if (warp > 0) {
      float* mine = merge + (warp - 1) * VALUES * 32 + lane;
#pragma unroll
      for (int j = 0; j < ND; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) mine[(4 * j + e) * 32] = o[j][e];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mine[(4 * ND + r) * 32] = row_max[r];
        mine[(4 * ND + 2 + r) * 32] = row_sum[r];
      }
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float m = row_max[r];
        for (int w = 1; w < NW; ++w) m = fmaxf(m, merge[((w - 1) * VALUES + 4 * ND + r) * 32 + lane]);
        // exp2 of (a state's max - the merged max), 0 for a state that admitted nothing
        const auto weight = [&](float mw) { return m == AJ_NEG_INF ? 0.f : aj_exp2((mw - m) * mult); };
        const float own = weight(row_max[r]);
        row_sum[r] *= own;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
          o[j][2 * r] *= own;
          o[j][2 * r + 1] *= own;
        }
        for (int w = 1; w < NW; ++w) {
          const float* theirs = merge + (w - 1) * VALUES * 32 + lane;
          const float c = weight(theirs[(4 * ND + r) * 32]);
          row_sum[r] += c * theirs[(4 * ND + 2 + r) * 32];
#pragma unroll
          for (int j = 0; j < ND; ++j) {
            o[j][2 * r] += c * theirs[(4 * j + 2 * r) * 32];
            o[j][2 * r + 1] += c * theirs[(4 * j + 2 * r + 1) * 32];
          }
        }
        row_max[r] = m;
      }
    }
  }

  // This split's O (normalized) and LSE per row; a row with no admitted key: O = 0, LSE = -inf.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += aj_shfl_xor(l, 1);
    l += aj_shfl_xor(l, 2);
    if (!row_ok[r] || (split_keys && warp > 0)) continue;
    const bool any = l > 0.f;
    const float inv = any ? 1.0f / l : 0.f;
    const aj_i64 row = partial_at(piece.slot, r0 + row_warp * 16 + g + r * 8);
    if (t == 0) dargs.partial_lse[row] = any ? (row_max[r] * mult + aj_log2(l)) * AJ_LN2 : AJ_NEG_INF;
    float* out = dargs.partial_o + row * D;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      out[j * 8 + 2 * t] = o[j][2 * r] * inv;
      out[j * 8 + 2 * t + 1] = o[j][2 * r + 1] * inv;
    }
  }

  // The last piece of this (sequence, kv head, row block) to arrive merges them all: every
  // thread's partial stores are fenced before thread 0 counts the CTA in.
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    int* counter = dargs.split_counters + ((aj_i64)b * args.heads_kv + hk) * dargs.row_blocks + rb;
    s_last = atomicAdd(counter, 1) == piece.pieces - 1;
    if (s_last) atomicExch(counter, 0);  // every piece has counted: ready for the next launch
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int row = r0 + warp; row < min(r0 + BM, rows); row += NW)
    merge_pieces(dargs, b, hk * group + row / seq_q, row % seq_q, lane, piece.pieces,
                 [&](int k) { return partial_at(k, row); });
}

#if AJ_STREAM_K
// Stream-K: the kv tiles of every (sequence, kv head, row block), sequence-major, cut into
// gridDim.x equal ranges, one per CTA (LeanAttention's schedule): sequences of any lengths
// keep every CTA equally busy. Tiles per sequence come from the lengths on the device, so the
// CTAs first sum them over the batch (at most STREAM_K_MAX_BATCH sequences).
constexpr int STREAM_K_MAX_BATCH = AJ_STREAM_K_MAX_BATCH;

// prefix[b] = kv tiles of all units of sequences before b (prefix[batch] = all of them).
// Returns whether every sequence has as many tiles as the first.
__device__ __forceinline__ bool tile_prefix(const AttnjitFwdArgs& args, int units_per_sequence, long long* prefix) {
  const int tid = threadIdx.x, lane = tid & 31;
  constexpr int PER = (STREAM_K_MAX_BATCH + NT - 1) / NT;
  const int first = tid * PER;
  long long mine[PER];
  long long sum = 0;
  const int first_tiles = (aj_seq_len_k(0, args) + BN - 1) / BN;
  bool same = true;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int b = first + i;
    const int tiles = b < args.batch ? (aj_seq_len_k(b, args) + BN - 1) / BN : first_tiles;
    same = same && tiles == first_tiles;
    mine[i] = b < args.batch ? (long long)tiles * units_per_sequence : 0;
    sum += mine[i];
  }
  // Inclusive scan of the threads' sums: within each warp, then the warps' totals.
  __shared__ long long s_warp[NW];
#pragma unroll
  for (int k = 1; k < 32; k <<= 1) {
    const long long other = __shfl_up_sync(0xffffffffu, sum, k);
    if (lane >= k) sum += other;
  }
  if (lane == 31) s_warp[tid >> 5] = sum;
  const bool uniform = __syncthreads_and(same);
  for (int w = 0; w < (tid >> 5); ++w) sum += s_warp[w];
  long long at = sum;  // inclusive: tiles up to the end of this thread's sequences
#pragma unroll
  for (int i = PER - 1; i >= 0; --i) {
    at -= mine[i];
    if (first + i < args.batch) prefix[first + i] = at;
  }
  if (tid == NT - 1) prefix[args.batch] = sum;  // the last thread's inclusive sum: every tile
  __syncthreads();
  return uniform;
}
#endif

}  // namespace aj_dec

extern "C" __global__ void __launch_bounds__(AJ_NUM_WARPS * 32, AJ_CTAS_PER_SM)
    attnjit_decode(const AttnjitDecodeArgs dargs) {
  using namespace aj_dec;
#if !AJ_STREAM_K
  // Split-K: grid (splits, heads_kv * row_blocks, batch); split s takes tiles_per_split tiles.
  const int n_tiles = (aj_seq_len_k(blockIdx.z, dargs.fwd) + BN - 1) / BN;
  const int tile_begin = blockIdx.x * dargs.tiles_per_split;
  Piece piece{(int)blockIdx.z, (int)(blockIdx.y / dargs.row_blocks), (int)(blockIdx.y % dargs.row_blocks),
              tile_begin, min(n_tiles, tile_begin + dargs.tiles_per_split), dargs.splits, (int)blockIdx.x, 0, 0};
  decode_piece(dargs, piece);
#else
  const AttnjitFwdArgs& args = dargs.fwd;
  const int units = args.heads_kv * dargs.row_blocks;  // per sequence
  __shared__ long long s_prefix[STREAM_K_MAX_BATCH + 1];
  const bool uniform = tile_prefix(args, units, s_prefix);
  const long long total = s_prefix[args.batch];
  // Sequences without keys get O = 0 and LSE = -inf here: no tile leads a CTA to them.
  for (int b = blockIdx.x; b < args.batch; b += gridDim.x) {
    if (s_prefix[b + 1] != s_prefix[b]) continue;
    const int rows = args.heads_q * args.seq_q;
    for (int i = threadIdx.x; i < rows * D; i += NT) {
      const int h = i / D / args.seq_q, q = i / D % args.seq_q;
      ((aj_u16*)args.o)[b * args.o_stride[0] + h * args.o_stride[1] + q * args.o_stride[2] + i % D] = 0;
      if (args.lse != nullptr && i % D == 0) args.lse[((aj_i64)b * args.heads_q + h) * args.seq_q + q] = AJ_NEG_INF;
    }
  }
  const AjDecodeRanges ranges = aj_decode_ranges(total, gridDim.x, uniform, (long long)args.batch * units);
  const long long cta = blockIdx.x;
  if (cta >= ranges.ctas) return;
  const long long t0 = aj_decode_start(ranges, cta), t1 = aj_decode_start(ranges, cta + 1);
  if (t0 >= t1) return;
  int b = aj_decode_sequence_of(s_prefix, args.batch, t0);
  for (long long x = t0; x < t1;) {
    Piece piece;
    x = aj_decode_next_piece(ranges, s_prefix, units, dargs.row_blocks, cta, x, t1, b, piece);
    __syncthreads();  // the last piece's reads of shared memory are done
    decode_piece(dargs, piece);
  }
#endif
}

#endif  // ATTNJIT_DECODE_SM80_CUH
