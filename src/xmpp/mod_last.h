// Private to xmpp/: XEP-0012 last activity (jabber:iq:last).
//
// Answers get requests:
//   to the server's domain   seconds since the server started (since register_last ran,
//                            on the monotonic clock), XEP-0012 §5
//   to the account itself    seconds='0': the asking session is connected, and §3 says a
//                            user with a connected resource reports 0
// A set is cancel/bad-request. Queries for OTHER accounts' bare JIDs (time since their
// last logout, gated by presence subscription, §3) are not implemented yet: they need the
// logout time and status stored when the last session ends, and are answered by im.cc
// (service-unavailable) until then.
//
// Threads: handlers read only the clock; safe on any thread.
#pragma once

#include <string_view>

#include "xmpp/iq_table.h"

namespace hearth {
class Clock;
}

namespace hearth::xmpp {

inline constexpr std::string_view kLastNs = "jabber:iq:last";

// Adds the {jabber:iq:last}query entry for the server and accounts, with disco feature
// "jabber:iq:last". `clock` must outlive the table.
void register_last(IqTable& table, Clock& clock);

}  // namespace hearth::xmpp
