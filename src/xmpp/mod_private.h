// Private to xmpp/: XEP-0049 private XML storage (jabber:iq:private).
//
// An account stores arbitrary XML elements, each keyed by its (element name, namespace),
// and reads them back one at a time. The table entry answers the account's own requests
// (no 'to', or its own bare JID); requests to another account's bare JID are answered by
// im.cc (cancel/service-unavailable; XEP-0049 prefers forbidden, so the router may map
// jabber:iq:private to auth/forbidden there).
//   get  <query><x xmlns='ns'/></query>: the stored element with that name and namespace,
//        or the element exactly as sent when nothing is stored. No child or more than one
//        child: modify/not-acceptable (the XEP's "Bad Format" is a stream error in RFC
//        6120, so its stanza-level equivalent, not-acceptable, is used).
//   set  one or more children, each replacing what is stored under its key; all or
//        nothing. No child: modify/not-acceptable.
// In both, a child in a reserved namespace (jabber:client, jabber:server,
// jabber:iq:private — which is also what a child without its own xmlns inherits) is
// modify/not-acceptable. Limits: a child larger than max_element_bytes serialised is
// modify/not-acceptable; storing a new key past max_elements per account is
// modify/policy-violation. Storage failures: wait/internal-server-error (or
// wait/resource-constraint when the store is overloaded). The entry is also registered for
// the server's domain, so that the server's disco#info lists jabber:iq:private; requests
// addressed to the server are cancel/forbidden (someone else's data, XEP-0049 §2).
//
// Threads: handlers block on the store (net's worker pool only); no state besides the
// options. Schema: migrations of module "xmpp_private" (table xmpp_private).
#pragma once

#include <cstddef>
#include <string_view>

#include "core/error.h"
#include "xmpp/iq_table.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

inline constexpr std::string_view kPrivateNs = "jabber:iq:private";

struct PrivateStorageOptions {
  std::size_t max_element_bytes = 64 * 1024;  // one stored element, serialised
  int max_elements = 100;                     // distinct (name, namespace) keys per account
};

// Applies the "xmpp_private" migrations (blocking; call at start-up) and adds the
// {jabber:iq:private}query entry (accounts and server), with disco feature
// "jabber:iq:private".
// `store` and `clock` must outlive the table.
Result<void> register_private(IqTable& table, store::Store& store, Clock& clock, PrivateStorageOptions options = {});

}  // namespace hearth::xmpp
