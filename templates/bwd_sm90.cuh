// attnjit backward on sm_90a (template bwd_sm90): the five products of bwd_sm80.cuh's main
// kernel by wgmma instead of ldmatrix + mma.sync. Pasted before bwd_sm80.cuh (with
// sm90_primitives.cuh and the unit's wgmma wrappers before it), whose kernels call these
// functions where AJ_WGMMA is 1; everything else (steps, tile classes, hooks, dQ accumulator,
// epilogue) is bwd_sm80's.
//
// Why the same kernel fits: a warpgroup's m64 accumulator gives warp w (of 4) rows 16w..16w+15
// in mma.sync's C-fragment layout, one m16n8 fragment per 8 columns. So with a warpgroup per 64
// keys the S^T, dP^T, dK and dV fragments of warp (4 * warpgroup + w) are exactly bwd_sm80's
// (16 keys per warp), and with dQ's head-dim columns split between the warpgroups (64 each),
// dQ's fragments are exactly bwd_sm80's dq tiles (QT = 4 row tiles x DQ_PARTS column parts).
//
// Shared memory: K, V, Q, dO and dS^T tiles in the 128-byte-swizzled layout wgmma reads
// (D / 64 chunks of [rows x 64], 16-byte chunk c of a 128-byte row r at c ^ (r % 8), 1024-byte
// aligned); for D = 64 that is bwd_sm80's row_pad 0 layout. The copies are bwd_sm80's cp.async
// rows, each thread fencing its copies to the async proxy (fence.proxy.async) before the CTA's
// barrier; wgmma then reads:
//   S^T  = K_wg Q^T     m64 n64  A = K (K-major), B = Q (K-major)
//   dP^T = V_wg dO^T    m64 n64  A = V, B = dO
//   dV  += P^T dO       m64 nD   A = P^T (registers), B = dO (MN-major, transposed)
//   dK  += dS^T Q       m64 nD   A = dS^T (registers), B = Q (transposed)
//   dQ   = dS K_cols    m64 n64  A = dS (dS^T stored, MN-major), B = K's 64 columns of this
//                                warpgroup (MN-major)
// Configuration (codegen, bwd_sm90 knobs): AJ_WGMMA 1, AJ_BLOCK_M 64, AJ_ROW_PAD 0,
// AJ_NUM_WARPS = D / 16 (a warpgroup per 64 keys and per 64 columns of dQ), AJ_DQ_BULK 0 or 1.
#ifndef ATTNJIT_BWD_SM90_CUH
#define ATTNJIT_BWD_SM90_CUH

#if AJ_BLOCK_M != 64 || (defined(AJ_ROW_PAD) && AJ_ROW_PAD != 0) || AJ_HEAD_DIM != 16 * AJ_NUM_WARPS
#error "attnjit bwd_sm90: block_m 64, row_pad 0 and AJ_NUM_WARPS = AJ_HEAD_DIM / 16"
#endif

// P computed while the tensor cores still compute dP^T (waiting for S^T alone), then dS: only
// without a score_mod (its gradient needs the raw score beside dP) and at D=64. H200,
// 2026-12-01, causal 4k: D=64 282 -> 300 TFLOP/s; D=128 354 -> 338 (at 255 registers), so
// D=128 waits for both and runs one pass.
#define AJ_BWD90_P_BEFORE_DP (!AJ_HAS_SCORE_MOD && AJ_HEAD_DIM == 64)

// Two stages: the next step's copies are issued after this step's first barrier, which every
// reader of their buffer (the step before) has passed, so the step needs no barrier at its end
// (two per step instead of three). The dS^T tile, the row statistics and the other stage follow
// the same argument: their last readers finished before that barrier.
#define AJ_BWD90_LOAD_AFTER_BARRIER (AJ_STAGES == 2)

// AJ_DQ_BULK 1 (knob dq_bulk): a warp's dQ sums of a step (its 1024 slots of the accumulator,
// contiguous in dq_slot's order) go through a shared-memory staging area and one bulk reduce
// (cp.reduce.async.bulk .add.f32, or .add.u64 for the fixed point), issued by lane 0, instead
// of 8 vector or 32 fixed-point atomics per thread.
#ifndef AJ_DQ_BULK
#define AJ_DQ_BULK 0
#endif

// AJ_DQ_BEFORE_DK 1 (knob dq_before_dk): the step's last products in the order dV, dQ, dK, so that
// dQ's adds (atomics or bulk) run while the tensor cores compute dK; 0: dV and dK, then dQ, all
// waited for before the adds.
#ifndef AJ_DQ_BEFORE_DK
#define AJ_DQ_BEFORE_DK 0
#endif

namespace aj_bwd90 {

constexpr int D = AJ_HEAD_DIM;
constexpr int BM = AJ_BLOCK_M;
constexpr int BN = 16 * AJ_NUM_WARPS;
constexpr aj_u32 KV_CHUNK = BN * 128;  // bytes of one 64-column chunk of K or V
constexpr aj_u32 Q_CHUNK = BM * 128;   // of Q or dO
constexpr aj_u32 ROWS16 = 16 * 128;    // 16 rows of a chunk: one k step over rows

// Where 16-byte chunk c of row r of a ROWS-row tile lies, bytes from the tile's start.
template <int ROWS>
__device__ __forceinline__ aj_u32 tile_chunk_at(int r, int c) {
  return (aj_u32)((c >> 3) * (ROWS * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

// An [N][4] fragment array as the flat accumulator list a wgmma wrapper takes (same storage).
template <int N>
__device__ __forceinline__ float (&flat(float (&x)[N][4]))[N * 4] {
  return reinterpret_cast<float(&)[N * 4]>(x);
}

// The A fragment of k step kk (columns 16kk..16kk+15) of accumulator fragments x, rounded to
// the input type (mma.sync's m16k16 A layout, which wgmma takes from registers per warp).
template <int N>
__device__ __forceinline__ void a_fragment(aj_u32 (&a)[4], const float (&x)[N][4], int kk) {
  a[0] = aj_sm80::pack2(x[2 * kk][0], x[2 * kk][1]);
  a[1] = aj_sm80::pack2(x[2 * kk][2], x[2 * kk][3]);
  a[2] = aj_sm80::pack2(x[2 * kk + 1][0], x[2 * kk + 1][1]);
  a[3] = aj_sm80::pack2(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

// S^T (scores) and dP^T of warpgroup wg's 64 keys against the step's BM queries (two groups,
// S^T first, where P comes before dP^T's wait).
__device__ __forceinline__ void issue_scores(float (&s)[BM / 2], float (&dp)[BM / 2], aj_u32 s_k, aj_u32 s_v,
                                             aj_u32 sq, aj_u32 sdo, int wg) {
  const aj_u32 rows = (aj_u32)wg * 64 * 128;
  aj_wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const aj_u32 a = (kk >> 2) * KV_CHUNK + rows + (kk & 3) * 32, b = (kk >> 2) * Q_CHUNK + (kk & 3) * 32;
    aj_wgmma_ss_qk(s, aj_smem_desc_sw128(s_k + a, 16, 1024), aj_smem_desc_sw128(sq + b, 16, 1024), kk > 0);
  }
#if AJ_BWD90_P_BEFORE_DP
  aj_wgmma_commit();  // S^T's own group, waited for first
#endif
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const aj_u32 a = (kk >> 2) * KV_CHUNK + rows + (kk & 3) * 32, b = (kk >> 2) * Q_CHUNK + (kk & 3) * 32;
    aj_wgmma_ss_qk(dp, aj_smem_desc_sw128(s_v + a, 16, 1024), aj_smem_desc_sw128(sdo + b, 16, 1024), kk > 0);
  }
  aj_wgmma_commit();
}
// Waits for S^T, and for dP^T too unless P comes first (AJ_BWD90_P_BEFORE_DP; then wait_dp).
__device__ __forceinline__ void wait_scores(float (&s)[BM / 2], float (&dp)[BM / 2]) {
#if AJ_BWD90_P_BEFORE_DP
  aj_wgmma_wait<1>();
#else
  aj_wgmma_wait<0>();
  aj_fence_registers(dp);
#endif
  aj_fence_registers(s);
}
__device__ __forceinline__ void wait_dp(float (&dp)[BM / 2]) {
  aj_wgmma_wait<0>();
  aj_fence_registers(dp);
}

// acc += A^T B over the step's BM queries: A^T as register A fragments (k step kk: queries
// 16kk..16kk+15), B = the step's dO or Q tile read transposed. dV = P^T dO, dK = dS^T Q.
__device__ __forceinline__ void products_over_queries(float (&acc)[D / 2], const aj_u32 (&a)[BM / 16][4], aj_u32 b) {
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk) aj_wgmma_rs_pv(acc, a[kk], aj_smem_desc_sw128(b + kk * ROWS16, Q_CHUNK, 1024));
}

// dV += P^T dO and dK += dS^T Q as one group. Issued, not waited for: the registers of p and ds
// must stay unchanged until dq() has waited.
__device__ __forceinline__ void issue_dv_dk(float (&dv)[D / 2], float (&dk)[D / 2], const aj_u32 (&p)[BM / 16][4],
                                            const aj_u32 (&ds)[BM / 16][4], aj_u32 sq, aj_u32 sdo) {
  aj_wgmma_fence();
  products_over_queries(dv, p, sdo);
  products_over_queries(dk, ds, sq);
  aj_wgmma_commit();
}

// dV += P^T dO alone (AJ_DQ_BEFORE_DK: dK follows dQ, in dq_then_dk).
__device__ __forceinline__ void issue_dv(float (&dv)[D / 2], const aj_u32 (&p)[BM / 16][4], aj_u32 sdo) {
  aj_wgmma_fence();
  products_over_queries(dv, p, sdo);
  aj_wgmma_commit();
}

// The thread's dS^T pairs (A-fragment k step kk, rows key_row and key_row + 8) into the dS^T
// tile [BN keys x BM queries], which dq() reads as dS.
__device__ __forceinline__ void store_ds(aj_u32 s_ds, const aj_u32 (&ds)[4], int kk, int key_row, int t) {
  const int r0 = key_row, r1 = key_row + 8, c = kk * 2;  // c: 16-byte chunk of queries 16kk..16kk+7
  aj_st_shared_u32(s_ds + r0 * 128 + (((c) ^ (r0 & 7)) << 4) + 4 * t, ds[0]);
  aj_st_shared_u32(s_ds + r1 * 128 + (((c) ^ (r1 & 7)) << 4) + 4 * t, ds[1]);
  aj_st_shared_u32(s_ds + r0 * 128 + (((c + 1) ^ (r0 & 7)) << 4) + 4 * t, ds[2]);
  aj_st_shared_u32(s_ds + r1 * 128 + (((c + 1) ^ (r1 & 7)) << 4) + 4 * t, ds[3]);
}

// dQ[BM x 64] = dS K[:, 64 wg .. 64 wg + 63] over the CTA's BN keys (dS^T complete in shared
// memory), issued as one group.
__device__ __forceinline__ void issue_dq(float (&acc)[32], aj_u32 s_ds, aj_u32 s_k, int wg) {
  aj_wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk)
    aj_wgmma_ss_tt(acc, aj_smem_desc_sw128(s_ds + kk * ROWS16, Q_CHUNK, 1024),
                   aj_smem_desc_sw128(s_k + wg * KV_CHUNK + kk * ROWS16, KV_CHUNK, 1024), kk > 0);
  aj_wgmma_commit();
}
// dQ, waited for with issue_dv_dk's products, whose A fragments (p, ds) the compiler must not
// reuse before then.
__device__ __forceinline__ void dq(float (&acc)[32], aj_u32 s_ds, aj_u32 s_k, int wg, float (&dv)[D / 2],
                                   float (&dk)[D / 2], const aj_u32 (&p)[BM / 16][4], const aj_u32 (&ds)[BM / 16][4]) {
  issue_dq(acc, s_ds, s_k, wg);
  aj_wgmma_wait<0>();
  aj_fence_registers(acc);
  aj_fence_registers(dv);
  aj_fence_registers(dk);
  aj_keep_registers(p);
  aj_keep_registers(ds);
}

#if AJ_DQ_BULK
// Staging areas, one per warp, after the LSE and D rows (bwd_sm80.cuh's SMEM_BYTES): 1024 slots
// of 8 bytes (the fixed point's; fp32 uses half).
constexpr aj_u32 DQ_STAGE_BYTES = 1024 * 8;
constexpr aj_u32 SMEM_DQ_STAGE = (aj_u32)(2 * BN * D * 2 + 2 * AJ_STAGES * BM * D * 2 + BN * BM * 2 + 2 * AJ_STAGES * BM * 4);

// This warp's dQ sums into the accumulator at `block` (its first slot): staged in dq_slot's order,
// then one bulk reduce. The staging area's previous reduce must have read it first.
__device__ __forceinline__ void dq_bulk_add(const AttnjitBwdArgs& bargs, aj_i64 block, const float (&dq)[8][4], int lane,
                                            aj_u32 stage) {
  if (lane == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  __syncwarp();
  if (bargs.deterministic) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const long long fixed = __float2ll_rn(dq[j][e] * 4294967296.0f);  // aj_accumulate_fixed's units
        asm volatile("st.shared.u64 [%0], %1;\n" ::"r"(stage + ((j * 4 + e) * 32 + lane) * 8), "l"(fixed) : "memory");
      }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(stage + (j * 32 + lane) * 16), "f"(dq[j][0]),
                   "f"(dq[j][1]), "f"(dq[j][2]), "f"(dq[j][3])
                   : "memory");
  }
  aj_fence_proxy_async();
  __syncwarp();
  if (lane == 0) {
    if (bargs.deterministic)
      asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.u64 [%0], [%1], 8192;\n" ::"l"(
                       (unsigned long long*)bargs.dq_accum + block),
                   "r"(stage)
                   : "memory");
    else
      asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], 4096;\n" ::"l"(
                       (float*)bargs.dq_accum + block),
                   "r"(stage)
                   : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
  }
}
// Before the CTA ends: its reduces have read their shared memory (the writes complete with the
// grid, as TMA stores' do).
__device__ __forceinline__ void dq_bulk_drain(int lane) {
  if (lane == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
#endif

#if AJ_DQ_BEFORE_DK
// dQ, then dK += dS^T Q behind it; waits for dQ (and the dV before it) only: the caller adds dQ
// while dK runs, then calls finish_dk.
__device__ __forceinline__ void dq_then_dk(float (&acc)[32], aj_u32 s_ds, aj_u32 s_k, int wg, float (&dv)[D / 2],
                                           float (&dk)[D / 2], const aj_u32 (&p)[BM / 16][4],
                                           const aj_u32 (&ds)[BM / 16][4], aj_u32 sq) {
  issue_dq(acc, s_ds, s_k, wg);
  products_over_queries(dk, ds, sq);
  aj_wgmma_commit();
  aj_wgmma_wait<1>();
  aj_fence_registers(acc);
  aj_fence_registers(dv);
  aj_keep_registers(p);
}
// dK done: its accumulators readable, its A fragments (ds) free.
__device__ __forceinline__ void finish_dk(float (&dk)[D / 2], const aj_u32 (&ds)[BM / 16][4]) {
  aj_wgmma_wait<0>();
  aj_fence_registers(dk);
  aj_keep_registers(ds);
}
#endif

}  // namespace aj_bwd90

#endif  // ATTNJIT_BWD_SM90_CUH
