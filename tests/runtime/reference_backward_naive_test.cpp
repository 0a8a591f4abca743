// The naive same-precision emulation of the reference backward (ReferenceOptions::naive):
// the yardstick of the 2x rule for gradients. Its error against the fp64 backward must be
// nonzero, small next to the gradient's scale, smaller in fp16 than in bf16, and far below
// that of a gradient that is wrong; it rounds its inputs to the storage dtype, gives fully
// masked rows exactly zero gradients and is reproducible at a fixed thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/backward_check.hpp"
#include "runtime/reference/reference.hpp"
#include "runtime/reference/reference_backward.hpp"

namespace attnjit {
namespace {

struct Shape {
  int batch, heads_q, heads_kv, seq_q, seq_k, dim;
};

// Q, K, V, dO of `dtype` drawn N(0, 1), the relative-bias table 0.5 N(0, 1) in f32.
struct Inputs {
  Inputs(const Shape& s, DLDataType dtype, unsigned seed)
      : q(dtype, {s.batch, s.heads_q, s.seq_q, s.dim}),
        k(dtype, {s.batch, s.heads_kv, s.seq_k, s.dim}),
        v(dtype, {s.batch, s.heads_kv, s.seq_k, s.dim}),
        d_out(dtype, {s.batch, s.heads_q, s.seq_q, s.dim}),
        rel_bias(dlpack_float32(), {s.heads_q, s.seq_q + s.seq_k - 1}) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (HostTensor* t : {&q, &k, &v, &d_out})
      for (std::int64_t i = 0; i < t->numel(); ++i) t->set(i, normal(rng));
    for (std::int64_t i = 0; i < rel_bias.numel(); ++i) rel_bias.set(i, 0.5 * normal(rng));
    bindings.set("rel_bias", rel_bias.dl());
  }
  ReferenceGradients run(const Variant& variant, NaivePrecision naive, int threads = 0) const {
    return reference_attention_backward(variant, q.dl(), k.dl(), v.dl(), d_out.dl(), bindings,
                                        ReferenceOptions().with_naive_precision(naive).with_threads(threads));
  }

  HostTensor q, k, v, d_out, rel_bias;
  Bindings bindings;
};

double max_abs(const std::vector<double>& x) {
  double m = 0.0;
  for (double e : x) m = std::max(m, std::fabs(e));
  return m;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// A contiguous f64 host tensor holding `values` in `shape`, for compare_gradient.
HostTensor as_tensor(const std::vector<double>& values, std::vector<std::int64_t> shape) {
  HostTensor t(dlpack_float64(), std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, values[static_cast<std::size_t>(i)]);
  return t;
}

const Variant& biased_causal() {
  static const Variant v = presets::relative_bias().then(presets::causal(presets::CausalAlignment::BottomRight));
  return v;
}

TEST(ReferenceBackwardNaive, ErrorIsNonzeroSmallAndSmallerInFp16) {
  const Shape s{1, 4, 2, 37, 45, 32};  // GQA 2:1, odd lengths
  const Inputs bf16(s, dlpack_bfloat16(), 1), fp16(s, dlpack_float16(), 1);
  const auto ref_bf16 = bf16.run(biased_causal(), NaivePrecision::None);
  const auto low_bf16 = bf16.run(biased_causal(), NaivePrecision::BF16);
  const auto ref_fp16 = fp16.run(biased_causal(), NaivePrecision::None);
  const auto low_fp16 = fp16.run(biased_causal(), NaivePrecision::FP16);
  const auto check = [](const char* what, const std::vector<double>& ref, const std::vector<double>& low,
                        double relative_bound) {
    const double err = max_diff(low, ref), scale = max_abs(ref);
    EXPECT_GT(scale, 0.0) << what;
    EXPECT_GT(err, 0.0) << what << ": the emulation must differ from fp64";
    EXPECT_LT(err, relative_bound * scale) << what << ": err " << err << " vs scale " << scale;
    return err;
  };
  // bf16 keeps 8 significant bits (2^-8 = 0.4% relative), fp16 11.
  const double dq_b = check("dq bf16", ref_bf16.dq, low_bf16.dq, 0.02);
  const double dk_b = check("dk bf16", ref_bf16.dk, low_bf16.dk, 0.02);
  const double dv_b = check("dv bf16", ref_bf16.dv, low_bf16.dv, 0.02);
  const double dq_h = check("dq fp16", ref_fp16.dq, low_fp16.dq, 0.004);
  const double dk_h = check("dk fp16", ref_fp16.dk, low_fp16.dk, 0.004);
  const double dv_h = check("dv fp16", ref_fp16.dv, low_fp16.dv, 0.004);
  // fp32 sums of an fp32 dS: far more accurate than the 16-bit outputs.
  check("drel_bias bf16", ref_bf16.tensors.at("rel_bias"), low_bf16.tensors.at("rel_bias"), 0.01);
  check("drel_bias fp16", ref_fp16.tensors.at("rel_bias"), low_fp16.tensors.at("rel_bias"), 0.002);
  // Different inputs (the rounding differs), but the same distribution: fp16 errs less.
  EXPECT_LT(dq_h, dq_b);
  EXPECT_LT(dk_h, dk_b);
  EXPECT_LT(dv_h, dv_b);
}

// The 2x rule is only useful when a wrong gradient fails it by a wide margin: the naive run
// itself passes, a gradient computed with a 2% wrong softmax scale or without the bias's
// gradient fails.
TEST(ReferenceBackwardNaive, WrongGradientsFailTheTwiceNaiveRule) {
  const Shape s{1, 2, 2, 33, 40, 64};
  const Inputs in(s, dlpack_bfloat16(), 2);
  const auto ref = in.run(biased_causal(), NaivePrecision::None);
  const auto low = in.run(biased_causal(), NaivePrecision::BF16);
  const auto wrong_scale = reference_attention_backward(
      biased_causal(), in.q.dl(), in.k.dl(), in.v.dl(), in.d_out.dl(), in.bindings,
      ReferenceOptions().with_scale(1.02 / std::sqrt(64.0)).with_naive_precision(NaivePrecision::BF16));
  const auto no_bias = reference_attention_backward(presets::causal(presets::CausalAlignment::BottomRight), in.q.dl(),
                                                    in.k.dl(), in.v.dl(), in.d_out.dl(), {},
                                                    ReferenceOptions().with_naive_precision(NaivePrecision::BF16));
  const std::vector<std::int64_t> q_shape = {1, 2, 33, 64}, kv_shape = {1, 2, 40, 64};
  for (const auto& [name, shape, r, n, w1, w2] :
       {std::tuple{"dq", q_shape, &ref.dq, &low.dq, &wrong_scale.dq, &no_bias.dq},
        std::tuple{"dk", kv_shape, &ref.dk, &low.dk, &wrong_scale.dk, &no_bias.dk},
        std::tuple{"dv", kv_shape, &ref.dv, &low.dv, &wrong_scale.dv, &no_bias.dv}}) {
    SCOPED_TRACE(name);
    const HostTensor naive_out = as_tensor(*n, shape), scaled = as_tensor(*w1, shape), unbiased = as_tensor(*w2, shape);
    const GradientCheck itself = compare_gradient(name, naive_out.dl(), *r, *n);
    EXPECT_TRUE(itself.pass) << itself.summary();
    EXPECT_DOUBLE_EQ(itself.ratio(), 1.0);
    const GradientCheck bad_scale = compare_gradient(name, scaled.dl(), *r, *n);
    EXPECT_FALSE(bad_scale.pass) << bad_scale.summary();
    EXPECT_GT(bad_scale.ratio(), 3.0) << bad_scale.summary();
    const GradientCheck bad_bias = compare_gradient(name, unbiased.dl(), *r, *n);
    EXPECT_FALSE(bad_bias.pass) << bad_bias.summary();
    EXPECT_GT(bad_bias.ratio(), 10.0) << bad_bias.summary();
  }
}

// Inputs are read rounded to the storage dtype: f64 inputs give the result of their bf16
// rounding, bit for bit. Outputs are representable in bf16; tensor gradients stay fp32.
TEST(ReferenceBackwardNaive, RoundsInputsAndOutputsToTheStorageDtype) {
  const Shape s{2, 2, 1, 19, 23, 16};
  const Inputs wide(s, dlpack_float64(), 3);
  Inputs narrow(s, dlpack_bfloat16(), 99);
  for (const auto& [from, to] :
       {std::pair{&wide.q, &narrow.q}, std::pair{&wide.k, &narrow.k}, std::pair{&wide.v, &narrow.v},
        std::pair{&wide.d_out, &narrow.d_out}, std::pair{&wide.rel_bias, &narrow.rel_bias}})
    for (std::int64_t i = 0; i < from->numel(); ++i) to->set(i, from->get(i));
  const auto a = wide.run(biased_causal(), NaivePrecision::BF16, 2);
  const auto b = narrow.run(biased_causal(), NaivePrecision::BF16, 2);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  EXPECT_EQ(a.tensors, b.tensors);
  const auto representable = [](const std::vector<double>& x) {
    return std::all_of(x.begin(), x.end(), [](double e) {
      return static_cast<double>(bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(e)))) == e;
    });
  };
  EXPECT_TRUE(representable(a.dq));
  EXPECT_TRUE(representable(a.dk));
  EXPECT_TRUE(representable(a.dv));
  EXPECT_FALSE(representable(a.tensors.at("rel_bias")));  // fp32 sums, not rounded
  for (double e : a.tensors.at("rel_bias")) EXPECT_EQ(static_cast<double>(static_cast<float>(e)), e);
}

// Rows that see no key get exactly zero dQ in the emulation too; a fixed thread count gives
// the same bits run to run.
TEST(ReferenceBackwardNaive, FullyMaskedRowsAreZeroAndRunsRepeat) {
  const Shape s{1, 2, 2, 30, 21, 16};  // bottom-right causal: queries 0..8 see no key
  const Inputs in(s, dlpack_float16(), 4);
  const auto a = in.run(biased_causal(), NaivePrecision::FP16, 3);
  const auto b = in.run(biased_causal(), NaivePrecision::FP16, 3);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.tensors, b.tensors);
  const auto masked = fully_masked_rows(biased_causal(), in.q.dl(), in.k.dl(), in.bindings);
  ASSERT_EQ(masked.size(), 2u);
  for (std::size_t pair = 0; pair < masked.size(); ++pair) {
    ASSERT_EQ(masked[pair].size(), 9u);
    for (const int row : masked[pair])
      for (int d = 0; d < s.dim; ++d) EXPECT_EQ(a.dq[(pair * s.seq_q + row) * s.dim + d], 0.0);
  }
  EXPECT_GT(max_abs(a.dq), 0.0);
}

// RoPE and the output gate have a naive path too (rotations in fp32, rounded; gate math in
// fp32): close to fp64, not equal.
TEST(ReferenceBackwardNaive, RopeAndGateStayClose) {
  const Variant variant = presets::rope()
                              .then(presets::output_gate(OutputGateHook{"gate", ir::TensorDType::F32, 3}))
                              .then(presets::relative_bias())
                              .then(presets::causal());
  const Shape s{1, 2, 1, 17, 17, 16};
  Inputs in(s, dlpack_bfloat16(), 5);
  HostTensor gate(dlpack_float32(), {1, 2, 17});
  for (std::int64_t i = 0; i < gate.numel(); ++i) gate.set(i, 0.1 * static_cast<double>(i % 7) - 0.3);
  in.bindings.set("gate", gate.dl());
  const auto ref = in.run(variant, NaivePrecision::None);
  const auto low = in.run(variant, NaivePrecision::BF16);
  for (const auto& [what, r, n] :
       {std::tuple{"dq", &ref.dq, &low.dq}, std::tuple{"dk", &ref.dk, &low.dk}, std::tuple{"dv", &ref.dv, &low.dv},
        std::tuple{"d_gate", &ref.d_gate, &low.d_gate}}) {
    const double err = max_diff(*n, *r);
    EXPECT_GT(err, 0.0) << what;
    EXPECT_LT(err, 0.03 * max_abs(*r)) << what;
  }
}

}  // namespace
}  // namespace attnjit
