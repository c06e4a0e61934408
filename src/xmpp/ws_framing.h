// Private to xmpp/: RFC 7395 XMPP over WebSocket framing, as pure functions.
//
// A c2s session writes a byte stream (a stream header, then complete top-level elements,
// then </stream:stream>). Over WebSocket each message must instead be exactly one complete
// element that declares its own namespace, the stream header becomes
// <open xmlns='urn:ietf:params:xml:ns:xmpp-framing' .../> and the end <close .../>. Incoming
// messages are turned back into what the stream parser expects.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hearth::xmpp {

inline constexpr std::string_view kFramingNs = "urn:ietf:params:xml:ns:xmpp-framing";

// Splits what a session wrote into WebSocket messages (RFC 7395 §3.3). `pending` keeps an
// incomplete tail between calls.
std::vector<std::string> frame_outgoing(std::string& pending, std::string_view bytes);

// What the stream parser gets for one message from the client: <open/> becomes a stream
// header, <close/> the end of the stream, anything else passes unchanged. nullopt for an
// <open/> or <close/> that is not in the framing namespace's shape.
std::optional<std::string> unframe_incoming(std::string_view message);

}  // namespace hearth::xmpp
