// attnjit Hopper primitives (sm_90a): mbarriers, TMA tile loads, wgmma fences and shared-memory
// matrix descriptors, register reallocation, named barriers. Pasted after common.cuh into the
// units of the sm_90a templates; the wgmma instructions themselves, whose operand lists depend
// on the tile shape, are generated per unit (templates/fwd_sm90/wgmma_wrappers.cpp).
#ifndef ATTNJIT_SM90_PRIMITIVES_CUH
#define ATTNJIT_SM90_PRIMITIVES_CUH

// ---- mbarriers (shared::cta, 64-bit) ------------------------------------------------------
__device__ __forceinline__ void aj_mbar_init(aj_u32 bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialized barriers visible to the async proxy (TMA) before any use.
__device__ __forceinline__ void aj_mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also announces `bytes` of transactions (the TMA copies that complete it).
__device__ __forceinline__ void aj_mbar_arrive_expect_tx(aj_u32 bar, aj_u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void aj_mbar_arrive(aj_u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void aj_mbar_wait(aj_u32 bar, int parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "AJ_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra AJ_WAIT;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// Orders this thread's generic-proxy accesses to shared memory (st / ld.shared) before later
// async-proxy ones (TMA writes, wgmma reads) that a barrier hands the memory on to.
__device__ __forceinline__ void aj_fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// ---- TMA ------------------------------------------------------------------------------------
__device__ __forceinline__ void aj_tma_prefetch_descriptor(const void* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
}
// One box of a 4-d tensor map (coordinates innermost first, in elements) into shared memory at
// `dst`; completes `bytes` of transactions on `bar`. Out-of-range elements land as zeros.
__device__ __forceinline__ void aj_tma_load_4d(aj_u32 dst, const void* map, aj_u32 bar, int c0, int c1, int c2,
                                               int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
      "%5}], [%6];\n" ::"r"(dst),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

// ---- wgmma bookkeeping ----------------------------------------------------------------------
__device__ __forceinline__ void aj_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void aj_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void aj_wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers in place: reads after it see the value the async wgmma left
// (the compiler may not move them above the wait that precedes it).
template <int N>
__device__ __forceinline__ void aj_fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// Keeps a wgmma's register A fragments alive until here (called after the wait for the wgmma
// that reads them): the compiler may not reuse their registers before.
template <int N>
__device__ __forceinline__ void aj_keep_registers(const aj_u32 (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" ::"r"(r[i][e]) : "memory");
}

// Shared-memory matrix descriptor: start address, lbo and sbo in 16-byte units, and the layout
// in bits 62-63 (0: no swizzle, 1: 128-byte swizzle).
__device__ __forceinline__ aj_u64 aj_smem_desc(aj_u32 addr, aj_u32 lbo, aj_u32 sbo, aj_u32 layout) {
  return (aj_u64)((addr & 0x3FFFFu) >> 4) | ((aj_u64)((lbo >> 4) & 0x3FFFu) << 16) |
         ((aj_u64)((sbo >> 4) & 0x3FFFu) << 32) | ((aj_u64)layout << 62);
}
// For a 128-byte-swizzled operand (the layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B:
// 128-byte rows, 16-byte chunks XOR the row index mod 8, atoms of 8 rows = 1024 bytes,
// 1024-byte aligned). lbo: bytes between 64-element column chunks (only read for MN-major
// operands); sbo: bytes between 8-row groups.
__device__ __forceinline__ aj_u64 aj_smem_desc_sw128(aj_u32 addr, aj_u32 lbo, aj_u32 sbo) {
  return aj_smem_desc(addr, lbo, sbo, 1);
}

// ---- warpgroups -------------------------------------------------------------------------------
template <int REGS>
__device__ __forceinline__ void aj_regs_release() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
template <int REGS>
__device__ __forceinline__ void aj_regs_claim() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
// Barrier `id` (1..15; 0 is __syncthreads) over `threads` threads.
__device__ __forceinline__ void aj_named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Arrives on barrier `id` without waiting (the other `threads` minus these wait in bar.sync).
__device__ __forceinline__ void aj_named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

#endif  // ATTNJIT_SM90_PRIMITIVES_CUH
