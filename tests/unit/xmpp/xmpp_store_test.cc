#include "xmpp/xmpp_store.h"

#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "module_test_support.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store.h"

namespace hearth::xmpp {
namespace {

using testing::StoreFixture;

struct XmppStoreTest : StoreFixture {
  std::unique_ptr<XmppStore> xs;

  void SetUp() override { open({}); }
  void open(XmppStoreOptions options) {
    xs.reset();
    ASSERT_TRUE(reopen_store(1));
    xs = std::make_unique<XmppStore>(*db, clock, options);
    ASSERT_TRUE(xs->migrate());
  }
  void TearDown() override {
    xs.reset();
    StoreFixture::TearDown();
  }
};

TEST_F(XmppStoreTest, RosterItemsAndVersions) {
  auto empty = xs->roster("alice@x");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->version, 0);
  EXPECT_TRUE(empty->items.empty());

  RosterItem bob{"bob@x", "Bob", {Subscription::none, true, false}, {"Friends", "Work"}};
  auto v1 = xs->put_roster_item("alice@x", bob);
  ASSERT_TRUE(v1);
  bob.state = {Subscription::to, false, false};
  bob.groups = {"Friends"};
  auto v2 = xs->put_roster_item("alice@x", bob);
  ASSERT_TRUE(v2);
  EXPECT_GT(*v2, *v1);

  auto roster = xs->roster("alice@x");
  ASSERT_TRUE(roster);
  EXPECT_EQ(roster->version, *v2);
  ASSERT_EQ(roster->items.size(), 1u);
  EXPECT_EQ(roster->items[0].name, "Bob");
  EXPECT_EQ(roster->items[0].state, (SubscriptionState{Subscription::to, false, false}));
  EXPECT_EQ(roster->items[0].groups, std::vector<std::string>{"Friends"});
  EXPECT_TRUE(xs->roster("bob@x")->items.empty()) << "rosters are per owner";

  auto one = xs->roster_item("alice@x", "bob@x");
  ASSERT_TRUE(one && *one);
  EXPECT_FALSE(*xs->roster_item("alice@x", "carol@x"));

  auto v3 = xs->remove_roster_item("alice@x", "bob@x");
  ASSERT_TRUE(v3);
  EXPECT_GT(*v3, *v2);
  EXPECT_EQ(xs->remove_roster_item("alice@x", "bob@x").error().code, Errc::not_found);
}

TEST_F(XmppStoreTest, RosterSurvivesReopen) {
  ASSERT_TRUE(xs->put_roster_item("alice@x", {"bob@x", "", {Subscription::both, false, false}, {}}));
  open({});
  auto roster = xs->roster("alice@x");
  ASSERT_TRUE(roster);
  ASSERT_EQ(roster->items.size(), 1u);
  EXPECT_EQ(roster->items[0].state.subscription, Subscription::both);
}

TEST_F(XmppStoreTest, RosterSizeIsBounded) {
  open({2, 10});
  ASSERT_TRUE(xs->put_roster_item("a@x", {"b@x", "", {}, {}}));
  ASSERT_TRUE(xs->put_roster_item("a@x", {"c@x", "", {}, {}}));
  auto third = xs->put_roster_item("a@x", {"d@x", "", {}, {}});
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::resource_exhausted);
  EXPECT_TRUE(xs->put_roster_item("a@x", {"c@x", "renamed", {}, {}})) << "updates do not count";
}

TEST_F(XmppStoreTest, OfflineQueueIsFifoBoundedAndDrained) {
  open({10, 3});
  for (int i = 0; i < 3; ++i) {
    clock.advance_ms(1000);
    ASSERT_TRUE(xs->store_offline("bob@x", "alice@x/phone", "<message>" + std::to_string(i) + "</message>"));
  }
  auto full = xs->store_offline("bob@x", "alice@x/phone", "<message>3</message>");
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::resource_exhausted);
  EXPECT_EQ(*xs->offline_count("bob@x"), 3);
  auto msgs = xs->take_offline("bob@x");
  ASSERT_TRUE(msgs);
  ASSERT_EQ(msgs->size(), 3u);
  EXPECT_EQ((*msgs)[0].stanza, "<message>0</message>");
  EXPECT_EQ((*msgs)[2].stanza, "<message>2</message>");
  EXPECT_LT((*msgs)[0].stored_ms, (*msgs)[1].stored_ms);
  EXPECT_EQ((*msgs)[0].from, "alice@x/phone");
  EXPECT_EQ(*xs->offline_count("bob@x"), 0);
  EXPECT_TRUE(xs->take_offline("bob@x")->empty());
}

TEST_F(XmppStoreTest, ForgetAccountRemovesEverything) {
  ASSERT_TRUE(xs->put_roster_item("a@x", {"b@x", "", {}, {}}));
  ASSERT_TRUE(xs->store_offline("a@x", "b@x", "<message/>"));
  ASSERT_TRUE(xs->forget_account("a@x"));
  EXPECT_TRUE(xs->roster("a@x")->items.empty());
  EXPECT_EQ(xs->roster("a@x")->version, 0);
  EXPECT_EQ(*xs->offline_count("a@x"), 0);
}

}  // namespace
}  // namespace hearth::xmpp

namespace hearth::xmpp {
namespace {

TEST_F(XmppStoreTest, ArchivePagesForwardBackwardAndFilters) {
  for (int i = 0; i < 5; ++i) {
    clock.advance_ms(1000);
    std::string with = i % 2 ? "bob@x" : "carol@x";
    ASSERT_TRUE(xs->archive("alice@x", "id" + std::to_string(i), with, "<message>" + std::to_string(i) + "</message>"));
  }
  ASSERT_TRUE(xs->archive("other@x", "id9", "bob@x", "<message/>"));

  ArchiveQuery q;
  q.max = 2;
  auto first = xs->query_archive("alice@x", q);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->items.size(), 2u);
  EXPECT_EQ(first->items[0].id, "id0");
  EXPECT_FALSE(first->complete);
  EXPECT_EQ(first->count, 5);

  q.after_id = "id3";
  auto tail = xs->query_archive("alice@x", q);
  ASSERT_TRUE(tail);
  ASSERT_EQ(tail->items.size(), 1u);
  EXPECT_EQ(tail->items[0].id, "id4");
  EXPECT_TRUE(tail->complete);

  ArchiveQuery last;
  last.max = 2;
  last.last_page = true;
  auto newest = xs->query_archive("alice@x", last);
  ASSERT_TRUE(newest);
  ASSERT_EQ(newest->items.size(), 2u);
  EXPECT_EQ(newest->items[0].id, "id3") << "pages are oldest first even when paging backwards";
  EXPECT_EQ(newest->items[1].id, "id4");
  EXPECT_FALSE(newest->complete);

  ArchiveQuery before;
  before.before_id = "id1";
  auto older = xs->query_archive("alice@x", before);
  ASSERT_TRUE(older);
  ASSERT_EQ(older->items.size(), 1u);
  EXPECT_EQ(older->items[0].id, "id0");
  EXPECT_TRUE(older->complete);

  ArchiveQuery with;
  with.with = "bob@x";
  auto bob = xs->query_archive("alice@x", with);
  ASSERT_TRUE(bob);
  ASSERT_EQ(bob->items.size(), 2u);
  EXPECT_EQ(bob->count, 2);

  ArchiveQuery range;
  range.start_ms = bob->items[0].stamp_ms;
  range.end_ms = bob->items[1].stamp_ms;
  auto middle = xs->query_archive("alice@x", range);
  ASSERT_TRUE(middle);
  EXPECT_EQ(middle->items.size(), 3u);

  ArchiveQuery unknown;
  unknown.after_id = "id9";  // another account's item
  auto missing = xs->query_archive("alice@x", unknown);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);

  ASSERT_TRUE(xs->forget_account("alice@x"));
  EXPECT_EQ(xs->query_archive("alice@x", {})->count, 0);
  EXPECT_EQ(xs->query_archive("other@x", {})->count, 1);
}

}  // namespace
}  // namespace hearth::xmpp

namespace hearth::xmpp {
namespace {

TEST_F(XmppStoreTest, RetentionPurgesInBatchesAndHonoursAccountsOwnValues) {
  constexpr std::int64_t kDay = 86'400'000;
  for (int i = 0; i < 5; ++i) {  // 40 days before the purge
    ASSERT_TRUE(xs->archive("alice@x", "a" + std::to_string(i), "bob@x", "<message/>"));
    ASSERT_TRUE(xs->archive("keep@x", "k" + std::to_string(i), "bob@x", "<message/>"));
  }
  clock.advance_ms(37 * kDay);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(xs->archive("short@x", "s" + std::to_string(i), "bob@x", "<message/>"));
  clock.advance_ms(2 * kDay);
  ASSERT_TRUE(xs->archive("alice@x", "fresh", "bob@x", "<message/>"));
  clock.advance_ms(kDay);
  std::int64_t now = clock.now_ms();
  ASSERT_TRUE(xs->set_archive_retention("keep@x", 0));
  ASSERT_TRUE(xs->set_archive_retention("short@x", 2));
  EXPECT_EQ(xs->archive_retention("short@x")->value_or(-1), 2);
  EXPECT_FALSE(*xs->archive_retention("alice@x"));

  std::int64_t total = 0;
  int rounds = 0;
  for (;;) {
    auto n = xs->purge_expired_archive(30, now, 3);
    ASSERT_TRUE(n);
    EXPECT_LE(*n, 3) << "never more than a batch per transaction";
    total += *n;
    ++rounds;
    if (*n < 3) break;
  }
  EXPECT_EQ(total, 10) << "alice's five old ones and short@x's five";
  EXPECT_GE(rounds, 4);
  ArchiveQuery all;
  all.max = 100;
  EXPECT_EQ(xs->query_archive("alice@x", all)->items.size(), 1u);
  EXPECT_EQ(xs->query_archive("keep@x", all)->items.size(), 5u);
  EXPECT_TRUE(xs->query_archive("short@x", all)->items.empty());

  // Back to the default: keep@x's old messages go too; 0 as the default keeps everything.
  ASSERT_TRUE(xs->set_archive_retention("keep@x", std::nullopt));
  EXPECT_EQ(*xs->purge_expired_archive(0, now, 100), 0);
  EXPECT_EQ(*xs->purge_expired_archive(30, now, 100), 5);
}

}  // namespace
}  // namespace hearth::xmpp

namespace hearth::xmpp {
namespace {

// The store stamps rows as it writes them and never goes back in time, so that an archive
// read in (stamp, seq) order is read in the order its rows became visible; time filters
// and paging by id are exact on that order.
TEST_F(XmppStoreTest, RowsAreStampedWhenWrittenAndTimeFiltersAreExact) {
  constexpr std::int64_t kMinute = 60'000;
  const std::int64_t t0 = clock.now_ms();
  // a, b at t0; c at t0+1m; d at t0+2m (carol); e, f at t0+3m.
  for (const char* id : {"a", "b", "c", "d", "e", "f"}) {
    if (std::string_view(id) == "c" || std::string_view(id) == "d" || std::string_view(id) == "e")
      clock.advance_ms(kMinute);
    ASSERT_TRUE(xs->archive("alice@x", id, std::string_view(id) == "d" ? "carol@x" : "bob@x", "<message/>"));
    ASSERT_TRUE(xs->archive("zed@x", std::string("z") + id, "bob@x", "<message/>"));
  }
  auto ids = [&](ArchiveQuery q) {
    q.max = 100;
    auto page = xs->query_archive("alice@x", q);
    EXPECT_TRUE(page);
    std::vector<std::string> out;
    if (!page) return out;
    for (const auto& item : page->items) out.push_back(item.id);
    if (q.after_id.empty() && q.before_id.empty()) {  // the count ignores paging
      EXPECT_EQ(page->count, static_cast<std::int64_t>(out.size()));
    }
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(xs->query_archive("alice@x", {})->items.front().stamp_ms, t0);
  EXPECT_EQ(ids({.start_ms = t0 + kMinute}), (V{"c", "d", "e", "f"}));
  EXPECT_EQ(ids({.end_ms = t0 + kMinute}), (V{"a", "b", "c"}));
  EXPECT_EQ(ids({.start_ms = t0 + kMinute, .end_ms = t0 + 2 * kMinute}), (V{"c", "d"}));
  EXPECT_EQ(ids({.with = "carol@x", .start_ms = t0}), (V{"d"}));
  EXPECT_EQ(ids({.with = "bob@x", .end_ms = t0 + 2 * kMinute}), (V{"a", "b", "c"}));
  EXPECT_EQ(ids({.start_ms = t0 + 10 * kMinute}), V{});
  // Paging by id, inside a time range and across rows of the same millisecond.
  EXPECT_EQ(ids({.after_id = "a"}), (V{"b", "c", "d", "e", "f"}));
  EXPECT_EQ(ids({.start_ms = t0 + kMinute, .after_id = "e"}), (V{"f"}));
  EXPECT_EQ(ids({.before_id = "f"}), (V{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(ids({.with = "bob@x", .after_id = "b", .before_id = "f"}), (V{"c", "e"}));
}

// A row written after a backward step of the clock keeps the newest stamp so far.
TEST_F(XmppStoreTest, StampsNeverGoBackAcrossRestarts) {
  clock.advance_ms(60'000);
  ASSERT_TRUE(xs->archive("alice@x", "late", "bob@x", "<message/>"));
  ManualClock behind;  // earlier than `clock`
  auto reopened = std::make_unique<XmppStore>(*db, behind);
  ASSERT_TRUE(reopened->migrate());
  ASSERT_TRUE(reopened->archive("alice@x", "later", "bob@x", "<message/>"));
  auto page = reopened->query_archive("alice@x", {});
  ASSERT_TRUE(page);
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].id, "late");
  EXPECT_EQ(page->items[1].id, "later");
  EXPECT_EQ(page->items[1].stamp_ms, page->items[0].stamp_ms);
}

TEST(ArchiveIdTest, IdsSortByTimeAndAreUnique) {
  auto a = new_archive_id(1'800'000'000'000);
  auto b = new_archive_id(1'800'000'000'001);
  auto c = new_archive_id(1'800'000'000'001);
  EXPECT_LT(a, b);
  EXPECT_NE(b, c);
  EXPECT_EQ(b.substr(0, 9), c.substr(0, 9));
  EXPECT_LT(new_archive_id(999), new_archive_id(1'000));
  EXPECT_EQ(a.size(), 25u);
}

}  // namespace
}  // namespace hearth::xmpp
