// The authorisation rules of room versions 10 and 11 (spec: room versions, "Authorization
// rules"), checked for every event this server creates, against the room's current state
// (for local events the auth state is the current state).
//
// Pure functions of the event and a state lookup; no I/O. Third-party invites are not
// supported yet: a member event carrying third_party_invite is rejected.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "matrix/events.h"

namespace hearth::matrix {

// Returns the current state event (a PDU) for (type, state_key), or nullptr.
using StateLookup = std::function<const JsonValue*(std::string_view type, std::string_view state_key)>;

// ok() when `event` is allowed; Errc::permission_denied (message says which rule) or
// Errc::invalid_argument (a malformed event) otherwise. `event` is a PDU with at least
// type, sender, room_id, content (and state_key for state events).
Result<void> check_event_auth(const JsonValue& event, RoomVersion version, const StateLookup& state);

// Power levels as the rules read them, with the spec's defaults when the room has no
// m.room.power_levels event (the creator has 100).
struct PowerLevels {
  const JsonValue* content = nullptr;  // nullptr: no power levels event
  std::string creator;

  std::int64_t user_level(std::string_view user_id) const;
  std::int64_t event_level(std::string_view type, bool is_state) const;
  std::int64_t named(std::string_view key) const;  // ban, kick, redact, invite, ...
};
PowerLevels power_levels_from(const StateLookup& state, RoomVersion version);

// The user's membership in the state ("join", "invite", "leave", "ban", "knock"), or
// "leave" when there is no member event.
std::string_view membership_of(const StateLookup& state, std::string_view user_id);

// The server name part of "@user:server", "!room:server", "#alias:server"; "" if none.
std::string_view server_of(std::string_view id);

}  // namespace hearth::matrix
