// The schedule space the autotuner searches: every combination of tile sizes, warps and
// pipeline stages the forward template accepts, each candidate either feasible or pruned
// with the reason (Schedule::validate's message) before anything is compiled. Pruning
// here is what keeps `attnjit tune` from spending NVRTC time on kernels that cannot run.
#pragma once

#include <string>
#include <vector>

#include "compiler/schedule.hpp"

namespace attnjit {

struct ScheduleSpace {
  std::vector<int> block_m = {64, 128};
  std::vector<int> block_n = {32, 64, 128};
  std::vector<int> num_warps = {4, 8};
  std::vector<int> stages = {1, 2};

  ScheduleSpace& with_block_m(std::vector<int> v) {
    block_m = std::move(v);
    return *this;
  }
  ScheduleSpace& with_block_n(std::vector<int> v) {
    block_n = std::move(v);
    return *this;
  }
  ScheduleSpace& with_num_warps(std::vector<int> v) {
    num_warps = std::move(v);
    return *this;
  }
  ScheduleSpace& with_stages(std::vector<int> v) {
    stages = std::move(v);
    return *this;
  }
  std::size_t size() const { return block_m.size() * block_n.size() * num_warps.size() * stages.size(); }
};

struct ScheduleCandidate {
  Schedule schedule;
  bool feasible = true;
  std::string reason;  // why it was pruned; empty when feasible
};

// Every schedule of `space`, in a fixed order (block_m, block_n, warps, stages ascending),
// judged by Schedule::validate(head_dim, max_shared_memory_bytes).
std::vector<ScheduleCandidate> enumerate_schedules(const ScheduleSpace& space, int head_dim,
                                                   int max_shared_memory_bytes);

// The feasible ones only.
std::vector<Schedule> feasible_schedules(const ScheduleSpace& space, int head_dim, int max_shared_memory_bytes);

}  // namespace attnjit
