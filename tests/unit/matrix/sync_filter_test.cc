// /sync filters: parsing with limits, and which events, senders and rooms they let through.
#include <gtest/gtest.h>

#include "matrix/sync_filter.h"

namespace hearth::matrix {
namespace {

JsonValue parse(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text;
  return v ? *v : JsonValue();
}

TEST(SyncFilter, TypePatternsUseStarWildcards) {
  EXPECT_TRUE(type_pattern_matches("m.*", "m.room.message"));
  EXPECT_TRUE(type_pattern_matches("*", ""));
  EXPECT_TRUE(type_pattern_matches("m.room.*e", "m.room.message"));
  EXPECT_FALSE(type_pattern_matches("m.room.*e", "m.room.member"));
  EXPECT_FALSE(type_pattern_matches("M.*", "m.room"));
  EXPECT_TRUE(type_pattern_matches("m.room.message", "m.room.message"));
}

TEST(SyncFilter, RoomsTimelineStateAndLazyLoading) {
  auto f = SyncFilter::parse(parse(R"({
    "room":{"rooms":["!a:x","!b:x"],"not_rooms":["!b:x"],
            "timeline":{"limit":5,"types":["m.room.*"],"not_types":["m.room.member"],"not_senders":["@spam:x"]},
            "state":{"lazy_load_members":true,"include_redundant_members":false},
            "ephemeral":{"not_types":["m.typing"]}},
    "presence":{"types":[]},
    "account_data":{"not_types":["im.vector.*"]}})"));
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->allows_room("!a:x"));
  EXPECT_FALSE(f->allows_room("!b:x"));  // not_rooms wins
  EXPECT_FALSE(f->allows_room("!c:x"));
  EXPECT_EQ(f->timeline.limit, 5);
  EXPECT_TRUE(f->timeline.allows("m.room.message", "@bob:x"));
  EXPECT_FALSE(f->timeline.allows("m.room.member", "@bob:x"));
  EXPECT_FALSE(f->timeline.allows("m.room.message", "@spam:x"));
  EXPECT_FALSE(f->timeline.allows("org.example", "@bob:x"));
  EXPECT_TRUE(f->state.lazy_load_members);
  EXPECT_FALSE(f->state.include_redundant_members);
  EXPECT_FALSE(f->ephemeral.allows_type("m.typing"));
  EXPECT_TRUE(f->ephemeral.allows_type("m.receipt"));
  EXPECT_FALSE(f->presence.allows_type("m.presence"));  // an empty list includes nothing
  EXPECT_FALSE(f->account_data.allows_type("im.vector.setting"));
  EXPECT_TRUE(f->account_data.allows_type("m.direct"));
}

TEST(SyncFilter, EmptyFilterAllowsEverything) {
  auto f = SyncFilter::parse(parse("{}"));
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->allows_room("!any:x"));
  EXPECT_TRUE(f->timeline.allows("anything", "@anyone:x"));
  EXPECT_EQ(f->timeline.limit, 0);
}

TEST(SyncFilter, BadFieldsAreRefused) {
  EXPECT_FALSE(SyncFilter::parse(parse(R"({"room":{"timeline":{"limit":"ten"}}})")));
  EXPECT_FALSE(SyncFilter::parse(parse(R"({"room":{"rooms":"!a:x"}})")));
  EXPECT_FALSE(SyncFilter::parse(parse(R"({"room":{"state":{"lazy_load_members":1}}})")));
  std::string many = R"({"room":{"rooms":[)";
  for (int i = 0; i <= 1000; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
  many += "]}}";
  EXPECT_FALSE(SyncFilter::parse(parse(many)));
}

}  // namespace
}  // namespace hearth::matrix
