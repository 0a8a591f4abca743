// The CPU backend's worker threads: one pool per process, sized to the machine (one worker
// per CPU the process may run on, the calling thread included), started on first use and kept.
//
// parallel_for hands out task indices dynamically (an atomic counter), so uneven tasks
// (causal blocks) balance. One parallel_for runs at a time; a call that finds the pool busy
// (another thread's forward, or a call from inside a task) runs its tasks on the calling
// thread instead of waiting, so nesting and concurrent callers never deadlock.
#pragma once

#include <functional>

namespace attnjit::cpu {

class ThreadPool {
 public:
  // The process's pool.
  static ThreadPool& instance();

  int size() const;  // workers, the caller included

  // Calls body(worker, task) for every task in [0, tasks), on at most `max_workers` workers
  // (0: all); worker ids are in [0, size()). The first exception is rethrown here after
  // the other workers stop taking tasks.
  void parallel_for(int tasks, const std::function<void(int worker, int task)>& body, int max_workers = 0);

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  ThreadPool();
  ~ThreadPool();
  struct State;
  State* state_;
};

}  // namespace attnjit::cpu
