#include "xmpp/muc_room.h"

#include <gtest/gtest.h>

namespace hearth::xmpp {
namespace {

TEST(MucRoom, ConfigSurvivesStorageAndTheForm) {
  RoomConfig c;
  c.name = "Tea\nroom";
  c.persistent = true;
  c.members_only = true;
  c.password = "sesame";
  c.history_max = 7;
  RoomConfig back = RoomConfig::parse(c.serialise());
  EXPECT_EQ(back.name, "Tea room") << "newlines cannot break the stored form";
  EXPECT_TRUE(back.persistent && back.members_only);
  EXPECT_EQ(back.password, "sesame");
  EXPECT_EQ(back.history_max, 7);

  auto form = read_form(room_config_form(back));
  ASSERT_TRUE(form);
  RoomConfig applied;
  EXPECT_EQ(apply_room_config(applied, *form, 1000), "");
  EXPECT_EQ(applied.serialise(), back.serialise()) << "submitting the form unchanged changes nothing";
}

TEST(MucRoom, InvalidFieldsAreNamedAndNothingApplies) {
  RoomConfig c;
  SubmittedForm f;
  f.fields = {{"muc#roomconfig_roomname", {"New"}}, {"muc#roomconfig_moderatedroom", {"perhaps"}}};
  EXPECT_EQ(apply_room_config(c, f, 1000), "muc#roomconfig_moderatedroom");
  EXPECT_EQ(c.name, "") << "all or nothing";
  f.fields = {{"muc#roomconfig_passwordprotectedroom", {"1"}}};
  EXPECT_EQ(apply_room_config(c, f, 1000), "muc#roomconfig_roomsecret") << "protection needs a password";
  f.fields = {{"muc#roomconfig_maxusers", {"5000"}}, {"x-unknown", {"1"}}};
  EXPECT_EQ(apply_room_config(c, f, 1000), "");
  EXPECT_EQ(c.max_users, 1000) << "capped by the service";
}

TEST(MucRoom, RolesAndAffiliationsFollowTheXep) {
  RoomConfig open, moderated;
  moderated.moderated = true;
  EXPECT_EQ(default_role(Affiliation::owner, open), Role::moderator);
  EXPECT_EQ(default_role(Affiliation::none, open), Role::participant);
  EXPECT_EQ(default_role(Affiliation::none, moderated), Role::visitor);
  EXPECT_EQ(default_role(Affiliation::member, moderated), Role::participant);

  EXPECT_TRUE(may_change_affiliation(Affiliation::owner, Affiliation::admin, Affiliation::none));
  EXPECT_TRUE(may_change_affiliation(Affiliation::admin, Affiliation::member, Affiliation::outcast));
  EXPECT_FALSE(may_change_affiliation(Affiliation::admin, Affiliation::admin, Affiliation::none));
  EXPECT_FALSE(may_change_affiliation(Affiliation::admin, Affiliation::none, Affiliation::owner));
  EXPECT_FALSE(may_change_affiliation(Affiliation::member, Affiliation::none, Affiliation::member));

  EXPECT_TRUE(may_change_role(Affiliation::none, Role::moderator, Affiliation::none, Role::none));
  EXPECT_FALSE(may_change_role(Affiliation::none, Role::participant, Affiliation::none, Role::none));
  EXPECT_FALSE(may_change_role(Affiliation::member, Role::moderator, Affiliation::admin, Role::none));
  EXPECT_FALSE(may_change_role(Affiliation::none, Role::moderator, Affiliation::none, Role::moderator));
  EXPECT_TRUE(may_change_role(Affiliation::admin, Role::moderator, Affiliation::member, Role::moderator));
}

TEST(MucRoom, OccupantIdsAreStablePerRoomAndOpaque) {
  auto a = occupant_id("secret-1", "alice@example.org");
  EXPECT_EQ(a, occupant_id("secret-1", "alice@example.org"));
  EXPECT_NE(a, occupant_id("secret-2", "alice@example.org"));
  EXPECT_NE(a, occupant_id("secret-1", "bob@example.org"));
  EXPECT_EQ(a.find("alice"), std::string::npos);
}

}  // namespace
}  // namespace hearth::xmpp
