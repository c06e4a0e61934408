// RoomStore on a real SQLite store: appends build signed PDUs with reference-hash ids,
// state and memberships are tables, refused events leave nothing behind, transaction ids
// are idempotent, timelines and pagination follow the stream order, and all of it
// survives reopening the database.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/log.h"
#include "core/metrics.h"
#include "matrix/room_store.h"
#include "room_store_fixture.h"

namespace hearth::matrix {
namespace {

struct RoomStoreTest : RoomStoreFixture {
  static JsonValue content(std::string_view text) { return *parse_json(text); }

  Result<AppendedEvent> append(std::string room_id, NewEvent ev) {
    return db->write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
      auto room = rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      if (!ev.txn_id.empty()) {
        auto prior = rooms.find_txn(tx, room_id, ev.sender, ev.txn_device, ev.txn_id);
        if (!prior) return tl::unexpected(prior.error());
        if (*prior) return AppendedEvent{**prior, 0};
      }
      return rooms.append(tx, *room, ev, 1000);
    });
  }

  void create_room(const std::string& room_id, std::string_view join_rule) {
    auto r = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
      RoomAppender room = rooms.new_room(room_id, RoomVersion::v11);
      for (auto [type, key, body] : std::initializer_list<std::tuple<std::string, std::string, std::string>>{
               {"m.room.create", "", R"({"room_version":"11"})"},
               {"m.room.member", "@alice:hs", R"({"membership":"join"})"},
               {"m.room.power_levels", "", R"({"users":{"@alice:hs":100}})"},
               {"m.room.join_rules", "", std::string(R"({"join_rule":")") + std::string(join_rule) + "\"}"}}) {
        auto a = rooms.append(tx, room, NewEvent{type, key, "@alice:hs", content(body), {}, {}, {}}, 1000);
        if (!a) return tl::unexpected(a.error());
      }
      return true;
    });
    ASSERT_TRUE(r) << r.error().describe();
  }
};

TEST_F(RoomStoreTest, EventsAreSignedPdusWithReferenceHashIds) {
  create_room("!a:hs", "invite");
  auto sent = append("!a:hs", NewEvent{"m.room.message", std::nullopt, "@alice:hs", content(R"({"body":"hi"})"), "DEV", "t1", {}});
  ASSERT_TRUE(sent) << sent.error().describe();
  auto pdu = db->read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto row = tx.query_one("SELECT pdu FROM matrix_events WHERE event_id = ?", {sent->event_id});
    if (!row) return tl::unexpected(row.error());
    return std::string((*row)->text(0));
  });
  ASSERT_TRUE(pdu);
  auto parsed = parse_json(*pdu);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(canonical_json(*parsed), *pdu);  // stored canonically
  EXPECT_EQ(event_id_for(*parsed, RoomVersion::v11), sent->event_id);
  std::string pk(reinterpret_cast<const char*>(key.public_key().data()), 32);
  EXPECT_TRUE(verify_json_signature(redact_event(*parsed, RoomVersion::v11), "hs", key.key_id(), pk));
  EXPECT_EQ(parsed->get("depth")->as_int(), 5);
  EXPECT_EQ(parsed->get("prev_events")->items().size(), 1u);
  EXPECT_EQ(parsed->get("auth_events")->items().size(), 3u);  // create, power levels, sender's member
  EXPECT_EQ(base64_unpadded(content_hash(*parsed)), parsed->get("hashes")->string_at("sha256"));
}

TEST_F(RoomStoreTest, RefusedEventsLeaveNoTrace) {
  create_room("!a:hs", "invite");
  auto before = db->read_sync([&](store::Transaction& tx) { return rooms.max_stream(tx); });
  auto r = append("!a:hs", NewEvent{"m.room.member", "@bob:hs", "@bob:hs", content(R"({"membership":"join"})"), {}, {}, {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permission_denied);
  auto after = db->read_sync([&](store::Transaction& tx) { return rooms.max_stream(tx); });
  EXPECT_EQ(*before, *after);
  auto unknown = append("!nope:hs", NewEvent{"m.room.message", std::nullopt, "@alice:hs", content("{}"), {}, {}, {}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
}

TEST_F(RoomStoreTest, TransactionIdsAreIdempotentPerDeviceAndRoom) {
  create_room("!a:hs", "invite");
  NewEvent msg{"m.room.message", std::nullopt, "@alice:hs", content(R"({"body":"once"})"), "DEV", "t1", {}};
  auto a = append("!a:hs", msg);
  auto b = append("!a:hs", msg);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->event_id, b->event_id);
  msg.txn_device = "OTHER";
  auto c = append("!a:hs", msg);
  ASSERT_TRUE(c);
  EXPECT_NE(c->event_id, a->event_id);
  // Scoped per room, like the request path: the same txn id in another room is new.
  create_room("!b:hs", "invite");
  msg.txn_device = "DEV";
  auto d = append("!b:hs", msg);
  ASSERT_TRUE(d);
  EXPECT_NE(d->event_id, a->event_id);
  EXPECT_GT(d->stream, 0);
}

TEST_F(RoomStoreTest, MembershipsStateAndTimelineSurviveReopen) {
  create_room("!a:hs", "public");
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.member", "@bob:hs", "@bob:hs", content(R"({"membership":"join"})"), {}, {}, {}}));
  for (int i = 0; i < 15; ++i)
    ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.message", std::nullopt, "@bob:hs",
                                         content(R"({"body":")" + std::to_string(i) + "\"}"), {}, {}, {}}));
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.name", "", "@alice:hs", content(R"({"name":"one"})"), {}, {}, {}}));
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.name", "", "@alice:hs", content(R"({"name":"two"})"), {}, {}, {}}));
  reopen();
  auto check = db->read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto m = rooms.memberships_of(tx, "@bob:hs");
    EXPECT_TRUE(m);
    EXPECT_EQ(m->size(), 1u);
    EXPECT_EQ((*m)[0].membership, "join");
    auto name = rooms.state_event(tx, "!a:hs", "m.room.name", "");
    EXPECT_TRUE(name && *name);
    EXPECT_NE((*name)->client_json.find("\"two\""), std::string::npos);
    EXPECT_NE((*name)->unsigned_extra.find("\"prev_content\":{\"name\":\"one\"}"), std::string::npos);
    auto state = rooms.current_state(tx, "!a:hs");
    EXPECT_EQ(state->size(), 6u);  // create, 2 members, power levels, join rules, name
    auto max = rooms.max_stream(tx);
    bool more = false;
    auto tl = rooms.timeline(tx, "!a:hs", 0, *max, 10, &more);
    EXPECT_TRUE(more);
    EXPECT_EQ(tl->size(), 10u);
    EXPECT_EQ(tl->back().stream, *max);
    for (std::size_t i = 1; i < tl->size(); ++i) EXPECT_LT((*tl)[i - 1].stream, (*tl)[i].stream);
    // Backwards from just before the timeline, then forwards again.
    auto back = rooms.paginate(tx, "!a:hs", tl->front().stream - 1, true, 5, *max);
    EXPECT_EQ(back->size(), 5u);
    EXPECT_EQ(back->front().stream, tl->front().stream - 1);
    auto fwd = rooms.paginate(tx, "!a:hs", back->back().stream - 1, false, 100, *max);
    EXPECT_EQ(fwd->front().stream, back->back().stream);
    EXPECT_EQ(fwd->back().stream, *max);
    auto members = rooms.members(tx, "!a:hs");
    EXPECT_EQ(members->size(), 2u);
    return true;
  });
  ASSERT_TRUE(check) << check.error().describe();
}

TEST_F(RoomStoreTest, StateAtAStreamPositionIsTheStateAfterThatEvent) {
  create_room("!a:hs", "public");
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.name", "", "@alice:hs", content(R"({"name":"one"})"), {}, {}, {}}));
  auto left = append("!a:hs", NewEvent{"m.room.member", "@bob:hs", "@bob:hs", content(R"({"membership":"join"})"), {}, {}, {}});
  ASSERT_TRUE(left);
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.message", std::nullopt, "@bob:hs", content(R"({"body":"x"})"), {}, {}, {}}));
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.name", "", "@alice:hs", content(R"({"name":"two"})"), {}, {}, {}}));
  ASSERT_TRUE(append("!a:hs", NewEvent{"m.room.topic", "", "@alice:hs", content(R"({"topic":"t"})"), {}, {}, {}}));
  auto check = db->read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto then = rooms.state_at(tx, "!a:hs", left->stream);
    EXPECT_TRUE(then);
    std::vector<std::string> names;
    for (const auto& e : *then) {
      EXPECT_TRUE(e.state_key.has_value());  // no message events
      EXPECT_NE(e.type, "m.room.topic");      // set later
      if (e.type == "m.room.name") names.push_back(e.client_json);
    }
    EXPECT_EQ(then->size(), 6u);  // create, alice, power levels, join rules, name, bob
    EXPECT_EQ(names.size(), 1u);
    EXPECT_NE(names.at(0).find("\"one\""), std::string::npos);
    EXPECT_EQ(rooms.current_state(tx, "!a:hs")->size(), 7u);
    return true;
  });
  ASSERT_TRUE(check) << check.error().describe();
}

TEST_F(RoomStoreTest, RenderAddsAgeAndOwnTransactionId) {
  StoredEvent e;
  e.client_json = R"({"content":{},"event_id":"$x","sender":"@a:hs","type":"t"})";
  e.sender = "@a:hs";
  e.ts = 1000;
  e.txn_device = "D";
  e.txn_id = "t\"1";
  EXPECT_EQ(render_event(e, "@a:hs", "D", 1500),
            R"({"content":{},"event_id":"$x","sender":"@a:hs","type":"t","unsigned":{"age":500,"transaction_id":"t\"1"}})");
  EXPECT_EQ(render_event(e, "@a:hs", "E", 900),
            R"({"content":{},"event_id":"$x","sender":"@a:hs","type":"t","unsigned":{"age":0}})");
}

}  // namespace
}  // namespace hearth::matrix

namespace hearth::matrix {
namespace {

// A room with 10,000 members and 30,000 more events: appends stay O(1) in the room's
// size (member events are loaded per user, state is one row per key), and the reads a
// client does (membership, timeline, one state event, the member list) stay correct.
TEST_F(RoomStoreTest, BigRoomStateIsOneRowPerKey) {
  create_room("!big:hs", "public");
  constexpr int kMembers = 10000, kBatch = 500, kMessages = 30000;
  auto run_batches = [&](int total, auto make) {
    for (int start = 0; start < total; start += kBatch) {
      auto r = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto room = rooms.load_room(tx, "!big:hs");
        if (!room) return tl::unexpected(room.error());
        for (int i = start; i < std::min(total, start + kBatch); ++i) {
          auto a = rooms.append(tx, *room, make(i), 1000 + i);
          if (!a) return tl::unexpected(a.error());
        }
        return true;
      });
      ASSERT_TRUE(r) << r.error().describe();
    }
  };
  run_batches(kMembers, [](int i) {
    std::string user = "@u" + std::to_string(i) + ":hs";
    return NewEvent{"m.room.member", user, user, *parse_json(R"({"membership":"join"})"), {}, {}, {}};
  });
  run_batches(kMessages, [](int i) {
    return NewEvent{"m.room.message", std::nullopt, "@u" + std::to_string(i % kMembers) + ":hs",
                    *parse_json(R"({"body":"m)" + std::to_string(i) + "\"}"), {}, {}, {}};
  });
  auto check = db->read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto rows = tx.query_one("SELECT COUNT(*) FROM matrix_state WHERE room_id = '!big:hs'");
    EXPECT_EQ((*rows)->integer(0), 3 + kMembers + 1);  // create, power levels, join rules, members
    auto events = tx.query_one("SELECT COUNT(*) FROM matrix_events WHERE room_id = '!big:hs'");
    EXPECT_EQ((*events)->integer(0), 4 + kMembers + kMessages);
    auto m = rooms.membership(tx, "!big:hs", "@u9999:hs");
    EXPECT_EQ(m->value_or(""), "join");
    auto max = rooms.max_stream(tx);
    bool more = false;
    auto tl = rooms.timeline(tx, "!big:hs", 0, *max, 20, &more);
    EXPECT_TRUE(more);
    EXPECT_NE(tl->back().client_json.find("\"m29999\""), std::string::npos);
    auto pdu = rooms.pdu(tx, tl->back().event_id);
    EXPECT_EQ(pdu->get("auth_events")->items().size(), 3u);
    EXPECT_EQ(pdu->get("depth")->as_int(), 4 + kMembers + kMessages);
    auto members = rooms.members(tx, "!big:hs");
    EXPECT_EQ(members->size(), static_cast<std::size_t>(kMembers + 1));
    // A lazy-loading /sync reads the state without the 10,001 member events.
    auto no_members = rooms.current_state(tx, "!big:hs", -1, INT64_MAX, /*without_members=*/true);
    EXPECT_EQ(no_members->size(), 3u);
    for (const auto& e : *no_members) EXPECT_NE(e.type, "m.room.member");
    // History visibility from the member's own membership (two index lookups, not a scan).
    auto seen = VisibilityFilter::load(tx, "!big:hs", "@u5:hs");
    EXPECT_TRUE(seen->visible(tl->back()));
    return true;
  });
  ASSERT_TRUE(check) << check.error().describe();
}

}  // namespace
}  // namespace hearth::matrix

namespace hearth::matrix {
namespace {

// Federation storage: unaccepted remote events stay out of state and timeline; local events
// of a room with a remote member are queued for its server in the same transaction.
struct FederatedRoomStoreTest : RoomStoreTest {
  RoomStore fed_rooms{"hs", key, /*federation_outbox=*/true};
};

TEST_F(FederatedRoomStoreTest, UnacceptedEventsStayOutAndLocalEventsAreQueuedForRemoteMembers) {
  create_room("!f:hs", "public");
  // A remote member's join, as federation stores it (checked elsewhere).
  auto joined = db->write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
    auto room = fed_rooms.load_room(tx, "!f:hs");
    if (!room) return tl::unexpected(room.error());
    JsonValue pdu = content(R"({"type":"m.room.member","room_id":"!f:hs","sender":"@bob:remote","state_key":"@bob:remote",)"
                            R"("content":{"membership":"join"},"depth":5,"origin_server_ts":1000,"prev_events":[],"auth_events":[]})");
    return fed_rooms.insert_event(tx, *room, "$remote_join", pdu, canonical_json(pdu), "", "", true, 1000);
  });
  ASSERT_TRUE(joined) << joined.error().describe();
  auto rejected = db->write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = fed_rooms.record_unaccepted(tx, "!f:hs", "$bad", R"({"type":"m.room.topic"})", "rejected", "test", 1000);
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  ASSERT_TRUE(rejected);
  auto sent = db->write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
    auto room = fed_rooms.load_room(tx, "!f:hs");
    if (!room) return tl::unexpected(room.error());
    return fed_rooms.append(tx, *room, NewEvent{"m.room.message", std::nullopt, "@alice:hs", content(R"({"body":"hi"})"), {}, {}, {}}, 2000);
  });
  ASSERT_TRUE(sent) << sent.error().describe();
  auto r = db->read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto status = fed_rooms.unaccepted_status(tx, "$bad");
    EXPECT_TRUE(status && *status && **status == "rejected");
    auto stream = fed_rooms.stream_of(tx, "$bad");
    EXPECT_TRUE(stream && !*stream);  // not in matrix_events: no timeline, no state
    auto state = fed_rooms.current_state_map(tx, "!f:hs");
    EXPECT_TRUE(state && state->at({"m.room.member", "@bob:remote"}) == "$remote_join");
    auto dests = fed_rooms.outbox_destinations(tx);
    EXPECT_TRUE(dests && *dests == std::vector<std::string>{"remote"});
    auto rows = fed_rooms.outbox(tx, "remote", 50);
    EXPECT_TRUE(rows && rows->size() == 1);  // the message only: the remote join was not ours to send
    if (rows && rows->size() == 1) {
      EXPECT_NE(rows->front().pdu_json.find("\"hi\""), std::string::npos);
    }
    return true;
  });
  ASSERT_TRUE(r);
  ASSERT_TRUE(db->write_sync([&](store::Transaction& tx) { return fed_rooms.outbox_remove(tx, "remote", INT64_MAX); }));
  auto empty = db->read_sync([&](store::Transaction& tx) { return fed_rooms.outbox_destinations(tx); });
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace hearth::matrix
