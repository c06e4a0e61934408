// State resolution v2 (spec: room versions 2+, "State resolution"; used by room versions
// 10 and 11): given the room states of several branches of the event graph, the one
// state every server computes for the point where they meet.
//
// Why it matters here (incident I19): an event that reaches us over federation must never
// reset the room's state. The algorithm only lets conflicted events into the result after
// they pass the authorisation rules, applied in a deterministic order (power events first,
// in reverse topological power order; then the rest in mainline order), starting from the
// state every branch agrees on.
//
// Pure: no I/O, no clock, no randomness; the caller provides the events through a lookup
// (the lookup must return only events that were not rejected; an event it does not know
// is left out of auth chains and of the result). Safe to call from any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "matrix/events.h"

namespace hearth::matrix {

using StateKey = std::pair<std::string, std::string>;  // (type, state_key)
using StateMap = std::map<StateKey, std::string>;      // -> event id

// The PDU of an event id, or nullptr if unknown (or rejected).
using EventLookup = std::function<const JsonValue*(std::string_view event_id)>;

struct StateResLimits {
  // Upper bound on the events visited while walking auth chains; past it the resolution
  // fails with Errc::resource_exhausted instead of doing unbounded work for a peer.
  std::size_t max_events = 200000;
};

// The (type, state_key) pairs the auth rules read for `event` ("Auth events selection"):
// create, power levels, the sender's member event, and for member events the target's
// member event, the join rules (join/invite/knock) and the authorising user's member event
// (restricted joins).
std::vector<StateKey> auth_types_for(const JsonValue& event);

// The ids in the auth chains of `event_ids` (the auth events, their auth events, ...),
// not including `event_ids` themselves unless reached through another's auth chain.
Result<std::set<std::string>> auth_chain(const std::vector<std::string>& event_ids, const EventLookup& lookup,
                                         const StateResLimits& limits = {});

// Resolves `state_sets` (each the state of one branch). The result does not depend on the
// order of `state_sets`; a single state set is returned unchanged; (type, state_key) pairs
// on which all sets agree are kept as they are. Errc::invalid_argument when a state set
// names an event the lookup does not know or whose type/state_key differs from its key.
Result<StateMap> resolve_state_v2(const std::vector<StateMap>& state_sets, RoomVersion version,
                                  const EventLookup& lookup, const StateResLimits& limits = {});

// Whether the event is a "power event": power levels, join rules, or a member event that
// kicks or bans someone else.
bool is_power_event(const JsonValue& event);

}  // namespace hearth::matrix
