// Private to xmpp/: XEP-0054 vcard-temp, and the server side of XEP-0153 (vCard-based
// avatars), which needs nothing beyond keeping the vCard with its <PHOTO/> intact.
//
// Each account has at most one stored vCard, kept as its serialised XML (the whole
// <vCard xmlns='vcard-temp'/> element; clients always replace it as a whole, XEP-0054
// §3.2). The table entry answers the account's own requests (no 'to', or its own bare
// JID):
//   get  the stored vCard, or an empty <vCard xmlns='vcard-temp'/> when there is none
//   set  replaces it; an empty <vCard/> deletes it. Past max_bytes (serialised):
//        modify/not-acceptable, nothing stored.
// Storage failures answer wait/internal-server-error (wait/resource-constraint when the
// store is overloaded). The entry is also registered for the server's domain, so that the
// server's disco#info lists vcard-temp: the server has no vCard of its own (get: empty
// <vCard/>; set: auth/forbidden).
//
// Requests for ANOTHER account's vCard never reach the table (im.cc answers requests to
// other bare JIDs); the router uses load_vcard()/load_vcard_element() for them and must
// answer cancel/service-unavailable both when the account does not exist and when it has
// no vCard (XEP-0054 §3.3, against directory harvesting).
//
// Threads: handlers and the load functions block on the store; call them from net's
// worker pool (never from a shard thread). They hold no state besides the options.
// Schema: migrations of module "xmpp_vcard" (table xmpp_vcard).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "xmpp/iq_table.h"
#include "xmpp/xml.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

inline constexpr std::string_view kVcardNs = "vcard-temp";

struct VcardOptions {
  // Largest vCard accepted, serialised. Avatars (XEP-0153 PHOTO, base64) are the bulk of
  // it; 64 KiB leaves room for a 48 KiB image.
  std::size_t max_bytes = 64 * 1024;
};

// Applies the "xmpp_vcard" migrations (blocking; call at start-up) and adds the
// {vcard-temp}vCard entry (accounts and server), with disco feature "vcard-temp".
// `store` and `clock` must outlive the table.
Result<void> register_vcard(IqTable& table, store::Store& store, Clock& clock, VcardOptions options = {});

// The stored vCard of `bare` as serialised XML, nullopt when it has none. Blocking.
Result<std::optional<std::string>> load_vcard(store::Store& store, std::string_view bare);
// The same, parsed, ready to be added to an iq result. Errc::corrupt if the stored text
// does not parse.
Result<std::optional<Element>> load_vcard_element(store::Store& store, std::string_view bare);

}  // namespace hearth::xmpp
