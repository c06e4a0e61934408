// Server-server building blocks: X-Matrix headers, server key responses and their cache,
// and the PDU integrity checks (signature; content hash mismatch -> redacted).
#include <gtest/gtest.h>

#include "matrix/federation.h"

namespace hearth::matrix {
namespace {

JsonValue parse(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text;
  return v ? *v : JsonValue();
}

SigningKey remote_key(char fill = 'r') { return SigningKey::from_seed(std::string(32, fill), "k1"); }

JsonValue key_response(const SigningKey& key, std::string_view server, std::int64_t until) {
  JsonValue r = JsonValue::object();
  r.set("server_name", JsonValue::string(std::string(server)));
  r.set("valid_until_ts", JsonValue::integer(until));
  JsonValue k = JsonValue::object();
  k.set("key", JsonValue::string(key.public_key_base64()));
  JsonValue vk = JsonValue::object();
  vk.set(key.key_id(), std::move(k));
  r.set("verify_keys", std::move(vk));
  sign_json(r, server, key);
  return r;
}

TEST(Federation, XMatrixHeaderRoundTrip) {
  SigningKey key = remote_key();
  JsonValue content = parse(R"({"a":1})");
  std::string header = x_matrix_header("PUT", "/_matrix/federation/v1/send/1", "remote.test", "hs", &content, key);
  auto a = parse_x_matrix(header);
  ASSERT_TRUE(a) << header;
  EXPECT_EQ(a->origin, "remote.test");
  EXPECT_EQ(a->destination, "hs");
  EXPECT_EQ(a->key_id, "ed25519:k1");
  JsonValue signed_json = x_matrix_request_json("PUT", "/_matrix/federation/v1/send/1", "remote.test", "hs", &content);
  JsonValue sigs = JsonValue::object();
  JsonValue mine = JsonValue::object();
  mine.set(a->key_id, JsonValue::string(a->sig));
  sigs.set("remote.test", std::move(mine));
  signed_json.set("signatures", std::move(sigs));
  std::string pk(reinterpret_cast<const char*>(key.public_key().data()), 32);
  EXPECT_TRUE(verify_json_signature(signed_json, "remote.test", a->key_id, pk));
  // Another URI does not verify.
  signed_json.set("uri", JsonValue::string("/other"));
  EXPECT_FALSE(verify_json_signature(signed_json, "remote.test", a->key_id, pk));
  // Unquoted values and missing fields.
  EXPECT_TRUE(parse_x_matrix("X-Matrix origin=o.test,key=\"ed25519:1\",sig=abc"));
  EXPECT_FALSE(parse_x_matrix("X-Matrix origin=o.test,sig=abc"));
  EXPECT_FALSE(parse_x_matrix("Bearer abc"));
  EXPECT_FALSE(parse_x_matrix("X-Matrix origin=\"unterminated"));
  EXPECT_FALSE(parse_x_matrix("X-Matrix " + std::string(3000, 'a')));
}

TEST(Federation, ServerKeysMustBeSelfSignedAndValid) {
  SigningKey key = remote_key();
  EXPECT_TRUE(verify_server_keys(key_response(key, "remote.test", 2000), "remote.test", 1000));
  EXPECT_FALSE(verify_server_keys(key_response(key, "remote.test", 2000), "other.test", 1000));
  EXPECT_FALSE(verify_server_keys(key_response(key, "remote.test", 500), "remote.test", 1000));  // expired
  JsonValue forged = key_response(key, "remote.test", 2000);
  forged.set("valid_until_ts", JsonValue::integer(9000));  // changed after signing
  EXPECT_FALSE(verify_server_keys(forged, "remote.test", 1000));
}

TEST(Federation, KeyCacheFetchesOnceUntilExpiryAndBacksOffAfterFailure) {
  SigningKey key = remote_key();
  int fetches = 0;
  bool up = true;
  ServerKeyCache cache([&](const std::string& server) -> Result<JsonValue> {
    ++fetches;
    if (!up) return fail(Errc::unavailable, "down");
    return key_response(key, server, 100000);
  }, /*max_cache_ms=*/4000, /*retry_after_ms=*/1000);
  EXPECT_TRUE(cache.key("remote.test", "ed25519:k1", 1000));
  EXPECT_TRUE(cache.key("remote.test", "ed25519:k1", 2000));
  EXPECT_EQ(fetches, 1);
  EXPECT_FALSE(cache.key("remote.test", "ed25519:nope", 2000));  // fetched again, not there
  EXPECT_EQ(fetches, 2);
  up = false;
  EXPECT_FALSE(cache.key("remote.test", "ed25519:k1", 6000));  // cached until 5000; the fetch fails
  EXPECT_FALSE(cache.key("remote.test", "ed25519:k1", 6500));  // within the back-off: no fetch
  EXPECT_EQ(fetches, 3);
  up = true;
  EXPECT_TRUE(cache.key("remote.test", "ed25519:k1", 7100));
  EXPECT_EQ(fetches, 4);
}

TEST(Federation, PduIntegrity) {
  SigningKey key = remote_key();
  ServerKeyCache cache([&](const std::string& server) -> Result<JsonValue> { return key_response(key, server, 1 << 30); });
  JsonValue pdu = parse(R"({"type":"m.room.message","room_id":"!r:hs","sender":"@bob:remote.test",)"
                        R"("content":{"body":"hi","msgtype":"m.text"},"depth":3,"origin_server_ts":5,)"
                        R"("prev_events":["$p"],"auth_events":["$a"]})");
  std::string id = hash_and_sign_event(pdu, RoomVersion::v11, "remote.test", key);
  auto ok = check_pdu_integrity(pdu, RoomVersion::v11, cache, 1000);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->event_id, id);
  EXPECT_FALSE(ok->redacted);
  // Content changed after signing: the signature (over the redacted form) still holds, the
  // hash does not: the event is kept redacted.
  JsonValue tampered = pdu;
  tampered.get("content")->set("body", JsonValue::string("tampered"));
  auto red = check_pdu_integrity(tampered, RoomVersion::v11, cache, 1000);
  ASSERT_TRUE(red);
  EXPECT_TRUE(red->redacted);
  EXPECT_EQ(red->pdu.get("content")->members().size(), 0u);
  // Signed by another key under the same server name: dropped.
  JsonValue forged = parse(canonical_json(pdu));
  forged.erase("signatures");
  hash_and_sign_event(forged, RoomVersion::v11, "remote.test", remote_key('m'));
  EXPECT_FALSE(check_pdu_integrity(forged, RoomVersion::v11, cache, 1000));
  // Shape limits.
  JsonValue many = pdu;
  std::vector<JsonValue> ids(11, JsonValue::string("$x"));
  many.set("auth_events", JsonValue::array(ids));
  EXPECT_FALSE(check_pdu_integrity(many, RoomVersion::v11, cache, 1000));
}

TEST(Federation, Destinations) {
  auto d = parse_destinations({"remote.test=127.0.0.2:8448", "v6.test=[::1]:443"});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->at("remote.test").host, "127.0.0.2");
  EXPECT_EQ(d->at("remote.test").port, 8448);
  EXPECT_EQ(d->at("v6.test").host, "::1");
  EXPECT_FALSE(parse_destinations({"nohostport"}));
  EXPECT_FALSE(parse_destinations({"a=b:99999"}));
}

}  // namespace
}  // namespace hearth::matrix
