// Private to xmpp/: XEP-0045 multi-user chat at conference.<domain>.
//
// Rooms are created by the first local user who joins (the owner), open at once with the
// default configuration (clients that then submit a configuration form, or accept the
// instant room, work as with other servers). A room lives while it has occupants unless it
// is persistent; persistent rooms keep their configuration, affiliations, reserved nicks
// and subject in the store. Messages are archived per room (XEP-0313, queried at the room's
// JID) and carry XEP-0359 stanza ids and XEP-0421 occupant ids; joiners get the room's
// recent history from that archive, then the subject.
//
// Supported: join (passwords, members-only, bans, nick conflicts and reservations, max
// users, multi-session nicks), presence updates and nick changes, leave, groupchat and
// private messages, subject changes, mediated invitations and declines (direct XEP-0249
// invitations are client-to-client and route like any message), owner configuration
// (muc#roomconfig) and destruction, admin lists and changes of affiliations (owner, admin,
// member, outcast) and roles (kick, voice, moderator) with the XEP's permission rules,
// nick registration (jabber:iq:register), XEP-0410 self-ping, disco#info with muc#roominfo
// and disco#items of public rooms. Not supported yet: occupants' vCards through the room,
// voice requests, room upgrades; rooms on other servers arrive with federation.
//
// Threads: handle() and session_gone() run on net's worker pool. Lock order: a room's mutex,
// then the service's. Schema: module "xmpp_muc" (tables muc_room, muc_affiliation); the
// archive is xmpp_archive with the room's JID as owner.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "xmpp/im.h"
#include "xmpp/muc_room.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

class XmppStore;

struct MucOptions {
  std::string domain;          // "conference.example.org"
  int max_users_per_room = 1000;
  int max_rooms = 100000;      // rooms held in memory at once
  std::size_t max_subject_bytes = 4096;
};

class MucService final : public LocalService {
 public:
  // `deliver` sends a stanza to a local user (ImRouter::deliver_from_service); false when
  // the full JID it names has no session.
  using Deliver = std::function<bool(const Element&)>;

  MucService(MucOptions options, store::Store& store, XmppStore& archive, Clock& clock, Logger& log, Deliver deliver);
  ~MucService() override;

  // Applies the "xmpp_muc" migrations (blocking; at start-up).
  Result<void> migrate();

  void handle(const SessionIdentity& from, Element stanza) override;
  void session_gone(const SessionIdentity& me) override;
  std::string name() const override { return "Group chats"; }

  // Rooms in memory (tests).
  std::size_t room_count() const;

  struct Room;

 private:
  std::shared_ptr<Room> find_room(const std::string& jid, bool create, const std::string& creator, bool* created);
  void forget_room(const std::string& jid);

  void on_presence(const SessionIdentity& from, Element& st, const std::string& room_jid, const std::string& nick);
  void join(const SessionIdentity& from, Element& st, Room& room, const std::string& nick, bool created);
  void leave(Room& room, const std::string& nick, const std::string& real_full, const Element* presence,
             std::vector<int> codes = {}, bool removed = false);
  void on_groupchat(const SessionIdentity& from, Element& st, Room& room);
  void on_private(const SessionIdentity& from, Element& st, Room& room, const std::string& nick);
  void on_invite(const SessionIdentity& from, const Element& x, Room& room);
  void on_room_iq(const SessionIdentity& from, Element& st, const std::string& room_jid);
  void on_service_iq(const SessionIdentity& from, Element& st);
  void owner_iq(const SessionIdentity& from, const Element& st, Room& room, IqReply& reply);
  void admin_iq(const SessionIdentity& from, const Element& st, Room& room, IqReply& reply);
  void register_iq(const SessionIdentity& from, const Element& st, Room& room, IqReply& reply);
  void destroy(Room& room, const std::string& reason);

  void broadcast_presence(Room& room, const std::string& nick, std::vector<int> codes_for_all = {});
  void send_presence(Room& room, const std::string& nick, const std::string& to_full, bool self,
                     const std::vector<int>& codes, bool unavailable = false,
                     const std::string& new_nick = {});
  void send_to_occupants(Room& room, const Element& st);
  void send_history(Room& room, const std::string& to_full, int max);
  void send_subject(Room& room, const std::string& to_full);
  Result<void> save_room(Room& room);
  void error_back(const Element& st, std::string_view type, std::string_view condition, std::string_view text = {});

  MucOptions options_;
  store::Store& store_;
  XmppStore& archive_;
  Clock& clock_;
  Logger& log_;
  Deliver deliver_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<Room>> rooms_;
  std::unordered_map<std::string, std::set<std::string>> joined_;  // real full JID -> rooms
};

}  // namespace hearth::xmpp
