// Private to xmpp/: the pure parts of XEP-0045 multi-user chat — a room's configuration
// (and its muc#roomconfig form), affiliations and roles, and who may change whose. The
// service (muc.h) holds rooms and occupants and does the routing.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xmpp/forms.h"
#include "xmpp/xml.h"

namespace hearth::xmpp {

inline constexpr std::string_view kMucNs = "http://jabber.org/protocol/muc";
inline constexpr std::string_view kMucUserNs = "http://jabber.org/protocol/muc#user";
inline constexpr std::string_view kMucAdminNs = "http://jabber.org/protocol/muc#admin";
inline constexpr std::string_view kMucOwnerNs = "http://jabber.org/protocol/muc#owner";
inline constexpr std::string_view kOccupantIdNs = "urn:xmpp:occupant-id:0";

enum class Affiliation { outcast, none, member, admin, owner };
enum class Role { none, visitor, participant, moderator };

std::string_view affiliation_name(Affiliation a);
std::optional<Affiliation> parse_affiliation(std::string_view name);
std::string_view role_name(Role r);
std::optional<Role> parse_role(std::string_view name);

struct RoomConfig {
  std::string name;
  std::string description;
  bool persistent = false;
  bool public_room = true;
  bool members_only = false;
  bool moderated = false;
  std::string password;           // empty: none
  bool non_anonymous = false;     // muc#roomconfig_whois = anyone
  bool occupants_change_subject = false;
  bool allow_invites = true;      // occupants may invite (else only admins and owners)
  int history_max = 20;           // messages sent to a joining occupant
  int max_users = 200;
  bool archived = true;           // XEP-0313 on the room

  // Serialised for storage ("key=value" lines); parse() accepts what serialise() wrote
  // and ignores unknown keys.
  std::string serialise() const;
  static RoomConfig parse(std::string_view text);
};

// The muc#roomconfig form (XEP-0045 §10.2) with the current values.
Element room_config_form(const RoomConfig& config);
// Applies a submitted muc#roomconfig form; the name of the first field that is invalid,
// or "" when everything applied. Unknown fields are ignored (clients send fields other
// servers define).
std::string apply_room_config(RoomConfig& config, const SubmittedForm& form, int max_users_limit);

// The role an occupant gets on entering (XEP-0045 §5.1.2).
Role default_role(Affiliation a, const RoomConfig& config);

// XEP-0045 §9.6-9.8, §10.6-10.8: may an actor with `actor` affiliation (and role) give
// `target_current` the affiliation `wanted`? Owners change anything (the last owner is
// protected by the caller); admins change members, none and outcast of non-owners/admins.
bool may_change_affiliation(Affiliation actor, Affiliation target_current, Affiliation wanted);
// §8.2-8.6: moderators change roles of occupants whose affiliation is not above theirs;
// granting/revoking moderator needs admin or owner.
bool may_change_role(Affiliation actor_affiliation, Role actor_role, Affiliation target_affiliation, Role wanted);

// XEP-0421: a stable, room-specific opaque id for a real bare JID.
std::string occupant_id(std::string_view room_secret, std::string_view real_bare);

}  // namespace hearth::xmpp
