// Auth rules of room versions 10 and 11 for the events this server creates.
#include <gtest/gtest.h>

#include <map>

#include "matrix/auth_rules.h"

namespace hearth::matrix {
namespace {

JsonValue parse(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text;
  return v ? *v : JsonValue();
}

struct Room {
  RoomVersion version = RoomVersion::v11;
  std::map<std::pair<std::string, std::string>, JsonValue, std::less<>> state;

  StateLookup lookup() const {
    return [this](std::string_view type, std::string_view key) -> const JsonValue* {
      auto it = state.find(std::make_pair(std::string(type), std::string(key)));
      return it == state.end() ? nullptr : &it->second;
    };
  }
  static JsonValue event(std::string_view sender, std::string_view type, std::optional<std::string_view> key,
                         std::string_view content) {
    JsonValue e = JsonValue::object();
    e.set("type", JsonValue::string(std::string(type)));
    e.set("sender", JsonValue::string(std::string(sender)));
    e.set("room_id", JsonValue::string("!r:hs"));
    if (key) e.set("state_key", JsonValue::string(std::string(*key)));
    e.set("content", parse(content));
    e.set("prev_events", JsonValue::array({JsonValue::string("$prev")}));
    return e;
  }
  Result<void> check(std::string_view sender, std::string_view type, std::optional<std::string_view> key,
                     std::string_view content) const {
    return check_event_auth(event(sender, type, key, content), version, lookup());
  }
  // Checks, and applies when allowed.
  Result<void> apply(std::string_view sender, std::string_view type, std::optional<std::string_view> key,
                     std::string_view content) {
    JsonValue e = event(sender, type, key, content);
    auto r = check_event_auth(e, version, lookup());
    if (r && key) state[{std::string(type), std::string(*key)}] = e;
    return r;
  }
  std::string membership(std::string_view user) const { return std::string(membership_of(lookup(), user)); }
};

constexpr std::string_view kAlice = "@alice:hs", kBob = "@bob:hs", kCarol = "@carol:hs";

// A v11 room created by alice: power levels (alice 100), join rule `join_rule`.
Room make_room(std::string_view join_rule = "invite") {
  Room room;
  JsonValue create = Room::event(kAlice, "m.room.create", "", R"({"room_version":"11"})");
  create.set("prev_events", JsonValue::array());
  EXPECT_TRUE(check_event_auth(create, room.version, room.lookup()));
  room.state[{"m.room.create", ""}] = create;
  EXPECT_TRUE(room.apply(kAlice, "m.room.member", kAlice, R"({"membership":"join"})"));
  EXPECT_TRUE(room.apply(kAlice, "m.room.power_levels", "",
                         R"({"users":{"@alice:hs":100},"users_default":0,"events":{"m.room.name":50,)"
                         R"("m.room.power_levels":100},"events_default":0,"state_default":50,"ban":50,"kick":50,)"
                         R"("redact":50,"invite":0})"));
  EXPECT_TRUE(room.apply(kAlice, "m.room.join_rules", "", std::string(R"({"join_rule":")") + std::string(join_rule) + "\"}"));
  return room;
}

TEST(AuthRules, CreateEvent) {
  Room room;
  JsonValue create = Room::event(kAlice, "m.room.create", "", R"({"room_version":"11"})");
  create.set("prev_events", JsonValue::array());
  EXPECT_TRUE(check_event_auth(create, RoomVersion::v11, room.lookup()));
  // v10 create events need a creator.
  EXPECT_FALSE(check_event_auth(create, RoomVersion::v10, room.lookup()));
  JsonValue v10 = Room::event(kAlice, "m.room.create", "", R"({"room_version":"10","creator":"@alice:hs"})");
  v10.set("prev_events", JsonValue::array());
  EXPECT_TRUE(check_event_auth(v10, RoomVersion::v10, room.lookup()));
  // Previous events, another server's room, or an unknown version: refused.
  EXPECT_FALSE(check_event_auth(Room::event(kAlice, "m.room.create", "", "{}"), RoomVersion::v11, room.lookup()));
  JsonValue other = create;
  other.set("room_id", JsonValue::string("!r:elsewhere"));
  EXPECT_FALSE(check_event_auth(other, RoomVersion::v11, room.lookup()));
  JsonValue bad_version = Room::event(kAlice, "m.room.create", "", R"({"room_version":"99"})");
  bad_version.set("prev_events", JsonValue::array());
  EXPECT_FALSE(check_event_auth(bad_version, RoomVersion::v11, room.lookup()));
  // Nothing but a create event may come first.
  EXPECT_FALSE(room.check(kAlice, "m.room.message", std::nullopt, R"({"body":"x"})"));
}

TEST(AuthRules, InviteOnlyRoomNeedsAnInvitation) {
  Room room = make_room("invite");
  EXPECT_EQ(room.check(kBob, "m.room.member", kBob, R"({"membership":"join"})").error().code, Errc::permission_denied);
  EXPECT_TRUE(room.apply(kAlice, "m.room.member", kBob, R"({"membership":"invite"})"));
  EXPECT_FALSE(room.check(kCarol, "m.room.member", kBob, R"({"membership":"join"})"));  // not on someone's behalf
  EXPECT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  EXPECT_EQ(room.membership(kBob), "join");
  // An invitee who is already joined cannot be invited again.
  EXPECT_FALSE(room.check(kAlice, "m.room.member", kBob, R"({"membership":"invite"})"));
  // A non-member cannot invite.
  EXPECT_FALSE(room.check(kCarol, "m.room.member", kCarol, R"({"membership":"invite"})"));
}

TEST(AuthRules, InvitePowerLevel) {
  Room room = make_room("invite");
  ASSERT_TRUE(room.apply(kAlice, "m.room.member", kBob, R"({"membership":"invite"})"));
  ASSERT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  ASSERT_TRUE(room.apply(kAlice, "m.room.power_levels", "",
                         R"({"users":{"@alice:hs":100},"invite":50,"events":{"m.room.power_levels":100}})"));
  EXPECT_FALSE(room.check(kBob, "m.room.member", kCarol, R"({"membership":"invite"})"));
  EXPECT_TRUE(room.check(kAlice, "m.room.member", kCarol, R"({"membership":"invite"})"));
}

TEST(AuthRules, PublicRoomAndBans) {
  Room room = make_room("public");
  EXPECT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  EXPECT_TRUE(room.apply(kCarol, "m.room.member", kCarol, R"({"membership":"join"})"));
  // Bob (level 0) cannot ban or kick Carol; Alice (100) can.
  EXPECT_FALSE(room.check(kBob, "m.room.member", kCarol, R"({"membership":"ban"})"));
  EXPECT_FALSE(room.check(kBob, "m.room.member", kCarol, R"({"membership":"leave"})"));
  EXPECT_TRUE(room.apply(kAlice, "m.room.member", kCarol, R"({"membership":"ban"})"));
  EXPECT_FALSE(room.check(kCarol, "m.room.member", kCarol, R"({"membership":"join"})"));
  EXPECT_FALSE(room.check(kCarol, "m.room.member", kCarol, R"({"membership":"leave"})"));  // banned: not "in"
  // Unbanning needs the ban level.
  EXPECT_FALSE(room.check(kBob, "m.room.member", kCarol, R"({"membership":"leave"})"));
  EXPECT_TRUE(room.apply(kAlice, "m.room.member", kCarol, R"({"membership":"leave"})"));
  EXPECT_TRUE(room.check(kCarol, "m.room.member", kCarol, R"({"membership":"join"})"));
  // Nobody can kick or ban someone at their own level.
  EXPECT_FALSE(room.check(kAlice, "m.room.member", kAlice, R"({"membership":"ban"})"));
}

TEST(AuthRules, LeavingAndKicking) {
  Room room = make_room("public");
  ASSERT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  EXPECT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"leave"})"));
  EXPECT_FALSE(room.check(kBob, "m.room.member", kBob, R"({"membership":"leave"})"));  // already out
  ASSERT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  EXPECT_TRUE(room.apply(kAlice, "m.room.member", kBob, R"({"membership":"leave"})"));
  EXPECT_EQ(room.membership(kBob), "leave");
}

TEST(AuthRules, SendingNeedsMembershipAndPower) {
  Room room = make_room("public");
  EXPECT_FALSE(room.check(kBob, "m.room.message", std::nullopt, R"({"body":"x"})"));
  ASSERT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  EXPECT_TRUE(room.check(kBob, "m.room.message", std::nullopt, R"({"body":"x"})"));
  EXPECT_FALSE(room.check(kBob, "m.room.name", "", R"({"name":"x"})"));        // events: 50
  EXPECT_FALSE(room.check(kBob, "m.room.topic", "", R"({"topic":"x"})"));      // state_default: 50
  EXPECT_TRUE(room.check(kAlice, "m.room.name", "", R"({"name":"x"})"));
  // A state key naming another user is reserved to that user.
  EXPECT_FALSE(room.check(kAlice, "org.example.status", kBob, "{}"));
  EXPECT_TRUE(room.check(kAlice, "org.example.status", kAlice, "{}"));
}

TEST(AuthRules, PowerLevelChanges) {
  Room room = make_room("public");
  ASSERT_TRUE(room.apply(kBob, "m.room.member", kBob, R"({"membership":"join"})"));
  ASSERT_TRUE(room.apply(kAlice, "m.room.power_levels", "",
                         R"({"users":{"@alice:hs":100,"@bob:hs":50},"events":{"m.room.power_levels":50},"ban":50})"));
  // Bob (50) may change what is at or below 50...
  EXPECT_TRUE(room.check(kBob, "m.room.power_levels", "",
                         R"({"users":{"@alice:hs":100,"@bob:hs":50},"events":{"m.room.power_levels":50},"ban":40})"));
  // ...but not raise himself, set a level above his own, or touch alice.
  EXPECT_FALSE(room.check(kBob, "m.room.power_levels", "",
                          R"({"users":{"@alice:hs":100,"@bob:hs":100},"events":{"m.room.power_levels":50},"ban":50})"));
  EXPECT_FALSE(room.check(kBob, "m.room.power_levels", "",
                          R"({"users":{"@alice:hs":100,"@bob:hs":50},"events":{"m.room.power_levels":50},"ban":60})"));
  EXPECT_FALSE(room.check(kBob, "m.room.power_levels", "",
                          R"({"users":{"@alice:hs":0,"@bob:hs":50},"events":{"m.room.power_levels":50},"ban":50})"));
  // Non-integer levels are refused (room versions 10+).
  EXPECT_FALSE(room.check(kAlice, "m.room.power_levels", "", R"({"users":{"@alice:hs":100},"ban":"50"})"));
  EXPECT_FALSE(room.check(kAlice, "m.room.power_levels", "", R"({"users":{"not-a-user":1}})"));
  // Alice can demote bob (below her level).
  EXPECT_TRUE(room.check(kAlice, "m.room.power_levels", "",
                         R"({"users":{"@alice:hs":100},"events":{"m.room.power_levels":50},"ban":50})"));
}

TEST(AuthRules, DefaultsWithoutPowerLevelsEvent) {
  Room room;
  JsonValue create = Room::event(kAlice, "m.room.create", "", R"({"room_version":"11"})");
  room.state[{"m.room.create", ""}] = create;
  PowerLevels pl = power_levels_from(room.lookup(), RoomVersion::v11);
  EXPECT_EQ(pl.user_level(kAlice), 100);  // the create event's sender (v11)
  EXPECT_EQ(pl.user_level(kBob), 0);
  EXPECT_EQ(pl.event_level("anything", true), 0);
  EXPECT_EQ(pl.named("ban"), 50);
  EXPECT_EQ(pl.named("invite"), 0);
  // v10 reads the creator from the content.
  Room v10;
  v10.state[{"m.room.create", ""}] = Room::event(kBob, "m.room.create", "", R"({"creator":"@carol:hs"})");
  EXPECT_EQ(power_levels_from(v10.lookup(), RoomVersion::v10).user_level(kCarol), 100);
}

TEST(AuthRules, KnockNeedsAKnockRoom) {
  Room room = make_room("invite");
  EXPECT_FALSE(room.check(kBob, "m.room.member", kBob, R"({"membership":"knock"})"));
  Room knock = make_room("knock");
  EXPECT_TRUE(knock.apply(kBob, "m.room.member", kBob, R"({"membership":"knock"})"));
  EXPECT_TRUE(knock.check(kBob, "m.room.member", kBob, R"({"membership":"leave"})"));  // retract
}

TEST(AuthRules, ThirdPartyInvitesAreRefused) {
  Room room = make_room("invite");
  EXPECT_FALSE(room.check(kAlice, "m.room.member", kBob, R"({"membership":"invite","third_party_invite":{}})"));
}

}  // namespace
}  // namespace hearth::matrix
