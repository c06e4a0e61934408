#include "xmpp/im.h"

#include <algorithm>
#include <future>
#include <set>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "accounts/accounts.h"
#include "xmpp/caps.h"
#include "xmpp/forms.h"
#include "xmpp/jid.h"
#include "xmpp/mod_mam.h"
#include "xmpp/mod_vcard.h"
#include "xmpp/subscription.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kStanzasNs = "urn:ietf:params:xml:ns:xmpp-stanzas";
constexpr std::string_view kRosterNs = "jabber:iq:roster";
constexpr std::string_view kPingNs = "urn:xmpp:ping";
constexpr std::string_view kVersionNs = "jabber:iq:version";
constexpr std::string_view kSessionNs = "urn:ietf:params:xml:ns:xmpp-session";
constexpr std::string_view kDelayNs = "urn:xmpp:delay";
constexpr std::string_view kCarbonsNs = "urn:xmpp:carbons:2";
constexpr std::string_view kForwardNs = "urn:xmpp:forward:0";

// XEP-0280 §6: which messages are copied.
bool carbon_eligible(const Element& m) {
  std::string_view type = m.attr("type");
  bool chat = type == "chat";
  bool normal_with_body = (type.empty() || type == "normal") && m.child("body", kClientNs);
  if (!chat && !normal_with_body) return false;
  if (m.child("private", kCarbonsNs) || m.child("no-copy", "urn:xmpp:hints")) return false;
  if (m.child("sent", kCarbonsNs) || m.child("received", kCarbonsNs)) return false;
  return true;
}

Element iq_result(const Element& request, std::string_view from) {
  Element r("iq", std::string(kClientNs));
  r.set_attr("type", "result");
  r.set_attr("id", std::string(request.attr("id")));
  if (auto f = request.attr("from"); !f.empty()) r.set_attr("to", std::string(f));
  if (!from.empty()) r.set_attr("from", std::string(from));
  return r;
}

int presence_priority(const Element& st) {
  if (const Element* p = st.child("priority", kClientNs)) {
    std::string t = p->text();
    char* end = nullptr;
    long v = std::strtol(t.c_str(), &end, 10);
    if (end != t.c_str() && v >= -128 && v <= 127) return static_cast<int>(v);
  }
  return 0;
}

// XEP-0086 (legacy error codes): the numeric code older clients still read, e.g.
// Profanity 0.13 treats only an error with code='404' as "no OMEMO device list yet" and
// then publishes its own. Conditions the XEP does not list get no code.
std::string_view legacy_error_code(std::string_view condition) {
  static constexpr std::pair<std::string_view, std::string_view> kCodes[] = {
      {"bad-request", "400"},          {"conflict", "409"},
      {"feature-not-implemented", "501"}, {"forbidden", "403"},
      {"gone", "302"},                 {"internal-server-error", "500"},
      {"item-not-found", "404"},       {"jid-malformed", "400"},
      {"not-acceptable", "406"},       {"not-allowed", "405"},
      {"not-authorized", "401"},       {"payment-required", "402"},
      {"recipient-unavailable", "404"}, {"redirect", "302"},
      {"registration-required", "407"}, {"remote-server-not-found", "404"},
      {"remote-server-timeout", "504"}, {"resource-constraint", "500"},
      {"service-unavailable", "503"},  {"subscription-required", "407"},
      {"undefined-condition", "500"},  {"unexpected-request", "400"},
  };
  for (const auto& [name, code] : kCodes)
    if (name == condition) return code;
  return {};
}

}  // namespace

std::string format_delay_stamp(std::int64_t ms) {
  auto secs = static_cast<std::time_t>(ms / 1000);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", fmt::gmtime(secs), static_cast<int>(ms % 1000));
}

Element make_error_reply(const Element& st, std::string_view type, std::string_view condition, std::string_view text) {
  Element r(st.name(), std::string(kClientNs));
  if (auto id = st.attr("id"); !id.empty()) r.set_attr("id", std::string(id));
  r.set_attr("type", "error");
  if (auto f = st.attr("from"); !f.empty()) r.set_attr("to", std::string(f));
  if (auto t = st.attr("to"); !t.empty()) r.set_attr("from", std::string(t));
  Element& err = r.add_child(Element("error", std::string(kClientNs)));
  err.set_attr("type", std::string(type));
  if (auto code = legacy_error_code(condition); !code.empty()) err.set_attr("code", std::string(code));
  err.add_child(Element(std::string(condition), std::string(kStanzasNs)));
  if (!text.empty()) {
    Element& t = err.add_child(Element("text", std::string(kStanzasNs)));
    t.add_text(text);
  }
  return r;
}

Element roster_item_element(const RosterItem& item, bool removed) {
  Element e("item", std::string(kRosterNs));
  e.set_attr("jid", item.jid);
  if (removed) {
    e.set_attr("subscription", "remove");
    return e;
  }
  if (!item.name.empty()) e.set_attr("name", item.name);
  e.set_attr("subscription", std::string(subscription_name(item.state.subscription)));
  if (item.state.pending_out) e.set_attr("ask", "subscribe");
  for (const auto& g : item.groups) e.add_child(Element("group", std::string(kRosterNs))).add_text(g);
  return e;
}

ImRouter::ImRouter(std::vector<std::string> domains, accounts::Accounts& accounts, XmppStore& store,
                   SessionRegistry& registry, Clock& clock, Logger& log, MetricsRegistry& metrics)
    : domains_(std::move(domains)),
      accounts_(accounts),
      store_(store),
      registry_(registry),
      clock_(clock),
      log_(log),
      messages_routed_(metrics.counter("hearth_xmpp_messages_total", "Messages routed to local sessions.", {{"delivery", "online"}})),
      messages_offline_(metrics.counter("hearth_xmpp_messages_total", "Messages routed to local sessions.", {{"delivery", "offline"}})) {
  register_core_iqs();
  register_mam(iqs_, store_);
}

bool ImRouter::is_local_domain(std::string_view domain) const {
  return std::find(domains_.begin(), domains_.end(), domain) != domains_.end();
}

void ImRouter::send(SessionSink& sink, const Element& stanza) {
  std::string out;
  stanza.serialize_to(out, kClientNs);
  sink.deliver(std::move(out));
}

void ImRouter::reply_error(const SessionIdentity& me, const Element& st, std::string_view type,
                           std::string_view condition, std::string_view text) {
  if (st.attr("type") == "error") return;  // never answer an error with an error
  Element r = make_error_reply(st, type, condition, text);
  r.set_attr("to", me.full);
  send(*me.sink, r);
}

bool ImRouter::blocked(const std::string& owner, const std::string& contact) {
  if (!blocks_) return false;
  auto r = blocks_->is_blocked(owner, contact);
  if (!r) {
    log_.warn("xmpp.blocklist_lookup_failed", {{"owner", owner}, {"error", r.error().describe()}});
    return true;
  }
  return *r;
}

bool ImRouter::account_exists(const std::string& localpart, const std::string& domain) {
  return static_cast<bool>(accounts_.get_user(domain, localpart));
}

void ImRouter::handle_from_client(const SessionIdentity& me, Element st, Finished finished) {
  if (accept_from_client(me, st)) {
    if (st.name() == "message") return handle_message(me, std::move(st), std::move(finished));
    if (st.name() == "presence") handle_presence(me, st);
    else if (st.name() == "iq") handle_iq(me, st);
  }
  if (finished) finished();
}

bool ImRouter::accept_from_client(const SessionIdentity& me, Element& st) {
  st.set_attr("from", me.full);
  if (auto to = st.attr("to"); !to.empty()) {
    auto jid = Jid::parse(to);
    if (!jid) {
      reply_error(me, st, "modify", "jid-malformed", jid.error().message);
      return false;
    }
    st.set_attr("to", jid->full());
    if (LocalService* service = service_for(jid->domain)) {
      service->handle(me, std::move(st));
      return false;
    }
    // XEP-0191 §3.5: nothing goes out to a contact the user blocked.
    if (!jid->local.empty() && jid->bare() != me.bare && blocked(me.bare, jid->full())) {
      std::string_view type = st.attr("type");
      if (st.name() == "iq" && (type == "result" || type == "error")) return false;
      Element r = make_error_reply(st, "cancel", "not-acceptable", "you blocked this contact");
      r.set_attr("to", me.full);
      if (Element* err = r.child("error")) err->add_child(blocked_condition());
      send(*me.sink, r);
      return false;
    }
  }
  if (st.name() == "message") {
    // XEP-0359 §4: stanza ids are the server's to give; drop any a client made up.
    auto& nodes = st.nodes();
    nodes.erase(std::remove_if(nodes.begin(), nodes.end(),
                               [](const Node& n) {
                                 return n.is_element() && n.element().name() == "stanza-id" && n.element().ns() == kSidNs;
                               }),
                nodes.end());
  }
  return true;
}

// ---- messages (RFC 6121 §5, §8.5) ---------------------------------------------------

void ImRouter::handle_message(const SessionIdentity& me, Element st, Finished finished) {
  if (st.attr("to").empty()) st.set_attr("to", me.bare);  // a message to oneself
  std::vector<ArchiveEntry> rows;
  ArchivedCopy copy;
  if (archivable(st)) {
    std::int64_t now = clock_.now_ms();
    // The sender's own archive keeps what it sent (XEP-0313 §5.1.1), before it leaves.
    auto to = Jid::parse(st.attr("to"));
    if (to && to->bare() != me.bare) rows.push_back({me.bare, new_archive_id(now), to->bare(), st.serialize()});
    // The recipient's copy goes in the same job, stamped with its stanza-id; routing
    // stamps the delivered stanza after the commit (the sender's carbons go out without it).
    if (auto owner = recipient_archive_owner(st, me.full)) {
      copy = {std::move(*owner), new_archive_id(now)};
      Element& sid = st.add_child(Element("stanza-id", std::string(kSidNs)));
      sid.set_attr("id", copy.id);
      sid.set_attr("by", copy.owner);
      rows.push_back({copy.owner, copy.id, me.bare, st.serialize()});
      st.nodes().pop_back();
    }
  }
  if (rows.empty()) {
    route_after_archive(me, st, copy, ok());
    if (finished) finished();
    return;
  }
  struct Pending {
    SessionIdentity me;
    Element st;
    ArchivedCopy copy;
    Finished finished;
  };
  auto pending = std::make_shared<Pending>(Pending{me, std::move(st), std::move(copy), std::move(finished)});
  auto route = [this, pending](Result<void> stored) {
    route_after_archive(pending->me, pending->st, pending->copy, stored);
    if (pending->finished) pending->finished();
  };
  if (!executor_) {
    std::promise<Result<void>> committed;
    store_.archive_async(std::move(rows), [&committed](Result<void> r) { committed.set_value(std::move(r)); });
    return route(committed.get_future().get());
  }
  store_.archive_async(std::move(rows), [this, route](Result<void> stored) {
    auto next = [route, stored]() { route(stored); };
    if (!executor_(next)) next();
  });
}

void ImRouter::route_after_archive(const SessionIdentity& me, Element& st, const ArchivedCopy& copy,
                                   const Result<void>& stored) {
  if (!stored) {
    auto [type, condition] = storage_error_condition(stored.error());
    reply_error(me, st, type, condition,
                stored.error().code == Errc::read_only ? stored.error().message : "the message could not be stored");
    return;
  }
  send_carbons(st, me.bare, "sent", {me.id});
  route_message(st, me.full, copy.owner.empty() ? nullptr : &copy);
}

std::optional<std::string> ImRouter::recipient_archive_owner(const Element& st, const std::string& from_full) {
  if (!archivable(st)) return std::nullopt;
  auto to = Jid::parse(st.attr("to"));
  if (!to || !is_local_domain(to->domain) || to->local.empty()) return std::nullopt;
  if (blocked(to->bare(), from_full)) return std::nullopt;
  // An archivable message (chat or normal) to an offline full JID falls back to the bare JID.
  if (!to->resource.empty() && registry_.find(to->bare(), to->resource)) return to->bare();
  if (!account_exists(to->local, to->domain)) return std::nullopt;
  return to->bare();
}

void ImRouter::send_carbons(const Element& st, const std::string& owner_bare, std::string_view kind,
                            const std::vector<std::uint64_t>& skip_ids) {
  if (!carbon_eligible(st)) return;
  for (const auto& s : registry_.sessions(owner_bare)) {
    if (!s.carbons || std::find(skip_ids.begin(), skip_ids.end(), s.id) != skip_ids.end()) continue;
    Element copy("message", std::string(kClientNs));
    copy.set_attr("from", owner_bare);
    copy.set_attr("to", s.full_jid);
    if (auto type = st.attr("type"); !type.empty()) copy.set_attr("type", std::string(type));
    Element& wrapper = copy.add_child(Element(std::string(kind), std::string(kCarbonsNs)));
    Element& fwd = wrapper.add_child(Element("forwarded", std::string(kForwardNs)));
    fwd.add_child(st);
    send(*s.sink, copy);
  }
}

bool ImRouter::archive_for_recipient(Element& st, const std::string& recipient_bare, const ArchivedCopy* copy) {
  if (!archivable(st)) return true;
  bool written = copy && copy->owner == recipient_bare;
  std::string id = written ? copy->id : new_archive_id(clock_.now_ms());
  Element& sid = st.add_child(Element("stanza-id", std::string(kSidNs)));
  sid.set_attr("id", id);
  sid.set_attr("by", recipient_bare);
  if (written) return true;
  auto from = Jid::parse(st.attr("from"));
  auto r = store_.archive(recipient_bare, id, from ? from->bare() : std::string(), st.serialize());
  if (!r) log_.warn("xmpp.archive_failed", {{"owner", recipient_bare}, {"error", r.error().describe()}});
  return static_cast<bool>(r);
}

void ImRouter::route_message(Element& st, const std::string& from_full, const ArchivedCopy* copy) {
  auto to = Jid::parse(st.attr("to"));
  if (!to) return;
  std::string type(st.attr("type"));
  if (type.empty()) type = "normal";
  auto error_back = [&](std::string_view cond) {
    if (type == "error") return;
    auto from = Jid::parse(from_full);
    if (!from) return;
    // resource-constraint is temporary (storage): the sender may retry later.
    Element r = make_error_reply(st, cond == "resource-constraint" ? "wait" : "cancel", cond);
    if (is_remote(from->domain)) {
      send_remote(r);
      return;
    }
    for (const auto& s : registry_.sessions(from->bare()))
      if (s.full_jid == from_full) send(*s.sink, r);
  };
  if (!is_local_domain(to->domain)) {
    if (send_remote(st)) return;
    error_back("remote-server-not-found");
    return;
  }
  if (to->local.empty()) {
    error_back("service-unavailable");
    return;
  }
  // XEP-0191 §3.4: a blocked sender's message is refused as if nobody were there.
  if (blocked(to->bare(), from_full)) {
    error_back("service-unavailable");
    return;
  }
  if (!to->resource.empty()) {
    if (auto s = registry_.find(to->bare(), to->resource)) {
      if (!archive_for_recipient(st, to->bare(), copy)) return error_back("resource-constraint");
      send(*s->sink, st);
      if (push_hook_ && s->sink->detached() && archivable(st)) push_hook_(to->bare(), from_full);
      send_carbons(st, to->bare(), "received", {s->id});
      messages_routed_.inc();
      return;
    }
    // §8.5.3.2.1: a full JID that is not online is treated as the bare JID for chat and
    // normal messages; others are answered or dropped.
    if (type == "groupchat") {
      error_back("service-unavailable");
      return;
    }
    if (type == "headline" || type == "error") return;
  }
  if (!account_exists(to->local, to->domain)) {
    if (type != "headline" && type != "error") error_back("service-unavailable");
    return;
  }
  if (!archive_for_recipient(st, to->bare(), copy)) return error_back("resource-constraint");
  deliver_to_bare(to->bare(), st);
}

void ImRouter::deliver_to_bare(const std::string& bare, const Element& st) {
  std::string type(st.attr("type"));
  if (type.empty()) type = "normal";
  auto sessions = registry_.sessions(bare);
  // §8.5.2.1.1: chat and normal go to the available resources of highest non-negative
  // priority; headline to all non-negative ones.
  int best = -1;
  for (const auto& s : sessions)
    if (s.available && s.priority >= 0) best = std::max(best, s.priority);
  std::vector<std::uint64_t> delivered_to;
  if (best >= 0 && type != "groupchat") {
    for (const auto& s : sessions) {
      if (!s.available || s.priority < 0) continue;
      if (type != "headline" && s.priority != best) continue;
      send(*s.sink, st);
      delivered_to.push_back(s.id);
    }
  }
  if (!delivered_to.empty()) {
    if (push_hook_ && archivable(st)) {
      // Every client it went to is away (its connection dropped, resumption pending): wake one.
      bool all_detached = true;
      for (const auto& s : sessions)
        if (std::find(delivered_to.begin(), delivered_to.end(), s.id) != delivered_to.end() && !s.sink->detached())
          all_detached = false;
      if (all_detached) push_hook_(bare, std::string(st.attr("from")));
    }
    send_carbons(st, bare, "received", delivered_to);
    messages_routed_.inc();
    return;
  }
  if (type != "chat" && type != "normal") return;
  // Nobody available: offline storage, stamped with the time it was stored (XEP-0203).
  Element stored = st;
  Element& delay = stored.add_child(Element("delay", std::string(kDelayNs)));
  auto at = bare.find('@');
  delay.set_attr("from", at == std::string::npos ? bare : bare.substr(at + 1));
  delay.set_attr("stamp", format_delay_stamp(clock_.now_ms()));
  delay.add_text("Offline Storage");
  auto r = store_.store_offline(bare, st.attr("from"), stored.serialize());
  if (!r) {
    log_.warn("xmpp.offline_refused", {{"to", bare}, {"error", r.error().describe()}});
    auto from = Jid::parse(st.attr("from"));
    if (from && st.attr("type") != "error") {
      Element e = make_error_reply(st, "wait", "resource-constraint", "the recipient's offline queue is full");
      for (const auto& s : registry_.sessions(from->bare()))
        if (s.full_jid == st.attr("from")) send(*s.sink, e);
    }
    return;
  }
  messages_offline_.inc();
  if (push_hook_) push_hook_(bare, std::string(st.attr("from")));
}

void ImRouter::reroute_unacked(const std::string& bare, std::vector<std::string> stanzas) {
  for (auto& text : stanzas) {
    // Only messages are worth keeping; presence and iq results are stale by now.
    if (text.rfind("<message", 0) != 0) continue;
    auto parsed = parse_element(text);
    if (!parsed) continue;
    Element& st = *parsed;
    std::string type(st.attr("type"));
    if (type != "" && type != "chat" && type != "normal") continue;
    if (st.child("delay", kDelayNs)) {
      // Came from offline storage already: store it back as it was.
      (void)store_.store_offline(bare, st.attr("from"), text);
      continue;
    }
    st.set_attr("to", bare);
    deliver_to_bare(bare, st);
  }
}

void ImRouter::deliver_offline(const SessionIdentity& me) {
  auto msgs = store_.take_offline(me.bare);
  if (!msgs && msgs.error().code == Errc::read_only) {
    // Read-only mode: deliver them and keep them (they come again at the next login rather
    // than being lost; clients drop duplicates by stanza-id).
    msgs = store_.peek_offline(me.bare);
  }
  if (!msgs) {
    log_.warn("xmpp.offline_read_failed", {{"jid", me.bare}, {"error", msgs.error().describe()}});
    return;
  }
  for (auto& m : *msgs) me.sink->deliver(std::move(m.stanza));
}

// ---- presence (RFC 6121 §3, §4) -----------------------------------------------------

void ImRouter::handle_presence(const SessionIdentity& me, Element& st) {
  std::string type(st.attr("type"));
  std::string to(st.attr("to"));
  if (type == "subscribe" || type == "subscribed" || type == "unsubscribe" || type == "unsubscribed") {
    if (to.empty()) return;
    subscription_from_client(me, st, type);
    return;
  }
  if (type == "probe" || type == "error") return;  // clients do not probe; errors to presence are dropped
  if (type != "" && type != "unavailable") return;
  if (!to.empty()) {
    // Directed presence.
    auto jid = Jid::parse(to);
    if (jid && is_remote(jid->domain)) {
      send_remote(st);
      return;
    }
    if (!jid || !is_local_domain(jid->domain)) return;
    if (blocked(jid->bare(), me.full)) return;
    if (!jid->resource.empty()) {
      if (auto s = registry_.find(jid->bare(), jid->resource)) send(*s->sink, st);
    } else {
      for (const auto& s : registry_.sessions(jid->bare()))
        if (s.available) send(*s.sink, st);
    }
    return;
  }
  bool available = type.empty();
  bool was_available = false;
  for (const auto& s : registry_.sessions(me.bare))
    if (s.id == me.id) was_available = s.available;
  registry_.set_presence(me.bare, me.id, available, presence_priority(st), available ? st.serialize() : std::string());
  // The logout time is stored before contacts see the unavailable presence, so that a
  // contact asking right away (XEP-0012) gets it.
  if (!available && was_available) {
    note_if_last_logout(me.bare, &st);
    // RFC 6121 §4.6.3: entities the session sent directed presence to (rooms) learn it left.
    for (const auto& [domain, service] : services_) service->session_gone(me);
  }
  broadcast_presence(me, st, available && !was_available);
  if (available && !was_available) {
    if (presence_priority(st) >= 0) deliver_offline(me);
    deliver_pending_subscriptions(me);
  }
  if (pep_) pep_->on_presence(me, st);
}

void ImRouter::broadcast_presence(const SessionIdentity& me, const Element& st, bool initial) {
  auto roster = store_.roster(me.bare);
  if (!roster) return;
  for (const auto& item : roster->items) {
    auto contact = Jid::parse(item.jid);
    if (contact && is_remote(contact->domain)) {
      if (blocked(me.bare, item.jid)) continue;
      // RFC 6121 §4.2.2, §4.4.2: the remote server fans out to the contact's resources; an
      // initial presence also probes the contacts we receive presence from.
      if (item.state.sends_presence()) {
        Element copy = st;
        copy.set_attr("to", item.jid);
        send_remote(copy);
      }
      if (initial && item.state.receives_presence()) {
        Element probe("presence", std::string(kClientNs));
        probe.set_attr("type", "probe");
        probe.set_attr("from", me.bare);
        probe.set_attr("to", item.jid);
        send_remote(probe);
      }
      continue;
    }
    if (!contact || !is_local_domain(contact->domain)) continue;
    if (blocked(me.bare, item.jid) || blocked(item.jid, me.full)) continue;
    if (item.state.sends_presence()) {
      Element copy = st;
      for (const auto& s : registry_.sessions(item.jid)) {
        if (!s.available) continue;
        copy.set_attr("to", s.full_jid);
        send(*s.sink, copy);
      }
    }
    // The probe of an initial presence, answered locally: the contacts we receive
    // presence from tell us who of them is online.
    if (initial && item.state.receives_presence()) send_available_presences(item.jid, me.full);
  }
  // Our own other resources see it too.
  for (const auto& s : registry_.sessions(me.bare)) {
    if (s.id == me.id) continue;
    if (s.available) {
      Element copy = st;
      copy.set_attr("to", s.full_jid);
      send(*s.sink, copy);
      if (initial && !s.last_presence.empty()) me.sink->deliver(s.last_presence);
    }
  }
}

void ImRouter::send_available_presences(const std::string& of_bare, const std::string& to) {
  auto target = Jid::parse(to);
  if (!target) return;
  if (is_remote(target->domain)) {
    if (blocked(of_bare, target->bare())) return;
    for (const auto& contact : registry_.sessions(of_bare)) {
      if (!contact.available || contact.last_presence.empty()) continue;
      auto p = parse_element(contact.last_presence);
      if (!p) continue;
      p->set_attr("to", to);
      send_remote(*p);
    }
    return;
  }
  if (blocked(target->bare(), of_bare) || blocked(of_bare, target->bare())) return;
  std::vector<SessionEntry> receivers;
  if (!target->resource.empty()) {
    if (auto s = registry_.find(target->bare(), target->resource)) receivers.push_back(*s);
  } else {
    for (auto& s : registry_.sessions(target->bare()))
      if (s.available) receivers.push_back(s);
  }
  for (const auto& contact : registry_.sessions(of_bare)) {
    if (!contact.available || contact.last_presence.empty()) continue;
    for (const auto& r : receivers) {
      // last_presence is stored without 'to': insert it for this receiver.
      std::string stanza = contact.last_presence;
      auto pos = stanza.find("<presence") + 9;
      stanza.insert(pos, fmt::format(" to='{}'", r.full_jid));
      r.sink->deliver(std::move(stanza));
    }
  }
}

void ImRouter::session_closed(const SessionIdentity& me, bool was_available) {
  if (pep_) pep_->on_session_closed(me);
  for (const auto& [domain, service] : services_) service->session_gone(me);
  if (!was_available) return;
  Element st("presence", std::string(kClientNs));
  st.set_attr("type", "unavailable");
  st.set_attr("from", me.full);
  note_if_last_logout(me.bare, nullptr);
  broadcast_presence(me, st, false);
}

void ImRouter::note_if_last_logout(const std::string& bare, const Element* unavailable) {
  if (!logout_hook_) return;
  for (const auto& s : registry_.sessions(bare))
    if (s.available) return;
  const Element* status = unavailable ? unavailable->child("status", kClientNs) : nullptr;
  logout_hook_(bare, status ? status->text() : std::string());
}

void ImRouter::deliver_pending_subscriptions(const SessionIdentity& me) {
  auto roster = store_.roster(me.bare);
  if (!roster) return;
  for (const auto& item : roster->items) {
    if (!item.state.pending_in) continue;
    Element p("presence", std::string(kClientNs));
    p.set_attr("type", "subscribe");
    p.set_attr("from", item.jid);
    p.set_attr("to", me.bare);
    send(*me.sink, p);
  }
}

void ImRouter::roster_push(const std::string& owner, const RosterItem& item, std::int64_t version, bool removed) {
  for (const auto& s : registry_.sessions(owner)) {
    if (!s.wants_roster_pushes) continue;
    Element iq("iq", std::string(kClientNs));
    iq.set_attr("type", "set");
    iq.set_attr("id", fmt::format("push{}", version));
    iq.set_attr("to", s.full_jid);
    Element& q = iq.add_child(Element("query", std::string(kRosterNs)));
    q.set_attr("ver", std::to_string(version));
    q.add_child(roster_item_element(item, removed));
    send(*s.sink, iq);
  }
}

void ImRouter::subscription_from_client(const SessionIdentity& me, Element& st, const std::string& type) {
  SubscriptionStanza kind;
  parse_subscription_stanza(type, kind);
  auto contact = Jid::parse(st.attr("to"));
  if (!contact || contact->local.empty()) return;
  std::string contact_bare = contact->bare();
  if (contact_bare == me.bare) return;
  auto existing = store_.roster_item(me.bare, contact_bare);
  if (!existing) return;
  RosterItem item = existing->value_or(RosterItem{contact_bare, "", {}, {}});
  auto outcome = apply_outbound(item.state, kind);
  if (outcome.changed) {
    item.state = outcome.next;
    bool drop_item = !existing->has_value() && item.state == SubscriptionState{};
    if (!drop_item) {
      auto v = store_.put_roster_item(me.bare, item);
      if (!v) {
        reply_error(me, st, "wait", "resource-constraint", v.error().message);
        return;
      }
      roster_push(me.bare, item, *v, false);
    }
  }
  if (!outcome.forward) return;
  // Subscription stanzas travel from the bare JID (RFC 6121 §3.1.2).
  Element out("presence", std::string(kClientNs));
  out.set_attr("type", type);
  out.set_attr("from", me.bare);
  out.set_attr("to", contact_bare);
  if (is_remote(contact->domain)) {
    send_remote(out);
    if (kind == SubscriptionStanza::subscribed) send_available_presences(me.bare, contact_bare);
    if (kind == SubscriptionStanza::unsubscribed) {
      for (const auto& s : registry_.sessions(me.bare)) {
        if (!s.available) continue;
        Element gone("presence", std::string(kClientNs));
        gone.set_attr("type", "unavailable");
        gone.set_attr("from", s.full_jid);
        gone.set_attr("to", contact_bare);
        send_remote(gone);
      }
    }
    return;
  }
  if (!is_local_domain(contact->domain)) return;
  if (!account_exists(contact->local, contact->domain)) return;
  subscription_to_local(contact_bare, me.bare, type);
  // Approving a request means the contact now receives our presence (§3.1.5).
  if (kind == SubscriptionStanza::subscribed) send_available_presences(me.bare, contact_bare);
  if (kind == SubscriptionStanza::unsubscribed) {
    for (const auto& s : registry_.sessions(me.bare)) {
      if (!s.available) continue;
      Element gone("presence", std::string(kClientNs));
      gone.set_attr("type", "unavailable");
      gone.set_attr("from", s.full_jid);
      for (const auto& c : registry_.sessions(contact_bare)) {
        gone.set_attr("to", c.full_jid);
        send(*c.sink, gone);
      }
    }
  }
}

void ImRouter::subscription_to_local(const std::string& owner, const std::string& from_bare, const std::string& type) {
  if (blocked(owner, from_bare)) return;
  SubscriptionStanza kind;
  parse_subscription_stanza(type, kind);
  auto existing = store_.roster_item(owner, from_bare);
  if (!existing) return;
  RosterItem item = existing->value_or(RosterItem{from_bare, "", {}, {}});
  auto outcome = apply_inbound(item.state, kind);
  if (outcome.auto_reply_subscribed) {
    // Already subscribed: answer for the owner so the asker's state converges.
    if (auto asker = Jid::parse(from_bare); asker && is_remote(asker->domain)) {
      Element p("presence", std::string(kClientNs));
      p.set_attr("type", "subscribed");
      p.set_attr("from", owner);
      p.set_attr("to", from_bare);
      send_remote(p);
      send_available_presences(owner, from_bare);
      return;
    }
    subscription_to_local(from_bare, owner, "subscribed");
    send_available_presences(owner, from_bare);
    return;
  }
  if (outcome.changed) {
    item.state = outcome.next;
    auto v = store_.put_roster_item(owner, item);
    if (!v) {
      log_.warn("xmpp.roster_write_failed", {{"owner", owner}, {"error", v.error().describe()}});
      return;
    }
    // A pending inbound request is not visible in the roster; everything else is pushed.
    if (kind != SubscriptionStanza::subscribe) roster_push(owner, item, *v, false);
  }
  bool deliver = kind == SubscriptionStanza::subscribe ? outcome.changed || item.state.pending_in : outcome.changed;
  if (!deliver) return;
  Element p("presence", std::string(kClientNs));
  p.set_attr("type", type);
  p.set_attr("from", from_bare);
  for (const auto& s : registry_.sessions(owner)) {
    if (!s.available) continue;
    p.set_attr("to", s.full_jid);
    send(*s.sink, p);
  }
}

// ---- iq (RFC 6120 §8.2.3) -----------------------------------------------------------

void ImRouter::handle_iq(const SessionIdentity& me, Element& st) {
  std::string type(st.attr("type"));
  bool request = type == "get" || type == "set";
  if (st.attr("id").empty() || (!request && type != "result" && type != "error")) {
    reply_error(me, st, "modify", "bad-request", "an iq needs an id and a type of get, set, result or error");
    return;
  }
  if (request) {
    int payloads = 0;
    for (const auto& c : st.children()) {
      (void)c;
      ++payloads;
    }
    if (payloads != 1) {
      reply_error(me, st, "modify", "bad-request", "a get or set iq carries exactly one payload");
      return;
    }
  }
  std::string to(st.attr("to"));
  if (to.empty() || to == me.bare) {
    if (request) dispatch_iq(me, st, me.bare, IqTarget::account);
    else if (pep_) pep_->on_iq_response(me, st);
    return;
  }
  auto jid = Jid::parse(to);
  if (!jid) return;
  if (jid->local.empty() && jid->resource.empty() && is_local_domain(jid->domain)) {
    if (request) dispatch_iq(me, st, jid->domain, IqTarget::server);
    return;
  }
  if (!is_local_domain(jid->domain)) {
    if (send_remote(st)) return;
    if (request) reply_error(me, st, "cancel", "remote-server-not-found");
    return;
  }
  if (blocked(jid->bare(), me.full)) {
    if (request) reply_error(me, st, "cancel", "service-unavailable");
    return;
  }
  if (!jid->resource.empty()) {
    if (auto s = registry_.find(jid->bare(), jid->resource)) {
      send(*s->sink, st);
      return;
    }
  }
  // A request to another account's bare JID: the server answers for it (RFC 6121 §8.5.2.1.3).
  if (!request) return;
  const Element& payload = *st.children().begin();
  if (jid->resource.empty() && payload.name() == "vCard" && payload.ns() == kVcardNs &&
      account_exists(jid->local, jid->domain)) {
    if (st.attr("type") != "get") return reply_error(me, st, "auth", "forbidden", "only the owner changes a vCard");
    auto vcard = load_vcard_element(store_.backing_store(), jid->bare());
    if (!vcard || !*vcard) return reply_error(me, st, "cancel", "service-unavailable");
    Element r = iq_result(st, jid->bare());
    r.set_attr("to", me.full);
    r.add_child(std::move(**vcard));
    send(*me.sink, r);
    return;
  }
  if (jid->resource.empty() && iqs_.find(payload.ns(), payload.name(), IqTarget::peer) &&
      account_exists(jid->local, jid->domain))
    return dispatch_iq(me, st, jid->bare(), IqTarget::peer);
  reply_error(me, st, "cancel", "service-unavailable");
}

namespace {

// Answers one request; the first answer wins, later ones are ignored.
class StanzaIqReply final : public IqReply {
 public:
  StanzaIqReply(const SessionIdentity& me, const Element& st, std::string from) : me_(me), st_(st), from_(std::move(from)) {}
  ~StanzaIqReply() override {
    if (!answered_) error("wait", "internal-server-error", "no answer");
  }
  void result(std::optional<Element> payload) override {
    if (answered_) return;
    answered_ = true;
    Element r = iq_result(st_, from_);
    r.set_attr("to", me_.full);
    if (payload) r.add_child(std::move(*payload));
    ImRouter::send(*me_.sink, r);
  }
  void error(std::string_view type, std::string_view condition, std::string_view text) override {
    if (answered_) return;
    answered_ = true;
    Element r = make_error_reply(st_, type, condition, text);
    r.set_attr("to", me_.full);
    if (!from_.empty()) r.set_attr("from", from_);
    ImRouter::send(*me_.sink, r);
  }
  void error_with(std::string_view type, std::string_view condition, Element app_condition,
                  std::string_view text) override {
    if (answered_) return;
    answered_ = true;
    Element r = make_error_reply(st_, type, condition, text);
    r.set_attr("to", me_.full);
    if (!from_.empty()) r.set_attr("from", from_);
    if (Element* err = r.child("error")) err->add_child(std::move(app_condition));
    ImRouter::send(*me_.sink, r);
  }

 private:
  const SessionIdentity& me_;
  const Element& st_;
  std::string from_;
  bool answered_ = false;
};

Element disco_info(std::string_view category, std::string_view type, std::string_view name,
                   const std::vector<std::string>& features) {
  Element q("query", std::string(kDiscoInfoNs));
  Element& id = q.add_child(Element("identity", std::string(kDiscoInfoNs)));
  id.set_attr("category", std::string(category));
  id.set_attr("type", std::string(type));
  if (!name.empty()) id.set_attr("name", std::string(name));
  std::set<std::string> unique(features.begin(), features.end());
  for (const auto& var : unique) q.add_child(Element("feature", std::string(kDiscoInfoNs))).set_attr("var", var);
  return q;
}

}  // namespace

void ImRouter::dispatch_iq(const SessionIdentity& me, Element& st, const std::string& to, IqTarget target) {
  const Element& payload = *st.children().begin();
  StanzaIqReply answer(me, st, to);
  IqReply& reply = answer;
  const IqEntry* entry = iqs_.find(payload.ns(), payload.name(), target);
  if (!entry) {
    reply.error("cancel", "service-unavailable");
    return;
  }
  entry->handler(me, to, st, payload, reply);
}

LocalService* ImRouter::service_for(std::string_view domain) const {
  for (const auto& [d, service] : services_)
    if (d == domain) return service.get();
  return nullptr;
}

bool ImRouter::deliver_from_service(const Element& st) {
  auto to = Jid::parse(st.attr("to"));
  if (to && is_remote(to->domain)) return send_remote(st);
  if (!to || !is_local_domain(to->domain)) return false;
  if (!to->resource.empty()) {
    auto s = registry_.find(to->bare(), to->resource);
    if (!s) return false;
    send(*s->sink, st);
    return true;
  }
  Element copy = st;
  if (copy.name() == "message") route_message(copy, std::string(st.attr("from")));
  return true;
}

// ---- federation (RFC 6120 §10.4, RFC 6121 §3, §4.3) --------------------------------

bool ImRouter::send_remote(const Element& st) {
  if (!remote_) return false;
  auto to = Jid::parse(st.attr("to"));
  auto from = Jid::parse(st.attr("from"));
  if (!to || !from || !is_remote(to->domain)) return false;
  std::string out;
  st.serialize_to(out, kClientNs);  // no xmlns: the s2s stream's default is jabber:server
  remote_(from->domain, to->domain, std::move(out));
  return true;
}

namespace {
// Bytes a local handler "sends to the session" of a remote entity go back through
// federation, from `local` to the remote domain.
class RemoteConnection final : public net::StreamConnection {
 public:
  RemoteConnection(ImRouter::RemoteSend send, std::string local, std::string remote)
      : send_(std::move(send)), local_(std::move(local)), remote_(std::move(remote)) {}
  void send(std::string bytes) override { send_(local_, remote_, std::move(bytes)); }
  void close() override {}
  void start_tls(std::function<void(Result<void>)> done, std::string) override {
    done(fail(Errc::unavailable, "remote"));
  }
  bool is_tls() const override { return true; }
  std::string remote_ip() const override { return {}; }
  std::string server_name() const override { return {}; }
  std::string alpn() const override { return {}; }
  std::string tls_version() const override { return {}; }
  Result<std::string> channel_binding(std::string_view) const override { return fail(Errc::unavailable, "remote"); }
  void set_read_rate(std::size_t, std::size_t) override {}
  void set_idle_timeout(int) override {}
  void post(std::function<void()>) override {}
  void post_after(std::chrono::milliseconds, std::function<void()>) override {}

 private:
  ImRouter::RemoteSend send_;
  std::string local_, remote_;
};
}  // namespace

SessionIdentity ImRouter::remote_identity(const Jid& remote, const std::string& local_domain) {
  SessionIdentity me;
  me.localpart = remote.local;
  me.domain = remote.domain;
  me.resource = remote.resource;
  me.bare = remote.bare();
  me.full = remote.full();
  me.sink = std::make_shared<SessionSink>(std::make_shared<RemoteConnection>(remote_, local_domain, remote.domain));
  return me;
}

void ImRouter::handle_from_remote(Element st) {
  auto from = Jid::parse(st.attr("from"));
  auto to = Jid::parse(st.attr("to"));
  if (!from || !to) return;
  st.set_attr("from", from->full());
  st.set_attr("to", to->full());
  if (LocalService* service = service_for(to->domain)) return service->handle(remote_identity(*from, to->domain), std::move(st));
  if (!is_local_domain(to->domain)) return;
  if (st.name() == "message") {
    auto& nodes = st.nodes();
    nodes.erase(std::remove_if(nodes.begin(), nodes.end(),
                               [](const Node& n) {
                                 return n.is_element() && n.element().name() == "stanza-id" && n.element().ns() == kSidNs;
                               }),
                nodes.end());
    route_message(st, from->full());
    return;
  }
  if (st.name() == "presence") return presence_from_remote(st, *from, *to);
  if (st.name() != "iq") return;
  std::string type(st.attr("type"));
  bool request = type == "get" || type == "set";
  if (!to->resource.empty()) {
    if (auto s = registry_.find(to->bare(), to->resource)) {
      if (!blocked(to->bare(), from->full())) send(*s->sink, st);
      return;
    }
  }
  if (!request) return;
  SessionIdentity remote = remote_identity(*from, to->domain);
  if (st.attr("id").empty()) return;
  int payloads = 0;
  for (const auto& c : st.children()) {
    (void)c;
    ++payloads;
  }
  if (payloads != 1) return reply_error(remote, st, "modify", "bad-request", "a get or set iq carries exactly one payload");
  if (to->local.empty() && to->resource.empty()) return dispatch_iq(remote, st, to->domain, IqTarget::server);
  if (!to->resource.empty()) return reply_error(remote, st, "cancel", "service-unavailable");
  if (blocked(to->bare(), from->full())) return reply_error(remote, st, "cancel", "service-unavailable");
  const Element& payload = *st.children().begin();
  if (iqs_.find(payload.ns(), payload.name(), IqTarget::peer) && account_exists(to->local, to->domain))
    return dispatch_iq(remote, st, to->bare(), IqTarget::peer);
  reply_error(remote, st, "cancel", "service-unavailable");
}

void ImRouter::presence_from_remote(Element& st, const Jid& from, const Jid& to) {
  std::string type(st.attr("type"));
  if (to.local.empty()) return;
  if (type == "subscribe" || type == "subscribed" || type == "unsubscribe" || type == "unsubscribed") {
    if (!account_exists(to.local, to.domain)) return;
    subscription_to_local(to.bare(), from.bare(), type);
    return;
  }
  auto item = store_.roster_item(to.bare(), from.bare());
  if (!item) return;
  if (type == "probe") {
    // RFC 6121 §4.3.2: answered only for a contact with a subscription to our presence.
    if (!item->has_value() || !(*item)->state.sends_presence()) return;
    send_available_presences(to.bare(), from.bare());
    return;
  }
  if (type != "" && type != "unavailable") return;
  if (blocked(to.bare(), from.full())) return;
  bool subscribed = item->has_value() && (*item)->state.receives_presence();
  if (!to.resource.empty()) {
    if (auto s = registry_.find(to.bare(), to.resource)) send(*s->sink, st);  // directed presence
    return;
  }
  if (!subscribed) return;
  for (const auto& s : registry_.sessions(to.bare())) {
    if (!s.available) continue;
    st.set_attr("to", s.full_jid);
    send(*s.sink, st);
  }
}

std::vector<std::string> ImRouter::server_features() const {
  std::vector<std::string> out = iqs_.features(IqTarget::server);
  // The PEP (pubsub) features are the accounts', but clients such as Profanity 0.13 look
  // for pubsub#publish-options in the server's own disco#info before they publish their
  // OMEMO device list with an open access model (Prosody lists them there too).
  if (pep_)
    for (auto& f : iqs_.features(IqTarget::account))
      if (f.starts_with("http://jabber.org/protocol/pubsub")) out.push_back(std::move(f));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string ImRouter::server_caps_ver() const {
  std::vector<SubmittedForm> forms;
  for (const auto& form : server_forms_)
    if (auto f = read_form(form)) forms.push_back(std::move(*f));
  return caps_ver({{"server", "im", "", "hearth"}}, server_features(), std::move(forms));
}

void ImRouter::register_core_iqs() {
  auto get_only = [](IqHandler h) {
    return [h](const SessionIdentity& me, const std::string& to, const Element& iq, const Element& p, IqReply& r) {
      if (iq.attr("type") != "get") return r.error("cancel", "bad-request", "only get is defined");
      h(me, to, iq, p, r);
    };
  };
  iqs_.add({std::string(kPingNs), "ping", IqTarget::both,
            get_only([](const SessionIdentity&, const std::string&, const Element&, const Element&, IqReply& r) { r.result(); }),
            {std::string(kPingNs)}});
  iqs_.add({std::string(kSessionNs), "session", IqTarget::both,
            // RFC 3921 sessions: a no-op kept for old clients.
            [](const SessionIdentity&, const std::string&, const Element&, const Element&, IqReply& r) { r.result(); },
            {}});
  iqs_.add({std::string(kDiscoInfoNs), "query", IqTarget::any,
            get_only([this](const SessionIdentity& me, const std::string& to, const Element&, const Element& p, IqReply& r) {
              bool server = to.find('@') == std::string::npos;
              if (!p.attr("node").empty() &&
                  !(server && p.attr("node") == fmt::format("{}#{}", kServerCapsNode, server_caps_ver())))
                return r.error("cancel", "item-not-found");
              if (server) {
                Element q = disco_info("server", "im", "hearth", server_features());
                if (!p.attr("node").empty()) q.set_attr("node", std::string(p.attr("node")));
                for (const auto& form : server_forms_) q.add_child(form);
                return r.result(std::move(q));
              }
              // Another account's bare JID: the server answers for the account (RFC 6121
              // §8.5.2.1.3); its features are what the server does on its behalf.
              Element q = disco_info("account", "registered", "",
                                     iqs_.features(to == me.bare ? IqTarget::account : IqTarget::peer));
              if (pep_) {
                Element pep("identity", std::string(kDiscoInfoNs));
                pep.set_attr("category", "pubsub");
                pep.set_attr("type", "pep");
                q.nodes().insert(q.nodes().begin() + 1, Node(std::move(pep)));
              }
              r.result(std::move(q));
            }),
            {std::string(kDiscoInfoNs)}});
  iqs_.add({std::string(kDiscoItemsNs), "query", IqTarget::any,
            get_only([this](const SessionIdentity& me, const std::string& to, const Element&, const Element& p, IqReply& r) {
              if (!p.attr("node").empty()) return r.error("cancel", "item-not-found");
              Element q("query", std::string(kDiscoItemsNs));
              if (to.find('@') == std::string::npos)
                for (const auto& [domain, service] : services_) {
                  Element& item = q.add_child(Element("item", std::string(kDiscoItemsNs)));
                  item.set_attr("jid", domain);
                  item.set_attr("name", service->name());
                }
              if (pep_ && to.find('@') != std::string::npos)
                for (const auto& node : pep_->visible_nodes(to, me.bare)) {
                  Element& item = q.add_child(Element("item", std::string(kDiscoItemsNs)));
                  item.set_attr("jid", to);
                  item.set_attr("node", node);
                }
              r.result(std::move(q));
            }),
            {std::string(kDiscoItemsNs)}});
  iqs_.add({std::string(kVersionNs), "query", IqTarget::server,
            get_only([](const SessionIdentity&, const std::string&, const Element&, const Element&, IqReply& r) {
              Element q("query", std::string(kVersionNs));
              q.add_child(Element("name", std::string(kVersionNs))).add_text("hearth");
              q.add_child(Element("version", std::string(kVersionNs))).add_text("0.1.0");
              r.result(std::move(q));
            }),
            {std::string(kVersionNs)}});
  for (const char* verb : {"enable", "disable"}) {
    bool enable = std::string_view(verb) == "enable";
    iqs_.add({std::string(kCarbonsNs), verb, IqTarget::both,
              [this, enable](const SessionIdentity& me, const std::string&, const Element& iq, const Element&, IqReply& r) {
                if (iq.attr("type") != "set") return r.error("cancel", "bad-request", "carbons are switched with set");
                registry_.set_carbons(me.bare, me.id, enable);
                r.result();
              },
              enable ? std::vector<std::string>{std::string(kCarbonsNs)} : std::vector<std::string>{}});
  }
  iqs_.add({std::string(kRosterNs), "query", IqTarget::account,
            [this](const SessionIdentity& me, const std::string&, const Element& iq, const Element&, IqReply& r) {
              handle_roster_iq(me, iq, r);
            },
            {}});
}

// ---- roster (RFC 6121 §2) -----------------------------------------------------------

void ImRouter::handle_roster_iq(const SessionIdentity& me, const Element& st, IqReply& reply) {
  const Element& query = *st.children().begin();
  if (st.attr("type") == "get") {
    registry_.set_roster_interest(me.bare, me.id);
    auto roster = store_.roster(me.bare);
    if (!roster) {
      reply.error("wait", "internal-server-error");
      return;
    }
    // §2.6: a client that already has this version gets an empty result.
    if (query.has_attr("ver") && query.attr("ver") == std::to_string(roster->version)) {
      reply.result();
      return;
    }
    Element q("query", std::string(kRosterNs));
    q.set_attr("ver", std::to_string(roster->version));
    for (const auto& item : roster->items) {
      if (item.state == SubscriptionState{Subscription::none, false, true} && item.name.empty() && item.groups.empty())
        continue;  // only a pending inbound request: not a roster item yet
      q.add_child(roster_item_element(item, false));
    }
    reply.result(std::move(q));
    return;
  }
  // set: exactly one item (§2.3.3).
  const Element* item_el = nullptr;
  int count = 0;
  for (const auto& c : query.children()) {
    if (c.name() == "item" && c.ns() == kRosterNs) item_el = &c;
    ++count;
  }
  if (count != 1 || !item_el) {
    reply.error("modify", "bad-request", "a roster set carries exactly one item");
    return;
  }
  auto contact = Jid::parse(item_el->attr("jid"));
  if (!contact || !contact->resource.empty()) {
    reply.error("modify", "bad-request", "the item needs a bare JID");
    return;
  }
  std::string contact_bare = contact->bare();
  auto existing = store_.roster_item(me.bare, contact_bare);
  if (!existing) {
    reply.error("wait", "internal-server-error");
    return;
  }
  std::string sub(item_el->attr("subscription"));
  if (sub == "remove") {
    if (!*existing) {
      reply.error("cancel", "item-not-found");
      return;
    }
    RosterItem old = **existing;
    auto v = store_.remove_roster_item(me.bare, contact_bare);
    if (!v) {
      reply_storage_error(reply, v.error());
      return;
    }
    reply.result();
    roster_push(me.bare, old, *v, true);
    // §2.5.2: cancel both directions with the contact.
    if (is_local_domain(contact->domain) && account_exists(contact->local, contact->domain)) {
      if (old.state.receives_presence() || old.state.pending_out) subscription_to_local(contact_bare, me.bare, "unsubscribe");
      if (old.state.sends_presence() || old.state.pending_in) subscription_to_local(contact_bare, me.bare, "unsubscribed");
    }
    return;
  }
  if (!sub.empty() && sub != "none" && sub != "to" && sub != "from" && sub != "both") {
    reply.error("modify", "bad-request", "unknown subscription value");
    return;
  }
  RosterItem item = existing->value_or(RosterItem{contact_bare, "", {}, {}});
  item.name = std::string(item_el->attr("name"));
  item.groups.clear();
  std::set<std::string> seen;
  for (const auto& g : item_el->children()) {
    if (g.name() != "group") continue;
    std::string name = g.text();
    if (name.empty() || !seen.insert(name).second) {
      reply.error("modify", "bad-request", "empty or duplicate group");
      return;
    }
    item.groups.push_back(name);
  }
  auto v = store_.put_roster_item(me.bare, item);
  if (!v) {
    auto [type, condition] = storage_error_condition(v.error());
    reply.error(type, condition, v.error().message);
    return;
  }
  reply.result();
  roster_push(me.bare, item, *v, false);
}

}  // namespace hearth::xmpp
