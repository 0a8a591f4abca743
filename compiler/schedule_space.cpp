// Schedule-space enumeration and pruning (see schedule_space.hpp).
#include "compiler/schedule_space.hpp"

#include "compiler/error.hpp"

namespace attnjit {

std::vector<ScheduleCandidate> enumerate_schedules(const ScheduleSpace& space, int head_dim,
                                                   int max_shared_memory_bytes) {
  std::vector<ScheduleCandidate> out;
  out.reserve(space.size());
  for (int m : space.block_m)
    for (int n : space.block_n)
      for (int w : space.num_warps)
        for (int s : space.stages) {
          ScheduleCandidate c;
          c.schedule = Schedule{m, n, w, s};
          try {
            c.schedule.validate(head_dim, max_shared_memory_bytes);
          } catch (const UserError& e) {
            c.feasible = false;
            c.reason = e.what();
          }
          out.push_back(std::move(c));
        }
  return out;
}

std::vector<Schedule> feasible_schedules(const ScheduleSpace& space, int head_dim, int max_shared_memory_bytes) {
  std::vector<Schedule> out;
  for (const auto& c : enumerate_schedules(space, head_dim, max_shared_memory_bytes))
    if (c.feasible) out.push_back(c.schedule);
  return out;
}

}  // namespace attnjit
