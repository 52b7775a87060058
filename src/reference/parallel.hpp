// A minimal work-sharing loop for the CPU oracle: tasks 0..n-1 handed out one at a time from an
// atomic counter to `threads` std::threads (the caller's thread is one of them). The first
// exception thrown by a task is rethrown on the caller's thread once every worker has stopped.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mxmoe::reference::detail {

// threads <= 0 means all hardware threads.
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// fn(task, worker) with worker in 0..workers-1, where workers = min(threads, n).
template <class Fn>
void parallel_for(std::int64_t n, int workers, Fn&& fn) {
  if (n <= 0) return;
  workers = static_cast<int>(std::min<std::int64_t>(std::max(workers, 1), n));
  std::atomic<std::int64_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](int worker) {
    try {
      for (std::int64_t task; !stop.load(std::memory_order_relaxed) && (task = next.fetch_add(1)) < n;)
        fn(task, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      stop = true;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace mxmoe::reference::detail
