// GPU tests of devices and bounds: a captured-tensor read outside its extent is reported
// after the launch, naming the tensor, the dimension, the index and the extent; a variant
// whose reads stay in range is never reported, even where the host could not prove it and
// the device checked (a T5-style where); a tensor on another device than the kernel's, and a
// device that does not exist, are UserErrors naming both. Skips with a message without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/attention.hpp"
#include "runtime/api/read_bounds.hpp"
#include "runtime/driver/cuda_driver.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;

class BoundsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& driver = runtime::Driver::instance();
    if (!driver.available() || driver.device_count() == 0)
      GTEST_SKIP() << "no GPU: " << (driver.available() ? "no CUDA device" : driver.unavailable_reason());
  }
};

struct DeviceTensor {
  std::vector<std::int64_t> shape;
  runtime::DeviceBuffer buffer;
  DLTensor view{};
  DeviceTensor(std::vector<std::int64_t> s, DLDataType dtype) : shape(std::move(s)), buffer(bytes_of(shape, dtype)) {
    buffer.fill_bytes(0);
    view.data = reinterpret_cast<void*>(buffer.device_pointer());
    view.device = DLDevice{kDLCUDA, 0};
    view.ndim = static_cast<int>(shape.size());
    view.dtype = dtype;
    view.shape = shape.data();
  }
  static std::size_t bytes_of(const std::vector<std::int64_t>& s, DLDataType dtype) {
    std::size_t n = dtype.bits / 8;
    for (auto e : s) n *= static_cast<std::size_t>(e);
    return n;
  }
};

constexpr DLDataType kBF16{kDLBfloat, 16, 1};
constexpr DLDataType kF32{kDLFloat, 32, 1};

struct Qkvo {
  DeviceTensor q, k, v, o;
  Qkvo(int b, int h, int sq, int sk, int d)
      : q({b, h, sq, d}, kBF16), k({b, h, sk, d}, kBF16), v({b, h, sk, d}, kBF16), o({b, h, sq, d}, kBF16) {}
};

std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST_F(BoundsGpu, AReadOutsideTheExtentIsReportedAfterTheLaunch) {
  const Kernel kernel = compile(presets::relative_bias(), CompileOptions().with_head_dim(64));
  const int S = 300;
  Qkvo t(1, 2, S, S, 64);
  DeviceTensor table({2, 2 * S - 1 - 100}, kF32);  // 100 entries short: large kv - q reads past the end
  Bindings b;
  b.set("rel_bias", table.view);
  kernel.forward(t.q.view, t.k.view, t.v.view, t.o.view, nullptr, b);
  const std::string e = user_error_of([&] { kernel.synchronize(); });
  EXPECT_NE(e.find("'rel_bias'"), std::string::npos) << e;
  EXPECT_NE(e.find("dimension 1"), std::string::npos) << e;
  EXPECT_NE(e.find("whose extent is 499"), std::string::npos) << e;
  // Reported once: the record is cleared, and a call with a table that fits is clean.
  EXPECT_NO_THROW(kernel.synchronize());
  DeviceTensor fits({2, 2 * S - 1}, kF32);
  b.set("rel_bias", fits.view);
  kernel.forward(t.q.view, t.k.view, t.v.view, t.o.view, nullptr, b);
  EXPECT_NO_THROW(kernel.synchronize());
}

TEST_F(BoundsGpu, AnInRangeWhereIsNeverReportedThoughTheDeviceChecks) {
  const Tensor bucket_bias("bucket_bias", ir::TensorDType::F32, 1);
  const Expr d = kv - q;
  const Variant v = Variant("t5").with_score_mod(score + bucket_bias(where(d < 32 && d > -32, d + 32, 63)));
  const Kernel kernel = compile(v, CompileOptions().with_head_dim(64));
  const int S = 777;
  Qkvo t(1, 2, S, S, 64);
  DeviceTensor table({64}, kF32);
  Bindings b;
  b.set("bucket_bias", table.view);
  // The host cannot prove it (the untaken branch's range leaves the table), so the device checks.
  ASSERT_TRUE(first_unproven_read(v, ProblemShape{1, 2, 2, S, S}, 64, b).has_value());
  for (int i = 0; i < 3; ++i) kernel.forward(t.q.view, t.k.view, t.v.view, t.o.view, nullptr, b);
  EXPECT_NO_THROW(kernel.synchronize());
}

TEST_F(BoundsGpu, ATensorOnAnotherDeviceOrAMissingDeviceIsAUserError) {
  const Kernel kernel = compile(presets::causal(), CompileOptions().with_head_dim(64));
  EXPECT_EQ(kernel.device(), 0);
  Qkvo t(1, 2, 64, 64, 64);
  DLTensor k_elsewhere = t.k.view;
  k_elsewhere.device.device_id = 1;
  const std::string e = user_error_of([&] { kernel.forward(t.q.view, k_elsewhere, t.v.view, t.o.view, nullptr); });
  EXPECT_NE(e.find("tensor k is on CUDA device 1"), std::string::npos) << e;
  EXPECT_NE(e.find("device 0"), std::string::npos) << e;
  const int count = runtime::Driver::instance().device_count();
  const std::string missing =
      user_error_of([&] { compile(presets::causal(), CompileOptions().with_head_dim(64).with_device(count)); });
  EXPECT_NE(missing.find(std::to_string(count)), std::string::npos) << missing;
}

}  // namespace
}  // namespace attnjit
