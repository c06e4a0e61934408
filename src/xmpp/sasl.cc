// SCRAM (RFC 5802/7677) and PLAIN (RFC 4616) server mechanisms.
#include "xmpp/sasl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstdlib>

#include "core/random.h"
#include "xmpp/jid.h"

namespace hearth::xmpp {
namespace {

using accounts::ScramHash;

// Far above any legitimate message (a 1023-byte localpart escaped, a 1 KiB nonce);
// bounds the work done on hostile input.
constexpr std::size_t kMaxScramMessage = 8192;
constexpr std::size_t kMaxPlainPart = 255;

const EVP_MD* digest(ScramHash hash) { return hash == ScramHash::sha1 ? EVP_sha1() : EVP_sha256(); }

std::string hmac(ScramHash hash, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(digest(hash), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), out, &len)) {
    std::abort();  // only fails on allocation failure
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string hash_bytes(ScramHash hash, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), out, &len, digest(hash), nullptr)) std::abort();
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::size_t digest_size(ScramHash hash) { return hash == ScramHash::sha1 ? 20 : 32; }

bool equal_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const auto length = static_cast<int32_t>(text.size());
  for (int32_t i = 0; i < length;) {
    UChar32 c;
    U8_NEXT(s, i, length, c);
    if (c < 0) return false;
  }
  return true;
}

// RFC 5802 saslname: "=2C" is ',', "=3D" is '='; any other '=' is malformed.
bool decode_saslname(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '\0') return false;
    if (c != '=') {
      out.push_back(c);
      continue;
    }
    const std::string_view escape = in.substr(i, 3);
    if (escape == "=2C") {
      out.push_back(',');
    } else if (escape == "=3D") {
      out.push_back('=');
    } else {
      return false;
    }
    i += 2;
  }
  return !out.empty() && valid_utf8(out);
}

bool printable_nonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7E || c == ',') return false;
  }
  return true;
}

// Splits "a=1,b=2" into attributes; each must be ALPHA "=" value with a non-empty value.
bool split_attributes(std::string_view text, std::vector<std::pair<char, std::string_view>>& out) {
  out.clear();
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    if (item.size() < 3 || item[1] != '=') return false;
    const char name = item[0];
    if (!((name >= 'a' && name <= 'z') || (name >= 'A' && name <= 'Z'))) return false;
    if (item.find('\0') != std::string_view::npos) return false;
    out.emplace_back(name, item.substr(2));
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

std::string_view hash_label(ScramHash hash) { return hash == ScramHash::sha1 ? "SHA-1" : "SHA-256"; }

// Prepares a SASL username into the account's localpart.
Result<std::string> prepare_username(std::string_view name) {
  auto prepped = sasl_prep(name);
  if (!prepped) return prepped;
  return prep_localpart(*prepped);
}

bool is_temporary(Errc code) {
  switch (code) {
    case Errc::not_found:
    case Errc::unauthenticated:
    case Errc::permission_denied:
    case Errc::expired:
    case Errc::invalid_argument:
      return false;
    default:
      return true;
  }
}

}  // namespace

std::string sasl_base64_encode(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

bool sasl_base64_decode(std::string_view text, std::string& out) {
  out.assign(text.size() / 4 * 3 + 3, '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(), " \t\r\n",
                        &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return false;
  }
  out.resize(len);
  return true;
}

std::string_view sasl_failure_condition(SaslFailure failure) {
  switch (failure) {
    case SaslFailure::aborted: return "aborted";
    case SaslFailure::account_disabled: return "account-disabled";
    case SaslFailure::credentials_expired: return "credentials-expired";
    case SaslFailure::encryption_required: return "encryption-required";
    case SaslFailure::incorrect_encoding: return "incorrect-encoding";
    case SaslFailure::invalid_authzid: return "invalid-authzid";
    case SaslFailure::invalid_mechanism: return "invalid-mechanism";
    case SaslFailure::malformed_request: return "malformed-request";
    case SaslFailure::mechanism_too_weak: return "mechanism-too-weak";
    case SaslFailure::not_authorized: return "not-authorized";
    case SaslFailure::temporary_auth_failure: return "temporary-auth-failure";
  }
  return "not-authorized";
}

SaslStep SaslStep::challenge(std::string data) { return SaslStep{.kind = Kind::challenge, .data = std::move(data)}; }

SaslStep SaslStep::success(std::string data) { return SaslStep{.kind = Kind::success, .data = std::move(data)}; }

SaslStep SaslStep::fail(SaslFailure failure, std::string text) {
  return SaslStep{.kind = Kind::failure, .failure = failure, .text = std::move(text)};
}

// ---- ScramServer

ScramServer::ScramServer(ScramHash hash, bool plus, ChannelBinding cb, SaslCredentials& credentials,
                         std::string_view fake_salt_secret, int fake_iterations, NonceSource server_nonce)
    : hash_(hash),
      plus_(plus),
      cb_(std::move(cb)),
      credentials_(credentials),
      fake_salt_secret_(fake_salt_secret),
      fake_iterations_(fake_iterations < 1 ? 4096 : fake_iterations),
      server_nonce_(std::move(server_nonce)) {}

std::string_view ScramServer::mechanism_name() const {
  if (hash_ == ScramHash::sha1) return plus_ ? "SCRAM-SHA-1-PLUS" : "SCRAM-SHA-1";
  return plus_ ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256";
}

void ScramServer::set_advertised(const AdvertisedSasl& advertised) {
  downgrade_hash_ = scram_downgrade_protection_hash(hash_, advertised);
}

std::string ScramServer::authenticated_localpart() const { return authenticated_ ? localpart_ : std::string(); }

SaslStep ScramServer::finish(SaslFailure failure, std::string text) {
  stage_ = Stage::done;
  return SaslStep::fail(failure, std::move(text));
}

SaslStep ScramServer::start(std::string_view initial_response, bool has_initial) {
  if (stage_ != Stage::not_started) return finish(SaslFailure::malformed_request, "exchange already started");
  stage_ = Stage::client_first;
  if (!has_initial) return SaslStep::challenge({});
  return client_first(initial_response);
}

SaslStep ScramServer::step(std::string_view response) {
  switch (stage_) {
    case Stage::not_started:
      return finish(SaslFailure::malformed_request, "exchange not started");
    case Stage::client_first:
      return client_first(response);
    case Stage::client_final:
      return client_final(response);
    case Stage::done:
      break;
  }
  return finish(SaslFailure::malformed_request, "exchange finished");
}

SaslStep ScramServer::client_first(std::string_view message) {
  if (message.empty() || message.size() > kMaxScramMessage) {
    return finish(SaslFailure::malformed_request, "bad client-first-message size");
  }
  // gs2-header = gs2-cbind-flag "," [ authzid ] ","
  const std::size_t first_comma = message.find(',');
  if (first_comma == std::string_view::npos) return finish(SaslFailure::malformed_request, "missing gs2 header");
  const std::size_t second_comma = message.find(',', first_comma + 1);
  if (second_comma == std::string_view::npos) return finish(SaslFailure::malformed_request, "missing gs2 header");
  const std::string_view flag = message.substr(0, first_comma);
  const std::string_view authzid_field = message.substr(first_comma + 1, second_comma - first_comma - 1);
  gs2_header_ = std::string(message.substr(0, second_comma + 1));
  const std::string_view bare = message.substr(second_comma + 1);

  std::string cb_type;
  if (flag == "n" || flag == "y") {
    if (plus_) return finish(SaslFailure::malformed_request, "-PLUS mechanism requires channel binding");
    if (flag == "y" && !cb_.offered_types.empty()) {
      return finish(SaslFailure::not_authorized, "server-does-support-channel-binding");
    }
  } else if (flag.substr(0, 2) == "p=" && flag.size() > 2) {
    cb_type = std::string(flag.substr(2));
    for (char c : cb_type) {
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) {
        return finish(SaslFailure::malformed_request, "bad channel binding type");
      }
    }
    if (!plus_) return finish(SaslFailure::malformed_request, "channel binding with a non-PLUS mechanism");
  } else {
    return finish(SaslFailure::malformed_request, "bad gs2-cbind-flag");
  }

  if (!authzid_field.empty()) {
    if (authzid_field.substr(0, 2) != "a=" || !decode_saslname(authzid_field.substr(2), authzid_)) {
      return finish(SaslFailure::malformed_request, "bad authzid");
    }
  }

  std::vector<std::pair<char, std::string_view>> attributes;
  if (!split_attributes(bare, attributes)) return finish(SaslFailure::malformed_request, "bad attribute syntax");
  if (attributes[0].first == 'm') return finish(SaslFailure::malformed_request, "extensions-not-supported");
  if (attributes.size() < 2 || attributes[0].first != 'n' || attributes[1].first != 'r') {
    return finish(SaslFailure::malformed_request, "expected n= and r=");
  }
  std::string username;
  if (!decode_saslname(attributes[0].second, username)) {
    return finish(SaslFailure::malformed_request, "invalid-username-encoding");
  }
  const std::string_view client_nonce = attributes[1].second;
  if (!printable_nonce(client_nonce)) return finish(SaslFailure::malformed_request, "bad nonce");

  if (plus_) {
    bool offered = false;
    for (const auto& type : cb_.offered_types) offered = offered || type == cb_type;
    if (!offered || !cb_.data) return finish(SaslFailure::not_authorized, "unsupported-channel-binding-type");
    auto data = cb_.data(cb_type);
    if (!data) return finish(SaslFailure::not_authorized, "channel-binding-not-supported");
    cb_data_ = std::move(*data);
  }

  auto localpart = prepare_username(username);
  if (!localpart) return finish(SaslFailure::not_authorized, "invalid username");
  localpart_ = std::move(*localpart);

  auto stored = credentials_.scram(localpart_, hash_);
  if (stored) {
    stored_ = std::move(*stored);
    if (stored_.salt.empty() || stored_.iterations < 1 || stored_.stored_key.size() != digest_size(hash_) ||
        stored_.server_key.size() != digest_size(hash_)) {
      return finish(SaslFailure::temporary_auth_failure, {});
    }
  } else if (is_temporary(stored.error().code)) {
    return finish(SaslFailure::temporary_auth_failure, {});
  } else {
    // Stable per user so that repeated attempts cannot tell a fake salt from a real one.
    unknown_user_ = true;
    std::string seed = "hearth scram fake salt";
    seed.push_back('\0');
    seed += hash_label(hash_);
    seed.push_back('\0');
    seed += localpart_;
    stored_.salt = hmac(ScramHash::sha256, fake_salt_secret_, seed).substr(0, 16);
    stored_.iterations = fake_iterations_;
    stored_.stored_key = std::string(digest_size(hash_), '\0');
    stored_.server_key = std::string(digest_size(hash_), '\0');
  }

  nonce_ = std::string(client_nonce) + (server_nonce_ ? server_nonce_() : random_token(24));
  server_first_ = "r=" + nonce_ + ",s=" + sasl_base64_encode(stored_.salt) + ",i=" + std::to_string(stored_.iterations);
  if (!downgrade_hash_.empty()) server_first_ += ",h=" + downgrade_hash_;
  client_first_bare_ = std::string(bare);
  stage_ = Stage::client_final;
  return SaslStep::challenge(server_first_);
}

SaslStep ScramServer::client_final(std::string_view message) {
  if (message.empty() || message.size() > kMaxScramMessage) {
    return finish(SaslFailure::malformed_request, "bad client-final-message size");
  }
  std::vector<std::pair<char, std::string_view>> attributes;
  if (!split_attributes(message, attributes)) return finish(SaslFailure::malformed_request, "bad attribute syntax");
  if (attributes.size() < 3 || attributes[0].first != 'c' || attributes[1].first != 'r' ||
      attributes.back().first != 'p') {
    return finish(SaslFailure::malformed_request, "expected c=, r= and p=");
  }
  if (attributes[1].second != nonce_) return finish(SaslFailure::malformed_request, "nonce mismatch");
  std::string proof;
  if (!sasl_base64_decode(attributes.back().second, proof)) return finish(SaslFailure::malformed_request, "bad proof");
  if (proof.size() != digest_size(hash_)) return finish(SaslFailure::malformed_request, "bad proof length");

  const std::string expected_cb = sasl_base64_encode(gs2_header_ + cb_data_);
  if (!equal_constant_time(attributes[0].second, expected_cb)) {
    return finish(SaslFailure::not_authorized, "channel-bindings-dont-match");
  }

  // The proof is the last attribute; AuthMessage covers everything before ",p=".
  const std::string_view without_proof = message.substr(0, message.rfind(','));
  const std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  const std::string client_signature = hmac(hash_, stored_.stored_key, auth_message);
  std::string client_key = proof;
  for (std::size_t i = 0; i < client_key.size(); ++i) client_key[i] = static_cast<char>(client_key[i] ^ client_signature[i]);
  const bool proof_ok = equal_constant_time(hash_bytes(hash_, client_key), stored_.stored_key);
  const std::string server_signature = hmac(hash_, stored_.server_key, auth_message);
  if (!proof_ok || unknown_user_) return finish(SaslFailure::not_authorized, "invalid-proof");

  stage_ = Stage::done;
  authenticated_ = true;
  return SaslStep::success("v=" + sasl_base64_encode(server_signature));
}

// ---- PlainServer

SaslStep PlainServer::start(std::string_view initial_response, bool has_initial) {
  if (started_ || done_) {
    done_ = true;
    return SaslStep::fail(SaslFailure::malformed_request, "exchange already started");
  }
  started_ = true;
  if (!has_initial) return SaslStep::challenge({});
  return authenticate(initial_response);
}

SaslStep PlainServer::step(std::string_view response) {
  if (!started_ || done_) {
    done_ = true;
    return SaslStep::fail(SaslFailure::malformed_request, "unexpected response");
  }
  return authenticate(response);
}

SaslStep PlainServer::authenticate(std::string_view message) {
  done_ = true;
  const std::size_t first_nul = message.find('\0');
  if (first_nul == std::string_view::npos) return SaslStep::fail(SaslFailure::malformed_request, "expected two NULs");
  const std::size_t second_nul = message.find('\0', first_nul + 1);
  if (second_nul == std::string_view::npos || message.find('\0', second_nul + 1) != std::string_view::npos) {
    return SaslStep::fail(SaslFailure::malformed_request, "expected two NULs");
  }
  const std::string_view authzid = message.substr(0, first_nul);
  const std::string_view authcid = message.substr(first_nul + 1, second_nul - first_nul - 1);
  const std::string_view password = message.substr(second_nul + 1);
  for (std::string_view part : {authzid, authcid, password}) {
    if (part.size() > kMaxPlainPart || !valid_utf8(part)) {
      return SaslStep::fail(SaslFailure::malformed_request, "bad field");
    }
  }
  if (authcid.empty() || password.empty()) return SaslStep::fail(SaslFailure::malformed_request, "empty field");

  auto localpart = prepare_username(authcid);
  if (!localpart) return SaslStep::fail(SaslFailure::not_authorized, {});
  auto prepared_password = sasl_prep(password);
  if (!prepared_password) return SaslStep::fail(SaslFailure::not_authorized, {});

  auto verified = credentials_.verify_plain(*localpart, *prepared_password);
  if (!verified) {
    switch (verified.error().code) {
      case Errc::unauthenticated:
      case Errc::not_found:
      case Errc::invalid_argument:
        return SaslStep::fail(SaslFailure::not_authorized, {});
      case Errc::permission_denied:
        return SaslStep::fail(SaslFailure::account_disabled, {});
      case Errc::expired:
        return SaslStep::fail(SaslFailure::credentials_expired, {});
      default:
        return SaslStep::fail(SaslFailure::temporary_auth_failure, {});
    }
  }
  localpart_ = std::move(*localpart);
  authzid_ = std::string(authzid);
  return SaslStep::success();
}

// ---- XEP-0474

std::string scram_downgrade_protection_hash(ScramHash hash, const AdvertisedSasl& advertised) {
  // Sorting with std::string's operator< compares char_traits<char>, which orders by
  // unsigned octet value: the "i;octet" collation the XEP asks for.
  auto joined = [](std::vector<std::string> items) {
    std::sort(items.begin(), items.end());
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i) out.push_back('\x1E');
      out += items[i];
    }
    return out;
  };
  std::string s = joined(advertised.mechanisms);
  if (!advertised.channel_binding_types.empty()) s += '\x1F' + joined(advertised.channel_binding_types);
  return sasl_base64_encode(hash_bytes(hash, s));
}

// ---- selection

std::vector<std::string> offered_sasl_mechanisms(bool tls, const ChannelBinding& cb) {
  std::vector<std::string> names;
  if (!cb.offered_types.empty()) {
    names.emplace_back("SCRAM-SHA-256-PLUS");
    names.emplace_back("SCRAM-SHA-1-PLUS");
  }
  names.emplace_back("SCRAM-SHA-256");
  names.emplace_back("SCRAM-SHA-1");
  if (tls) names.emplace_back("PLAIN");
  return names;
}

std::unique_ptr<SaslMechanism> make_sasl_mechanism(std::string_view name, bool tls, const ChannelBinding& cb,
                                                   SaslCredentials& credentials, std::string_view fake_salt_secret,
                                                   int fake_iterations) {
  bool offered = false;
  for (const auto& n : offered_sasl_mechanisms(tls, cb)) offered = offered || n == name;
  if (!offered) return nullptr;
  if (name == "PLAIN") return std::make_unique<PlainServer>(credentials);
  const ScramHash hash = name.starts_with("SCRAM-SHA-1") ? ScramHash::sha1 : ScramHash::sha256;
  const bool plus = name.ends_with("-PLUS");
  return std::make_unique<ScramServer>(hash, plus, cb, credentials, fake_salt_secret, fake_iterations);
}

}  // namespace hearth::xmpp
