// Example 04: train a learnable relative-position bias with attnjit's forward and backward.
//
// The variant reads a captured f32 table, bias[h, q - kv + kv_len - 1] (T5-style relative
// bias, one row per head). A hidden "true" table makes the target output; the learned table
// starts at zero and follows plain SGD on loss = mean((O - O_target)^2). Each step runs the
// forward, forms dO = dLoss/dO, and runs the backward with the gradient of the table
// (BackwardOptions::with_tensor_gradient, returned in fp32).
//
// On a GPU both passes are attnjit kernels (bf16, D = 64; the device memory here stands in
// for your framework's tensors, passed as DLPack views). Without one the CPU reference
// forward and backward (fp64) take their place, with the same variant and the same loop.
// Exits 1 unless the loss fell to under a quarter of its start.
#include <attnjit.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/reference_backward.hpp"

namespace {

using namespace attnjit;

constexpr int kBatch = 1, kHeads = 2, kSeq = 32, kDim = 64, kTable = 2 * kSeq - 1;
constexpr int kSteps = 40;
constexpr double kLearningRate = 40.0;

// One training problem: Q, K, V fixed, the true and the learned bias tables.
struct Problem {
  HostTensor q{dlpack_bfloat16(), {kBatch, kHeads, kSeq, kDim}};
  HostTensor k{dlpack_bfloat16(), {kBatch, kHeads, kSeq, kDim}};
  HostTensor v{dlpack_bfloat16(), {kBatch, kHeads, kSeq, kDim}};
  HostTensor true_bias{dlpack_float32(), {kHeads, kTable}};
  HostTensor bias{dlpack_float32(), {kHeads, kTable}};  // learned, starts at 0

  Problem() {
    std::mt19937_64 rng(4);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (HostTensor* t : {&q, &k, &v})
      for (std::int64_t i = 0; i < t->numel(); ++i) t->set(i, normal(rng));
    // The hidden table: each head prefers nearby keys (an ALiBi-like slope) plus noise.
    for (int h = 0; h < kHeads; ++h)
      for (int r = 0; r < kTable; ++r) {
        const int distance = std::abs(r - (kSeq - 1));
        true_bias.set(h * kTable + r, -0.3 * (h + 1) * std::sqrt(static_cast<double>(distance)) + 0.3 * normal(rng));
        bias.set(h * kTable + r, 0.0);
      }
  }
};

Variant relative_bias_variant() {
  using namespace attnjit::dsl::vars;
  const Tensor bias("bias", ir::TensorDType::F32, 2);
  return Variant("learned_relative_bias").with_score_mod(score + bias(h, q - kv + kv_len - 1));
}

// loss = mean((O - target)^2); fills dO = dloss/dO.
double loss_and_grad(const std::vector<double>& o, const std::vector<double>& target, std::vector<double>& d_out) {
  double loss = 0.0;
  const double n = static_cast<double>(o.size());
  d_out.resize(o.size());
  for (std::size_t i = 0; i < o.size(); ++i) {
    const double diff = o[i] - target[i];
    loss += diff * diff / n;
    d_out[i] = 2.0 * diff / n;
  }
  return loss;
}

void sgd_step(HostTensor& bias, const std::vector<double>& grad) {
  for (std::int64_t i = 0; i < bias.numel(); ++i)
    bias.set(i, bias.get(i) - kLearningRate * grad[static_cast<std::size_t>(i)]);
}

// The CPU path: reference forward and backward in fp64.
std::vector<double> train_on_cpu(const Variant& variant, Problem& p) {
  const auto forward = [&](const HostTensor& table) {
    const Bindings b = Bindings().set("bias", table.dl());
    return reference_attention(variant, p.q.dl(), p.k.dl(), p.v.dl(), b).o;
  };
  const std::vector<double> target = forward(p.true_bias);
  std::vector<double> losses, d_out;
  HostTensor d_out_tensor(dlpack_float64(), {kBatch, kHeads, kSeq, kDim});
  for (int step = 0; step < kSteps; ++step) {
    losses.push_back(loss_and_grad(forward(p.bias), target, d_out));
    for (std::int64_t i = 0; i < d_out_tensor.numel(); ++i) d_out_tensor.set(i, d_out[static_cast<std::size_t>(i)]);
    const ReferenceGradients g = reference_attention_backward(variant, p.q.dl(), p.k.dl(), p.v.dl(), d_out_tensor.dl(),
                                                              Bindings().set("bias", p.bias.dl()));
    sgd_step(p.bias, g.tensors.at("bias"));
  }
  return losses;
}

// Device memory with a DLTensor view, filled from / read into a HostTensor of the same shape.
struct DeviceTensor {
  std::vector<std::int64_t> shape;
  std::size_t bytes;
  runtime::DeviceBuffer buffer;
  DLTensor view{};

  explicit DeviceTensor(const HostTensor& like)
      : shape(like.dl().shape, like.dl().shape + like.dl().ndim),
        bytes(static_cast<std::size_t>(like.numel()) * (like.dl().dtype.bits / 8)),
        buffer(bytes) {
    view.data = reinterpret_cast<void*>(buffer.device_pointer());
    view.device = DLDevice{kDLCUDA, 0};
    view.ndim = like.dl().ndim;
    view.dtype = like.dl().dtype;
    view.shape = shape.data();
  }
  void upload(HostTensor& t) const { buffer.copy_from_host(t.data(), bytes); }
  void download(HostTensor& t) const { buffer.copy_to_host(t.data(), bytes); }
};

std::vector<double> values(const HostTensor& t) {
  std::vector<double> out(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) out[static_cast<std::size_t>(i)] = t.get(i);
  return out;
}

// The GPU path: attnjit's forward and backward kernels, bf16, the table and its gradient f32.
std::vector<double> train_on_gpu(const Variant& variant, Problem& p) {
  const Kernel kernel = compile(variant, CompileOptions().with_head_dim(kDim).with_dtype(ElementType::BF16));
  HostTensor o(dlpack_bfloat16(), {kBatch, kHeads, kSeq, kDim}), d_out(dlpack_bfloat16(), {kBatch, kHeads, kSeq, kDim});
  HostTensor lse(dlpack_float32(), {kBatch, kHeads, kSeq}), d_bias(dlpack_float32(), {kHeads, kTable});
  const DeviceTensor q(p.q), k(p.k), v(p.v), o_dev(o), lse_dev(lse), d_out_dev(d_out), dq(p.q), dk(p.k), dv(p.v),
      bias(p.bias), d_bias_dev(d_bias);
  q.upload(p.q);
  k.upload(p.k);
  v.upload(p.v);
  const Bindings bindings = Bindings().set("bias", bias.view);
  const auto forward = [&](HostTensor& table) {
    bias.upload(table);
    kernel.forward(q.view, k.view, v.view, o_dev.view, &lse_dev.view, bindings);
    o_dev.download(o);  // synchronous: waits for the kernel
    return values(o);
  };
  const std::vector<double> target = forward(p.true_bias);
  const BackwardOptions options =
      BackwardOptions().with_deterministic(true).with_tensor_gradient("bias", d_bias_dev.view);
  std::vector<double> losses, grad;
  for (int step = 0; step < kSteps; ++step) {
    losses.push_back(loss_and_grad(forward(p.bias), target, grad));
    for (std::int64_t i = 0; i < d_out.numel(); ++i) d_out.set(i, grad[static_cast<std::size_t>(i)]);
    d_out_dev.upload(d_out);
    kernel.backward(q.view, k.view, v.view, o_dev.view, lse_dev.view, d_out_dev.view, dq.view, dk.view, dv.view,
                    bindings, nullptr, options);
    d_bias_dev.download(d_bias);
    sgd_step(p.bias, values(d_bias));
  }
  return losses;
}

}  // namespace

int main() {
  const Variant variant = relative_bias_variant();
  Problem problem;
  const auto& driver = runtime::Driver::instance();
  const bool gpu = driver.available() && driver.device_count() > 0;
  std::printf("training bias[h, q - kv + kv_len - 1] (%d heads x %d entries), B=%d S=%d D=%d, %d SGD steps on %s\n",
              kHeads, kTable, kBatch, kSeq, kDim, kSteps,
              gpu ? "the GPU (attnjit kernels, bf16)" : "the CPU (reference forward and backward, fp64)");
  if (!gpu) std::printf("(no GPU: %s)\n", driver.available() ? "no CUDA device" : driver.unavailable_reason().c_str());
  try {
    const std::vector<double> losses = gpu ? train_on_gpu(variant, problem) : train_on_cpu(variant, problem);
    for (std::size_t step = 0; step < losses.size(); ++step)
      if (step % 5 == 0 || step + 1 == losses.size()) std::printf("step %2zu  loss %.6f\n", step, losses[step]);
    const bool fell = losses.back() < 0.25 * losses.front();
    std::printf("loss %s: %.6f -> %.6f\n", fell ? "fell" : "did NOT fall enough", losses.front(), losses.back());
    return fell ? 0 : 1;
  } catch (const Error& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
