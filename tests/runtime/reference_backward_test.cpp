// The CPU reference backward against central finite differences of the forward reference in
// fp64: the scalar loss sum(O * dO) differentiated with respect to Q, K, V, every captured
// float tensor score_mod reads, and the output gate, for every registry preset (RoPE and
// the gate included), the compositions the forward tests iterate, a variant full of kinks
// (where, min, max, abs, floor, int, a score-dependent mask) and RoPE with an offset,
// partial rotary dim and interleaved layout. Shapes are small and odd: MQA, GQA 2:1, MHA,
// Sq < Sk and Sq > Sk (fully masked rows), head_dim_v != head_dim.
//
// Inputs sit on a coarse binary grid, so every finite-difference step is exact in the
// tensor's dtype: f64 and f32 use a plain central difference with a tiny step; 16-bit
// tensors (the bf16 gate) need a larger step and use Richardson extrapolation over h and
// h/2 (error O(h^4)).
#include "runtime/reference/reference_backward.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "compiler/eval.hpp"
#include "dsl/presets.hpp"
#include "runtime/api/dlpack_view.hpp"
#include "runtime/reference/reference.hpp"

namespace attnjit {
namespace {

using namespace attnjit::dsl::vars;

struct Shape {
  int batch, heads_q, heads_kv, seq_q, seq_k, dim, dim_v;
  std::string str() const {
    return "B=" + std::to_string(batch) + " Hq=" + std::to_string(heads_q) + " Hkv=" + std::to_string(heads_kv) +
           " Sq=" + std::to_string(seq_q) + " Sk=" + std::to_string(seq_k) + " D=" + std::to_string(dim) +
           " Dv=" + std::to_string(dim_v);
  }
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> list = {
      {1, 2, 1, 5, 7, 8, 8},  // MQA, Sq < Sk
      {2, 4, 2, 7, 9, 8, 8},  // GQA 2:1
      {1, 2, 2, 9, 7, 8, 6},  // MHA, Sq > Sk: bottom-right masks leave rows fully masked; Dv != D
  };
  return list;
}

double on_grid(double x, double grid) { return std::round(x / grid) * grid; }

// One problem: f64 Q, K, V, dO and the variant's captured tensors and parameters, bound.
struct Case {
  Case(const Variant& variant, const Shape& s, unsigned seed)
      : variant(variant),
        shape(s),
        q(dlpack_float64(), {s.batch, s.heads_q, s.seq_q, s.dim}),
        k(dlpack_float64(), {s.batch, s.heads_kv, s.seq_k, s.dim}),
        v(dlpack_float64(), {s.batch, s.heads_kv, s.seq_k, s.dim_v}),
        d_out(dlpack_float64(), {s.batch, s.heads_q, s.seq_q, s.dim_v}) {
    std::mt19937 rng(seed);
    const auto fill = [&](HostTensor& t, double bound, double grid) {
      std::uniform_real_distribution<double> dist(-bound, bound);
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        double x = 0.0;
        while (x == 0.0) x = on_grid(dist(rng), grid);
        t.set(i, x);
      }
    };
    fill(q, 2.0, 0x1p-20);
    fill(k, 2.0, 0x1p-20);
    fill(v, 1.0, 0x1p-20);
    fill(d_out, 1.0, 0x1p-20);
    const std::map<std::string, int> ints = {{"window", 3}, {"prefix_len", 2}, {"stride", 3},
                                             {"local", 2},  {"group", 3},      {"pos", 5}};
    for (const auto& p : variant.params()) {
      if (p.name == "softcap")
        bindings.set(p.name, 2.5);  // small: tanh is far from linear
      else if (ints.count(p.name))
        bindings.set(p.name, ints.at(p.name));
      else
        ADD_FAILURE() << "no value for parameter " << p.name;
    }
    for (const auto& decl : variant.tensors()) {
      HostTensor& t = tensors.try_emplace(decl.name, to_dlpack_dtype(decl.dtype), tensor_shape(decl)).first->second;
      if (decl.name == "doc") {  // sorted document ids along the keys
        for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, static_cast<double>((i % s.seq_k) / 3));
      } else {
        fill(t, 1.5, 0x1p-5);  // exact in bf16, and x +- 2^-6 too
      }
      bindings.set(decl.name, t.dl());
    }
  }
  Case(const Case&) = delete;

  std::vector<std::int64_t> tensor_shape(const TensorDecl& d) const {
    const Shape& s = shape;
    if (d.name == "doc") return {s.batch, s.seq_k};
    if (d.name == "slopes") return {s.heads_q};
    if (d.name == "rel_bias") return {s.heads_q, s.seq_q + s.seq_k - 1};
    if (d.name == "log_fgate") return {s.batch, s.heads_q, s.seq_k};
    if (d.name == "gate" && d.rank == 3) return {s.batch, s.heads_q, s.seq_q};
    if (d.name == "gate" && d.rank == 4) return {s.batch, s.heads_q, s.seq_q, s.dim_v};
    ADD_FAILURE() << "the test has no shape for tensor " << d.name;
    return {};
  }

  double loss() const {  // sum(O * dO) over the forward reference
    const auto ref = reference_attention(variant, q.dl(), k.dl(), v.dl(), bindings, ReferenceOptions().with_threads(1));
    double sum = 0.0;
    for (std::int64_t i = 0; i < d_out.numel(); ++i) sum += ref.o[static_cast<std::size_t>(i)] * d_out.get(i);
    return sum;
  }
  ReferenceGradients gradients(int threads = 0) const {
    return reference_attention_backward(variant, q.dl(), k.dl(), v.dl(), d_out.dl(), bindings,
                                        ReferenceOptions().with_threads(threads));
  }

  Variant variant;
  Shape shape;
  HostTensor q, k, v, d_out;
  std::map<std::string, HostTensor> tensors;
  Bindings bindings;
};

bool is_16_bit(const DLTensor& t) { return t.dtype.bits == 16; }

// d loss / d element i of t. The steps are exact in t's dtype (checked).
double finite_difference(const Case& c, HostTensor& t, std::int64_t i, double step) {
  const double x = t.get(i);
  const auto central = [&](double h) {
    t.set(i, x + h);
    EXPECT_EQ(t.get(i), x + h) << "step not exact";
    const double up = c.loss();
    t.set(i, x - h);
    EXPECT_EQ(t.get(i), x - h) << "step not exact";
    const double down = c.loss();
    return (up - down) / (2 * h);
  };
  double d = 0.0;
  if (is_16_bit(t.dl()))
    d = (4 * central(step / 2) - central(step)) / 3;  // Richardson: the h^2 terms cancel
  else
    d = central(step);
  t.set(i, x);
  return d;
}

struct Steps {
  double f64 = 0x1p-16, f32 = 0x1p-14, f16 = 0x1p-6;
  double for_tensor(const DLTensor& t) const { return is_16_bit(t) ? f16 : t.dtype.bits == 32 ? f32 : f64; }
};

// Compares the analytic gradient of t with finite differences at up to `limit` elements
// spread over t. Returns the largest |gradient| compared (the test's own signal check).
double expect_gradient(const Case& c, const std::string& what, HostTensor& t, const std::vector<double>& grad,
                       const Steps& steps, std::int64_t limit = 24) {
  EXPECT_EQ(static_cast<std::int64_t>(grad.size()), t.numel()) << what;
  if (static_cast<std::int64_t>(grad.size()) != t.numel()) return 0.0;
  const std::int64_t n = t.numel(), count = std::min(n, limit);
  double largest = 0.0;
  int failures = 0;
  for (std::int64_t e = 0; e < count && failures < 3; ++e) {
    const std::int64_t i = e * n / count + (e * 7) % std::max<std::int64_t>(1, n / count);
    const double fd = finite_difference(c, t, i, steps.for_tensor(t.dl()));
    const double g = grad[static_cast<std::size_t>(i)];
    largest = std::max(largest, std::fabs(g));
    if (std::fabs(g - fd) > 1e-7 * (1.0 + std::fabs(fd))) {
      ADD_FAILURE() << what << "[" << i << "]: analytic " << g << ", finite difference " << fd;
      ++failures;
    }
  }
  return largest;
}

// The float tensors score_mod reads: the names the gradients must have.
std::set<std::string> float_reads(const Variant& v) {
  std::set<std::string> names;
  for (const auto& n : ir::topological_order({v.score_mod().node()}))
    if (n->op == ir::Op::TensorRead && n->type == ir::Type::Float) names.insert(n->name);
  return names;
}

// Every gradient of the case against finite differences; false when the shape does not
// apply (a tensor read at the query's bottom-right position is out of bounds when Sq > Sk).
bool check_case(Case& c, const Steps& steps = {}) {
  ReferenceGradients g;
  try {
    g = c.gradients();
  } catch (const UserError& e) {
    if (std::string(e.what()).find("out of bounds") == std::string::npos || c.shape.seq_q <= c.shape.seq_k) throw;
    EXPECT_THROW(c.loss(), UserError);  // the forward refuses the same shape
    return false;
  }
  EXPECT_GT(expect_gradient(c, "dQ", c.q, g.dq, steps), 1e-3);
  EXPECT_GT(expect_gradient(c, "dK", c.k, g.dk, steps), 1e-3);
  EXPECT_GT(expect_gradient(c, "dV", c.v, g.dv, steps), 1e-3);
  std::set<std::string> names;
  for (auto& [name, grad] : g.tensors) {
    names.insert(name);
    EXPECT_GT(expect_gradient(c, "d" + name, c.tensors.at(name), grad, steps, 40), 1e-3) << name;
  }
  EXPECT_EQ(names, float_reads(c.variant));
  if (c.variant.output_gate())
    EXPECT_GT(expect_gradient(c, "dGate", c.tensors.at(c.variant.output_gate()->tensor), g.d_gate, steps), 1e-3);
  else
    EXPECT_TRUE(g.d_gate.empty());
  return true;
}

struct Named {
  std::string name;
  std::function<Variant()> make;
};

std::vector<Named> variants() {
  std::vector<Named> out;
  for (const auto& p : presets::registry()) out.push_back({p.name, p.make});
  using presets::CausalAlignment;
  out.push_back({"softcap_alibi_window",
                 [] { return presets::softcap().then(presets::alibi()).then(presets::sliding_window()); }});
  out.push_back({"slopes_bias_causal_bottom_right", [] {
                   return presets::alibi(Tensor("slopes", ir::TensorDType::F32, 1))
                       .then(presets::relative_bias())
                       .then(presets::causal(CausalAlignment::BottomRight));
                 }});
  out.push_back({"rope_offset_interleaved_f32_gate4_bias_softcap", [] {
                   return presets::rope(RopeHook{500.0, 4, RopeHook::Layout::Interleaved, "pos"})
                       .then(presets::output_gate(OutputGateHook{"gate", ir::TensorDType::F32, 4}))
                       .then(presets::relative_bias())
                       .then(presets::softcap())
                       .then(presets::causal(CausalAlignment::BottomRight));
                 }});
  out.push_back({"rope_gate_forget_gate",
                 [] { return presets::rope().then(presets::output_gate()).then(presets::by_name("forget_gate")); }});
  return out;
}

std::vector<std::string> variant_names() {
  std::vector<std::string> names;
  for (const auto& v : variants()) names.push_back(v.name);
  return names;
}

class ReferenceBackwardPreset : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceBackwardPreset, MatchesFiniteDifferences) {
  const auto all = variants();
  const auto it = std::find_if(all.begin(), all.end(), [&](const Named& n) { return n.name == GetParam(); });
  ASSERT_NE(it, all.end());
  const Variant variant = it->make();
  int checked = 0;
  for (std::size_t s = 0; s < shapes().size(); ++s) {
    SCOPED_TRACE(GetParam() + " " + shapes()[s].str());
    Case c(variant, shapes()[s], 1000u * static_cast<unsigned>(it - all.begin()) + static_cast<unsigned>(s));
    checked += check_case(c) ? 1 : 0;
  }
  EXPECT_GE(checked, 2);
}

INSTANTIATE_TEST_SUITE_P(Registry, ReferenceBackwardPreset, ::testing::ValuesIn(variant_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A variant full of kinks and jumps, its mask reading the score. Finite differences are
// continuous only away from the switch points, so the test picks the first seed whose every
// switch expression is at least kMargin from zero at every (b, h, q, kv): more than any
// step moves it (a Q or K step moves a score by at most scale * 2^-16 * 2 ~ 1e-5, a slope
// step by 2^-14 ~ 6e-5).
TEST(ReferenceBackward, KinksMatchFiniteDifferencesAwayFromSwitchPoints) {
  const Tensor slopes("slopes", ir::TensorDType::F32, 1);
  const Expr leaky = where(score > 0.0, score, 0.25 * score);
  const Expr floor_at = 0.5 * slopes[h] * slopes[h] - 0.3;  // in [-0.3, 0.825]: picked on some rows
  const Expr mod = min(max(leaky, floor_at), 2.5) + 0.3 * abs(score - 0.5) + 0.2 * floor(score) +
                   0.1 * to_float(to_int(score * 2.0));
  const Variant variant = Variant("kinks").with_score_mod(mod).with_mask_mod(score > -1.5);
  const std::vector<Expr> switches = {score,
                                      leaky - floor_at,
                                      max(leaky, floor_at) - 2.5,
                                      score - 0.5,
                                      score + 1.5,
                                      score - floor(score + 0.5),
                                      score * 2.0 - floor(score * 2.0 + 0.5)};
  constexpr double kMargin = 2e-4;
  const Shape shape{2, 4, 2, 7, 9, 8, 8};
  std::vector<std::set<bool>> sides(switches.size());  // the signs each switch expression takes
  const auto far_from_switches = [&](const Case& c) {
    sides.assign(switches.size(), {});
    ir::EvalEnv env;
    env.read_tensor = [&](const ir::Node&, std::span<const std::int64_t> idx) {
      return ir::Value::of_float(c.tensors.at("slopes").get(idx[0]));
    };
    const auto& s = shape;
    for (int b = 0; b < s.batch; ++b)
      for (int hq = 0; hq < s.heads_q; ++hq)
        for (int i = 0; i < s.seq_q; ++i)
          for (int j = 0; j < s.seq_k; ++j) {
            const int hk = hq / (s.heads_q / s.heads_kv);
            double dot = 0.0;
            for (int d = 0; d < s.dim; ++d)
              dot += c.q.get(((b * s.heads_q + hq) * s.seq_q + i) * s.dim + d) *
                     c.k.get(((b * s.heads_kv + hk) * s.seq_k + j) * s.dim + d);
            env.b = b, env.h = hq, env.q = i, env.kv = j;
            env.score = dot / std::sqrt(static_cast<double>(s.dim));
            for (std::size_t e = 0; e < switches.size(); ++e) {
              const double x = ir::evaluate(switches[e].node(), env).f;
              if (std::fabs(x) < kMargin) return false;
              sides[e].insert(x > 0);
            }
          }
    return true;
  };
  for (unsigned seed = 1; seed < 100; ++seed) {
    Case c(variant, shape, seed);
    if (!far_from_switches(c)) continue;
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (std::size_t e = 0; e < switches.size(); ++e)
      EXPECT_EQ(sides[e].size(), 2u) << "both sides of `" << switches[e].str() << "` are exercised";
    EXPECT_TRUE(check_case(c));
    return;
  }
  FAIL() << "no seed keeps every switch point " << kMargin << " away; widen the search";
}

// Query rows with no admissible key (O = 0, LSE = -inf) get exactly zero gradients, and so
// does their gate.
TEST(ReferenceBackward, FullyMaskedRowsGetZeroGradients) {
  const Variant variant = presets::output_gate().then(presets::causal(presets::CausalAlignment::BottomRight));
  const Shape s{2, 2, 1, 9, 6, 8, 8};  // queries 0..2 sit before key 0
  Case c(variant, s, 77);
  const auto ref = reference_attention(variant, c.q.dl(), c.k.dl(), c.v.dl(), c.bindings);
  const auto g = c.gradients();
  int masked = 0;
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.heads_q; ++h)
      for (int i = 0; i < s.seq_q; ++i) {
        const std::size_t row = (static_cast<std::size_t>(b) * s.heads_q + h) * s.seq_q + i;
        const bool is_masked = i < s.seq_q - s.seq_k;
        EXPECT_EQ(std::isinf(ref.lse_at(b, h, i)), is_masked);
        double largest = 0.0;
        for (int d = 0; d < s.dim; ++d) largest = std::max(largest, std::fabs(g.dq[row * s.dim + d]));
        largest = std::max(largest, std::fabs(g.d_gate[row]));
        if (is_masked) {
          EXPECT_EQ(largest, 0.0) << "row " << row;
          ++masked;
        } else {
          EXPECT_GT(largest, 0.0) << "row " << row;
        }
      }
  EXPECT_EQ(masked, 2 * 2 * 3);
}

// GQA: with K and V heads duplicated into an MHA problem, dQ is the same and each kv head's
// dK and dV are the sums over its query heads.
TEST(ReferenceBackward, GqaSumsKeyAndValueGradientsOverTheGroup) {
  const Variant variant = presets::rope().then(presets::relative_bias()).then(presets::causal());
  const Shape gqa_shape{2, 4, 2, 5, 7, 8, 6}, mha_shape{2, 4, 4, 5, 7, 8, 6};
  Case gqa(variant, gqa_shape, 5), mha(variant, mha_shape, 5);
  const auto copy_heads = [](const HostTensor& from, HostTensor& to, int heads_from, int heads_to, int inner) {
    for (std::int64_t i = 0; i < to.numel(); ++i) {
      const std::int64_t bh = i / inner, b = bh / heads_to, h = bh % heads_to;
      to.set(i, from.get((b * heads_from + h * heads_from / heads_to) * inner + i % inner));
    }
  };
  copy_heads(gqa.q, mha.q, 4, 4, 5 * 8);
  copy_heads(gqa.d_out, mha.d_out, 4, 4, 5 * 6);
  copy_heads(gqa.k, mha.k, 2, 4, 7 * 8);
  copy_heads(gqa.v, mha.v, 2, 4, 7 * 6);
  copy_heads(gqa.tensors.at("rel_bias"), mha.tensors.at("rel_bias"), 4, 4, 11);
  const auto g = gqa.gradients(), m = mha.gradients();
  ASSERT_EQ(g.dq.size(), m.dq.size());
  for (std::size_t i = 0; i < g.dq.size(); ++i) EXPECT_NEAR(g.dq[i], m.dq[i], 1e-14) << i;
  for (const auto& [grad, full, inner] : {std::tuple{&g.dk, &m.dk, 7 * 8}, std::tuple{&g.dv, &m.dv, 7 * 6}})
    for (std::size_t i = 0; i < grad->size(); ++i) {
      const std::size_t bh = i / inner, b = bh / 2, hk = bh % 2, e = i % inner;
      const double sum = (*full)[(b * 4 + 2 * hk) * inner + e] + (*full)[(b * 4 + 2 * hk + 1) * inner + e];
      EXPECT_NEAR((*grad)[i], sum, 1e-13) << i;
    }
  for (std::size_t i = 0; i < g.tensors.at("rel_bias").size(); ++i)
    EXPECT_NEAR(g.tensors.at("rel_bias")[i], m.tensors.at("rel_bias")[i], 1e-13);
}

// A [B, S, H, D] memory layout viewed through strides, and f32 storage of the same values,
// give the same gradients; so do one and several threads (bit for bit at a fixed count).
TEST(ReferenceBackward, StridesDtypesAndThreadsDoNotChangeTheResult) {
  const Variant variant = presets::by_name("forget_gate").then(presets::softcap());
  const Shape s{2, 4, 2, 7, 9, 8, 8};
  Case c(variant, s, 11);
  struct View {
    HostTensor storage;
    std::vector<std::int64_t> shape, strides;
    DLTensor dl;
  };
  const auto bshd = [](const HostTensor& t, DLDataType dtype) {
    const DLTensor& src = t.dl();
    const std::int64_t B = src.shape[0], H = src.shape[1], S = src.shape[2], D = src.shape[3];
    auto v = std::make_unique<View>(View{HostTensor(dtype, {B, S, H, D}), {B, H, S, D}, {S * H * D, D, H * D, 1}, {}});
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const std::int64_t d = i % D, sq = i / D % S, h = i / (D * S) % H, b = i / (D * S * H);
      v->storage.set(((b * S + sq) * H + h) * D + d, t.get(i));
    }
    v->dl = v->storage.dl();
    v->dl.shape = v->shape.data();
    v->dl.strides = v->strides.data();
    return v;
  };
  const auto q = bshd(c.q, dlpack_float32()), k = bshd(c.k, dlpack_float64()), v = bshd(c.v, dlpack_float32()),
             d_out = bshd(c.d_out, dlpack_float64());
  const auto expected = c.gradients(1);
  const auto strided = reference_attention_backward(variant, q->dl, k->dl, v->dl, d_out->dl, c.bindings,
                                                    ReferenceOptions().with_threads(1));
  EXPECT_EQ(strided.dq, expected.dq);
  EXPECT_EQ(strided.dk, expected.dk);
  EXPECT_EQ(strided.dv, expected.dv);
  EXPECT_EQ(strided.tensors, expected.tensors);
  const auto three = c.gradients(3);
  EXPECT_EQ(c.gradients(3).tensors, three.tensors);  // a fixed reduction order at a fixed count
  EXPECT_EQ(three.dq, expected.dq);                  // dQ, dK, dV are owned by one item each
  EXPECT_EQ(three.dk, expected.dk);
  const auto& a = three.tensors.at("log_fgate");
  const auto& b = expected.tensors.at("log_fgate");
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-14);
}

TEST(ReferenceBackward, UserErrors) {
  const Shape s{1, 2, 1, 5, 7, 8, 8};
  Case c(presets::dense(), s, 3);
  HostTensor bad_d_out(dlpack_float64(), {1, 2, 5, 9});
  const auto message = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no UserError");
  };
  EXPECT_NE(message([&] {
              reference_attention_backward(c.variant, c.q.dl(), c.k.dl(), c.v.dl(), bad_d_out.dl());
            }).find("dO has shape [1, 2, 5, 9]"),
            std::string::npos);
  RowSelection rows;
  rows.rows = {{0}, {1}};
  EXPECT_NE(message([&] {
              reference_attention_backward(c.variant, c.q.dl(), c.k.dl(), c.v.dl(), c.d_out.dl(), {},
                                           ReferenceOptions().with_rows(rows));
            }).find("every row"),
            std::string::npos);
  const Tensor table("slopes", ir::TensorDType::F32, 1);
  const Variant bucketed = Variant("bucketed").with_score_mod(score + table[to_int(score * 2.0) + 4]);
  Case b(bucketed, s, 4);
  const std::string refused = message([&] { b.gradients(); });
  EXPECT_NE(refused.find("`slopes[int(score * 2.0) + 4]`"), std::string::npos) << refused;
  EXPECT_NE(refused.find("depends on `score`"), std::string::npos) << refused;
}

}  // namespace
}  // namespace attnjit
