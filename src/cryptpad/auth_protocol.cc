#include "cryptpad/auth_protocol.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdio>

#include "core/json.h"

namespace hearth::cryptpad {

Result<AuthBody> parse_auth_body(std::string_view body, const ParseLimits& limits) {
  auto members = parse_object(body, limits);
  if (!members) return fail(Errc::invalid_argument, "invalid request");
  AuthBody out;
  for (auto& [k, v] : *members) out.fields.insert_or_assign(k, std::move(v));
  auto str = [&](const char* name) -> std::optional<std::string> {
    auto it = out.fields.find(name);
    if (it == out.fields.end() || !it->second.is_string()) return std::nullopt;
    return it->second.text;
  };
  if (out.fields.count("txid")) {
    for (const auto& [k, v] : out.fields)
      if (k != "txid" && k != "sig") return fail(Errc::invalid_argument, "extraneous parameters");
    auto txid = str("txid");
    if (!txid || txid->size() != 32) return fail(Errc::invalid_argument, "Invalid txid");
    auto sig = str("sig");
    if (!sig || sig->size() != 88) return fail(Errc::invalid_argument, "Missing signature");
    out.is_response = true;
    out.txid = std::move(*txid);
    out.sig = std::move(*sig);
    out.fields.clear();
    return out;
  }
  auto command = str("command");
  if (!command || command->empty()) return fail(Errc::invalid_argument, "invalid request");
  auto key = str("publicKey");
  if (!key || key->size() != 44) return fail(Errc::invalid_argument, "Invalid key");
  out.command = std::move(*command);
  out.public_key = std::move(*key);
  out.raw = std::string(body);
  return out;
}

std::optional<std::string> challenge_signed_text(std::string_view raw, std::string_view txid, std::string_view date) {
  std::size_t end = raw.find_last_not_of(" \t\r\n");
  if (end == std::string_view::npos || raw[end] != '}') return std::nullopt;
  std::size_t start = raw.find_first_not_of(" \t\r\n");
  if (raw[start] != '{') return std::nullopt;
  std::string out(raw.substr(start, end - start));
  // An empty object would give "{,": never the case (command and publicKey are there).
  out += ",\"txid\":" + json_quote(txid) + ",\"date\":" + json_quote(date) + "}";
  return out;
}

Result<UploadChunk> parse_upload_chunk(std::string_view body, const ParseLimits& limits) {
  auto members = parse_object(body, limits);
  if (!members) return fail(Errc::invalid_argument, "invalid request");
  std::optional<std::string> chunk, sig, key;
  for (auto& [k, v] : *members) {
    if (!v.is_string()) continue;
    if (k == "chunk") chunk = v.text;
    else if (k == "sig") sig = v.text;
    else if (k == "edPublic") key = v.text;
  }
  if (!chunk || !sig || !key) return fail(Errc::invalid_argument, "invalid request");
  if (!is_valid_public_key(*key)) return fail(Errc::unauthenticated, "INVALID_KEY");
  auto signed_bytes = base64_decode(*sig);
  if (!signed_bytes || signed_bytes->size() < 64) return fail(Errc::unauthenticated, "INVALID_KEY");
  std::string message = signed_bytes->substr(64);
  if (!verify_detached(message, base64_encode(std::string_view(*signed_bytes).substr(0, 64)), *key))
    return fail(Errc::unauthenticated, "INVALID_KEY");
  auto bytes = base64_decode(*chunk);
  if (!bytes) return fail(Errc::invalid_argument, "DECODE_BUFFER");
  return UploadChunk{std::move(*bytes), std::move(message), std::move(*key)};
}

std::optional<std::string> base32_decode(std::string_view text) {
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a';
    else if (c >= '2' && c <= '7') v = c - '2' + 26;
    else return std::nullopt;
    buffer = (buffer << 5) | static_cast<std::uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

std::string totp_code(std::string_view secret, std::uint64_t counter, int digits) {
  unsigned char msg[8];
  for (int i = 7; i >= 0; --i) {
    msg[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), msg, sizeof msg, mac, &len);
  const int offset = mac[len - 1] & 0x0f;
  const std::uint32_t bin = (static_cast<std::uint32_t>(mac[offset] & 0x7f) << 24) |
                            (static_cast<std::uint32_t>(mac[offset + 1]) << 16) |
                            (static_cast<std::uint32_t>(mac[offset + 2]) << 8) | mac[offset + 3];
  std::uint32_t mod = 1;
  for (int i = 0; i < digits; ++i) mod *= 10;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*u", digits, bin % mod);
  return buf;
}

bool is_valid_otp(std::string_view code) {
  if (code.size() != 6) return false;
  for (char c : code)
    if (c < '0' || c > '9') return false;
  return true;
}

bool totp_verify(std::string_view secret, std::string_view code, std::int64_t unix_seconds) {
  if (!is_valid_otp(code) || unix_seconds < 0) return false;
  const std::uint64_t step = static_cast<std::uint64_t>(unix_seconds) / 30;
  bool ok = false;
  for (std::uint64_t s = step == 0 ? 0 : step - 1; s <= step + 1; ++s) ok |= totp_code(secret, s) == code;
  return ok;
}

}  // namespace hearth::cryptpad
