// GPU test for templates/interval.h: the interval arithmetic the compile-time mask analysis
// runs on the host and the generated aj_tile_class runs on the GPU is one header; here every
// operation, on random and edge-case ranges (int32 limits, infinities, NaN, fractions at the
// int32 boundary), is evaluated once by the host build and once by an NVRTC-compiled kernel,
// and the results must be bit-identical. Skips with a message where no GPU/driver is found.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/driver/cuda_driver.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"
#include "runtime/driver/templates.hpp"
#include "templates/interval.h"

// The probe, compiled here for the host and passed as text to NVRTC for the GPU: the macro
// both expands the code and keeps its spelling (AJ_HOST_DEVICE unexpanded) as a string.
#define AJ_PROBE(...) \
  __VA_ARGS__         \
  constexpr const char* kProbeSource = #__VA_ARGS__;

AJ_PROBE(
    struct AjProbeIn {
      AjIv a, b;
      AjFv f, g;
      AjBv c, d;
    };

    // Writes every operation's result: ints and bools to `i`, float bounds to `x`.
    AJ_HOST_DEVICE void aj_probe_eval(const AjProbeIn& in, long long* i, double* x) {
      int k = 0, m = 0;
      const AjIv ivs[] = {aj_iv(in.a.lo, in.a.hi),
                          aj_iv_neg(in.a),
                          aj_iv_abs(in.a),
                          aj_iv_add(in.a, in.b),
                          aj_iv_sub(in.a, in.b),
                          aj_iv_mul(in.a, in.b),
                          aj_iv_min(in.a, in.b),
                          aj_iv_max(in.a, in.b),
                          aj_iv_div(in.a, in.b),
                          aj_iv_mod(in.a, in.b),
                          aj_iv_where(in.c, in.a, in.b),
                          aj_iv_from_float(in.f),
                          aj_iv_from_bool(in.c)};
      for (const AjIv& v : ivs) i[k++] = v.lo, i[k++] = v.hi;
      const AjFv fvs[] = {
          aj_fv(in.f.lo, in.f.hi),       aj_fv_neg(in.f),      aj_fv_add(in.f, in.g), aj_fv_sub(in.f, in.g),
          aj_fv_where(in.c, in.f, in.g), aj_fv_from_int(in.a), aj_fv_from_bool(in.d)};
      for (const AjFv& v : fvs) x[m++] = v.lo, x[m++] = v.hi;
      const AjBv bvs[] = {aj_bv_not(in.c),      aj_bv_and(in.c, in.d),
                          aj_bv_or(in.c, in.d), aj_bv_where(in.c, in.d, in.c),
                          aj_bv_eq(in.c, in.d), aj_bv_ne(in.c, in.d)};
      for (const AjBv& v : bvs) i[k++] = v.can_false * 2 + v.can_true;
      for (int op = AJ_CMP_LT; op <= AJ_CMP_NE; ++op) {
        const AjBv ci = aj_iv_cmp((AjCmp)op, in.a, in.b), cf = aj_fv_cmp((AjCmp)op, in.f, in.g);
        i[k++] = ci.can_false * 2 + ci.can_true;
        i[k++] = cf.can_false * 2 + cf.can_true;
      }
      i[k++] = aj_tile_class_of(in.c);
    })

// The kernel (GPU only): one case per thread, results at fixed strides.
constexpr const char* kProbeKernel = R"(
struct AjProbeArgs { const AjProbeIn* in; long long* i; double* x; int n; };
extern "C" __global__ void aj_probe(const AjProbeArgs args) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < args.n) aj_probe_eval(args.in[t], args.i + t * 64, args.x + t * 16);
}
)";

namespace attnjit::runtime {
namespace {

constexpr int kInts = 64, kDoubles = 16;  // per case (the probe writes 51 and 14)

std::vector<AjProbeIn> probe_inputs(int n) {
  std::mt19937_64 rng(42);
  auto uni = [&](long long lo, long long hi) { return std::uniform_int_distribution<long long>(lo, hi)(rng); };
  const long long imin = -2147483648LL, imax = 2147483647LL;
  const long long int_specials[] = {imin, imax, imin + 1, imax - 1, 0, -1, 1, 46341, -46341, 65536};
  const double inf = INFINITY;
  const double float_specials[] = {0.0,           -0.0, 0.5,   -0.5, 2147483647.5, -2147483648.5, 2147483648.0,
                                   -2147483649.0, 1e30, -1e30, inf,  -inf,         NAN,           1e-300};
  auto iv = [&]() {
    long long a, b;
    switch (uni(0, 3)) {
      case 0: a = int_specials[uni(0, 9)], b = uni(0, 1) ? a : int_specials[uni(0, 9)]; break;
      case 1: a = uni(imin, imax), b = uni(imin, imax); break;
      default: a = uni(-30, 30), b = uni(0, 2) ? a + uni(0, 10) : a; break;
    }
    return a <= b ? AjIv{a, b} : AjIv{b, a};
  };
  auto fv = [&]() {
    double a, b;
    switch (uni(0, 3)) {
      case 0: a = float_specials[uni(0, 13)], b = uni(0, 1) ? a : float_specials[uni(0, 13)]; break;
      case 1:
        a = std::ldexp(static_cast<double>(uni(-1000000, 1000000)), static_cast<int>(uni(-40, 40)));
        b = a + std::fabs(std::ldexp(static_cast<double>(uni(0, 1000000)), static_cast<int>(uni(-40, 40))));
        break;
      default: a = uni(-40, 40) * 0.25, b = a + uni(0, 8) * 0.25; break;
    }
    return a <= b ? AjFv{a, b} : AjFv{b, a};  // a NaN bound stays as drawn
  };
  const AjBv bools[] = {{true, false}, {false, true}, {true, true}};
  std::vector<AjProbeIn> in(static_cast<std::size_t>(n));
  for (auto& x : in) x = AjProbeIn{iv(), iv(), fv(), fv(), bools[uni(0, 2)], bools[uni(0, 2)]};
  return in;
}

struct ProbeArgs {
  CUdeviceptr in, ints, doubles;
  int n;
};

TEST(GpuIntervalArithmetic, DeviceAgreesWithHostBitForBit) {
  const Driver& driver = Driver::instance();
  if (!driver.available()) GTEST_SKIP() << "no CUDA driver: " << driver.unavailable_reason();
  DeviceContext context(0);
  const auto& device = context.properties();
  if (!is_supported_architecture(device.arch)) GTEST_SKIP() << "GPU arch " << device.arch << " is not targeted";

  // The embedded header, as the generated code gets it, then the probe.
  const std::string source = load_template("interval.h") + "\n" + kProbeSource + "\n" + kProbeKernel;
  const auto compiled = compile_to_cubin(source, NvrtcCompileOptions{}.set_arch(device.arch));
  LoadedLibrary library(compiled.cubin);
  const KernelFunction probe = library.kernel("aj_probe");

  const int n = 1 << 16;
  const std::vector<AjProbeIn> in = probe_inputs(n);
  DeviceBuffer in_device(in.size() * sizeof(AjProbeIn));
  DeviceBuffer ints_device(static_cast<std::size_t>(n) * kInts * sizeof(long long));
  DeviceBuffer doubles_device(static_cast<std::size_t>(n) * kDoubles * sizeof(double));
  in_device.copy_from_host(in.data(), in.size() * sizeof(AjProbeIn));
  ints_device.fill_bytes(0);
  doubles_device.fill_bytes(0);
  Stream stream;
  launch(probe, LaunchConfig{}.set_grid((n + 127) / 128).set_block(128).set_stream(stream.handle()),
         ProbeArgs{in_device.device_pointer(), ints_device.device_pointer(), doubles_device.device_pointer(), n});
  stream.synchronize();
  std::vector<long long> ints(static_cast<std::size_t>(n) * kInts);
  std::vector<double> doubles(static_cast<std::size_t>(n) * kDoubles);
  ints_device.copy_to_host(ints.data(), ints.size() * sizeof(long long));
  doubles_device.copy_to_host(doubles.data(), doubles.size() * sizeof(double));

  long mismatches = 0;
  for (int t = 0; t < n; ++t) {
    long long hi[kInts] = {};
    double hd[kDoubles] = {};
    aj_probe_eval(in[static_cast<std::size_t>(t)], hi, hd);
    const long long* di = &ints[static_cast<std::size_t>(t) * kInts];
    const double* dd = &doubles[static_cast<std::size_t>(t) * kDoubles];
    const auto& x = in[static_cast<std::size_t>(t)];
    const std::string what = "case " + std::to_string(t) + ": a=[" + std::to_string(x.a.lo) + "," +
                             std::to_string(x.a.hi) + "] b=[" + std::to_string(x.b.lo) + "," + std::to_string(x.b.hi) +
                             "] f=[" + std::to_string(x.f.lo) + "," + std::to_string(x.f.hi) + "] g=[" +
                             std::to_string(x.g.lo) + "," + std::to_string(x.g.hi) + "]";
    for (int k = 0; k < kInts; ++k)
      if (hi[k] != di[k] && mismatches++ < 10)
        ADD_FAILURE() << what << " int slot " << k << ": host " << hi[k] << ", device " << di[k];
    for (int k = 0; k < kDoubles; ++k)
      if (std::memcmp(&hd[k], &dd[k], sizeof(double)) != 0 && mismatches++ < 10)
        ADD_FAILURE() << what << " float slot " << k << ": host " << hd[k] << ", device " << dd[k];
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace attnjit::runtime
