// A zero-filled device tensor and its DLPack view, for the GPU tests' argument checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "runtime/api/dlpack_view.hpp"
#include "runtime/driver/cuda_driver.hpp"

namespace attnjit {

struct DeviceTensor {
  std::vector<std::int64_t> shape;
  runtime::DeviceBuffer buffer;
  DLTensor view{};
  DeviceTensor(DLDataType dtype, std::vector<std::int64_t> s) : shape(std::move(s)), buffer(bytes(dtype, shape)) {
    buffer.fill_bytes(0);
    view.data = reinterpret_cast<void*>(buffer.device_pointer());
    view.device = {kDLCUDA, 0};
    view.ndim = static_cast<int>(shape.size());
    view.dtype = dtype;
    view.shape = shape.data();
  }
  static std::size_t bytes(DLDataType dtype, const std::vector<std::int64_t>& shape) {
    std::size_t n = dtype.bits / 8;
    for (const auto e : shape) n *= static_cast<std::size_t>(e);
    return n;
  }
};

}  // namespace attnjit
