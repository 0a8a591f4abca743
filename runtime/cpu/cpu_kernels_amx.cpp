// The CPU backend's bf16 products on AMX tiles (see cpu_kernels.hpp, "bf16 dot products").
//
// On a CPU with AMX-BF16 (Intel Sapphire Rapids and newer) TDPBF16PS multiplies a 16 x 32 bf16
// tile by a 32 x 16 one into a 16 x 16 fp32 tile: 8192 multiply-adds per instruction, 16 times
// vdpbf16ps's. The operands are the vdpbf16ps path's packed words as they are (a word holds
// two consecutive elements of the reduction, which is AMX's "VNNI" layout for B): Q and P rows
// are A tiles (16 rows x 16 words), a K panel [pairs][16 keys] gives B tiles of 16 pair-rows x
// 16 keys, V [pairs][width] B tiles of 16 pair-rows x 16 columns. Blocks of 32 x 32 outputs in
// four accumulator tiles (tmm0-3), two A tiles (tmm4-5) and two B tiles (tmm6-7), or 16 x 32
// blocks in half of them. The callers in cpu_kernels_bf16.cpp give these whole blocks only
// (rows of 16, steps of 16 words); the rest goes to the vdpbf16ps micro-kernels.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "compiler/error.hpp"

#include "runtime/cpu/cpu_kernels.hpp"

#define AJ_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))

namespace attnjit::cpu {
namespace {

constexpr int kTile = 16;       // rows of a tile, and fp32 (or word) columns per 64-byte tile row
constexpr int kTileBytes = 64;  // bytes per tile row

// The tile shapes: every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// Linux hands out AMX state only to a process that asked for it (arch_prctl).
bool request_amx_permission() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

bool cpu_has_amx_bf16() {
  unsigned eax, ebx, ecx, edx;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
  return (edx >> 22 & 1u) && (edx >> 24 & 1u);  // AMX-BF16, AMX-TILE
}

// Tile state is per thread: configured once on each thread that runs the products.
AJ_AMX void configure_tiles() {
  thread_local bool configured = false;
  if (configured) return;
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = kTileBytes;
    config.rows[t] = kTile;
  }
  _tile_loadconfig(&config);
  configured = true;
}

// S[16 RB x 16 NP] = Q K^T for the 16 RB rows at q and the NP panels at kp0 (and kp1)
// (unscaled, into `out`, rows `ldo` floats apart).
template <int RB, int NP>
AJ_AMX void score_block(const std::uint32_t* q, std::int64_t ldq, const std::uint32_t* kp0, const std::uint32_t* kp1,
                        int steps, float* out, std::int64_t ldo) {
  _tile_zero(0);
  if (NP == 2) _tile_zero(1);
  if (RB == 2) _tile_zero(2);
  if (RB == 2 && NP == 2) _tile_zero(3);
  for (int s = 0; s < steps; ++s) {
    _tile_loadd(4, q + s * kTile, ldq * 4);
    if (RB == 2) _tile_loadd(5, q + 16 * ldq + s * kTile, ldq * 4);
    _tile_loadd(6, kp0 + s * kTile * kTile, kTileBytes);
    if (NP == 2) _tile_loadd(7, kp1 + s * kTile * kTile, kTileBytes);
    _tile_dpbf16ps(0, 4, 6);
    if (NP == 2) _tile_dpbf16ps(1, 4, 7);
    if (RB == 2) _tile_dpbf16ps(2, 5, 6);
    if (RB == 2 && NP == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, ldo * 4);
  if (NP == 2) _tile_stored(1, out + 16, ldo * 4);
  if (RB == 2) _tile_stored(2, out + 16 * ldo, ldo * 4);
  if (RB == 2 && NP == 2) _tile_stored(3, out + 16 * ldo + 16, ldo * 4);
}

// O[16 RB rows x 32 columns] += P V over `steps` steps of 16 pairs.
template <int RB>
AJ_AMX void pv_block(const std::uint32_t* p, std::int64_t ldp, const std::uint32_t* v, int width, int steps, float* o,
                     std::int64_t ldo) {
  _tile_loadd(0, o, ldo * 4);
  _tile_loadd(1, o + 16, ldo * 4);
  if (RB == 2) {
    _tile_loadd(2, o + 16 * ldo, ldo * 4);
    _tile_loadd(3, o + 16 * ldo + 16, ldo * 4);
  }
  for (int s = 0; s < steps; ++s) {
    _tile_loadd(4, p + s * kTile, ldp * 4);
    if (RB == 2) _tile_loadd(5, p + 16 * ldp + s * kTile, ldp * 4);
    _tile_loadd(6, v + static_cast<std::int64_t>(s) * kTile * width, width * 4);
    _tile_loadd(7, v + static_cast<std::int64_t>(s) * kTile * width + 16, width * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (RB == 2) {
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, o, ldo * 4);
  _tile_stored(1, o + 16, ldo * 4);
  if (RB == 2) {
    _tile_stored(2, o + 16 * ldo, ldo * 4);
    _tile_stored(3, o + 16 * ldo + 16, ldo * 4);
  }
}

std::atomic<bool> amx_enabled{true};

}  // namespace

bool amx_products_supported() {
  static const bool here = cpu_has_amx_bf16() && request_amx_permission();
  return here;
}

bool amx_products_available() {
  return amx_products_supported() && amx_enabled.load(std::memory_order_relaxed) && bf16_products_available();
}

void use_amx_products(bool on) {
  if (on && !amx_products_supported())
    throw UserError("this CPU (or its operating system) does not offer AMX-BF16 tiles; keep them off");
  amx_enabled.store(on, std::memory_order_relaxed);
}

AJ_AMX void scores_amx(int rows, int panels, int pairs, float alpha, const std::uint32_t* q, std::int64_t ldq,
                       const std::uint32_t* packed, float* s, std::int64_t lds) {
  configure_tiles();
  const int steps = pairs / kTile;
  alignas(64) float block[32 * 32];
  const __m512 scale = _mm512_set1_ps(alpha);
  // Unscaled scores go straight from the tiles to S.
  const bool direct = alpha == 1.0f;
  for (int r0 = 0; r0 < rows; r0 += 32) {
    const int n = std::min(32, rows - r0);  // 32, or a last 16
    const std::uint32_t* qr = q + static_cast<std::int64_t>(r0) * ldq;
    for (int p = 0; p < panels; p += 2) {
      const int np = std::min(2, panels - p);
      const std::uint32_t* kp = packed + static_cast<std::int64_t>(p) * pairs * kTile;
      float* out = direct ? s + static_cast<std::int64_t>(r0) * lds + p * kTile : block;
      const std::int64_t ldo = direct ? lds : 32;
      if (n == 32 && np == 2)
        score_block<2, 2>(qr, ldq, kp, kp + pairs * kTile, steps, out, ldo);
      else if (n == 32)
        score_block<2, 1>(qr, ldq, kp, kp, steps, out, ldo);
      else if (np == 2)
        score_block<1, 2>(qr, ldq, kp, kp + pairs * kTile, steps, out, ldo);
      else
        score_block<1, 1>(qr, ldq, kp, kp, steps, out, ldo);
      for (int r = 0; r < n && !direct; ++r) {
        float* dst = s + static_cast<std::int64_t>(r0 + r) * lds + p * kTile;
        _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_load_ps(block + 32 * r), scale));
        if (np == 2) _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_load_ps(block + 32 * r + 16), scale));
      }
    }
  }
}

AJ_AMX void accumulate_pv_amx(int rows, int width, int steps, const std::uint32_t* p, std::int64_t ldp,
                              const std::uint32_t* v, float* o, std::int64_t ldo) {
  configure_tiles();
  for (int r0 = 0; r0 < rows; r0 += 32)
    for (int c0 = 0; c0 < width; c0 += 32) {
      const std::uint32_t* pr = p + static_cast<std::int64_t>(r0) * ldp;
      float* orow = o + static_cast<std::int64_t>(r0) * ldo + c0;
      if (rows - r0 >= 32)
        pv_block<2>(pr, ldp, v + c0, width, steps, orow, ldo);
      else
        pv_block<1>(pr, ldp, v + c0, width, steps, orow, ldo);
    }
}

}  // namespace attnjit::cpu
