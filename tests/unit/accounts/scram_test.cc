// SCRAM key derivation against the RFC 5802 (SHA-1) and RFC 7677 (SHA-256) examples, checked
// the way a server does: recover ClientKey from the proof with StoredKey and compare
// H(ClientKey) with StoredKey, and compute the ServerSignature from ServerKey.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <string>

#include <gtest/gtest.h>

#include "accounts/accounts.h"

namespace hearth::accounts {
namespace {

std::string b64decode(std::string_view in) {
  std::string out(in.size(), '\0');
  size_t len = 0;
  EXPECT_EQ(sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), in.data(), in.size(),
                              nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL),
            0);
  out.resize(len);
  return out;
}

std::string b64encode(std::string_view in) {
  std::string out(sodium_base64_ENCODED_LEN(in.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(in.data()), in.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

std::string hmac(const EVP_MD* md, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(),
       out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string digest(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string xor_bytes(std::string a, std::string_view b) {
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] = static_cast<char>(a[i] ^ b[i]);
  return a;
}

struct Vector {
  ScramHash hash;
  const EVP_MD* md;
  std::string_view salt_b64;
  std::string_view client_first_bare, server_first, client_final_without_proof;
  std::string_view proof_b64, server_signature_b64;
};

void check_vector(const Vector& v) {
  ScramCredentials c = derive_scram_credentials(v.hash, "pencil", b64decode(v.salt_b64), 4096);
  EXPECT_EQ(c.iterations, 4096);
  EXPECT_EQ(b64encode(c.salt), v.salt_b64);
  const std::string auth_message = std::string(v.client_first_bare) + "," + std::string(v.server_first) + "," +
                                   std::string(v.client_final_without_proof);
  // Server side: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey.
  const std::string client_signature = hmac(v.md, c.stored_key, auth_message);
  const std::string client_key = xor_bytes(b64decode(v.proof_b64), client_signature);
  EXPECT_EQ(digest(v.md, client_key), c.stored_key);
  EXPECT_EQ(b64encode(hmac(v.md, c.server_key, auth_message)), v.server_signature_b64);
}

TEST(Scram, Rfc5802Sha1Example) {
  check_vector({ScramHash::sha1, EVP_sha1(), "QSXCR+Q6sek8bf92", "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j", "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "rmF9pqV8S7suAoZWja4dJRkFsKQ="});
}

TEST(Scram, Rfc7677Sha256Example) {
  check_vector({ScramHash::sha256, EVP_sha256(), "W22ZaJ0SNY7soEsUEjb6gQ==", "n=user,r=rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="});
}

TEST(Scram, WrongPasswordGivesOtherKeys) {
  const std::string salt = "0123456789abcdef";
  auto a = derive_scram_credentials(ScramHash::sha256, "pencil", salt, 4096);
  auto b = derive_scram_credentials(ScramHash::sha256, "pencil!", salt, 4096);
  EXPECT_NE(a.stored_key, b.stored_key);
  EXPECT_NE(a.server_key, b.server_key);
  EXPECT_EQ(a.stored_key.size(), 32u);
  EXPECT_EQ(derive_scram_credentials(ScramHash::sha1, "pencil", salt, 4096).stored_key.size(), 20u);
}

}  // namespace
}  // namespace hearth::accounts
