// Private to xmpp/: XEP-0484 FAST tokens — per account and client installation (the SASL2
// user-agent id), bound to the HT-* mechanism they were issued for.
//
// Each client has two slots (XEP-0484 §7): 'current' and 'new'. issue() puts a fresh token
// in 'new' (dropping an unused one there); the first successful use of the 'new' token
// promotes it to 'current' and drops the old one, so a client that missed the <success/>
// carrying a rotated token can still log in with the previous one. Tokens are HMAC keys
// for the HT mechanisms, so the database keeps them as issued (like a password-equivalent
// session secret); they expire after `ttl_ms` and are rotated once older than
// `rotate_after_ms`.
//
// Blocking (store); thread-safe. Schema: module "xmpp_fast" (table xmpp_fast_token).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

struct FastOptions {
  std::int64_t ttl_ms = 21LL * 24 * 3600 * 1000;
  std::int64_t rotate_after_ms = 24LL * 3600 * 1000;
  int max_clients = 50;  // installations with tokens per account; the oldest is dropped past it
};

struct FastToken {
  std::string token;
  std::int64_t expires_ms = 0;
};

struct FastVerified {
  std::string token;  // the token that matched (the key for the responder proof)
  bool rotate = false;  // old enough for a new one
};

class FastTokens {
 public:
  FastTokens(store::Store& store, Clock& clock, FastOptions options = {});
  Result<void> migrate();

  Result<FastToken> issue(std::string_view owner, std::string_view client_id, std::string_view mechanism);
  // Finds the client's token for `mechanism` whose HT initiator proof over `cb_data` is
  // `proof`. unauthenticated when none matches, expired when the match has expired.
  Result<FastVerified> verify(std::string_view owner, std::string_view client_id, std::string_view mechanism,
                              std::string_view proof, std::string_view cb_data);
  Result<void> invalidate(std::string_view owner, std::string_view client_id, std::string_view token);
  Result<void> forget_account(std::string_view owner);

 private:
  store::Store& store_;
  Clock& clock_;
  FastOptions options_;
};

}  // namespace hearth::xmpp
