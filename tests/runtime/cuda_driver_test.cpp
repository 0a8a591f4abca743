// Tests for runtime/cuda_driver that hold on every machine: with no driver (CI, this CPU box)
// the Driver reports why and every GPU operation fails with that reason; with a driver the
// device is described sensibly. Kernel loading and launching is in tests/gpu/driver_test.cpp.
#include "runtime/driver/cuda_driver.hpp"

#include <gtest/gtest.h>

#include "compiler/error.hpp"

namespace attnjit::runtime {
namespace {

TEST(CudaDriver, ArchStringsFollowComputeCapability) {
  EXPECT_EQ(arch_for_compute_capability(8, 0), "sm_80");
  EXPECT_EQ(arch_for_compute_capability(8, 6), "sm_86");
  EXPECT_EQ(arch_for_compute_capability(8, 9), "sm_89");
  EXPECT_EQ(arch_for_compute_capability(9, 0), "sm_90a");
}

TEST(CudaDriver, GpuOperationsWithoutADriverNameTheReason) {
  const Driver& driver = Driver::instance();
  if (driver.available()) {
    EXPECT_TRUE(driver.unavailable_reason().empty());
    EXPECT_GE(driver.version(), 12000);
    ASSERT_GT(driver.device_count(), 0);
    DeviceContext context(0);
    EXPECT_GT(context.properties().sm_count, 0);
    EXPECT_GT(context.properties().max_shared_memory_per_block_optin, 48 * 1024);
    EXPECT_EQ(context.properties().arch.rfind("sm_", 0), 0u);
    EXPECT_THROW(DeviceContext(driver.device_count()), UserError);
    return;
  }
  EXPECT_FALSE(driver.unavailable_reason().empty());
  EXPECT_EQ(driver.version(), 0);
  EXPECT_EQ(driver.device_count(), 0);
  try {
    DeviceContext context(0);
    FAIL() << "expected RuntimeFailure";
  } catch (const RuntimeFailure& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no CUDA driver: " + driver.unavailable_reason()), std::string::npos) << message;
    EXPECT_NE(message.find("run on a machine with an NVIDIA GPU"), std::string::npos) << message;
  }
  EXPECT_THROW(DeviceBuffer(16), RuntimeFailure);
  EXPECT_THROW(Stream(), RuntimeFailure);
  EXPECT_THROW(Event(), RuntimeFailure);
}

TEST(CudaDriver, LaunchConfigValidates) {
  EXPECT_NO_THROW(LaunchConfig{}.set_grid(128, 16, 2).set_block(128).validate());
  EXPECT_THROW(LaunchConfig{}.set_grid(0).validate(), UserError);
  EXPECT_THROW(LaunchConfig{}.set_block(64, 32).validate(), UserError);
  EXPECT_THROW(LaunchConfig{}.set_grid(1, 70000).validate(), UserError);
}

TEST(CudaDriver, LoadingNonCubinBytesIsAUserErrorBeforeTouchingTheDriver) {
  EXPECT_THROW(LoadedLibrary("not a cubin"), UserError);
}

}  // namespace
}  // namespace attnjit::runtime
