// Gradient accumulation for the backward units: pasted after hooks.cuh and before the
// generated gradient hook (aj_score_mod_grad), which adds ds * d score_mod / d tensor[i]
// for each read of a captured float tensor.
#ifndef ATTNJIT_BWD_HOOKS_CUH
#define ATTNJIT_BWD_HOOKS_CUH

// Adds `value` to element `i` of an accumulator: an fp32 atomic, or, deterministic, a
// fixed-point one in units of 2^-32 (integer sums do not depend on the order of the
// additions, so the result is bit-identical run to run; |sum| < 2^31).
__device__ __forceinline__ void aj_accumulate_fixed(unsigned long long* slot, float value) {
  atomicAdd(slot, (unsigned long long)__float2ll_rn(value * 4294967296.0f));
}
__device__ __forceinline__ void aj_accumulate(void* accum, long long i, float value, int deterministic) {
  if (deterministic)
    aj_accumulate_fixed((unsigned long long*)accum + i, value);
  else
    atomicAdd((float*)accum + i, value);
}
__device__ __forceinline__ float aj_accumulated(const void* accum, long long i, int deterministic) {
  if (deterministic) return (float)((double)((const long long*)accum)[i] * (1.0 / 4294967296.0));
  return ((const float*)accum)[i];
}

// Row-major element index of a read (clamped like the read itself), in the accumulator of
// the tensor's gradient.
__device__ __forceinline__ long long aj_grad_offset1(const AttnjitTensorArg& t, int i0) { return aj_index(t, 0, i0); }
__device__ __forceinline__ long long aj_grad_offset2(const AttnjitTensorArg& t, int i0, int i1) {
  return aj_grad_offset1(t, i0) * t.size[1] + aj_index(t, 1, i1);
}
__device__ __forceinline__ long long aj_grad_offset3(const AttnjitTensorArg& t, int i0, int i1, int i2) {
  return aj_grad_offset2(t, i0, i1) * t.size[2] + aj_index(t, 2, i2);
}
__device__ __forceinline__ long long aj_grad_offset4(const AttnjitTensorArg& t, int i0, int i1, int i2, int i3) {
  return aj_grad_offset3(t, i0, i1, i2) * t.size[3] + aj_index(t, 3, i3);
}
// Only the gradients the caller asked for have an accumulator.
__device__ __forceinline__ void aj_grad_add(const AttnjitBwdArgs& a, int slot, long long i, float value) {
  if (a.tensor_grad_accum[slot] != nullptr) aj_accumulate(a.tensor_grad_accum[slot], i, value, a.deterministic);
}

#endif  // ATTNJIT_BWD_HOOKS_CUH
