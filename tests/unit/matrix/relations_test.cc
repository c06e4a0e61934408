// Relations: which contents name a relation, the spec's edit validity rules, the bundled
// aggregation JSON, and the index on a real SQLite store (written with the event, dropped
// by a redaction, paged by related_events, thread roots by latest activity).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "core/log.h"
#include "core/metrics.h"
#include "matrix/relations.h"
#include "room_store_fixture.h"

namespace hearth::matrix {
namespace {

JsonValue json(std::string_view text) { return *parse_json(text); }

TEST(RelationOf, NeedsRelTypeAndEventIdAsNonEmptyBoundedStrings) {
  auto r = relation_of(json(R"({"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rel_type, "m.thread");
  EXPECT_EQ(r->parent_id, "$root");
  EXPECT_FALSE(relation_of(json(R"({"body":"x"})")));
  EXPECT_FALSE(relation_of(json(R"({"m.relates_to":{"m.in_reply_to":{"event_id":"$a"}}})")));  // a reply
  EXPECT_FALSE(relation_of(json(R"({"m.relates_to":{"rel_type":"m.thread"}})")));
  EXPECT_FALSE(relation_of(json(R"({"m.relates_to":{"rel_type":"","event_id":"$a"}})")));
  EXPECT_FALSE(relation_of(json(R"({"m.relates_to":{"rel_type":7,"event_id":"$a"}})")));
  EXPECT_FALSE(relation_of(json(R"({"m.relates_to":"m.thread"})")));
  std::string long_id(256, 'a');
  EXPECT_FALSE(relation_of(json(R"({"m.relates_to":{"rel_type":"m.thread","event_id":")" + long_id + "\"}}")));
}

TEST(IsValidEdit, FollowsTheSpecRules) {
  JsonValue original = json(R"({"event_id":"$o","room_id":"!r","sender":"@a","type":"m.room.message",
                                "content":{"body":"x"}})");
  auto edit = [](std::string_view sender, std::string_view type, std::string_view extra) {
    return json(std::string(R"({"event_id":"$e","room_id":"!r","sender":")") + std::string(sender) +
                R"(","type":")" + std::string(type) +
                R"(","content":{"m.relates_to":{"rel_type":"m.replace","event_id":"$o"})" + std::string(extra) + "}}");
  };
  EXPECT_TRUE(is_valid_edit(original, edit("@a", "m.room.message", R"(,"m.new_content":{"body":"y"})")));
  EXPECT_FALSE(is_valid_edit(original, edit("@b", "m.room.message", R"(,"m.new_content":{"body":"y"})")));
  EXPECT_FALSE(is_valid_edit(original, edit("@a", "m.sticker", R"(,"m.new_content":{"body":"y"})")));
  EXPECT_FALSE(is_valid_edit(original, edit("@a", "m.room.message", "")));  // no m.new_content
  EXPECT_FALSE(is_valid_edit(original, edit("@a", "m.room.message", R"(,"m.new_content":"y")")));
  JsonValue encrypted_original = original;
  encrypted_original.set("type", JsonValue::string("m.room.encrypted"));
  EXPECT_TRUE(is_valid_edit(encrypted_original, edit("@a", "m.room.encrypted", "")));  // new content is encrypted
  JsonValue state = original;
  state.set("state_key", JsonValue::string(""));
  EXPECT_FALSE(is_valid_edit(state, edit("@a", "m.room.message", R"(,"m.new_content":{})")));
  JsonValue an_edit = original;
  an_edit.set("content", json(R"({"m.relates_to":{"rel_type":"m.replace","event_id":"$x"},"m.new_content":{}})"));
  EXPECT_FALSE(is_valid_edit(an_edit, edit("@a", "m.room.message", R"(,"m.new_content":{})")));
  JsonValue elsewhere = original;
  elsewhere.set("event_id", JsonValue::string("$other"));
  EXPECT_FALSE(is_valid_edit(elsewhere, edit("@a", "m.room.message", R"(,"m.new_content":{})")));
}

TEST(AggregationJson, EmptyWhenNothingToBundleElseEachKind) {
  EXPECT_EQ(aggregation_json({}), "");
  Aggregation a;
  a.thread = Aggregation::Thread{R"({"event_id":"$l"})", 3, true};
  a.replace = R"({"event_id":"$e"})";
  a.references = {"$r1", "$r2"};
  auto v = parse_json(aggregation_json(a));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->get("m.thread")->get("count")->as_int(), 3);
  EXPECT_TRUE(v->get("m.thread")->get("current_user_participated")->as_bool());
  EXPECT_EQ(v->get("m.thread")->get("latest_event")->string_at("event_id"), "$l");
  EXPECT_EQ(v->get("m.replace")->string_at("event_id"), "$e");
  ASSERT_EQ(v->get("m.reference")->get("chunk")->items().size(), 2u);
  EXPECT_EQ(v->get("m.reference")->get("chunk")->items()[1].string_at("event_id"), "$r2");
}

struct RelationsStoreTest : RoomStoreFixture {
  std::int64_t now = 1000;

  void SetUp() override {
    RoomStoreFixture::SetUp();
    if (HasFatalFailure()) return;
    auto r = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
      RoomAppender room = rooms.new_room("!r:hs", RoomVersion::v11);
      for (auto [type, key, body] : std::initializer_list<std::tuple<std::string, std::string, std::string>>{
               {"m.room.create", "", R"({"room_version":"11"})"},
               {"m.room.member", "@a:hs", R"({"membership":"join"})"},
               {"m.room.power_levels", "", R"({"users":{"@a:hs":100}})"},
               {"m.room.join_rules", "", R"({"join_rule":"public"})"},
               {"m.room.member", "@b:hs", R"({"membership":"join"})"}}) {
        auto a = rooms.append(tx, room, NewEvent{type, key, key.empty() ? "@a:hs" : key, json(body), {}, {}, {}}, 1000);
        if (!a) return tl::unexpected(a.error());
      }
      return true;
    });
    ASSERT_TRUE(r) << r.error().describe();
  }
  std::string send(std::string sender, std::string body) {
    ++now;  // distinct origin_server_ts: edits are ordered by it
    auto r = db->write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
      auto room = rooms.load_room(tx, "!r:hs");
      if (!room) return tl::unexpected(room.error());
      return rooms.append(tx, *room, NewEvent{"m.room.message", std::nullopt, sender, json(body), {}, {}, {}}, now);
    });
    EXPECT_TRUE(r) << r.error().describe();
    return r ? r->event_id : "";
  }
  static std::string rel(std::string_view type, std::string_view parent, std::string_view extra = "") {
    return fmt::format(R"({{"body":"x","m.relates_to":{{"rel_type":"{}","event_id":"{}"}}{}}})", type, parent, extra);
  }
  JsonValue bundled(const std::string& event_id, const std::string& user) {
    auto r = db->read_sync([&](store::Transaction& tx) -> Result<std::string> {
      auto e = rooms.event(tx, event_id);
      if (!e) return tl::unexpected(e.error());
      if (auto b = bundle_aggregations(tx, **e, user, now); !b) return tl::unexpected(b.error());
      return (*e)->bundled;
    });
    EXPECT_TRUE(r);
    if (!r || r->empty()) return JsonValue();
    return *parse_json(*r);
  }
  std::vector<std::string> page_ids(const RelationQuery& q, std::optional<std::int64_t>* next = nullptr) {
    auto r = db->read_sync([&](store::Transaction& tx) { return related_events(tx, q); });
    EXPECT_TRUE(r);
    std::vector<std::string> ids;
    if (!r) return ids;
    for (const auto& e : r->chunk) ids.push_back(e.event_id);
    if (next) *next = r->next;
    return ids;
  }
};

TEST_F(RelationsStoreTest, ThreadAggregationCountsRepliesAndParticipation) {
  std::string root = send("@a:hs", R"({"body":"root"})");
  EXPECT_TRUE(bundled(root, "@a:hs").is_null());  // nothing to bundle yet
  send("@b:hs", rel("m.thread", root));
  std::string last = send("@b:hs", rel("m.thread", root));
  JsonValue a = bundled(root, "@b:hs");
  ASSERT_TRUE(a.get("m.thread"));
  EXPECT_EQ(a.get("m.thread")->get("count")->as_int(), 2);
  EXPECT_EQ(a.get("m.thread")->get("latest_event")->string_at("event_id"), last);
  EXPECT_TRUE(a.get("m.thread")->get("current_user_participated")->as_bool());
  EXPECT_TRUE(bundled(root, "@a:hs").get("m.thread")->get("current_user_participated")->as_bool());  // the root's sender
  EXPECT_FALSE(bundled(root, "@c:hs").get("m.thread")->get("current_user_participated")->as_bool());
}

TEST_F(RelationsStoreTest, NewestValidEditWinsAndRedactionRemovesIt) {
  std::string root = send("@a:hs", R"({"body":"root"})");
  std::string first = send("@a:hs", rel("m.replace", root, R"(,"m.new_content":{"body":"v1"})"));
  std::string second = send("@a:hs", rel("m.replace", root, R"(,"m.new_content":{"body":"v2"})"));
  send("@b:hs", rel("m.replace", root, R"(,"m.new_content":{"body":"not mine"})"));  // newest, wrong sender
  send("@a:hs", rel("m.replace", root));  // newest of a, but no m.new_content
  EXPECT_EQ(bundled(root, "@b:hs").get("m.replace")->string_at("event_id"), second);
  auto redacted = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto room = rooms.load_room(tx, "!r:hs");
    if (!room) return tl::unexpected(room.error());
    auto r = rooms.append(tx, *room,
                          NewEvent{"m.room.redaction", std::nullopt, "@a:hs", json(R"({"redacts":")" + second + "\"}"),
                                   {}, {}, second},
                          now + 10);
    if (!r) return tl::unexpected(r.error());
    if (auto a = rooms.apply_redaction(tx, *room, second, r->event_id); !a) return tl::unexpected(a.error());
    return true;
  });
  ASSERT_TRUE(redacted) << redacted.error().describe();
  EXPECT_EQ(bundled(root, "@b:hs").get("m.replace")->string_at("event_id"), first);
  EXPECT_EQ(page_ids({root, "m.replace", "", {}, {}, true, 50, 1}).size(), 3u);  // the redacted edit is unindexed
}

TEST_F(RelationsStoreTest, RelatedEventsPageBothWaysAndRecurse) {
  std::string root = send("@a:hs", R"({"body":"root"})");
  std::vector<std::string> replies;
  for (int i = 0; i < 5; ++i) replies.push_back(send("@b:hs", rel("m.thread", root)));
  std::string nested = send("@b:hs", rel("m.reference", replies[0]));
  std::optional<std::int64_t> next;
  EXPECT_EQ(page_ids({root, "", "", {}, {}, true, 2, 1}, &next), (std::vector<std::string>{replies[4], replies[3]}));
  ASSERT_TRUE(next);
  EXPECT_EQ(page_ids({root, "", "", next, {}, true, 10, 1}, &next),
            (std::vector<std::string>{replies[2], replies[1], replies[0]}));
  EXPECT_FALSE(next);
  EXPECT_EQ(page_ids({root, "m.thread", "", {}, {}, false, 2, 1}, &next),
            (std::vector<std::string>{replies[0], replies[1]}));
  EXPECT_EQ(page_ids({root, "m.reference", "", {}, {}, true, 10, 1}), std::vector<std::string>{});
  EXPECT_EQ(page_ids({root, "m.reference", "", {}, {}, true, 10, 3}), std::vector<std::string>{nested});
  EXPECT_EQ(page_ids({"$unknown", "", "", {}, {}, true, 10, 3}), std::vector<std::string>{});
}

TEST_F(RelationsStoreTest, ThreadRootsByLatestActivity) {
  std::string one = send("@a:hs", R"({"body":"one"})");
  std::string two = send("@b:hs", R"({"body":"two"})");
  send("@a:hs", rel("m.thread", two));
  send("@b:hs", rel("m.thread", one));
  auto roots = [&](std::optional<std::string_view> who, std::optional<std::int64_t> before, int limit,
                   std::optional<std::int64_t>* next = nullptr) {
    auto r = db->read_sync([&](store::Transaction& tx) { return thread_roots(tx, "!r:hs", who, before, limit); });
    EXPECT_TRUE(r);
    std::vector<std::string> ids;
    for (const auto& e : r->roots) ids.push_back(e.event_id);
    if (next) *next = r->next;
    return ids;
  };
  std::optional<std::int64_t> next;
  EXPECT_EQ(roots(std::nullopt, std::nullopt, 1, &next), std::vector<std::string>{one});
  EXPECT_EQ(roots(std::nullopt, next, 1), std::vector<std::string>{two});
  EXPECT_EQ(roots(std::string_view("@a:hs"), std::nullopt, 10), (std::vector<std::string>{one, two}));
  EXPECT_EQ(roots(std::string_view("@c:hs"), std::nullopt, 10), std::vector<std::string>{});
}

}  // namespace
}  // namespace hearth::matrix

namespace hearth::matrix {
namespace {

// A database from before relations, search and threaded receipts: the migrations index
// its events' relations at once, leave its events to the search backfill, and keep its
// receipts (as unthreaded ones).
TEST(RelationMigrations, ExistingEventsAndReceiptsAreCarriedOver) {
  std::string dir = (std::filesystem::temp_directory_path() / ("hearth-relmig-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  {
    auto db = store::Store::open_sqlite({dir + "/db.sqlite", 1, 64, 1000}, log, metrics);
    ASSERT_TRUE(db);
    const auto& all = matrix_migrations();
    std::vector<store::Migration> before(all.begin(), all.begin() + 11);
    ASSERT_EQ(before.back().version, 11);
    ASSERT_TRUE((*db)->migrate("matrix", before));
    auto r = (*db)->write_sync([&](store::Transaction& tx) -> Result<bool> {
      for (auto [stream, id, content] : std::initializer_list<std::tuple<int, const char*, const char*>>{
               {1, "$root", R"({"body":"old root"})"},
               {2, "$reply", R"({"body":"old reply","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}})"},
               {3, "$odd", R"({"body":"x","m.relates_to":{"rel_type":5,"event_id":"$root"}})"}}) {
        std::string client = std::string(R"({"content":)") + content + R"(,"event_id":")" + id +
                             R"(","room_id":"!r:hs","sender":"@a:hs","type":"m.room.message"})";
        auto ins = tx.exec(
            "INSERT INTO matrix_events(stream, event_id, room_id, type, sender, ts, pdu, client) VALUES (?,?,?,?,?,?,?,?)",
            {stream, id, "!r:hs", "m.room.message", "@a:hs", 1000, "{}", client});
        if (!ins) return tl::unexpected(ins.error());
      }
      auto rc = tx.exec("INSERT INTO matrix_receipts(room_id, user_id, type, event_id, ts, serial) VALUES "
                        "('!r:hs', '@a:hs', 'm.read', '$reply', 5, 1)");
      if (!rc) return tl::unexpected(rc.error());
      return true;
    });
    ASSERT_TRUE(r) << r.error().describe();
    ASSERT_TRUE((*db)->migrate("matrix", all));
    auto check = (*db)->read_sync([&](store::Transaction& tx) -> Result<std::string> {
      std::string out;
      auto q = tx.query("SELECT event_id, parent_id, rel_type, stream FROM matrix_relations ORDER BY stream", {},
                        [&](const store::Row& row) {
                          out += fmt::format("{}>{}:{}@{};", row.text(0), row.text(1), row.text(2), row.integer(3));
                        });
      if (!q) return tl::unexpected(q.error());
      auto mark = tx.query_one("SELECT value FROM matrix_positions WHERE name = 'search_backfill'");
      if (!mark) return tl::unexpected(mark.error());
      out += fmt::format("backfill below {};", (*mark)->integer(0));
      auto rc = tx.query_one("SELECT event_id, thread_id FROM matrix_receipts");
      if (!rc) return tl::unexpected(rc.error());
      out += fmt::format("receipt {}[{}]", (*rc)->text(0), (*rc)->text(1));
      return out;
    });
    ASSERT_TRUE(check) << check.error().describe();
    EXPECT_EQ(*check, "$reply>$root:m.thread@2;backfill below 4;receipt $reply[]");
    (*db)->close();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hearth::matrix
