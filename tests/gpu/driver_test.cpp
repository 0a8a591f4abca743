// GPU test for runtime/cuda_driver: a tiny NVRTC-compiled kernel taking one argument block is
// loaded with cuLibraryLoadData, launched, and its result and timing are checked. Skips with a
// message where no GPU/driver is found.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "compiler/error.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/driver/nvrtc_compiler.hpp"

namespace attnjit::runtime {
namespace {

constexpr const char* kAxpyKernel = R"(
struct AxpyArgs { float* y; const float* x; float a; int n; };
extern "C" __global__ void axpy(const AxpyArgs args) {
  extern __shared__ float staged[];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  staged[threadIdx.x] = i < args.n ? args.x[i] : 0.0f;
  __syncthreads();
  if (i < args.n) args.y[i] += args.a * staged[threadIdx.x];
}
)";

struct AxpyArgs {
  CUdeviceptr y;
  CUdeviceptr x;
  float a;
  int n;
};

TEST(GpuDriver, CompilesLoadsAndLaunchesAnArgumentBlockKernel) {
  const Driver& driver = Driver::instance();
  if (!driver.available()) GTEST_SKIP() << "no CUDA driver: " << driver.unavailable_reason();
  DeviceContext context(0);
  const auto& device = context.properties();
  if (!is_supported_architecture(device.arch)) GTEST_SKIP() << "GPU arch " << device.arch << " is not targeted";

  const auto compiled = compile_to_cubin(kAxpyKernel, NvrtcCompileOptions{}.set_arch(device.arch));
  LoadedLibrary library(compiled.cubin);
  const KernelFunction axpy = library.kernel("axpy");
  EXPECT_GT(axpy.registers_per_thread(), 0);
  axpy.set_max_dynamic_shared_memory(64 * 1024);

  const int n = 1000;
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) x[i] = 0.5f * i, y[i] = 1.0f + i;
  DeviceBuffer x_device(n * sizeof(float)), y_device(n * sizeof(float));
  x_device.copy_from_host(x.data(), n * sizeof(float));
  y_device.fill_bytes(0xff);  // poison before the real copy
  y_device.copy_from_host(y.data(), n * sizeof(float));

  Stream stream;
  Event start, stop;
  const AxpyArgs args{y_device.device_pointer(), x_device.device_pointer(), 2.0f, n};
  start.record(stream.handle());
  launch(axpy,
         LaunchConfig{}
             .set_grid((n + 127) / 128)
             .set_block(128)
             .set_dynamic_shared_bytes(128 * sizeof(float))
             .set_stream(stream.handle()),
         args);
  stop.record(stream.handle());
  stream.synchronize();
  EXPECT_GE(Event::elapsed_ms(start, stop), 0.0f);

  std::vector<float> result(n);
  y_device.copy_to_host(result.data(), n * sizeof(float));
  for (int i = 0; i < n; ++i) ASSERT_FLOAT_EQ(result[i], 1.0f + i + 2.0f * 0.5f * i) << "at " << i;

  // A deliberate failing driver call, which compute-sanitizer would count as an API error:
  // left out of the reduced suite that tools/gpu/run-suite.sh runs under the sanitizer.
  if (const char* reduced = std::getenv("ATTNJIT_GPU_REDUCED");
      reduced && std::string(reduced) != "" && std::string(reduced) != "0")
    return;
  EXPECT_THROW(library.kernel("no_such_kernel"), RuntimeFailure);
}

}  // namespace
}  // namespace attnjit::runtime
