// attnjit hook support: what generated hook functions call besides common.cuh.
//
// Tensor reads (indices clamped to the tensor's extent: the GPU never reads outside a
// bound tensor; an out-of-range index is recorded for the runtime to report when the host
// could not prove the reads in range; the CPU reference reports such reads as errors). The interval arithmetic
// of the tile classifier is templates/interval.h, the same header the compile-time mask
// analysis uses; the emitted hooks carry it (compiler/codegen/hook_emitter.cpp).
#ifndef ATTNJIT_HOOKS_CUH
#define ATTNJIT_HOOKS_CUH

// Index `i` of dimension `dim`, clamped into the extent so the read stays in memory.
// With AJ_CHECK_READS (the runtime's checked twin of a unit, compiled and launched only when
// the host cannot prove a launch's reads in range) an out-of-range index is also recorded,
// with one 64-bit store (slot, dimension, index). Off by default: even a never-taken
// recording path makes kernels that read tensors per element spill (a document mask ran at
// half speed with it).
#ifndef AJ_CHECK_READS
#define AJ_CHECK_READS 0
#endif
__device__ __forceinline__ long long aj_index(const AttnjitTensorArg& t, int dim, int i) {
  const int size = t.size[dim];
  if ((unsigned)i < (unsigned)size) return i;
#if AJ_CHECK_READS
  if (t.error != 0)
    *(volatile unsigned long long*)t.error =
        ((unsigned long long)(0x80000000u | ((unsigned)t.slot << 8) | (unsigned)dim) << 32) | (unsigned)i;
#endif
  return i < 0 ? 0 : size - 1;
}
__device__ __forceinline__ long long aj_offset1(const AttnjitTensorArg& t, int i0) {
  return aj_index(t, 0, i0) * t.stride[0];
}
__device__ __forceinline__ long long aj_offset2(const AttnjitTensorArg& t, int i0, int i1) {
  return aj_offset1(t, i0) + aj_index(t, 1, i1) * t.stride[1];
}
__device__ __forceinline__ long long aj_offset3(const AttnjitTensorArg& t, int i0, int i1, int i2) {
  return aj_offset2(t, i0, i1) + aj_index(t, 2, i2) * t.stride[2];
}
__device__ __forceinline__ long long aj_offset4(const AttnjitTensorArg& t, int i0, int i1, int i2, int i3) {
  return aj_offset3(t, i0, i1, i2) + aj_index(t, 3, i3) * t.stride[3];
}
__device__ __forceinline__ float aj_read_f32(const AttnjitTensorArg& t, long long o) { return ((const float*)t.data)[o]; }
__device__ __forceinline__ float aj_read_f16(const AttnjitTensorArg& t, long long o) {
  return aj_fp16_to_float(((const aj_u16*)t.data)[o]);
}
__device__ __forceinline__ float aj_read_bf16(const AttnjitTensorArg& t, long long o) {
  return aj_bf16_to_float(((const aj_u16*)t.data)[o]);
}
__device__ __forceinline__ int aj_read_i32(const AttnjitTensorArg& t, long long o) { return ((const int*)t.data)[o]; }
__device__ __forceinline__ int aj_read_i64(const AttnjitTensorArg& t, long long o) {
  return (int)((const long long*)t.data)[o];
}
__device__ __forceinline__ bool aj_read_u8(const AttnjitTensorArg& t, long long o) {
  return ((const unsigned char*)t.data)[o] != 0;
}
__device__ __forceinline__ int aj_to_int(float x) {
  int r;
  asm("cvt.rzi.sat.s32.f32 %0, %1;" : "=r"(r) : "f"(x));  // truncate, saturate, NaN -> 0
  return r;
}

#endif  // ATTNJIT_HOOKS_CUH
