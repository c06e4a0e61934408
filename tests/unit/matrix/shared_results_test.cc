// SharedResults: identical keys are computed once (concurrently or later), errors are not
// kept, and the cache stays within its entry and byte bounds.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <thread>
#include <vector>

#include "matrix/shared_results.h"

namespace hearth::matrix {
namespace {

TEST(SharedResults, SameKeyComputedOnceDifferentKeysSeparately) {
  SharedResults shared(8, 1 << 20);
  int runs = 0;
  auto compute = [&]() -> Result<std::string> { return std::string("state #") + std::to_string(++runs); };
  bool computed = false;
  EXPECT_EQ(**shared.get("room@5", compute, &computed), "state #1");
  EXPECT_TRUE(computed);
  EXPECT_EQ(**shared.get("room@5", compute, &computed), "state #1");
  EXPECT_FALSE(computed);
  EXPECT_EQ(**shared.get("room@6", compute, &computed), "state #2");
  EXPECT_EQ(runs, 2);
}

TEST(SharedResults, ConcurrentCallersWaitForTheOneComputation) {
  SharedResults shared(8, 1 << 20);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> runs{0};
  // The first caller's computation blocks until released; the others arrive meanwhile.
  auto compute = [&]() -> Result<std::string> {
    ++runs;
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
    return std::string("big state");
  };
  std::vector<std::thread> threads;
  std::atomic<int> answers{0};
  bool first_computed = false;
  threads.emplace_back([&] {
    if (**shared.get("k", compute, &first_computed) == "big state") ++answers;
  });
  while (runs.load() == 0) std::this_thread::yield();  // the computation has started
  for (int i = 0; i < 7; ++i)
    threads.emplace_back([&] {
      bool computed = true;
      if (**shared.get("k", compute, &computed) == "big state" && !computed) ++answers;
    });
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(answers.load(), 8);
  EXPECT_TRUE(first_computed);
}

TEST(SharedResults, ErrorsAreNotKeptAndBoundsHold) {
  SharedResults shared(2, 10);
  int runs = 0;
  auto failing = [&]() -> Result<std::string> {
    ++runs;
    return fail(Errc::unavailable, "busy");
  };
  EXPECT_FALSE(shared.get("a", failing));
  EXPECT_FALSE(shared.get("a", failing));
  EXPECT_EQ(runs, 2);
  auto small = [](std::string v) { return [v]() -> Result<std::string> { return v; }; };
  ASSERT_TRUE(shared.get("a", small("1234")));
  ASSERT_TRUE(shared.get("b", small("1234")));
  ASSERT_TRUE(shared.get("c", small("1234")));  // evicts "a" (entries and bytes)
  EXPECT_EQ(shared.size(), 2u);
  bool computed = false;
  ASSERT_TRUE(shared.get("a", small("again"), &computed));
  EXPECT_TRUE(computed);
  ASSERT_TRUE(shared.get("big", small(std::string(11, 'x')), &computed));  // larger than the cache: not kept
  EXPECT_EQ(shared.size(), 2u);
}

}  // namespace
}  // namespace hearth::matrix
