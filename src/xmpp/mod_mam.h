// Private to xmpp/: XEP-0313 message archive management (urn:xmpp:mam:2) queries and
// XEP-0359 unique stanza ids. Archiving itself happens while routing (im.cc), before a
// message is delivered, so an archived message is durable before anyone sees it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "xmpp/iq_table.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {

inline constexpr std::string_view kMamNs = "urn:xmpp:mam:2";
inline constexpr std::string_view kSidNs = "urn:xmpp:sid:0";

// Adds the urn:xmpp:mam:2 query, form and prefs handlers for accounts.
void register_mam(IqTable& table, XmppStore& store);

// Answers a urn:xmpp:mam:2 query (get: the form; set: results as messages from `archive`,
// then <fin/>) over the archive kept under `archive` (an account's or a room's bare JID).
void answer_mam_query(XmppStore& store, const std::string& archive, const SessionIdentity& me, const Element& iq,
                      const Element& query, IqReply& reply);

// Whether a message goes into the archive (XEP-0313 §5.1.1, XEP-0334 hints).
bool archivable(const Element& message);

// XEP-0082 date-time ("2010-06-07T00:00:00Z", fractions and offsets allowed) to ms.
std::optional<std::int64_t> parse_xmpp_datetime(std::string_view text);

}  // namespace hearth::xmpp
