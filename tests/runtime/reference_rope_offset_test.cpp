// The CPU reference's RoPE position offset (RopeHook::offset_param): query row i sits at
// i + Sk - Sq + offset, key row j at j + offset, the offset bound at run time like any int
// parameter. RoPE scores depend only on position differences, so in exact arithmetic the
// offset leaves O unchanged; what it changes is the rounding of a low-precision computation
// (fp32 angles), which the naive mode must therefore see.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dsl/presets.hpp"
#include "runtime/reference/reference.hpp"
#include "support/brute_force.hpp"

namespace attnjit {
namespace {

using brute::Shape;

RopeHook hook(double theta, int rotary_dim, RopeHook::Layout layout, const std::string& offset) {
  RopeHook r;
  r.theta = theta;
  r.rotary_dim = rotary_dim;
  r.layout = layout;
  r.offset_param = offset;
  return r;
}

Variant with_causal(const RopeHook& h) {
  return presets::rope(h).then(presets::causal(presets::CausalAlignment::BottomRight));
}

TEST(ReferenceRopeOffset, MatchesBruteForceAtEveryOffset) {
  struct Setting {
    RopeHook hook;
    brute::RopeSpec spec;
  };
  const std::vector<Setting> settings = {
      {hook(10000.0, 0, RopeHook::Layout::Half, "pos"), {10000.0, 0, false, 0}},
      {hook(500.0, 4, RopeHook::Layout::Interleaved, "pos"), {500.0, 4, true, 0}},
      {hook(2.0, 6, RopeHook::Layout::Half, "pos"), {2.0, 6, false, 0}},
  };
  unsigned seed = 40;
  for (const auto& s : settings) {
    for (const Shape& shape : {Shape{1, 4, 2, 7, 13, 8, 8}, Shape{2, 4, 1, 9, 5, 16, 8}}) {
      std::mt19937 rng(seed++);
      const brute::Inputs in(shape, rng);
      for (const int offset : {0, 7, 4096, -5}) {
        SCOPED_TRACE(shape.str() + " offset " + std::to_string(offset) + " rotary_dim " +
                     std::to_string(s.hook.rotary_dim));
        brute::Spec spec;
        spec.rope = s.spec;
        spec.rope->position_offset = offset;
        spec.allowed = [&](int, int, int q, int kv) { return kv <= q + shape.seq_k - shape.seq_q; };
        const Variant v = with_causal(s.hook);
        brute::expect_matches(
            reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("pos", offset)),
            brute::attention(in, spec), shape);
      }
    }
  }
}

// In fp64 the offset cancels (the same shift on both sides): the result equals the variant
// without an offset. (An offset applied to one side only would move every score, which the
// brute-force comparison above would catch.)
TEST(ReferenceRopeOffset, SameShiftOnQueriesAndKeysLeavesTheExactResult) {
  const Shape shape{1, 4, 4, 11, 17, 16, 16};
  std::mt19937 rng(50);
  const brute::Inputs in(shape, rng);
  const auto plain = reference_attention(with_causal(hook(10000.0, 0, RopeHook::Layout::Half, "")), in.q_t.dl(),
                                         in.k_t.dl(), in.v_t.dl());
  const Variant offset = with_causal(hook(10000.0, 0, RopeHook::Layout::Half, "pos"));
  for (const int o : {7, 4096}) {
    const auto shifted = reference_attention(offset, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("pos", o));
    for (std::size_t i = 0; i < plain.o.size(); ++i) ASSERT_NEAR(shifted.o[i], plain.o[i], 1e-9) << "O element " << i;
  }
}

// The naive computation (a separate RoPE pass in the storage dtype: fp32 frequencies and
// angles, rotated rows rounded) sees the offset: at a large offset its fp32 angles round
// differently than at offset 0, so its output changes; at offset 0 it stays within the
// storage precision of the exact result.
TEST(ReferenceRopeOffset, NaiveComputationSeesTheOffset) {
  const Shape shape{1, 4, 2, 33, 65, 32, 32};
  std::mt19937 rng(51);
  const brute::Inputs in(shape, rng, dlpack_bfloat16());
  const Variant v = with_causal(hook(10000.0, 0, RopeHook::Layout::Half, "pos"));
  const auto naive_options = ReferenceOptions().with_naive_precision(NaivePrecision::BF16);
  const auto exact = reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("pos", 0));
  const auto at0 =
      reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("pos", 0), naive_options);
  const auto far =
      reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl(), Bindings().set("pos", 1 << 20), naive_options);
  double err0 = 0, moved = 0;
  for (std::size_t i = 0; i < exact.o.size(); ++i) {
    err0 = std::max(err0, std::fabs(at0.o[i] - exact.o[i]));
    moved = std::max(moved, std::fabs(far.o[i] - at0.o[i]));
  }
  EXPECT_GT(err0, 0.0);    // it is a low-precision computation
  EXPECT_LT(err0, 2e-2);   // ... of the same result (bf16 inputs of magnitude <= 2)
  EXPECT_GT(moved, 1e-3);  // fp32 angles near 2^20 are off by up to ~0.03 rad
}

TEST(ReferenceRopeOffset, UnboundOffsetIsAUserError) {
  const Shape shape{1, 2, 2, 3, 3, 8, 8};
  std::mt19937 rng(52);
  const brute::Inputs in(shape, rng);
  const Variant v = with_causal(hook(10000.0, 0, RopeHook::Layout::Half, "pos"));
  try {
    (void)reference_attention(v, in.q_t.dl(), in.k_t.dl(), in.v_t.dl());
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("parameter 'pos' (int)"), std::string::npos) << what;
    EXPECT_NE(what.find("is not bound"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace attnjit
