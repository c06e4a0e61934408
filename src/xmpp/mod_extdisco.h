// Private to xmpp/: XEP-0215 external service discovery, so that clients can place audio
// and video calls through the operator's STUN/TURN server (coturn), and XEP-0157 contact
// addresses in the server's disco#info.
//
// TURN credentials follow coturn's shared-secret scheme ("TURN REST API",
// static-auth-secret / use-auth-secret): username = "<expiry unix time>:<bare JID>",
// password = base64(HMAC-SHA1(secret, username)). coturn checks them without talking to
// hearth; they stop working at the expiry.
//
// Requests (to the server's domain): <services xmlns='urn:xmpp:extdisco:2' [type]/> lists
// the services (with fresh credentials for TURN), <credentials><service host type/>
// </credentials> answers for one. Without a configured host the feature is not offered.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xmpp/iq_table.h"

namespace hearth {
class Clock;
}

namespace hearth::xmpp {

inline constexpr std::string_view kExtDiscoNs = "urn:xmpp:extdisco:2";

struct ExternalServicesOptions {
  std::string host;      // STUN/TURN server name; empty: nothing offered
  int port = 3478;       // STUN and TURN over UDP and TCP
  int tls_port = 0;      // TURN over TLS ("turns"); 0: not offered
  std::string secret;    // coturn's static-auth-secret; empty: STUN only
  int ttl_seconds = 86400;
};

struct TurnCredentials {
  std::string username, password;
};

TurnCredentials turn_credentials(std::string_view secret, std::string_view user, std::int64_t expires_unix);

// Adds the {urn:xmpp:extdisco:2}services and credentials entries (server) when a host is
// configured. `clock` must outlive the table.
void register_external_services(IqTable& table, Clock& clock, ExternalServicesOptions options);

// XEP-0157: the "http://jabber.org/network/serverinfo" form for the server's disco#info;
// `addresses` maps a kind ("abuse", "admin", "security", "status", "support") to URIs.
// nullopt when no address is configured.
std::optional<Element> server_info_form(const std::vector<std::pair<std::string, std::vector<std::string>>>& addresses);

}  // namespace hearth::xmpp
