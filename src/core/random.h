// Cryptographically secure random identifiers and tokens (libsodium behind the interface).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace hearth {

// `bytes` random bytes encoded as URL-safe base64 without padding.
std::string random_token(std::size_t bytes = 32);
// `bytes` random bytes as lowercase hex.
std::string random_hex(std::size_t bytes);
// Constant-time comparison of two secrets.
bool secrets_equal(std::string_view a, std::string_view b);

}  // namespace hearth
