#include "matrix/auth_rules.h"

#include <fmt/format.h>

namespace hearth::matrix {

std::string_view server_of(std::string_view id) {
  auto colon = id.find(':');
  return colon == std::string_view::npos ? std::string_view() : id.substr(colon + 1);
}

namespace {

tl::unexpected<Error> deny(std::string why) { return fail(Errc::permission_denied, std::move(why)); }

const JsonValue* content_of(const JsonValue* event) {
  if (!event) return nullptr;
  const JsonValue* c = event->get("content");
  return (c && c->is_object()) ? c : nullptr;
}

std::int64_t int_or(const JsonValue* obj, std::string_view key, std::int64_t fallback) {
  const JsonValue* v = obj ? obj->get(key) : nullptr;
  return (v && v->is_int()) ? v->as_int() : fallback;
}

constexpr std::string_view kNamedLevels[] = {"users_default", "events_default", "state_default", "ban",
                                             "redact",        "kick",           "invite"};

}  // namespace

std::int64_t PowerLevels::user_level(std::string_view user_id) const {
  if (!content) return user_id == creator ? 100 : 0;
  const JsonValue* users = content->get("users");
  if (users && users->is_object())
    if (const JsonValue* v = users->get(user_id); v && v->is_int()) return v->as_int();
  return int_or(content, "users_default", 0);
}

std::int64_t PowerLevels::event_level(std::string_view type, bool is_state) const {
  if (content) {
    const JsonValue* events = content->get("events");
    if (events && events->is_object())
      if (const JsonValue* v = events->get(type); v && v->is_int()) return v->as_int();
  }
  if (is_state) return content ? int_or(content, "state_default", 50) : 0;
  return int_or(content, "events_default", 0);
}

std::int64_t PowerLevels::named(std::string_view key) const {
  std::int64_t fallback = (key == "invite" || key == "users_default" || key == "events_default") ? 0 : 50;
  if (key == "state_default" && !content) fallback = 0;
  return int_or(content, key, fallback);
}

PowerLevels power_levels_from(const StateLookup& state, RoomVersion version) {
  PowerLevels pl;
  pl.content = content_of(state("m.room.power_levels", ""));
  const JsonValue* create = state("m.room.create", "");
  if (create) {
    if (version == RoomVersion::v11) {
      pl.creator = std::string(create->string_at("sender"));
    } else if (const JsonValue* c = content_of(create)) {
      pl.creator = std::string(c->string_at("creator"));
    }
  }
  return pl;
}

std::string_view membership_of(const StateLookup& state, std::string_view user_id) {
  const JsonValue* c = content_of(state("m.room.member", user_id));
  std::string_view m = c ? c->string_at("membership") : std::string_view();
  return m.empty() ? std::string_view("leave") : m;
}

namespace {

Result<void> check_power_levels_change(const JsonValue& event, const PowerLevels& current, std::int64_t sender_level) {
  const JsonValue* next = content_of(&event);
  if (!next) return fail(Errc::invalid_argument, "power levels content must be an object");
  // Room versions 10+: every level must be an integer.
  for (auto key : kNamedLevels)
    if (const JsonValue* v = next->get(key); v && !v->is_int()) return deny(fmt::format("{} must be an integer", key));
  for (auto map_key : {"events", "notifications", "users"}) {
    const JsonValue* m = next->get(map_key);
    if (!m) continue;
    if (!m->is_object()) return deny(fmt::format("{} must be an object", map_key));
    for (const auto& [k, v] : m->members()) {
      if (!v.is_int()) return deny(fmt::format("{}.{} must be an integer", map_key, k));
      if (std::string_view(map_key) == "users" && (k.empty() || k[0] != '@' || server_of(k).empty()))
        return deny(fmt::format("users key \"{}\" is not a user id", k));
    }
  }
  if (!current.content) return ok();  // the room's first power levels event
  const JsonValue* prev = current.content;
  auto changed_within_reach = [&](const JsonValue* old_v, const JsonValue* new_v, std::string_view what) -> Result<void> {
    bool has_old = old_v && old_v->is_int(), has_new = new_v && new_v->is_int();
    if (has_old == has_new && (!has_old || old_v->as_int() == new_v->as_int())) return ok();
    if (has_old && old_v->as_int() > sender_level) return deny(fmt::format("cannot change {} above own level", what));
    if (has_new && new_v->as_int() > sender_level) return deny(fmt::format("cannot set {} above own level", what));
    return ok();
  };
  for (auto key : kNamedLevels)
    if (auto r = changed_within_reach(prev->get(key), next->get(key), key); !r) return r;
  for (std::string_view map_key : {"events", "notifications"}) {
    const JsonValue* a = prev->get(map_key);
    const JsonValue* b = next->get(map_key);
    auto visit = [&](const JsonValue* m) -> Result<void> {
      if (!m || !m->is_object()) return ok();
      for (const auto& [k, unused] : m->members()) {
        auto r = changed_within_reach(a && a->is_object() ? a->get(k) : nullptr, b && b->is_object() ? b->get(k) : nullptr,
                                      fmt::format("{}.{}", map_key, k));
        if (!r) return r;
      }
      return ok();
    };
    if (auto r = visit(a); !r) return r;
    if (auto r = visit(b); !r) return r;
  }
  const JsonValue* ua = prev->get("users");
  const JsonValue* ub = next->get("users");
  std::string_view sender = event.string_at("sender");
  auto visit_users = [&](const JsonValue* m) -> Result<void> {
    if (!m || !m->is_object()) return ok();
    for (const auto& [user, unused] : m->members()) {
      const JsonValue* old_v = ua && ua->is_object() ? ua->get(user) : nullptr;
      const JsonValue* new_v = ub && ub->is_object() ? ub->get(user) : nullptr;
      bool has_old = old_v && old_v->is_int(), has_new = new_v && new_v->is_int();
      if (has_old == has_new && (!has_old || old_v->as_int() == new_v->as_int())) continue;
      if (auto r = changed_within_reach(old_v, new_v, "a user's level"); !r) return r;
      if (user != sender && has_old && old_v->as_int() >= sender_level)
        return deny("cannot change the level of a user at or above one's own");
    }
    return ok();
  };
  if (auto r = visit_users(ua); !r) return r;
  return visit_users(ub);
}

Result<void> check_member(const JsonValue& event, RoomVersion version, const StateLookup& state,
                          const PowerLevels& pl) {
  const JsonValue* content = content_of(&event);
  const JsonValue* sk = event.get("state_key");
  std::string_view membership = content ? content->string_at("membership") : std::string_view();
  if (!sk || !sk->is_string() || membership.empty()) return deny("member event without state_key or membership");
  if (content->get("third_party_invite")) return deny("third-party invites are not supported");
  std::string_view target = sk->as_string();
  std::string_view sender = event.string_at("sender");
  std::string_view sender_membership = membership_of(state, sender);
  std::string_view target_membership = membership_of(state, target);
  const JsonValue* jr = content_of(state("m.room.join_rules", ""));
  std::string_view join_rule = jr ? jr->string_at("join_rule") : std::string_view("invite");
  if (join_rule.empty()) join_rule = "invite";
  std::int64_t sender_level = pl.user_level(sender);
  std::int64_t target_level = pl.user_level(target);

  if (membership == "join") {
    // The creator's own join right after the create event.
    const JsonValue* prev = event.get("prev_events");
    const JsonValue* create = state("m.room.create", "");
    if (prev && prev->is_array() && prev->items().size() == 1 && create && pl.creator == target &&
        prev->items()[0].is_string() && state("m.room.member", target) == nullptr &&
        !state("m.room.power_levels", "") && !state("m.room.join_rules", "")) {
      // (the only prior event is the create event)
      if (create->string_at("event_id").empty() || prev->items()[0].as_string() == create->string_at("event_id"))
        return ok();
    }
    if (sender != target) return deny("cannot join on behalf of someone else");
    if (target_membership == "ban") return deny("banned from the room");
    if (join_rule == "public") return ok();
    if (join_rule == "invite" || join_rule == "knock") {
      if (target_membership == "join" || target_membership == "invite") return ok();
      return deny("the room is invite-only");
    }
    if (join_rule == "restricted" || join_rule == "knock_restricted") {
      if (target_membership == "join" || target_membership == "invite") return ok();
      const JsonValue* via = content->get("join_authorised_via_users_server");
      if (!via || !via->is_string()) return deny("a restricted join needs join_authorised_via_users_server");
      if (membership_of(state, via->as_string()) != "join") return deny("the authorising user is not in the room");
      if (pl.user_level(via->as_string()) < pl.named("invite")) return deny("the authorising user cannot invite");
      return ok();
    }
    return deny("unknown join rule");
  }
  if (membership == "invite") {
    if (sender_membership != "join") return deny("the inviter is not in the room");
    if (target_membership == "ban" || target_membership == "join") return deny("the invitee is banned or already joined");
    if (sender_level >= pl.named("invite")) return ok();
    return deny("not allowed to invite");
  }
  if (membership == "leave") {
    if (sender == target) {
      if (target_membership == "invite" || target_membership == "join" || target_membership == "knock") return ok();
      return deny("not in the room");
    }
    if (sender_membership != "join") return deny("not in the room");
    if (target_membership == "ban" && sender_level < pl.named("ban")) return deny("not allowed to unban");
    if (sender_level >= pl.named("kick") && target_level < sender_level) return ok();
    return deny("not allowed to kick");
  }
  if (membership == "ban") {
    if (sender_membership != "join") return deny("not in the room");
    if (sender_level >= pl.named("ban") && target_level < sender_level) return ok();
    return deny("not allowed to ban");
  }
  if (membership == "knock") {
    if (join_rule != "knock" && join_rule != "knock_restricted") return deny("the room does not accept knocks");
    if (sender != target) return deny("cannot knock on behalf of someone else");
    if (target_membership == "ban" || target_membership == "invite" || target_membership == "join")
      return deny("cannot knock now");
    return ok();
  }
  (void)version;
  return deny("unknown membership");
}

}  // namespace

Result<void> check_event_auth(const JsonValue& event, RoomVersion version, const StateLookup& state) {
  std::string_view type = event.string_at("type");
  std::string_view sender = event.string_at("sender");
  const JsonValue* content = content_of(&event);
  if (type.empty() || sender.empty() || !content) return fail(Errc::invalid_argument, "event lacks type, sender or content");
  const JsonValue* sk = event.get("state_key");
  bool is_state = sk != nullptr;
  if (is_state && !sk->is_string()) return fail(Errc::invalid_argument, "state_key must be a string");

  if (type == "m.room.create") {
    const JsonValue* prev = event.get("prev_events");
    if (prev && prev->is_array() && !prev->items().empty()) return deny("a create event has no previous events");
    if (server_of(event.string_at("room_id")) != server_of(sender)) return deny("room id and sender servers differ");
    if (const JsonValue* rv = content->get("room_version"); rv && (!rv->is_string() || !parse_room_version(rv->as_string())))
      return deny("unknown room version");
    if (version == RoomVersion::v10 && content->string_at("creator").empty()) return deny("create event lacks creator");
    if (state("m.room.create", "")) return deny("the room already exists");
    return ok();
  }
  if (!state("m.room.create", "")) return deny("no create event in the room");

  PowerLevels pl = power_levels_from(state, version);
  if (type == "m.room.member") return check_member(event, version, state, pl);

  if (membership_of(state, sender) != "join") return deny("the sender is not in the room");
  std::int64_t sender_level = pl.user_level(sender);
  if (pl.event_level(type, is_state) > sender_level) return deny(fmt::format("not allowed to send {}", type));
  if (is_state && !sk->as_string().empty() && sk->as_string()[0] == '@' && sk->as_string() != sender)
    return deny("a state key naming another user");
  if (type == "m.room.power_levels") return check_power_levels_change(event, pl, sender_level);
  return ok();
}

}  // namespace hearth::matrix
