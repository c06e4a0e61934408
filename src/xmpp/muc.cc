#include "xmpp/muc.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"
#include "xmpp/jid.h"
#include "xmpp/mod_mam.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kStanzasNs = "urn:ietf:params:xml:ns:xmpp-stanzas";
constexpr std::string_view kDelayNs = "urn:xmpp:delay";
constexpr std::string_view kPingNs = "urn:xmpp:ping";
constexpr std::string_view kRegisterNs = "jabber:iq:register";
constexpr std::string_view kRoomInfoForm = "http://jabber.org/protocol/muc#roominfo";
constexpr std::string_view kRegisterForm = "http://jabber.org/protocol/muc#register";

const std::vector<store::Migration> kMigrations = {
    {1, "rooms and affiliations", R"sql(
CREATE TABLE muc_room (
  jid TEXT PRIMARY KEY,
  config TEXT NOT NULL,
  secret TEXT NOT NULL,
  subject TEXT NOT NULL,
  subject_from TEXT NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE muc_affiliation (
  room TEXT NOT NULL,
  jid TEXT NOT NULL,
  affiliation TEXT NOT NULL,
  nick TEXT NOT NULL,
  PRIMARY KEY (room, jid)
) WITHOUT ROWID;
)sql"},
};

// Answers an IQ addressed to a room (or the service) on behalf of `from_jid`.
class ServiceIqReply final : public IqReply {
 public:
  ServiceIqReply(const Element& st, std::string from_jid, const MucService::Deliver& deliver)
      : st_(st), from_(std::move(from_jid)), deliver_(deliver) {}
  ~ServiceIqReply() override {
    if (!answered_) error("wait", "internal-server-error", "no answer");
  }
  void result(std::optional<Element> payload) override {
    if (answered_) return;
    answered_ = true;
    Element r("iq", std::string(kClientNs));
    r.set_attr("type", "result");
    r.set_attr("id", std::string(st_.attr("id")));
    r.set_attr("from", from_);
    r.set_attr("to", std::string(st_.attr("from")));
    if (payload) r.add_child(std::move(*payload));
    deliver_(r);
  }
  void error(std::string_view type, std::string_view condition, std::string_view text) override {
    if (answered_) return;
    answered_ = true;
    Element r = make_error_reply(st_, type, condition, text);
    r.set_attr("from", from_);
    deliver_(r);
  }

 private:
  const Element& st_;
  std::string from_;
  const MucService::Deliver& deliver_;
  bool answered_ = false;
};

Element muc_user_x() { return Element("x", std::string(kMucUserNs)); }

void add_status(Element& x, int code) { x.add_child(Element("status", std::string(kMucUserNs))).set_attr("code", std::to_string(code)); }

std::optional<int> to_int(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

struct MucService::Room {
  std::mutex mutex;
  std::string jid;
  RoomConfig config;
  std::string secret;  // XEP-0421 occupant ids
  std::map<std::string, Affiliation> affiliations;  // bare JID -> not none
  std::map<std::string, std::string> reserved;      // bare JID -> registered nick
  struct Occupant {
    std::string nick, real_bare;
    std::vector<std::string> sessions;  // real full JIDs
    Role role = Role::participant;
    Element presence{"presence", std::string(kClientNs)};  // what the occupant broadcast
  };
  std::map<std::string, Occupant> occupants;  // nick -> occupant
  std::string subject, subject_from;
  bool destroyed = false;

  Affiliation affiliation_of(const std::string& bare) const {
    auto it = affiliations.find(bare);
    return it == affiliations.end() ? Affiliation::none : it->second;
  }
  Occupant* occupant_by_session(const std::string& full) {
    for (auto& [nick, o] : occupants)
      if (std::find(o.sessions.begin(), o.sessions.end(), full) != o.sessions.end()) return &o;
    return nullptr;
  }
  Occupant* occupant_by_bare(const std::string& bare) {
    for (auto& [nick, o] : occupants)
      if (o.real_bare == bare) return &o;
    return nullptr;
  }
  int owners() const {
    int n = 0;
    for (const auto& [jid, a] : affiliations) n += a == Affiliation::owner;
    return n;
  }
};

MucService::MucService(MucOptions options, store::Store& store, XmppStore& archive, Clock& clock, Logger& log,
                       Deliver deliver)
    : options_(std::move(options)), store_(store), archive_(archive), clock_(clock), log_(log), deliver_(std::move(deliver)) {}

MucService::~MucService() = default;

Result<void> MucService::migrate() { return store_.migrate("xmpp_muc", kMigrations); }

std::size_t MucService::room_count() const {
  std::lock_guard lock(mutex_);
  return rooms_.size();
}

void MucService::error_back(const Element& st, std::string_view type, std::string_view condition, std::string_view text) {
  if (st.attr("type") == "error") return;
  Element e = make_error_reply(st, type, condition, text);
  deliver_(e);
}

// ---- rooms ------------------------------------------------------------------------------

std::shared_ptr<MucService::Room> MucService::find_room(const std::string& jid, bool create, const std::string& creator,
                                                        bool* created) {
  if (created) *created = false;
  {
    std::lock_guard lock(mutex_);
    if (auto it = rooms_.find(jid); it != rooms_.end()) return it->second;
  }
  // A persistent room not in memory yet.
  auto room = std::make_shared<Room>();
  room->jid = jid;
  bool found = false;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT config, secret, subject, subject_from FROM muc_room WHERE jid = ?", {jid});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return false;
    found = true;
    room->config = RoomConfig::parse((*row)->text(0));
    room->secret = std::string((*row)->text(1));
    room->subject = std::string((*row)->text(2));
    room->subject_from = std::string((*row)->text(3));
    auto q = tx.query("SELECT jid, affiliation, nick FROM muc_affiliation WHERE room = ?", {jid},
                      [&](const store::Row& a) {
                        std::string who(a.text(0));
                        if (auto aff = parse_affiliation(a.text(1)); aff && *aff != Affiliation::none)
                          room->affiliations[who] = *aff;
                        if (!a.text(2).empty()) room->reserved[who] = std::string(a.text(2));
                      });
    if (!q) return tl::unexpected(q.error());
    return true;
  });
  if (!r) {
    log_.warn("xmpp.muc_load_failed", {{"room", jid}, {"error", r.error().describe()}});
    return nullptr;
  }
  if (!found) {
    if (!create) return nullptr;
    room->secret = random_token(16);
    room->affiliations[creator] = Affiliation::owner;
    if (created) *created = true;
  }
  std::lock_guard lock(mutex_);
  if (auto it = rooms_.find(jid); it != rooms_.end()) {
    if (created) *created = false;
    return it->second;  // someone else loaded or created it meanwhile
  }
  if (rooms_.size() >= static_cast<std::size_t>(options_.max_rooms)) return nullptr;
  rooms_[jid] = room;
  return room;
}

void MucService::forget_room(const std::string& jid) {
  std::lock_guard lock(mutex_);
  rooms_.erase(jid);
}

Result<void> MucService::save_room(Room& room) {
  if (!room.config.persistent) return ok();
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto r = tx.exec(
            "INSERT INTO muc_room(jid, config, secret, subject, subject_from, created_ms) VALUES(?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(jid) DO UPDATE SET config = excluded.config, subject = excluded.subject, subject_from = "
            "excluded.subject_from",
            {room.jid, room.config.serialise(), room.secret, room.subject, room.subject_from, clock_.now_ms()});
        if (!r) return tl::unexpected(r.error());
        std::set<std::string> who;
        for (const auto& [jid, a] : room.affiliations) who.insert(jid);
        for (const auto& [jid, n] : room.reserved) who.insert(jid);
        auto d = tx.exec("DELETE FROM muc_affiliation WHERE room = ?", {room.jid});
        if (!d) return tl::unexpected(d.error());
        for (const auto& jid : who) {
          auto nick = room.reserved.find(jid);
          auto w = tx.exec("INSERT INTO muc_affiliation(room, jid, affiliation, nick) VALUES(?, ?, ?, ?)",
                           {room.jid, jid, std::string(affiliation_name(room.affiliation_of(jid))),
                            nick == room.reserved.end() ? std::string() : nick->second});
          if (!w) return tl::unexpected(w.error());
        }
        return true;
      })
      .map([](bool) {});
}

// ---- routing ----------------------------------------------------------------------------

void MucService::handle(const SessionIdentity& from, Element st) {
  auto to = Jid::parse(st.attr("to"));
  if (!to) return;
  if (to->local.empty()) {
    if (st.name() == "iq") return on_service_iq(from, st);
    if (st.name() == "message") return error_back(st, "cancel", "service-unavailable");
    return;
  }
  std::string room_jid = to->bare();
  if (st.name() == "presence") return on_presence(from, st, room_jid, to->resource);
  if (st.name() == "iq") {
    if (!to->resource.empty()) {
      // XEP-0410: an occupant pinging its own occupant JID learns whether it is joined.
      std::string type(st.attr("type"));
      if (type != "get" && type != "set") return;
      auto room = find_room(room_jid, false, {}, nullptr);
      bool joined = false;
      if (room) {
        std::lock_guard lock(room->mutex);
        auto it = room->occupants.find(to->resource);
        joined = it != room->occupants.end() &&
                 std::find(it->second.sessions.begin(), it->second.sessions.end(), from.full) != it->second.sessions.end();
      }
      ServiceIqReply answer(st, to->full(), deliver_);
      IqReply& reply = answer;
      if (!joined) return reply.error("cancel", "not-acceptable", "you are not joined to this room with that nick");
      const Element* payload = st.children().begin() != st.children().end() ? &*st.children().begin() : nullptr;
      if (payload && payload->name() == "ping" && payload->ns() == kPingNs) return reply.result();
      return reply.error("cancel", "service-unavailable");
    }
    return on_room_iq(from, st, room_jid);
  }
  if (st.name() == "message") {
    auto room = find_room(room_jid, false, {}, nullptr);
    if (!room) return error_back(st, "cancel", "item-not-found", "no such room");
    std::lock_guard lock(room->mutex);
    if (room->destroyed) return error_back(st, "cancel", "item-not-found", "no such room");
    if (!to->resource.empty()) return on_private(from, st, *room, to->resource);
    if (const Element* x = st.child("x", kMucUserNs); x && (x->child("invite") || x->child("decline")))
      return on_invite(from, *x, *room);
    if (st.attr("type") != "groupchat")
      return error_back(st, "modify", "bad-request", "messages to a room are of type groupchat");
    on_groupchat(from, st, *room);
  }
}

void MucService::session_gone(const SessionIdentity& me) {
  std::set<std::string> rooms;
  {
    std::lock_guard lock(mutex_);
    auto it = joined_.find(me.full);
    if (it == joined_.end()) return;
    rooms = std::move(it->second);
    joined_.erase(it);
  }
  for (const auto& jid : rooms) {
    auto room = find_room(jid, false, {}, nullptr);
    if (!room) continue;
    std::lock_guard lock(room->mutex);
    if (auto* o = room->occupant_by_session(me.full)) {
      Element gone("presence", std::string(kClientNs));
      gone.set_attr("type", "unavailable");
      leave(*room, o->nick, me.full, &gone);
    }
  }
}

// ---- presence ---------------------------------------------------------------------------

void MucService::on_presence(const SessionIdentity& from, Element& st, const std::string& room_jid,
                             const std::string& nick) {
  std::string type(st.attr("type"));
  if (type != "" && type != "unavailable") return;  // subscriptions to rooms are not a thing
  if (nick.empty()) {
    if (type.empty()) error_back(st, "modify", "jid-malformed", "join a room as room@service/nick");
    return;
  }
  if (type == "unavailable") {
    auto room = find_room(room_jid, false, {}, nullptr);
    if (!room) return;
    std::lock_guard lock(room->mutex);
    if (auto* o = room->occupant_by_session(from.full)) leave(*room, o->nick, from.full, &st);
    return;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool created = false;
    auto room = find_room(room_jid, true, from.bare, &created);
    if (!room) return error_back(st, "wait", "resource-constraint", "the service holds too many rooms");
    std::lock_guard lock(room->mutex);
    if (room->destroyed) continue;  // it emptied out just now: make it again
    return join(from, st, *room, nick, created);
  }
}

void MucService::join(const SessionIdentity& from, Element& st, Room& room, const std::string& nick, bool created) {
  auto reply_error = [&](std::string_view type, std::string_view cond, std::string_view text) {
    Element e = make_error_reply(st, type, cond, text);
    if (const Element* x = st.child("x", kMucNs)) e.add_child(*x);
    deliver_(e);
    if (created && room.occupants.empty()) {
      room.destroyed = true;
      forget_room(room.jid);
    }
  };
  // The presence the occupant shows (muc elements are the service's own).
  Element shown("presence", std::string(kClientNs));
  for (const auto& c : st.children())
    if (c.ns() != kMucNs && c.ns() != kMucUserNs && c.ns() != kOccupantIdNs) shown.add_child(c);

  if (auto* me = room.occupant_by_session(from.full)) {
    if (me->nick == nick) {  // a presence update
      me->presence = std::move(shown);
      broadcast_presence(room, nick);
      return;
    }
    // A nick change (§7.6).
    if (room.occupants.count(nick)) return reply_error("cancel", "conflict", "that nick is taken");
    for (const auto& [bare, reserved] : room.reserved)
      if (reserved == nick && bare != from.bare) return reply_error("cancel", "conflict", "that nick is reserved");
    std::string old = me->nick;
    for (const auto& [n, o] : room.occupants)
      for (const auto& s : o.sessions) send_presence(room, old, s, s == from.full || o.real_bare == from.bare, {303}, true, nick);
    Room::Occupant moved = std::move(room.occupants[old]);
    room.occupants.erase(old);
    moved.nick = nick;
    moved.presence = std::move(shown);
    room.occupants[nick] = std::move(moved);
    broadcast_presence(room, nick);
    return;
  }

  Affiliation aff = room.affiliation_of(from.bare);
  const Element* muc = st.child("x", kMucNs);
  if (aff == Affiliation::outcast) return reply_error("auth", "forbidden", "you are banned from this room");
  if (room.config.members_only && aff == Affiliation::none)
    return reply_error("auth", "registration-required", "this room is for members only");
  if (!room.config.password.empty() && aff < Affiliation::admin) {
    const Element* pw = muc ? muc->child("password", kMucNs) : nullptr;
    if (!pw || pw->text() != room.config.password) return reply_error("auth", "not-authorized", "the room's password is needed");
  }
  auto existing = room.occupants.find(nick);
  if (existing != room.occupants.end() && existing->second.real_bare != from.bare)
    return reply_error("cancel", "conflict", "that nick is taken");
  for (const auto& [bare, reserved] : room.reserved)
    if (reserved == nick && bare != from.bare) return reply_error("cancel", "conflict", "that nick is reserved");
  if (existing == room.occupants.end() && room.occupants.size() >= static_cast<std::size_t>(room.config.max_users) &&
      aff < Affiliation::admin)
    return reply_error("wait", "service-unavailable", "the room is full");

  bool multi_session = existing != room.occupants.end();
  Room::Occupant& me = room.occupants[nick];
  me.nick = nick;
  me.real_bare = from.bare;
  me.sessions.push_back(from.full);
  me.role = default_role(aff, room.config);
  me.presence = std::move(shown);
  {
    std::lock_guard lock(mutex_);
    joined_[from.full].insert(room.jid);
  }
  // §7.2.3: the others' presence first, then everyone gets the newcomer's, then history and
  // the subject.
  for (const auto& [n, o] : room.occupants)
    if (n != nick) send_presence(room, n, from.full, false, {});
  std::vector<int> self_codes;
  if (room.config.non_anonymous) self_codes.push_back(100);
  if (room.config.archived) self_codes.push_back(170);
  if (created) self_codes.push_back(201);
  for (const auto& [n, o] : room.occupants)
    for (const auto& s : o.sessions) {
      if (multi_session && n == nick && s != from.full) continue;
      bool self = s == from.full;
      send_presence(room, nick, s, self, self ? self_codes : std::vector<int>{});
    }
  int history = room.config.history_max;
  if (const Element* h = muc ? muc->child("history", kMucNs) : nullptr)
    if (auto n = to_int(h->attr("maxstanzas"))) history = std::clamp(*n, 0, history);
  if (history > 0 && room.config.archived) send_history(room, from.full, history);
  send_subject(room, from.full);
  if (created) {
    if (auto r = save_room(room); !r) log_.warn("xmpp.muc_save_failed", {{"room", room.jid}, {"error", r.error().describe()}});
    log_.info("xmpp.muc_created", {{"room", room.jid}, {"owner", from.bare}});
  }
}

void MucService::leave(Room& room, const std::string& nick, const std::string& real_full, const Element* presence,
                       std::vector<int> codes, bool removed) {
  auto it = room.occupants.find(nick);
  if (it == room.occupants.end()) return;
  Room::Occupant& o = it->second;
  std::vector<std::string> leaving = removed ? o.sessions : std::vector<std::string>{real_full};
  if (presence) {
    Element shown("presence", std::string(kClientNs));
    for (const auto& c : presence->children())
      if (c.name() == "status") shown.add_child(c);
    o.presence = std::move(shown);
  }
  bool last_session = leaving.size() >= o.sessions.size();
  for (const auto& [n, other] : room.occupants)
    for (const auto& s : other.sessions) {
      bool self = std::find(leaving.begin(), leaving.end(), s) != leaving.end();
      if (!self && !last_session) continue;  // another session keeps the nick: only the leaver hears
      send_presence(room, nick, s, self, codes, true);
    }
  {
    std::lock_guard lock(mutex_);
    for (const auto& s : leaving) {
      auto j = joined_.find(s);
      if (j == joined_.end()) continue;
      j->second.erase(room.jid);
      if (j->second.empty()) joined_.erase(j);
    }
  }
  if (last_session) room.occupants.erase(it);
  else
    o.sessions.erase(std::remove_if(o.sessions.begin(), o.sessions.end(),
                                    [&](const std::string& s) { return s == real_full; }),
                     o.sessions.end());
  if (room.occupants.empty() && !room.config.persistent) {
    room.destroyed = true;
    forget_room(room.jid);
  }
}

void MucService::send_presence(Room& room, const std::string& nick, const std::string& to_full, bool self,
                               const std::vector<int>& codes, bool unavailable, const std::string& new_nick) {
  auto it = room.occupants.find(nick);
  if (it == room.occupants.end()) return;
  const Room::Occupant& o = it->second;
  Element p = o.presence;
  p.set_attr("from", room.jid + "/" + nick);
  p.set_attr("to", to_full);
  if (unavailable) p.set_attr("type", "unavailable");
  else p.remove_attr("type");
  Element x = muc_user_x();
  Element& item = x.add_child(Element("item", std::string(kMucUserNs)));
  Affiliation aff = room.affiliation_of(o.real_bare);
  item.set_attr("affiliation", std::string(affiliation_name(aff)));
  item.set_attr("role", std::string(role_name(unavailable ? Role::none : o.role)));
  // §7.2.4: real JIDs go to moderators, or to everyone in a non-anonymous room.
  auto* receiver = room.occupant_by_session(to_full);
  bool sees_jids = room.config.non_anonymous || (receiver && receiver->role == Role::moderator);
  if (sees_jids && !o.sessions.empty()) item.set_attr("jid", o.sessions.front());
  if (!new_nick.empty()) item.set_attr("nick", new_nick);
  if (self) add_status(x, 110);
  for (int c : codes) add_status(x, c);
  p.add_child(std::move(x));
  p.add_child(Element("occupant-id", std::string(kOccupantIdNs))).set_attr("id", occupant_id(room.secret, o.real_bare));
  deliver_(p);
}

void MucService::broadcast_presence(Room& room, const std::string& nick, std::vector<int> codes_for_all) {
  auto it = room.occupants.find(nick);
  if (it == room.occupants.end()) return;
  std::vector<std::string> self = it->second.sessions;
  for (const auto& [n, o] : room.occupants)
    for (const auto& s : o.sessions)
      send_presence(room, nick, s, std::find(self.begin(), self.end(), s) != self.end(), codes_for_all);
}

void MucService::send_to_occupants(Room& room, const Element& st) {
  std::vector<std::pair<std::string, std::string>> gone;  // (nick, full)
  for (const auto& [n, o] : room.occupants)
    for (const auto& s : o.sessions) {
      Element copy = st;
      copy.set_attr("to", s);
      if (!deliver_(copy)) gone.emplace_back(n, s);
    }
  // §7.2.10 (and RFC 6121 §4.6): a session that is no longer there has left.
  for (const auto& [n, s] : gone) leave(room, n, s, nullptr);
}

void MucService::send_history(Room& room, const std::string& to_full, int max) {
  ArchiveQuery q;
  q.last_page = true;
  q.max = max;
  auto page = archive_.query_archive(room.jid, q);
  if (!page) return;
  for (const auto& item : page->items) {
    auto m = parse_element(item.stanza);
    if (!m) continue;
    m->set_attr("to", to_full);
    Element& delay = m->add_child(Element("delay", std::string(kDelayNs)));
    delay.set_attr("from", room.jid);
    delay.set_attr("stamp", format_delay_stamp(item.stamp_ms));
    deliver_(*m);
  }
}

void MucService::send_subject(Room& room, const std::string& to_full) {
  Element m("message", std::string(kClientNs));
  m.set_attr("type", "groupchat");
  m.set_attr("from", room.subject_from.empty() ? room.jid : room.jid + "/" + room.subject_from);
  m.set_attr("to", to_full);
  m.set_attr("id", random_hex(8));
  m.add_child(Element("subject", std::string(kClientNs))).add_text(room.subject);
  deliver_(m);
}

// ---- messages ---------------------------------------------------------------------------

void MucService::on_groupchat(const SessionIdentity& from, Element& st, Room& room) {
  auto* me = room.occupant_by_session(from.full);
  if (!me) return error_back(st, "cancel", "not-acceptable", "join the room before writing to it");
  if (me->role == Role::visitor) return error_back(st, "auth", "forbidden", "visitors have no voice in this room");
  const Element* subject = st.child("subject", kClientNs);
  if (subject && !st.child("body", kClientNs)) {
    if (me->role != Role::moderator && !room.config.occupants_change_subject)
      return error_back(st, "auth", "forbidden", "only moderators change the subject");
    room.subject = subject->text().substr(0, options_.max_subject_bytes);
    room.subject_from = me->nick;
    if (auto r = save_room(room); !r) return error_back(st, "wait", "resource-constraint", "the subject could not be stored");
    Element m("message", std::string(kClientNs));
    m.set_attr("type", "groupchat");
    m.set_attr("from", room.jid + "/" + me->nick);
    m.set_attr("id", std::string(st.attr("id")).empty() ? random_hex(8) : std::string(st.attr("id")));
    m.add_child(Element("subject", std::string(kClientNs))).add_text(room.subject);
    send_to_occupants(room, m);
    return;
  }
  Element m = st;
  m.set_attr("from", room.jid + "/" + me->nick);
  m.remove_attr("to");
  auto& nodes = m.nodes();
  nodes.erase(std::remove_if(nodes.begin(), nodes.end(),
                             [](const Node& n) {
                               return n.is_element() && ((n.element().name() == "stanza-id" && n.element().ns() == kSidNs) ||
                                                         n.element().ns() == kOccupantIdNs);
                             }),
              nodes.end());
  m.add_child(Element("occupant-id", std::string(kOccupantIdNs))).set_attr("id", occupant_id(room.secret, me->real_bare));
  if (room.config.archived && st.child("body", kClientNs)) {
    std::string id = new_archive_id(clock_.now_ms());
    Element& sid = m.add_child(Element("stanza-id", std::string(kSidNs)));
    sid.set_attr("id", id);
    sid.set_attr("by", room.jid);
    // Durable before anyone sees it.
    if (auto r = archive_.archive(room.jid, id, room.jid + "/" + me->nick, m.serialize()); !r)
      return error_back(st, "wait", "resource-constraint", "the message could not be stored");
  }
  send_to_occupants(room, m);
}

void MucService::on_private(const SessionIdentity& from, Element& st, Room& room, const std::string& nick) {
  auto* me = room.occupant_by_session(from.full);
  if (!me) return error_back(st, "cancel", "not-acceptable", "join the room before writing to its occupants");
  auto it = room.occupants.find(nick);
  if (it == room.occupants.end()) return error_back(st, "cancel", "item-not-found", "nobody by that nick is here");
  if (st.attr("type") == "groupchat") return error_back(st, "modify", "bad-request", "private messages are not groupchat");
  Element m = st;
  m.set_attr("from", room.jid + "/" + me->nick);
  if (!m.child("x", kMucUserNs)) m.add_child(muc_user_x());
  for (const auto& s : it->second.sessions) {
    m.set_attr("to", s);
    deliver_(m);
  }
}

void MucService::on_invite(const SessionIdentity& from, const Element& x, Room& room) {
  auto* me = room.occupant_by_session(from.full);
  Affiliation aff = room.affiliation_of(from.bare);
  if (const Element* decline = x.child("decline", kMucUserNs)) {
    auto to = Jid::parse(decline->attr("to"));
    if (!to) return;
    Element m("message", std::string(kClientNs));
    m.set_attr("from", room.jid);
    m.set_attr("to", to->full());
    Element& out = m.add_child(muc_user_x()).add_child(Element("decline", std::string(kMucUserNs)));
    out.set_attr("from", from.bare);
    if (const Element* reason = decline->child("reason", kMucUserNs)) out.add_child(*reason);
    deliver_(m);
    return;
  }
  Element err_src("message", std::string(kClientNs));
  err_src.set_attr("from", from.full);
  err_src.set_attr("to", room.jid);
  if (!me) return error_back(err_src, "cancel", "not-acceptable", "join the room before inviting");
  if (!room.config.allow_invites && aff < Affiliation::admin)
    return error_back(err_src, "auth", "forbidden", "only admins invite to this room");
  bool changed = false;
  for (const auto& invite : x.children()) {
    if (invite.name() != "invite") continue;
    auto to = Jid::parse(invite.attr("to"));
    if (!to) continue;
    // §7.8.2: in a members-only room an admin's invitation makes the invitee a member.
    if (room.config.members_only && aff >= Affiliation::admin && room.affiliation_of(to->bare()) == Affiliation::none) {
      room.affiliations[to->bare()] = Affiliation::member;
      changed = true;
    }
    Element m("message", std::string(kClientNs));
    m.set_attr("from", room.jid);
    m.set_attr("to", to->bare());
    m.set_attr("id", random_hex(8));
    Element& ux = m.add_child(muc_user_x());
    Element& out = ux.add_child(Element("invite", std::string(kMucUserNs)));
    out.set_attr("from", from.bare);
    if (const Element* reason = invite.child("reason", kMucUserNs)) out.add_child(*reason);
    if (!room.config.password.empty())
      ux.add_child(Element("password", std::string(kMucUserNs))).add_text(room.config.password);
    // For clients that do not know mediated invitations (as Prosody and ejabberd do).
    const Element* reason = invite.child("reason", kMucUserNs);
    m.add_child(Element("body", std::string(kClientNs)))
        .add_text(fmt::format("{} invites you to the room {}{}", from.bare, room.jid,
                              reason && !reason->text().empty() ? " (" + reason->text() + ")" : std::string()));
    deliver_(m);
  }
  if (changed) (void)save_room(room);
}

// ---- IQs --------------------------------------------------------------------------------

void MucService::on_service_iq(const SessionIdentity& from, Element& st) {
  std::string type(st.attr("type"));
  if (type != "get" && type != "set") return;
  ServiceIqReply answer(st, options_.domain, deliver_);
  IqReply& reply = answer;
  const Element* payload = st.children().begin() != st.children().end() ? &*st.children().begin() : nullptr;
  if (!payload) return reply.error("modify", "bad-request");
  if (payload->ns() == kDiscoInfoNs && type == "get") {
    Element q("query", std::string(kDiscoInfoNs));
    Element& id = q.add_child(Element("identity", std::string(kDiscoInfoNs)));
    id.set_attr("category", "conference");
    id.set_attr("type", "text");
    id.set_attr("name", name());
    for (auto f : {kDiscoInfoNs, kDiscoItemsNs, kMucNs, kPingNs, kOccupantIdNs})
      q.add_child(Element("feature", std::string(kDiscoInfoNs))).set_attr("var", std::string(f));
    return reply.result(std::move(q));
  }
  if (payload->ns() == kDiscoItemsNs && type == "get") {
    // Public rooms: those in memory and the persistent ones in the store.
    std::map<std::string, std::string> listed;
    auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
      return tx.query("SELECT jid, config FROM muc_room", {},
                      [&](const store::Row& row) {
                        auto c = RoomConfig::parse(row.text(1));
                        if (c.public_room) listed[std::string(row.text(0))] = c.name;
                      })
          .map([] { return true; });
    });
    (void)r;
    std::vector<std::shared_ptr<Room>> live;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [jid, room] : rooms_) live.push_back(room);
    }
    for (const auto& room : live) {
      std::lock_guard lock(room->mutex);
      if (room->config.public_room && !room->destroyed) listed[room->jid] = room->config.name;
      else listed.erase(room->jid);
    }
    Element q("query", std::string(kDiscoItemsNs));
    for (const auto& [jid, title] : listed) {
      Element& item = q.add_child(Element("item", std::string(kDiscoItemsNs)));
      item.set_attr("jid", jid);
      if (!title.empty()) item.set_attr("name", title);
    }
    return reply.result(std::move(q));
  }
  if (payload->ns() == kPingNs) return reply.result();
  reply.error("cancel", "service-unavailable");
  (void)from;
}

void MucService::on_room_iq(const SessionIdentity& from, Element& st, const std::string& room_jid) {
  std::string type(st.attr("type"));
  if (type != "get" && type != "set") return;
  ServiceIqReply answer(st, room_jid, deliver_);
  IqReply& reply = answer;
  const Element* payload = st.children().begin() != st.children().end() ? &*st.children().begin() : nullptr;
  if (!payload) return reply.error("modify", "bad-request");
  auto room = find_room(room_jid, false, {}, nullptr);
  if (!room) return reply.error("cancel", "item-not-found", "no such room");
  std::lock_guard lock(room->mutex);
  if (room->destroyed) return reply.error("cancel", "item-not-found", "no such room");
  Room& r = *room;
  const std::string& ns = payload->ns();
  if (ns == kDiscoInfoNs && type == "get") {
    Element q("query", std::string(kDiscoInfoNs));
    Element& id = q.add_child(Element("identity", std::string(kDiscoInfoNs)));
    id.set_attr("category", "conference");
    id.set_attr("type", "text");
    id.set_attr("name", r.config.name.empty() ? room_jid.substr(0, room_jid.find('@')) : r.config.name);
    std::vector<std::string> features = {
        std::string(kMucNs),
        r.config.persistent ? "muc_persistent" : "muc_temporary",
        r.config.public_room ? "muc_public" : "muc_hidden",
        r.config.members_only ? "muc_membersonly" : "muc_open",
        r.config.moderated ? "muc_moderated" : "muc_unmoderated",
        r.config.password.empty() ? "muc_unsecured" : "muc_passwordprotected",
        r.config.non_anonymous ? "muc_nonanonymous" : "muc_semianonymous",
        std::string(kOccupantIdNs),
        std::string(kSidNs),
        std::string(kPingNs),
        std::string(kRegisterNs),
        "http://jabber.org/protocol/muc#self-ping-optimization",
    };
    if (r.config.archived) features.emplace_back(kMamNs);
    for (const auto& f : features) q.add_child(Element("feature", std::string(kDiscoInfoNs))).set_attr("var", f);
    Element x = make_form("result", kRoomInfoForm);
    x.add_child(form_field("muc#roominfo_description", "text-single", {r.config.description}));
    x.add_child(form_field("muc#roominfo_subject", "text-single", {r.subject}));
    x.add_child(form_field("muc#roominfo_occupants", "text-single", {std::to_string(r.occupants.size())}));
    q.add_child(std::move(x));
    return reply.result(std::move(q));
  }
  if (ns == kDiscoItemsNs && type == "get") return reply.result(Element("query", std::string(kDiscoItemsNs)));
  if (ns == kPingNs) return reply.result();
  if (ns == kMucOwnerNs) return owner_iq(from, st, r, reply);
  if (ns == kMucAdminNs) return admin_iq(from, st, r, reply);
  if (ns == kRegisterNs) return register_iq(from, st, r, reply);
  if (ns == kMamNs && payload->name() == "query") {
    bool allowed = r.occupant_by_session(from.full) || r.affiliation_of(from.bare) >= Affiliation::member ||
                   (r.config.public_room && !r.config.members_only && r.config.password.empty());
    if (!allowed) return reply.error("auth", "forbidden", "join the room to read its history");
    if (!r.config.archived) return reply.error("cancel", "service-unavailable", "this room keeps no archive");
    return answer_mam_query(archive_, room_jid, from, st, *payload, reply);
  }
  reply.error("cancel", "service-unavailable");
}

void MucService::owner_iq(const SessionIdentity& from, const Element& st, Room& room, IqReply& reply) {
  if (room.affiliation_of(from.bare) != Affiliation::owner) return reply.error("auth", "forbidden", "owners only");
  const Element& q = *st.children().begin();
  if (st.attr("type") == "get") {
    Element out("query", std::string(kMucOwnerNs));
    out.add_child(room_config_form(room.config));
    return reply.result(std::move(out));
  }
  if (const Element* destroy_el = q.child("destroy", kMucOwnerNs)) {
    const Element* reason = destroy_el->child("reason", kMucOwnerNs);
    reply.result();
    return destroy(room, reason ? reason->text() : std::string());
  }
  const Element* x = q.child("x", kDataFormsNs);
  if (!x) return reply.error("modify", "bad-request", "a configuration form or <destroy/> is expected");
  if (x->attr("type") == "cancel") return reply.result();
  auto form = read_form(*x);
  if (!form) return reply.error("modify", "bad-request", "the form is malformed");
  RoomConfig before = room.config;
  std::string bad = apply_room_config(room.config, *form, options_.max_users_per_room);
  if (!bad.empty()) return reply.error("modify", "not-acceptable", fmt::format("invalid value for {}", bad));
  if (before.persistent && !room.config.persistent) {
    (void)store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
      if (auto d = tx.exec("DELETE FROM muc_room WHERE jid = ?", {room.jid}); !d) return tl::unexpected(d.error());
      if (auto d = tx.exec("DELETE FROM muc_affiliation WHERE room = ?", {room.jid}); !d) return tl::unexpected(d.error());
      return true;
    });
  }
  if (auto r = save_room(room); !r) {
    room.config = before;
    return reply_storage_error(reply, r.error());
  }
  reply.result();
  // §10.2.1: occupants learn that the configuration changed (and its privacy).
  Element m("message", std::string(kClientNs));
  m.set_attr("type", "groupchat");
  m.set_attr("from", room.jid);
  m.set_attr("id", random_hex(8));
  Element& ux = m.add_child(muc_user_x());
  add_status(ux, 104);
  if (before.non_anonymous != room.config.non_anonymous) add_status(ux, room.config.non_anonymous ? 172 : 173);
  send_to_occupants(room, m);
  if (room.config.members_only && !before.members_only) {
    std::vector<std::string> out;
    for (const auto& [nick, o] : room.occupants)
      if (room.affiliation_of(o.real_bare) == Affiliation::none) out.push_back(nick);
    for (const auto& nick : out) leave(room, nick, {}, nullptr, {322}, true);
  }
}

void MucService::destroy(Room& room, const std::string& reason) {
  std::vector<std::string> nicks;
  for (const auto& [nick, o] : room.occupants) nicks.push_back(nick);
  for (const auto& nick : nicks) {
    auto it = room.occupants.find(nick);
    for (const auto& s : it->second.sessions) {
      Element p("presence", std::string(kClientNs));
      p.set_attr("from", room.jid + "/" + nick);
      p.set_attr("to", s);
      p.set_attr("type", "unavailable");
      Element& x = p.add_child(muc_user_x());
      Element& item = x.add_child(Element("item", std::string(kMucUserNs)));
      item.set_attr("affiliation", "none");
      item.set_attr("role", "none");
      Element& d = x.add_child(Element("destroy", std::string(kMucUserNs)));
      if (!reason.empty()) d.add_child(Element("reason", std::string(kMucUserNs))).add_text(reason);
      deliver_(p);
      std::lock_guard lock(mutex_);
      if (auto j = joined_.find(s); j != joined_.end()) j->second.erase(room.jid);
    }
  }
  room.occupants.clear();
  room.destroyed = true;
  (void)store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    if (auto d = tx.exec("DELETE FROM muc_room WHERE jid = ?", {room.jid}); !d) return tl::unexpected(d.error());
    if (auto d = tx.exec("DELETE FROM muc_affiliation WHERE room = ?", {room.jid}); !d) return tl::unexpected(d.error());
    if (auto d = tx.exec("DELETE FROM xmpp_archive WHERE owner = ?", {room.jid}); !d) return tl::unexpected(d.error());
    return true;
  });
  forget_room(room.jid);
  log_.info("xmpp.muc_destroyed", {{"room", room.jid}});
}

void MucService::admin_iq(const SessionIdentity& from, const Element& st, Room& room, IqReply& reply) {
  const Element& q = *st.children().begin();
  Affiliation my_aff = room.affiliation_of(from.bare);
  auto* me = room.occupant_by_session(from.full);
  Role my_role = me ? me->role : Role::none;
  std::vector<const Element*> items;
  for (const auto& c : q.children())
    if (c.name() == "item") items.push_back(&c);
  if (items.empty()) return reply.error("modify", "bad-request", "no items");

  if (st.attr("type") == "get") {
    const Element& want = *items.front();
    Element out("query", std::string(kMucAdminNs));
    if (auto aff = parse_affiliation(want.attr("affiliation"))) {
      if (my_aff < Affiliation::admin && !(my_aff == Affiliation::member && *aff == Affiliation::member))
        return reply.error("auth", "forbidden", "admins and owners see affiliation lists");
      for (const auto& [jid, a] : room.affiliations)
        if (a == *aff) {
          Element& item = out.add_child(Element("item", std::string(kMucAdminNs)));
          item.set_attr("affiliation", std::string(affiliation_name(a)));
          item.set_attr("jid", jid);
          if (auto n = room.reserved.find(jid); n != room.reserved.end()) item.set_attr("nick", n->second);
        }
      return reply.result(std::move(out));
    }
    if (auto role = parse_role(want.attr("role"))) {
      if (my_role != Role::moderator) return reply.error("auth", "forbidden", "moderators see role lists");
      for (const auto& [nick, o] : room.occupants)
        if (o.role == *role) {
          Element& item = out.add_child(Element("item", std::string(kMucAdminNs)));
          item.set_attr("role", std::string(role_name(o.role)));
          item.set_attr("nick", nick);
          item.set_attr("affiliation", std::string(affiliation_name(room.affiliation_of(o.real_bare))));
          if (!o.sessions.empty()) item.set_attr("jid", o.sessions.front());
        }
      return reply.result(std::move(out));
    }
    return reply.error("modify", "bad-request", "ask for an affiliation or a role");
  }

  // A set: check every item first, then apply them all (§9.1: all or nothing).
  struct Change {
    std::string nick, jid;
    std::optional<Role> role;
    std::optional<Affiliation> affiliation;
    std::string reason;
  };
  std::vector<Change> changes;
  std::map<std::string, Affiliation> future = room.affiliations;
  for (const Element* item : items) {
    Change c;
    c.nick = std::string(item->attr("nick"));
    if (const Element* reason = item->child("reason", kMucAdminNs)) c.reason = reason->text();
    if (!item->attr("role").empty()) {
      c.role = parse_role(item->attr("role"));
      if (!c.role) return reply.error("modify", "bad-request", "unknown role");
      auto it = room.occupants.find(c.nick);
      if (it == room.occupants.end()) return reply.error("cancel", "item-not-found", "nobody by that nick is here");
      if (!may_change_role(my_aff, my_role, room.affiliation_of(it->second.real_bare), *c.role))
        return reply.error("cancel", "not-allowed", "you may not change that occupant's role");
    } else if (!item->attr("affiliation").empty()) {
      c.affiliation = parse_affiliation(item->attr("affiliation"));
      if (!c.affiliation) return reply.error("modify", "bad-request", "unknown affiliation");
      if (!item->attr("jid").empty()) {
        auto j = Jid::parse(item->attr("jid"));
        if (!j) return reply.error("modify", "jid-malformed");
        c.jid = j->bare();
      } else if (auto it = room.occupants.find(c.nick); it != room.occupants.end()) {
        c.jid = it->second.real_bare;
      } else {
        return reply.error("modify", "bad-request", "name a jid");
      }
      Affiliation current = future.count(c.jid) ? future[c.jid] : Affiliation::none;
      if (!may_change_affiliation(my_aff, current, *c.affiliation))
        return reply.error("auth", "forbidden", "you may not change that affiliation");
      if (*c.affiliation == Affiliation::none) future.erase(c.jid);
      else future[c.jid] = *c.affiliation;
    } else {
      return reply.error("modify", "bad-request", "an item names a role or an affiliation");
    }
    changes.push_back(std::move(c));
  }
  int owners = 0;
  for (const auto& [jid, a] : future) owners += a == Affiliation::owner;
  if (owners == 0) return reply.error("cancel", "conflict", "a room keeps at least one owner");
  room.affiliations = future;
  if (auto r = save_room(room); !r) return reply_storage_error(reply, r.error());
  reply.result();

  for (const auto& c : changes) {
    if (c.role) {
      auto it = room.occupants.find(c.nick);
      if (it == room.occupants.end()) continue;
      if (*c.role == Role::none) {
        leave(room, c.nick, {}, nullptr, {307}, true);  // kicked
        continue;
      }
      it->second.role = *c.role;
      broadcast_presence(room, c.nick);
      continue;
    }
    auto* o = room.occupant_by_bare(c.jid);
    if (!o) continue;
    std::string nick = o->nick;
    if (*c.affiliation == Affiliation::outcast) {
      leave(room, nick, {}, nullptr, {301}, true);  // banned
    } else if (room.config.members_only && *c.affiliation == Affiliation::none) {
      leave(room, nick, {}, nullptr, {321}, true);  // no longer a member
    } else {
      o->role = default_role(*c.affiliation, room.config);
      broadcast_presence(room, nick);
    }
  }
}

void MucService::register_iq(const SessionIdentity& from, const Element& st, Room& room, IqReply& reply) {
  const Element& q = *st.children().begin();
  auto mine = room.reserved.find(from.bare);
  if (st.attr("type") == "get") {
    Element out("query", std::string(kRegisterNs));
    if (mine != room.reserved.end()) {
      out.add_child(Element("registered", std::string(kRegisterNs)));
      out.add_child(Element("username", std::string(kRegisterNs))).add_text(mine->second);
      return reply.result(std::move(out));
    }
    Element x = make_form("form", kRegisterForm);
    x.add_child(form_field("muc#register_roomnick", "text-single"));
    out.add_child(std::move(x));
    return reply.result(std::move(out));
  }
  if (q.child("remove", kRegisterNs)) {
    room.reserved.erase(from.bare);
    if (auto r = save_room(room); !r) return reply_storage_error(reply, r.error());
    return reply.result();
  }
  Affiliation aff = room.affiliation_of(from.bare);
  if (aff == Affiliation::outcast) return reply.error("auth", "forbidden");
  // Registering reserves a nick; it never grants membership (a members-only room's admins
  // do that), so only members register there.
  if (room.config.members_only && aff == Affiliation::none)
    return reply.error("auth", "registration-required", "ask an admin for membership first");
  const Element* x = q.child("x", kDataFormsNs);
  auto form = x ? read_form(*x) : std::nullopt;
  auto nick = form ? form->first("muc#register_roomnick") : std::nullopt;
  if (!nick || nick->empty()) return reply.error("modify", "not-acceptable", "a nick is needed");
  auto prepped = prep_resource(*nick);
  if (!prepped) return reply.error("modify", "not-acceptable", "that nick cannot be used");
  for (const auto& [bare, n] : room.reserved)
    if (n == *prepped && bare != from.bare) return reply.error("cancel", "conflict", "that nick is reserved");
  if (auto it = room.occupants.find(*prepped); it != room.occupants.end() && it->second.real_bare != from.bare)
    return reply.error("cancel", "conflict", "that nick is in use");
  room.reserved[from.bare] = *prepped;
  if (auto r = save_room(room); !r) return reply_storage_error(reply, r.error());
  reply.result();
}

}  // namespace hearth::xmpp
