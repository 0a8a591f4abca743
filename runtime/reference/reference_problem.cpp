// Shared pieces of the CPU references (see reference_problem.hpp).
#include "runtime/reference/reference_problem.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>
#include <thread>

#include "compiler/error.hpp"
#include "runtime/api/dlpack_view.hpp"

namespace attnjit::reference_internal {
namespace {

bool is_float_dtype(DLDataType d) {
  return d.lanes == 1 && ((d.code == kDLFloat && (d.bits == 16 || d.bits == 32 || d.bits == 64)) ||
                          (d.code == kDLBfloat && d.bits == 16));
}

[[noreturn]] void out_of_bounds(const std::string& name, std::span<const std::int64_t> idx, const DLTensor& t) {
  std::vector<std::int64_t> where(idx.begin(), idx.end());
  throw UserError(
      fmt::format("tensor '{}' read out of bounds at index {} (shape {}); make the tensor cover every "
                  "position the variant reads",
                  name, shape_string(where), shape_string(dlpack_shape(t))));
}

}  // namespace

void check_input(const DLTensor& t, const char* name) {
  if (t.device.device_type != kDLCPU)
    throw UserError(fmt::format("reference input {} is not in host memory (device type {}); copy it to the CPU first",
                                name, static_cast<int>(t.device.device_type)));
  if (t.ndim != 4)
    throw UserError(fmt::format("reference input {} has rank {} (shape {}); expected rank 4 [batch, heads, seq, dim]",
                                name, t.ndim, shape_string(dlpack_shape(t))));
  if (!is_float_dtype(t.dtype))
    throw UserError(
        fmt::format("reference input {} has dtype {}; allowed: f64, f32, f16, bf16", name, dlpack_dtype_name(t.dtype)));
}

Problem check_problem(const Variant& variant, const DLTensor& q, const DLTensor& k, const DLTensor& v,
                      const Bindings& bindings, double scale_option) {
  check_input(q, "Q");
  check_input(k, "K");
  check_input(v, "V");
  Problem p;
  p.batch = static_cast<int>(q.shape[0]), p.heads_q = static_cast<int>(q.shape[1]);
  p.seq_q = static_cast<int>(q.shape[2]), p.dim = static_cast<int>(q.shape[3]);
  p.heads_kv = static_cast<int>(k.shape[1]), p.seq_k = static_cast<int>(k.shape[2]);
  p.dim_v = static_cast<int>(v.shape[3]);
  if (k.shape[0] != p.batch || v.shape[0] != p.batch || v.shape[1] != p.heads_kv || v.shape[2] != p.seq_k ||
      k.shape[3] != p.dim)
    throw UserError(
        fmt::format("shapes do not match: Q {}, K {}, V {}; expected Q [B, Hq, Sq, D], K [B, Hkv, Sk, D], "
                    "V [B, Hkv, Sk, Dv]",
                    shape_string(dlpack_shape(q)), shape_string(dlpack_shape(k)), shape_string(dlpack_shape(v))));
  if (p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0)
    throw UserError(
        fmt::format("heads_q = {} is not a multiple of heads_kv = {}; GQA needs whole groups", p.heads_q, p.heads_kv));
  if (p.batch <= 0 || p.seq_q <= 0 || p.seq_k <= 0 || p.dim <= 0 || p.dim_v <= 0)
    throw UserError(fmt::format("empty problem: Q {}, K {}, V {}; every extent must be at least 1",
                                shape_string(dlpack_shape(q)), shape_string(dlpack_shape(k)),
                                shape_string(dlpack_shape(v))));
  check_bindings(variant, bindings);
  p.scale = scale_option != 0.0 ? scale_option : 1.0 / std::sqrt(static_cast<double>(p.dim));
  // RoPE positions move by the offset parameter's bound value (Q rows and K rows alike).
  if (variant.rope() && !variant.rope()->offset_param.empty())
    p.rope_offset = bound_int(bindings, variant.rope()->offset_param);
  return p;
}

ir::EvalEnv make_env(const Variant& variant, const Problem& problem, const Bindings& bindings) {
  ir::EvalEnv env;
  env.q_len = problem.seq_q;
  env.kv_len = problem.seq_k;
  env.num_heads = problem.heads_q;
  for (const auto& p : variant.params())
    env.params[p.name] = p.type == ir::Type::Int ? ir::Value::of_int(bound_int(bindings, p.name))
                                                 : ir::Value::of_float(bound_float(bindings, p.name));
  const auto* tensors = &bindings.tensors();
  env.read_tensor = [tensors](const ir::Node& read, std::span<const std::int64_t> idx) {
    return read_bound_tensor(tensors->at(read.name), read, idx);
  };
  return env;
}

std::optional<DLTensor> bound_gate(const Variant& variant, const Problem& problem, const Bindings& bindings) {
  if (!variant.output_gate()) return std::nullopt;
  const DLTensor gate = bindings.tensors().at(variant.output_gate()->tensor);
  std::vector<std::int64_t> expected = {problem.batch, problem.heads_q, problem.seq_q};
  if (gate.ndim == 4) expected.push_back(problem.dim_v);
  if (dlpack_shape(gate) != expected)
    throw UserError(fmt::format("output gate tensor '{}' has shape {}; expected {}", variant.output_gate()->tensor,
                                shape_string(dlpack_shape(gate)), shape_string(expected)));
  return gate;
}

std::int64_t contiguous_offset(const DLTensor& t, const std::string& name, std::span<const std::int64_t> idx) {
  std::int64_t offset = 0;
  for (int d = 0; d < t.ndim; ++d) {
    const std::int64_t i = idx[static_cast<std::size_t>(d)];
    if (i < 0 || i >= t.shape[d]) out_of_bounds(name, idx, t);
    offset = offset * t.shape[d] + i;
  }
  return offset;
}

ir::Value read_bound_tensor(const DLTensor& t, const ir::Node& read, std::span<const std::int64_t> idx) {
  const auto strides = dlpack_strides(t);
  std::int64_t offset = 0;
  for (int d = 0; d < t.ndim; ++d) {
    const std::int64_t i = idx[static_cast<std::size_t>(d)];
    if (i < 0 || i >= t.shape[d]) out_of_bounds(read.name, idx, t);
    offset += i * strides[static_cast<std::size_t>(d)];
  }
  switch (read.type) {
    case ir::Type::Float: return ir::Value::of_float(load_as_double(t, offset));
    case ir::Type::Int: return ir::Value::of_int(ir::wrap_int32(load_as_int(t, offset)));
    case ir::Type::Bool: return ir::Value::of_bool(load_as_int(t, offset) != 0);
  }
  return {};
}

double round_to_naive_storage(NaivePrecision naive, double x) {
  const float f = static_cast<float>(x);
  if (naive == NaivePrecision::BF16) return bf16_bits_to_float(float_to_bf16_bits(f));
  if (naive == NaivePrecision::FP16) return half_bits_to_float(float_to_half_bits(f));
  return x;
}

std::vector<double> widen_rows(const DLTensor& t, int b, int h, int seq, int dim) {
  const auto s = dlpack_strides(t);
  std::vector<double> rows(static_cast<std::size_t>(seq) * dim);
  for (int i = 0; i < seq; ++i)
    for (int d = 0; d < dim; ++d)
      rows[static_cast<std::size_t>(i) * dim + d] = load_as_double(t, b * s[0] + h * s[1] + i * s[2] + d * s[3]);
  return rows;
}

void rotate_rows(std::span<double> rows, int seq, int dim, const RopeHook& rope, std::int64_t position_offset,
                 NaivePrecision naive, bool inverse) {
  const int rd = rope.rotary_dim == 0 ? dim : rope.rotary_dim;
  if (rd > dim)
    throw UserError(
        fmt::format("rope rotary_dim {} exceeds the head dimension {}; use 0 (whole head) or <= {}", rd, dim, dim));
  for (int i = 0; i < seq; ++i) {
    double* row = &rows[static_cast<std::size_t>(i) * dim];
    const double pos = static_cast<double>(i + position_offset);
    for (int j = 0; j < rd / 2; ++j) {
      double angle = pos * std::pow(rope.theta, -2.0 * j / rd);
      if (naive != NaivePrecision::None) {
        const float w = static_cast<float>(std::exp2(j * (-2.0 * std::log2(rope.theta) / rd)));
        angle = static_cast<float>(static_cast<float>(pos) * w);
      }
      if (inverse) angle = -angle;
      const int a = rope.layout == RopeHook::Layout::Half ? j : 2 * j;
      const int c = rope.layout == RopeHook::Layout::Half ? j + rd / 2 : 2 * j + 1;
      const double x = row[a], y = row[c];
      row[a] = round_to_naive_storage(naive, x * std::cos(angle) - y * std::sin(angle));
      row[c] = round_to_naive_storage(naive, x * std::sin(angle) + y * std::cos(angle));
    }
  }
}

std::vector<double> load_rows(const DLTensor& t, int b, int h, int seq, int dim, const std::optional<RopeHook>& rope,
                              std::int64_t position_offset, NaivePrecision naive) {
  std::vector<double> rows = widen_rows(t, b, h, seq, dim);
  if (rope) rotate_rows(rows, seq, dim, *rope, position_offset, naive, false);
  return rows;
}

int worker_count(int requested, int items) {
  const int threads = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(threads, 1, std::max(1, items));
}

void for_each_item(int items, int workers, Assignment assignment, const std::function<void(int, int)>& body) {
  std::atomic<int> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const auto worker = [&](int w) {
    try {
      if (assignment == Assignment::Dynamic) {
        for (int i = next++; i < items && !stop; i = next++) body(w, i);
      } else {
        for (int i = w; i < items && !stop; i += workers) body(w, i);
      }
    } catch (...) {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      stop = true;
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(worker, w);
  worker(0);
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace attnjit::reference_internal
