// Schedule validation against a shared-memory limit, and the schedule space's pruning with
// the reason of each infeasible candidate.
#include "compiler/schedule_space.hpp"

#include <gtest/gtest.h>

#include <set>

#include "compiler/error.hpp"

namespace attnjit {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(ScheduleSpace, ArchSharedMemoryLimits) {
  EXPECT_EQ(max_shared_memory_for_arch("sm_80"), 163 * 1024);
  EXPECT_EQ(max_shared_memory_for_arch("sm_86"), 99 * 1024);
  EXPECT_EQ(max_shared_memory_for_arch("sm_89"), 99 * 1024);
  EXPECT_EQ(max_shared_memory_for_arch("sm_90a"), 227 * 1024);
}

TEST(ScheduleSpace, ValidateChecksTheGivenSharedMemoryLimit) {
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
}

TEST(ScheduleSpace, DefaultSpaceEnumeratesEveryCombinationInOrder) {
  const auto all = enumerate_schedules(ScheduleSpace{}, 64, 227 * 1024);
  ASSERT_EQ(all.size(), 24u);
  EXPECT_EQ(all.front().schedule, (Schedule{64, 32, 4, 1}));
  EXPECT_EQ(all.back().schedule, (Schedule{128, 128, 8, 2}));
  std::set<std::string> distinct;
  for (const auto& c : all) distinct.insert(c.schedule.str());
  EXPECT_EQ(distinct.size(), 24u);
}

TEST(ScheduleSpace, PrunedCandidatesCarryTheirReasonAndFeasibleOnesValidate) {
  for (int d : {32, 64, 96, 128, 256})
    for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
      const int limit = max_shared_memory_for_arch(arch);
      const auto all = enumerate_schedules(ScheduleSpace{}, d, limit);
      int feasible = 0;
      for (const auto& c : all) {
        if (c.feasible) {
          ++feasible;
          EXPECT_TRUE(c.reason.empty());
          EXPECT_NO_THROW(c.schedule.validate(d, limit)) << c.schedule.str();
        } else {
          EXPECT_FALSE(c.reason.empty()) << c.schedule.str();
          EXPECT_THROW(c.schedule.validate(d, limit), UserError) << c.schedule.str();
        }
      }
      EXPECT_GT(feasible, 0) << "D=" << d << " " << arch;
      EXPECT_EQ(static_cast<std::size_t>(feasible), feasible_schedules(ScheduleSpace{}, d, limit).size());
      // The default heuristic is always among the feasible candidates.
      bool has_default = false;
      for (const auto& s : feasible_schedules(ScheduleSpace{}, d, limit)) has_default |= s == Schedule::default_for(d);
      EXPECT_TRUE(has_default) << "D=" << d << " " << arch;
    }
}

TEST(ScheduleSpace, EachRuleHasItsOwnReason) {
  const auto all = enumerate_schedules(ScheduleSpace{}, 256, max_shared_memory_for_arch("sm_86"));
  const auto reason_of = [&](const Schedule& s) {
    for (const auto& c : all)
      if (c.schedule == s) return c.reason;
    ADD_FAILURE() << "not enumerated: " << s.str();
    return std::string();
  };
  // Divisibility: 64 rows over 8 warps is 8 rows per warp.
  EXPECT_TRUE(contains(reason_of({64, 32, 8, 1}), "rows per warp")) << reason_of({64, 32, 8, 1});
  // Registers: 32 rows per warp at D=256.
  EXPECT_TRUE(contains(reason_of({128, 32, 4, 1}), "holds too much per warp")) << reason_of({128, 32, 4, 1});
  // Shared memory: (128 + 4 * 128) * 264 * 2 bytes on a 99 KiB part.
  EXPECT_TRUE(contains(reason_of({128, 128, 8, 2}), "shared memory")) << reason_of({128, 128, 8, 2});
  // Feasible there: 64x32 tiles, 4 warps, 2 stages (the D=256 default).
  EXPECT_TRUE(reason_of({64, 32, 4, 2}).empty());
}

TEST(ScheduleSpace, ARestrictedSpaceEnumeratesOnlyItsValues) {
  const auto all =
      enumerate_schedules(ScheduleSpace{}.with_block_m({128}).with_num_warps({4}).with_stages({2}), 64, 227 * 1024);
  ASSERT_EQ(all.size(), 3u);
  for (const auto& c : all) {
    EXPECT_EQ(c.schedule.block_m, 128);
    EXPECT_TRUE(c.feasible) << c.schedule.str() << ": " << c.reason;
  }
  // A value the template does not support is pruned, not compiled.
  const auto odd = enumerate_schedules(ScheduleSpace{}.with_block_m({96}), 64, 227 * 1024);
  for (const auto& c : odd) EXPECT_TRUE(contains(c.reason, "block_m 96 is not allowed")) << c.reason;
}

}  // namespace
}  // namespace attnjit
