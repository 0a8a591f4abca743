// What the GPU checkers (forward_check, backward_check) share: a host tensor mirrored on the
// device, and random contents for inputs and captured tensors. Internal to runtime/reference.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compiler/ir.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/forward_check.hpp"

namespace attnjit::check_internal {

// A host tensor and its device copy, with a DLTensor view of the device copy. Views point
// into the object: it is neither copied nor moved.
struct MirroredTensor {
  HostTensor host;
  runtime::DeviceBuffer device;
  std::vector<std::int64_t> shape, strides;
  DLTensor device_view{};

  MirroredTensor(DLDataType dtype, std::vector<std::int64_t> s);
  MirroredTensor(const MirroredTensor&) = delete;
  MirroredTensor& operator=(const MirroredTensor&) = delete;

  std::size_t host_bytes() const;
  void upload();    // host to device
  void download();  // device to host
  // Views the same storage as [B, S, H, D] memory: strides of the BSHD layout (rank 4 only).
  void use_bshd_strides();
  // Every byte of the device copy set to 0xff: NaN in bf16, fp16 and f32, so an element the
  // kernel does not write cannot pass.
  void poison();
};

// How integer captured tensors (document ids) are filled: non-decreasing along the last axis,
// a new id after each position with probability 1 / mean_document (0: 4 / row length);
// out_of_order: those ids mod 2 (runs of alternating ids), in every row or the odd ones.
struct CapturedIds {
  bool out_of_order = false;
  bool odd_rows_only = false;
  int mean_document = 0;
};

// Random contents for a captured tensor of this dtype: floats 0.5 * N(0, 1); integers as `ids`
// says; bools fair coins.
void fill_captured(HostTensor& t, ir::TensorDType dtype, const std::vector<std::int64_t>& shape, std::mt19937_64& rng,
                   const CapturedIds& ids = {});

// N(0, 1) in every element (rounded to the tensor's dtype).
void fill_normal(HostTensor& t, std::mt19937_64& rng);

// The variant's captured tensors for one problem, random (fill_captured), shaped to cover
// every read (covering_tensor_shape), uploaded; bound in `host` and `device` on top of the
// scalars.
struct CapturedTensors {
  std::map<std::string, std::unique_ptr<MirroredTensor>> tensors;
  Bindings host, device;
};
CapturedTensors make_captured_tensors(const Variant& variant, const ForwardProblem& problem, const Bindings& scalars,
                                      int head_dim, std::mt19937_64& rng);

}  // namespace attnjit::check_internal
