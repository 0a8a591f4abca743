// Whether the GPU tests can run here: a CUDA driver that sees a device; else why not, for the
// skip message.
#pragma once

#include <string>

#include "runtime/driver/cuda_driver.hpp"

namespace attnjit {

inline bool gpu_present(std::string& why) {
  const auto& driver = runtime::Driver::instance();
  if (driver.available() && driver.device_count() > 0) return true;
  why = driver.available() ? "no CUDA device" : driver.unavailable_reason();
  return false;
}

}  // namespace attnjit
