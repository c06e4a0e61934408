#include "cryptpad/protocol.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <string>

namespace hearth::cryptpad {
namespace {

ParseLimits limits() { return ParseLimits{}; }

TEST(CryptpadFrame, ParsesCommandAndArguments) {
  auto f = parse_frame(R"([3,"MSG","abc",{"x":[1,2]}])", limits());
  ASSERT_TRUE(f) << f.error().describe();
  EXPECT_EQ(f->seq, 3);
  EXPECT_EQ(f->cmd, "MSG");
  ASSERT_EQ(f->args.size(), 2u);
  EXPECT_EQ(f->args[0].text, "abc");
  EXPECT_EQ(f->args[1].raw, R"({"x":[1,2]})");
  EXPECT_EQ(f->args[1].type, RawValue::Type::object);
}

TEST(CryptpadFrame, KeepsRawTextOfStringsWithEscapes) {
  auto f = parse_frame(R"([1, "MSG" , "c", "a\"b\u00e9"])", limits());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->args[1].raw, R"("a\"b\u00e9")");
  EXPECT_EQ(f->args[1].text, "a\"b\xc3\xa9");
}

TEST(CryptpadFrame, PongEchoHasItsCommandInSlotTwo) {
  auto f = parse_frame(R"([0,"","PONG",1700000000000])", limits());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->cmd, "PONG");
}

TEST(CryptpadFrame, RejectsNonJsonDeepAndLargeInput) {
  EXPECT_EQ(parse_frame("not json", limits()).error().message, "not JSON");
  std::string deep = "[1,\"X\"," + std::string(100, '[') + std::string(100, ']') + "]";
  EXPECT_EQ(parse_frame(deep, limits()).error().message, "JSON nesting too deep");
  ParseLimits small;
  small.max_bytes = 10;
  EXPECT_EQ(parse_frame(R"([1,"MSG","abcdefgh"])", small).error().message, "JSON text too large");
  EXPECT_FALSE(parse_frame("[1]", limits()));
  EXPECT_FALSE(parse_frame(R"(["1","JOIN"])", limits()));
  EXPECT_FALSE(parse_frame(R"({"a":1})", limits()));
}

TEST(CryptpadChannel, Classes) {
  EXPECT_EQ(classify_channel(std::string(32, 'a')), ChannelKind::stored);
  EXPECT_EQ(classify_channel(std::string(34, 'f')), ChannelKind::ephemeral);
  EXPECT_EQ(classify_channel(std::string(33, '0')), ChannelKind::broadcast);
  EXPECT_EQ(classify_channel(std::string(44, 'A')), ChannelKind::other);
  EXPECT_EQ(classify_channel("short"), ChannelKind::invalid);
  EXPECT_EQ(classify_channel(std::string(40, '/')), ChannelKind::invalid);
}

TEST(CryptpadCheckpoint, Prefixes) {
  auto a = parse_checkpoint("cp|abc=|payload");
  EXPECT_TRUE(a.is_checkpoint);
  EXPECT_EQ(a.id, "abc=");
  EXPECT_EQ(a.body, "payload");
  auto b = parse_checkpoint("cp|payload");
  EXPECT_TRUE(b.is_checkpoint);
  EXPECT_EQ(b.id, "");
  EXPECT_EQ(b.body, "payload");
  auto c = parse_checkpoint("plain");
  EXPECT_FALSE(c.is_checkpoint);
  EXPECT_EQ(c.body, "plain");
}

TEST(CryptpadValidation, SignedMessagesAndCheckpointsVerify) {
  ASSERT_GE(sodium_init(), 0);
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  std::string payload = "nonce|ciphertext";
  std::string signed_msg(payload.size() + crypto_sign_BYTES, '\0');
  crypto_sign(reinterpret_cast<unsigned char*>(signed_msg.data()), nullptr,
              reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), sk);
  std::string key = base64_encode(std::string_view(reinterpret_cast<char*>(pk), sizeof pk));
  std::string content = base64_encode(signed_msg);
  EXPECT_TRUE(is_valid_public_key(key));
  EXPECT_TRUE(verify_channel_message(content, key));
  EXPECT_TRUE(verify_channel_message("cp|id|" + content, key));
  std::string tampered = signed_msg;
  tampered.back() ^= 1;
  EXPECT_EQ(verify_channel_message(base64_encode(tampered), key).error().code, Errc::unauthenticated);
  EXPECT_EQ(verify_channel_message("not base64!", key).error().code, Errc::invalid_argument);
  EXPECT_EQ(verify_channel_message(content, "short").error().code, Errc::invalid_argument);

  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), sk);
  std::string sig64 = base64_encode(std::string_view(reinterpret_cast<char*>(sig), sizeof sig));
  EXPECT_TRUE(verify_detached(payload, sig64, key));
  EXPECT_FALSE(verify_detached(payload + "x", sig64, key));
}

TEST(CryptpadHistoryStart, FromTheStartWithFewerThanTwoCheckpoints) {
  EXPECT_EQ(history_start({10, {}}, std::nullopt), 1);
  EXPECT_EQ(history_start({10, {4}}, std::nullopt), 1);
  EXPECT_EQ(history_start({0, {}}, std::nullopt), 1);
}

TEST(CryptpadHistoryStart, FromTheOldestKeptCheckpoint) {
  // Second-to-last checkpoint when older ones are more than 100 messages back.
  EXPECT_EQ(history_start({500, {10, 200, 450, 480}}, std::nullopt), 450);
  // Checkpoints within the last 100 messages are kept too.
  EXPECT_EQ(history_start({500, {10, 420, 450, 480}}, std::nullopt), 420);
}

TEST(CryptpadHistoryStart, KnownHashIsInclusiveUnlessOlderThanTheIndex) {
  EXPECT_EQ(history_start({10, {}}, 3), 3);
  EXPECT_EQ(history_start({500, {10, 200, 450, 480}}, 460), 460);
  EXPECT_EQ(history_start({500, {10, 200, 450, 480}}, 300), std::nullopt);
  EXPECT_EQ(history_start({10, {}}, 11), std::nullopt);
}

TEST(CryptpadHkRequest, GetHistory) {
  auto r = parse_hk_request(
      R"(["GET_HISTORY","0123",{"txid":12345,"priority":1,"lastKnownHash":"abc","metadata":{"validateKey":"k","owners":["o"]}}])",
      limits());
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_TRUE(r->is_history);
  EXPECT_EQ(r->history.kind, HistoryRequest::Kind::get_history);
  EXPECT_EQ(r->history.channel, "0123");
  EXPECT_EQ(r->history.txid_raw, "12345");
  EXPECT_EQ(r->history.priority, 1);
  EXPECT_EQ(r->history.last_known_hash, "abc");
  EXPECT_EQ(r->history.metadata_raw, R"({"validateKey":"k","owners":["o"]})");
}

TEST(CryptpadHkRequest, HistoryRange) {
  auto r = parse_hk_request(R"(["GET_HISTORY_RANGE","c",{"from":"h","cpCount":2,"txid":"t"}])", limits());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->history.kind, HistoryRequest::Kind::get_history_range);
  EXPECT_EQ(r->history.from, "h");
  EXPECT_EQ(r->history.cp_count, 2);
  EXPECT_EQ(r->history.txid_raw, "\"t\"");
}

TEST(CryptpadHkRequest, RpcAnonymousAndSigned) {
  auto a = parse_hk_request(R"(["tx",["GET_FILE_SIZE","abc"]])", limits());
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->is_history);
  EXPECT_FALSE(a->rpc.authenticated);
  EXPECT_EQ(a->rpc.command, "GET_FILE_SIZE");
  EXPECT_EQ(a->rpc.arg.text, "abc");
  // The signed text is the exact raw JSON of [cookie, command, arg].
  auto s = parse_hk_request(R"(["tx",["sig","pub","1|2|3","PIN",["a", "b"]]])", limits());
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->rpc.authenticated);
  EXPECT_EQ(s->rpc.signed_text, R"(["1|2|3","PIN",["a", "b"]])");
  EXPECT_EQ(s->rpc.cookie, "1|2|3");
  EXPECT_FALSE(parse_hk_request(R"(["tx",["a","b","c"]])", limits()));
  EXPECT_FALSE(parse_hk_request(R"({"x":1})", limits()));
}

}  // namespace
}  // namespace hearth::cryptpad
