// The judgement of the backward checker on host arrays (compare_gradient, compare_backward),
// its options' validation and its report, all without a GPU; check_backward itself needs one
// (tests/gpu) and here only has to fail cleanly.
#include "runtime/reference/backward_check.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/driver/cuda_driver.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {
namespace {

std::string user_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "no UserError";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A [B, S, H, D] bf16 buffer viewed as [B, H, S, D] through strides, holding `values`
// (contiguous [B, H, S, D]).
struct BshdTensor {
  BshdTensor(const std::vector<double>& values, std::int64_t b, std::int64_t h, std::int64_t s, std::int64_t d)
      : storage(dlpack_bfloat16(), {b, s, h, d}), shape{b, h, s, d}, strides{s * h * d, d, h * d, 1} {
    for (std::int64_t i = 0; i < storage.numel(); ++i) {
      const std::int64_t e = i % d, row = i / d % s, head = i / (d * s) % h, batch = i / (d * s * h);
      storage.set(((batch * s + row) * h + head) * d + e, values[static_cast<std::size_t>(i)]);
    }
    view = storage.dl();
    view.shape = shape.data();
    view.strides = strides.data();
  }
  HostTensor storage;
  std::vector<std::int64_t> shape, strides;
  DLTensor view{};
};

std::vector<double> ramp(std::size_t n, double scale) {
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = scale * (static_cast<double>(i % 13) - 6.0);  // exact in bf16
  return x;
}

TEST(BackwardCheck, CompareGradientAppliesTheTwiceNaiveRuleThroughStrides) {
  const std::vector<double> ref = ramp(2 * 3 * 5 * 4, 0.25);
  std::vector<double> naive = ref;
  naive[7] += 0x1p-7;  // naive error 2^-7
  std::vector<double> got = ref;
  got[20] += 1.5 * 0x1p-7;  // 1.5x the naive error (ref[20] = 0.25: exact in bf16)
  const BshdTensor within(got, 2, 3, 5, 4);
  GradientCheck r = compare_gradient("dq", within.view, ref, naive);
  EXPECT_TRUE(r.pass) << r.summary();
  EXPECT_EQ(r.max_error, 1.5 * 0x1p-7);
  EXPECT_EQ(r.naive_error, 0x1p-7);
  EXPECT_EQ(r.ratio(), 1.5);
  EXPECT_EQ(r.largest, 1.5);

  got[20] = ref[20] + 3 * 0x1p-7;  // 3x
  const BshdTensor beyond(got, 2, 3, 5, 4);
  r = compare_gradient("dq", beyond.view, ref, naive);
  EXPECT_FALSE(r.pass) << r.summary();
  EXPECT_TRUE(contains(r.summary(), "dq max_err=2.344e-02 naive_err=")) << r.summary();
  EXPECT_TRUE(contains(r.summary(), "ratio=3.00 FAIL")) << r.summary();

  // Where the naive run is exact, the floor decides.
  const BshdTensor exact(ref, 2, 3, 5, 4);
  EXPECT_TRUE(compare_gradient("dk", exact.view, ref, ref).pass);
  HostTensor close(dlpack_float32(), {static_cast<std::int64_t>(ref.size())});
  for (std::int64_t i = 0; i < close.numel(); ++i) close.set(i, ref[static_cast<std::size_t>(i)]);
  close.set(3, ref[3] + 0x1p-21);  // below the 1e-6 floor
  EXPECT_TRUE(compare_gradient("dk", close.dl(), ref, ref, 1e-6).pass);
  EXPECT_FALSE(compare_gradient("dk", close.dl(), ref, ref, 0.0).pass);
}

TEST(BackwardCheck, CompareGradientCountsNanInfinityAndWrongZeros) {
  const std::vector<double> ref = ramp(24, 1.0);
  HostTensor got(dlpack_float32(), {2, 12});
  for (std::int64_t i = 0; i < got.numel(); ++i) got.set(i, ref[static_cast<std::size_t>(i)]);
  EXPECT_TRUE(compare_gradient("dbias", got.dl(), ref, ref).pass);
  got.set(4, std::numeric_limits<double>::quiet_NaN());
  got.set(9, std::numeric_limits<double>::infinity());
  GradientCheck r = compare_gradient("dbias", got.dl(), ref, ref);
  EXPECT_EQ(r.bad_elements, 2);
  EXPECT_FALSE(r.pass);
  EXPECT_TRUE(contains(r.summary(), "bad=2")) << r.summary();
  EXPECT_EQ(r.max_error, 0.0);  // bad elements are counted, not measured

  // Elements that must be exactly zero: a tiny value there is bad even within the error rule.
  for (std::int64_t i = 0; i < got.numel(); ++i) got.set(i, ref[static_cast<std::size_t>(i)]);
  std::vector<double> ref_zero = ref;
  ref_zero[6] = ref_zero[7] = 0.0;
  got.set(6, 0.0);
  got.set(7, 1e-9);
  r = compare_gradient("dq", got.dl(), ref_zero, ref_zero, 1e-6, {6, 7});
  EXPECT_EQ(r.bad_elements, 1);
  EXPECT_FALSE(r.pass);

  EXPECT_TRUE(contains(user_error([&] { compare_gradient("dq", got.dl(), ramp(23, 1.0), ramp(23, 1.0)); }),
                       "gradient dq has shape [2, 12] (24 elements); the reference has 23"));
}

// compare_backward over a whole backward: the naive gradients stored in bf16 as if a kernel
// had produced them pass with ratio 1; a fully masked row's dQ must be exactly zero; a
// perturbed tensor gradient fails alone.
TEST(BackwardCheck, CompareBackwardJudgesEveryOutput) {
  const Variant variant = presets::relative_bias().then(presets::causal(presets::CausalAlignment::BottomRight));
  const int B = 1, H = 2, Sq = 12, Sk = 9, D = 8;  // queries 0..2 see no key
  HostTensor q(dlpack_bfloat16(), {B, H, Sq, D}), k(dlpack_bfloat16(), {B, H, Sk, D}),
      v(dlpack_bfloat16(), {B, H, Sk, D}), d_out(dlpack_bfloat16(), {B, H, Sq, D}),
      bias(dlpack_float32(), {H, Sq + Sk - 1});
  std::mt19937_64 rng(8);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (HostTensor* t : {&q, &k, &v, &d_out, &bias})
    for (std::int64_t i = 0; i < t->numel(); ++i) t->set(i, normal(rng));
  const Bindings bindings = Bindings().set("rel_bias", bias.dl());
  const auto ref = reference_attention_backward(variant, q.dl(), k.dl(), v.dl(), d_out.dl(), bindings);
  const auto naive = reference_attention_backward(variant, q.dl(), k.dl(), v.dl(), d_out.dl(), bindings,
                                                  ReferenceOptions().with_naive_precision(NaivePrecision::BF16));
  const auto masked = fully_masked_rows(variant, q.dl(), k.dl(), bindings);

  const auto store = [](const std::vector<double>& x, DLDataType dtype, std::vector<std::int64_t> shape) {
    HostTensor t(dtype, std::move(shape));
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, x[static_cast<std::size_t>(i)]);
    return t;
  };
  HostTensor dq = store(naive.dq, dlpack_bfloat16(), {B, H, Sq, D});
  const HostTensor dk = store(naive.dk, dlpack_bfloat16(), {B, H, Sk, D});
  const HostTensor dv = store(naive.dv, dlpack_bfloat16(), {B, H, Sk, D});
  HostTensor dbias = store(naive.tensors.at("rel_bias"), dlpack_float32(), {H, Sq + Sk - 1});
  HostGradients got{&dq.dl(), &dk.dl(), &dv.dl(), {{"rel_bias", &dbias.dl()}}};

  BackwardCheckResult r = compare_backward(got, ref, naive, masked);
  EXPECT_TRUE(r.pass) << r.summary();
  EXPECT_EQ(r.fully_masked_rows, 2 * 3);
  ASSERT_EQ(r.gradients.size(), 4u);
  for (const auto& g : r.gradients) {
    EXPECT_GT(g.naive_error, 0.0) << g.name;
    EXPECT_DOUBLE_EQ(g.ratio(), 1.0) << g.name;
  }
  EXPECT_EQ(r.at("drel_bias").name, "drel_bias");
  EXPECT_THROW(r.at("dgate"), InternalError);
  EXPECT_TRUE(contains(r.summary(), "; masked_rows=6 PASS")) << r.summary();

  dq.set(1 * Sq * D + 2 * D + 5, 0x1p-20);  // head 1, row 2 sees no key: its dQ must be 0
  r = compare_backward(got, ref, naive, masked);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.at("dq").bad_elements, 1);
  dq.set(1 * Sq * D + 2 * D + 5, 0.0);

  const std::int64_t i = 7;
  dbias.set(i, dbias.get(i) + 10 * r.at("drel_bias").naive_error + 1e-5);
  r = compare_backward(got, ref, naive, masked);
  EXPECT_FALSE(r.pass);
  EXPECT_TRUE(r.at("dq").pass && r.at("dk").pass && r.at("dv").pass);
  EXPECT_FALSE(r.at("drel_bias").pass);

  got.tensors["nope"] = &dbias.dl();
  EXPECT_TRUE(contains(user_error([&] { compare_backward(got, ref, naive, masked); }),
                       "the reference has no gradient for tensor 'nope'"));
}

TEST(BackwardCheck, OptionsNameTheTensorsWithAGradient) {
  const Variant bias_document = presets::relative_bias().then(presets::document());
  EXPECT_EQ(differentiable_tensors(bias_document), std::vector<std::string>{"rel_bias"});
  EXPECT_EQ(differentiable_tensors(presets::by_name("forget_gate")), std::vector<std::string>{"log_fgate"});
  EXPECT_TRUE(differentiable_tensors(presets::causal()).empty());
  EXPECT_EQ(BackwardCheckOptions().with_all_tensor_gradients(bias_document).tensor_gradients,
            std::vector<std::string>{"rel_bias"});

  BackwardCheckOptions().with_tensor_gradient("rel_bias").validate(bias_document);
  std::string e = user_error([&] { BackwardCheckOptions().with_tensor_gradient("doc").validate(bias_document); });
  EXPECT_TRUE(contains(e, "no gradient for tensor 'doc'")) << e;
  EXPECT_TRUE(contains(e, "the tensors with a gradient are rel_bias")) << e;
  e = user_error([&] { BackwardCheckOptions().with_tensor_gradient("x").validate(presets::causal()); });
  EXPECT_TRUE(contains(e, "reads no float tensor")) << e;
  e = user_error([&] {
    BackwardCheckOptions().with_tensor_gradient("rel_bias").with_tensor_gradient("rel_bias").validate(bias_document);
  });
  EXPECT_TRUE(contains(e, "asked for twice")) << e;
  e = user_error([&] { BackwardCheckOptions().with_runs(0).validate(bias_document); });
  EXPECT_TRUE(contains(e, "runs = 0")) << e;
}

TEST(BackwardCheck, WithoutAGpuItFailsCleanlyAfterCheckingTheOptions) {
  // A wrong tensor name is refused before the GPU is touched, GPU or not.
  const std::string e = user_error([] {
    check_backward(presets::relative_bias(), CompileOptions().with_head_dim(64), ForwardProblem{1, 2, 2, 64, 64}, {}, 1,
                   BackwardCheckOptions().with_tensor_gradient("nope"));
  });
  EXPECT_TRUE(contains(e, "'nope'")) << e;
  const auto& driver = runtime::Driver::instance();
  if (driver.available() && driver.device_count() > 0) GTEST_SKIP() << "this machine has a GPU";
  EXPECT_THROW(
      check_backward(presets::causal(), CompileOptions().with_head_dim(64), ForwardProblem{1, 2, 2, 64, 64}, {}, 1),
      RuntimeFailure);
  // Knobs in the options are the backward's (no forward template has row_pad): the GPU's absence
  // is still what stops it, not a knob error.
  EXPECT_THROW(check_backward(presets::causal(), CompileOptions().with_head_dim(64).with_knobs(Knobs{{"row_pad", 8}}),
                              ForwardProblem{1, 2, 2, 64, 64}, {}, 1),
               RuntimeFailure);
}

}  // namespace
}  // namespace attnjit
