#include "net/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

namespace hearth::net {
namespace {

TEST(WorkerPool, RunsTasksOffTheCallingThread) {
  WorkerPool pool(2, 16);
  std::promise<std::thread::id> ran;
  ASSERT_TRUE(pool.try_post([&] { ran.set_value(std::this_thread::get_id()); }));
  auto f = ran.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_NE(f.get(), std::this_thread::get_id());
}

TEST(WorkerPool, BoundedQueueRefusesWhenFull) {
  WorkerPool pool(1, 2);
  std::promise<void> started, release;
  auto release_future = release.get_future().share();
  ASSERT_TRUE(pool.try_post([&, release_future] {
    started.set_value();
    release_future.wait();
  }));
  started.get_future().wait();  // the only worker is now busy
  std::atomic<int> ran{0};
  EXPECT_TRUE(pool.try_post([&] { ++ran; }));
  EXPECT_TRUE(pool.try_post([&] { ++ran; }));
  EXPECT_FALSE(pool.try_post([&] { ++ran; }));
  EXPECT_EQ(pool.queued(), 2u);
  release.set_value();
  pool.stop();  // drains the queue, then joins
  EXPECT_EQ(ran.load(), 2);
  EXPECT_FALSE(pool.try_post([] {}));
}

TEST(WorkerPool, ThrowingTaskDoesNotKillTheWorker) {
  WorkerPool pool(1, 4);
  std::promise<void> done;
  ASSERT_TRUE(pool.try_post([] { throw std::runtime_error("boom"); }));
  ASSERT_TRUE(pool.try_post([&] { done.set_value(); }));
  EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

}  // namespace
}  // namespace hearth::net
