#include "cryptpad/metadata.h"

#include <gtest/gtest.h>

#include <string>

namespace hearth::cryptpad {
namespace {

const std::string kOwner(44, 'O');
const std::string kOther(44, 'P');
const std::string kThird(44, 'Q');

RawValue raw(const std::string& json) {
  auto arr = parse_array("[" + json + "]", ParseLimits{});
  EXPECT_TRUE(arr);
  return (*arr)[0];
}

std::string keys(std::initializer_list<std::string> ks) {
  std::string out = "[";
  for (const auto& k : ks) out += (out.size() > 1 ? ",\"" : "\"") + k + "\"";
  return out + "]";
}

TEST(CryptpadMetadata, InitialConvertsExpiryAndAddsChannelAndCreated) {
  auto init = ChannelMeta::initial("c1", R"({"owners":["x"],"expire":60,"extra":{"a":1}})", 1000, ParseLimits{});
  ASSERT_TRUE(init);
  EXPECT_EQ(init->record.expire, 61000);
  auto meta = ChannelMeta::from_record(init->record, ParseLimits{});
  EXPECT_EQ(meta.owners, std::vector<std::string>{"x"});
  EXPECT_NE(meta.json.find(R"("channel":"c1")"), std::string::npos);
  EXPECT_NE(meta.json.find(R"("created":1000)"), std::string::npos);
  EXPECT_NE(meta.json.find(R"("extra":{"a":1})"), std::string::npos);
  EXPECT_FALSE(ChannelMeta::initial("c1", R"({"validateKey":"nope"})", 1000, ParseLimits{}));
  // An absurd expiry means "never" (and must not overflow when converted to ms).
  auto forever = ChannelMeta::initial("c1", R"({"expire":14167709999999990})", 1000, ParseLimits{});
  ASSERT_TRUE(forever);
  EXPECT_FALSE(forever->record.expire);
}

TEST(CryptpadMetadata, OnlyOwnersChangeMetadata) {
  auto md = MetadataObject::parse(R"({"channel":"c","owners":[")" + kOwner + R"("]})", ParseLimits{});
  ASSERT_TRUE(md);
  auto r = apply_metadata_command(*md, "ADD_ALLOWED", raw(keys({kOther})), kOther, ParseLimits{});
  EXPECT_EQ(r.error(), "INSUFFICIENT_PERMISSIONS");
  r = apply_metadata_command(*md, "ADD_ALLOWED", raw(keys({kOther, kOwner})), kOwner, ParseLimits{});
  ASSERT_TRUE(r);
  EXPECT_TRUE(*r);
  EXPECT_EQ(md->strings("allowed", ParseLimits{}), std::vector<std::string>{kOther});  // owners never allowed
  // No-op: not changed.
  r = apply_metadata_command(*md, "ADD_ALLOWED", raw(keys({kOther})), kOwner, ParseLimits{});
  EXPECT_FALSE(*r);
  EXPECT_EQ(apply_metadata_command(*md, "UPDATE_EXPIRATION", raw("1"), kOwner, ParseLimits{}).error(),
            "E_NOT_IMPLEMENTED");
  EXPECT_EQ(apply_metadata_command(*md, "ADD_OWNERS", raw(R"(["short"])"), kOwner, ParseLimits{}).error(), "EINVAL");
}

TEST(CryptpadMetadata, ResetAllowedKeepsEveryGivenNonOwner) {
  auto md = MetadataObject::parse(R"({"owners":[")" + kOwner + R"("],"allowed":[]})", ParseLimits{});
  auto r = apply_metadata_command(*md, "RESET_ALLOWED", raw(keys({kOther, kThird, kOwner})), kOwner, ParseLimits{});
  ASSERT_TRUE(r);
  EXPECT_EQ(md->strings("allowed", ParseLimits{}), (std::vector<std::string>{kOther, kThird}));
}

TEST(CryptpadMetadata, PendingOwnerMayOnlyAcceptOrDecline) {
  auto md = MetadataObject::parse(R"({"owners":[")" + kOwner + R"("]})", ParseLimits{});
  ASSERT_TRUE(*apply_metadata_command(*md, "ADD_PENDING_OWNERS", raw(keys({kOther})), kOwner, ParseLimits{}));
  EXPECT_EQ(apply_metadata_command(*md, "ADD_OWNERS", raw(keys({kThird})), kOther, ParseLimits{}).error(),
            "INSUFFICIENT_PERMISSIONS");
  ASSERT_TRUE(*apply_metadata_command(*md, "ADD_OWNERS", raw(keys({kOther})), kOther, ParseLimits{}));
  EXPECT_EQ(md->strings("owners", ParseLimits{}), (std::vector<std::string>{kOwner, kOther}));
  EXPECT_TRUE(md->strings("pending_owners", ParseLimits{}).empty());
}

TEST(CryptpadMetadata, RemovingTheLastOwnerClearsRestricted) {
  auto md = MetadataObject::parse(R"({"owners":[")" + kOwner + R"("]})", ParseLimits{});
  ASSERT_TRUE(*apply_metadata_command(*md, "RESTRICT_ACCESS", raw("[true]"), kOwner, ParseLimits{}));
  EXPECT_TRUE(md->boolean("restricted"));
  ASSERT_TRUE(*apply_metadata_command(*md, "RM_OWNERS", raw(keys({kOwner})), kOwner, ParseLimits{}));
  EXPECT_FALSE(md->boolean("restricted"));
}

TEST(CryptpadMetadata, Mailboxes) {
  auto md = MetadataObject::parse(R"({"owners":[")" + kOwner + R"("],"mailbox":"legacy"})", ParseLimits{});
  ASSERT_TRUE(*apply_metadata_command(*md, "ADD_MAILBOX", raw(R"({")" + kOther + R"(":"box"})"), kOwner, ParseLimits{}));
  EXPECT_EQ(*md->get("mailbox"), R"({")" + kOther + R"(":"box"})");
  ASSERT_TRUE(*apply_metadata_command(*md, "RM_MAILBOX", raw(keys({kOther})), kOwner, ParseLimits{}));
  EXPECT_EQ(*md->get("mailbox"), "{}");
}

}  // namespace
}  // namespace hearth::cryptpad
