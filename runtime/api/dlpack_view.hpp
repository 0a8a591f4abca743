// Helpers over DLPack tensors (non-owning DLTensor views): dtype names, shape and stride
// access, and element loads on the host with fp16/bf16 widened. attnjit's APIs take
// tensors as DLTensor so they interoperate with any framework without copies.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir.hpp"

namespace attnjit {

// "f32", "f16", "bf16", "f64", "i32", "i64", "u8", or a description of anything else.
std::string dlpack_dtype_name(DLDataType dtype);
bool dlpack_dtype_matches(DLDataType dtype, ir::TensorDType expected);
DLDataType to_dlpack_dtype(ir::TensorDType dtype);

// Strides in elements: the tensor's own, or the row-major ones when it has none.
std::vector<std::int64_t> dlpack_strides(const DLTensor& t);
std::vector<std::int64_t> dlpack_shape(const DLTensor& t);
std::string shape_string(const std::vector<std::int64_t>& shape);

// Reads one element of a host tensor as double (float types) or integer. No bounds checks.
double load_as_double(const DLTensor& t, std::int64_t offset_elements);
std::int64_t load_as_int(const DLTensor& t, std::int64_t offset_elements);

// A host tensor that owns its storage: handy for tests, examples and the CLI.
class HostTensor {
 public:
  HostTensor(DLDataType dtype, std::vector<std::int64_t> shape);
  // The DLTensor view points into this object: copies would alias the original, so none.
  HostTensor(const HostTensor&) = delete;
  HostTensor& operator=(const HostTensor&) = delete;
  HostTensor(HostTensor&& other) noexcept;
  HostTensor& operator=(HostTensor&&) = delete;
  DLTensor& dl() { return tensor_; }
  const DLTensor& dl() const { return tensor_; }
  void* data() { return tensor_.data; }
  std::int64_t numel() const;
  void set(std::int64_t i, double value);  // rounds to the storage dtype
  double get(std::int64_t i) const;

 private:
  static constexpr std::size_t kAlignment = 64;
  std::vector<std::int64_t> shape_;
  std::vector<unsigned char> storage_;  // tensor_.data: its first 64-byte aligned byte
  DLTensor tensor_{};
};

DLDataType dlpack_float32();
DLDataType dlpack_float64();
DLDataType dlpack_float16();
DLDataType dlpack_bfloat16();
DLDataType dlpack_int32();

// Rounding helpers shared by tests: float to fp16/bf16 bits (round to nearest even) and back.
std::uint16_t float_to_half_bits(float f);
float half_bits_to_float(std::uint16_t h);
std::uint16_t float_to_bf16_bits(float f);
float bf16_bits_to_float(std::uint16_t b);

}  // namespace attnjit
