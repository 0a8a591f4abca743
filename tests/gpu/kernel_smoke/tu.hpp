// Builds attnjit forward-kernel translation units the way codegen does (DESIGN §3):
// provenance comment, templates/abi.h, templates/common.cuh, configuration macros, the
// three hook functions (hand-written here), templates/fwd_sm80.cuh.
// Shared by nvrtc_check.cpp (compile-only, no GPU) and smoke.cu (GPU test + timing).
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace smoke {

// Mask / score-mod variants the smoke test knows, with exact tile classes.
//   int_params[0] = window (SWA), int_params[1] = shift (causal: kv <= q - shift),
//   float_params[0] = soft-cap.
enum Variant { kDense = 0, kCausal = 1, kSwaSoftcap = 2 };
inline const char* variant_name(int v) { return v == kDense ? "dense" : v == kCausal ? "causal" : "swa+softcap"; }

struct KernelCfg {
  int d = 128, bm = 128, bn = 64, nw = 4, stages = 1;
  bool bf16 = true;
  int variant = kDense;
  int q_in_regs = -1;  // -1: the template's default; else AJ_Q_IN_REGS
  std::string name() const {
    std::ostringstream s;
    s << variant_name(variant) << "_" << (bf16 ? "bf16" : "fp16") << "_d" << d << "_m" << bm << "n" << bn << "w" << nw
      << "s" << stages;
    if (q_in_regs >= 0) s << "q" << q_in_regs;
    return s.str();
  }
};

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline std::string hooks_source(int variant) {
  switch (variant) {
    case kDense:
      return R"(
__device__ __forceinline__ float aj_score_mod(float score, int b, int h, int q, int kv, const AttnjitFwdArgs& args) { return score; }
__device__ __forceinline__ bool aj_mask_mod(int b, int h, int q, int kv, const AttnjitFwdArgs& args) { return true; }
__device__ __forceinline__ int aj_tile_class(int b, int h, int q_lo, int q_hi, int kv_lo, int kv_hi, const AttnjitFwdArgs& args) { return 2; }
)";
    case kCausal:
      return R"(
__device__ __forceinline__ float aj_score_mod(float score, int b, int h, int q, int kv, const AttnjitFwdArgs& args) { return score; }
__device__ __forceinline__ bool aj_mask_mod(int b, int h, int q, int kv, const AttnjitFwdArgs& args) {
  return kv <= q - args.int_params[1];
}
__device__ __forceinline__ int aj_tile_class(int b, int h, int q_lo, int q_hi, int kv_lo, int kv_hi, const AttnjitFwdArgs& args) {
  const int s = args.int_params[1];
  if (kv_lo > q_hi - s) return 0;
  if (kv_hi <= q_lo - s) return 2;
  return 1;
}
)";
    default:
      return R"(
__device__ __forceinline__ float aj_score_mod(float score, int b, int h, int q, int kv, const AttnjitFwdArgs& args) {
  const float cap = args.float_params[0];
  return cap * aj_tanh(score / cap);
}
__device__ __forceinline__ bool aj_mask_mod(int b, int h, int q, int kv, const AttnjitFwdArgs& args) {
  return kv <= q && q - kv < args.int_params[0];
}
__device__ __forceinline__ int aj_tile_class(int b, int h, int q_lo, int q_hi, int kv_lo, int kv_hi, const AttnjitFwdArgs& args) {
  const int w = args.int_params[0];
  if (kv_lo > q_hi || q_lo - kv_hi >= w) return 0;
  if (kv_hi <= q_lo && q_hi - kv_lo < w) return 2;
  return 1;
}
)";
  }
}

inline std::string make_tu(const KernelCfg& c, const std::string& repo) {
  std::ostringstream s;
  s << "// attnjit kernel smoke test: " << c.name() << "\n";
  s << read_text(repo + "/templates/abi.h") << "\n";
  s << read_text(repo + "/templates/common.cuh") << "\n";
  s << "#define AJ_HEAD_DIM " << c.d << "\n#define AJ_BLOCK_M " << c.bm << "\n#define AJ_BLOCK_N " << c.bn
    << "\n#define AJ_NUM_WARPS " << c.nw << "\n#define AJ_STAGES " << c.stages << "\n"
    << (c.bf16 ? "#define AJ_DTYPE_BF16 1\n" : "#define AJ_DTYPE_FP16 1\n") << "#define AJ_HAS_SCORE_MOD "
    << (c.variant == kSwaSoftcap ? 1 : 0) << "\n"
    << "#define AJ_HAS_MASK " << (c.variant == kDense ? 0 : 1) << "\n";
  if (c.q_in_regs >= 0) s << "#define AJ_Q_IN_REGS " << c.q_in_regs << "\n";
  s << hooks_source(c.variant) << "\n";
  s << read_text(repo + "/templates/fwd_sm80.cuh") << "\n";
  return s.str();
}

// Every configuration nvrtc_check compiles and smoke.cu tests / times.
// The recommended schedule per head dim (templates/fwd_sm80.cuh, docs/kernels.md).
inline KernelCfg default_cfg(int d, int variant, bool bf16) {
  KernelCfg c;
  c.d = d;
  c.variant = variant;
  c.bf16 = bf16;
  c.bm = 128;
  c.bn = 64;
  c.nw = 4;
  c.stages = (d == 96 || d == 128) ? 1 : 2;
  if (d == 256) {
    c.bm = 64;
    c.bn = 32;
    c.stages = 2;
  }
  return c;
}
inline bool is_default(const KernelCfg& c) {
  const KernelCfg d = default_cfg(c.d, c.variant, c.bf16);
  return c.bm == d.bm && c.bn == d.bn && c.nw == d.nw && c.stages == d.stages && c.q_in_regs < 0;
}

// Every configuration nvrtc_check compiles and smoke.cu tests / times.
inline std::vector<KernelCfg> all_configs() {
  std::vector<KernelCfg> v;
  // Default schedules, all variants, both dtypes, D = 64 and 128.
  for (int var = 0; var < 3; ++var)
    for (int bf = 1; bf >= 0; --bf)
      for (int d : {64, 128}) v.push_back(default_cfg(d, var, bf));
  // Other head dims (bf16).
  for (int d : {32, 96, 256})
    for (int var : {kDense, kCausal}) v.push_back(default_cfg(d, var, true));
  // Schedule knobs (bf16, dense and causal), q_in_regs -1 = the template's default.
  // {bm, bn, warps, stages, q_in_regs}
  static const int sched[][5] = {{128, 64, 8, 2, -1}, {128, 64, 8, 1, -1}, {128, 128, 8, 2, -1}, {128, 32, 8, 2, -1},
                                 {64, 64, 4, 2, -1},  {64, 64, 4, 1, -1},  {128, 64, 4, 2, -1},  {128, 64, 4, 1, -1},
                                 {128, 32, 4, 2, -1}, {128, 32, 4, 1, -1}, {128, 64, 4, 2, 0},   {128, 64, 4, 1, 0},
                                 {128, 128, 4, 2, 0}, {128, 128, 4, 1, 0}};
  for (int d : {64, 128})
    for (int var : {kDense, kCausal})
      for (auto& s : sched) {
        KernelCfg c;
        c.variant = var;
        c.d = d;
        c.bm = s[0];
        c.bn = s[1];
        c.nw = s[2];
        c.stages = s[3];
        c.q_in_regs = s[4];
        if (d == 128 && c.bn == 128 && c.nw == 4) continue;       // no room in registers
        if (d == 128 && c.q_in_regs == 0 && c.nw == 4) continue;  // same as the default
        if (is_default(c)) continue;
        v.push_back(c);
      }
  return v;
}

// Same formula as AJ_SMEM_BYTES in templates/fwd_sm80.cuh.
inline int smem_bytes(const KernelCfg& c) { return (c.bm + 2 * c.stages * c.bn) * (c.d + 8) * 2; }

}  // namespace smoke
