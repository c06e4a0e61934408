// Room upgrades (spec: "Room Upgrades", POST /rooms/{roomId}/upgrade): what the new room
// starts with and what changes in the old one, as pure functions of the old room's state.
// The endpoint (upgrade_api.cc) appends the events these describe in one write job.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "matrix/canonical_json.h"
#include "matrix/events.h"

namespace hearth::matrix {

struct StateEventContent {
  std::string type, state_key;
  JsonValue content;
};

// The new room's m.room.create content: the old one's fields (e.g. `type`, `m.federate`)
// without creator/room_version/predecessor, then room_version, `predecessor` (old room id
// and its last event) and, for v10, `creator`.
JsonValue upgraded_create_content(const JsonValue& old_create, RoomVersion new_version, std::string_view new_version_id,
                                  const std::string& old_room_id, const std::string& last_event_id,
                                  const std::string& creator);

// The state the spec says to transfer, in the order to send it (power levels excluded:
// see below): server ACL, encryption, name, avatar, topic, guest access, history
// visibility, join rules, canonical alias; then the old room's bans (member events with
// membership "ban"; other memberships are not transferred). `old_state` is the old room's
// current state.
std::vector<StateEventContent> transferable_state(const std::vector<StateEventContent>& old_state);

// The new room's first power levels: the old ones with the upgrading user raised to the
// highest level any event or action there needs (so that it can send the transferred
// state); nullopt when the old levels already let it. The old levels are sent unchanged
// afterwards.
std::optional<JsonValue> bootstrap_power_levels(const JsonValue& old_levels, const std::string& user);

// The old room's power levels after the upgrade: events_default and invite raised to
// max(50, users_default + 1) so that ordinary members can no longer talk or invite there.
JsonValue restricted_power_levels(const JsonValue& old_levels);

}  // namespace hearth::matrix
