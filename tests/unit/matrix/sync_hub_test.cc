// SyncHub: the long-poll bookkeeping of /sync. A waiter parks only if nothing was
// committed since it read; wake() hands out exactly the waiters of the touched keys,
// once; take() (the timeout) and wake() never both get the same waiter.
#include <gtest/gtest.h>

#include "matrix/service_internal.h"

namespace hearth::matrix {
namespace {

std::shared_ptr<SyncHub::Waiter> waiter(SyncHub& hub, std::vector<std::string> keys) {
  auto w = std::make_shared<SyncHub::Waiter>();
  w->id = hub.next_id();
  w->keys = std::move(keys);
  return w;
}

TEST(SyncHub, ParksOnlyWhenNothingChangedSinceTheRead) {
  SyncHub hub;
  std::uint64_t seen = hub.generation();
  hub.wake({"!other:hs"});  // a commit between the read and the park
  EXPECT_FALSE(hub.park(waiter(hub, {"!r:hs"}), seen));
  EXPECT_EQ(hub.size(), 0u);
  EXPECT_TRUE(hub.park(waiter(hub, {"!r:hs"}), hub.generation()));
  EXPECT_EQ(hub.size(), 1u);
}

TEST(SyncHub, WakeHandsOutTheWaitersOfTheTouchedKeysOnce) {
  SyncHub hub;
  auto a = waiter(hub, {"!r1:hs", "@a:hs"});
  auto b = waiter(hub, {"!r2:hs", "@b:hs"});
  auto c = waiter(hub, {"!r1:hs", "!r2:hs", "@c:hs"});
  for (auto& w : {a, b, c}) ASSERT_TRUE(hub.park(w, hub.generation()));
  auto woken = hub.wake({"!r1:hs", "!r2:hs"});  // c is in both rooms: once
  EXPECT_EQ(woken.size(), 3u);
  EXPECT_EQ(hub.size(), 0u);
  EXPECT_TRUE(hub.wake({"!r1:hs"}).empty());
}

TEST(SyncHub, TimeoutAndWakeNeverShareAWaiter) {
  SyncHub hub;
  auto a = waiter(hub, {"@a:hs"});
  ASSERT_TRUE(hub.park(a, hub.generation()));
  EXPECT_EQ(hub.take(a->id), a);
  EXPECT_TRUE(hub.wake({"@a:hs"}).empty());
  EXPECT_EQ(hub.take(a->id), nullptr);
  auto b = waiter(hub, {"@b:hs"});
  ASSERT_TRUE(hub.park(b, hub.generation()));
  EXPECT_EQ(hub.wake({"@b:hs"}).size(), 1u);
  EXPECT_EQ(hub.take(b->id), nullptr);
}

TEST(SyncHub, TakeAllEmptiesTheHub) {
  SyncHub hub;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(hub.park(waiter(hub, {"!r:hs"}), hub.generation()));
  EXPECT_EQ(hub.take_all().size(), 3u);
  EXPECT_EQ(hub.size(), 0u);
  EXPECT_TRUE(hub.wake({"!r:hs"}).empty());
}

}  // namespace
}  // namespace hearth::matrix
