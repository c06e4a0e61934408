// Private to xmpp/: instant messaging and presence (RFC 6121) for authenticated sessions.
//
// ImRouter handles every stanza a bound client sends and routes stanzas between local
// accounts. Its methods block on storage, so they run on net's worker pool (one job at a
// time per session); they touch only thread-safe state: the session registry, the store,
// and connections' send().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net.h"
#include "xmpp/iq_table.h"
#include "xmpp/jid.h"
#include "xmpp/mod_blocking.h"
#include "xmpp/registry.h"
#include "xmpp/session_sink.h"
#include "xmpp/xml.h"
#include "xmpp/xmpp_store.h"

namespace hearth::accounts {
class Accounts;
}

namespace hearth::xmpp {

inline constexpr std::string_view kDiscoInfoNs = "http://jabber.org/protocol/disco#info";
inline constexpr std::string_view kDiscoItemsNs = "http://jabber.org/protocol/disco#items";

// Who a bound session is; immutable after bind.
struct SessionIdentity {
  std::string localpart, domain, resource;
  std::string bare, full;
  std::uint64_t id = 0;
  std::shared_ptr<SessionSink> sink;
};

// What routing tells the PEP service (mod_pep.h), as an interface so that routing does
// not depend on it. Called on the worker pool.
class PepHooks {
 public:
  virtual ~PepHooks() = default;
  // A presence the session broadcast (no 'to'): available (with XEP-0115 caps) or not.
  virtual void on_presence(const SessionIdentity& me, const Element& presence) = 0;
  // An iq result or error from the session; true when it answered PEP's own query.
  virtual bool on_iq_response(const SessionIdentity& me, const Element& iq) = 0;
  virtual void on_session_closed(const SessionIdentity& me) = 0;
  // The nodes of `owner` that `requester` (a bare JID) may see, for disco#items.
  virtual std::vector<std::string> visible_nodes(const std::string& owner, const std::string& requester) = 0;
};

// A server-side entity at a domain of its own (XEP-0045 rooms at conference.<domain>,
// later XEP-0363 upload): it gets every stanza a local user addresses to that domain.
// Called on the worker pool.
class LocalService {
 public:
  virtual ~LocalService() = default;
  // 'from' is stamped with the sender's full JID; 'to' is a normalised JID of the domain.
  virtual void handle(const SessionIdentity& from, Element stanza) = 0;
  // The session went offline (or sent unavailable presence): forget it.
  virtual void session_gone(const SessionIdentity& me) = 0;
  // disco#items of the server: the service's address and name.
  virtual std::string name() const = 0;
};

class ImRouter {
 public:
  ImRouter(std::vector<std::string> domains, accounts::Accounts& accounts, XmppStore& store, SessionRegistry& registry,
           Clock& clock, Logger& log, MetricsRegistry& metrics);

  bool is_local_domain(std::string_view domain) const;

  // Called exactly once when a client's stanza has been handled: its storage work is
  // durable and it was routed, or it was answered with an error. Only then may the
  // session count it (XEP-0198 h) and hand over its next stanza, which keeps each
  // session's stanzas in order.
  using Finished = std::function<void()>;
  // A stanza from a bound client (already in jabber:client, 'from' not yet stamped).
  // Without an executor (set_executor) everything happens before this returns. With one,
  // a message that is archived returns at once: its archive rows (the sender's and the
  // recipient's copy, one store job) wait in the store's writer queue with those of other
  // sessions and are committed together (group commit); delivery and `finished` follow on
  // the executor once the commit returned.
  void handle_from_client(const SessionIdentity& me, Element stanza, Finished finished);
  // Runs the rest of a message's routing after its archive commit, off the store thread
  // (net's worker pool; the service retries later when the pool is full). Returning false
  // runs it on the committing store thread, where blocking store calls fail: only for
  // tests. Set once at start-up.
  using Executor = std::function<bool(std::function<void()>)>;
  void set_executor(Executor run) { executor_ = std::move(run); }
  // The session ended: broadcast unavailable if it was available.
  void session_closed(const SessionIdentity& me, bool was_available);

  // Handlers for IQ payloads addressed to accounts and to the server; modules register
  // at start-up (see iq_table.h).
  IqTable& iqs() { return iqs_; }
  // XEP-0191: consulted for every routed stanza once set (at start-up).
  void set_blocklist(std::shared_ptr<BlockList> blocks) { blocks_ = std::move(blocks); }
  // XEP-0128 extended information (XEP-0157 contact addresses) in the server's
  // disco#info; added at start-up.
  void add_server_form(Element form) { server_forms_.push_back(std::move(form)); }
  const std::vector<Element>& server_forms() const { return server_forms_; }
  // XEP-0115: the node and verification string of the server's own disco#info.
  static constexpr std::string_view kServerCapsNode = "https://hearth.invalid/caps";
  std::string server_caps_ver() const;
  // The server's disco#info features: its own iq features plus the PEP ones (see im.cc).
  std::vector<std::string> server_features() const;
  // XEP-0012: called when an account's last available resource went unavailable (with
  // the status text it left with); set once at start-up.
  void set_logout_hook(std::function<void(const std::string& bare, const std::string& status)> hook) {
    logout_hook_ = std::move(hook);
  }
  // Local services by domain; added at start-up.
  void add_service(std::string domain, std::shared_ptr<LocalService> service) {
    services_.emplace_back(std::move(domain), std::move(service));
  }
  // Delivers a stanza from a local service to a local user ('to' a full JID: that session
  // only; a bare JID: routed as a message from anyone). False when a full JID has no session.
  bool deliver_from_service(const Element& stanza);
  // XEP-0357: called when a message for `owner` could not reach a connected client
  // (stored offline, or queued for a session waiting to be resumed); set at start-up.
  void set_push_hook(std::function<void(const std::string& owner, const std::string& sender)> hook) {
    push_hook_ = std::move(hook);
  }
  // Federation (s2s.h): serialised stanzas for other domains, sent from `local_domain` (the
  // domain of their 'from') to `remote_domain`; set once at start-up. Unset: stanzas to
  // other domains are answered with <remote-server-not-found/>.
  using RemoteSend = std::function<void(const std::string& local_domain, const std::string& remote_domain, std::string stanza)>;
  void set_remote(RemoteSend send) { remote_ = std::move(send); }
  // A stanza a remote server sent (jabber:client namespace already, 'from' authenticated
  // as the peer's domain, 'to' one of ours or a local service's). Blocking (storage).
  void handle_from_remote(Element st);
  // Whether stanzas to `domain` leave through federation.
  bool is_remote(std::string_view domain) const { return remote_ && !serves(domain); }
  // A served domain or a local service's.
  bool serves(std::string_view domain) const { return is_local_domain(domain) || service_for(domain); }
  // Sends a stanza (its 'from' and 'to' set) to a remote domain; false when it is not remote.
  bool send_remote(const Element& st);
  // XEP-0163: set once at start-up.
  void set_pep(std::shared_ptr<PepHooks> pep) { pep_ = std::move(pep); }
  // Whether `owner` blocked `contact` (a full or bare JID). A failing lookup counts as
  // blocked so that nothing slips through; the caller answers with an error.
  bool blocked(const std::string& owner, const std::string& contact);

  // Serialises and delivers a stanza to one session.
  static void send(SessionSink& sink, const Element& stanza);
  // A session ended for good: re-routes the messages its client never acknowledged
  // (XEP-0198) so they reach offline storage or another resource.
  void reroute_unacked(const std::string& bare, std::vector<std::string> stanzas);

 private:
  // Stamps 'from', normalises 'to', hands stanzas for local services over and refuses
  // those to blocked contacts; true when the stanza is still to be handled here.
  bool accept_from_client(const SessionIdentity& me, Element& st);
  void handle_message(const SessionIdentity& me, Element st, Finished finished);
  // A message whose archive rows are durable (or failed with `stored`'s error).
  struct ArchivedCopy {
    std::string owner, id;  // whose archive holds the recipient's copy, and its stanza-id
  };
  void route_after_archive(const SessionIdentity& me, Element& st, const ArchivedCopy& copy, const Result<void>& stored);
  // The bare JID whose archive keeps an incoming copy of `st` when route_message takes it
  // (a local account that exists, not blocking the sender); nullopt when none would.
  std::optional<std::string> recipient_archive_owner(const Element& st, const std::string& from_full);
  void handle_presence(const SessionIdentity& me, Element& st);
  void handle_iq(const SessionIdentity& me, Element& st);
  void dispatch_iq(const SessionIdentity& me, Element& st, const std::string& to, IqTarget target);
  void register_core_iqs();
  void handle_roster_iq(const SessionIdentity& me, const Element& st, IqReply& reply);

  // Routing of a stanza whose 'from' is set, to a local or remote address. `copy`: the
  // recipient's archive copy already written (route_message only stamps its stanza-id).
  void route_message(Element& st, const std::string& from_full, const ArchivedCopy* copy = nullptr);
  void deliver_to_bare(const std::string& bare, const Element& st);
  // Archives an incoming message for its recipient and stamps the XEP-0359 stanza-id;
  // false if the archive write failed (the message is then not delivered).
  bool archive_for_recipient(Element& st, const std::string& recipient_bare, const ArchivedCopy* copy);
  // XEP-0280: copies of a message for the owner's other carbons-enabled sessions.
  void send_carbons(const Element& st, const std::string& owner_bare, std::string_view kind,
                    const std::vector<std::uint64_t>& skip_ids);
  bool account_exists(const std::string& localpart, const std::string& domain);

  void broadcast_presence(const SessionIdentity& me, const Element& st, bool initial);
  void subscription_from_client(const SessionIdentity& me, Element& st, const std::string& type);
  // Applies an inbound subscription stanza to a local account's roster (from `from_bare`).
  void subscription_to_local(const std::string& owner, const std::string& from_bare, const std::string& type);
  void send_available_presences(const std::string& of_bare, const std::string& to_full_or_bare);
  void roster_push(const std::string& owner, const RosterItem& item, std::int64_t version, bool removed);
  void deliver_offline(const SessionIdentity& me);
  void deliver_pending_subscriptions(const SessionIdentity& me);

  void reply_error(const SessionIdentity& me, const Element& st, std::string_view type, std::string_view condition,
                   std::string_view text = {});

  std::vector<std::string> domains_;
  accounts::Accounts& accounts_;
  XmppStore& store_;
  SessionRegistry& registry_;
  Clock& clock_;
  Logger& log_;
  Counter& messages_routed_;
  Counter& messages_offline_;
  IqTable iqs_;
  std::shared_ptr<BlockList> blocks_;
  std::shared_ptr<PepHooks> pep_;
  std::vector<Element> server_forms_;
  std::function<void(const std::string&, const std::string&)> logout_hook_;
  std::function<void(const std::string&, const std::string&)> push_hook_;
  std::vector<std::pair<std::string, std::shared_ptr<LocalService>>> services_;
  LocalService* service_for(std::string_view domain) const;
  RemoteSend remote_;
  Executor executor_;
  // A SessionIdentity for a remote full JID: its sink sends back through federation.
  SessionIdentity remote_identity(const Jid& remote, const std::string& local_domain);
  void presence_from_remote(Element& st, const Jid& from, const Jid& to);

  void note_if_last_logout(const std::string& bare, const Element* unavailable);
};

// Builds <stanza type='error'/> answering `st` (addresses swapped).
Element make_error_reply(const Element& st, std::string_view type, std::string_view condition,
                         std::string_view text = {});
Element roster_item_element(const RosterItem& item, bool removed);
std::string format_delay_stamp(std::int64_t ms);

}  // namespace hearth::xmpp
