// A fixed set of threads for work that may block (password hashing, synchronous storage),
// with a bounded queue so overload is refused instead of queued without limit.
//
// Lifecycle: threads start in the constructor; stop() refuses new work, lets the workers
// finish what is queued and joins them (the destructor calls it). try_post and stop are
// thread-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hearth::net {

class WorkerPool {
 public:
  WorkerPool(int threads, std::size_t max_queue);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False (fn not run) if the queue holds max_queue tasks or the pool stopped. A task that
  // throws is caught and ignored.
  bool try_post(std::function<void()> fn);
  void stop();
  std::size_t queued() const;

 private:
  void work();

  std::size_t max_queue_;
  mutable std::mutex mutex_;
  std::mutex join_mutex_;  // stop() may race with the destructor or another stop()
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace hearth::net
