// Fuzzes CryptPad's HTTP-side parsers: /api/auth bodies (both steps) and the signed text
// spliced from them, /upload-blob chunk bodies, base32 secrets and TOTP codes. Must never
// crash; a spliced challenge text must parse back as a JSON object.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cryptpad/auth_protocol.h"

using namespace hearth::cryptpad;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ParseLimits limits;
  limits.max_bytes = 1 << 16;
  limits.max_depth = 16;
  if (auto b = parse_auth_body(text, limits); b && !b->is_response) {
    auto signed_text = challenge_signed_text(b->raw, "txid", "date");
    if (!signed_text) __builtin_trap();
    ParseLimits roomy = limits;
    roomy.max_bytes += 64;
    if (!parse_object(*signed_text, roomy)) __builtin_trap();
  }
  (void)parse_upload_chunk(text, limits);
  if (auto secret = base32_decode(text)) {
    if (secret->size() > text.size()) __builtin_trap();
    (void)totp_verify(*secret, "123456", static_cast<std::int64_t>(size) * 1000);
  }
  return 0;
}
