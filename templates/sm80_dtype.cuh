// The 16-bit element type of an sm80 kernel's q, k, v and o, and what the kernels do with it:
// mma.sync m16n8k16 with fp32 accumulation, two floats packed into one register, one element
// loaded or stored. Codegen sets exactly one of AJ_DTYPE_BF16 / AJ_DTYPE_FP16 to 1 (a macro
// counts when defined to a non-zero value); AJ_IS_BF16 or AJ_IS_FP16 follows. Pasted before
// the kernel sources of fwd_sm80 and bwd_sm80.
#ifndef ATTNJIT_SM80_DTYPE_CUH
#define ATTNJIT_SM80_DTYPE_CUH

#if defined(AJ_DTYPE_BF16)
#if AJ_DTYPE_BF16
#define AJ_IS_BF16 1
#endif
#endif
#if defined(AJ_DTYPE_FP16)
#if AJ_DTYPE_FP16
#define AJ_IS_FP16 1
#endif
#endif
#if defined(AJ_IS_BF16) == defined(AJ_IS_FP16)
#error "attnjit sm80 kernels: define exactly one of AJ_DTYPE_BF16 and AJ_DTYPE_FP16 to 1"
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "attnjit sm80 kernels: need sm_80 or newer"
#endif

namespace aj_sm80 {

__device__ __forceinline__ void mma(float* d, const aj_u32* a, aj_u32 b0, aj_u32 b1) {
#if defined(AJ_IS_BF16)
  aj_mma_bf16_16816(d, a, b0, b1);
#else
  aj_mma_fp16_16816(d, a, b0, b1);
#endif
}
__device__ __forceinline__ aj_u32 pack2(float lo, float hi) {
#if defined(AJ_IS_BF16)
  return aj_pack_bf16x2(lo, hi);
#else
  return aj_pack_fp16x2(lo, hi);
#endif
}
__device__ __forceinline__ float load_element(const aj_u16* p) {
#if defined(AJ_IS_BF16)
  return aj_bf16_to_float(*p);
#else
  return aj_fp16_to_float(*p);
#endif
}
__device__ __forceinline__ aj_u16 store_element(float x) {
#if defined(AJ_IS_BF16)
  return aj_float_to_bf16(x);
#else
  return aj_float_to_fp16(x);
#endif
}

}  // namespace aj_sm80

#endif  // ATTNJIT_SM80_DTYPE_CUH
