// GET /sync: initial and incremental sync with long-polling (see matrix.h).
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/json.h"
#include "matrix/relations.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

void apply_event_filter(const EventFilter& f, std::vector<StoredEvent>& events) {
  std::erase_if(events, [&](const StoredEvent& e) { return !f.allows(e.type, e.sender); });
}

// At most this many events after the read receipt are evaluated for unread counts.
constexpr int kMaxUnreadScan = 500;

std::string stripped(const StoredEvent& e) {
  auto v = parse_json(e.client_json, {std::size_t{1} << 24, 128});
  if (!v) return "{}";
  JsonValue out = JsonValue::object();
  for (auto key : {"content", "sender", "state_key", "type"})
    if (const JsonValue* m = v->get(key)) out.set(key, *m);
  return canonical_json(out);
}

}  // namespace

bool parse_since(const std::string& since, SyncParams& p) {
  if (since.empty()) return true;
  constexpr int kParts = 7;
  std::int64_t parts[kParts] = {0, 0, 0, 0, 0, 0, 0};
  int part = 0;
  bool okay = since.size() >= 2 && since[0] == 's' && since.back() != '_';
  for (std::size_t i = 1; okay && i < since.size(); ++i) {
    if (since[i] == '_' && part < kParts - 1 && since[i - 1] != '_' && i > 1) {
      ++part;
      continue;
    }
    okay = since[i] >= '0' && since[i] <= '9' && parts[part] < kMaxSafeInteger / 10;
    parts[part] = parts[part] * 10 + (since[i] - '0');
  }
  if (!okay) return false;
  p.since = parts[0];
  p.since_account_data = parts[1];
  p.since_receipts = parts[2];
  p.since_typing = parts[3];
  p.since_to_device = parts[4];
  p.since_device_lists = parts[5];
  p.since_presence = parts[6];
  return true;
}

std::optional<ApiResult<std::string>> MatrixService::Impl::sync(Ctx& ctx) {
  SyncParams p;
  p.limit = options.default_timeline_limit;
  if (std::string since = ctx.query_param("since"); !since.empty() && !parse_since(since, p))
    return api_error(400, "M_INVALID_PARAM", "Invalid since token");
  // The client saw every to-device message up to its token: they can go.
  if (p.since)
    if (auto a = ack_to_device(ctx.user_id, ctx.device_id, p.since_to_device); !a) return tl::unexpected(to_api_error(a.error()));
  if (std::string t = ctx.query_param("timeout"); !t.empty())
    p.timeout_ms = std::clamp(std::atoi(t.c_str()), 0, options.max_sync_timeout_ms);
  p.full_state = ctx.query_param("full_state") == "true";
  // An explicit set_presence updates the presence (only a change wakes anyone). Without
  // it the presence stays as set: hearth has no idle timer to mark a user offline again.
  if (std::string sp = ctx.query_param("set_presence"); sp == "online" || sp == "unavailable" || sp == "offline")
    set_presence(ctx.user_id, sp, std::nullopt);
  if (std::string f = ctx.query_param("filter"); !f.empty()) {
    std::optional<JsonValue> filter;
    if (f[0] == '{') {
      auto inline_filter = parse_json(f, {65536, 16});
      if (!inline_filter) return api_error(400, "M_BAD_JSON", "Invalid filter");
      filter = std::move(*inline_filter);
    } else {
      auto json = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
        auto row = tx.query_one("SELECT json FROM matrix_filters WHERE filter_id = ? AND user_id = ?",
                                {std::atoll(f.c_str()), ctx.user_id});
        if (!row) return tl::unexpected(row.error());
        if (!*row) return std::optional<std::string>();
        return std::optional<std::string>(std::string((*row)->text(0)));
      });
      if (!json) return api_error(500, "M_UNKNOWN", "Cannot read the filter");
      if (!*json) return api_error(400, "M_INVALID_PARAM", "Unknown filter id");
      if (auto stored = parse_json(**json); stored) filter = std::move(*stored);
    }
    if (filter) {
      auto parsed = SyncFilter::parse(*filter);
      if (!parsed) return api_error(400, "M_BAD_JSON", parsed.error().message);
      p.filter = std::move(*parsed);
      if (p.filter.timeline.limit > 0) p.limit = p.filter.timeline.limit;
    }
  }
  p.limit = std::min(p.limit, options.max_timeline_limit);

  bool empty = false;
  std::vector<std::string> keys;
  std::uint64_t seen = hub.generation();  // before the snapshot: later commits re-run or wake us
  auto result = run_sync(ctx.user_id, ctx.device_id, p, &empty, &keys);
  if (!result || !empty || !p.since || p.timeout_ms == 0) return result;

  // Nothing new: park until an event for one of our rooms (or our user) is committed.
  auto w = std::make_shared<SyncHub::Waiter>();
  w->id = hub.next_id();
  w->user_id = ctx.user_id;
  w->device_id = ctx.device_id;
  w->params = p;
  w->params.timeout_ms = 0;
  w->respond = std::move(ctx.respond);
  keys.push_back(ctx.user_id);
  w->keys = std::move(keys);
  if (!hub.park(w, seen)) {  // something arrived while we were reading
    finish_waiter(w);
    return std::nullopt;
  }
  std::weak_ptr<Impl> weak = weak_from_this();
  std::uint64_t id = w->id;
  run_after(std::chrono::milliseconds(p.timeout_ms), [weak, id] {
    auto self = weak.lock();
    if (!self) return;
    auto waiter = self->hub.take(id);
    if (!waiter) return;  // already woken
    if (!self->offload([self, waiter] { self->finish_waiter(waiter); }))
      waiter->respond(error_response({503, "M_UNKNOWN", "The server is busy; try again later"}));
  });
  return std::nullopt;
}

void MatrixService::Impl::finish_waiter(std::shared_ptr<SyncHub::Waiter> w) {
  auto r = run_sync(w->user_id, w->device_id, w->params, nullptr, nullptr);
  if (r) {
    w->respond(json_response(200, std::move(*r)));
  } else {
    w->respond(error_response(r.error()));
  }
}

ApiResult<std::string> MatrixService::Impl::run_sync(const std::string& user_id, const std::string& device_id,
                                                     const SyncParams& p, bool* empty_out,
                                                     std::vector<std::string>* keys_out) {
  std::int64_t now = clock.now_ms();
  bool initial = !p.since || p.full_state;
  std::int64_t since = p.since.value_or(0);
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto max = rooms.max_stream(tx);
    if (!max) return tl::unexpected(max.error());
    auto memberships = rooms.memberships_of(tx, user_id);
    if (!memberships) return tl::unexpected(memberships.error());
    // Account data newer than the token: global ("" room) and per room.
    std::int64_t ad_since = initial ? -1 : p.since_account_data;
    std::int64_t ad_max = 0;
    {
      auto row = tx.query_one("SELECT value FROM matrix_positions WHERE name = 'account_data'");
      if (!row) return tl::unexpected(row.error());
      if (*row) ad_max = (*row)->integer(0);
    }
    std::map<std::string, std::string> account_data;  // room id ("" = global) -> events
    bool has_push_rules = false;
    const SyncFilter& filter = p.filter;
    auto ad = tx.query("SELECT room_id, type, content FROM matrix_account_data WHERE user_id = ? AND position > ? "
                       "ORDER BY position",
                       {user_id, ad_since}, [&](const store::Row& row) {
                         bool global = row.text(0).empty();
                         if (global && row.text(1) == "m.push_rules") has_push_rules = true;
                         if (!(global ? filter.account_data : filter.room_account_data).allows_type(row.text(1))) return;
                         if (!global && !filter.allows_room(row.text(0))) return;
                         std::string& list = account_data[std::string(row.text(0))];
                         if (!list.empty()) list += ',';
                         list += "{\"type\":" + json_quote(row.text(1)) + ",\"content\":" + std::string(row.text(2)) + "}";
                       });
    if (!ad) return tl::unexpected(ad.error());
    // A user who never changed their push rules still gets the defaults (m.push_rules).
    if (initial && !has_push_rules && filter.account_data.allows_type("m.push_rules")) {
      auto rules = load_push_rules(tx, user_id);
      if (!rules) return tl::unexpected(rules.error());
      std::string& list = account_data[""];
      if (!list.empty()) list += ',';
      list += "{\"type\":\"m.push_rules\",\"content\":" + canonical_json(rules->client_json()) + "}";
    }
    std::optional<PushRuleSet> push_rules;  // loaded for the first room that needs counts
    std::int64_t typing_serial = typing.serial();
    std::int64_t rc_max = 0;
    {
      auto row = tx.query_one("SELECT value FROM matrix_positions WHERE name = 'receipts'");
      if (!row) return tl::unexpected(row.error());
      if (*row) rc_max = (*row)->integer(0);
    }
    std::int64_t rc_since = initial ? -1 : p.since_receipts;
    // The room's ephemeral events (typing, receipts) changed since the token; "" if none.
    auto ephemeral = [&](const std::string& room_id) -> Result<std::string> {
      std::string out;
      auto typers = filter.ephemeral.allows_type("m.typing") ? typing.changed(room_id, initial ? -1 : p.since_typing)
                                                             : std::nullopt;
      if (typers) {
        out += R"({"type":"m.typing","content":{"user_ids":[)";
        for (std::size_t i = 0; i < typers->size(); ++i) out += (i ? "," : "") + json_quote((*typers)[i]);
        out += "]}}";
      }
      std::map<std::string, std::map<std::string, std::string>> by_event;  // event -> type -> users json
      std::set<std::string> listed;  // event, type, user: one receipt each (threaded ones may coincide)
      auto q = tx.query(
          "SELECT user_id, type, event_id, ts, thread_id FROM matrix_receipts WHERE room_id = ? AND serial > ? "
          "AND (type <> 'm.read.private' OR user_id = ?) ORDER BY serial DESC",
          {room_id, rc_since, user_id}, [&](const store::Row& row) {
            if (!listed.insert(fmt::format("{}\n{}\n{}", row.text(2), row.text(1), row.text(0))).second) return;
            std::string& users = by_event[std::string(row.text(2))][std::string(row.text(1))];
            if (!users.empty()) users += ',';
            users += json_quote(row.text(0)) + fmt::format(R"(:{{"ts":{})", row.integer(3));
            if (!row.text(4).empty()) users += ",\"thread_id\":" + json_quote(row.text(4));
            users += '}';
          });
      if (!q) return tl::unexpected(q.error());
      if (!filter.ephemeral.allows_type("m.receipt")) by_event.clear();
      if (!by_event.empty()) {
        if (!out.empty()) out += ',';
        out += R"({"type":"m.receipt","content":{)";
        bool first_event = true;
        for (const auto& [event_id, types] : by_event) {
          out += (first_event ? "" : ",") + json_quote(event_id) + ":{";
          first_event = false;
          bool first_type = true;
          for (const auto& [type, users] : types) {
            out += (first_type ? "" : ",") + json_quote(type) + ":{" + users + "}";
            first_type = false;
          }
          out += "}";
        }
        out += "}}";
      }
      return out;
    };
    auto room_ad = [&](const std::string& room_id) {
      auto it = account_data.find(room_id);
      return "{\"events\":[" + (it == account_data.end() ? std::string() : it->second) + "]}";
    };
    std::string join, invite, leave, knocks;
    auto sep = [](std::string& s) {
      if (!s.empty()) s += ',';
    };
    auto timeline_json = [&](const std::vector<StoredEvent>& events, bool limited, std::int64_t prev) {
      std::string out = "{\"events\":[";
      for (std::size_t i = 0; i < events.size(); ++i)
        out += (i ? "," : "") + render_event(events[i], user_id, device_id, now);
      out += fmt::format("],\"limited\":{},\"prev_batch\":\"s{}\"}}", limited ? "true" : "false", prev);
      return out;
    };
    auto state_json = [&](const std::vector<StoredEvent>& events) {
      std::string out = "{\"events\":[";
      for (std::size_t i = 0; i < events.size(); ++i)
        out += (i ? "," : "") + render_event(events[i], user_id, device_id, now);
      return out + "]}";
    };
    for (const auto& m : *memberships) {
      if (!filter.allows_room(m.room_id)) continue;
      if (m.membership == "join") {
        if (keys_out) keys_out->push_back(m.room_id);
        bool fresh = initial;
        if (!fresh && m.stream > since) {
          // The user's member event changed since the token: a join (fresh: full state)
          // unless it only updated a joined member's profile.
          auto mine = rooms.state_event(tx, m.room_id, "m.room.member", user_id);
          if (!mine) return tl::unexpected(mine.error());
          fresh = true;
          if (*mine && !(*mine)->unsigned_extra.empty()) {
            auto extra = parse_json("{" + (*mine)->unsigned_extra + "}", {std::size_t{1} << 24, 128});
            const JsonValue* prev = extra ? extra->get("prev_content") : nullptr;
            fresh = !(prev && prev->string_at("membership") == "join");
          }
        }
        bool limited = false;
        auto timeline = rooms.timeline(tx, m.room_id, fresh ? 0 : since, *max, p.limit, &limited);
        if (!timeline) return tl::unexpected(timeline.error());
        auto filter = VisibilityFilter::load(tx, m.room_id, user_id);
        if (!filter) return tl::unexpected(filter.error());
        filter->apply(*timeline);
        apply_event_filter(p.filter.timeline, *timeline);
        if (auto b = bundle_aggregations(tx, *timeline, user_id, now); !b) return tl::unexpected(b.error());
        auto eph = ephemeral(m.room_id);
        if (!eph) return tl::unexpected(eph.error());
        if (!fresh && timeline->empty() && !account_data.count(m.room_id) && eph->empty()) continue;
        std::int64_t first = timeline->empty() ? *max + 1 : timeline->front().stream;
        std::vector<StoredEvent> state;
        std::string state_out;
        // A room's whole state before the timeline is the same for every member syncing it
        // at the same room version and timeline start (state events carry no transaction
        // ids): a herd of initial syncs renders it once (incident I15).
        if (fresh && options.coalesce_requests && p.filter.state.allows_all() && !p.filter.state.lazy_load_members) {
          auto depth = tx.query_one("SELECT depth FROM matrix_rooms WHERE room_id = ?", {m.room_id});
          if (!depth) return tl::unexpected(depth.error());
          std::string key = "sync:" + m.room_id + "@" + std::to_string(*depth ? (*depth)->integer(0) : 0) + "@" +
                            std::to_string(first);
          bool computed = false;
          auto shared = full_state.get(key, [&]() -> Result<std::string> {
            sync_state_computed.inc();
            auto s = rooms.current_state(tx, m.room_id, -1, first);
            if (!s) return tl::unexpected(s.error());
            std::string out = "{\"events\":[";
            for (std::size_t i = 0; i < s->size(); ++i) out += (i ? "," : "") + render_event((*s)[i], "", "", now);
            return out + "]}";
          }, &computed);
          if (!shared) return tl::unexpected(shared.error());
          if (!computed) sync_state_shared.inc();
          state_out = **shared;
        } else {
          if (fresh) sync_state_computed.inc();
          if (fresh || limited) {
            auto s = rooms.current_state(tx, m.room_id, fresh ? -1 : since, first, p.filter.state.lazy_load_members);
            if (!s) return tl::unexpected(s.error());
            state = std::move(*s);
          }
          apply_event_filter(p.filter.state, state);
          if (p.filter.state.lazy_load_members) {
            auto lazy = lazy_members(tx, m.room_id, user_id, *timeline, first, state);
            if (!lazy) return tl::unexpected(lazy.error());
          }
          state_out = state_json(state);
        }
        auto counts = unread_counts(tx, m.room_id, user_id, m.stream, *max, push_rules);
        if (!counts) return tl::unexpected(counts.error());
        auto summary = room_summary(tx, m.room_id, user_id);
        if (!summary) return tl::unexpected(summary.error());
        sep(join);
        join += json_quote(m.room_id) + ":{\"timeline\":" + timeline_json(*timeline, limited, first - 1) +
                ",\"state\":" + state_out +
                ",\"ephemeral\":{\"events\":[" + *eph + "]},\"account_data\":" + room_ad(m.room_id) +
                ",\"unread_notifications\":" + *counts + ",\"summary\":" + *summary + "}";
      } else if (m.membership == "invite" || m.membership == "knock") {
        if (!initial && m.stream <= since) continue;
        std::string events;
        for (auto type : {"m.room.create", "m.room.join_rules", "m.room.name", "m.room.canonical_alias",
                          "m.room.avatar", "m.room.encryption", "m.room.topic"}) {
          auto e = rooms.state_event(tx, m.room_id, type, "");
          if (!e) return tl::unexpected(e.error());
          if (*e) events += (events.empty() ? "" : ",") + stripped(**e);
        }
        auto mine = rooms.state_event(tx, m.room_id, "m.room.member", user_id);
        if (!mine) return tl::unexpected(mine.error());
        if (*mine) {
          auto inviter = rooms.state_event(tx, m.room_id, "m.room.member", (*mine)->sender);
          if (!inviter) return tl::unexpected(inviter.error());
          if (*inviter && (*inviter)->sender != user_id) events += (events.empty() ? "" : ",") + stripped(**inviter);
          events += (events.empty() ? "" : ",") + render_event(**mine, user_id, device_id, now);
        }
        bool knock = m.membership == "knock";  // the same stripped state, as knock_state
        std::string& section = knock ? knocks : invite;
        sep(section);
        section += json_quote(m.room_id) + (knock ? ":{\"knock_state\":{\"events\":[" : ":{\"invite_state\":{\"events\":[") +
                   events + "]}}";
      } else if (m.membership == "leave" || m.membership == "ban") {
        if (initial || m.stream <= since) continue;
        bool limited = false;
        auto timeline = rooms.timeline(tx, m.room_id, since, m.stream, p.limit, &limited);
        if (!timeline) return tl::unexpected(timeline.error());
        auto filter = VisibilityFilter::load(tx, m.room_id, user_id);
        if (!filter) return tl::unexpected(filter.error());
        filter->apply(*timeline);
        apply_event_filter(p.filter.timeline, *timeline);
        if (auto b = bundle_aggregations(tx, *timeline, user_id, now); !b) return tl::unexpected(b.error());
        std::int64_t first = timeline->empty() ? m.stream : timeline->front().stream;
        sep(leave);
        leave += json_quote(m.room_id) + ":{\"timeline\":" + timeline_json(*timeline, limited, first - 1) +
                 ",\"state\":{\"events\":[]},\"account_data\":{\"events\":[]}}";
      }
    }
    // Invites to rooms of other servers (we hold no state of those rooms).
    auto remote = remote_invites(tx, user_id, ad_since);
    if (!remote) return tl::unexpected(remote.error());
    for (const auto& [room_id, events] : *remote) {
      if (!filter.allows_room(room_id)) continue;
      sep(invite);
      invite += json_quote(room_id) + ":{\"invite_state\":{\"events\":[" + events + "]}}";
    }
    std::int64_t next_td = 0, next_dl = 0;
    bool e2e_nonempty = false;
    auto e2e = e2e_sync_sections(tx, user_id, device_id, p, initial, &next_td, &next_dl, &e2e_nonempty);
    if (!e2e) return tl::unexpected(e2e.error());
    std::int64_t next_pr = p.since_presence;
    auto presence_events = presence_section(tx, user_id, initial ? -1 : p.since_presence, p.filter.presence, &next_pr);
    if (!presence_events) return tl::unexpected(presence_events.error());
    if (empty_out)
      *empty_out = join.empty() && invite.empty() && leave.empty() && knocks.empty() && !account_data.count("") && !e2e_nonempty &&
                   presence_events->empty();
    std::int64_t next = std::max(*max, since);
    std::int64_t next_ad = std::max(ad_max, p.since_account_data);
    std::int64_t next_rc = std::max(rc_max, p.since_receipts);
    std::int64_t next_ty = std::max(typing_serial, p.since_typing);
    return fmt::format(
        "{{\"next_batch\":\"s{}_{}_{}_{}_{}_{}_{}\",\"rooms\":{{\"join\":{{{}}},\"invite\":{{{}}},\"leave\":{{{}}},\"knock\":{{{}}}}},"
        "\"presence\":{{\"events\":[{}]}},\"account_data\":{}{}}}",
        next, next_ad, next_rc, next_ty, next_td, next_dl, next_pr, join, invite, leave, knocks, *presence_events, room_ad(""),
        *e2e);
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return *r;
}

}  // namespace hearth::matrix

namespace hearth::matrix {

Result<void> MatrixService::Impl::lazy_members(store::Transaction& tx, const std::string& room_id,
                                               const std::string& user_id, const std::vector<StoredEvent>& timeline,
                                               std::int64_t first, std::vector<StoredEvent>& state) {
  std::set<std::string> needed{user_id};
  for (const auto& e : timeline) needed.insert(e.sender);
  std::erase_if(state, [&](const StoredEvent& e) {
    return e.type == "m.room.member" && e.state_key && !needed.count(*e.state_key);
  });
  for (const auto& e : state)
    if (e.type == "m.room.member" && e.state_key) needed.erase(*e.state_key);
  // Members of the senders that the state does not carry yet (an incremental sync without
  // a gap has no state): their member event as of the timeline's start. Sent every time
  // (as if include_redundant_members were set): hearth does not track what each device saw.
  for (const auto& u : needed) {
    auto ev = rooms.state_event(tx, room_id, "m.room.member", u);
    if (!ev) return tl::unexpected(ev.error());
    if (*ev && (*ev)->stream < first) state.push_back(std::move(**ev));
  }
  return ok();
}

Result<std::string> MatrixService::Impl::unread_counts(store::Transaction& tx, const std::string& room_id,
                                                       const std::string& user_id, std::int64_t joined_at,
                                                       std::int64_t upto, std::optional<PushRuleSet>& rules) {
  // Read up to the furthest of the user's public and private read receipts (spec: "Marking
  // notifications as read"), or the user's own member event if there is none.
  std::int64_t read = joined_at;
  auto row = tx.query_one(
      "SELECT MAX(e.stream) FROM matrix_receipts r JOIN matrix_events e ON e.event_id = r.event_id "
      "WHERE r.room_id = ? AND r.user_id = ? AND r.type IN ('m.read', 'm.read.private')",
      {room_id, user_id});
  if (!row) return tl::unexpected(row.error());
  if (*row && !(*row)->is_null(0)) read = std::max(read, (*row)->integer(0));
  bool more = false;
  auto events = rooms.timeline(tx, room_id, read, upto, kMaxUnreadScan, &more);
  if (!events) return tl::unexpected(events.error());
  std::int64_t notifications = 0, highlights = 0;
  if (!events->empty()) {
    if (!rules) {
      auto loaded = load_push_rules(tx, user_id);
      if (!loaded) return tl::unexpected(loaded.error());
      rules = std::move(*loaded);
    }
    std::string sender;
    auto ctx = push_context(tx, room_id, user_id, sender);
    if (!ctx) return tl::unexpected(ctx.error());
    for (const auto& e : *events) {
      if (e.sender == user_id) continue;
      auto v = parse_json(e.client_json, {std::size_t{1} << 24, 128});
      if (!v) continue;
      sender = e.sender;
      auto outcome = rules->evaluate(*v, *ctx);
      notifications += outcome.notify ? 1 : 0;
      highlights += outcome.notify && outcome.highlight ? 1 : 0;
    }
  }
  return fmt::format("{{\"highlight_count\":{},\"notification_count\":{}}}", highlights, notifications);
}

Result<std::string> MatrixService::Impl::room_summary(store::Transaction& tx, const std::string& room_id,
                                                      const std::string& user_id) {
  std::int64_t joined = 0, invited = 0;
  auto q = tx.query("SELECT membership, COUNT(*) FROM matrix_members WHERE room_id = ? GROUP BY membership", {room_id},
                    [&](const store::Row& row) {
                      if (row.text(0) == "join") joined = row.integer(1);
                      if (row.text(0) == "invite") invited = row.integer(1);
                    });
  if (!q) return tl::unexpected(q.error());
  std::string heroes;
  auto h = tx.query(
      "SELECT user_id FROM matrix_members WHERE room_id = ? AND user_id <> ? AND membership IN ('join', 'invite') "
      "ORDER BY stream LIMIT 5",
      {room_id, user_id}, [&](const store::Row& row) { heroes += (heroes.empty() ? "" : ",") + json_quote(row.text(0)); });
  if (!h) return tl::unexpected(h.error());
  return fmt::format("{{\"m.heroes\":[{}],\"m.invited_member_count\":{},\"m.joined_member_count\":{}}}", heroes,
                     invited, joined);
}

Result<std::string> MatrixService::Impl::presence_section(store::Transaction& tx, const std::string& user_id,
                                                          std::int64_t since, const EventFilter& filter,
                                                          std::int64_t* next) {
  std::vector<std::pair<std::string, Presence>> changed;
  {
    std::lock_guard lock(presence_mu);
    *next = std::max(*next, presence_serial);
    if (!filter.allows_type("m.presence")) return std::string();
    for (const auto& [user, pr] : presence)
      if (pr.serial > since) changed.emplace_back(user, pr);
  }
  std::string out;
  std::int64_t now = clock.now_ms();
  for (const auto& [user, pr] : changed) {
    if (!filter.allows("m.presence", user)) continue;
    if (user != user_id) {
      auto shared = tx.query_one(
          "SELECT 1 FROM matrix_members a JOIN matrix_members b ON a.room_id = b.room_id "
          "WHERE a.user_id = ? AND b.user_id = ? AND a.membership = 'join' AND b.membership = 'join' LIMIT 1",
          {user_id, user});
      if (!shared) return tl::unexpected(shared.error());
      if (!*shared) continue;
    }
    JsonWriter w;
    w.begin_object().key("type").value("m.presence").key("sender").value(user).key("content").begin_object();
    w.key("presence").value(pr.state);
    w.key("last_active_ago").value(std::max<std::int64_t>(0, now - pr.last_active_ms));
    w.key("currently_active").value(pr.state == "online");
    if (!pr.status_msg.empty()) w.key("status_msg").value(pr.status_msg);
    w.end_object().end_object();
    out += (out.empty() ? "" : ",") + w.take();
  }
  return out;
}

}  // namespace hearth::matrix
