// Every preset's CPU reference output equals an independent brute-force formula written
// here in plain C++ (not through the DSL), on small random problems: MHA, GQA and MQA,
// Sq != Sk both ways, head_dim_v != head_dim, random runtime parameters and tensors, and
// fully masked rows (O = 0, LSE = -inf).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/reference/reference.hpp"
#include "support/brute_force.hpp"

namespace attnjit {
namespace {

using brute::Shape;

// Random runtime parameters and captured tensors for one problem, kept both as the
// host tensors the reference reads and as plain values the brute force reads.
struct Case {
  Case(const Shape& s, std::mt19937& rng)
      : shape(s),
        doc_t(dlpack_int32(), {s.batch, s.seq_k}),
        slopes_t(dlpack_float32(), {s.heads_q}),
        rel_bias_t(dlpack_float32(), {s.heads_q, s.seq_q + s.seq_k - 1}),
        log_fgate_t(dlpack_float32(), {s.batch, s.heads_q, s.seq_k}),
        gate_t(dlpack_bfloat16(), {s.batch, s.heads_q, s.seq_q}) {
    auto uniform_int = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
    window = uniform_int(1, 6);
    prefix_len = uniform_int(0, 5);
    softcap = uniform(5.0, 30.0);
    stride = uniform_int(2, 4);
    local = uniform_int(1, 3);
    group = uniform_int(2, 6);
    for (int b = 0; b < s.batch; ++b) {  // sorted document ids: a new document with probability 0.3
      int id = uniform_int(0, 3);
      for (int j = 0; j < s.seq_k; ++j) {
        if (j > 0 && uniform(0.0, 1.0) < 0.3) id += uniform_int(1, 2);
        doc.push_back(id);
      }
    }
    for (int h = 0; h < s.heads_q; ++h) slopes.push_back(static_cast<float>(uniform(0.01, 1.0)));
    for (std::int64_t i = 0; i < rel_bias_t.numel(); ++i) rel_bias.push_back(static_cast<float>(uniform(-2.0, 2.0)));
    for (int bh = 0; bh < s.batch * s.heads_q; ++bh) {  // cumulative log(sigmoid(x)): decreasing
      double c = 0.0;
      for (int j = 0; j < s.seq_k; ++j) {
        c += std::log(1.0 / (1.0 + std::exp(-uniform(-1.0, 4.0))));
        log_fgate.push_back(static_cast<float>(c));
      }
    }
    for (std::int64_t i = 0; i < gate_t.numel(); ++i) gate.push_back(brute::round_to_bf16(uniform(-3.0, 3.0)));
    store(doc_t, doc);
    store(slopes_t, slopes);
    store(rel_bias_t, rel_bias);
    store(log_fgate_t, log_fgate);
    store(gate_t, gate);
  }
  Case(const Case&) = delete;

  template <class T>
  static void store(HostTensor& t, const std::vector<T>& values) {
    ASSERT_EQ(static_cast<std::int64_t>(values.size()), t.numel());
    for (std::size_t i = 0; i < values.size(); ++i) t.set(static_cast<std::int64_t>(i), values[i]);
  }

  // Binds exactly what the variant declares (the reference rejects unknown names).
  Bindings bind(const Variant& variant) const {
    const std::map<std::string, int> ints = {
        {"window", window}, {"prefix_len", prefix_len}, {"stride", stride}, {"local", local}, {"group", group}};
    const std::map<std::string, const HostTensor*> tensors = {{"doc", &doc_t},
                                                              {"slopes", &slopes_t},
                                                              {"rel_bias", &rel_bias_t},
                                                              {"log_fgate", &log_fgate_t},
                                                              {"gate", &gate_t}};
    Bindings bindings;
    for (const auto& p : variant.params()) {
      if (p.name == "softcap")
        bindings.set(p.name, softcap);
      else if (ints.count(p.name))
        bindings.set(p.name, ints.at(p.name));
      else
        ADD_FAILURE() << "the test has no value for parameter '" << p.name << "' of " << variant.name();
    }
    for (const auto& t : variant.tensors()) {
      if (tensors.count(t.name))
        bindings.set(t.name, tensors.at(t.name)->dl());
      else
        ADD_FAILURE() << "the test has no value for tensor '" << t.name << "' of " << variant.name();
    }
    return bindings;
  }

  int doc_at(int b, int pos) const { return doc.at(static_cast<std::size_t>(b) * shape.seq_k + pos); }
  double rel_bias_at(int h, int i) const {
    return rel_bias.at(static_cast<std::size_t>(h) * (shape.seq_q + shape.seq_k - 1) + i);
  }
  double fgate_at(int b, int h, int pos) const {
    return log_fgate.at((static_cast<std::size_t>(b) * shape.heads_q + h) * shape.seq_k + pos);
  }
  double gate_at(int b, int h, int q) const {
    return gate.at((static_cast<std::size_t>(b) * shape.heads_q + h) * shape.seq_q + q);
  }
  // Absolute position of query q under bottom-right alignment.
  int abs_q(int q) const { return q + shape.seq_k - shape.seq_q; }

  Shape shape;
  int window = 0, prefix_len = 0, stride = 0, local = 0, group = 0;
  double softcap = 0.0;
  std::vector<int> doc;
  std::vector<double> slopes, rel_bias, log_fgate, gate;
  HostTensor doc_t, slopes_t, rel_bias_t, log_fgate_t, gate_t;
};

using Allowed = std::function<bool(const Case&, int b, int h, int q, int kv)>;
using Modified = std::function<double(const Case&, double s, int b, int h, int q, int kv)>;

struct Formula {
  Allowed allowed;    // empty: every pair allowed
  Modified modified;  // empty: the score unchanged
  bool rope = false;  // RoPE theta 10000 over the whole head, half layout
  bool gate = false;  // O *= sigmoid(gate[b, h, q])
  // Tensor read at the query's bottom-right position q + Sk - Sq: out of bounds when Sq > Sk.
  std::string reads_query_position;
};

// The formulas, written from the comments in dsl/presets.hpp.
bool causal_tl(int q, int kv) { return kv <= q; }
bool in_window(const Case& c, int q, int kv) { return kv <= q && kv > q - c.window; }
double alibi_std(const Case& c, double s, int h, int q, int kv) {
  return s + std::pow(2.0, -8.0 * (h + 1) / c.shape.heads_q) * (kv - q);
}
double cap(const Case& c, double s) { return c.softcap * std::tanh(s / c.softcap); }
bool same_doc(const Case& c, int b, int q, int kv) { return c.doc_at(b, c.abs_q(q)) == c.doc_at(b, kv); }

const std::map<std::string, Formula>& formulas() {
  static const std::map<std::string, Formula> table = {
      {"dense", {}},
      {"causal", {[](const Case&, int, int, int q, int kv) { return causal_tl(q, kv); }}},
      {"causal_bottom_right", {[](const Case& c, int, int, int q, int kv) { return kv <= c.abs_q(q); }}},
      {"sliding_window", {[](const Case& c, int, int, int q, int kv) { return in_window(c, q, kv); }}},
      {"prefix_lm", {[](const Case& c, int, int, int q, int kv) { return kv < c.prefix_len || kv <= q; }}},
      {"document",
       {[](const Case& c, int b, int, int q, int kv) { return same_doc(c, b, q, kv); }, {}, false, false, "doc"}},
      {"document_causal",
       {[](const Case& c, int b, int, int q, int kv) { return same_doc(c, b, q, kv) && kv <= c.abs_q(q); },
        {},
        false,
        false,
        "doc"}},
      {"alibi", {{}, [](const Case& c, double s, int, int h, int q, int kv) { return alibi_std(c, s, h, q, kv); }}},
      {"alibi_tensor",
       {{}, [](const Case& c, double s, int, int h, int q, int kv) { return s + c.slopes[h] * (kv - q); }}},
      {"alibi_causal",
       {[](const Case&, int, int, int q, int kv) { return causal_tl(q, kv); },
        [](const Case& c, double s, int, int h, int q, int kv) { return alibi_std(c, s, h, q, kv); }}},
      {"relative_bias",
       {{},
        [](const Case& c, double s, int, int h, int q, int kv) {
          return s + c.rel_bias_at(h, kv - q + c.shape.seq_q - 1);
        }}},
      {"softcap", {{}, [](const Case& c, double s, int, int, int, int) { return cap(c, s); }}},
      {"softcap_causal",
       {[](const Case&, int, int, int q, int kv) { return causal_tl(q, kv); },
        [](const Case& c, double s, int, int, int, int) { return cap(c, s); }}},
      {"forget_gate",
       {[](const Case& c, int, int, int q, int kv) { return kv <= c.abs_q(q); },
        [](const Case& c, double s, int b, int h, int q, int kv) {
          return s + c.fgate_at(b, h, c.abs_q(q)) - c.fgate_at(b, h, kv);
        },
        false, false, "log_fgate"}},
      {"strided", {[](const Case& c, int, int h, int q, int kv) {
         return kv <= q && (q - kv < c.local || (kv + h) % c.stride == 0);
       }}},
      {"shifted_sparse", {[](const Case& c, int, int h, int q, int kv) {
         const int shift = h < c.shape.heads_q / 2 ? 0 : c.group / 2;
         return brute::floor_div(q + shift, c.group) == brute::floor_div(kv + shift, c.group);
       }}},
      {"alibi_window_softcap",
       {[](const Case& c, int, int, int q, int kv) { return in_window(c, q, kv); },
        [](const Case& c, double s, int, int h, int q, int kv) { return cap(c, alibi_std(c, s, h, q, kv)); }}},
      {"rope_causal", {[](const Case&, int, int, int q, int kv) { return causal_tl(q, kv); }, {}, true}},
      {"gated_causal", {[](const Case&, int, int, int q, int kv) { return causal_tl(q, kv); }, {}, false, true}},
  };
  return table;
}

brute::Spec spec_for(const Formula& f, const Case& c) {
  brute::Spec spec;
  if (f.allowed) spec.allowed = [&f, &c](int b, int h, int q, int kv) { return f.allowed(c, b, h, q, kv); };
  if (f.modified)
    spec.modified = [&f, &c](double s, int b, int h, int q, int kv) { return f.modified(c, s, b, h, q, kv); };
  if (f.rope) spec.rope = brute::RopeSpec{10000.0, 0, false};
  if (f.gate) spec.gate_logit = [&c](int b, int h, int q) { return c.gate_at(b, h, q); };
  return spec;
}

// Small problems: (heads_q, heads_kv) covers MHA, GQA and MQA for 4 and 8 heads; Sq < Sk,
// Sq > Sk and Sq == Sk; head_dim_v equal to and different from head_dim.
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> list = {
      {1, 4, 4, 7, 13, 8, 8},  {2, 8, 4, 13, 7, 16, 8},  {2, 4, 1, 9, 9, 8, 16},
      {1, 8, 8, 13, 7, 8, 12}, {2, 8, 1, 7, 13, 16, 16}, {1, 4, 2, 11, 11, 16, 8},
  };
  return list;
}
constexpr int kDrawsPerShape = 2;

std::vector<std::string> registry_names() {
  std::vector<std::string> names;
  for (const auto& p : presets::registry()) names.push_back(p.name);
  return names;
}

TEST(ReferencePresets, EveryRegistryPresetHasABruteForceFormula) {
  std::set<std::string> registered, covered;
  for (const auto& p : presets::registry()) EXPECT_TRUE(registered.insert(p.name).second) << "duplicate " << p.name;
  for (const auto& [name, formula] : formulas()) covered.insert(name);
  for (const auto& name : registered)
    EXPECT_TRUE(covered.count(name)) << "preset '" << name << "' has no brute-force formula in this test; add one";
  for (const auto& name : covered)
    EXPECT_TRUE(registered.count(name)) << "the test covers '" << name << "' but the registry has no such preset";
}

class ReferencePresetTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferencePresetTest, MatchesBruteForce) {
  const std::string name = GetParam();
  ASSERT_TRUE(formulas().count(name)) << "no brute-force formula for preset '" << name << "'";
  const Formula& formula = formulas().at(name);
  const Variant variant = presets::by_name(name);
  EXPECT_EQ(variant.rope().has_value(), formula.rope) << "RoPE hook";
  EXPECT_EQ(variant.output_gate().has_value(), formula.gate) << "output gate hook";
  if (variant.rope()) {  // the brute force assumes the registry's documented RoPE settings
    EXPECT_EQ(variant.rope()->theta, 10000.0);
    EXPECT_EQ(variant.rope()->rotary_dim, 0);
    EXPECT_EQ(variant.rope()->layout, RopeHook::Layout::Half);
  }

  const auto names = registry_names();
  const auto preset_index = static_cast<unsigned>(std::find(names.begin(), names.end(), name) - names.begin());
  int masked_rows = 0, compared = 0, rejected = 0;
  for (std::size_t si = 0; si < shapes().size(); ++si) {
    for (int draw = 0; draw < kDrawsPerShape; ++draw) {
      const Shape& shape = shapes()[si];
      const unsigned seed = 7919u * (preset_index + 1) + 101u * static_cast<unsigned>(si) + static_cast<unsigned>(draw);
      std::mt19937 rng(seed);
      const brute::Inputs in(shape, rng);
      const Case c(shape, rng);
      SCOPED_TRACE(name + " " + shape.str() + " seed=" + std::to_string(seed) + " window=" + std::to_string(c.window) +
                   " prefix_len=" + std::to_string(c.prefix_len) + " softcap=" + std::to_string(c.softcap) +
                   " stride=" + std::to_string(c.stride) + " local=" + std::to_string(c.local) +
                   " group=" + std::to_string(c.group));
      const Bindings bindings = c.bind(variant);
      if (!formula.reads_query_position.empty() && shape.seq_q > shape.seq_k) {
        // Query positions q + Sk - Sq < 0 have no entry in the [.., kv_len] tensor.
        try {
          reference_attention(variant, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), bindings);
          ADD_FAILURE() << "expected an out-of-bounds UserError for '" << formula.reads_query_position << "'";
        } catch (const UserError& e) {
          const std::string what = e.what();
          EXPECT_NE(what.find("'" + formula.reads_query_position + "'"), std::string::npos) << what;
          EXPECT_NE(what.find("out of bounds"), std::string::npos) << what;
        }
        ++rejected;
        continue;
      }
      const ReferenceResult ref = reference_attention(variant, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), bindings);
      masked_rows += brute::expect_matches(ref, brute::attention(in, spec_for(formula, c)), shape);
      ++compared;
    }
  }
  EXPECT_GE(compared, 8);
  RecordProperty("fully_masked_rows", masked_rows);
  // Presets that must produce fully masked rows on these shapes (Sq > Sk puts queries past
  // every key or before the first one).
  static const std::set<std::string> must_mask = {"causal_bottom_right", "sliding_window", "alibi_window_softcap",
                                                  "shifted_sparse"};
  if (must_mask.count(name)) EXPECT_GT(masked_rows, 0) << "no fully masked row was exercised";
  if (!formula.reads_query_position.empty()) EXPECT_GT(rejected, 0);
}

INSTANTIATE_TEST_SUITE_P(Registry, ReferencePresetTest, ::testing::ValuesIn(registry_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// Bottom-right causal with Sq > Sk: the first Sq - Sk queries sit before key 0.
TEST(ReferencePresets, CausalBottomRightLeadingRowsAreFullyMasked) {
  const Shape shape{2, 4, 2, 13, 7, 8, 8};
  std::mt19937 rng(4242);
  const brute::Inputs in(shape, rng);
  const auto ref = reference_attention(presets::causal(presets::CausalAlignment::BottomRight), in.q_t.dl(), in.k_t.dl(),
                                       in.v_t.dl());
  for (int b = 0; b < shape.batch; ++b)
    for (int h = 0; h < shape.heads_q; ++h)
      for (int q = 0; q < shape.seq_q; ++q) {
        if (q < shape.seq_q - shape.seq_k) {
          EXPECT_EQ(ref.lse_at(b, h, q), -std::numeric_limits<double>::infinity()) << b << " " << h << " " << q;
          for (int d = 0; d < shape.dim_v; ++d) EXPECT_EQ(ref.o_at(b, h, q, d), 0.0);
        } else {
          EXPECT_TRUE(std::isfinite(ref.lse_at(b, h, q))) << b << " " << h << " " << q;
        }
      }
  brute::Spec spec;
  spec.allowed = [&](int, int, int q, int kv) { return kv <= q + shape.seq_k - shape.seq_q; };
  const auto expected = brute::attention(in, spec);
  EXPECT_EQ(expected.masked_rows, shape.batch * shape.heads_q * (shape.seq_q - shape.seq_k));
  EXPECT_EQ(brute::expect_matches(ref, expected, shape), expected.masked_rows);
}

// Document ids only come from the key sequence and document_causal aligns bottom-right like
// the ids, so a query always sees at least its own position's key: no row is fully masked,
// even where the query's document starts after key q (the top-left reading would mask it).
TEST(ReferencePresets, DocumentCausalQueryAlwaysSeesItsOwnPosition) {
  const Shape shape{1, 4, 1, 4, 8, 8, 8};
  std::mt19937 rng(99);
  const brute::Inputs in(shape, rng);
  HostTensor doc(dlpack_int32(), {1, 8});
  const std::vector<int> ids = {0, 1, 1, 1, 1, 1, 2, 2};  // query q reads ids[q + 4]: 1, 1, 2, 2
  for (int j = 0; j < 8; ++j) doc.set(j, ids[j]);
  const auto ref = reference_attention(presets::by_name("document_causal"), in.q_t.dl(), in.k_t.dl(), in.v_t.dl(),
                                       Bindings().set("doc", doc.dl()));
  brute::Spec spec;
  spec.allowed = [&](int, int, int q, int kv) { return ids[q + 4] == ids[kv] && kv <= q + 4; };
  const auto expected = brute::attention(in, spec);
  EXPECT_EQ(expected.masked_rows, 0);
  EXPECT_EQ(brute::expect_matches(ref, expected, shape), 0);
  for (int h = 0; h < shape.heads_q; ++h)
    for (int q = 0; q < 4; ++q) EXPECT_TRUE(std::isfinite(ref.lse_at(0, h, q)));
}

// Composition: masks and-ed, score_mods applied in order (DSL built here, not from the registry).
TEST(ReferencePresets, CompositionAlibiWindowSoftcapMatchesComposedFormula) {
  const Variant v = presets::alibi().then(presets::sliding_window()).then(presets::softcap());
  const Variant reversed = presets::softcap().then(presets::alibi()).then(presets::sliding_window());
  int masked = 0;
  for (unsigned seed = 1; seed <= 6; ++seed) {
    const Shape& shape = shapes()[seed - 1];
    std::mt19937 rng(31337 + seed);
    const brute::Inputs in(shape, rng);
    const Case c(shape, rng);
    SCOPED_TRACE(shape.str() + " seed=" + std::to_string(seed));
    const int H = shape.heads_q;
    auto slope = [H](int h) { return std::exp2(-8.0 * (h + 1) / H); };
    brute::Spec spec;
    spec.allowed = [&](int, int, int q, int kv) { return q - kv >= 0 && q - kv < c.window; };
    spec.modified = [&](double s, int, int h, int q, int kv) {
      return c.softcap * std::tanh((s + slope(h) * (kv - q)) / c.softcap);
    };
    const auto ref = reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), c.bind(v));
    masked += brute::expect_matches(ref, brute::attention(in, spec), shape);
    // softcap first, then ALiBi: the bias is added to the capped score.
    spec.modified = [&](double s, int, int h, int q, int kv) {
      return c.softcap * std::tanh(s / c.softcap) + slope(h) * (kv - q);
    };
    const auto ref2 = reference_attention(reversed, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), c.bind(reversed));
    brute::expect_matches(ref2, brute::attention(in, spec), shape);
  }
  EXPECT_GT(masked, 0);
}

// A composition mixing a slope tensor, a bias tensor and bottom-right causality.
TEST(ReferencePresets, CompositionTensorsAndBottomRightCausal) {
  const Variant v = presets::alibi(Tensor("slopes", ir::TensorDType::F32, 1))
                        .then(presets::relative_bias())
                        .then(presets::causal(presets::CausalAlignment::BottomRight));
  for (unsigned seed = 1; seed <= 6; ++seed) {
    const Shape& shape = shapes()[seed - 1];
    std::mt19937 rng(2718 + seed);
    const brute::Inputs in(shape, rng);
    const Case c(shape, rng);
    SCOPED_TRACE(shape.str());
    brute::Spec spec;
    spec.allowed = [&](int, int, int q, int kv) { return kv <= q + shape.seq_k - shape.seq_q; };
    spec.modified = [&](double s, int, int h, int q, int kv) {
      return s + c.slopes[h] * (kv - q) + c.rel_bias_at(h, kv - q + shape.seq_q - 1);
    };
    const auto ref = reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), c.bind(v));
    brute::expect_matches(ref, brute::attention(in, spec), shape);
  }
}

}  // namespace
}  // namespace attnjit
