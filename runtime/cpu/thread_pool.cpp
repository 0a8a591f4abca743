// The CPU backend's thread pool (see thread_pool.hpp).
#include "runtime/cpu/thread_pool.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace attnjit::cpu {

struct ThreadPool::State {
  std::vector<std::thread> threads;
  std::mutex busy;  // held by the caller of the running parallel_for

  // The current job, published under `mutex` with a new generation.
  std::mutex mutex;
  std::condition_variable wake, finished;
  std::uint64_t generation = 0;
  const std::function<void(int, int)>* body = nullptr;
  int tasks = 0, helpers_wanted = 0, helpers_joined = 0, helpers_done = 0;
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;

  // Takes tasks until none is left (or one failed).
  void work(int worker) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const int task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= tasks) return;
      try {
        (*body)(worker, task);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  }

  void helper_loop(int worker) {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return generation != seen && helpers_joined < helpers_wanted; });
        seen = generation;
        ++helpers_joined;
      }
      work(worker);
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (++helpers_done == helpers_wanted) finished.notify_one();
      }
    }
  }
};

ThreadPool& ThreadPool::instance() {
  // Never destroyed: the helpers wait on the pool's state until the process ends.
  static ThreadPool* pool = new ThreadPool();
  return *pool;
}

namespace {
// The CPUs this process may run on (taskset, cpusets), else the hardware threads.
int machine_workers() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}
}  // namespace

ThreadPool::ThreadPool() : state_(new State) {
  const int n = machine_workers();
  for (int w = 1; w < n; ++w) state_->threads.emplace_back([this, w] { state_->helper_loop(w); });
}

ThreadPool::~ThreadPool() = default;  // unreachable: instance() never destroys the pool

int ThreadPool::size() const { return static_cast<int>(state_->threads.size()) + 1; }

void ThreadPool::parallel_for(int tasks, const std::function<void(int, int)>& body, int max_workers) {
  if (tasks <= 0) return;
  const int workers = std::min({max_workers > 0 ? max_workers : size(), size(), tasks});
  std::unique_lock<std::mutex> busy(state_->busy, std::try_to_lock);
  if (workers == 1 || !busy.owns_lock()) {  // alone, nested, or another caller holds the pool
    for (int t = 0; t < tasks; ++t) body(0, t);
    return;
  }
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.body = &body;
    s.tasks = tasks;
    s.next = 0;
    s.failed = false;
    s.error = nullptr;
    s.helpers_wanted = workers - 1;
    s.helpers_joined = 0;
    s.helpers_done = 0;
    ++s.generation;
  }
  s.wake.notify_all();
  s.work(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    s.finished.wait(lock, [&] { return s.helpers_done == s.helpers_wanted; });
    error = s.error;
    s.body = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace attnjit::cpu
