// Kernel::forward on host tensors runs the CPU backend, whether or not there is a GPU; where
// there is none, compile() makes a CPU-only Kernel, and what needs the CUDA unit says so.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>

#include "compiler/error.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/cpu/cpu_attention.hpp"
#include "runtime/cpu/cpu_check.hpp"
#include "runtime/driver/cuda_driver.hpp"

namespace attnjit {
namespace {

HostTensor random_tensor(DLDataType dtype, std::vector<std::int64_t> shape, std::mt19937& rng) {
  HostTensor t(dtype, std::move(shape));
  std::normal_distribution<double> normal(0.0, 1.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
  return t;
}

bool gpu_here() {
  const auto& driver = runtime::Driver::instance();
  return driver.available() && driver.device_count() > 0;
}

template <typename Error>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(KernelCpuRouting, HostTensorsRunTheCpuBackendBitForBit) {
  const Variant v = presets::by_name("alibi_causal");
  const Kernel kernel = compile(v, CompileOptions().with_head_dim(64));
  EXPECT_EQ(kernel.has_gpu_unit(), gpu_here());
  // The backend itself passes the 2x rule here (GQA 4:1, odd lengths)...
  const ForwardCheckResult r =
      check_cpu_forward(kernel.cpu(), ForwardProblem{1, 8, 2, 77, 131}, 64, dlpack_bfloat16(), {}, 3);
  EXPECT_TRUE(r.pass) << r.summary();
  // ...and Kernel::forward on host tensors is that backend: the same bits as calling it directly.
  std::mt19937 rng(11);
  const auto bf16 = dlpack_bfloat16();
  HostTensor q = random_tensor(bf16, {1, 8, 77, 64}, rng), k = random_tensor(bf16, {1, 2, 131, 64}, rng),
             val = random_tensor(bf16, {1, 2, 131, 64}, rng);
  HostTensor o1(bf16, {1, 8, 77, 64}), o2(bf16, {1, 8, 77, 64}), lse1(dlpack_float32(), {1, 8, 77}),
      lse2(dlpack_float32(), {1, 8, 77});
  kernel.forward(q.dl(), k.dl(), val.dl(), o1.dl(), &lse1.dl());
  kernel.cpu().forward(q.dl(), k.dl(), val.dl(), o2.dl(), &lse2.dl());
  EXPECT_EQ(std::memcmp(o1.data(), o2.data(), 1 * 8 * 77 * 64 * 2), 0);
  EXPECT_EQ(std::memcmp(lse1.data(), lse2.data(), 1 * 8 * 77 * 4), 0);
  EXPECT_NE(o1.get(0), 0.0);
  // A block mask belongs to the CUDA path.
  BlockMask none;
  EXPECT_NE(error_of<UserError>([&] {
              kernel.forward(q.dl(), k.dl(), val.dl(), o1.dl(), nullptr, {}, nullptr, 0.0, &none);
            }).find("takes no block_mask"),
            std::string::npos);
}

TEST(KernelCpuRouting, WithoutAGpuWhatNeedsTheCudaUnitSaysWhy) {
  if (gpu_here()) GTEST_SKIP() << "a GPU is here: compile() builds the CUDA unit";
  const Kernel kernel = compile(presets::causal(), CompileOptions().with_head_dim(64));
  EXPECT_FALSE(kernel.has_gpu_unit());
  for (const std::string& message :
       {error_of<RuntimeFailure>([&] { kernel.prepared(); }),
        error_of<RuntimeFailure>([&] { kernel.build_block_mask(1, 1, 64, 64, {}, nullptr); }),
        error_of<RuntimeFailure>([&] { kernel.has_block_mask(); })}) {
    EXPECT_NE(message.find("compiled without a GPU"), std::string::npos) << message;
    EXPECT_NE(message.find("host tensors"), std::string::npos) << message;
  }
  // A CUDA tensor given to a CPU-only kernel: refused before anything is read.
  std::mt19937 rng(5);
  HostTensor q = random_tensor(dlpack_bfloat16(), {1, 1, 8, 64}, rng);
  DLTensor on_gpu = q.dl();
  on_gpu.device.device_type = kDLCUDA;
  const std::string m = error_of<RuntimeFailure>([&] { kernel.forward(on_gpu, on_gpu, on_gpu, on_gpu, nullptr); });
  EXPECT_NE(m.find("forward on CUDA tensors"), std::string::npos) << m;
  kernel.synchronize();  // nothing to wait for; must not need a driver
}

}  // namespace
}  // namespace attnjit
