// Pure pieces of CryptPad's HTTP side (private to the module): the `/api/auth` request
// bodies of the two-step challenge, the `/upload-blob` chunk body, and TOTP (RFC 6238,
// HMAC-SHA1, 30 s steps, 6 digits) with RFC 4648 base32 secrets. No I/O; unit-tested and
// fuzzed (tests/fuzz/fuzz_cryptpad_http.cc).
//
// The challenge's second step is signed over `JSON.stringify({...firstBody, txid, date})`
// as the client's V8 produced it. The first body arrived as that same JSON.stringify
// output, so the signed text is the raw first body with `,"txid":"…","date":"…"}` spliced
// in place of its closing brace; nothing is re-serialised.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "cryptpad/protocol.h"

namespace hearth::cryptpad {

// First step: `{command, publicKey, nonce, ...}`. Second step: `{txid, sig}` only.
struct AuthBody {
  bool is_response = false;
  // first step
  std::string command;
  std::string public_key;
  std::map<std::string, RawValue> fields;  // every member, by name (later duplicates win, as JSON.parse)
  std::string raw;                         // the body as sent
  // second step
  std::string txid, sig;
};
// invalid_argument with CryptPad's message ("invalid request", "Invalid key",
// "extraneous parameters", "Invalid txid", "Missing signature").
Result<AuthBody> parse_auth_body(std::string_view body, const ParseLimits& limits);
// The text the client signs in the second step (see above). nullopt when `raw` is not an
// object text ending in '}'.
std::optional<std::string> challenge_signed_text(std::string_view raw, std::string_view txid, std::string_view date);

// `/upload-blob` body `{chunk, sig, edPublic}`: `sig` is base64 of a combined ed25519
// signature (64 bytes) followed by the signed message, the upload cookie.
struct UploadChunk {
  std::string bytes;       // decoded chunk
  std::string cookie;      // the signed message
  std::string public_key;  // edPublic as sent (base64)
};
// invalid_argument on malformed input; unauthenticated ("INVALID_KEY") when the
// signature does not verify.
Result<UploadChunk> parse_upload_chunk(std::string_view body, const ParseLimits& limits);

// RFC 4648 base32 (upper or lower case, padding optional); nullopt on other characters.
std::optional<std::string> base32_decode(std::string_view text);
// The 6-digit code for a 30-second step counter.
std::string totp_code(std::string_view secret, std::uint64_t counter, int digits = 6);
// True when `code` matches the step of `unix_seconds` or one step either side (as CryptPad's
// notp with window 1).
bool totp_verify(std::string_view secret, std::string_view code, std::int64_t unix_seconds);
// CryptPad's checks: a code is 6 decimal digits; a secret decodes to 20 bytes.
bool is_valid_otp(std::string_view code);

}  // namespace hearth::cryptpad
