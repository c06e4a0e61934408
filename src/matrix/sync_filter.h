// Filters for /sync (spec: "Filtering"): what a client asked for, stored by
// POST /user/{userId}/filter or given inline, parsed once per request into plain values.
//
// Event type patterns may use '*' as a wildcard (case-sensitive); absent lists mean "all".
// Pure values, no I/O; safe on any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"

namespace hearth::matrix {

inline constexpr std::size_t kMaxFilterListEntries = 1000;

struct EventFilter {
  int limit = 0;  // 0: not given
  std::optional<std::vector<std::string>> types, senders;
  std::vector<std::string> not_types, not_senders;
  bool allows(std::string_view type, std::string_view sender) const;
  bool allows_type(std::string_view type) const { return allows(type, {}); }
  bool allows_all() const { return !types && !senders && not_types.empty() && not_senders.empty(); }
};

struct RoomEventFilter : EventFilter {
  bool lazy_load_members = false;
  bool include_redundant_members = false;
};

struct SyncFilter {
  EventFilter presence, account_data;
  std::optional<std::vector<std::string>> rooms;
  std::vector<std::string> not_rooms;
  bool include_leave = false;
  RoomEventFilter timeline, state, ephemeral, room_account_data;

  bool allows_room(std::string_view room_id) const;
  // invalid_argument when a field has the wrong type or a list is longer than
  // kMaxFilterListEntries.
  static Result<SyncFilter> parse(const JsonValue& filter);
};

// '*' matches any sequence (including none); everything else literally.
bool type_pattern_matches(std::string_view pattern, std::string_view type);

}  // namespace hearth::matrix
