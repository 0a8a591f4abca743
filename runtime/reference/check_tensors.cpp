// Tensors of the GPU checkers (see check_tensors.hpp).
#include "runtime/reference/check_tensors.hpp"

#include <algorithm>

namespace attnjit::check_internal {
namespace {

std::size_t bytes_of(DLDataType dtype, const std::vector<std::int64_t>& s) {
  std::size_t n = 1;
  for (auto e : s) n *= static_cast<std::size_t>(e);
  return std::max<std::size_t>(n * (dtype.bits / 8), 16);
}

}  // namespace

MirroredTensor::MirroredTensor(DLDataType dtype, std::vector<std::int64_t> s)
    : host(dtype, s), device(bytes_of(dtype, s)), shape(std::move(s)) {
  device_view.data = reinterpret_cast<void*>(device.device_pointer());
  device_view.device = DLDevice{kDLCUDA, 0};
  device_view.ndim = static_cast<int>(shape.size());
  device_view.dtype = dtype;
  device_view.shape = shape.data();
}

// The host copy holds exactly numel elements; the device copy is at least 16 bytes.
std::size_t MirroredTensor::host_bytes() const {
  return static_cast<std::size_t>(host.numel()) * ((host.dl().dtype.bits + 7) / 8);
}

void MirroredTensor::upload() { device.copy_from_host(host.data(), host_bytes()); }

void MirroredTensor::download() { device.copy_to_host(host.data(), host_bytes()); }

void MirroredTensor::use_bshd_strides() {
  strides = {shape[2] * shape[1] * shape[3], shape[3], shape[1] * shape[3], 1};
  host.dl().strides = strides.data();
  device_view.strides = strides.data();
}

void MirroredTensor::poison() { device.fill_bytes(0xff); }

void fill_captured(HostTensor& t, ir::TensorDType dtype, const std::vector<std::int64_t>& shape, std::mt19937_64& rng,
                   const CapturedIds& ids) {
  std::normal_distribution<double> normal(0.0, 1.0);
  const std::int64_t n = t.numel();
  switch (ir::value_type_of(dtype)) {
    case ir::Type::Float:
      for (std::int64_t i = 0; i < n; ++i) t.set(i, 0.5 * normal(rng));
      break;
    case ir::Type::Int: {  // non-decreasing ids along the last axis, like document ids
      const std::int64_t row = shape.back();
      const double rate = ids.mean_document > 0 ? 1.0 / ids.mean_document : 4.0 / static_cast<double>(row);
      std::bernoulli_distribution new_id(std::min(1.0, rate));
      std::int64_t id = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        id = (i % row == 0) ? 0 : id + (new_id(rng) ? 1 : 0);
        const bool mixed = ids.out_of_order && (!ids.odd_rows_only || (i / row) % 2 == 1);
        t.set(i, static_cast<double>(mixed ? id % 2 : id));
      }
      break;
    }
    case ir::Type::Bool: {
      std::bernoulli_distribution coin(0.5);
      for (std::int64_t i = 0; i < n; ++i) t.set(i, coin(rng) ? 1 : 0);
      break;
    }
  }
}

void fill_normal(HostTensor& t, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
}

CapturedTensors make_captured_tensors(const Variant& variant, const ForwardProblem& problem, const Bindings& scalars,
                                      int head_dim, std::mt19937_64& rng) {
  CapturedTensors out{{}, scalars, scalars};
  for (const auto& decl : variant.tensors()) {
    auto t = std::make_unique<MirroredTensor>(to_dlpack_dtype(decl.dtype),
                                              covering_tensor_shape(variant, decl, problem, scalars, head_dim));
    fill_captured(
        t->host, decl.dtype, t->shape, rng,
        CapturedIds{problem.ids_out_of_order, problem.ids_out_of_order_odd_rows_only, problem.ids_mean_document});
    t->upload();
    out.host.set(decl.name, t->host.dl());
    out.device.set(decl.name, t->device_view);
    out.tensors[decl.name] = std::move(t);
  }
  return out;
}

}  // namespace attnjit::check_internal
