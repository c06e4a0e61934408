// RFC 5802 key derivation with OpenSSL (PBKDF2, HMAC, digests).
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdlib>

#include "accounts/accounts.h"

namespace hearth::accounts {
namespace {

const EVP_MD* digest(ScramHash hash) { return hash == ScramHash::sha1 ? EVP_sha1() : EVP_sha256(); }

std::string hmac(const EVP_MD* md, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), out, &len)) {
    std::abort();  // only fails on allocation failure
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string hash_bytes(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), out, &len, md, nullptr)) std::abort();
  return std::string(reinterpret_cast<const char*>(out), len);
}

}  // namespace

ScramCredentials derive_scram_credentials(ScramHash hash, std::string_view password, std::string_view salt,
                                          int iterations) {
  const EVP_MD* md = digest(hash);
  if (iterations < 1) iterations = 1;
  std::string salted(static_cast<std::size_t>(EVP_MD_get_size(md)), '\0');
  if (!PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                         reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                         iterations, md, static_cast<int>(salted.size()),
                         reinterpret_cast<unsigned char*>(salted.data()))) {
    std::abort();  // only fails on allocation failure
  }
  ScramCredentials out;
  out.salt = std::string(salt);
  out.iterations = iterations;
  out.stored_key = hash_bytes(md, hmac(md, salted, "Client Key"));
  out.server_key = hmac(md, salted, "Server Key");
  return out;
}

}  // namespace hearth::accounts
