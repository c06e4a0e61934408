#include "matrix/room_upgrade.h"

#include <algorithm>
#include <array>

namespace hearth::matrix {

namespace {

std::int64_t int_at(const JsonValue& o, std::string_view key, std::int64_t fallback) {
  const JsonValue* v = o.get(key);
  return v && v->is_int() ? v->as_int() : fallback;
}

}  // namespace

JsonValue upgraded_create_content(const JsonValue& old_create, RoomVersion new_version, std::string_view new_version_id,
                                  const std::string& old_room_id, const std::string& last_event_id,
                                  const std::string& creator) {
  JsonValue c = old_create.is_object() ? old_create : JsonValue::object();
  c.erase("creator");
  c.erase("predecessor");
  c.set("room_version", JsonValue::string(std::string(new_version_id)));
  JsonValue predecessor = JsonValue::object();
  predecessor.set("room_id", JsonValue::string(old_room_id));
  predecessor.set("event_id", JsonValue::string(last_event_id));
  c.set("predecessor", std::move(predecessor));
  if (new_version == RoomVersion::v10) c.set("creator", JsonValue::string(creator));
  return c;
}

std::vector<StateEventContent> transferable_state(const std::vector<StateEventContent>& old_state) {
  static constexpr std::array<std::string_view, 9> kTypes = {
      "m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
      "m.room.guest_access", "m.room.history_visibility", "m.room.join_rules", "m.room.canonical_alias"};
  std::vector<StateEventContent> out;
  for (auto type : kTypes)
    for (const auto& s : old_state)
      if (s.type == type && s.state_key.empty() && s.content.is_object() && !s.content.members().empty())
        out.push_back(s);
  for (const auto& s : old_state)
    if (s.type == "m.room.member" && s.content.string_at("membership") == "ban") {
      JsonValue ban = JsonValue::object();
      ban.set("membership", JsonValue::string("ban"));
      if (const JsonValue* reason = s.content.get("reason"); reason && reason->is_string()) ban.set("reason", *reason);
      out.push_back({s.type, s.state_key, std::move(ban)});
    }
  return out;
}

std::optional<JsonValue> bootstrap_power_levels(const JsonValue& old_levels, const std::string& user) {
  std::int64_t needed = std::max<std::int64_t>(int_at(old_levels, "state_default", 50), int_at(old_levels, "ban", 50));
  for (auto key : {"events_default", "kick", "redact", "invite"}) needed = std::max(needed, int_at(old_levels, key, 0));
  if (const JsonValue* events = old_levels.get("events"); events && events->is_object())
    for (const auto& [type, level] : events->members())
      if (level.is_int()) needed = std::max(needed, level.as_int());
  std::int64_t mine = int_at(old_levels, "users_default", 0);
  if (const JsonValue* users = old_levels.get("users"); users && users->is_object()) mine = int_at(*users, user, mine);
  if (mine >= needed) return std::nullopt;
  JsonValue raised = old_levels;
  JsonValue users = old_levels.get("users") && old_levels.get("users")->is_object() ? *old_levels.get("users")
                                                                                    : JsonValue::object();
  users.set(user, JsonValue::integer(needed));
  raised.set("users", std::move(users));
  return raised;
}

JsonValue restricted_power_levels(const JsonValue& old_levels) {
  JsonValue pl = old_levels.is_object() ? old_levels : JsonValue::object();
  std::int64_t floor = std::max<std::int64_t>(50, int_at(pl, "users_default", 0) + 1);
  pl.set("events_default", JsonValue::integer(std::max(floor, int_at(pl, "events_default", 0))));
  pl.set("invite", JsonValue::integer(std::max(floor, int_at(pl, "invite", 0))));
  return pl;
}

}  // namespace hearth::matrix
