// Search: the FTS5 query built from a user's term (quoting, limits, key columns, bad
// input), and the index on a real SQLite store (new events, redactions, the background
// backfill of events stored before the index, rooms the user is not in).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/log.h"
#include "core/metrics.h"
#include "matrix/room_store.h"
#include "matrix/search.h"
#include "room_store_fixture.h"

namespace hearth::matrix {
namespace {

TEST(FtsQuery, QuotesEachWordAndPrefixesTheLast) {
  std::vector<std::string> words;
  auto q = fts_query("Hello, World", {}, &words);
  ASSERT_TRUE(q);
  EXPECT_EQ(*q, R"("Hello" "World"*)");
  EXPECT_EQ(words, (std::vector<std::string>{"hello", "world"}));
}

TEST(FtsQuery, OperatorsAndQuotesInTheTermAreJustText) {
  auto q = fts_query(R"(a" OR body:x NEAR(y) {body} : * -)", {});
  ASSERT_TRUE(q);
  EXPECT_EQ(*q, R"("a" "OR" "body" "x" "NEAR" "y" "body"*)");  // "body" has 4 bytes: a prefix
  auto unicode = fts_query("Grüße – café", {});
  ASSERT_TRUE(unicode);
  // Non-ASCII bytes count as letters here; FTS5's tokenizer drops the dash's empty phrase.
  EXPECT_EQ(*unicode, "\"Grüße\" \"–\" \"café\"*");
}

TEST(FtsQuery, ShortLastWordsAreNoPrefix) {
  EXPECT_EQ(*fts_query("meet at 10", {}), R"("meet" "at" "10")");
  EXPECT_EQ(*fts_query("meet at 100", {}), R"("meet" "at" "100"*)");
}

TEST(FtsQuery, KeysBecomeAColumnFilter) {
  auto q = fts_query("xyz", {"content.name", "content.topic", "content.name"});
  ASSERT_TRUE(q);
  EXPECT_EQ(*q, R"({name topic} : ("xyz"*))");
  EXPECT_FALSE(fts_query("x", {"content.other"}));
  EXPECT_FALSE(fts_query("x", {"sender"}));
}

TEST(FtsQuery, RefusesEmptyHugeAndWordyTerms) {
  for (std::string_view bad : {"", "   ", "!?* \"\"", "\"\"\""}) {
    auto q = fts_query(bad, {});
    ASSERT_FALSE(q) << bad;
    EXPECT_EQ(q.error().code, Errc::invalid_argument);
  }
  EXPECT_FALSE(fts_query(std::string(kMaxSearchTermBytes + 1, 'a'), {}));
  EXPECT_TRUE(fts_query(std::string(kMaxSearchTermBytes, 'a'), {}));
  std::string many;
  for (std::size_t i = 0; i <= kMaxSearchWords; ++i) many += "w ";
  EXPECT_FALSE(fts_query(many, {}));
}

struct SearchStoreTest : RoomStoreFixture {
  void SetUp() override {
    RoomStoreFixture::SetUp();
    if (HasFatalFailure()) return;
    room("!r:hs", "@a:hs");
    room("!other:hs", "@z:hs");
  }
  void room(const std::string& id, const std::string& creator) {
    auto r = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
      RoomAppender room = rooms.new_room(id, RoomVersion::v11);
      for (auto [type, key, body] : std::initializer_list<std::tuple<std::string, std::string, std::string>>{
               {"m.room.create", "", R"({"room_version":"11"})"},
               {"m.room.member", creator, R"({"membership":"join"})"},
               {"m.room.join_rules", "", R"({"join_rule":"public"})"},
               {"m.room.topic", "", R"({"topic":"weekly planning"})"}}) {
        auto a = rooms.append(tx, room, NewEvent{type, key, creator, *parse_json(body), {}, {}, {}}, 1000);
        if (!a) return tl::unexpected(a.error());
      }
      return true;
    });
    ASSERT_TRUE(r) << r.error().describe();
  }
  AppendedEvent send(const std::string& room_id, const std::string& sender, const std::string& body) {
    auto r = db->write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
      auto room = rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      return rooms.append(tx, *room, NewEvent{"m.room.message", std::nullopt, sender, *parse_json(body), {}, {}, {}}, 2000);
    });
    EXPECT_TRUE(r) << r.error().describe();
    return r ? *r : AppendedEvent{};
  }
  std::vector<std::int64_t> hits(const std::string& user, std::string_view term, std::vector<std::string> keys = {}) {
    auto q = fts_query(term, keys);
    EXPECT_TRUE(q);
    auto r = db->read_sync([&](store::Transaction& tx) { return search_events(tx, user, *q, false, 0, 50); });
    EXPECT_TRUE(r) << r.error().describe();
    std::vector<std::int64_t> out;
    if (r)
      for (const auto& h : *r) out.push_back(h.stream);
    return out;
  }
};

TEST_F(SearchStoreTest, FindsNewEventsOfTheUsersRoomsOnlyNewestFirst) {
  auto one = send("!r:hs", "@a:hs", R"({"msgtype":"m.text","body":"Lunch at noon?"})");
  auto two = send("!r:hs", "@a:hs", R"({"msgtype":"m.text","body":"lunchtime moved"})");
  send("!other:hs", "@z:hs", R"({"msgtype":"m.text","body":"lunch elsewhere"})");
  send("!r:hs", "@a:hs", R"({"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"lunch"})");  // no body: not indexed
  EXPECT_EQ(hits("@a:hs", "lunch"), (std::vector<std::int64_t>{two.stream, one.stream}));  // "lunch" prefixes lunchtime
  EXPECT_EQ(hits("@a:hs", "noon lunch"), (std::vector<std::int64_t>{one.stream}));
  EXPECT_EQ(hits("@nobody:hs", "lunch"), std::vector<std::int64_t>{});
  EXPECT_EQ(hits("@a:hs", "planning").size(), 1u);                         // the topic
  EXPECT_EQ(hits("@a:hs", "planning", {"content.body"}).size(), 0u);       // not a body
  EXPECT_EQ(hits("@a:hs", "planning", {"content.topic"}).size(), 1u);
}

TEST_F(SearchStoreTest, RedactedEventsLeaveTheIndex) {
  auto e = send("!r:hs", "@a:hs", R"({"msgtype":"m.text","body":"secret plan"})");
  ASSERT_EQ(hits("@a:hs", "secret").size(), 1u);
  auto r = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto room = rooms.load_room(tx, "!r:hs");
    if (!room) return tl::unexpected(room.error());
    auto red = rooms.append(tx, *room, NewEvent{"m.room.redaction", std::nullopt, "@a:hs",
                                                *parse_json(R"({"redacts":")" + e.event_id + "\"}"), {}, {}, e.event_id},
                            3000);
    if (!red) return tl::unexpected(red.error());
    if (auto a = rooms.apply_redaction(tx, *room, e.event_id, red->event_id); !a) return tl::unexpected(a.error());
    return true;
  });
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(hits("@a:hs", "secret").size(), 0u);
}

TEST_F(SearchStoreTest, BackfillIndexesOlderEventsInBatches) {
  std::vector<AppendedEvent> sent;
  for (int i = 0; i < 7; ++i) sent.push_back(send("!r:hs", "@a:hs", R"({"msgtype":"m.text","body":"old news"})"));
  // As if these events had been stored before the index existed.
  auto reset = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
    if (auto d = tx.exec("DELETE FROM matrix_search"); !d) return tl::unexpected(d.error());
    auto u = tx.exec("UPDATE matrix_positions SET value = (SELECT MAX(stream) + 1 FROM matrix_events) WHERE name = "
                     "'search_backfill'");
    if (!u) return tl::unexpected(u.error());
    return true;
  });
  ASSERT_TRUE(reset);
  auto fresh = send("!r:hs", "@a:hs", R"({"msgtype":"m.text","body":"fresh news"})");
  EXPECT_EQ(hits("@a:hs", "news"), std::vector<std::int64_t>{fresh.stream});
  int batches = 0;
  for (bool done = false; !done; ++batches) {
    ASSERT_LT(batches, 100);
    auto r = db->write_sync([&](store::Transaction& tx) { return backfill_search_batch(tx, 3); });
    ASSERT_TRUE(r) << r.error().describe();
    done = *r;
  }
  EXPECT_GE(batches, 3);  // 7 messages and 8 set-up events, 3 at a time
  EXPECT_EQ(hits("@a:hs", "news").size(), 8u);
  EXPECT_EQ(hits("@a:hs", "planning").size(), 1u);
  auto again = db->write_sync([&](store::Transaction& tx) { return backfill_search_batch(tx, 3); });
  ASSERT_TRUE(again);
  EXPECT_TRUE(*again);
}

}  // namespace
}  // namespace hearth::matrix
