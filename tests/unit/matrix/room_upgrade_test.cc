// Room upgrades: the new create event, the state that is transferred (and what is not),
// the upgrader's temporary power in the new room, and the old room's restricted levels.
#include <gtest/gtest.h>

#include "matrix/room_upgrade.h"

namespace hearth::matrix {
namespace {

JsonValue json(std::string_view text) { return *parse_json(text); }

TEST(RoomUpgrade, CreateContentNamesThePredecessorAndKeepsCustomFields) {
  JsonValue old = json(R"({"creator":"@a:hs","room_version":"10","type":"m.space","m.federate":false,
                           "predecessor":{"room_id":"!older:hs"}})");
  JsonValue v11 = upgraded_create_content(old, RoomVersion::v11, "11", "!old:hs", "$tomb", "@b:hs");
  EXPECT_EQ(v11.string_at("room_version"), "11");
  EXPECT_EQ(v11.get("predecessor")->string_at("room_id"), "!old:hs");
  EXPECT_EQ(v11.get("predecessor")->string_at("event_id"), "$tomb");
  EXPECT_EQ(v11.string_at("type"), "m.space");
  EXPECT_FALSE(v11.get("m.federate")->as_bool());
  EXPECT_FALSE(v11.get("creator"));  // v11 has no creator field
  JsonValue v10 = upgraded_create_content(old, RoomVersion::v10, "10", "!old:hs", "$tomb", "@b:hs");
  EXPECT_EQ(v10.string_at("creator"), "@b:hs");
}

TEST(RoomUpgrade, TransfersTheSpecsStateAndBansButNoOtherMembers) {
  std::vector<StateEventContent> old = {
      {"m.room.create", "", json(R"({"room_version":"10"})")},
      {"m.room.member", "@a:hs", json(R"({"membership":"join","displayname":"A"})")},
      {"m.room.member", "@spam:hs", json(R"({"membership":"ban","reason":"spam","displayname":"S"})")},
      {"m.room.member", "@gone:hs", json(R"({"membership":"leave"})")},
      {"m.room.topic", "", json(R"({"topic":"t"})")},
      {"m.room.name", "", json(R"({"name":"n"})")},
      {"m.room.join_rules", "", json(R"({"join_rule":"public"})")},
      {"m.room.canonical_alias", "", json(R"({})")},  // cleared: nothing to transfer
      {"m.room.power_levels", "", json(R"({"users":{"@a:hs":100}})")},
      {"org.example.custom", "", json(R"({"x":1})")},
      {"m.room.name", "other-key", json(R"({"name":"not the room's"})")},
  };
  auto moved = transferable_state(old);
  std::vector<std::string> types;
  for (const auto& s : moved) types.push_back(s.type + "/" + s.state_key);
  EXPECT_EQ(types, (std::vector<std::string>{"m.room.name/", "m.room.topic/", "m.room.join_rules/",
                                             "m.room.member/@spam:hs"}));
  EXPECT_EQ(canonical_json(moved.back().content), R"({"membership":"ban","reason":"spam"})");
}

TEST(RoomUpgrade, BootstrapLevelsOnlyWhenTheUpgraderLacksPower) {
  JsonValue enough = json(R"({"users":{"@a:hs":100},"events":{"m.room.tombstone":100}})");
  EXPECT_FALSE(bootstrap_power_levels(enough, "@a:hs"));
  JsonValue custom = json(R"({"users":{"@a:hs":60,"@boss:hs":100},"state_default":50,"events":{"m.room.power_levels":90}})");
  auto raised = bootstrap_power_levels(custom, "@a:hs");
  ASSERT_TRUE(raised);
  EXPECT_EQ(raised->get("users")->get("@a:hs")->as_int(), 90);
  EXPECT_EQ(raised->get("users")->get("@boss:hs")->as_int(), 100);  // others untouched
  EXPECT_EQ(raised->get("events")->get("m.room.power_levels")->as_int(), 90);
}

TEST(RoomUpgrade, OldRoomLevelsSilenceOrdinaryMembers) {
  JsonValue pl = restricted_power_levels(json(R"({"users_default":0,"events_default":0,"invite":0,"ban":50})"));
  EXPECT_EQ(pl.get("events_default")->as_int(), 50);
  EXPECT_EQ(pl.get("invite")->as_int(), 50);
  EXPECT_EQ(pl.get("ban")->as_int(), 50);
  JsonValue high = restricted_power_levels(json(R"({"users_default":70,"events_default":80})"));
  EXPECT_EQ(high.get("events_default")->as_int(), 80);
  EXPECT_EQ(high.get("invite")->as_int(), 71);
}

}  // namespace
}  // namespace hearth::matrix
