// hearth::Error and hearth::Result<T>: the one error type that crosses module boundaries.
//
// Every public function of a module that can fail returns Result<T> (tl::expected until
// C++23's std::expected is available on g++ 12). Exceptions never cross a module boundary
// and are never used on the data path. Each protocol maps an Error to its own wire error in
// one place (XMPP stanza/stream errors, Matrix errcodes, CryptPad error frames), so `code`
// is a small closed set of categories that those mappings can switch on; `message` is for
// people (logs, admin tools) and must never contain secrets.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace hearth {

enum class Errc {
  invalid_argument,    // the caller sent something malformed or out of range
  not_found,
  already_exists,
  permission_denied,   // authenticated, but not allowed
  unauthenticated,     // bad or missing credentials
  expired,             // a token, invitation or slot past its lifetime
  resource_exhausted,  // a quota, rate or size limit was hit
  unavailable,         // try again later (overload, shutting down, read-only mode)
  read_only,           // storage is in read-only mode (disk reserve reached)
  io,                  // the operating system or disk failed
  corrupt,             // stored data failed a consistency check
  internal,            // a bug: logged with HEARTH_BUG
};

std::string_view errc_name(Errc code);

struct Error {
  Errc code;
  std::string message;

  Error(Errc c, std::string m) : code(c), message(std::move(m)) {}
  // "not_found: user alice@localhost"
  std::string describe() const;
};

template <typename T>
using Result = tl::expected<T, Error>;

// Shorthand for `return hearth::fail(Errc::not_found, "no such user");`
inline tl::unexpected<Error> fail(Errc code, std::string message) {
  return tl::unexpected<Error>(Error(code, std::move(message)));
}

inline Result<void> ok() { return {}; }

}  // namespace hearth
