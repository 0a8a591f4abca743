// The CPU reference's inputs: 16-bit storage widened exactly, f64 and mixed dtypes, any
// strides, the scale option, RoPE and output-gate settings against the brute force, and
// binding / shape errors that name the offending tensor or parameter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/reference/reference.hpp"
#include "support/brute_force.hpp"

namespace attnjit {
namespace {

using brute::Shape;
constexpr double kInf = std::numeric_limits<double>::infinity();

// A copy of `values` in a fresh host tensor of `dtype` (values must be representable).
HostTensor tensor_of(DLDataType dtype, std::vector<std::int64_t> shape, const std::vector<double>& values) {
  HostTensor t(dtype, std::move(shape));
  for (std::size_t i = 0; i < values.size(); ++i) t.set(static_cast<std::int64_t>(i), values[i]);
  return t;
}

void expect_identical(const ReferenceResult& a, const ReferenceResult& b) {
  ASSERT_EQ(a.o.size(), b.o.size());
  ASSERT_EQ(a.lse.size(), b.lse.size());
  for (std::size_t i = 0; i < a.o.size(); ++i) ASSERT_EQ(a.o[i], b.o[i]) << "O element " << i;
  for (std::size_t i = 0; i < a.lse.size(); ++i) ASSERT_EQ(a.lse[i], b.lse[i]) << "LSE element " << i;
}

// Calls `fn`, expecting a UserError whose message contains every one of `needles`.
void expect_user_error(const std::function<void()>& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    const std::string what = e.what();
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' not in: " << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UserError, got another exception: " << e.what();
  }
}

// 16-bit storage is widened: the reference on bf16 / f16 inputs equals the reference on
// f32 inputs holding the same (rounded) values, bit for bit, and matches the brute force.
void check_widening(DLDataType dtype, unsigned seed) {
  const Shape shape{2, 8, 2, 7, 13, 16, 8};
  std::mt19937 rng(seed);
  const brute::Inputs in(shape, rng, dtype);
  const HostTensor q32 = tensor_of(dlpack_float32(), {2, 8, 7, 16}, in.q);
  const HostTensor k32 = tensor_of(dlpack_float32(), {2, 2, 13, 16}, in.k);
  const HostTensor v32 = tensor_of(dlpack_float32(), {2, 2, 13, 8}, in.v);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q32.get(i), in.q_t.get(i));

  HostTensor gate(dlpack_bfloat16(), {2, 8, 7});
  std::vector<double> g;
  for (std::int64_t i = 0; i < gate.numel(); ++i) {
    g.push_back(brute::round_to_bf16(std::uniform_real_distribution<double>(-3, 3)(rng)));
    gate.set(i, g.back());
  }
  for (const std::string name :
       {"dense", "causal_bottom_right", "alibi_window_softcap", "rope_causal", "gated_causal"}) {
    SCOPED_TRACE(name);
    const Variant v = presets::by_name(name);
    Bindings bindings;
    if (name == "alibi_window_softcap") bindings.set("window", 4).set("softcap", 12.5);
    if (name == "gated_causal") bindings.set("gate", gate.dl());
    const auto narrow = reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), bindings);
    const auto wide = reference_attention(v, q32.dl(), k32.dl(), v32.dl(), bindings);
    expect_identical(narrow, wide);
    // Mixed storage: Q narrow, K f32, V narrow.
    expect_identical(reference_attention(v, in.q_t.dl(), k32.dl(), in.v_t.dl(), bindings), wide);

    brute::Spec spec;
    if (name == "causal_bottom_right") spec.allowed = [](int, int, int q, int kv) { return kv <= q + 6; };
    if (name == "rope_causal" || name == "gated_causal") spec.allowed = [](int, int, int q, int kv) { return kv <= q; };
    if (name == "rope_causal") spec.rope = brute::RopeSpec{};
    if (name == "gated_causal") spec.gate_logit = [&](int b, int h, int q) { return g[(b * 8 + h) * 7 + q]; };
    if (name == "alibi_window_softcap") {
      spec.allowed = [](int, int, int q, int kv) { return kv <= q && q - kv < 4; };
      spec.modified = [](double s, int, int h, int q, int kv) {
        return 12.5 * std::tanh((s + std::pow(2.0, -(h + 1.0)) * (kv - q)) / 12.5);  // 2^(-8 (h+1) / 8)
      };
    }
    brute::expect_matches(narrow, brute::attention(in, spec), shape);
  }
}

TEST(ReferenceInputs, Bf16InputsEqualF32InputsHoldingTheSameValues) { check_widening(dlpack_bfloat16(), 11); }
TEST(ReferenceInputs, F16InputsEqualF32InputsHoldingTheSameValues) { check_widening(dlpack_float16(), 12); }

TEST(ReferenceInputs, F64InputsMatchBruteForce) {
  const Shape shape{1, 4, 2, 13, 7, 8, 16};
  std::mt19937 rng(13);
  const brute::Inputs in(shape, rng, dlpack_float64());
  const auto ref =
      reference_attention(presets::prefix_lm(), in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("prefix_len", 3));
  brute::Spec spec;
  spec.allowed = [](int, int, int q, int kv) { return kv < 3 || kv <= q; };
  brute::expect_matches(ref, brute::attention(in, spec), shape);
}

// A [B, S, H, D] buffer seen as [B, H, S, D] through strides gives the same result.
TEST(ReferenceInputs, StridedInputsEqualContiguousInputs) {
  const Shape shape{2, 4, 2, 9, 11, 8, 8};
  std::mt19937 rng(14);
  const brute::Inputs in(shape, rng);
  struct View {
    HostTensor storage;
    std::int64_t shape[4], strides[4];
    DLTensor dl;
  };
  auto transposed = [](const std::vector<double>& values, int B, int H, int S, int D) {
    auto* view = new View{HostTensor(dlpack_float32(), {B, S, H, D}), {B, H, S, D}, {S * H * D, D, H * D, 1}, {}};
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int s = 0; s < S; ++s)
          for (int d = 0; d < D; ++d)
            view->storage.set(((b * S + s) * H + h) * D + d, values[((b * H + h) * S + s) * D + d]);
    view->dl = view->storage.dl();
    view->dl.shape = view->shape;
    view->dl.strides = view->strides;
    return std::unique_ptr<View>(view);
  };
  const auto q = transposed(in.q, 2, 4, 9, 8);
  const auto k = transposed(in.k, 2, 2, 11, 8);
  const auto v = transposed(in.v, 2, 2, 11, 8);
  const Variant variant = presets::by_name("rope_causal");
  expect_identical(reference_attention(variant, q->dl, k->dl, v->dl),
                   reference_attention(variant, in.q_t.dl(), in.k_t.dl(), in.v_t.dl()));
}

TEST(ReferenceInputs, ExplicitScale) {
  const Shape shape{1, 4, 4, 7, 7, 16, 16};
  std::mt19937 rng(15);
  const brute::Inputs in(shape, rng);
  brute::Spec spec;
  spec.scale = 0.37;
  spec.allowed = [](int, int, int q, int kv) { return kv <= q; };
  brute::expect_matches(reference_attention(presets::causal(), in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), {},
                                            ReferenceOptions().with_scale(0.37)),
                        brute::attention(in, spec), shape);
}

// RoPE beyond the registry's default: partial rotary dim, other theta, interleaved layout.
TEST(ReferenceInputs, RopeSettingsMatchBruteForce) {
  struct Setting {
    RopeHook hook;
    brute::RopeSpec spec;
  };
  const std::vector<Setting> settings = {
      {{500.0, 4, RopeHook::Layout::Half}, {500.0, 4, false}},
      {{10000.0, 0, RopeHook::Layout::Interleaved}, {10000.0, 0, true}},
      {{2.0, 6, RopeHook::Layout::Interleaved}, {2.0, 6, true}},
  };
  unsigned seed = 16;
  for (const auto& s : settings) {
    for (const Shape& shape : {Shape{1, 4, 2, 7, 13, 8, 8}, Shape{2, 8, 1, 13, 7, 16, 8}}) {
      std::mt19937 rng(seed++);
      const brute::Inputs in(shape, rng);
      brute::Spec spec;
      spec.rope = s.spec;
      spec.allowed = [&](int, int, int q, int kv) { return kv <= q + shape.seq_k - shape.seq_q; };
      const Variant v = presets::rope(s.hook).then(presets::causal(presets::CausalAlignment::BottomRight));
      brute::expect_matches(reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl()), brute::attention(in, spec),
                            shape);
    }
  }
}

// An f32 output gate of rank 4: one gate per (b, h, q, d).
TEST(ReferenceInputs, Rank4OutputGateMatchesBruteForce) {
  const Shape shape{2, 4, 2, 7, 13, 8, 12};
  std::mt19937 rng(17);
  const brute::Inputs in(shape, rng);
  HostTensor gate(dlpack_float32(), {2, 4, 7, 12});
  std::vector<double> g;
  for (std::int64_t i = 0; i < gate.numel(); ++i) {
    g.push_back(static_cast<float>(std::uniform_real_distribution<double>(-3, 3)(rng)));
    gate.set(i, g.back());
  }
  const Variant v = presets::output_gate(OutputGateHook{"g4", ir::TensorDType::F32, 4});
  const auto ref = reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("g4", gate.dl()));
  const auto plain = brute::attention(in, {});
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 4; ++h)
      for (int q = 0; q < 7; ++q)
        for (int d = 0; d < 12; ++d) {
          const std::size_t i = ((b * 4 + h) * 7 + q) * 12 + d;
          const double want = plain.o[i] / (1.0 + std::exp(-g[i]));
          EXPECT_NEAR(ref.o_at(b, h, q, d), want, 1e-9 * std::max(1.0, std::fabs(want)));
        }
  for (std::size_t i = 0; i < plain.lse.size(); ++i)
    EXPECT_NEAR(ref.lse[i], plain.lse[i], 1e-9 * std::max(1.0, std::fabs(plain.lse[i])));
}

// ---- Errors: each is a UserError naming the tensor or parameter ----

struct SmallProblem {
  Shape shape{2, 4, 2, 5, 9, 8, 8};
  std::mt19937 rng{18};
  brute::Inputs in{shape, rng};
  ReferenceResult run(const Variant& v, const Bindings& b) const {
    return reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), b);
  }
};

TEST(ReferenceErrors, MissingParameter) {
  const SmallProblem p;
  expect_user_error([&] { p.run(presets::sliding_window(), {}); }, {"'window'", "not bound"});
  expect_user_error([&] { p.run(presets::by_name("alibi_window_softcap"), Bindings().set("window", 2)); },
                    {"'softcap'"});
}

TEST(ReferenceErrors, UnknownOrMistypedParameter) {
  const SmallProblem p;
  expect_user_error([&] { p.run(presets::sliding_window(), Bindings().set("window", 2).set("windw", 3)); },
                    {"'windw'"});
  expect_user_error([&] { p.run(presets::sliding_window(), Bindings().set("window", 2.5)); }, {"'window'", "int"});
}

TEST(ReferenceErrors, MissingTensor) {
  const SmallProblem p;
  expect_user_error([&] { p.run(presets::document(), {}); }, {"'doc'", "not bound"});
  expect_user_error([&] { p.run(presets::by_name("gated_causal"), {}); }, {"'gate'"});
}

TEST(ReferenceErrors, WrongTensorDtype) {
  const SmallProblem p;
  HostTensor doc_f32(dlpack_float32(), {2, 9});
  for (int i = 0; i < 18; ++i) doc_f32.set(i, 1.0);
  expect_user_error([&] { p.run(presets::document(), Bindings().set("doc", doc_f32.dl())); }, {"'doc'", "f32", "i32"});
  HostTensor gate_f32(dlpack_float32(), {2, 4, 5});
  for (int i = 0; i < 40; ++i) gate_f32.set(i, 0.5);
  expect_user_error([&] { p.run(presets::by_name("gated_causal"), Bindings().set("gate", gate_f32.dl())); },
                    {"'gate'", "bf16"});
}

TEST(ReferenceErrors, WrongTensorRank) {
  const SmallProblem p;
  HostTensor slopes(dlpack_float32(), {4, 1});
  for (int i = 0; i < 4; ++i) slopes.set(i, 0.5);
  expect_user_error([&] { p.run(presets::by_name("alibi_tensor"), Bindings().set("slopes", slopes.dl())); },
                    {"'slopes'", "rank"});
  HostTensor doc(dlpack_int32(), {9});
  for (int i = 0; i < 9; ++i) doc.set(i, 0);
  expect_user_error([&] { p.run(presets::document(), Bindings().set("doc", doc.dl())); }, {"'doc'", "rank"});
}

TEST(ReferenceErrors, OutOfBoundsTensorReads) {
  const SmallProblem p;                          // B = 2, Hq = 4, Sq = 5, Sk = 9
  HostTensor short_doc(dlpack_int32(), {2, 8});  // one key short
  for (int i = 0; i < 16; ++i) short_doc.set(i, 0);
  expect_user_error([&] { p.run(presets::document(), Bindings().set("doc", short_doc.dl())); },
                    {"'doc'", "out of bounds"});
  HostTensor one_batch_doc(dlpack_int32(), {1, 9});
  for (int i = 0; i < 9; ++i) one_batch_doc.set(i, 0);
  expect_user_error([&] { p.run(presets::document(), Bindings().set("doc", one_batch_doc.dl())); },
                    {"'doc'", "out of bounds"});
  HostTensor slopes(dlpack_float32(), {3});  // one head short
  for (int i = 0; i < 3; ++i) slopes.set(i, 0.5);
  expect_user_error([&] { p.run(presets::by_name("alibi_tensor"), Bindings().set("slopes", slopes.dl())); },
                    {"'slopes'", "out of bounds"});
  HostTensor bias(dlpack_float32(), {4, 12});  // needs Sq + Sk - 1 = 13
  for (int i = 0; i < 48; ++i) bias.set(i, 0.25);
  expect_user_error([&] { p.run(presets::relative_bias(), Bindings().set("rel_bias", bias.dl())); },
                    {"'rel_bias'", "out of bounds"});
}

TEST(ReferenceErrors, OutputGateShape) {
  const SmallProblem p;
  HostTensor gate(dlpack_bfloat16(), {2, 4, 4});  // Sq is 5
  for (int i = 0; i < 32; ++i) gate.set(i, 0.5);
  expect_user_error([&] { p.run(presets::by_name("gated_causal"), Bindings().set("gate", gate.dl())); },
                    {"'gate'", "shape"});
}

TEST(ReferenceErrors, BadAttentionInputs) {
  const SmallProblem p;
  const Variant v = presets::causal();
  HostTensor q3(dlpack_float32(), {2, 4, 5});
  expect_user_error([&] { reference_attention(v, q3.dl(), p.in.k_t.dl(), p.in.v_t.dl()); }, {"Q", "rank"});
  HostTensor k_int(dlpack_int32(), {2, 2, 9, 8});
  expect_user_error([&] { reference_attention(v, p.in.q_t.dl(), k_int.dl(), p.in.v_t.dl()); }, {"K", "i32"});
  HostTensor k3(dlpack_float32(), {2, 3, 9, 8}), v3(dlpack_float32(), {2, 3, 9, 8});  // 4 % 3 != 0
  expect_user_error([&] { reference_attention(v, p.in.q_t.dl(), k3.dl(), v3.dl()); }, {"heads_q"});
  HostTensor k_dim(dlpack_float32(), {2, 2, 9, 16});
  expect_user_error([&] { reference_attention(v, p.in.q_t.dl(), k_dim.dl(), p.in.v_t.dl()); }, {"shapes"});
}

// Fully masked rows stay O = 0, LSE = -inf even with a gate (sigmoid never revives them).
TEST(ReferenceInputs, GatedFullyMaskedRowsStayZero) {
  const Shape shape{1, 4, 4, 9, 4, 8, 8};
  std::mt19937 rng(19);
  const brute::Inputs in(shape, rng);
  HostTensor gate(dlpack_bfloat16(), {1, 4, 9});
  for (std::int64_t i = 0; i < gate.numel(); ++i) gate.set(i, 2.0);
  const Variant v = presets::output_gate().then(presets::causal(presets::CausalAlignment::BottomRight));
  const auto ref = reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("gate", gate.dl()));
  brute::Spec spec;
  spec.allowed = [](int, int, int q, int kv) { return kv <= q - 5; };
  spec.gate_logit = [](int, int, int) { return 2.0; };
  EXPECT_EQ(brute::expect_matches(ref, brute::attention(in, spec), shape), 4 * 5);
  EXPECT_EQ(ref.lse_at(0, 0, 0), -kInf);
}

}  // namespace
}  // namespace attnjit
