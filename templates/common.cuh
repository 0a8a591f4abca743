// attnjit device helpers, pasted into every generated translation unit after abi.h.
//
// Self-contained: compiled by NVRTC with no include path and no headers, so every
// type and every tensor-core / async-copy primitive is spelled here, mostly as inline
// PTX. Everything is prefixed aj_ so it cannot collide with generated hook code.
// Needs sm_80 or newer (bf16 mma.sync, ldmatrix, cp.async).
#ifndef ATTNJIT_COMMON_CUH
#define ATTNJIT_COMMON_CUH

typedef unsigned int aj_u32;
typedef unsigned short aj_u16;
typedef unsigned long long aj_u64;
typedef long long aj_i64;

#define AJ_LOG2E 1.4426950408889634f
#define AJ_LN2 0.6931471805599453f
#define AJ_INF (__int_as_float(0x7f800000))
#define AJ_NEG_INF (__int_as_float(0xff800000))

// ---------------------------------------------------------------------------------
// 16-bit float storage types (bit patterns) and conversions.
struct aj_bf16 { aj_u16 x; };
struct aj_fp16 { aj_u16 x; };

__device__ __forceinline__ float aj_bf16_to_float(aj_u16 h) {
  return __uint_as_float(((aj_u32)h) << 16);
}
__device__ __forceinline__ float aj_fp16_to_float(aj_u16 h) {
  float f;
  asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ aj_u16 aj_float_to_bf16(float f) {
  aj_u16 h;
  asm("{ .reg .b16 t; cvt.rn.bf16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ aj_u16 aj_float_to_fp16(float f) {
  aj_u16 h;
  asm("{ .reg .f16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
  return h;
}
// Packs (lo, hi) into one 32-bit register: lo in bits 0..15 (the lower column/address).
__device__ __forceinline__ aj_u32 aj_pack_bf16x2(float lo, float hi) {
  aj_u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ aj_u32 aj_pack_fp16x2(float lo, float hi) {
  aj_u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ void aj_unpack_bf16x2(aj_u32 v, float& lo, float& hi) {
  lo = __uint_as_float(v << 16);
  hi = __uint_as_float(v & 0xffff0000u);
}
__device__ __forceinline__ void aj_unpack_fp16x2(aj_u32 v, float& lo, float& hi) {
  lo = aj_fp16_to_float((aj_u16)(v & 0xffffu));
  hi = aj_fp16_to_float((aj_u16)(v >> 16));
}

// ---------------------------------------------------------------------------------
// Tensor cores: D = A(16x16, row) * B(16x8, col) + D, fp32 accumulate.
// A: 4 regs (a0: row g k 2t..2t+1, a1: row g+8, a2: row g k+8, a3: row g+8 k+8),
// B: 2 regs (b0: k 2t..2t+1 col g, b1: k+8), C/D: 4 floats (row g cols 2t,2t+1;
// row g+8 cols 2t,2t+1), where g = lane/4, t = lane%4.
__device__ __forceinline__ void aj_mma_bf16_16816(float* d, const aj_u32* a, aj_u32 b0, aj_u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void aj_mma_fp16_16816(float* d, const aj_u32* a, aj_u32 b0, aj_u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------------------------
// Shared memory addressing, ldmatrix, cp.async.
__device__ __forceinline__ aj_u32 aj_smem_addr(const void* p) {
  aj_u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void aj_ldmatrix_x4(aj_u32* r, aj_u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void aj_ldmatrix_x4_trans(aj_u32* r, aj_u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void aj_ldmatrix_x2(aj_u32* r, aj_u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr));
}
// 16-byte global -> shared copy, L2 only. src_bytes = 0 zero-fills the destination
// without reading the source (the address must still be a valid-looking pointer).
__device__ __forceinline__ void aj_cp_async_16(aj_u32 smem_addr, const void* gptr, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gptr),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void aj_cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void aj_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void aj_st_shared_u32(aj_u32 addr, aj_u32 v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ aj_u32 aj_ld_shared_u32(aj_u32 addr) {
  aj_u32 v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ void aj_ld_shared_v4(aj_u32 addr, aj_u32* v) {
  asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void aj_st_global_v4(void* p, const aj_u32* v) {
  asm volatile("st.global.v4.b32 [%0], {%1,%2,%3,%4};\n" ::"l"(p), "r"(v[0]), "r"(v[1]), "r"(v[2]),
               "r"(v[3])
               : "memory");
}

// ---------------------------------------------------------------------------------
// Warp shuffles and fast math.
__device__ __forceinline__ float aj_shfl_xor(float v, int m) {
  return __shfl_xor_sync(0xffffffffu, v, m);
}
// 2^x, flushes denormals; exp2(-inf) = +0.
__device__ __forceinline__ float aj_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float aj_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float aj_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---------------------------------------------------------------------------------
// Helpers the generated hook functions call (IR semantics, see compiler/eval.cpp).
// Floor division / modulo like Python's // and %; division by zero yields 0.
__device__ __forceinline__ int aj_floordiv(int a, int b) {
  if (b == 0) return 0;
  if (b == -1) return (int)(0u - (aj_u32)a);  // wraps for INT_MIN instead of trapping
  int q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
__device__ __forceinline__ int aj_floormod(int a, int b) {
  if (b == 0 || b == -1) return 0;
  int r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
// Keys of sequence b: its share of a ragged batch or seq_lens_k[b] in a KV-cache call, clamped
// into [0, seq_k] (a ragged call's max_seqlen_k: a wrong one cuts sequences, never reads or
// writes out of range), else seq_k.
__device__ __forceinline__ int aj_seq_len_k(int b, const AttnjitFwdArgs& args) {
  if (args.cu_seqlens_k != nullptr) return min(max(args.cu_seqlens_k[b + 1] - args.cu_seqlens_k[b], 0), args.seq_k);
  return args.seq_lens_k == nullptr ? args.seq_k : min(max(args.seq_lens_k[b], 0), args.seq_k);
}
// Queries of sequence b: its share of a ragged batch clamped into [0, seq_q], else seq_q.
__device__ __forceinline__ int aj_seq_len_q(int b, const AttnjitFwdArgs& args) {
  if (args.cu_seqlens_q == nullptr) return args.seq_q;
  return min(max(args.cu_seqlens_q[b + 1] - args.cu_seqlens_q[b], 0), args.seq_q);
}
// kv_len and q_len as the hooks see them; per sequence only in units that define
// AJ_PER_SEQUENCE_LENGTHS 1 (macros, so that the other units keep the plain fields and nothing else).
#define aj_kv_len(b, args) (AJ_PER_SEQUENCE_LENGTHS ? aj_seq_len_k((b), (args)) : (args).seq_k)
#define aj_q_len(b, args) (AJ_PER_SEQUENCE_LENGTHS ? aj_seq_len_q((b), (args)) : (args).seq_q)

// Exclusive prefix sum of one int per thread over the CTA (blockDim.x a multiple of 32, at most
// 1024; every thread calls it): within each warp by shuffles, then over the warps' totals.
// `total` gets the CTA's sum. For the one-CTA pre-passes that list work items.
__device__ __forceinline__ int aj_cta_exclusive_scan(int mine, int& total) {
  __shared__ int warp_totals[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int incl = mine;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += v;
  }
  if (lane == 31) warp_totals[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int t = lane < warps ? warp_totals[lane] : 0;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, t, d);
      if (lane >= d) t += v;
    }
    warp_totals[lane] = t;  // inclusive over the warps
  }
  __syncthreads();
  total = warp_totals[31];
  return incl - mine + (warp > 0 ? warp_totals[warp - 1] : 0);
}

__device__ __forceinline__ float aj_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// 2^x on the FMA and integer pipes, without the special-function unit (MUFU), which the
// softmax's own exp2 per score already keeps busy: x = j + f with j = round(x) (the 1.5 * 2^23
// trick) and f in [-0.5, 0.5]; 2^f by a degree-5 near-minimax polynomial (Chebyshev fit),
// 2^j added into the exponent bits. Relative error under 2.2e-7 (ex2.approx's is 2^-22), x
// clamped to [-126, 126]; NaN stays NaN.
__device__ __forceinline__ float aj_exp2_fma(float x) {
  x = x < -126.f ? -126.f : x;
  x = x > 126.f ? 126.f : x;
  const float t = x + 12582912.f;
  const float f = x - (t - 12582912.f);
  float p = 0.0013390863364671234f;
  p = fmaf(p, f, 0.009676031918322054f);
  p = fmaf(p, f, 0.05550357114219078f);
  p = fmaf(p, f, 0.2402210748530834f);
  p = fmaf(p, f, 0.6931471880262288f);
  p = fmaf(p, f, 1.0000000754548972f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}
// tanh(x) = 1 - 2 / (e^(2x) + 1), absolute error under 2e-7 (tanhf takes about twenty
// instructions), exactly -1 and 1 far out. The exponential runs on MUFU (ex2: five
// instructions in all) or, in units that define AJ_TANH_ON_FMA 1 (the backward, bound by MUFU),
// on the FMA pipe (aj_exp2_fma: a soft-capped score then costs two MUFU operations, not three).
// Units that define AJ_TANH_APPROX 1 (the sm90 forward, bound by instruction issue) use
// tanh.approx.f32 instead: one MUFU instruction, relative error about 2^-11 (PTX ISA), which
// moves a soft-capped score by at most ~5e-4 of its value, below the bf16 / fp16 rounding of P
// that the 2x rule's naive computation already makes.
#ifndef AJ_TANH_ON_FMA
#define AJ_TANH_ON_FMA 0
#endif
#ifndef AJ_TANH_APPROX
#define AJ_TANH_APPROX 0
#endif
__device__ __forceinline__ float aj_tanh(float x) {
#if AJ_TANH_APPROX
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  const float e = AJ_TANH_ON_FMA ? aj_exp2_fma(x * (2.f * AJ_LOG2E)) : aj_exp2(x * (2.f * AJ_LOG2E));
  return 1.f - 2.f * aj_rcp(e + 1.f);
#endif
}

// ---------------------------------------------------------------------------------
// Walking the tiles of a row (a query block's kv tiles, a kv block's query blocks) to the
// admitted ones, a warp at a time: lane i classifies tile first + i, so a run of empty tiles
// costs one classification per lane instead of one per tile in a row (a window's or a
// document's block, whose first admitted tile lies dozens of empty ones in, waited that long
// before its first copy). Every lane of the warp calls next() with the same arguments.
struct AjTileChunk {
  int first = -32;  // the chunk: tiles first .. first + 31
  int cls = 0;      // this lane's tile's class (0 empty, 1 partial, 2 full)
  aj_u32 bits = 0;  // the chunk's non-empty tiles
  // The first non-empty tile of n .. end - 1 (end: none) and its class; class_at(i) classifies tile i.
  template <class ClassAt>
  __device__ __forceinline__ int next(int n, int end, int& cls_out, const ClassAt& class_at) {
    while (n < end) {
      if (n < first || n >= first + 32) {
        first = n;
        const int mine = n + (int)(threadIdx.x & 31);
        cls = mine < end ? class_at(mine) : 0;
        bits = __ballot_sync(~0u, cls != 0);
      }
      const aj_u32 ahead = bits >> (n - first);
      if (ahead != 0) {
        const int i = n - first + __ffs((int)ahead) - 1;
        cls_out = __shfl_sync(~0u, cls, i);
        return first + i;
      }
      n = first + 32;
    }
    return end;
  }
};

#endif  // ATTNJIT_COMMON_CUH
