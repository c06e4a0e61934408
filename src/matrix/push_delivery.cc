// Push notifications to push gateways (spec: "Push Notifications", Push Gateway API).
//
// Durable in two steps, both on the worker pool, one pump pass at a time:
//  1. Queueing: a cursor (matrix_push_cursor) follows the events table. Each event after
//     it is evaluated against the push rules of every local member who has an http
//     pusher (and of the target of a member event); a `notify` outcome puts one body per
//     pusher into matrix_push_queue, in the same write as the cursor moves. Events that
//     arrived while the daemon was down, or before a crash, are picked up by the next pass.
//     Events that notify nobody move the cursor in memory only (stored every 1000 events),
//     so a busy server without pushers pays no extra write per event; after a restart at
//     most that many such events are evaluated again.
//  2. Delivery: per pusher, oldest first, one POST per notification with the shared
//     outgoing client (net/https_client.h). The answer decides (push_gateway.h): delivered
//     or dropped rows are removed; a rejected pushkey removes the pusher; a failure backs
//     the pusher off (1 s doubling to 15 min; a timer pumps again) and keeps the queue.
// Badge updates: a read receipt marks its user; the next pass recounts the user's unread
// notifications and, if lower than the count last sent, queues a counts-only body.
#include <fmt/format.h>

#include <map>
#include <set>

#include "matrix/auth_rules.h"
#include "matrix/push_gateway.h"
#include "matrix/service_internal.h"
#include "net/https_client.h"

namespace hearth::matrix {

struct PushDelivery {
  std::unique_ptr<net::HttpsClient> client;
  Counter* sent = nullptr;
  Counter* failed = nullptr;
  Counter* dropped = nullptr;
  Counter* rejected = nullptr;
  std::mutex mu;
  bool pumping = false, again = false;  // guarded by mu
  struct Backoff {
    int failures = 0;
    std::int64_t next_ms = 0;
  };
  std::map<std::string, Backoff> backoff;           // by pusher key; guarded by mu
  std::set<std::string> receipt_users;              // badge recount wanted; guarded by mu
  std::map<std::string, std::int64_t> last_unread;  // per user, the count last queued; pump only
  // The events cursor (pump only): evaluated up to `cursor`; the stored one is written with
  // queued notifications, else at most every kCursorPersistEvery events, so that events
  // that notify nobody cost no write. -1: not read yet.
  std::int64_t cursor = -1, persisted = -1;
};

namespace {

constexpr std::int64_t kMaxRetryDelayMs = 15 * 60 * 1000;
constexpr std::int64_t kMaxNotificationAgeMs = 24 * 3600 * 1000;  // older ones are useless on a phone
constexpr int kEventsPerPass = 50;
constexpr std::int64_t kCursorPersistEvery = 1000;  // events re-evaluated at most after a restart
constexpr JsonLimits kStoredJson{std::size_t{1} << 24, 128};

const std::vector<store::Migration> kPushMigrations = {
    {1, "push notifications: the events cursor, the queue per pusher, when a pushkey was set", R"sql(
CREATE TABLE matrix_push_cursor(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  stream INTEGER NOT NULL);
INSERT INTO matrix_push_cursor(id, stream) VALUES (1, (SELECT COALESCE(MAX(stream), 0) FROM matrix_events));
CREATE TABLE matrix_push_queue(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL,
  app_id TEXT NOT NULL,
  pushkey TEXT NOT NULL,
  body TEXT NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE INDEX matrix_push_queue_pusher ON matrix_push_queue(user_id, app_id, pushkey, id);
ALTER TABLE matrix_pushers ADD COLUMN updated_ms INTEGER NOT NULL DEFAULT 0;
)sql"},
};

struct Pusher {
  std::string user_id;
  PusherTarget target;
};

struct Queued {
  std::string user_id, app_id, pushkey, body;
};

std::string pusher_key(const std::string& user, const std::string& app_id, const std::string& pushkey) {
  return user + '\n' + app_id + '\n' + pushkey;
}

// The user's http pushers.
Result<std::vector<Pusher>> http_pushers(store::Transaction& tx, const std::string& user_id) {
  std::vector<Pusher> out;
  auto q = tx.query("SELECT app_id, pushkey, json, updated_ms FROM matrix_pushers WHERE user_id = ?", {user_id},
                    [&](const store::Row& row) {
                      auto json = parse_json(row.text(2), kStoredJson);
                      if (!json || json->string_at("kind") != "http") return;
                      const JsonValue* data = json->get("data");
                      out.push_back({user_id,
                                     {std::string(row.text(0)), std::string(row.text(1)), row.integer(3) / 1000,
                                      data ? *data : JsonValue::object()}});
                    });
  if (!q) return tl::unexpected(q.error());
  return out;
}

std::string content_string(const std::optional<StoredEvent>& e, std::string_view key) {
  if (!e) return {};
  auto v = parse_json(e->client_json, kStoredJson);
  if (!v || !v->get("content")) return {};
  return std::string(v->get("content")->string_at(key));
}

}  // namespace

Result<void> MatrixService::Impl::migrate_push() { return store.migrate("matrix_push", kPushMigrations); }

Result<void> MatrixService::Impl::init_push() {
  auto p = std::make_shared<PushDelivery>();
  net::HttpsClientOptions co;
  co.timeout_ms = options.push_timeout_ms;
  co.max_response_bytes = 64 << 10;
  co.refuse_non_public_addresses = !options.push_to_private_addresses;
  auto client = net::HttpsClient::create(co);
  if (!client) return tl::unexpected(client.error());
  p->client = std::move(*client);
  auto counter = [&](const char* result) {
    return &metrics.counter("hearth_matrix_push_total", "Matrix notifications sent to push gateways, by outcome",
                            {{"result", result}});
  };
  p->sent = counter("sent");
  p->failed = counter("failed");
  p->dropped = counter("dropped");
  p->rejected = counter("pushkey_rejected");
  push = std::move(p);
  return ok();
}

Result<PushContext> MatrixService::Impl::push_context(store::Transaction& tx, const std::string& room_id,
                                                      const std::string& user_id, const std::string& sender) {
  PushContext ctx;
  auto count = tx.query_one("SELECT COUNT(*) FROM matrix_members WHERE room_id = ? AND membership = 'join'", {room_id});
  if (!count) return tl::unexpected(count.error());
  ctx.member_count = *count ? (*count)->integer(0) : 0;
  auto mine = rooms.state_event(tx, room_id, "m.room.member", user_id);
  if (!mine) return tl::unexpected(mine.error());
  ctx.display_name = content_string(*mine, "displayname");
  JsonValue power;
  auto pl = rooms.state_event(tx, room_id, "m.room.power_levels", "");
  if (!pl) return tl::unexpected(pl.error());
  if (*pl)
    if (auto v = parse_json((*pl)->client_json, kStoredJson); v && v->get("content")) power = *v->get("content");
  ctx.sender_may_notify = [power = std::move(power), &sender](std::string_view key) {
    auto int_at = [](const JsonValue* obj, std::string_view k, std::int64_t dflt) {
      const JsonValue* v = obj ? obj->get(k) : nullptr;
      return v && v->is_int() ? v->as_int() : dflt;
    };
    std::int64_t needed = int_at(power.get("notifications"), key, 50);
    std::int64_t level = int_at(power.get("users"), sender, int_at(&power, "users_default", 0));
    return level >= needed;
  };
  return ctx;
}

void MatrixService::Impl::push_receipt(const std::string& user_id) {
  if (!push) return;
  std::lock_guard lock(push->mu);
  push->receipt_users.insert(user_id);
}

void MatrixService::Impl::push_pump() {
  PushDelivery& p = *push;
  {
    std::lock_guard lock(p.mu);
    if (p.pumping) {
      p.again = true;
      return;
    }
    p.pumping = true;
    p.again = false;
  }
  auto self = shared_from_this();
  bool queued = offload([self] {
    PushDelivery& p = *self->push;
    for (;;) {
      if (auto r = self->push_queue_events(); !r)
        self->log.warn("matrix.push.queue_failed", {{"error", r.error().message}});
      self->push_queue_badges();
      self->push_deliver();
      std::lock_guard lock(p.mu);
      if (!p.again) {
        p.pumping = false;
        return;
      }
      p.again = false;
    }
  });
  if (!queued) {  // the pool is saturated: try again soon rather than wait for the next commit
    {
      std::lock_guard lock(p.mu);
      p.pumping = false;
    }
    std::weak_ptr<Impl> weak = self;
    run_after(std::chrono::seconds(1), [weak] {
      if (auto s = weak.lock()) s->push_pump();
    });
  }
}

Result<std::int64_t> MatrixService::Impl::total_unread(store::Transaction& tx, const std::string& user_id,
                                                       std::int64_t upto, std::optional<PushRuleSet>& rules) {
  auto memberships = rooms.memberships_of(tx, user_id);
  if (!memberships) return tl::unexpected(memberships.error());
  std::int64_t total = 0;
  for (const auto& m : *memberships) {
    if (m.membership != "join") continue;
    auto counts = unread_counts(tx, m.room_id, user_id, m.stream, upto, rules);
    if (!counts) return tl::unexpected(counts.error());
    if (auto v = parse_json(*counts); v && v->get("notification_count"))
      total += v->get("notification_count")->as_int();
  }
  return total;
}

namespace {

// Appends to the pushers' queues, dropping the oldest beyond `bound` per pusher.
Result<void> enqueue_push(store::Transaction& tx, const std::vector<Queued>& rows, std::int64_t now, int bound,
                          PushDelivery& p, Logger& log) {
  for (const auto& q : rows) {
    auto ins =
        tx.exec("INSERT INTO matrix_push_queue(user_id, app_id, pushkey, body, created_ms) VALUES (?, ?, ?, ?, ?)",
                {q.user_id, q.app_id, q.pushkey, q.body, now});
    if (!ins) return tl::unexpected(ins.error());
    auto n = tx.query_one("SELECT COUNT(*) FROM matrix_push_queue WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                          {q.user_id, q.app_id, q.pushkey});
    if (!n) return tl::unexpected(n.error());
    std::int64_t excess = (*n ? (*n)->integer(0) : 0) - bound;
    if (excess <= 0) continue;
    auto d = tx.exec(
        "DELETE FROM matrix_push_queue WHERE id IN (SELECT id FROM matrix_push_queue WHERE user_id = ? AND app_id = ? "
        "AND pushkey = ? ORDER BY id LIMIT ?)",
        {q.user_id, q.app_id, q.pushkey, excess});
    if (!d) return tl::unexpected(d.error());
    p.dropped->inc(static_cast<std::uint64_t>(excess));
    log.info(
        "matrix.push.dropped",
        {{"user", q.user_id}, {"app_id", q.app_id}, {"reason", "queue full"}, {"dropped", std::to_string(excess)}});
  }
  return ok();
}

}  // namespace

Result<void> MatrixService::Impl::push_queue_events() {
  for (;;) {
    std::int64_t last = 0;
    std::map<std::string, std::int64_t> unread_sent;
    auto batch = store.read_sync([&](store::Transaction& tx) -> Result<std::vector<Queued>> {
      std::vector<Queued> out;
      if (push->cursor < 0) {
        auto cursor = tx.query_one("SELECT stream FROM matrix_push_cursor WHERE id = 1", {});
        if (!cursor) return tl::unexpected(cursor.error());
        push->cursor = push->persisted = *cursor ? (*cursor)->integer(0) : 0;
      }
      std::int64_t from = push->cursor;
      // Nobody has a pusher: nothing to evaluate up to the newest event.
      auto any = tx.query_one("SELECT 1 FROM matrix_pushers LIMIT 1", {});
      if (!any) return tl::unexpected(any.error());
      if (!*any) {
        auto newest = tx.query_one("SELECT COALESCE(MAX(stream), 0) FROM matrix_events", {});
        if (!newest) return tl::unexpected(newest.error());
        if (*newest && (*newest)->integer(0) > from) last = (*newest)->integer(0);
        return out;
      }
      std::vector<StoredEvent> events;
      auto q = tx.query(
          "SELECT stream, event_id, room_id, type, state_key, sender, client FROM matrix_events WHERE stream > ? "
          "ORDER BY stream LIMIT ?",
          {from, std::int64_t{kEventsPerPass}}, [&](const store::Row& row) {
            StoredEvent e;
            e.stream = row.integer(0);
            e.event_id = std::string(row.text(1));
            e.room_id = std::string(row.text(2));
            e.type = std::string(row.text(3));
            if (!row.is_null(4)) e.state_key = std::string(row.text(4));
            e.sender = std::string(row.text(5));
            e.client_json = std::string(row.text(6));
            events.push_back(std::move(e));
          });
      if (!q) return tl::unexpected(q.error());
      for (const auto& e : events) {
        last = e.stream;
        // Local users in the room with an http pusher (and the target of a member event).
        std::vector<std::string> users;
        auto m = tx.query(
            "SELECT DISTINCT m.user_id FROM matrix_members m JOIN matrix_pushers p ON p.user_id = m.user_id "
            "WHERE m.room_id = ? AND m.user_id <> ? AND (m.membership = 'join' OR m.user_id = ?)",
            {e.room_id, e.sender, e.type == "m.room.member" && e.state_key ? *e.state_key : std::string()},
            [&](const store::Row& row) { users.emplace_back(row.text(0)); });
        if (!m) return tl::unexpected(m.error());
        if (users.empty()) continue;
        auto event_json = parse_json(e.client_json, kStoredJson);
        if (!event_json) continue;
        std::optional<EventFacts> facts;
        for (const auto& user : users) {
          if (server_of(user) != options.server_name) continue;
          auto rules = load_push_rules(tx, user);
          if (!rules) return tl::unexpected(rules.error());
          auto ctx = push_context(tx, e.room_id, user, e.sender);
          if (!ctx) return tl::unexpected(ctx.error());
          PushOutcome outcome = rules->evaluate(*event_json, *ctx);
          if (!outcome.notify) continue;
          auto pushers = http_pushers(tx, user);
          if (!pushers) return tl::unexpected(pushers.error());
          if (pushers->empty()) continue;
          if (!facts) {
            facts.emplace();
            facts->event_id = e.event_id;
            facts->room_id = e.room_id;
            facts->type = e.type;
            facts->sender = e.sender;
            if (const JsonValue* c = event_json->get("content")) facts->content = *c;
            auto who = rooms.state_event(tx, e.room_id, "m.room.member", e.sender);
            auto name = rooms.state_event(tx, e.room_id, "m.room.name", "");
            auto alias = rooms.state_event(tx, e.room_id, "m.room.canonical_alias", "");
            if (!who || !name || !alias) return fail(Errc::io, "room state unreadable");
            facts->sender_display_name = content_string(*who, "displayname");
            facts->room_name = content_string(*name, "name");
            facts->room_alias = content_string(*alias, "alias");
          }
          facts->user_is_target = e.type == "m.room.member" && e.state_key == user;
          std::optional<PushRuleSet> loaded = std::move(*rules);
          auto unread = total_unread(tx, user, e.stream, loaded);
          if (!unread) return tl::unexpected(unread.error());
          unread_sent[user] = *unread;
          for (const auto& pusher : *pushers)
            out.push_back({user, pusher.target.app_id, pusher.target.pushkey,
                           notification_body(*facts, outcome.tweaks, *unread, pusher.target)});
        }
      }
      return out;
    });
    if (!batch) return tl::unexpected(batch.error());
    if (last == 0) return ok();
    if (batch->empty() && last - push->persisted < kCursorPersistEvery) {
      push->cursor = last;
      continue;
    }
    auto w = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      if (auto r = enqueue_push(tx, *batch, clock.now_ms(), options.push_queue_per_pusher, *push, log); !r)
        return tl::unexpected(r.error());
      auto c = tx.exec("UPDATE matrix_push_cursor SET stream = ? WHERE id = 1", {last});
      if (!c) return tl::unexpected(c.error());
      return true;
    });
    if (!w) return tl::unexpected(w.error());
    push->cursor = push->persisted = last;
    for (const auto& [user, n] : unread_sent) push->last_unread[user] = n;
  }
}

void MatrixService::Impl::push_queue_badges() {
  std::set<std::string> users;
  {
    std::lock_guard lock(push->mu);
    users.swap(push->receipt_users);
  }
  for (const auto& user : users) {
    std::int64_t unread = 0;
    auto batch = store.read_sync([&](store::Transaction& tx) -> Result<std::vector<Queued>> {
      std::vector<Queued> out;
      auto pushers = http_pushers(tx, user);
      if (!pushers) return tl::unexpected(pushers.error());
      if (pushers->empty()) return out;
      auto upto = tx.query_one("SELECT COALESCE(MAX(stream), 0) FROM matrix_events", {});
      if (!upto) return tl::unexpected(upto.error());
      std::optional<PushRuleSet> rules;
      auto n = total_unread(tx, user, *upto ? (*upto)->integer(0) : 0, rules);
      if (!n) return tl::unexpected(n.error());
      unread = *n;
      auto last = push->last_unread.find(user);
      if (last != push->last_unread.end() && unread >= last->second) return out;  // not lowered
      for (const auto& pusher : *pushers)
        out.push_back({user, pusher.target.app_id, pusher.target.pushkey, badge_body(unread, pusher.target)});
      return out;
    });
    if (!batch || batch->empty()) continue;
    auto w = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      if (auto r = enqueue_push(tx, *batch, clock.now_ms(), options.push_queue_per_pusher, *push, log); !r)
        return tl::unexpected(r.error());
      return true;
    });
    if (w) push->last_unread[user] = unread;
  }
}

void MatrixService::Impl::push_deliver() {
  PushDelivery& p = *push;
  struct Key {
    std::string user_id, app_id, pushkey;
  };
  std::vector<Key> keys;
  auto listed = store.read_sync([&](store::Transaction& tx) -> Result<bool> {
    return tx
        .query("SELECT DISTINCT user_id, app_id, pushkey FROM matrix_push_queue", {},
               [&](const store::Row& row) {
                 keys.push_back({std::string(row.text(0)), std::string(row.text(1)), std::string(row.text(2))});
               })
        .map([] { return true; });
  });
  if (!listed) return;
  for (const auto& k : keys) {
    const std::string bkey = pusher_key(k.user_id, k.app_id, k.pushkey);
    {
      std::lock_guard lock(p.mu);
      auto it = p.backoff.find(bkey);
      if (it != p.backoff.end() && it->second.next_ms > clock.now_ms()) continue;  // its timer pumps again
    }
    auto forget_pusher_queue = [&](bool and_pusher) {
      return store.write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto d = tx.exec("DELETE FROM matrix_push_queue WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                         {k.user_id, k.app_id, k.pushkey});
        if (!d) return tl::unexpected(d.error());
        if (and_pusher) {
          auto dp = tx.exec("DELETE FROM matrix_pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                            {k.user_id, k.app_id, k.pushkey});
          if (!dp) return tl::unexpected(dp.error());
        }
        return true;
      });
    };
    for (;;) {
      struct Next {
        std::int64_t id = 0, created_ms = 0;
        std::string body, pusher_json;
      };
      auto next = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<Next>> {
        auto row = tx.query_one(
            "SELECT q.id, q.body, q.created_ms, p.json FROM matrix_push_queue q LEFT JOIN matrix_pushers p "
            "ON p.user_id = q.user_id AND p.app_id = q.app_id AND p.pushkey = q.pushkey "
            "WHERE q.user_id = ? AND q.app_id = ? AND q.pushkey = ? ORDER BY q.id LIMIT 1",
            {k.user_id, k.app_id, k.pushkey});
        if (!row) return tl::unexpected(row.error());
        if (!*row) return std::optional<Next>();
        Next n{(*row)->integer(0), (*row)->integer(2), std::string((*row)->text(1)),
               (*row)->is_null(3) ? std::string() : std::string((*row)->text(3))};
        return std::optional<Next>(std::move(n));
      });
      if (!next || !*next) break;
      const Next& n = **next;
      auto pusher = parse_json(n.pusher_json, kStoredJson);
      Result<GatewayUrl> url = fail(Errc::not_found, "pusher removed");
      if (pusher && pusher->get("data")) url = parse_gateway_url(pusher->get("data")->string_at("url"));
      if (!url) {  // the pusher is gone (or its URL is no longer accepted): its queue goes too
        if (pusher)
          log.info("matrix.push.dropped", {{"user", k.user_id}, {"app_id", k.app_id}, {"reason", url.error().message}});
        if (auto f = forget_pusher_queue(false); !f)
          log.warn("matrix.push.queue_failed", {{"error", f.error().message}});
        break;
      }
      auto remove_row = [&] {
        return store.write_sync([&](store::Transaction& tx) -> Result<bool> {
          auto d = tx.exec("DELETE FROM matrix_push_queue WHERE id = ?", {n.id});
          if (!d) return tl::unexpected(d.error());
          return true;
        });
      };
      if (clock.now_ms() - n.created_ms > kMaxNotificationAgeMs) {
        p.dropped->inc();
        log.info("matrix.push.dropped", {{"user", k.user_id}, {"app_id", k.app_id}, {"reason", "too old"}});
        if (!remove_row()) break;
        continue;
      }
      net::ClientRequest req;
      req.method = "POST";
      req.tls = url->tls;
      req.host = url->host;
      req.port = url->port;
      req.tls_name = url->host;
      req.target = url->target;
      req.body = n.body;
      auto resp = p.client->request(req);
      // A refused address or an unverifiable certificate will not change by retrying soon.
      GatewayVerdict verdict =
          !resp && resp.error().code == Errc::permission_denied
              ? GatewayVerdict::drop
              : judge_gateway_answer(resp ? std::optional<int>(resp->status) : std::nullopt,
                                     resp ? std::string_view(resp->body) : std::string_view(), k.pushkey);
      std::string outcome = resp ? fmt::format("HTTP {}", resp->status) : resp.error().message;
      if (verdict == GatewayVerdict::retry) {
        p.failed->inc();
        std::int64_t delay = 0;
        {
          std::lock_guard lock(p.mu);
          auto& b = p.backoff[bkey];
          delay = push_retry_delay_ms(++b.failures, kMaxRetryDelayMs);
          b.next_ms = clock.now_ms() + delay;
        }
        log.info("matrix.push.failed",
                 {{"user", k.user_id}, {"app_id", k.app_id}, {"error", outcome}, {"retry_ms", std::to_string(delay)}});
        std::weak_ptr<Impl> weak = shared_from_this();
        run_after(std::chrono::milliseconds(delay), [weak] {
          if (auto s = weak.lock()) s->push_pump();
        });
        break;
      }
      {
        std::lock_guard lock(p.mu);
        p.backoff.erase(bkey);
      }
      if (verdict == GatewayVerdict::pushkey_rejected) {
        p.rejected->inc();
        log.info("matrix.push.pusher_removed",
                 {{"user", k.user_id}, {"app_id", k.app_id}, {"reason", "the gateway rejected the pushkey"}});
        if (auto f = forget_pusher_queue(true); !f)
          log.warn("matrix.push.queue_failed", {{"error", f.error().message}});
        break;
      }
      if (verdict == GatewayVerdict::drop) {
        p.dropped->inc();
        log.info("matrix.push.dropped", {{"user", k.user_id}, {"app_id", k.app_id}, {"reason", outcome}});
      } else {
        p.sent->inc();
      }
      if (!remove_row()) break;
    }
  }
}

}  // namespace hearth::matrix
