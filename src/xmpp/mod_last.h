// Private to xmpp/: XEP-0012 last activity (jabber:iq:last).
//
// Answers get requests:
//   to the server's domain   seconds since the server started (since register_last ran,
//                            on the monotonic clock), XEP-0012 §5
//   to the account itself    seconds='0': the asking session is connected (§3)
//   to another account       §4: when the requester receives that account's presence (its
//                            roster says from/both, and no block either way): 0 while it
//                            has an available resource, else the seconds since its last
//                            resource went unavailable, with the status text it left
//                            with; cancel/item-not-found when it never logged out. Others
//                            get auth/forbidden.
// A set is cancel/bad-request.
//
// The logout time is recorded by routing (LastActivity::note_logout) when an account's last
// available resource goes away.
//
// Threads: handlers and note_logout block on the store (worker pool). Schema: module
// "xmpp_last" (table xmpp_last_activity).
#pragma once

#include <functional>
#include <string>
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

class SessionRegistry;
class XmppStore;

inline constexpr std::string_view kLastNs = "jabber:iq:last";

class LastActivity {
 public:
  // `blocked(owner, contact)`: XEP-0191.
  LastActivity(store::Store& store, XmppStore& roster, SessionRegistry& registry, Clock& clock,
               std::function<bool(const std::string&, const std::string&)> blocked);

  // Applies the "xmpp_last" migrations and adds the {jabber:iq:last}query entry (server,
  // accounts, other accounts) with disco feature "jabber:iq:last". Blocking.
  Result<void> register_iqs(IqTable& table);

  // The account's last available resource went unavailable, leaving `status` (may be "").
  void note_logout(const std::string& bare, const std::string& status);
  Result<void> forget_account(const std::string& bare);

 private:
  void answer(const SessionIdentity& me, const std::string& to, const Element& iq, IqReply& reply);

  store::Store& store_;
  XmppStore& roster_;
  SessionRegistry& registry_;
  Clock& clock_;
  std::function<bool(const std::string&, const std::string&)> blocked_;
  std::int64_t started_ns_;
};

}  // namespace hearth::xmpp
