// Incoming federation, first slice: version, X-Matrix request authentication with remote
// keys fetched over HTTPS and cached, make_join / send_join (v2) for public rooms, and
// /send receiving PDUs with the spec's receipt checks (incident I19): signature, content
// hash (mismatch: redacted), auth against the event's auth events (fail: rejected), against
// the state before it (fail: rejected) and against the current state (fail: soft-failed);
// accepted events are appended, with state resolution when the state before the event is
// not the current state. Rejected and soft-failed events are kept apart
// (matrix_unaccepted_events) and never reach state, timelines or /sync.
//
// Runs on the blocking worker pool (the routes are blocking): key fetches are network
// calls, made before the write job, never inside it.
#include <algorithm>
#include <atomic>
#include <set>

#include <fmt/format.h>

#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/e2e_store.h"
#include "matrix/federation.h"
#include "matrix/service_internal.h"
#include "matrix/state_resolution.h"
#include "net/https_client.h"

namespace hearth::matrix {

struct Federation {
  std::unique_ptr<net::HttpsClient> client;
  std::map<std::string, Destination> destinations;
  std::unique_ptr<ServerKeyCache> keys;
  bool skip_checks = false;
  std::int64_t max_body_bytes = 4 << 20;  // /send: 50 PDUs of 64 KiB + EDUs
  Counter* received = nullptr;
  Counter* rejected = nullptr;
  Counter* soft_failed = nullptr;
  Counter* sent = nullptr;
  Counter* send_failures = nullptr;
  Counter* missing_fetched = nullptr;
  Counter* gaps_skipped = nullptr;
  Counter* caught_up = nullptr;
  Counter* edus_received = nullptr;
  Counter* edus_ignored = nullptr;
  Counter* backfilled = nullptr;
  // Outgoing: one listing pass at a time; per destination one transaction in flight (at
  // most kMaxParallelDestinations at once, the rest waiting), the back-off after a failure
  // and the EDUs not sent yet (in memory: ephemeral).
  std::mutex out_mu;
  bool listing = false, list_again = false;            // guarded by out_mu
  std::set<std::string> in_flight, deliver_again, waiting;  // guarded by out_mu
  std::map<std::string, std::vector<std::string>> edus;     // guarded by out_mu
  std::atomic<std::uint64_t> edu_txn{0};
  struct Backoff {
    std::int64_t next_ms = 0, delay_ms = 0;
  };
  std::map<std::string, Backoff> backoff;              // guarded by out_mu
};

namespace {

constexpr JsonLimits kBodyLimits{std::size_t{4} << 20, 64};

std::string seg_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    out.push_back(seg_decode(path.substr(start, slash - start)));
    start = slash + 1;
  }
  return out;
}

// Where to reach `server`: a static destination, an explicit port, .well-known, else :8448.
Destination resolve_server(Federation& f, const std::string& server) {
  if (auto it = f.destinations.find(server); it != f.destinations.end()) return it->second;
  auto colon = server.rfind(':');
  if (colon != std::string::npos && server.find(']') == std::string::npos) {
    Destination d{server.substr(0, colon), std::atoi(server.c_str() + colon + 1), server.substr(0, colon)};
    if (d.port > 0 && d.port < 65536) return d;
  }
  net::ClientRequest req;
  req.host = server;
  req.tls_name = server;
  req.target = "/.well-known/matrix/server";
  if (auto r = f.client->request(req); r && r->status == 200)
    if (auto j = parse_json(r->body, {64 << 10, 8}); j && !j->string_at("m.server").empty()) {
      std::string m(j->string_at("m.server"));
      auto c = m.rfind(':');
      if (c != std::string::npos && m.find(']') == std::string::npos)
        return Destination{m.substr(0, c), std::atoi(m.c_str() + c + 1), m.substr(0, c)};
      return Destination{m, 8448, m};
    }
  return Destination{server, 8448, server};
}

Result<JsonValue> fetch_server_keys(Federation& f, const std::string& server) {
  if (server.empty() || server.size() > 255) return fail(Errc::invalid_argument, "bad server name");
  Destination d = resolve_server(f, server);
  net::ClientRequest req;
  req.host = d.host;
  req.port = d.port;
  req.tls_name = d.tls_name;
  req.target = "/_matrix/key/v2/server";
  auto r = f.client->request(req);
  if (!r) return tl::unexpected(r.error());
  if (r->status != 200) return fail(Errc::unavailable, fmt::format("{}: key request answered {}", server, r->status));
  auto j = parse_json(r->body, {64 << 10, 16});
  if (!j) return fail(Errc::invalid_argument, fmt::format("{}: key response is not JSON", server));
  return std::move(*j);
}

std::string query_value(std::string_view query, std::string_view key) {
  for (std::string_view q = query; !q.empty();) {
    auto amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos && kv.substr(0, eq) == key) return seg_decode(kv.substr(eq + 1));
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
  }
  return {};
}

// The most events one gap fill fetches, and the most get_missing_events returns.
constexpr std::int64_t kMaxMissingEvents = 100;

net::HttpResponse fed_error(int status, std::string errcode, std::string error) {
  return error_response({status, std::move(errcode), std::move(error)});
}

}  // namespace

Result<void> MatrixService::Impl::init_federation() {
  auto f = std::make_shared<Federation>();
  net::HttpsClientOptions co;
  co.ca_file = options.federation_ca_file;
  co.timeout_ms = options.federation_timeout_ms;
  co.max_response_bytes = 16 << 20;  // send_join and state answers
  auto client = net::HttpsClient::create(co);
  if (!client) return tl::unexpected(client.error());
  f->client = std::move(*client);
  auto dests = parse_destinations(options.federation_destinations);
  if (!dests) return tl::unexpected(dests.error());
  f->destinations = std::move(*dests);
  Federation* raw = f.get();
  f->keys = std::make_unique<ServerKeyCache>([raw](const std::string& s) { return fetch_server_keys(*raw, s); });
  f->skip_checks = options.federation_insecure_skip_checks_for_tests;
  f->received = &metrics.counter("hearth_matrix_federation_pdus_total", "PDUs received over federation");
  f->rejected = &metrics.counter("hearth_matrix_federation_pdus_rejected_total",
                                 "Received PDUs rejected (bad signature, failed auth against their auth events or prior state)");
  f->soft_failed = &metrics.counter("hearth_matrix_federation_pdus_soft_failed_total",
                                    "Received PDUs soft-failed (fail auth against the current state)");
  f->sent = &metrics.counter("hearth_matrix_federation_transactions_sent_total", "Federation transactions accepted by remote servers");
  f->send_failures = &metrics.counter("hearth_matrix_federation_send_failures_total",
                                      "Federation transactions that failed (retried with back-off)");
  f->missing_fetched = &metrics.counter("hearth_matrix_federation_missing_events_fetched_total",
                                       "Events fetched with get_missing_events and accepted to fill a gap");
  f->gaps_skipped = &metrics.counter("hearth_matrix_federation_gaps_skipped_total",
                                     "Received PDUs whose gap could not be filled, accepted on the origin's state_ids");
  f->caught_up = &metrics.counter("hearth_matrix_federation_catch_up_skipped_total",
                                  "Queued PDUs not sent after an outage (the destination fetches them as missing events)");
  f->edus_received = &metrics.counter("hearth_matrix_federation_edus_total", "EDUs received and applied");
  f->edus_ignored = &metrics.counter("hearth_matrix_federation_edus_ignored_total",
                                     "EDUs ignored (unknown type, a user of another server, not in the room)");
  f->backfilled = &metrics.counter("hearth_matrix_federation_backfilled_events_total",
                                   "Events of remote rooms' history fetched with backfill for /messages");
  federation = std::move(f);
  return ok();
}

namespace {
constexpr std::int64_t kMinBackoffMs = 1000, kMaxBackoffMs = 3600 * 1000;
// Destinations sent to at once: each holds a blocking worker while its request is under way
// (up to matrix.federation_timeout_seconds for a dead peer), and the pool is 2 × cores, so
// on a small host most workers stay free for clients and incoming federation requests.
constexpr std::size_t kMaxParallelDestinations = 2;
constexpr std::size_t kMaxQueuedEdus = 1000;  // per destination
}

void MatrixService::Impl::federation_pump() {
  Federation& f = *federation;
  {
    std::lock_guard lock(f.out_mu);
    if (f.listing) {
      f.list_again = true;
      return;
    }
    f.listing = true;
    f.list_again = false;
  }
  auto self = shared_from_this();
  bool queued = offload([self] {
    Federation& f = *self->federation;
    for (;;) {
      auto dests = self->store.read_sync([&](store::Transaction& tx) { return self->rooms.outbox_destinations(tx); });
      std::set<std::string> all;
      if (dests) all.insert(dests->begin(), dests->end());
      {
        std::lock_guard lock(f.out_mu);
        for (const auto& [dest, edus] : f.edus)
          if (!edus.empty()) all.insert(dest);
      }
      for (const auto& dest : all) self->federation_deliver(dest);
      std::lock_guard lock(f.out_mu);
      if (!f.list_again) {
        f.listing = false;
        return;
      }
      f.list_again = false;
    }
  });
  if (!queued) {
    std::lock_guard lock(f.out_mu);
    f.listing = false;
  }
}

void MatrixService::Impl::federation_deliver(const std::string& dest) {
  Federation& f = *federation;
  {
    std::lock_guard lock(f.out_mu);
    if (f.in_flight.count(dest)) {  // one transaction at a time per destination (spec)
      f.deliver_again.insert(dest);
      return;
    }
    auto it = f.backoff.find(dest);
    if (it != f.backoff.end() && it->second.next_ms > clock.now_ms()) return;  // its timer pumps again
    if (f.in_flight.size() >= kMaxParallelDestinations) {
      f.waiting.insert(dest);
      return;
    }
    f.in_flight.insert(dest);
  }
  auto self = shared_from_this();
  auto run = [self, dest] {
    Federation& f = *self->federation;
    bool recovering = false;
    {
      std::lock_guard lock(f.out_mu);
      recovering = f.backoff.count(dest) > 0;
    }
    if (recovering) {
      auto dropped = self->store.write_sync(
          [&](store::Transaction& tx) { return self->rooms.outbox_keep_newest_per_room(tx, dest); });
      if (dropped && *dropped > 0) f.caught_up->inc(*dropped);
    }
    for (;;) {  // transactions of up to 50 PDUs and 100 EDUs until both queues are empty or a send fails
      auto rows = self->store.read_sync([&](store::Transaction& tx) { return self->rooms.outbox(tx, dest, 50); });
      std::vector<std::string> edus;
      {
        std::lock_guard lock(f.out_mu);
        auto& q = f.edus[dest];
        std::size_t n = std::min<std::size_t>(q.size(), 100);
        edus.assign(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(n));
        q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(n));
      }
      bool no_pdus = !rows || rows->empty();
      if (no_pdus && edus.empty()) break;
      std::string body = fmt::format("{{\"origin\":\"{}\",\"origin_server_ts\":{},\"pdus\":[", self->options.server_name,
                                     self->clock.now_ms());
      if (!no_pdus)
        for (std::size_t i = 0; i < rows->size(); ++i) body += (i ? "," : "") + (*rows)[i].pdu_json;
      body += "],\"edus\":[";
      for (std::size_t i = 0; i < edus.size(); ++i) body += (i ? "," : "") + edus[i];
      body += "]}";
      auto parsed = parse_json(body, kBodyLimits);
      // A PDU transaction's id is its first row's id (a retry resends the same transaction);
      // an EDU-only one gets a fresh id from a separate space.
      std::string txn = no_pdus ? fmt::format("e{}_{}", self->clock.now_ms(), ++f.edu_txn) : std::to_string(rows->front().id);
      std::string target = fmt::format("/_matrix/federation/v1/send/{}", txn);
      Destination d = resolve_server(f, dest);
      net::ClientRequest req;
      req.method = "PUT";
      req.host = d.host;
      req.port = d.port;
      req.tls_name = d.tls_name;
      req.target = target;
      req.body = parsed ? canonical_json(*parsed) : body;
      req.headers.push_back({"Authorization", x_matrix_header("PUT", target, self->options.server_name, dest,
                                                              parsed ? &*parsed : nullptr, self->key)});
      auto resp = f.client->request(req);
      bool ok = resp && resp->status == 200;
      if (ok && !no_pdus) {
        auto removed = self->store.write_sync(
            [&](store::Transaction& tx) { return self->rooms.outbox_remove(tx, dest, rows->back().id); });
        ok = bool(removed);
      }
      std::lock_guard lock(f.out_mu);
      if (ok) {
        f.sent->inc();
        f.backoff.erase(dest);
        continue;
      }
      // EDUs are ephemeral (spec): not retried.
      f.send_failures->inc();
      auto& b = f.backoff[dest];
      b.delay_ms = std::clamp(b.delay_ms * 2, kMinBackoffMs, kMaxBackoffMs);
      b.next_ms = self->clock.now_ms() + b.delay_ms;
      self->log.info("matrix.federation.send_failed",
                     {{"destination", dest},
                      {"error", resp ? fmt::format("HTTP {}", resp->status) : resp.error().message},
                      {"retry_ms", std::to_string(b.delay_ms)}});
      std::weak_ptr<Impl> weak = self;
      self->run_after(std::chrono::milliseconds(b.delay_ms), [weak, dest] {
        if (auto s = weak.lock()) s->federation_deliver(dest);
      });
      f.edus[dest].clear();
      break;
    }
    std::string next;
    bool again = false;
    {
      std::lock_guard lock(f.out_mu);
      f.in_flight.erase(dest);
      again = f.deliver_again.erase(dest) > 0;
      if (!f.waiting.empty()) {
        next = *f.waiting.begin();
        f.waiting.erase(f.waiting.begin());
      }
    }
    if (again) self->federation_deliver(dest);
    if (!next.empty()) self->federation_deliver(next);
  };
  if (!offload(run)) {
    std::lock_guard lock(f.out_mu);
    f.in_flight.erase(dest);
  }
}

void MatrixService::Impl::federation_edu_to(const std::set<std::string>& servers, std::string_view type,
                                             const JsonValue& content) {
  if (!federation || servers.empty()) return;
  Federation& f = *federation;
  JsonValue edu = JsonValue::object();
  edu.set("edu_type", JsonValue::string(std::string(type)));
  edu.set("content", content);
  std::string json = canonical_json(edu);
  {
    std::lock_guard lock(f.out_mu);
    for (const auto& server : servers) {
      auto& q = f.edus[server];
      if (q.size() >= kMaxQueuedEdus) q.erase(q.begin());  // ephemeral: the oldest goes first
      q.push_back(json);
    }
  }
  for (const auto& server : servers) federation_deliver(server);
}

void MatrixService::Impl::federation_edu(const std::string& room_id, std::string_view type, const JsonValue& content) {
  if (!federation) return;
  auto servers = store.read_sync([&](store::Transaction& tx) -> Result<std::set<std::string>> {
    std::set<std::string> out;
    auto r = tx.query("SELECT user_id FROM matrix_members WHERE room_id = ? AND membership = 'join'", {room_id},
                      [&](const store::Row& row) {
                        std::string_view server = server_of(row.text(0));
                        if (!server.empty() && server != options.server_name) out.insert(std::string(server));
                      });
    if (!r) return tl::unexpected(r.error());
    return out;
  });
  if (servers) federation_edu_to(*servers, type, content);
}

namespace {

// The outcome of one received PDU.
struct Received {
  std::string event_id;
  std::string outcome;  // "accepted", "rejected", "soft_failed", "duplicate", "dropped"
  std::string reason;
  std::int64_t stream = 0;
  std::string target;  // member events: the state key (its syncs are woken too)
};

}  // namespace

namespace {

// A signed request to another server; the parsed JSON answer (200 only).
Result<JsonValue> federation_call(MatrixService::Impl& impl, Federation& f, const std::string& dest,
                                  const std::string& method, const std::string& target, const JsonValue* body) {
  Destination d = resolve_server(f, dest);
  net::ClientRequest req;
  req.method = method;
  req.host = d.host;
  req.port = d.port;
  req.tls_name = d.tls_name;
  req.target = target;
  if (body) req.body = canonical_json(*body);
  req.headers.push_back({"Authorization", x_matrix_header(method, target, impl.options.server_name, dest, body, impl.key)});
  auto r = f.client->request(req);
  if (!r) return tl::unexpected(r.error());
  if (r->status != 200) return fail(r->status == 403 ? Errc::permission_denied : Errc::unavailable,
                                    fmt::format("{} answered {}: {}", dest, r->status, r->body.substr(0, 200)));
  auto j = parse_json(r->body, {std::size_t{64} << 20, 64});
  if (!j || !j->is_object()) return fail(Errc::invalid_argument, fmt::format("{}: the answer is not JSON", dest));
  return std::move(*j);
}

std::string path_escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

}  // namespace

struct FederationHandlers {
  MatrixService::Impl& impl;
  Federation& f;

  std::int64_t now() const { return impl.clock.now_ms(); }

  // X-Matrix: returns the authenticated origin.
  ApiResult<std::string> authenticate(const net::HttpRequest& req, const JsonValue* content) {
    auto auth = parse_x_matrix(req.header("authorization"));
    if (!auth) return api_error(401, "M_UNAUTHORIZED", auth.error().message);
    if (!auth->destination.empty() && auth->destination != impl.options.server_name)
      return api_error(401, "M_UNAUTHORIZED", "request is for another destination");
    JsonValue signed_json = x_matrix_request_json(req.method, req.target, auth->origin, impl.options.server_name, content);
    JsonValue sigs = JsonValue::object();
    JsonValue mine = JsonValue::object();
    mine.set(auth->key_id, JsonValue::string(auth->sig));
    sigs.set(auth->origin, std::move(mine));
    signed_json.set("signatures", std::move(sigs));
    auto key = f.keys->key(auth->origin, auth->key_id, now());
    if (!key) return api_error(401, "M_UNAUTHORIZED", fmt::format("cannot get the key of {}: {}", auth->origin, key.error().message));
    if (!verify_json_signature(signed_json, auth->origin, auth->key_id, *key))
      return api_error(401, "M_UNAUTHORIZED", "invalid request signature");
    return auth->origin;
  }

  // Receipt checks and storage of one PDU whose integrity was checked (or skipped).
  Result<Received> receive(const std::string& room_id, PduIntegrity in, const StateMap* state_before = nullptr) {
    Received out;
    out.event_id = in.event_id;
    const JsonValue& pdu = in.pdu;
    const JsonValue* sk = pdu.get("state_key");
    if (sk && pdu.string_at("type") == "m.room.member") out.target = sk->as_string();
    std::string pdu_json = canonical_json(pdu);
    auto r = impl.store.write_sync([&](store::Transaction& tx) -> Result<Received> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      auto known = impl.rooms.stream_of(tx, in.event_id);
      if (!known) return tl::unexpected(known.error());
      auto unaccepted = impl.rooms.unaccepted_status(tx, in.event_id);
      if (!unaccepted) return tl::unexpected(unaccepted.error());
      if (*known || *unaccepted) {
        out.outcome = "duplicate";
        return out;
      }
      auto reject = [&](std::string_view status, std::string reason) -> Result<Received> {
        if (auto w = impl.rooms.record_unaccepted(tx, room_id, in.event_id, pdu_json, status, reason, now()); !w)
          return tl::unexpected(w.error());
        out.outcome = std::string(status);
        out.reason = std::move(reason);
        return out;
      };
      if (f.skip_checks) {  // TEST ONLY: the I19 failure mode, for the defence-off run
        auto a = impl.rooms.insert_event(tx, *room, in.event_id, pdu, pdu_json, "", "", true, now());
        if (!a) return tl::unexpected(a.error());
        out.outcome = "accepted";
        out.stream = a->stream;
        return out;
      }
      // Events by id, loaded on demand (accepted events only: unaccepted ones are unknown here).
      std::map<std::string, JsonValue, std::less<>> cache;
      EventLookup lookup = [&](std::string_view id) -> const JsonValue* {
        if (auto it = cache.find(id); it != cache.end()) return &it->second;
        auto p = impl.rooms.pdu(tx, id);
        if (!p || p->string_at("room_id") != room_id) return nullptr;
        return &cache.emplace(std::string(id), std::move(*p)).first->second;
      };
      // 1. Auth against the event's own auth events.
      std::map<StateKey, const JsonValue*> auth_state;
      auto wanted = auth_types_for(pdu);
      for (const auto& idv : pdu.get("auth_events")->items()) {
        const std::string& id = idv.as_string();
        auto st = impl.rooms.unaccepted_status(tx, id);
        if (!st) return tl::unexpected(st.error());
        if (*st) return reject("rejected", fmt::format("auth event {} was {}", id, **st));
        const JsonValue* a = lookup(id);
        if (!a) return reject("rejected", fmt::format("unknown auth event {}", id));
        const JsonValue* ask = a->get("state_key");
        StateKey key(std::string(a->string_at("type")), ask && ask->is_string() ? ask->as_string() : "");
        if (!ask || std::find(wanted.begin(), wanted.end(), key) == wanted.end() || auth_state.count(key))
          return reject("rejected", fmt::format("auth event {} is not one the rules select", id));
        auth_state[key] = a;
      }
      StateLookup from_auth = [&](std::string_view type, std::string_view key) -> const JsonValue* {
        auto it = auth_state.find(StateKey(std::string(type), std::string(key)));
        return it == auth_state.end() ? nullptr : it->second;
      };
      if (auto ok = check_event_auth(pdu, room->version, from_auth); !ok)
        return reject("rejected", "auth events: " + ok.error().message);
      // 2. The state before the event: the state after its prev events, resolved.
      auto current = impl.rooms.current_state_map(tx, room_id);
      if (!current) return tl::unexpected(current.error());
      std::vector<StateMap> before_sets;
      if (state_before) before_sets.push_back(*state_before);
      for (const auto& idv : pdu.get("prev_events")->items()) {
        if (state_before) break;
        auto s = impl.rooms.stream_of(tx, idv.as_string());
        if (!s) return tl::unexpected(s.error());
        if (!*s) return fail(Errc::not_found, fmt::format("unknown prev event {}", idv.as_string()));
        auto st = impl.rooms.state_map_at(tx, room_id, **s);
        if (!st) return tl::unexpected(st.error());
        before_sets.push_back(std::move(*st));
      }
      if (before_sets.empty()) return fail(Errc::invalid_argument, "an event without prev events");
      bool at_current = std::all_of(before_sets.begin(), before_sets.end(), [&](const StateMap& s) { return s == *current; });
      StateMap before = *current;
      if (!at_current) {
        auto resolved = resolve_state_v2(before_sets, room->version, lookup);
        if (!resolved) return tl::unexpected(resolved.error());
        before = std::move(*resolved);
      }
      auto state_lookup = [&](const StateMap& m) -> StateLookup {
        return [&m, &lookup](std::string_view type, std::string_view key) -> const JsonValue* {
          auto it = m.find(StateKey(std::string(type), std::string(key)));
          return it == m.end() ? nullptr : lookup(it->second);
        };
      };
      if (auto ok = check_event_auth(pdu, room->version, state_lookup(before)); !ok)
        return reject("rejected", "state before the event: " + ok.error().message);
      // 3. Soft failure: against the current state.
      if (auto ok = check_event_auth(pdu, room->version, state_lookup(*current)); !ok)
        return reject("soft_failed", "current state: " + ok.error().message);
      // 4. Accept. A state event whose prior state differs from ours: resolve both.
      bool simple = at_current || !sk;
      auto a = impl.rooms.insert_event(tx, *room, in.event_id, pdu, pdu_json, "", "", simple, now());
      if (!a) return tl::unexpected(a.error());
      if (!simple) {
        StateMap after = before;
        after[{std::string(pdu.string_at("type")), sk->as_string()}] = in.event_id;
        cache.emplace(in.event_id, pdu);
        auto resolved = resolve_state_v2({*current, after}, room->version, lookup);
        if (!resolved) return tl::unexpected(resolved.error());
        for (const auto& [key, id] : *resolved) {
          auto it = current->find(key);
          if (it != current->end() && it->second == id) continue;
          auto s = impl.rooms.stream_of(tx, id);
          if (!s) return tl::unexpected(s.error());
          if (!*s) continue;
          const JsonValue* e = lookup(id);
          const JsonValue* c = e ? e->get("content") : nullptr;
          if (auto w = impl.rooms.set_state_row(tx, room_id, key.first, key.second, **s,
                                                c ? c->string_at("membership") : std::string_view());
              !w)
            return tl::unexpected(w.error());
        }
      }
      out.outcome = "accepted";
      out.stream = a->stream;
      return out;
    });
    if (r && r->outcome == "accepted") {
      std::vector<std::string> keys{room_id};
      if (!r->target.empty()) keys.push_back(r->target);
      impl.notify(r->stream, std::move(keys));
    }
    if (r) {
      f.received->inc();
      if (r->outcome == "rejected") f.rejected->inc();
      if (r->outcome == "soft_failed") f.soft_failed->inc();
      if (r->outcome == "rejected" || r->outcome == "soft_failed")
        impl.log.info("matrix.federation.pdu_" + r->outcome, {{"event_id", r->event_id}, {"room_id", room_id}, {"reason", r->reason}});
    }
    return r;
  }

  // What a server may see of a room: the visibility filters of its users who have a member
  // event there (at most 64), and whether one of them is joined now.
  struct ServerView {
    bool joined = false;
    std::vector<VisibilityFilter> users;
    bool visible(std::int64_t stream) const {
      return std::any_of(users.begin(), users.end(), [&](const VisibilityFilter& u) { return u.visible(stream); });
    }
  };
  Result<ServerView> server_view(store::Transaction& tx, const std::string& room_id, const std::string& server) {
    ServerView v;
    std::vector<std::string> users;
    auto r = tx.query("SELECT user_id, membership FROM matrix_members WHERE room_id = ? AND user_id LIKE ?",
                      {room_id, "%:" + server}, [&](const store::Row& row) {
                        if (server_of(row.text(0)) != server || users.size() >= 64) return;
                        users.emplace_back(row.text(0));
                        if (row.text(1) == "join") v.joined = true;
                      });
    if (!r) return tl::unexpected(r.error());
    for (const auto& u : users) {
      auto filter = VisibilityFilter::load(tx, room_id, u);
      if (!filter) return tl::unexpected(filter.error());
      v.users.push_back(std::move(*filter));
    }
    return v;
  }

  // The state of the room just before a stored event: the state after its prev events
  // (resolved when they differ); empty for the create event.
  Result<StateMap> state_before(store::Transaction& tx, const std::string& room_id, const JsonValue& pdu,
                                RoomVersion version, const EventLookup& lookup) {
    std::vector<StateMap> sets;
    const JsonValue* prevs = pdu.get("prev_events");
    for (const auto& idv : prevs && prevs->is_array() ? prevs->items() : std::vector<JsonValue>{}) {
      if (!idv.is_string()) continue;
      auto s = impl.rooms.stream_of(tx, idv.as_string());
      if (!s) return tl::unexpected(s.error());
      if (!*s) continue;
      auto st = impl.rooms.state_map_at(tx, room_id, **s);
      if (!st) return tl::unexpected(st.error());
      sets.push_back(std::move(*st));
    }
    if (sets.empty()) return StateMap{};
    if (std::all_of(sets.begin(), sets.end(), [&](const StateMap& m) { return m == sets.front(); })) return sets.front();
    return resolve_state_v2(sets, version, lookup);
  }

  // GET /v1/event/{eventId}
  net::HttpResponse get_event(const std::string& origin, const std::string& event_id) {
    auto r = impl.store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
      auto e = impl.rooms.event(tx, event_id);
      if (!e) return tl::unexpected(e.error());
      if (!*e) return fail(Errc::not_found, "unknown event");
      auto view = server_view(tx, (*e)->room_id, origin);
      if (!view) return tl::unexpected(view.error());
      if (!view->visible((*e)->stream)) return fail(Errc::permission_denied, "the server may not see this event");
      auto p = impl.rooms.pdu(tx, event_id);
      if (!p) return tl::unexpected(p.error());
      return canonical_json(*p);
    });
    if (!r) return error_response(to_api_error(r.error()));
    return json_response(200, fmt::format("{{\"origin\":\"{}\",\"origin_server_ts\":{},\"pdus\":[{}]}}",
                                          impl.options.server_name, now(), *r));
  }

  // GET /v1/state_ids/{roomId}?event_id= and /v1/state/{roomId}?event_id=: the state before
  // the event and its auth chain, as ids or as PDUs.
  net::HttpResponse get_state(const std::string& origin, const std::string& room_id, const std::string& event_id,
                              bool ids_only) {
    if (event_id.empty()) return fed_error(400, "M_MISSING_PARAM", "event_id is required");
    auto r = impl.store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      auto e = impl.rooms.event(tx, event_id);
      if (!e) return tl::unexpected(e.error());
      if (!*e || (*e)->room_id != room_id) return fail(Errc::not_found, "unknown event in this room");
      auto view = server_view(tx, room_id, origin);
      if (!view) return tl::unexpected(view.error());
      if (!view->visible((*e)->stream)) return fail(Errc::permission_denied, "the server may not see this event");
      std::map<std::string, JsonValue, std::less<>> cache;
      EventLookup lookup = [&](std::string_view id) -> const JsonValue* {
        if (auto it = cache.find(id); it != cache.end()) return &it->second;
        auto p = impl.rooms.pdu(tx, id);
        if (!p || p->string_at("room_id") != room_id) return nullptr;
        return &cache.emplace(std::string(id), std::move(*p)).first->second;
      };
      const JsonValue* pdu = lookup(event_id);
      if (!pdu) return fail(Errc::not_found, "unknown event in this room");
      auto before = state_before(tx, room_id, *pdu, room->version, lookup);
      if (!before) return tl::unexpected(before.error());
      std::vector<std::string> ids;
      for (const auto& [key, id] : *before) ids.push_back(id);
      auto chain = auth_chain(ids, lookup);
      if (!chain) return tl::unexpected(chain.error());
      auto list = [&](auto begin, auto end) {
        std::string out = "[";
        for (auto it = begin; it != end; ++it) {
          const JsonValue* e = ids_only ? nullptr : lookup(*it);
          if (!ids_only && !e) continue;
          if (out.size() > 1) out += ",";
          if (ids_only) json_escape_to(out, *it);
          else canonical_json_to(out, *e);
        }
        return out + "]";
      };
      std::string state = list(ids.begin(), ids.end()), auth = list(chain->begin(), chain->end());
      return ids_only ? "{\"auth_chain_ids\":" + auth + ",\"pdu_ids\":" + state + "}"
                      : "{\"auth_chain\":" + auth + ",\"pdus\":" + state + "}";
    });
    if (!r) return error_response(to_api_error(r.error()));
    return json_response(200, std::move(*r));
  }

  static void push_prevs(const JsonValue& pdu, std::set<std::string>& seen, std::vector<std::string>& frontier) {
    if (const JsonValue* prevs = pdu.get("prev_events"); prevs && prevs->is_array())
      for (const auto& p : prevs->items())
        if (p.is_string() && seen.insert(p.as_string()).second) frontier.push_back(p.as_string());
  }

  // Breadth-first along prev_events from `frontier` (ids in `seen` are not visited again),
  // skipping events below min_depth, until `limit` events the server may see were found or
  // 4 × kMaxMissingEvents were visited. (depth, stream, PDU JSON) in visiting order.
  using Found = std::vector<std::tuple<std::int64_t, std::int64_t, std::string>>;
  Result<Found> walk_back(store::Transaction& tx, const std::string& room_id, std::vector<std::string> frontier,
                          std::set<std::string> seen, std::int64_t limit, std::int64_t min_depth,
                          const ServerView& view) {
    Found found;
    int visited = 0;
    for (std::size_t next = 0; next < frontier.size() && static_cast<std::int64_t>(found.size()) < limit &&
                               visited++ < 4 * kMaxMissingEvents;
         ++next) {
      std::string id = frontier[next];
      auto e = impl.rooms.event(tx, id);
      if (!e) return tl::unexpected(e.error());
      if (!*e || (*e)->room_id != room_id) continue;
      auto p = impl.rooms.pdu(tx, id);
      if (!p) return tl::unexpected(p.error());
      const JsonValue* d = p->get("depth");
      std::int64_t depth = d && d->is_int() ? d->as_int() : 0;
      if (depth < min_depth) continue;
      if (view.visible((*e)->stream)) found.emplace_back(depth, (*e)->stream, canonical_json(*p));
      push_prevs(*p, seen, frontier);
    }
    return found;
  }

  // GET /v1/backfill/{roomId}?v=...&limit=: the given events and those before them along
  // prev_events, at most `limit` (capped at kMaxMissingEvents), newest first; events the
  // origin may not see are left out; 403 when none of its users is joined.
  net::HttpResponse backfill(const std::string& origin, const std::string& room_id, std::string_view query) {
    std::vector<std::string> from;
    std::string limit_s;
    for (std::string_view q = query; !q.empty();) {
      auto amp = q.find('&');
      std::string_view kv = q.substr(0, amp);
      auto eq = kv.find('=');
      if (eq != std::string_view::npos && kv.substr(0, eq) == "v") from.push_back(seg_decode(kv.substr(eq + 1)));
      if (eq != std::string_view::npos && kv.substr(0, eq) == "limit") limit_s = seg_decode(kv.substr(eq + 1));
      q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    }
    if (from.empty() || from.size() > 20) return fed_error(400, "M_INVALID_PARAM", "v: 1 to 20 event ids are required");
    std::int64_t limit = 0;
    for (char ch : limit_s) {
      if (ch < '0' || ch > '9') {
        limit = -1;
        break;
      }
      limit = std::min<std::int64_t>(limit * 10 + (ch - '0'), 1'000'000);
    }
    if (limit_s.empty() || limit <= 0) return fed_error(400, "M_INVALID_PARAM", "limit must be a positive integer");
    limit = std::min<std::int64_t>(limit, kMaxMissingEvents);
    auto r = impl.store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      auto view = server_view(tx, room_id, origin);
      if (!view) return tl::unexpected(view.error());
      if (!view->joined) return fail(Errc::permission_denied, "the server is not in the room");
      std::set<std::string> seen(from.begin(), from.end());
      auto found = walk_back(tx, room_id, from, std::move(seen), limit, 0, *view);
      if (!found) return tl::unexpected(found.error());
      std::sort(found->begin(), found->end(), std::greater<>());
      std::string out;
      for (std::size_t i = 0; i < found->size(); ++i) out += (i ? "," : "") + std::get<2>((*found)[i]);
      return out;
    });
    if (!r) return error_response(to_api_error(r.error()));
    return json_response(200, fmt::format("{{\"origin\":\"{}\",\"origin_server_ts\":{},\"pdus\":[{}]}}",
                                          impl.options.server_name, now(), *r));
  }

  // POST /v1/get_missing_events/{roomId}: walks back from latest_events along prev_events
  // until earliest_events, min_depth or `limit` events (at most kMaxMissingEvents; at most
  // 20 ids in each list), returning the events the origin may see, oldest first.
  net::HttpResponse get_missing_events(const std::string& origin, const std::string& room_id, const JsonValue& body) {
    auto id_list = [](const JsonValue* v, std::set<std::string>& out) {
      if (!v) return true;
      if (!v->is_array() || v->items().size() > 20) return false;
      for (const auto& i : v->items()) {
        if (!i.is_string() || i.as_string().empty() || i.as_string().size() > 255) return false;
        out.insert(i.as_string());
      }
      return true;
    };
    std::set<std::string> earliest, latest;
    if (!id_list(body.get("earliest_events"), earliest) || !id_list(body.get("latest_events"), latest) || latest.empty())
      return fed_error(400, "M_BAD_JSON", "earliest_events and latest_events must be lists of at most 20 event ids");
    std::int64_t limit = 10, min_depth = 0;
    if (const JsonValue* l = body.get("limit")) {
      if (!l->is_int() || l->as_int() < 1) return fed_error(400, "M_BAD_JSON", "limit must be a positive integer");
      limit = std::min<std::int64_t>(l->as_int(), kMaxMissingEvents);
    }
    if (const JsonValue* d = body.get("min_depth")) {
      if (!d->is_int() || d->as_int() < 0) return fed_error(400, "M_BAD_JSON", "min_depth must be a non-negative integer");
      min_depth = d->as_int();
    }
    auto r = impl.store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      auto view = server_view(tx, room_id, origin);
      if (!view) return tl::unexpected(view.error());
      if (!view->joined) return fail(Errc::permission_denied, "the server is not in the room");
      std::vector<std::string> frontier;
      std::set<std::string> seen(earliest.begin(), earliest.end());
      seen.insert(latest.begin(), latest.end());
      for (const auto& id : latest) {
        auto p = impl.rooms.pdu(tx, id);
        if (p && p->string_at("room_id") == room_id) push_prevs(*p, seen, frontier);
      }
      auto found = walk_back(tx, room_id, std::move(frontier), std::move(seen), limit, min_depth, *view);
      if (!found) return tl::unexpected(found.error());
      std::sort(found->begin(), found->end());
      std::string out = "{\"events\":[";
      for (std::size_t i = 0; i < found->size(); ++i) out += (i ? "," : "") + std::get<2>((*found)[i]);
      return out + "]}";
    });
    if (!r) return error_response(to_api_error(r.error()));
    return json_response(200, std::move(*r));
  }

  // A PDU whose prev events we lack (spec: "Retrieving missing events"): asks the origin for
  // the events between our newest event and it (one request, at most kMaxMissingEvents,
  // min_depth below our depth by as much) and processes them oldest first. Returns nullopt
  // when every prev event is then known; otherwise the state before the PDU from the
  // origin's /state_ids, which is used only when we hold every event it names (we keep no
  // outliers); an error when the gap cannot be closed.
  Result<std::optional<StateMap>> fill_gap(const std::string& origin, const std::string& room_id,
                                           const PduIntegrity& in, RoomVersion version) {
    auto missing = [&]() -> Result<std::vector<std::string>> {
      return impl.store.read_sync([&](store::Transaction& tx) -> Result<std::vector<std::string>> {
        std::vector<std::string> out;
        for (const auto& idv : in.pdu.get("prev_events")->items()) {
          auto s = impl.rooms.stream_of(tx, idv.as_string());
          if (!s) return tl::unexpected(s.error());
          if (!*s) out.push_back(idv.as_string());
        }
        return out;
      });
    };
    auto gap = missing();
    if (!gap) return tl::unexpected(gap.error());
    if (gap->empty()) return std::optional<StateMap>();
    auto room = impl.store.read_sync([&](store::Transaction& tx) { return impl.rooms.load_room(tx, room_id); });
    if (!room) return tl::unexpected(room.error());
    JsonValue req = JsonValue::object();
    req.set("earliest_events", JsonValue::array({JsonValue::string(room->last_event_id)}));
    req.set("latest_events", JsonValue::array({JsonValue::string(in.event_id)}));
    req.set("limit", JsonValue::integer(kMaxMissingEvents));
    req.set("min_depth", JsonValue::integer(std::max<std::int64_t>(0, room->depth - kMaxMissingEvents)));
    auto answer = federation_call(impl, f, origin, "POST",
                                  "/_matrix/federation/v1/get_missing_events/" + path_escape(room_id), &req);
    if (answer) {
      const JsonValue* events = answer->get("events");
      std::vector<std::pair<std::int64_t, PduIntegrity>> fetched;
      if (events && events->is_array())
        for (const auto& e : events->items()) {
          if (fetched.size() >= static_cast<std::size_t>(kMaxMissingEvents)) break;
          if (e.string_at("room_id") != room_id) continue;
          auto checked = integrity(e, version);
          if (!checked) continue;
          const JsonValue* d = checked->pdu.get("depth");
          fetched.emplace_back(d && d->is_int() ? d->as_int() : 0, std::move(*checked));
        }
      std::stable_sort(fetched.begin(), fetched.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (auto& [depth, e] : fetched) {
        auto got = receive(room_id, std::move(e));  // its own unknown prev events: an error, skipped
        if (got && got->outcome != "duplicate") f.missing_fetched->inc();
      }
      gap = missing();
      if (!gap) return tl::unexpected(gap.error());
      if (gap->empty()) return std::optional<StateMap>();
    } else {
      impl.log.info("matrix.federation.get_missing_events_failed", {{"origin", origin}, {"error", answer.error().message}});
    }
    // The gap stays open: the state before the PDU, as the origin sees it.
    auto ids = federation_call(impl, f, origin, "GET",
                               fmt::format("/_matrix/federation/v1/state_ids/{}?event_id={}", path_escape(room_id),
                                           path_escape(in.event_id)),
                               nullptr);
    if (!ids) return fail(Errc::unavailable, "missing prev events; state_ids: " + ids.error().message);
    const JsonValue* pdu_ids = ids->get("pdu_ids");
    if (!pdu_ids || !pdu_ids->is_array() || pdu_ids->items().size() > 100000)
      return fail(Errc::unavailable, "missing prev events; state_ids answer unusable");
    return impl.store.read_sync([&](store::Transaction& tx) -> Result<std::optional<StateMap>> {
      StateMap state;
      for (const auto& idv : pdu_ids->items()) {
        if (!idv.is_string()) continue;
        auto p = impl.rooms.pdu(tx, idv.as_string());
        if (!p && p.error().code == Errc::not_found)
          return fail(Errc::unavailable, fmt::format("missing prev events; state event {} unknown here", idv.as_string()));
        if (!p) return tl::unexpected(p.error());
        const JsonValue* sk = p->get("state_key");
        if (p->string_at("room_id") != room_id || !sk || !sk->is_string()) continue;
        state[{std::string(p->string_at("type")), sk->as_string()}] = idv.as_string();
      }
      f.gaps_skipped->inc();
      return std::optional<StateMap>(std::move(state));
    });
  }

  // PUT /v2/invite/{roomId}/{eventId}: a remote server invites one of our users. The event
  // must be an invite of an existing local user by a user of the origin, signed by the
  // origin with a matching content hash; we sign it too and keep it (with the stripped
  // invite_room_state, at most 50 events) until the user joins or rejects.
  net::HttpResponse invite(const std::string& origin, const std::string& room_id, const std::string& event_id,
                           const JsonValue& body) {
    auto version = parse_room_version(body.string_at("room_version"));
    if (!version) return fed_error(400, "M_INCOMPATIBLE_ROOM_VERSION", "unsupported room version");
    const JsonValue* ev = body.get("event");
    if (!ev || !ev->is_object()) return fed_error(400, "M_BAD_JSON", "event is required");
    const JsonValue* sk = ev->get("state_key");
    const JsonValue* c = ev->get("content");
    if (ev->string_at("type") != "m.room.member" || !sk || !sk->is_string() || !c ||
        c->string_at("membership") != "invite" || ev->string_at("room_id") != room_id ||
        server_of(ev->string_at("sender")) != origin)
      return fed_error(400, "M_BAD_JSON", "not an invite by a user of the requesting server");
    const std::string& invitee = sk->as_string();
    if (server_of(invitee) != impl.options.server_name)
      return fed_error(400, "M_BAD_JSON", "the invitee is not a user of this server");
    if (!impl.accounts.get_user(impl.options.server_name, invitee.substr(1, invitee.find(':') - 1)))
      return fed_error(404, "M_NOT_FOUND", "unknown user");
    auto checked = integrity(*ev, *version);
    if (!checked) return fed_error(403, "M_FORBIDDEN", checked.error().message);
    if (checked->redacted) return fed_error(403, "M_FORBIDDEN", "content hash does not match");
    if (checked->event_id != event_id) return fed_error(400, "M_BAD_JSON", "event id does not match the event");
    JsonValue signed_ev = *ev;
    JsonValue red = redact_event(signed_ev, *version);
    sign_json(red, impl.options.server_name, impl.key);
    signed_ev.set("signatures", *red.get("signatures"));
    // What the invitee's /sync shows: the stripped state, then the invite (client format).
    std::string state;
    if (const JsonValue* irs = body.get("invite_room_state"); irs && irs->is_array()) {
      for (const auto& e : irs->items()) {
        if (state.size() > 64 * 1024) break;
        if (!e.is_object() || e.string_at("type").empty()) continue;
        JsonValue out = JsonValue::object();
        for (auto key : {"content", "sender", "state_key", "type"})
          if (const JsonValue* m = e.get(key)) out.set(key, *m);
        state += (state.empty() ? "" : ",") + canonical_json(out);
      }
    }
    JsonValue client = JsonValue::object();
    for (auto key : {"content", "sender", "state_key", "type", "room_id", "origin_server_ts"})
      if (const JsonValue* m = signed_ev.get(key)) client.set(key, *m);
    client.set("event_id", JsonValue::string(event_id));
    state += (state.empty() ? "" : ",") + canonical_json(client);
    auto stored = impl.store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto known = tx.query_one("SELECT 1 FROM matrix_rooms WHERE room_id = ?", {room_id});
      if (!known) return tl::unexpected(known.error());
      if (*known) return false;  // we are in the room: the event arrives over /send too
      auto pos = tx.exec(
          "INSERT INTO matrix_positions(name, value) VALUES ('account_data', 1) "
          "ON CONFLICT(name) DO UPDATE SET value = value + 1");
      if (!pos) return tl::unexpected(pos.error());
      auto w = tx.exec(
          "INSERT INTO matrix_remote_invites(room_id, user_id, event_id, origin, room_version, pdu, invite_state, "
          "position, received_ms) VALUES (?,?,?,?,?,?,?,(SELECT value FROM matrix_positions WHERE name = "
          "'account_data'),?) ON CONFLICT(room_id, user_id) DO UPDATE SET event_id = excluded.event_id, "
          "origin = excluded.origin, room_version = excluded.room_version, pdu = excluded.pdu, "
          "invite_state = excluded.invite_state, position = excluded.position, received_ms = excluded.received_ms",
          {room_id, invitee, event_id, origin, std::string(room_version_id(*version)), canonical_json(signed_ev),
           state, now()});
      if (!w) return tl::unexpected(w.error());
      return true;
    });
    if (!stored) return error_response(to_api_error(stored.error()));
    if (*stored) impl.notify(0, {invitee});
    return json_response(200, "{\"event\":" + canonical_json(signed_ev) + "}");
  }

  // GET /v1/make_leave/{roomId}/{userId}: a leave template for a user of the origin.
  net::HttpResponse make_leave(const std::string& origin, const std::string& room_id, const std::string& user_id) {
    if (server_of(user_id) != origin) return fed_error(403, "M_FORBIDDEN", "the user is not of the requesting server");
    auto r = impl.store.read_sync([&](store::Transaction& tx) -> Result<RoomStore::BuiltEvent> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      JsonValue content = JsonValue::object();
      content.set("membership", JsonValue::string("leave"));
      return impl.rooms.build(tx, *room, NewEvent{"m.room.member", user_id, user_id, std::move(content), {}, {}, {}},
                              now());
    });
    if (!r) {
      if (r.error().code == Errc::permission_denied) return fed_error(403, "M_FORBIDDEN", r.error().message);
      return error_response(to_api_error(r.error()));
    }
    JsonValue ev = std::move(r->pdu);
    ev.erase("hashes");
    ev.erase("signatures");
    auto version = room_version(room_id);
    return json_response(200, "{\"event\":" + canonical_json(ev) + ",\"room_version\":\"" +
                                  std::string(room_version_id(*version)) + "\"}");
  }

  // PUT /v2/send_leave/{roomId}/{eventId}: the signed leave, received like any PDU.
  net::HttpResponse send_leave(const std::string& origin, const std::string& room_id, const std::string& event_id,
                               const JsonValue& body) {
    auto version = room_version(room_id);
    if (!version) return error_response(to_api_error(version.error()));
    const JsonValue* sk = body.get("state_key");
    const JsonValue* c = body.get("content");
    if (body.string_at("type") != "m.room.member" || !sk || !sk->is_string() ||
        sk->as_string() != body.string_at("sender") || server_of(body.string_at("sender")) != origin || !c ||
        c->string_at("membership") != "leave" || body.string_at("room_id") != room_id)
      return fed_error(400, "M_BAD_JSON", "not a leave event of a user of the requesting server");
    auto checked = integrity(body, *version);
    if (!checked) return fed_error(403, "M_FORBIDDEN", checked.error().message);
    if (checked->event_id != event_id) return fed_error(400, "M_BAD_JSON", "event id does not match the event");
    if (checked->redacted) return fed_error(400, "M_BAD_JSON", "content hash does not match");
    auto got = receive(room_id, std::move(*checked));
    if (!got) return error_response(to_api_error(got.error()));
    if (got->outcome != "accepted" && got->outcome != "duplicate")
      return fed_error(403, "M_FORBIDDEN", fmt::format("leave {}: {}", got->outcome, got->reason));
    return json_response(200, "{}");
  }

  // EDUs of a transaction (spec: "EDUs"): typing, read receipts and presence of users of the
  // origin only, in rooms where they are joined here; anything else is ignored (EDUs get no
  // per-item answer).
  void receive_edus(const std::string& origin, const JsonValue& edus) {
    for (const auto& edu : edus.items()) {
      const JsonValue* c = edu.get("content");
      if (!c || !c->is_object()) continue;
      std::string_view type = edu.string_at("edu_type");
      bool used = false;
      if (type == "m.typing") {
        used = receive_typing(origin, *c);
      } else if (type == "m.receipt") {
        for (const auto& [room_id, by_type] : c->members()) {
          const JsonValue* reads = by_type.get("m.read");
          if (!reads || !reads->is_object()) continue;
          for (const auto& [user, receipt] : reads->members()) {
            const JsonValue* ids = receipt.get("event_ids");
            if (server_of(user) != origin || !ids || !ids->is_array() || ids->items().empty() ||
                !ids->items().front().is_string())
              continue;
            if (impl.store_receipt(room_id, user, "m.read", ids->items().front().as_string(), "", /*federate=*/false))
              used = true;
          }
        }
      } else if (type == "m.direct_to_device") {
        used = receive_to_device(origin, *c);
      } else if (type == "m.presence") {
        const JsonValue* push = c->get("push");
        for (const auto& p : push && push->is_array() ? push->items() : std::vector<JsonValue>{}) {
          std::string user(p.string_at("user_id"));
          std::string_view state = p.string_at("presence");
          if (server_of(user) != origin || (state != "online" && state != "offline" && state != "unavailable")) continue;
          auto rooms_of = impl.store.read_sync([&](store::Transaction& tx) { return impl.rooms.memberships_of(tx, user); });
          if (!rooms_of || std::none_of(rooms_of->begin(), rooms_of->end(),
                                        [](const RoomStore::Membership& m) { return m.membership == "join"; }))
            continue;  // shares no room with us
          const JsonValue* msg = p.get("status_msg");
          std::optional<std::string> status;
          if (msg && msg->is_string() && msg->as_string().size() <= 1024) status = msg->as_string();
          if (impl.set_presence(user, state, status)) used = true;
        }
      }
      (used ? f.edus_received : f.edus_ignored)->inc();
    }
  }

  bool receive_typing(const std::string& origin, const JsonValue& c) {
    std::string room_id(c.string_at("room_id")), user(c.string_at("user_id"));
    const JsonValue* typing = c.get("typing");
    if (server_of(user) != origin || !typing || !typing->is_bool()) return false;
    auto m = impl.store.read_sync([&](store::Transaction& tx) { return impl.rooms.membership(tx, room_id, user); });
    if (!m || !*m || **m != "join") return false;
    constexpr std::int64_t kTimeoutMs = 30000;  // the spec's EDU has no timeout; the sender renews it
    std::int64_t serial = impl.typing.set(room_id, user, typing->as_bool(), now() + kTimeoutMs);
    if (typing->as_bool()) {
      std::weak_ptr<MatrixService::Impl> weak = impl.weak_from_this();
      impl.run_after(std::chrono::milliseconds(kTimeoutMs + 50), [weak] {
        if (auto self = weak.lock()) self->expire_typing();
      });
    }
    if (serial) impl.notify(0, {room_id});
    return true;
  }

  // The client-server key query / claim run for the local users of a federation request
  // (the same answers our own clients get; remote users in it are left out).
  ApiResult<std::string> local_e2e(const JsonValue& body, const char* field, bool claim) {
    const JsonValue* wanted = body.get(field);
    if (!wanted || !wanted->is_object() || wanted->members().size() > 1000)
      return api_error(400, "M_BAD_JSON", fmt::format("{} must be an object of at most 1000 users", field));
    JsonValue local = JsonValue::object();
    for (const auto& [user, v] : wanted->members())
      if (server_of(user) == impl.options.server_name) local.set(user, v);
    JsonValue req = JsonValue::object();
    req.set(field, std::move(local));
    Ctx ctx;
    ctx.http.body = canonical_json(req);
    return claim ? impl.keys_claim(ctx) : impl.keys_query(ctx);  // no user: local users only
  }

  // GET /v1/user/devices/{userId}
  net::HttpResponse user_devices(const std::string& user_id) {
    if (server_of(user_id) != impl.options.server_name) return fed_error(403, "M_FORBIDDEN", "not a user of this server");
    JsonValue body = JsonValue::object();
    JsonValue users = JsonValue::object();
    users.set(user_id, JsonValue::array());
    body.set("device_keys", std::move(users));
    auto r = local_e2e(body, "device_keys", false);
    if (!r) return error_response(r.error());
    auto keys = parse_json(*r, {std::size_t{64} << 20, 64});
    if (!keys) return fed_error(500, "M_UNKNOWN", "internal error");
    std::vector<JsonValue> devices;
    const JsonValue* dk = keys->get("device_keys");
    const JsonValue* mine = dk ? dk->get(user_id) : nullptr;
    for (const auto& [device, k] : mine ? mine->members() : std::vector<JsonValue::Member>{}) {
      JsonValue d = JsonValue::object();
      d.set("device_id", JsonValue::string(device));
      JsonValue stripped = k;
      stripped.erase("unsigned");
      d.set("keys", std::move(stripped));
      devices.push_back(std::move(d));
    }
    JsonValue out = JsonValue::object();
    out.set("user_id", JsonValue::string(user_id));
    out.set("stream_id", JsonValue::integer(0));
    out.set("devices", JsonValue::array(std::move(devices)));
    for (auto [from, to] : {std::pair{"master_keys", "master_key"}, std::pair{"self_signing_keys", "self_signing_key"}})
      if (const JsonValue* m = keys->get(from); m && m->get(user_id)) out.set(to, *m->get(user_id));
    return json_response(200, canonical_json(out));
  }

  // m.direct_to_device: to-device messages from a user of the origin to local users' devices
  // (deduplicated by the sender and message_id).
  bool receive_to_device(const std::string& origin, const JsonValue& c) {
    std::string sender(c.string_at("sender")), type(c.string_at("type")), message_id(c.string_at("message_id"));
    const JsonValue* messages = c.get("messages");
    if (server_of(sender) != origin || type.empty() || type.size() > 255 || message_id.empty() ||
        message_id.size() > 255 || !messages || !messages->is_object() || messages->members().size() > 1000)
      return false;
    std::map<std::string, std::vector<std::string>> devices_of;
    for (const auto& [user, per_device] : messages->members()) {
      if (server_of(user) != impl.options.server_name || !per_device.is_object()) continue;
      if (auto known = impl.accounts.list_devices(impl.options.server_name, user.substr(1, user.find(':') - 1)); known)
        for (const auto& d : *known) devices_of[user].push_back(d.device_id);
    }
    if (devices_of.empty()) return false;
    std::vector<std::string> targets;
    auto r = impl.store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto fresh = e2e::claim_to_device_txn(tx, sender, "federation:" + origin, message_id);
      if (!fresh) return tl::unexpected(fresh.error());
      if (!*fresh) return false;
      std::size_t queued = 0;
      for (const auto& [user, devices] : devices_of) {
        for (const auto& [device, content] : messages->get(user)->members()) {
          if (!content.is_object()) continue;
          std::string json = canonical_json(content);
          for (const auto& d : devices) {
            if (device != "*" && d != device) continue;
            if (++queued > 10'000) return fail(Errc::invalid_argument, "too many to-device messages");
            if (auto q = e2e::enqueue_to_device(tx, user, d, sender, type, json); !q) return tl::unexpected(q.error());
          }
        }
        targets.push_back(user);
      }
      return true;
    });
    if (!r) return false;
    if (!targets.empty()) impl.notify(0, std::move(targets));
    return true;
  }

  Result<PduIntegrity> integrity(const JsonValue& pdu, RoomVersion version) {
    if (!f.skip_checks) return check_pdu_integrity(pdu, version, *f.keys, now());
    return PduIntegrity{event_id_for(pdu, version), pdu, false};
  }

  Result<RoomVersion> room_version(const std::string& room_id) {
    return impl.store.read_sync([&](store::Transaction& tx) -> Result<RoomVersion> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      return room->version;
    });
  }

  net::HttpResponse make_join(const net::HttpRequest& req, const std::string& origin, const std::string& room_id,
                              const std::string& user_id) {
    if (server_of(user_id) != origin) return fed_error(403, "M_FORBIDDEN", "the user is not of the requesting server");
    auto r = impl.store.read_sync([&](store::Transaction& tx) -> Result<std::pair<RoomAppender, JsonValue>> {
      auto room = impl.rooms.load_room(tx, room_id);
      if (!room) return tl::unexpected(room.error());
      auto member = impl.rooms.state_event(tx, room_id, "m.room.member", user_id);
      if (!member) return tl::unexpected(member.error());
      JsonValue member_pdu;
      if (*member) {
        auto p = impl.rooms.pdu(tx, (*member)->event_id);
        if (!p) return tl::unexpected(p.error());
        member_pdu = std::move(*p);
      }
      return std::make_pair(std::move(*room), std::move(member_pdu));
    });
    if (!r) return error_response(to_api_error(r.error()));
    auto& [room, member] = *r;
    // ver=... lists the versions the joining server supports.
    bool supported = false;
    for (std::string_view q = req.query; !q.empty();) {
      auto amp = q.find('&');
      std::string_view kv = q.substr(0, amp);
      if (kv == fmt::format("ver={}", room_version_id(room.version))) supported = true;
      q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    }
    if (!supported)
      return fed_error(400, "M_INCOMPATIBLE_ROOM_VERSION", "the room's version is not one the server supports");
    JsonValue ev = JsonValue::object();
    ev.set("type", JsonValue::string("m.room.member"));
    ev.set("room_id", JsonValue::string(room_id));
    ev.set("sender", JsonValue::string(user_id));
    ev.set("state_key", JsonValue::string(user_id));
    JsonValue content = JsonValue::object();
    content.set("membership", JsonValue::string("join"));
    ev.set("content", std::move(content));
    ev.set("origin_server_ts", JsonValue::integer(now()));
    ev.set("depth", JsonValue::integer(std::min(room.depth + 1, kMaxSafeInteger)));
    ev.set("prev_events", JsonValue::array({JsonValue::string(room.last_event_id)}));
    std::vector<JsonValue> auth;
    for (const auto& key : auth_types_for(ev)) {
      if (key == StateKey("m.room.member", user_id)) {
        if (!member.is_null()) auth.push_back(JsonValue::string(event_id_for(member, room.version)));
        continue;
      }
      if (auto it = room.state.find(key); it != room.state.end()) auth.push_back(JsonValue::string(it->second.event_id));
    }
    ev.set("auth_events", JsonValue::array(std::move(auth)));
    StateLookup state = [&](std::string_view type, std::string_view key) -> const JsonValue* {
      if (type == "m.room.member" && key == user_id) return member.is_null() ? nullptr : &member;
      return room.lookup(type, key);
    };
    if (auto ok = check_event_auth(ev, room.version, state); !ok) return fed_error(403, "M_FORBIDDEN", ok.error().message);
    std::string out = "{\"event\":" + canonical_json(ev) + ",\"room_version\":\"" +
                      std::string(room_version_id(room.version)) + "\"}";
    return json_response(200, std::move(out));
  }

  net::HttpResponse send_join(const std::string& origin, const std::string& room_id, const std::string& event_id,
                              const JsonValue& body) {
    auto version = room_version(room_id);
    if (!version) return error_response(to_api_error(version.error()));
    const JsonValue* sk = body.get("state_key");
    const JsonValue* c = body.get("content");
    if (body.string_at("type") != "m.room.member" || !sk || !sk->is_string() || sk->as_string() != body.string_at("sender") ||
        server_of(body.string_at("sender")) != origin || !c || c->string_at("membership") != "join" ||
        body.string_at("room_id") != room_id)
      return fed_error(400, "M_BAD_JSON", "not a join event of a user of the requesting server");
    auto checked = integrity(body, *version);
    if (!checked) return fed_error(403, "M_FORBIDDEN", checked.error().message);
    if (checked->event_id != event_id) return fed_error(400, "M_BAD_JSON", "event id does not match the event");
    if (checked->redacted) return fed_error(400, "M_BAD_JSON", "content hash does not match");
    // The state the joining server gets: the current state before the join.
    auto state_before = impl.store.read_sync([&](store::Transaction& tx) { return impl.rooms.current_state_map(tx, room_id); });
    if (!state_before) return error_response(to_api_error(state_before.error()));
    auto got = receive(room_id, std::move(*checked));
    if (!got) return error_response(to_api_error(got.error()));
    if (got->outcome != "accepted" && got->outcome != "duplicate")
      return fed_error(403, "M_FORBIDDEN", fmt::format("join {}: {}", got->outcome, got->reason));
    auto out = impl.store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
      std::map<std::string, JsonValue, std::less<>> cache;
      EventLookup lookup = [&](std::string_view id) -> const JsonValue* {
        if (auto it = cache.find(id); it != cache.end()) return &it->second;
        auto p = impl.rooms.pdu(tx, id);
        if (!p) return nullptr;
        return &cache.emplace(std::string(id), std::move(*p)).first->second;
      };
      std::vector<std::string> ids;
      std::string state = "[";
      for (const auto& [key, id] : *state_before) {
        const JsonValue* e = lookup(id);
        if (!e) continue;
        if (state.size() > 1) state += ",";
        state += canonical_json(*e);
        ids.push_back(id);
      }
      ids.push_back(event_id);
      auto chain = auth_chain(ids, lookup);
      if (!chain) return tl::unexpected(chain.error());
      std::string auth = "[";
      for (const auto& id : *chain)
        if (const JsonValue* e = lookup(id)) {
          if (auth.size() > 1) auth += ",";
          auth += canonical_json(*e);
        }
      JsonWriter w;
      w.begin_object().key("origin").value(impl.options.server_name).key("members_omitted").value(false).end_object();
      std::string head = w.take();
      head.pop_back();
      return head + ",\"state\":" + state + "],\"auth_chain\":" + auth + "],\"event\":" + canonical_json(body) + "}";
    });
    if (!out) return error_response(to_api_error(out.error()));
    return json_response(200, std::move(*out));
  }

  net::HttpResponse send(const std::string& origin, const JsonValue& body) {
    if (!body.string_at("origin").empty() && body.string_at("origin") != origin)
      return fed_error(400, "M_BAD_JSON", "origin does not match the request's");
    const JsonValue* pdus = body.get("pdus");
    const JsonValue* edus = body.get("edus");
    if (!pdus || !pdus->is_array()) return fed_error(400, "M_BAD_JSON", "pdus must be an array");
    if (pdus->items().size() > 50 || (edus && edus->is_array() && edus->items().size() > 100))
      return fed_error(400, "M_BAD_JSON", "at most 50 PDUs and 100 EDUs per transaction");
    std::string results = "{";
    for (const auto& pdu : pdus->items()) {
      std::string room_id(pdu.string_at("room_id"));
      std::string id_for_reply;
      std::string error;
      auto version = room_version(room_id);
      if (!version) {
        error = "unknown room";
      } else {
        id_for_reply = event_id_for(pdu, *version);
        auto checked = integrity(pdu, *version);
        if (!checked) {
          error = checked.error().message;
          f.received->inc();
          f.rejected->inc();
          impl.log.info("matrix.federation.pdu_dropped", {{"event_id", id_for_reply}, {"reason", error}});
        } else {
          auto gap = fill_gap(origin, room_id, *checked, *version);
          Result<Received> got = fail(Errc::internal, "not processed");
          if (gap) got = receive(room_id, std::move(*checked), *gap ? &**gap : nullptr);
          else got = tl::unexpected(gap.error());
          if (!got) error = got.error().message;
          else if (got->outcome == "rejected") error = "rejected: " + got->reason;
          // Soft-failed events are not errors to the sender (spec).
        }
      }
      if (id_for_reply.empty()) continue;
      if (results.size() > 1) results += ",";
      json_escape_to(results, id_for_reply);
      if (error.empty()) {
        results += ":{}";
      } else {
        results += ":{\"error\":";
        json_escape_to(results, error);
        results += "}";
      }
    }
    if (edus && edus->is_array()) receive_edus(origin, *edus);
    return json_response(200, "{\"pdus\":" + results + "}}");
  }

  void dispatch(net::HttpRequest&& req, net::Respond respond) {
    auto segs = split_path(req.path);  // "", "_matrix", "federation", "v1", ...
    if (segs.size() < 5) return respond(fed_error(404, "M_UNRECOGNIZED", "Unrecognized request"));
    std::string_view ver = segs[3], op = segs[4];
    if (req.method == "GET" && ver == "v1" && op == "version" && segs.size() == 5) {
      return respond(json_response(200, R"({"server":{"name":"hearth","version":"0.1"}})"));
    }
    std::optional<JsonValue> body;
    if (!req.body.empty()) {
      if (static_cast<std::int64_t>(req.body.size()) > f.max_body_bytes)
        return respond(fed_error(413, "M_TOO_LARGE", "request too large"));
      auto j = parse_json(req.body, kBodyLimits);
      if (!j || !j->is_object()) return respond(fed_error(400, "M_NOT_JSON", "the body is not a JSON object"));
      body = std::move(*j);
    }
    auto origin = authenticate(req, body ? &*body : nullptr);
    if (!origin) return respond(error_response(origin.error()));
    if (req.method == "GET" && ver == "v1" && op == "make_join" && segs.size() == 7)
      return respond(make_join(req, *origin, segs[5], segs[6]));
    if (req.method == "PUT" && ver == "v2" && op == "send_join" && segs.size() == 7 && body)
      return respond(send_join(*origin, segs[5], segs[6], *body));
    if (req.method == "PUT" && ver == "v1" && op == "send" && segs.size() == 6 && body)
      return respond(send(*origin, *body));
    if (req.method == "PUT" && ver == "v2" && op == "invite" && segs.size() == 7 && body)
      return respond(invite(*origin, segs[5], segs[6], *body));
    if (req.method == "GET" && ver == "v1" && op == "make_leave" && segs.size() == 7)
      return respond(make_leave(*origin, segs[5], segs[6]));
    if (req.method == "PUT" && ver == "v2" && op == "send_leave" && segs.size() == 7 && body)
      return respond(send_leave(*origin, segs[5], segs[6], *body));
    if (req.method == "POST" && ver == "v1" && op == "user" && segs.size() == 7 && segs[5] == "keys" &&
        (segs[6] == "query" || segs[6] == "claim")) {
      bool claim = segs[6] == "claim";
      auto r = local_e2e(body ? *body : JsonValue::object(), claim ? "one_time_keys" : "device_keys", claim);
      return respond(r ? json_response(200, std::move(*r)) : error_response(r.error()));
    }
    if (req.method == "GET" && ver == "v1" && op == "user" && segs.size() == 7 && segs[5] == "devices")
      return respond(user_devices(segs[6]));
    if (req.method == "GET" && ver == "v1" && op == "backfill" && segs.size() == 6)
      return respond(backfill(*origin, segs[5], req.query));
    if (req.method == "GET" && ver == "v1" && op == "event" && segs.size() == 6)
      return respond(get_event(*origin, segs[5]));
    if (req.method == "GET" && ver == "v1" && (op == "state_ids" || op == "state") && segs.size() == 6)
      return respond(get_state(*origin, segs[5], query_value(req.query, "event_id"), op == "state_ids"));
    if (req.method == "POST" && ver == "v1" && op == "get_missing_events" && segs.size() == 6)
      return respond(get_missing_events(*origin, segs[5], body ? *body : JsonValue::object()));
    respond(fed_error(404, "M_UNRECOGNIZED", "Unrecognized request"));
  }
};

const std::vector<store::Migration>& federation_migrations() {
  static const std::vector<store::Migration> list = {
      {1, "invites of local users to rooms of other servers (until joined or rejected)", R"sql(
CREATE TABLE matrix_remote_invites(
  room_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  origin TEXT NOT NULL,
  room_version TEXT NOT NULL,
  pdu TEXT NOT NULL,
  invite_state TEXT NOT NULL,
  position INTEGER NOT NULL,
  received_ms INTEGER NOT NULL,
  PRIMARY KEY(room_id, user_id)) WITHOUT ROWID;
CREATE INDEX matrix_remote_invites_user ON matrix_remote_invites(user_id);
)sql"},
      {2, "where our copy of a joined remote room starts (backfill continues there)", R"sql(
CREATE TABLE matrix_backfill_points(
  room_id TEXT PRIMARY KEY,
  event_ids TEXT NOT NULL);
)sql"},
  };
  return list;
}

Result<std::vector<std::pair<std::string, std::string>>> MatrixService::Impl::remote_invites(
    store::Transaction& tx, const std::string& user_id, std::int64_t since_position) {
  std::vector<std::pair<std::string, std::string>> out;
  auto r = tx.query("SELECT room_id, invite_state FROM matrix_remote_invites WHERE user_id = ? AND position > ? "
                    "ORDER BY position",
                    {user_id, since_position},
                    [&](const store::Row& row) { out.emplace_back(row.text(0), row.text(1)); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

namespace {

// The server that invited `user_id` to `room_id`, if we hold such an invite.
Result<std::optional<std::string>> invite_origin(store::Transaction& tx, const std::string& room_id,
                                                 const std::string& user_id) {
  auto row = tx.query_one("SELECT origin FROM matrix_remote_invites WHERE room_id = ? AND user_id = ?",
                          {room_id, user_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(std::string((*row)->text(0)));
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::invite_remote(Ctx& ctx, const std::string& room_id,
                                                          const std::string& target, const std::string& reason) {
  Federation& f = *federation;
  JsonValue content = JsonValue::object();
  content.set("membership", JsonValue::string("invite"));
  if (!reason.empty()) content.set("reason", JsonValue::string(reason));
  NewEvent ne{"m.room.member", target, ctx.user_id, std::move(content), {}, {}, {}};
  struct Prepared {
    RoomStore::BuiltEvent ev;
    RoomVersion version;
    std::string state;
  };
  auto prepared = store.read_sync([&](store::Transaction& tx) -> Result<Prepared> {
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    auto built = rooms.build(tx, *room, ne, clock.now_ms());
    if (!built) return tl::unexpected(built.error());
    std::string state = "[";
    auto add = [&](const JsonValue& pdu) {
      JsonValue out = JsonValue::object();
      for (auto key : {"content", "sender", "state_key", "type"})
        if (const JsonValue* m = pdu.get(key)) out.set(key, *m);
      state += (state.size() > 1 ? "," : "") + canonical_json(out);
    };
    for (auto type : {"m.room.create", "m.room.join_rules", "m.room.name", "m.room.canonical_alias", "m.room.avatar",
                      "m.room.encryption", "m.room.topic"})
      if (const JsonValue* e = room->lookup(type, "")) add(*e);
    if (const JsonValue* e = room->lookup("m.room.member", ctx.user_id)) add(*e);
    return Prepared{std::move(*built), room->version, state + "]"};
  });
  if (!prepared) return tl::unexpected(to_api_error(prepared.error()));
  auto irs = parse_json(prepared->state, {std::size_t{1} << 24, 64});
  JsonValue req = JsonValue::object();
  req.set("event", prepared->ev.pdu);
  req.set("room_version", JsonValue::string(std::string(room_version_id(prepared->version))));
  req.set("invite_room_state", irs ? std::move(*irs) : JsonValue::array());
  std::string dest(server_of(target));
  auto answer = federation_call(*this, f, dest, "PUT",
                                fmt::format("/_matrix/federation/v2/invite/{}/{}", path_escape(room_id),
                                            path_escape(prepared->ev.event_id)),
                                &req);
  if (!answer) return api_error(answer.error().code == Errc::permission_denied ? 403 : 502, "M_FORBIDDEN",
                                "invite: " + answer.error().message);
  // The answer must be our event, now signed by the invitee's server too.
  const JsonValue* back = answer->get("event");
  if (!back || !back->is_object() || event_id_for(*back, prepared->version) != prepared->ev.event_id)
    return api_error(502, "M_UNKNOWN", "invite: the answer is not our event");
  if (auto ok = verify_server_signature(redact_event(*back, prepared->version), dest, *f.keys, clock.now_ms()); !ok)
    return api_error(502, "M_UNKNOWN", "invite: the invitee's server did not sign it: " + ok.error().message);
  RoomStore::BuiltEvent signed_ev{prepared->ev.event_id, *back};
  auto stored = store.write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    return rooms.append_built(tx, *room, signed_ev, "", "", clock.now_ms());
  });
  if (!stored) return tl::unexpected(to_api_error(stored.error()));
  notify(stored->stream, {room_id, target});
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::reject_remote_invite(Ctx& ctx, const std::string& room_id) {
  Federation& f = *federation;
  auto origin = store.read_sync([&](store::Transaction& tx) { return invite_origin(tx, room_id, ctx.user_id); });
  if (!origin) return tl::unexpected(to_api_error(origin.error()));
  if (!*origin) return api_error(404, "M_NOT_FOUND", "unknown room");
  const std::string& dest = **origin;
  auto tmpl = federation_call(*this, f, dest, "GET",
                              fmt::format("/_matrix/federation/v1/make_leave/{}/{}", path_escape(room_id),
                                          path_escape(ctx.user_id)),
                              nullptr);
  // The inviting server may be gone or refuse: the invite is forgotten here all the same.
  std::string error;
  if (tmpl) {
    auto version = parse_room_version(tmpl->string_at("room_version"));
    const JsonValue* ev_in = tmpl->get("event");
    if (version && ev_in && ev_in->is_object() && ev_in->string_at("type") == "m.room.member" &&
        ev_in->string_at("sender") == ctx.user_id && ev_in->string_at("room_id") == room_id) {
      JsonValue ev = *ev_in;
      JsonValue content = JsonValue::object();
      content.set("membership", JsonValue::string("leave"));
      ev.set("content", std::move(content));
      ev.set("origin_server_ts", JsonValue::integer(clock.now_ms()));
      ev.erase("hashes");
      ev.erase("signatures");
      std::string event_id = hash_and_sign_event(ev, *version, options.server_name, key);
      auto sent = federation_call(*this, f, dest, "PUT",
                                  fmt::format("/_matrix/federation/v2/send_leave/{}/{}", path_escape(room_id),
                                              path_escape(event_id)),
                                  &ev);
      if (!sent) error = "send_leave: " + sent.error().message;
    } else {
      error = "make_leave: unusable answer";
    }
  } else {
    error = "make_leave: " + tmpl.error().message;
  }
  if (!error.empty())
    log.info("matrix.federation.reject_invite_failed", {{"room_id", room_id}, {"origin", dest}, {"error", error}});
  auto removed = store.write_sync([&](store::Transaction& tx) -> Result<void> {
    auto r = tx.exec("DELETE FROM matrix_remote_invites WHERE room_id = ? AND user_id = ?", {room_id, ctx.user_id});
    if (!r) return tl::unexpected(r.error());
    return ok();
  });
  if (!removed) return tl::unexpected(to_api_error(removed.error()));
  notify(0, {ctx.user_id});
  return std::string("{}");
}

MatrixService::Impl::RemoteKeys MatrixService::Impl::remote_keys(const JsonValue& wanted, bool claim) {
  RemoteKeys out;
  if (!federation) return out;
  std::map<std::string, JsonValue> by_server;
  for (const auto& [user, v] : wanted.members()) {
    std::string server(server_of(user));
    if (server.empty() || server == options.server_name) continue;
    auto [it, fresh] = by_server.try_emplace(server, JsonValue::object());
    if (it->second.members().size() < 1000) it->second.set(user, v);
  }
  auto add = [](std::string& list, const std::string& user, const JsonValue& v) {
    list += (list.empty() ? "" : ",") + json_quote(user) + ":" + canonical_json(v);
  };
  for (auto& [server, users] : by_server) {
    JsonValue req = JsonValue::object();
    req.set(claim ? "one_time_keys" : "device_keys", std::move(users));
    auto answer = federation_call(*this, *federation, server, "POST",
                                  claim ? "/_matrix/federation/v1/user/keys/claim" : "/_matrix/federation/v1/user/keys/query",
                                  &req);
    if (!answer) {
      out.failures += (out.failures.empty() ? "" : ",") + json_quote(server) + ":" +
                      fmt::format(R"({{"errcode":"M_UNAVAILABLE","error":{}}})", json_quote(answer.error().message));
      continue;
    }
    // Only what the server may speak for: its own users.
    auto take = [&](const char* field, std::string& list) {
      const JsonValue* m = answer->get(field);
      if (!m || !m->is_object()) return;
      for (const auto& [user, v] : m->members())
        if (server_of(user) == server && v.is_object()) add(list, user, v);
    };
    if (claim) {
      take("one_time_keys", out.one_time_keys);
    } else {
      take("device_keys", out.device_keys);
      take("master_keys", out.master_keys);
      take("self_signing_keys", out.self_signing_keys);
    }
  }
  return out;
}

void MatrixService::Impl::remote_to_device(const std::string& sender, const std::string& type, const std::string& txn,
                                           const JsonValue& messages) {
  if (!federation) return;
  std::map<std::string, JsonValue> by_server;
  for (const auto& [user, per_device] : messages.members()) {
    std::string server(server_of(user));
    if (server.empty() || server == options.server_name || !per_device.is_object()) continue;
    by_server.try_emplace(server, JsonValue::object()).first->second.set(user, per_device);
  }
  for (auto& [server, users] : by_server) {
    JsonValue c = JsonValue::object();
    c.set("sender", JsonValue::string(sender));
    c.set("type", JsonValue::string(type));
    c.set("message_id", JsonValue::string(txn));
    c.set("messages", std::move(users));
    federation_edu_to({server}, "m.direct_to_device", c);
  }
}

Result<int> MatrixService::Impl::backfill_room(const std::string& room_id, int limit) {
  Federation& f = *federation;
  struct Point {
    std::vector<std::string> ids;
    std::vector<std::string> servers;
    RoomVersion version = RoomVersion::v11;
  };
  auto point = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<Point>> {
    auto row = tx.query_one("SELECT event_ids FROM matrix_backfill_points WHERE room_id = ?", {room_id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<Point>();
    Point p;
    auto ids = parse_json((*row)->text(0), {1 << 20, 8});
    if (ids && ids->is_array())
      for (const auto& i : ids->items())
        if (i.is_string() && p.ids.size() < 20) p.ids.push_back(i.as_string());
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    p.version = room->version;
    std::set<std::string> servers;
    auto q = tx.query("SELECT user_id FROM matrix_members WHERE room_id = ? AND membership = 'join'", {room_id},
                      [&](const store::Row& r) {
                        std::string_view s = server_of(r.text(0));
                        if (!s.empty() && s != options.server_name) servers.insert(std::string(s));
                      });
    if (!q) return tl::unexpected(q.error());
    std::string creator(server_of(room_id));
    if (servers.erase(creator)) p.servers.push_back(creator);
    p.servers.insert(p.servers.end(), servers.begin(), servers.end());
    if (p.servers.size() > 3) p.servers.resize(3);
    return std::optional<Point>(std::move(p));
  });
  if (!point) return tl::unexpected(point.error());
  if (!*point || (*point)->ids.empty()) return 0;
  const Point& pt = **point;
  std::string query;
  for (const auto& id : pt.ids) query += "v=" + path_escape(id) + "&";
  query += fmt::format("limit={}", std::clamp(limit, 1, static_cast<int>(kMaxMissingEvents)));
  Result<JsonValue> answer = fail(Errc::unavailable, "no server to backfill from");
  for (const auto& server : pt.servers) {
    answer = federation_call(*this, f, server, "GET",
                             fmt::format("/_matrix/federation/v1/backfill/{}?{}", path_escape(room_id), query), nullptr);
    if (answer) break;
  }
  if (!answer) return tl::unexpected(answer.error());
  // Checked like the events of a send_join answer: integrity, then the auth rules against
  // their auth events (stored, or earlier in this batch), oldest first.
  std::vector<std::pair<std::int64_t, PduIntegrity>> batch;
  const JsonValue* pdus = answer->get("pdus");
  for (const auto& pdu : pdus && pdus->is_array() ? pdus->items() : std::vector<JsonValue>{}) {
    if (batch.size() >= static_cast<std::size_t>(kMaxMissingEvents) || pdu.string_at("room_id") != room_id) continue;
    auto checked = check_pdu_integrity(pdu, pt.version, *f.keys, clock.now_ms());
    if (!checked) continue;
    const JsonValue* d = checked->pdu.get("depth");
    batch.emplace_back(d && d->is_int() ? d->as_int() : 0, std::move(*checked));
  }
  std::stable_sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  auto stored = store.write_sync([&](store::Transaction& tx) -> Result<int> {
    std::map<std::string, JsonValue, std::less<>> cache;
    EventLookup lookup = [&](std::string_view id) -> const JsonValue* {
      if (auto it = cache.find(id); it != cache.end()) return &it->second;
      auto p = rooms.pdu(tx, id);
      if (!p || p->string_at("room_id") != room_id) return nullptr;
      return &cache.emplace(std::string(id), std::move(*p)).first->second;
    };
    std::vector<const PduIntegrity*> good;
    std::set<std::string> in_batch;
    for (const auto& [depth, e] : batch) {
      auto known = rooms.stream_of(tx, e.event_id);
      if (!known) return tl::unexpected(known.error());
      if (*known || in_batch.count(e.event_id)) continue;
      std::map<StateKey, const JsonValue*> auth;
      bool usable = true;
      for (const auto& a : e.pdu.get("auth_events")->items()) {
        const JsonValue* ae = lookup(a.as_string());
        if (!ae) {
          usable = false;
          break;
        }
        const JsonValue* ask = ae->get("state_key");
        auth[{std::string(ae->string_at("type")), ask && ask->is_string() ? ask->as_string() : ""}] = ae;
      }
      StateLookup from_auth = [&auth](std::string_view type, std::string_view key) -> const JsonValue* {
        auto it = auth.find(StateKey(std::string(type), std::string(key)));
        return it == auth.end() ? nullptr : it->second;
      };
      if (!usable || !check_event_auth(e.pdu, pt.version, from_auth)) continue;
      cache.emplace(e.event_id, e.pdu);
      in_batch.insert(e.event_id);
      good.push_back(&e);
    }
    auto min = tx.query_one("SELECT MIN(stream) FROM matrix_events");
    if (!min) return tl::unexpected(min.error());
    std::int64_t next = std::min<std::int64_t>(*min && !(*min)->is_null(0) ? (*min)->integer(0) : 1, 1) - 1;
    auto room = rooms.load_room(tx, room_id);
    if (!room) return tl::unexpected(room.error());
    // Newest first, each below the one before: pagination shows them in depth order.
    for (auto it = good.rbegin(); it != good.rend(); ++it) {
      auto a = rooms.insert_event(tx, *room, (*it)->event_id, (*it)->pdu, canonical_json((*it)->pdu), "", "", false,
                                  clock.now_ms(), next--);
      if (!a) return tl::unexpected(a.error());
    }
    // The next backfill starts at the prev events of the answer still unknown (events we
    // already had, like the state from send_join, are passed through).
    std::set<std::string> frontier;
    for (const auto& [depth, e] : batch)
      for (const auto& p : e.pdu.get("prev_events")->items()) {
        auto known = rooms.stream_of(tx, p.as_string());
        if (!known) return tl::unexpected(known.error());
        if (!*known) frontier.insert(p.as_string());
      }
    Result<std::int64_t> w = 0;
    if (frontier.empty()) {
      w = tx.exec("DELETE FROM matrix_backfill_points WHERE room_id = ?", {room_id});
    } else {
      std::vector<JsonValue> ids;
      for (const auto& id : frontier)
        if (ids.size() < 20) ids.push_back(JsonValue::string(id));
      w = tx.exec("UPDATE matrix_backfill_points SET event_ids = ? WHERE room_id = ?",
                  {canonical_json(JsonValue::array(std::move(ids))), room_id});
    }
    if (!w) return tl::unexpected(w.error());
    return static_cast<int>(good.size());
  });
  if (stored && *stored > 0) f.backfilled->inc(static_cast<std::uint64_t>(*stored));
  return stored;
}

ApiResult<std::string> MatrixService::Impl::join_remote(Ctx& ctx, const std::string& room_id) {
  Federation& f = *federation;
  // Invited: ask the inviting server; otherwise the room's creator's.
  auto invited = store.read_sync([&](store::Transaction& tx) { return invite_origin(tx, room_id, ctx.user_id); });
  if (!invited) return tl::unexpected(to_api_error(invited.error()));
  std::string dest = *invited ? **invited : std::string(server_of(room_id));
  auto tmpl = federation_call(*this, f, dest, "GET",
                              fmt::format("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11", path_escape(room_id),
                                          path_escape(ctx.user_id)),
                              nullptr);
  if (!tmpl) return api_error(tmpl.error().code == Errc::permission_denied ? 403 : 502, "M_FORBIDDEN",
                              "make_join: " + tmpl.error().message);
  auto version = parse_room_version(tmpl->string_at("room_version"));
  const JsonValue* ev_in = tmpl->get("event");
  if (!version || !ev_in || !ev_in->is_object()) return api_error(502, "M_UNKNOWN", "make_join: unusable answer");
  JsonValue ev = *ev_in;
  if (ev.string_at("type") != "m.room.member" || ev.string_at("sender") != ctx.user_id ||
      ev.string_at("room_id") != room_id)
    return api_error(502, "M_UNKNOWN", "make_join: the template is not our join");
  auto content = store.read_sync([&](store::Transaction& tx) { return member_content(tx, ctx.user_id, "join"); });
  if (!content) return tl::unexpected(to_api_error(content.error()));
  ev.set("content", std::move(*content));
  ev.set("origin_server_ts", JsonValue::integer(clock.now_ms()));
  ev.erase("hashes");
  ev.erase("signatures");
  std::string event_id = hash_and_sign_event(ev, *version, options.server_name, key);
  auto answer = federation_call(*this, f, dest, "PUT",
                                fmt::format("/_matrix/federation/v2/send_join/{}/{}", path_escape(room_id),
                                            path_escape(event_id)),
                                &ev);
  if (!answer) return api_error(502, "M_UNKNOWN", "send_join: " + answer.error().message);
  // Every event of the answer: integrity, then the auth rules against its own auth events,
  // oldest (by depth) first; what fails is left out.
  std::map<std::string, JsonValue, std::less<>> events;
  std::vector<std::string> state_ids;
  for (const char* part : {"auth_chain", "state"}) {
    const JsonValue* list = answer->get(part);
    if (!list || !list->is_array() || list->items().size() > 100000)
      return api_error(502, "M_UNKNOWN", "send_join: no state/auth_chain");
    for (const auto& pdu : list->items()) {
      if (pdu.string_at("room_id") != room_id) continue;
      auto checked = check_pdu_integrity(pdu, *version, *f.keys, clock.now_ms());
      if (!checked || checked->redacted) continue;
      if (std::string_view(part) == "state") state_ids.push_back(checked->event_id);
      events.emplace(checked->event_id, std::move(checked->pdu));
    }
  }
  std::vector<std::pair<std::int64_t, std::string>> order;
  for (const auto& [id, pdu] : events) {
    const JsonValue* d = pdu.get("depth");
    order.emplace_back(d && d->is_int() ? d->as_int() : 0, id);
  }
  std::sort(order.begin(), order.end());
  std::set<std::string> good;
  for (const auto& [depth, id] : order) {
    const JsonValue& pdu = events.at(id);
    std::map<StateKey, const JsonValue*> auth;
    bool known = true;
    for (const auto& a : pdu.get("auth_events")->items()) {
      if (!good.count(a.as_string())) {
        known = false;
        break;
      }
      const JsonValue& ae = events.at(a.as_string());
      auth[{std::string(ae.string_at("type")), ae.get("state_key") ? ae.get("state_key")->as_string() : ""}] = &ae;
    }
    if (!known) continue;
    StateLookup lookup = [&auth](std::string_view type, std::string_view key) -> const JsonValue* {
      auto it = auth.find(StateKey(std::string(type), std::string(key)));
      return it == auth.end() ? nullptr : it->second;
    };
    if (check_event_auth(pdu, *version, lookup)) good.insert(id);
  }
  auto stored = store.write_sync([&](store::Transaction& tx) -> Result<AppendedEvent> {
    RoomAppender room = rooms.new_room(room_id, *version);
    std::map<std::string, std::int64_t> streams;
    for (const auto& [depth, id] : order) {
      if (!good.count(id)) continue;
      auto known = rooms.stream_of(tx, id);
      if (!known) return tl::unexpected(known.error());
      if (*known) {
        streams[id] = **known;
        continue;
      }
      const JsonValue& pdu = events.at(id);
      auto a = rooms.insert_event(tx, room, id, pdu, canonical_json(pdu), "", "", false, clock.now_ms());
      if (!a) return tl::unexpected(a.error());
      streams[id] = a->stream;
    }
    for (const auto& id : state_ids) {
      if (!good.count(id)) continue;
      const JsonValue& pdu = events.at(id);
      const JsonValue* sk = pdu.get("state_key");
      const JsonValue* c = pdu.get("content");
      if (!sk || !sk->is_string()) continue;
      if (auto w = rooms.set_state_row(tx, room_id, std::string(pdu.string_at("type")), sk->as_string(), streams[id],
                                       c ? c->string_at("membership") : std::string_view());
          !w)
        return tl::unexpected(w.error());
    }
    auto loaded = rooms.load_room(tx, room_id);
    if (!loaded) return tl::unexpected(loaded.error());
    if (auto r = tx.exec("DELETE FROM matrix_remote_invites WHERE room_id = ? AND user_id = ?", {room_id, ctx.user_id}); !r)
      return tl::unexpected(r.error());
    if (const JsonValue* prevs = ev.get("prev_events"); prevs && prevs->is_array() && !prevs->items().empty())
      if (auto r = tx.exec("INSERT OR REPLACE INTO matrix_backfill_points(room_id, event_ids) VALUES (?, ?)",
                           {room_id, canonical_json(*prevs)});
          !r)
        return tl::unexpected(r.error());
    return rooms.insert_event(tx, *loaded, event_id, ev, canonical_json(ev), "", "", true, clock.now_ms());
  });
  if (!stored) return tl::unexpected(to_api_error(stored.error()));
  notify(stored->stream, {room_id, ctx.user_id});
  JsonWriter w;
  w.begin_object().key("room_id").value(room_id).end_object();
  return w.take();
}

// For media_api.cc (remote media): the X-Matrix origin of a request, and signed GETs.
ApiResult<std::string> MatrixService::Impl::federation_origin(const net::HttpRequest& req) {
  FederationHandlers h{*this, *federation};
  return h.authenticate(req, nullptr);
}

Result<net::ClientResponse> MatrixService::Impl::federation_get(const std::string& destination, const std::string& target,
                                                                std::size_t max_response_bytes) {
  Destination d = resolve_server(*federation, destination);
  net::ClientRequest req;
  req.host = d.host;
  req.port = d.port;
  req.tls_name = d.tls_name;
  req.target = target;
  req.max_response_bytes = max_response_bytes;
  req.headers.push_back({"Authorization", x_matrix_header("GET", target, options.server_name, destination, nullptr, key)});
  return federation->client->request(req);
}

void MatrixService::Impl::install_federation_routes(net::Router& router) {
  std::shared_ptr<Impl> self = shared_from_this();
  net::RouteOptions o;
  o.blocking = true;
  o.max_body_bytes = federation->max_body_bytes;
  for (const char* prefix : {"/_matrix/federation/v1/", "/_matrix/federation/v2/"})
    router.add_prefix("*", prefix,
                      [self](net::HttpRequest&& req, net::Respond respond) {
                        FederationHandlers h{*self, *self->federation};
                        h.dispatch(std::move(req), std::move(respond));
                      },
                      o);
}

}  // namespace hearth::matrix
