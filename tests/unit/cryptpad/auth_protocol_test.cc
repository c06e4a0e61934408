#include "cryptpad/auth_protocol.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <string>

namespace hearth::cryptpad {
namespace {

const std::string kKey = std::string(43, 'A') + "=";  // 44 characters, base64 of 32 zero bytes

// RFC 6238 appendix B, SHA-1 rows (8 digits, the RFC's seed).
TEST(CryptpadTotp, Rfc6238Vectors) {
  const std::string seed = "12345678901234567890";
  EXPECT_EQ(totp_code(seed, 59 / 30, 8), "94287082");
  EXPECT_EQ(totp_code(seed, 1111111109 / 30, 8), "07081804");
  EXPECT_EQ(totp_code(seed, 1111111111 / 30, 8), "14050471");
  EXPECT_EQ(totp_code(seed, 1234567890 / 30, 8), "89005924");
  EXPECT_EQ(totp_code(seed, 2000000000 / 30, 8), "69279037");
  EXPECT_EQ(totp_code(seed, 20000000000ULL / 30, 8), "65353130");
}

TEST(CryptpadTotp, VerifyAcceptsOneStepEitherSideOnly) {
  const std::string seed = "12345678901234567890";
  const std::int64_t now = 1234567890;
  const std::string code = totp_code(seed, now / 30);
  EXPECT_TRUE(totp_verify(seed, code, now));
  EXPECT_TRUE(totp_verify(seed, code, now + 30));
  EXPECT_TRUE(totp_verify(seed, code, now - 30));
  EXPECT_FALSE(totp_verify(seed, code, now + 60));
  EXPECT_FALSE(totp_verify(seed, "12345", now));
  EXPECT_FALSE(totp_verify(seed, "12a456", now));
}

// RFC 4648 §10.
TEST(CryptpadBase32, Rfc4648Vectors) {
  EXPECT_EQ(base32_decode(""), "");
  EXPECT_EQ(base32_decode("MY======"), "f");
  EXPECT_EQ(base32_decode("MZXQ===="), "fo");
  EXPECT_EQ(base32_decode("MZXW6==="), "foo");
  EXPECT_EQ(base32_decode("MZXW6YQ="), "foob");
  EXPECT_EQ(base32_decode("MZXW6YTB"), "fooba");
  EXPECT_EQ(base32_decode("MZXW6YTBOI======"), "foobar");
  EXPECT_EQ(base32_decode("mzxw6ytboi"), "foobar");
  EXPECT_FALSE(base32_decode("MZ1W"));
}

TEST(CryptpadAuthBody, FirstStep) {
  const std::string body = R"({"command":"MFA_CHECK","publicKey":")" + kKey + R"(","nonce":"abc"})";
  auto b = parse_auth_body(body, ParseLimits{});
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_FALSE(b->is_response);
  EXPECT_EQ(b->command, "MFA_CHECK");
  EXPECT_EQ(b->public_key, kKey);
  EXPECT_EQ(b->raw, body);
  EXPECT_EQ(b->fields.at("nonce").text, "abc");
}

TEST(CryptpadAuthBody, ErrorsAsCryptpadWordsThem) {
  ParseLimits l;
  EXPECT_EQ(parse_auth_body("[1]", l).error().message, "invalid request");
  EXPECT_EQ(parse_auth_body(R"({"nonce":"x"})", l).error().message, "invalid request");
  EXPECT_EQ(parse_auth_body(R"({"command":"X","publicKey":"short"})", l).error().message, "Invalid key");
  EXPECT_EQ(parse_auth_body(R"({"txid":"x","sig":"y","more":1})", l).error().message, "extraneous parameters");
  EXPECT_EQ(parse_auth_body(R"({"txid":"x","sig":"y"})", l).error().message, "Invalid txid");
  EXPECT_EQ(parse_auth_body(R"({"txid":")" + std::string(32, 't') + R"(","sig":"y"})", l).error().message,
            "Missing signature");
  auto ok = parse_auth_body(R"({"txid":")" + std::string(32, 't') + R"(","sig":")" + std::string(88, 's') + "\"}", l);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->is_response);
}

TEST(CryptpadAuthBody, SignedTextIsTheRawBodyWithTxidAndDate) {
  // What the client's JSON.stringify({...body, txid, date}) gives.
  EXPECT_EQ(challenge_signed_text(R"({"command":"X","a":{"b":[1,2]}})", "T", "2026-01-01T00:00:00.000Z"),
            R"({"command":"X","a":{"b":[1,2]},"txid":"T","date":"2026-01-01T00:00:00.000Z"})");
  EXPECT_FALSE(challenge_signed_text("[1]", "T", "D"));
}

TEST(CryptpadUploadChunk, ChecksTheCombinedSignatureOverTheCookie) {
  ASSERT_GE(sodium_init(), 0);
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  const std::string cookie = "0123456789abcdef0123456789abcdef";
  std::string signed_msg(crypto_sign_BYTES + cookie.size(), '\0');
  crypto_sign(reinterpret_cast<unsigned char*>(signed_msg.data()), nullptr,
              reinterpret_cast<const unsigned char*>(cookie.data()), cookie.size(), sk);
  const std::string key = base64_encode(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
  auto body = [&](const std::string& sig) {
    return R"({"chunk":")" + base64_encode("hello") + R"(","sig":")" + sig + R"(","edPublic":")" + key + "\"}";
  };
  auto c = parse_upload_chunk(body(base64_encode(signed_msg)), ParseLimits{});
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->bytes, "hello");
  EXPECT_EQ(c->cookie, cookie);
  EXPECT_EQ(c->public_key, key);
  signed_msg.back() ^= 1;
  auto bad = parse_upload_chunk(body(base64_encode(signed_msg)), ParseLimits{});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::unauthenticated);
  EXPECT_FALSE(parse_upload_chunk(R"({"chunk":"!!","sig":1})", ParseLimits{}));
}

}  // namespace
}  // namespace hearth::cryptpad
