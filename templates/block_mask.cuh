// attnjit block-mask kernel: the tile classes of a mask that reads tensors, built on the GPU.
//
// Interval analysis (aj_tile_class) cannot bound a tensor read, so a mask such as
// `doc[b, q] == doc[b, kv]` is "partial" on every tile and the forward kernel would skip
// nothing. Codegen pastes this file after fwd_sm80.cuh whenever the lowered mask reads a
// tensor; the runtime launches it on the same stream right before attnjit_fwd, with the
// same argument block, and the forward kernel then reads args.tile_classes.
//
// One CTA of AJ_BM_THREADS threads per (kv tile, q tile, b' * H' + h'), tiles of
// AJ_BLOCK_M x AJ_BLOCK_N exactly as the forward kernel cuts them. The interval answer is
// kept when it is already empty or full; otherwise every element of the tile is evaluated
// with the mask and reduced (any true, any false) across the block. Each thread owns one kv
// column and walks rows, so the column's part of the mask (aj_mask_col: doc[b, kv]) is
// computed once; it stops once its column has seen both answers. The rows' parts
// (aj_mask_row: doc[b, q]) are computed once per tile into shared memory: every column
// reading them from global memory made this kernel 71 us of a 390 us document-causal forward
// (B=4 H=16 S=4k D=128, H200, 2026-11-29); with them in shared memory 53 us, and with 8 rows
// between early-exit checks 27 us (same shape and GPU). With AJ_MASK_HULL (codegen: the
// mask's split has int or bool fields) a tile is first decided from the hulls of its fields
// (the ids' range over its rows and over its keys), so only tiles across a boundary are walked.
//
// Configuration macros (defined by codegen, besides the forward kernel's):
//   AJ_BLOCK_MASK_PER_BATCH  0/1: the mask mentions b (B' = batch), else B' = 1 and b = 0
//   AJ_BLOCK_MASK_PER_HEAD   0/1: the mask mentions h (H' = heads_q), else H' = 1 and h = 0
// Grid: (kv_tiles, q_tiles, B' * H'); block: AJ_BM_THREADS; no dynamic shared memory.
#ifndef ATTNJIT_BLOCK_MASK_CUH
#define ATTNJIT_BLOCK_MASK_CUH

#if !defined(AJ_BLOCK_MASK_PER_BATCH) || !defined(AJ_BLOCK_MASK_PER_HEAD)
#error "attnjit block_mask: AJ_BLOCK_MASK_PER_BATCH and AJ_BLOCK_MASK_PER_HEAD must be defined"
#endif

#define AJ_BM_THREADS 128

extern "C" __global__ void __launch_bounds__(AJ_BM_THREADS) attnjit_block_mask(const AttnjitFwdArgs args) {
  constexpr int ROW_STEP = AJ_BM_THREADS / AJ_BLOCK_N > 0 ? AJ_BM_THREADS / AJ_BLOCK_N : 1;
  const int kv_tile = blockIdx.x;
  const int q_tile = blockIdx.y;
  const int heads = AJ_BLOCK_MASK_PER_HEAD ? args.heads_q : 1;
  const int b = AJ_BLOCK_MASK_PER_BATCH ? (int)blockIdx.z / heads : 0;
  const int h = AJ_BLOCK_MASK_PER_HEAD ? (int)blockIdx.z % heads : 0;
  const int q_lo = q_tile * AJ_BLOCK_M;
  const int q_hi = min(q_lo + AJ_BLOCK_M, args.seq_q) - 1;
  const int kv_lo = kv_tile * AJ_BLOCK_N;
  const int kv_hi = min(kv_lo + AJ_BLOCK_N, args.seq_k) - 1;

  // Uniform across the block (same inputs), so the barriers below are reached by all.
  int cls = aj_tile_class(b, h, q_lo, q_hi, kv_lo, kv_hi, args);
#if AJ_MASK_HULL
  // Before any element: the mask over the hulls of the fields (a document id's range over the
  // tile's rows and over its keys) often decides the tile, so only tiles that straddle a
  // boundary are walked (codegen: mask_hull_hooks).
  if (cls == 1) {
    AjMaskRowIv rows_hull = aj_mask_row_iv_none();
    AjMaskColIv cols_hull = aj_mask_col_iv_none();
    for (int r = (int)threadIdx.x; r <= q_hi - q_lo; r += AJ_BM_THREADS)
      aj_mask_row_iv_add(rows_hull, aj_mask_row(b, h, q_lo + r, args));
    for (int c = (int)threadIdx.x; c <= kv_hi - kv_lo; c += AJ_BM_THREADS)
      aj_mask_col_iv_add(cols_hull, aj_mask_col(b, h, kv_lo + c, args));
#pragma unroll
    for (int lanes = 16; lanes > 0; lanes >>= 1) {
      aj_mask_row_iv_join(rows_hull, aj_mask_row_iv_shfl(rows_hull, lanes));
      aj_mask_col_iv_join(cols_hull, aj_mask_col_iv_shfl(cols_hull, lanes));
    }
    __shared__ AjMaskRowIv warp_rows[AJ_BM_THREADS / 32];
    __shared__ AjMaskColIv warp_cols[AJ_BM_THREADS / 32];
    if (threadIdx.x % 32 == 0) {
      warp_rows[threadIdx.x / 32] = rows_hull;
      warp_cols[threadIdx.x / 32] = cols_hull;
    }
    __syncthreads();
    rows_hull = warp_rows[0];  // every thread joins the warps' hulls: the same class everywhere
    cols_hull = warp_cols[0];
    for (int w = 1; w < AJ_BM_THREADS / 32; ++w) {
      aj_mask_row_iv_join(rows_hull, warp_rows[w]);
      aj_mask_col_iv_join(cols_hull, warp_cols[w]);
    }
    cls = aj_mask_hull_class(rows_hull, cols_hull, b, h, q_lo, q_hi, kv_lo, kv_hi, args);
  }
#endif
  if (cls == 1) {
    bool any_true = false, any_false = false;
    if (AJ_BM_THREADS % AJ_BLOCK_N == 0) {
      __shared__ AjMaskRow rows[AJ_BLOCK_M];
      for (int r = (int)threadIdx.x; r <= q_hi - q_lo; r += AJ_BM_THREADS) rows[r] = aj_mask_row(b, h, q_lo + r, args);
      __syncthreads();
      const int kv = kv_lo + (int)threadIdx.x % AJ_BLOCK_N;
      if (kv <= kv_hi) {
        const AjMaskCol col = aj_mask_col(b, h, kv, args);
        // 8 rows between checks for an early exit: a check per row made the loop ~16
        // instructions per element, and a full tile (the common class) never exits early.
        constexpr int UNROLL = 8;
        const int first = q_lo + (int)threadIdx.x / AJ_BLOCK_N;
        if (q_hi - q_lo + 1 == AJ_BLOCK_M && AJ_BLOCK_M % (UNROLL * ROW_STEP) == 0) {
          for (int q = first; q <= q_hi && !(any_true && any_false); q += UNROLL * ROW_STEP) {
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
              const int qu = q + u * ROW_STEP;
              const bool m = aj_mask_pair(rows[qu - q_lo], col, b, h, qu, kv, args);
              any_true |= m;
              any_false |= !m;
            }
          }
        } else {
          for (int q = first; q <= q_hi && !(any_true && any_false); q += ROW_STEP) {
            const bool m = aj_mask_pair(rows[q - q_lo], col, b, h, q, kv, args);
            any_true |= m;
            any_false |= !m;
          }
        }
      }
    } else {
      // Tiles whose width does not divide the block (fwd_sm90's 80 or 144 keys): every
      // (row, column) pair in turn.
      const int pairs = (q_hi - q_lo + 1) * AJ_BLOCK_N;
      for (int i = (int)threadIdx.x; i < pairs; i += AJ_BM_THREADS) {
        const int kv = kv_lo + i % AJ_BLOCK_N;
        if (kv > kv_hi) continue;
        const bool m = aj_mask_mod(b, h, q_lo + i / AJ_BLOCK_N, kv, args);
        any_true |= m;
        any_false |= !m;
      }
    }
    const int t = __syncthreads_or(any_true);
    const int f = __syncthreads_or(any_false);
    cls = !t ? 0 : (!f ? 2 : 1);
  }
  if (threadIdx.x == 0) {
    unsigned char* out = args.tile_classes + (long long)b * args.tile_class_stride[0] +
                         (long long)h * args.tile_class_stride[1] + (long long)q_tile * args.tile_class_stride[2];
    out[kv_tile] = (unsigned char)cls;
  }
}

#endif  // ATTNJIT_BLOCK_MASK_CUH
