// attnjit: RoPE one rotated pair at a time (the backward's passes and the decode kernel's
// tiles). Pasted after the hooks (aj_rope_inv_freq, AJ_ROPE_DIM, AJ_ROPE_INTERLEAVED) in units
// whose variant has RoPE; fwd_sm80 keeps its own stepped per-tile rotation.
#ifndef ATTNJIT_ROPE_PAIRS_CUH
#define ATTNJIT_ROPE_PAIRS_CUH
#if AJ_HAS_ROPE

namespace aj_rope {

// The two elements of rotated pair j (or, past the rotary dimensions, of a copied pair).
__device__ __forceinline__ void rope_pair(int j, int& e0, int& e1, bool& turns) {
  turns = j < AJ_ROPE_DIM / 2;
  if (turns) {
    e0 = AJ_ROPE_INTERLEAVED ? 2 * j : j;
    e1 = AJ_ROPE_INTERLEAVED ? 2 * j + 1 : j + AJ_ROPE_DIM / 2;
  } else {
    e0 = AJ_ROPE_DIM + 2 * (j - AJ_ROPE_DIM / 2);
    e1 = e0 + 1;
  }
}

// (x0, x1) turned by `sign` * position * w_j, in fp32 (sincosf: no per-CTA table).
__device__ __forceinline__ void rope_turn(float& x0, float& x1, int position, int j, float sign) {
  float sn, cs;
  sincosf((float)position * aj_rope_inv_freq(j), &sn, &cs);
  sn *= sign;
  const float r0 = x0 * cs - x1 * sn, r1 = x1 * cs + x0 * sn;
  x0 = r0;
  x1 = r1;
}

// sin and cos of an fp32 angle: reduction to [-pi, pi] by k * 2pi in two fma (exact for the
// angles of real positions), then the hardware approximations (abs. error ~1e-6 there).
__device__ __forceinline__ void rope_sincos(float x, float& s, float& c) {
  const float k = rintf(x * 0.159154943091895336f);
  float r = fmaf(k, -6.28318548202514648f, x);  // fl(2 pi)
  r = fmaf(k, 1.74845553146951715e-7f, r);      // fl(2 pi) - 2 pi
  asm("sin.approx.ftz.f32 %0, %1;" : "=f"(s) : "f"(r));
  asm("cos.approx.ftz.f32 %0, %1;" : "=f"(c) : "f"(r));
}

// (x0, x1) turned by position * inv_freq with rope_sincos, inv_freq = aj_rope_inv_freq(j) (what
// the forward kernels use; callers that turn many rows keep the frequencies in a table).
__device__ __forceinline__ void rope_turn_by(float& x0, float& x1, int position, float inv_freq) {
  float sn, cs;
  rope_sincos((float)position * inv_freq, sn, cs);
  const float r0 = x0 * cs - x1 * sn, r1 = x1 * cs + x0 * sn;
  x0 = r0;
  x1 = r1;
}
__device__ __forceinline__ void rope_turn_approx(float& x0, float& x1, int position, int j) {
  rope_turn_by(x0, x1, position, aj_rope_inv_freq(j));
}

}  // namespace aj_rope

#endif  // AJ_HAS_ROPE
#endif  // ATTNJIT_ROPE_PAIRS_CUH
