// Signing, hashing, event ids and redaction (spec appendices "Signing JSON" and
// "Signing events"; room versions 10 and 11 "Redactions").
#include <gtest/gtest.h>

#include <filesystem>

#include <unistd.h>

#include "matrix/events.h"

namespace hearth::matrix {
namespace {

JsonValue parse(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text;
  return v ? *v : JsonValue();
}

// The appendix's key: seed YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1, "ed25519:1", server "domain".
SigningKey spec_key() {
  auto seed = base64_decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
  EXPECT_TRUE(seed);
  return SigningKey::from_seed(*seed, "1");
}

TEST(Signing, SpecExampleEmptyObject) {
  JsonValue v = JsonValue::object();
  sign_json(v, "domain", spec_key());
  EXPECT_EQ(canonical_json(v),
            R"({"signatures":{"domain":{"ed25519:1":"K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})");
}

TEST(Signing, SpecExampleWithData) {
  JsonValue v = parse(R"({"one": 1, "two": "Two"})");
  sign_json(v, "domain", spec_key());
  EXPECT_EQ(v.get("signatures")->get("domain")->string_at("ed25519:1"),
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw");
  std::string pk(reinterpret_cast<const char*>(spec_key().public_key().data()), 32);
  EXPECT_TRUE(verify_json_signature(v, "domain", "ed25519:1", pk));
  v.set("unsigned", parse(R"({"age":5})"));  // not covered by the signature
  EXPECT_TRUE(verify_json_signature(v, "domain", "ed25519:1", pk));
  v.set("two", JsonValue::string("2"));
  EXPECT_FALSE(verify_json_signature(v, "domain", "ed25519:1", pk));
}

TEST(Signing, SpecEventExampleContentHashAndSignature) {
  // Appendix "Signing events" (room versions with an origin field kept, as v10 does).
  JsonValue event = parse(R"({
    "auth_events": [], "content": {}, "depth": 3, "origin": "domain", "origin_server_ts": 1000000,
    "prev_events": [], "room_id": "!x:domain", "sender": "@a:domain", "type": "X",
    "unsigned": {"age_ts": 1000000}})");
  hash_and_sign_event(event, RoomVersion::v10, "domain", spec_key());
  EXPECT_EQ(event.get("hashes")->string_at("sha256"), "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos");
  EXPECT_EQ(event.get("signatures")->get("domain")->string_at("ed25519:1"),
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg");
}

TEST(Base64, UnpaddedAndUrlSafe) {
  EXPECT_EQ(base64_unpadded(""), "");
  EXPECT_EQ(base64_unpadded("f"), "Zg");
  EXPECT_EQ(base64_unpadded("fo"), "Zm8");
  EXPECT_EQ(base64_unpadded("foo"), "Zm9v");
  EXPECT_EQ(base64_unpadded("foob"), "Zm9vYg");
  EXPECT_EQ(base64_unpadded("\xfb\xff", true), "-_8");
  EXPECT_EQ(base64_unpadded("\xfb\xff", false), "+/8");
  EXPECT_EQ(*base64_decode("Zm9vYg"), "foob");
  EXPECT_EQ(*base64_decode("Zm9vYg=="), "foob");
  EXPECT_EQ(*base64_decode("-_8"), "\xfb\xff");
  EXPECT_FALSE(base64_decode("!!"));
}

JsonValue sample_message() {
  return parse(R"({"auth_events":["$a","$b"],"content":{"body":"hi","msgtype":"m.text"},"depth":7,
    "origin_server_ts":1700000000000,"prev_events":["$p"],"room_id":"!r:example.org",
    "sender":"@alice:example.org","type":"m.room.message"})");
}

TEST(EventId, ReferenceHashIgnoresSignaturesAndUnsigned) {
  JsonValue e = sample_message();
  std::string id = hash_and_sign_event(e, RoomVersion::v11, "example.org", spec_key());
  ASSERT_EQ(id.size(), 44u);  // "$" + 43 characters of unpadded base64 for 32 bytes
  EXPECT_EQ(id[0], '$');
  EXPECT_EQ(id.find_first_of("+/="), std::string::npos);
  EXPECT_EQ(event_id_for(e, RoomVersion::v11), id);
  JsonValue copy = e;
  copy.set("unsigned", parse(R"({"age":1})"));
  copy.set("signatures", parse(R"({"other.org":{"ed25519:x":"abc"}})"));
  EXPECT_EQ(event_id_for(copy, RoomVersion::v11), id);
  // Content is covered through the content hash, which the redacted form keeps.
  copy.get("content")->set("body", JsonValue::string("changed"));
  copy.erase("hashes");
  copy.set("hashes", parse(R"({"sha256":")" + base64_unpadded(content_hash(copy)) + "\"}"));
  EXPECT_NE(event_id_for(copy, RoomVersion::v11), id);
}

TEST(EventId, SignatureCoversTheRedactedEvent) {
  JsonValue e = sample_message();
  hash_and_sign_event(e, RoomVersion::v11, "example.org", spec_key());
  std::string pk(reinterpret_cast<const char*>(spec_key().public_key().data()), 32);
  JsonValue redacted = redact_event(e, RoomVersion::v11);
  EXPECT_TRUE(verify_json_signature(redacted, "example.org", "ed25519:1", pk));
  EXPECT_FALSE(verify_json_signature(e, "example.org", "ed25519:1", pk));  // full event is not what was signed
}

TEST(Redaction, V11KeepsCreateContentAndDropsOrigin) {
  JsonValue create = parse(R"({"type":"m.room.create","content":{"room_version":"11","m.federate":true,"x":1},
    "origin":"example.org","membership":"join","prev_state":[],"sender":"@a:example.org","state_key":"",
    "room_id":"!r:example.org","unsigned":{"age":1}})");
  EXPECT_EQ(canonical_json(redact_event(create, RoomVersion::v11)),
            R"({"content":{"m.federate":true,"room_version":"11","x":1},"room_id":"!r:example.org",)"
            R"("sender":"@a:example.org","state_key":"","type":"m.room.create"})");
  EXPECT_EQ(canonical_json(redact_event(create, RoomVersion::v10)),
            R"({"content":{},"membership":"join","origin":"example.org","prev_state":[],"room_id":"!r:example.org",)"
            R"("sender":"@a:example.org","state_key":"","type":"m.room.create"})");
}

TEST(Redaction, ContentKeysPerType) {
  auto redacted_content = [](std::string_view type, std::string_view content, RoomVersion v) {
    JsonValue e = parse(std::string(R"({"type":")") + std::string(type) + R"(","content":)" + std::string(content) + "}");
    return canonical_json(*redact_event(e, v).get("content"));
  };
  std::string pl = R"({"ban":50,"events":{},"events_default":0,"invite":0,"kick":50,"notifications":{"room":50},)"
                   R"("redact":50,"state_default":50,"users":{},"users_default":0})";
  EXPECT_EQ(redacted_content("m.room.power_levels", pl, RoomVersion::v11),
            R"({"ban":50,"events":{},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{},"users_default":0})");
  EXPECT_EQ(redacted_content("m.room.power_levels", pl, RoomVersion::v10),
            R"({"ban":50,"events":{},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{},"users_default":0})");
  EXPECT_EQ(redacted_content("m.room.member",
                             R"({"membership":"join","displayname":"A","join_authorised_via_users_server":"@b:x",)"
                             R"("third_party_invite":{"signed":{"token":"t"},"display_name":"d"}})",
                             RoomVersion::v11),
            R"({"join_authorised_via_users_server":"@b:x","membership":"join","third_party_invite":{"signed":{"token":"t"}}})");
  EXPECT_EQ(redacted_content("m.room.member", R"({"membership":"join","third_party_invite":{"signed":{}}})", RoomVersion::v10),
            R"({"membership":"join"})");
  EXPECT_EQ(redacted_content("m.room.join_rules", R"({"join_rule":"restricted","allow":[],"x":1})", RoomVersion::v11),
            R"({"allow":[],"join_rule":"restricted"})");
  EXPECT_EQ(redacted_content("m.room.history_visibility", R"({"history_visibility":"shared","x":1})", RoomVersion::v10),
            R"({"history_visibility":"shared"})");
  EXPECT_EQ(redacted_content("m.room.redaction", R"({"redacts":"$e","reason":"spam"})", RoomVersion::v11),
            R"({"redacts":"$e"})");
  EXPECT_EQ(redacted_content("m.room.redaction", R"({"redacts":"$e","reason":"spam"})", RoomVersion::v10), "{}");
  EXPECT_EQ(redacted_content("m.room.message", R"({"body":"secret"})", RoomVersion::v11), "{}");
}

TEST(SigningKeyFile, CreatedOnceWithPrivateModeAndReloaded) {
  auto dir = std::filesystem::temp_directory_path() / ("hearth-key-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string path = (dir / "matrix" / "signing.key").string();
  auto first = SigningKey::load_or_create(path);
  ASSERT_TRUE(first) << first.error().describe();
  auto perms = std::filesystem::status(path).permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto second = SigningKey::load_or_create(path);
  ASSERT_TRUE(second);
  EXPECT_EQ(first->key_id(), second->key_id());
  EXPECT_EQ(first->public_key_base64(), second->public_key_base64());
  EXPECT_EQ(first->sign("x"), second->sign("x"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hearth::matrix
