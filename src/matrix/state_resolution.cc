#include "matrix/state_resolution.h"

#include <algorithm>
#include <cstdint>
#include <queue>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>

#include "matrix/auth_rules.h"

namespace hearth::matrix {

namespace {

std::vector<std::string> auth_event_ids(const JsonValue& event) {
  std::vector<std::string> out;
  const JsonValue* a = event.get("auth_events");
  if (a && a->is_array())
    for (const auto& id : a->items())
      if (id.is_string()) out.push_back(id.as_string());
  return out;
}

std::int64_t ts_of(const JsonValue& event) {
  const JsonValue* t = event.get("origin_server_ts");
  return t && t->is_int() ? t->as_int() : 0;
}

// Auth events of `event` known to the lookup, keyed by (type, state_key).
std::map<StateKey, const JsonValue*, std::less<>> auth_state_of(const JsonValue& event, const EventLookup& lookup) {
  std::map<StateKey, const JsonValue*, std::less<>> m;
  for (const auto& id : auth_event_ids(event))
    if (const JsonValue* a = lookup(id); a && a->get("state_key") && a->get("state_key")->is_string())
      m[{std::string(a->string_at("type")), a->get("state_key")->as_string()}] = a;
  return m;
}

// The sender's power level as the event's own auth events define it.
std::int64_t sender_power(const JsonValue& event, RoomVersion version, const EventLookup& lookup) {
  auto auth = auth_state_of(event, lookup);
  StateLookup state = [&auth](std::string_view type, std::string_view key) -> const JsonValue* {
    auto it = auth.find(StateKey(std::string(type), std::string(key)));
    return it == auth.end() ? nullptr : it->second;
  };
  return power_levels_from(state, version).user_level(event.string_at("sender"));
}

// The event's m.room.power_levels auth event id, or "".
std::string power_levels_auth_event(const JsonValue& event, const EventLookup& lookup) {
  for (const auto& id : auth_event_ids(event))
    if (const JsonValue* a = lookup(id); a && a->string_at("type") == "m.room.power_levels") return id;
  return {};
}

struct Resolver {
  RoomVersion version;
  const EventLookup& lookup;
  const StateResLimits& limits;

  // Kahn's algorithm over the auth-event edges inside `events`, always taking the smallest
  // ready event by (-sender power, origin_server_ts, event_id): parents before children.
  std::vector<std::string> reverse_topological_power_order(const std::set<std::string>& events) const {
    using Key = std::tuple<std::int64_t, std::int64_t, std::string>;
    std::unordered_map<std::string, std::vector<std::string>> children;
    std::unordered_map<std::string, std::size_t> pending;  // auth parents inside the set not yet output
    std::unordered_map<std::string, Key> key;
    for (const auto& id : events) {
      const JsonValue* e = lookup(id);
      key[id] = Key(-sender_power(*e, version, lookup), ts_of(*e), id);
      std::size_t n = 0;
      for (const auto& parent : auth_event_ids(*e))
        if (parent != id && events.count(parent)) {
          children[parent].push_back(id);
          ++n;
        }
      pending[id] = n;
    }
    std::priority_queue<Key, std::vector<Key>, std::greater<>> ready;
    for (const auto& [id, n] : pending)
      if (n == 0) ready.push(key[id]);
    std::vector<std::string> out;
    out.reserve(events.size());
    while (!ready.empty()) {
      Key k = ready.top();
      ready.pop();
      const std::string& id = std::get<2>(k);
      out.push_back(id);
      for (const auto& c : children[id])
        if (--pending[c] == 0) ready.push(key[c]);
    }
    // A cycle in auth events (only a forged graph has one) leaves events out: they are
    // not authorised by anything and stay out of the result.
    return out;
  }

  // The mainline of the power levels event `pl` (oldest first), via their own PL auth events.
  std::vector<std::string> mainline(const std::string& pl) const {
    std::vector<std::string> line;
    std::set<std::string> seen;
    std::string cur = pl;
    while (!cur.empty() && seen.insert(cur).second && seen.size() <= limits.max_events) {
      const JsonValue* e = lookup(cur);
      if (!e) break;
      line.push_back(cur);
      cur = power_levels_auth_event(*e, lookup);
    }
    std::reverse(line.begin(), line.end());
    return line;
  }

  std::vector<std::string> mainline_order(const std::vector<std::string>& events, const std::string& resolved_pl) const {
    std::unordered_map<std::string, std::size_t> position;  // 1-based; 0: no mainline event reached
    auto line = mainline(resolved_pl);
    for (std::size_t i = 0; i < line.size(); ++i) position[line[i]] = i + 1;
    using Key = std::tuple<std::size_t, std::int64_t, std::string>;
    std::vector<Key> keys;
    for (const auto& id : events) {
      std::size_t depth = 0;
      std::string cur = id;
      std::set<std::string> seen;
      while (!cur.empty() && seen.insert(cur).second) {
        if (auto it = position.find(cur); it != position.end()) {
          depth = it->second;
          break;
        }
        const JsonValue* e = lookup(cur);
        if (!e) break;
        cur = power_levels_auth_event(*e, lookup);
      }
      keys.emplace_back(depth, ts_of(*lookup(id)), id);
    }
    std::sort(keys.begin(), keys.end());
    std::vector<std::string> out;
    for (auto& k : keys) out.push_back(std::move(std::get<2>(k)));
    return out;
  }

  // Applies the events in order, each checked against its auth events overridden by the
  // partial resolved state for the (type, state_key) pairs the auth rules read.
  void iterative_auth_checks(const std::vector<std::string>& events, StateMap& partial) const {
    for (const auto& id : events) {
      const JsonValue* e = lookup(id);
      const JsonValue* sk = e ? e->get("state_key") : nullptr;
      if (!sk || !sk->is_string()) continue;
      auto auth = auth_state_of(*e, lookup);
      for (auto& key : auth_types_for(*e)) {
        auto it = partial.find(key);
        if (it == partial.end()) continue;
        if (const JsonValue* p = lookup(it->second)) auth[key] = p;
      }
      StateLookup state = [&auth](std::string_view type, std::string_view key) -> const JsonValue* {
        auto it = auth.find(StateKey(std::string(type), std::string(key)));
        return it == auth.end() ? nullptr : it->second;
      };
      if (check_event_auth(*e, version, state)) partial[{std::string(e->string_at("type")), sk->as_string()}] = id;
    }
  }
};

}  // namespace

bool is_power_event(const JsonValue& event) {
  const JsonValue* sk = event.get("state_key");
  if (!sk || !sk->is_string()) return false;
  std::string_view type = event.string_at("type");
  if (type == "m.room.power_levels" || type == "m.room.join_rules") return sk->as_string().empty();
  if (type == "m.room.member") {
    const JsonValue* c = event.get("content");
    std::string_view m = c ? c->string_at("membership") : std::string_view();
    return (m == "leave" || m == "ban") && sk->as_string() != event.string_at("sender");
  }
  return false;
}

std::vector<StateKey> auth_types_for(const JsonValue& event) {
  std::vector<StateKey> out{{"m.room.create", ""}, {"m.room.power_levels", ""}};
  std::string type(event.string_at("type"));
  if (type == "m.room.create") return {};
  out.emplace_back("m.room.member", std::string(event.string_at("sender")));
  if (type == "m.room.member") {
    const JsonValue* sk = event.get("state_key");
    const JsonValue* c = event.get("content");
    if (sk && sk->is_string()) out.emplace_back("m.room.member", sk->as_string());
    std::string_view m = c ? c->string_at("membership") : std::string_view();
    if (m == "join" || m == "invite" || m == "knock") out.emplace_back("m.room.join_rules", "");
    if (m == "invite" && c) {
      const JsonValue* tpi = c->get("third_party_invite");
      const JsonValue* sig = tpi ? tpi->get("signed") : nullptr;
      if (sig && sig->get("token") && sig->get("token")->is_string())
        out.emplace_back("m.room.third_party_invite", sig->get("token")->as_string());
    }
    if (m == "join" && c)
      if (const JsonValue* via = c->get("join_authorised_via_users_server"); via && via->is_string())
        out.emplace_back("m.room.member", via->as_string());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<std::set<std::string>> auth_chain(const std::vector<std::string>& event_ids, const EventLookup& lookup,
                                         const StateResLimits& limits) {
  std::set<std::string> chain;
  std::vector<std::string> todo;
  for (const auto& id : event_ids)
    if (const JsonValue* e = lookup(id))
      for (auto& a : auth_event_ids(*e)) todo.push_back(std::move(a));
  while (!todo.empty()) {
    std::string id = std::move(todo.back());
    todo.pop_back();
    const JsonValue* e = lookup(id);
    if (!e || !chain.insert(id).second) continue;
    if (chain.size() > limits.max_events) return fail(Errc::resource_exhausted, "auth chain too long");
    for (auto& a : auth_event_ids(*e)) todo.push_back(std::move(a));
  }
  return chain;
}

Result<StateMap> resolve_state_v2(const std::vector<StateMap>& state_sets, RoomVersion version,
                                  const EventLookup& lookup, const StateResLimits& limits) {
  // Every state set entry must be a known event of that (type, state_key).
  for (const auto& set : state_sets)
    for (const auto& [key, id] : set) {
      const JsonValue* e = lookup(id);
      const JsonValue* sk = e ? e->get("state_key") : nullptr;
      if (!e || !sk || !sk->is_string() || e->string_at("type") != key.first || sk->as_string() != key.second)
        return fail(Errc::invalid_argument, fmt::format("state set names unknown or mismatched event {}", id));
    }
  if (state_sets.empty()) return StateMap{};
  if (state_sets.size() == 1) return state_sets[0];

  // 1. Unconflicted: the same event in every set; conflicted: everything else.
  StateMap unconflicted;
  std::set<std::string> conflicted;
  std::set<StateKey> keys;
  for (const auto& set : state_sets)
    for (const auto& [key, id] : set) keys.insert(key);
  for (const auto& key : keys) {
    std::set<std::string> ids;
    bool everywhere = true;
    for (const auto& set : state_sets) {
      auto it = set.find(key);
      if (it == set.end()) everywhere = false;
      else ids.insert(it->second);
    }
    if (everywhere && ids.size() == 1) unconflicted[key] = *ids.begin();
    else conflicted.insert(ids.begin(), ids.end());
  }
  if (conflicted.empty()) return unconflicted;

  // 2. Auth difference: in some set's full auth chain but not in all of them.
  std::vector<std::set<std::string>> chains;
  for (const auto& set : state_sets) {
    std::vector<std::string> ids;
    for (const auto& [key, id] : set) ids.push_back(id);
    auto chain = auth_chain(ids, lookup, limits);
    if (!chain) return tl::unexpected(chain.error());
    chains.push_back(std::move(*chain));
  }
  std::set<std::string> full = conflicted;
  for (const auto& c : chains)
    for (const auto& id : c) {
      bool in_all = std::all_of(chains.begin(), chains.end(), [&](const auto& o) { return o.count(id) > 0; });
      if (!in_all) full.insert(id);
    }

  Resolver r{version, lookup, limits};
  // 3. Power events of the full conflicted set and their auth chains inside it.
  std::set<std::string> power;
  for (const auto& id : full)
    if (const JsonValue* e = lookup(id); e && is_power_event(*e)) power.insert(id);
  {
    auto chain = auth_chain(std::vector<std::string>(power.begin(), power.end()), lookup, limits);
    if (!chain) return tl::unexpected(chain.error());
    for (const auto& id : *chain)
      if (full.count(id)) power.insert(id);
  }
  StateMap partial = unconflicted;
  r.iterative_auth_checks(r.reverse_topological_power_order(power), partial);
  // 4. Unconflicted state wins over whatever the power events did.
  for (const auto& [key, id] : unconflicted) partial[key] = id;

  // 5. The other events, in mainline order of the resolved power levels.
  std::vector<std::string> rest;
  for (const auto& id : full)
    if (!power.count(id) && lookup(id)) rest.push_back(id);
  auto pl = partial.find(StateKey("m.room.power_levels", ""));
  r.iterative_auth_checks(r.mainline_order(rest, pl == partial.end() ? std::string() : pl->second), partial);
  for (const auto& [key, id] : unconflicted) partial[key] = id;
  return partial;
}

}  // namespace hearth::matrix
