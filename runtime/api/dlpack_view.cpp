// DLPack helpers (see dlpack_view.hpp).
#include "runtime/api/dlpack_view.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "compiler/error.hpp"

namespace attnjit {

std::string dlpack_dtype_name(DLDataType d) {
  if (d.lanes != 1) return fmt::format("vector dtype (lanes={})", d.lanes);
  if (d.code == kDLFloat && d.bits == 32) return "f32";
  if (d.code == kDLFloat && d.bits == 64) return "f64";
  if (d.code == kDLFloat && d.bits == 16) return "f16";
  if (d.code == kDLBfloat && d.bits == 16) return "bf16";
  if (d.code == kDLInt && d.bits == 32) return "i32";
  if (d.code == kDLInt && d.bits == 64) return "i64";
  if (d.code == kDLUInt && d.bits == 8) return "u8";
  return fmt::format("dtype(code={}, bits={})", d.code, d.bits);
}

DLDataType to_dlpack_dtype(ir::TensorDType t) {
  switch (t) {
    case ir::TensorDType::F32: return DLDataType{kDLFloat, 32, 1};
    case ir::TensorDType::F16: return DLDataType{kDLFloat, 16, 1};
    case ir::TensorDType::BF16: return DLDataType{kDLBfloat, 16, 1};
    case ir::TensorDType::I32: return DLDataType{kDLInt, 32, 1};
    case ir::TensorDType::I64: return DLDataType{kDLInt, 64, 1};
    case ir::TensorDType::U8: return DLDataType{kDLUInt, 8, 1};
  }
  throw InternalError("unknown tensor dtype");
}

bool dlpack_dtype_matches(DLDataType d, ir::TensorDType expected) {
  const DLDataType e = to_dlpack_dtype(expected);
  return d.code == e.code && d.bits == e.bits && d.lanes == e.lanes;
}

DLDataType dlpack_float32() { return DLDataType{kDLFloat, 32, 1}; }
DLDataType dlpack_float64() { return DLDataType{kDLFloat, 64, 1}; }
DLDataType dlpack_float16() { return DLDataType{kDLFloat, 16, 1}; }
DLDataType dlpack_bfloat16() { return DLDataType{kDLBfloat, 16, 1}; }
DLDataType dlpack_int32() { return DLDataType{kDLInt, 32, 1}; }

std::vector<std::int64_t> dlpack_shape(const DLTensor& t) { return {t.shape, t.shape + t.ndim}; }

std::vector<std::int64_t> dlpack_strides(const DLTensor& t) {
  if (t.strides) return {t.strides, t.strides + t.ndim};
  std::vector<std::int64_t> s(static_cast<std::size_t>(t.ndim));
  std::int64_t running = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    s[static_cast<std::size_t>(i)] = running;
    running *= t.shape[i];
  }
  return s;
}

std::string shape_string(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::uint16_t float_to_half_bits(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u));
  if (mag >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (mag < 0x38800000u) {                                                    // subnormal or zero in fp16
    float af;
    std::memcpy(&af, &mag, 4);
    const float scaled = af * 16777216.0f;  // 2^24: subnormal steps become integers
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(scaled)));
  }
  const std::uint32_t rounding = 0xfffu + ((mag >> 13) & 1u);
  mag += rounding;
  return static_cast<std::uint16_t>(sign | ((mag - 0x38000000u) >> 13));
}

float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float out;
  if (exp == 0) {
    out = std::ldexp(static_cast<float>(man), -24);
    return sign ? -out : out;
  }
  const std::uint32_t bits =
      exp == 31 ? (sign | 0x7f800000u | (man << 13)) : (sign | ((exp + 112u) << 23) | (man << 13));
  std::memcpy(&out, &bits, 4);
  return out;
}

std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

float bf16_bits_to_float(std::uint16_t b) {
  const std::uint32_t x = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

double load_as_double(const DLTensor& t, std::int64_t i) {
  const auto* base = static_cast<const unsigned char*>(t.data) + t.byte_offset;
  const DLDataType d = t.dtype;
  if (d.code == kDLFloat && d.bits == 32) return reinterpret_cast<const float*>(base)[i];
  if (d.code == kDLFloat && d.bits == 64) return reinterpret_cast<const double*>(base)[i];
  if (d.code == kDLFloat && d.bits == 16) return half_bits_to_float(reinterpret_cast<const std::uint16_t*>(base)[i]);
  if (d.code == kDLBfloat && d.bits == 16) return bf16_bits_to_float(reinterpret_cast<const std::uint16_t*>(base)[i]);
  return static_cast<double>(load_as_int(t, i));
}

std::int64_t load_as_int(const DLTensor& t, std::int64_t i) {
  const auto* base = static_cast<const unsigned char*>(t.data) + t.byte_offset;
  const DLDataType d = t.dtype;
  if (d.code == kDLInt && d.bits == 32) return reinterpret_cast<const std::int32_t*>(base)[i];
  if (d.code == kDLInt && d.bits == 64) return reinterpret_cast<const std::int64_t*>(base)[i];
  if (d.code == kDLUInt && d.bits == 8) return base[i];
  throw InternalError(fmt::format("load_as_int on dtype {}", dlpack_dtype_name(d)));
}

HostTensor::HostTensor(DLDataType dtype, std::vector<std::int64_t> shape) : shape_(std::move(shape)) {
  // 64-byte aligned, as framework tensors are (PyTorch's CPU allocator aligns to 64): kernels
  // that read rows in place see the alignment they will see in use.
  storage_.resize(static_cast<std::size_t>(numel()) * ((dtype.bits + 7) / 8) + kAlignment - 1);
  const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
  tensor_.data = storage_.data() + (kAlignment - address % kAlignment) % kAlignment;
  tensor_.device = DLDevice{kDLCPU, 0};
  tensor_.ndim = static_cast<int>(shape_.size());
  tensor_.dtype = dtype;
  tensor_.shape = shape_.data();
  tensor_.strides = nullptr;
  tensor_.byte_offset = 0;
}

HostTensor::HostTensor(HostTensor&& other) noexcept
    : shape_(std::move(other.shape_)), storage_(std::move(other.storage_)), tensor_(other.tensor_) {
  tensor_.shape = shape_.data();  // (a vector move keeps its buffer, so tensor_.data stays valid)
  other.tensor_ = DLTensor{};
}

std::int64_t HostTensor::numel() const {
  std::int64_t n = 1;
  for (auto s : shape_) n *= s;
  return n;
}

void HostTensor::set(std::int64_t i, double value) {
  const DLDataType d = tensor_.dtype;
  auto* base = static_cast<unsigned char*>(tensor_.data);
  if (d.code == kDLFloat && d.bits == 32)
    reinterpret_cast<float*>(base)[i] = static_cast<float>(value);
  else if (d.code == kDLFloat && d.bits == 64)
    reinterpret_cast<double*>(base)[i] = value;
  else if (d.code == kDLFloat && d.bits == 16)
    reinterpret_cast<std::uint16_t*>(base)[i] = float_to_half_bits(static_cast<float>(value));
  else if (d.code == kDLBfloat && d.bits == 16)
    reinterpret_cast<std::uint16_t*>(base)[i] = float_to_bf16_bits(static_cast<float>(value));
  else if (d.code == kDLInt && d.bits == 32)
    reinterpret_cast<std::int32_t*>(base)[i] = static_cast<std::int32_t>(value);
  else if (d.code == kDLInt && d.bits == 64)
    reinterpret_cast<std::int64_t*>(base)[i] = static_cast<std::int64_t>(value);
  else if (d.code == kDLUInt && d.bits == 8)
    base[i] = static_cast<unsigned char>(value);
  else
    throw InternalError(fmt::format("HostTensor::set on dtype {}", dlpack_dtype_name(d)));
}

double HostTensor::get(std::int64_t i) const { return load_as_double(tensor_, i); }

}  // namespace attnjit
