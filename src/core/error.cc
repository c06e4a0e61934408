#include "core/error.h"

namespace hearth {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::permission_denied: return "permission_denied";
    case Errc::unauthenticated: return "unauthenticated";
    case Errc::expired: return "expired";
    case Errc::resource_exhausted: return "resource_exhausted";
    case Errc::unavailable: return "unavailable";
    case Errc::read_only: return "read_only";
    case Errc::io: return "io";
    case Errc::corrupt: return "corrupt";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

std::string Error::describe() const {
  std::string out(errc_name(code));
  out += ": ";
  out += message;
  return out;
}

}  // namespace hearth
