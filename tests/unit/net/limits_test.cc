#include "net/limits.h"

#include <gtest/gtest.h>

namespace hearth::net {
namespace {

TEST(RateLimiter, BurstThenLimitedThenRefills) {
  ManualClock clock;
  RateLimiter limiter(2, 3, clock);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.acquire("1.2.3.4").allowed) << i;
  auto denied = limiter.acquire("1.2.3.4");
  EXPECT_FALSE(denied.allowed);
  EXPECT_GE(denied.retry_after_seconds, 1);
  clock.advance_ms(500);  // 2/s: one token back
  EXPECT_TRUE(limiter.acquire("1.2.3.4").allowed);
  EXPECT_FALSE(limiter.acquire("1.2.3.4").allowed);
}

TEST(RateLimiter, RetryAfterCoversSlowRates) {
  ManualClock clock;
  RateLimiter limiter(0.1, 1, clock);  // one request per 10 s
  EXPECT_TRUE(limiter.acquire("a").allowed);
  auto d = limiter.acquire("a");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_seconds, 10);
}

TEST(RateLimiter, KeysAreIndependent) {
  ManualClock clock;
  RateLimiter limiter(1, 1, clock);
  EXPECT_TRUE(limiter.acquire("a").allowed);
  EXPECT_FALSE(limiter.acquire("a").allowed);
  EXPECT_TRUE(limiter.acquire("b").allowed);
}

TEST(RateLimiter, ZeroRateIsUnlimited) {
  ManualClock clock;
  RateLimiter limiter(0, 1, clock);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(limiter.acquire("a").allowed);
  EXPECT_EQ(limiter.size(), 0u);
}

TEST(RateLimiter, PrunesRefilledEntries) {
  ManualClock clock;
  RateLimiter limiter(1, 5, clock, /*prune_interval_ms=*/1000);
  for (int i = 0; i < 100; ++i) limiter.acquire("10.0.0." + std::to_string(i));
  EXPECT_EQ(limiter.size(), 100u);
  clock.advance_ms(500);
  limiter.prune();  // half a token back: not full yet
  EXPECT_EQ(limiter.size(), 100u);
  clock.advance_ms(1000);
  limiter.acquire("10.0.0.1");  // prune interval passed: pruned on the way
  EXPECT_EQ(limiter.size(), 1u);
}

TEST(ConnectionTable, GlobalAndPerIpCaps) {
  ConnectionTable table(3, 2);
  EXPECT_EQ(table.try_open("a"), ConnectionTable::Admit::ok);
  EXPECT_EQ(table.try_open("a"), ConnectionTable::Admit::ok);
  EXPECT_EQ(table.try_open("a"), ConnectionTable::Admit::ip_cap);
  EXPECT_EQ(table.try_open("b"), ConnectionTable::Admit::ok);
  EXPECT_EQ(table.try_open("c"), ConnectionTable::Admit::global_cap);
  EXPECT_EQ(table.total(), 3);
  table.close("a");
  EXPECT_EQ(table.count("a"), 1);
  EXPECT_EQ(table.try_open("c"), ConnectionTable::Admit::ok);
  table.close("a");
  table.close("b");
  table.close("c");
  table.close("never-opened");
  EXPECT_EQ(table.total(), 0);
  EXPECT_EQ(table.count("a"), 0);
}

TEST(InflightGate, BoundsAndReleases) {
  InflightGate gate(2);
  EXPECT_TRUE(gate.try_enter());
  EXPECT_TRUE(gate.try_enter());
  EXPECT_FALSE(gate.try_enter());
  EXPECT_EQ(gate.inflight(), 2);
  gate.leave();
  EXPECT_TRUE(gate.try_enter());
}

}  // namespace
TEST(ByteRange, SingleRangesAndRefusals) {
  using R = std::optional<std::pair<std::int64_t, std::int64_t>>;
  EXPECT_EQ(parse_byte_range("bytes=0-99", 1000), R(std::make_pair(0, 99)));
  EXPECT_EQ(parse_byte_range("bytes=900-", 1000), R(std::make_pair(900, 999)));
  EXPECT_EQ(parse_byte_range("bytes=990-2000", 1000), R(std::make_pair(990, 999)));
  EXPECT_EQ(parse_byte_range("bytes=-10", 1000), R(std::make_pair(990, 999)));
  EXPECT_EQ(parse_byte_range("bytes=-5000", 1000), R(std::make_pair(0, 999)));
  EXPECT_EQ(parse_byte_range("bytes=1000-", 1000), R(std::make_pair(-1, -1)));  // 416
  EXPECT_EQ(parse_byte_range("bytes=-0", 1000), R(std::make_pair(-1, -1)));
  for (const char* whole : {"bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=x-", "bytes=-", "bytes=1"})
    EXPECT_EQ(parse_byte_range(whole, 1000), std::nullopt) << whole;
}

}  // namespace hearth::net
