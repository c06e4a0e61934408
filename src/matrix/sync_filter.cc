#include "matrix/sync_filter.h"

#include <algorithm>

namespace hearth::matrix {

bool type_pattern_matches(std::string_view p, std::string_view t) {
  // Greedy with backtracking to the last '*': linear for patterns with one star, bounded
  // by |p|·|t| otherwise.
  std::size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ti;
    } else if (pi < p.size() && p[pi] == t[ti]) {
      ++pi;
      ++ti;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

namespace {

bool any_matches(const std::vector<std::string>& patterns, std::string_view value, bool wildcard) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) {
    return wildcard ? type_pattern_matches(p, value) : p == value;
  });
}

Result<std::optional<std::vector<std::string>>> list_at(const JsonValue& obj, std::string_view key) {
  const JsonValue* v = obj.get(key);
  if (!v || v->is_null()) return std::optional<std::vector<std::string>>();
  if (!v->is_array() || v->items().size() > kMaxFilterListEntries)
    return fail(Errc::invalid_argument, std::string(key) + " must be a list of at most 1000 strings");
  std::vector<std::string> out;
  for (const auto& x : v->items()) {
    if (!x.is_string()) return fail(Errc::invalid_argument, std::string(key) + " must be a list of strings");
    out.push_back(x.as_string());
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

Result<void> parse_event_filter(const JsonValue* v, EventFilter& f) {
  if (!v || v->is_null()) return ok();
  if (!v->is_object()) return fail(Errc::invalid_argument, "filters must be objects");
  if (const JsonValue* l = v->get("limit")) {
    if (!l->is_int() || l->as_int() < 1) return fail(Errc::invalid_argument, "limit must be a positive integer");
    f.limit = static_cast<int>(std::min<std::int64_t>(l->as_int(), 1000));
  }
  for (auto [key, target] : {std::pair{"types", &f.types}, std::pair{"senders", &f.senders}}) {
    auto l = list_at(*v, key);
    if (!l) return tl::unexpected(l.error());
    *target = std::move(*l);
  }
  for (auto [key, target] : {std::pair{"not_types", &f.not_types}, std::pair{"not_senders", &f.not_senders}}) {
    auto l = list_at(*v, key);
    if (!l) return tl::unexpected(l.error());
    if (*l) *target = std::move(**l);
  }
  return ok();
}

Result<void> parse_room_event_filter(const JsonValue* v, RoomEventFilter& f) {
  if (auto r = parse_event_filter(v, f); !r) return r;
  if (!v || !v->is_object()) return ok();
  for (auto [key, target] : {std::pair{"lazy_load_members", &f.lazy_load_members},
                             std::pair{"include_redundant_members", &f.include_redundant_members}})
    if (const JsonValue* b = v->get(key)) {
      if (!b->is_bool()) return fail(Errc::invalid_argument, std::string(key) + " must be a boolean");
      *target = b->as_bool();
    }
  return ok();
}

}  // namespace

bool EventFilter::allows(std::string_view type, std::string_view sender) const {
  if (any_matches(not_types, type, true)) return false;
  if (types && !any_matches(*types, type, true)) return false;
  if (!sender.empty()) {
    if (any_matches(not_senders, sender, false)) return false;
    if (senders && !any_matches(*senders, sender, false)) return false;
  }
  return true;
}

bool SyncFilter::allows_room(std::string_view room_id) const {
  if (any_matches(not_rooms, room_id, false)) return false;
  return !rooms || any_matches(*rooms, room_id, false);
}

Result<SyncFilter> SyncFilter::parse(const JsonValue& filter) {
  SyncFilter f;
  if (!filter.is_object()) return fail(Errc::invalid_argument, "a filter must be an object");
  if (auto r = parse_event_filter(filter.get("presence"), f.presence); !r) return tl::unexpected(r.error());
  if (auto r = parse_event_filter(filter.get("account_data"), f.account_data); !r) return tl::unexpected(r.error());
  const JsonValue* room = filter.get("room");
  if (!room || room->is_null()) return f;
  if (!room->is_object()) return fail(Errc::invalid_argument, "room must be an object");
  auto rooms = list_at(*room, "rooms");
  if (!rooms) return tl::unexpected(rooms.error());
  f.rooms = std::move(*rooms);
  auto not_rooms = list_at(*room, "not_rooms");
  if (!not_rooms) return tl::unexpected(not_rooms.error());
  if (*not_rooms) f.not_rooms = std::move(**not_rooms);
  if (const JsonValue* b = room->get("include_leave"); b && b->is_bool()) f.include_leave = b->as_bool();
  for (auto [key, target] : {std::pair{"timeline", &f.timeline}, std::pair{"state", &f.state},
                             std::pair{"ephemeral", &f.ephemeral}, std::pair{"account_data", &f.room_account_data}})
    if (auto r = parse_room_event_filter(room->get(key), *target); !r) return tl::unexpected(r.error());
  return f;
}

}  // namespace hearth::matrix
