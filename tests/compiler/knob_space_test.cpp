// The autotuner's search space, made from a template's own knob space (compiler/knob_space.hpp),
// checked through the fwd_sm80 template: enumeration order and count, pruning with the reason
// of each rule, restricted spaces, the default among the feasible candidates, and the
// shared-memory limits of the archs. Also Schedule::validate's shared-memory rule itself.
#include "compiler/knob_space.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "compiler/error.hpp"
#include "compiler/schedule.hpp"

namespace attnjit {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const KernelTemplate& fwd_sm80() { return TemplateRegistry::instance().get("fwd_sm80"); }

Knobs knobs(int block_m, int block_n, int warps, int stages) {
  return Schedule{block_m, block_n, warps, stages}.to_knobs();
}

Knobs default_knobs_for(int head_dim) {
  TemplateRequest r;
  r.head_dim = head_dim;
  return fwd_sm80().default_knobs(r);
}

TEST(KnobSpace, ArchSharedMemoryLimits) {
  EXPECT_EQ(max_shared_memory_for_arch("sm_80"), 163 * 1024);
  EXPECT_EQ(max_shared_memory_for_arch("sm_86"), 99 * 1024);
  EXPECT_EQ(max_shared_memory_for_arch("sm_89"), 99 * 1024);
  EXPECT_EQ(max_shared_memory_for_arch("sm_90a"), 227 * 1024);
}

TEST(KnobSpace, ValidateChecksTheGivenSharedMemoryLimit) {
  const Schedule big{128, 128, 8, 2};  // (128 + 2*2*128) * (128 + 8) * 2 = 174080 bytes at D=128
  ASSERT_EQ(big.shared_memory_bytes(128), 174080);
  EXPECT_NO_THROW(big.validate(128));
  EXPECT_NO_THROW(big.validate(128, max_shared_memory_for_arch("sm_90a")));
  try {
    big.validate(128, max_shared_memory_for_arch("sm_86"));
    FAIL() << "expected a shared-memory error";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "174080 bytes of shared memory")) << e.what();
    EXPECT_TRUE(contains(e.what(), "101376")) << e.what();
  }
  // The template's check_knobs applies the same rule to the limit it is given.
  EXPECT_TRUE(fwd_sm80().check_knobs(big.to_knobs(), 128, max_shared_memory_for_arch("sm_90a")).supported());
  const Support s = fwd_sm80().check_knobs(big.to_knobs(), 128, max_shared_memory_for_arch("sm_86"));
  EXPECT_EQ(s.kind(), Support::Kind::Invalid);
  EXPECT_TRUE(contains(s.reason(), "174080 bytes of shared memory")) << s.reason();
}

TEST(KnobSpace, DefaultSpaceEnumeratesEveryCombinationInOrder) {
  const auto all = enumerate_knobs(fwd_sm80(), 64, 227 * 1024);
  ASSERT_EQ(all.size(), 24u);
  // The knobs in the order the template declares them (block_m, block_n, warps, stages), the
  // last one varying fastest, each through its values in the declared order.
  EXPECT_EQ(all[0].knobs, knobs(64, 32, 4, 1));
  EXPECT_EQ(all[1].knobs, knobs(64, 32, 4, 2));
  EXPECT_EQ(all[2].knobs, knobs(64, 32, 8, 1));
  EXPECT_EQ(all[4].knobs, knobs(64, 64, 4, 1));
  EXPECT_EQ(all[12].knobs, knobs(128, 32, 4, 1));
  EXPECT_EQ(all.back().knobs, knobs(128, 128, 8, 2));
  std::set<std::string> distinct;
  for (const auto& c : all) distinct.insert(c.knobs.str());
  EXPECT_EQ(distinct.size(), 24u);
  // Every candidate sets exactly the template's knobs.
  for (const auto& c : all) {
    ASSERT_EQ(c.knobs.values().size(), 4u) << c.knobs.str();
    for (const auto& spec : fwd_sm80().knob_space(64)) EXPECT_TRUE(c.knobs.has(spec.name)) << spec.name;
  }
  // The order is fixed: a second enumeration is the same.
  const auto again = enumerate_knobs(fwd_sm80(), 64, 227 * 1024);
  ASSERT_EQ(again.size(), all.size());
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(again[i].knobs, all[i].knobs);
}

TEST(KnobSpace, PrunedCandidatesCarryTheirReasonAndFeasibleOnesValidate) {
  for (int d : {32, 64, 96, 128, 256})
    for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
      const int limit = max_shared_memory_for_arch(arch);
      const auto all = enumerate_knobs(fwd_sm80(), d, limit);
      int feasible = 0;
      for (const auto& c : all) {
        const Support s = fwd_sm80().check_knobs(c.knobs, d, limit);
        if (c.feasible) {
          ++feasible;
          EXPECT_TRUE(c.reason.empty());
          EXPECT_TRUE(s.supported()) << c.knobs.str();
          EXPECT_NO_THROW(Schedule::from_knobs(c.knobs).validate(d, limit)) << c.knobs.str();
        } else {
          EXPECT_FALSE(c.reason.empty()) << c.knobs.str();
          EXPECT_EQ(s.kind(), Support::Kind::Invalid) << c.knobs.str();
          EXPECT_EQ(c.reason, s.reason());
          EXPECT_THROW(Schedule::from_knobs(c.knobs).validate(d, limit), UserError) << c.knobs.str();
        }
      }
      EXPECT_GT(feasible, 0) << "D=" << d << " " << arch;
      const auto feasible_only = feasible_knobs(fwd_sm80(), d, limit);
      EXPECT_EQ(static_cast<std::size_t>(feasible), feasible_only.size());
      // The template's default is always among the feasible candidates.
      bool has_default = false;
      for (const auto& k : feasible_only) has_default |= k == default_knobs_for(d);
      EXPECT_TRUE(has_default) << "D=" << d << " " << arch;
    }
}

TEST(KnobSpace, EachRuleHasItsOwnReason) {
  const auto all = enumerate_knobs(fwd_sm80(), 256, max_shared_memory_for_arch("sm_86"));
  const auto reason_of = [&](const Knobs& k) {
    for (const auto& c : all)
      if (c.knobs == k) return c.reason;
    ADD_FAILURE() << "not enumerated: " << k.str();
    return std::string();
  };
  // Divisibility: 64 rows over 8 warps is 8 rows per warp.
  EXPECT_TRUE(contains(reason_of(knobs(64, 32, 8, 1)), "rows per warp")) << reason_of(knobs(64, 32, 8, 1));
  // Registers: 32 rows per warp at D=256.
  EXPECT_TRUE(contains(reason_of(knobs(128, 32, 4, 1)), "holds too much per warp")) << reason_of(knobs(128, 32, 4, 1));
  // Shared memory: (128 + 4 * 128) * 264 * 2 bytes on a 99 KiB part.
  EXPECT_TRUE(contains(reason_of(knobs(128, 128, 8, 2)), "shared memory")) << reason_of(knobs(128, 128, 8, 2));
  // Feasible there: 64x32 tiles, 4 warps, 2 stages (the D=256 default).
  EXPECT_TRUE(reason_of(knobs(64, 32, 4, 2)).empty());
  EXPECT_EQ(default_knobs_for(256), knobs(64, 32, 4, 2));
}

TEST(KnobSpace, ARestrictedSpaceEnumeratesOnlyItsValues) {
  const auto all = enumerate_knobs(fwd_sm80(), 64, 227 * 1024, {{"block_m", {128}}, {"warps", {4}}, {"stages", {2}}});
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].knobs, knobs(128, 32, 4, 2));
  EXPECT_EQ(all[1].knobs, knobs(128, 64, 4, 2));
  EXPECT_EQ(all[2].knobs, knobs(128, 128, 4, 2));
  for (const auto& c : all) {
    EXPECT_EQ(c.knobs.get("block_m"), 128);
    EXPECT_TRUE(c.feasible) << c.knobs.str() << ": " << c.reason;
  }
  // A restriction keeps its own value order.
  const auto reversed = enumerate_knobs(fwd_sm80(), 64, 227 * 1024,
                                        {{"block_m", {128}}, {"block_n", {128, 32}}, {"warps", {4}}, {"stages", {1}}});
  ASSERT_EQ(reversed.size(), 2u);
  EXPECT_EQ(reversed[0].knobs, knobs(128, 128, 4, 1));
  EXPECT_EQ(reversed[1].knobs, knobs(128, 32, 4, 1));
  // A value the template does not support is pruned, not compiled.
  const auto odd = enumerate_knobs(fwd_sm80(), 64, 227 * 1024, {{"block_m", {96}}});
  ASSERT_EQ(odd.size(), 12u);
  for (const auto& c : odd) {
    EXPECT_FALSE(c.feasible);
    EXPECT_TRUE(contains(c.reason, "block_m 96 is not allowed")) << c.reason;
  }
  EXPECT_TRUE(feasible_knobs(fwd_sm80(), 64, 227 * 1024, {{"block_m", {96}}}).empty());
}

TEST(KnobSpace, ARestrictionOfAKnobTheTemplateLacksNamesItsKnobs) {
  try {
    enumerate_knobs(fwd_sm80(), 64, 227 * 1024, {{"splits", {2, 4}}});
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "template 'fwd_sm80' has no knob 'splits'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "block_m, block_n, warps, stages")) << e.what();
  }
  try {
    enumerate_knobs(fwd_sm80(), 64, 227 * 1024, {{"block_n", {}}});
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "knob 'block_n'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "32, 64, 128")) << e.what();
  }
}

// A knob whose best value the tuner's timing cannot see (decode_sm80's stream_k: equal full
// lengths favour split-K, KV caches stream-K) stays at the request's default unless named.
TEST(KnobSpace, UntunedKnobsKeepTheirDefaultUnlessNamed) {
  const KernelTemplate& decode = TemplateRegistry::instance().get("decode_sm80");
  const auto space = decode.knob_space(128);
  const auto stream_k =
      std::find_if(space.begin(), space.end(), [](const KnobSpec& k) { return k.name == "stream_k"; });
  ASSERT_NE(stream_k, space.end());
  EXPECT_FALSE(stream_k->tuned);
  for (const int value : {0, 1}) {
    const Knobs defaults{{"block_n", 64},     {"stages", 2},     {"splits", 0},
                         {"stream_k", value}, {"rope_steps", 1}, {"row_pad", 0}};
    const auto fixed = with_untuned_knobs_fixed(decode, 128, defaults, {{"stages", {2, 3}}});
    ASSERT_EQ(fixed.size(), 4u);
    EXPECT_EQ(fixed.at("stream_k"), std::vector<int>{value});
    EXPECT_EQ(fixed.at("rope_steps"), std::vector<int>{1});
    EXPECT_EQ(fixed.at("row_pad"), std::vector<int>{0});
    EXPECT_EQ(fixed.at("stages"), (std::vector<int>{2, 3}));  // a given restriction stays
    for (const Knobs& k : feasible_knobs(decode, 128, 227 * 1024, fixed)) EXPECT_EQ(k.get("stream_k"), value);
  }
  // Named, it is searched like any knob; the tuned knobs stay open.
  const Knobs defaults{{"block_n", 64}, {"stages", 2},     {"splits", 0},
                       {"stream_k", 1}, {"rope_steps", 1}, {"row_pad", 0}};
  EXPECT_EQ(with_untuned_knobs_fixed(decode, 128, defaults, {{"stream_k", {0, 1}}}).at("stream_k"),
            (std::vector<int>{0, 1}));
  EXPECT_EQ(with_untuned_knobs_fixed(decode, 128, defaults, {}).count("splits"), 0u);
  EXPECT_TRUE(with_untuned_knobs_fixed(fwd_sm80(), 64, default_knobs_for(64), {}).empty());
}

}  // namespace
}  // namespace attnjit
