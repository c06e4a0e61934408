// Private to xmpp/: the pure parts of XEP-0388 (SASL2), XEP-0386 (Bind 2) and XEP-0484
// (FAST): reading an <authenticate/> request with its inline requests, the HT-* token
// mechanisms (draft-schmaus-kitten-sasl-ht) and the Bind 2 resource name. The session
// (c2s.cc) drives the exchange; fast.h keeps the tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "xmpp/xml.h"

namespace hearth::xmpp {

inline constexpr std::string_view kSasl2Ns = "urn:xmpp:sasl:2";
inline constexpr std::string_view kBind2Ns = "urn:xmpp:bind:0";
inline constexpr std::string_view kFastNs = "urn:xmpp:fast:0";

// What a client asked for in one <authenticate xmlns='urn:xmpp:sasl:2'/>.
struct Sasl2Request {
  std::string mechanism;
  std::optional<std::string> initial_response;  // decoded; nullopt: none was sent
  std::string user_agent_id;                    // <user-agent id>, "" if none
  std::string software, device;

  struct Bind {
    std::string tag;
    bool enable_carbons = false;
    bool enable_sm = false;
    bool sm_resume = false;  // <enable resume='true'/>
    bool inactive = false;  // XEP-0352: start inactive
  };
  std::optional<Bind> bind;  // XEP-0386

  struct Resume {
    std::string previd;
    std::uint32_t h = 0;
  };
  std::optional<Resume> resume;  // XEP-0198 inline resumption

  std::string request_token;  // XEP-0484: mechanism to issue a token for, "" if none
  bool fast = false;          // XEP-0484: authenticating with a token
  bool fast_invalidate = false;
};

// Errc::invalid_argument (with a message for <text/>) for a malformed request: no
// mechanism, bad base64, a non-UUID-shaped or oversized user-agent id, a bad resume h.
Result<Sasl2Request> parse_sasl2_authenticate(const Element& authenticate);

// HT-* mechanisms (XEP-0484 §3; draft-schmaus-kitten-sasl-ht): "HT-SHA-256-NONE" has no
// channel binding, -ENDP tls-server-end-point, -EXPR tls-exporter. The channel-binding
// type for a mechanism name, "" for NONE; nullopt when the name is not an HT mechanism
// hearth supports.
std::optional<std::string> ht_channel_binding(std::string_view mechanism);
// HMAC-SHA-256 keyed with the token over "Initiator" (client) or "Responder" (server)
// followed by the channel-binding data.
std::string ht_initiator_proof(std::string_view token, std::string_view cb_data);
std::string ht_responder_proof(std::string_view token, std::string_view cb_data);
// Splits the client's message "authcid NUL proof"; nullopt if malformed.
std::optional<std::pair<std::string, std::string>> split_ht_message(std::string_view message);

// XEP-0386 §4: "<tag>.<id>" where id is stable for one account and client installation
// (derived from the user-agent id without revealing it), or random without one. The tag
// is cut to 32 bytes; an empty tag gives just the id.
std::string bind2_resource(std::string_view tag, std::string_view bare_jid, std::string_view user_agent_id);

}  // namespace hearth::xmpp
