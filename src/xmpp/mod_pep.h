// Private to xmpp/: XEP-0163 Personal Eventing Protocol, with the XEP-0223 persistence
// semantics (publish-options preconditions) that OMEMO (XEP-0384), avatars (XEP-0084) and
// bookmarks (XEP-0402) rely on.
//
// Every account is a pubsub service at its bare JID. The owner publishes, retracts,
// configures, purges and deletes nodes; nodes are created on first publish with the
// publish-options given (or the defaults: presence access, persistent, one item). Others
// read items as the node's access model allows: open (anyone), presence and roster (a
// contact the owner sends presence to), whitelist (the owner only).
//
// Notifications follow +notify interest (XEP-0163 §4.4): a session's features are learned
// from the XEP-0115 caps in its presence (one disco#info query per unknown verification
// string, cached once the hash verifies), and each publish is sent as a headline message to
// the owner's own sessions and to the sessions of contacts allowed to see the node, when
// they want <node>+notify. When a session's interest first covers a node (after its
// initial presence), it gets that node's last item (XEP-0163 §4.3.2), for its own account's
// nodes and for its contacts'.
//
// Supported: publish (+publish-options), retract (notify), items (all, max_items, by id),
// create (+configure), owner configure get/set, delete, purge; disco#items lists an
// account's nodes (those the requester may see). Not supported: explicit subscriptions
// (feature-not-implemented, <unsupported feature='subscribe'/>), collections, RSM on items.
//
// Threads: request handlers and hooks run on net's worker pool (they block on storage);
// the interest table sits behind one mutex. Schema: module "xmpp_pep" (tables
// xmpp_pep_node, xmpp_pep_item).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "xmpp/im.h"
#include "xmpp/iq_table.h"
#include "xmpp/xml.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

class SessionRegistry;
class XmppStore;

inline constexpr std::string_view kPubsubNs = "http://jabber.org/protocol/pubsub";
inline constexpr std::string_view kPubsubOwnerNs = "http://jabber.org/protocol/pubsub#owner";
inline constexpr std::string_view kPubsubEventNs = "http://jabber.org/protocol/pubsub#event";
inline constexpr std::string_view kPubsubErrorsNs = "http://jabber.org/protocol/pubsub#errors";
inline constexpr std::string_view kCapsNs = "http://jabber.org/protocol/caps";

struct PepOptions {
  std::size_t max_item_bytes = 128 * 1024;  // one item's payload, serialised
  int max_nodes = 256;                       // per account
  int max_items_per_node = 1000;             // what "max" means in pubsub#max_items
};

// A node's configuration (the pubsub#node_config fields hearth keeps).
struct PepNodeConfig {
  std::string access_model = "presence";  // open | presence | roster | whitelist
  bool persist_items = true;
  int max_items = 1;
  bool send_last_published_item = true;  // on_sub_and_presence; false: never
  bool notify_retract = true;
  std::string title;
};

class Pep final : public PepHooks {
 public:
  // `blocked(owner, contact)`: XEP-0191, consulted before notifying a contact.
  Pep(store::Store& store, XmppStore& roster, SessionRegistry& registry, Clock& clock,
      std::function<bool(const std::string& owner, const std::string& contact)> blocked, PepOptions options = {});

  // Applies the "xmpp_pep" migrations (blocking; at start-up) and adds the pubsub and
  // pubsub#owner entries (the account itself and other accounts' bare JIDs).
  Result<void> register_iqs(IqTable& table);

  // PepHooks, called by ImRouter.
  void on_presence(const SessionIdentity& me, const Element& presence) override;
  bool on_iq_response(const SessionIdentity& me, const Element& iq) override;
  void on_session_closed(const SessionIdentity& me) override;
  std::vector<std::string> visible_nodes(const std::string& owner, const std::string& requester) override;

  // Removes every node and item of an account.
  Result<void> forget_account(const std::string& bare);

  // Handlers, public for tests. `to` is the bare JID of the service (the owner).
  void handle_pubsub(const SessionIdentity& me, const std::string& to, const Element& iq, const Element& pubsub,
                     IqReply& reply);
  void handle_owner(const SessionIdentity& me, const std::string& to, const Element& iq, const Element& pubsub,
                    IqReply& reply);

  // The nodes a session wants notifications for, once its caps are known (tests).
  std::set<std::string> interest_of(std::uint64_t session_id) const;

 private:
  struct Interest {
    std::string bare, full;
    std::set<std::string> nodes;
  };
  struct PendingQuery {
    std::uint64_t session_id;
    std::string ver;
  };

  void publish(const SessionIdentity& me, const Element& iq, const Element& pubsub, const Element& publish,
               IqReply& reply);
  void retract(const SessionIdentity& me, const Element& retract, IqReply& reply);
  void items(const SessionIdentity& me, const std::string& owner, const Element& items, IqReply& reply);
  void create(const SessionIdentity& me, const Element& pubsub, const Element& create, IqReply& reply);

  // Applies a caps feature list to a session and sends last items for newly wanted nodes.
  void set_features(const SessionIdentity& me, const std::vector<std::string>& features);
  void send_last_items(const SessionIdentity& me, const std::set<std::string>& nodes);
  // Sends <event/> content to every session that wants `node` of `owner` and may see it.
  void notify(const std::string& owner, const std::string& node, const PepNodeConfig& config, const Element& event_child);
  bool may_read(const std::string& owner, const std::string& requester, const PepNodeConfig& config);

  store::Store& store_;
  XmppStore& roster_;
  SessionRegistry& registry_;
  Clock& clock_;
  std::function<bool(const std::string&, const std::string&)> blocked_;
  PepOptions options_;

  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Interest> interest_;           // by session id
  std::unordered_map<std::string, std::vector<std::string>> caps_;  // verified ver -> features
  std::unordered_map<std::string, PendingQuery> pending_;          // our disco#info iq ids
  std::uint64_t next_query_ = 1;
};

}  // namespace hearth::xmpp
