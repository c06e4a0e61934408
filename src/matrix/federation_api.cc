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
#include <set>

#include <fmt/format.h>

#include "core/json.h"
#include "matrix/auth_rules.h"
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
  // Outgoing: one pump pass at a time; per destination the back-off after a failure.
  std::mutex out_mu;
  bool pumping = false, again = false;                 // guarded by out_mu
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

net::HttpResponse fed_error(int status, std::string errcode, std::string error) {
  return error_response({status, std::move(errcode), std::move(error)});
}

}  // namespace

Result<void> MatrixService::Impl::init_federation() {
  auto f = std::make_shared<Federation>();
  net::HttpsClientOptions co;
  co.ca_file = options.federation_ca_file;
  co.timeout_ms = options.federation_timeout_ms;
  co.max_response_bytes = 1 << 20;
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
  federation = std::move(f);
  return ok();
}

namespace {
constexpr std::int64_t kMinBackoffMs = 1000, kMaxBackoffMs = 3600 * 1000;
}

void MatrixService::Impl::federation_pump() {
  Federation& f = *federation;
  {
    std::lock_guard lock(f.out_mu);
    if (f.pumping) {
      f.again = true;
      return;
    }
    f.pumping = true;
    f.again = false;
  }
  auto self = shared_from_this();
  bool queued = offload([self] {
    Federation& f = *self->federation;
    for (;;) {
      auto dests = self->store.read_sync([&](store::Transaction& tx) { return self->rooms.outbox_destinations(tx); });
      if (dests) {
        for (const auto& dest : *dests) {
          std::int64_t now = self->clock.now_ms();
          {
            std::lock_guard lock(f.out_mu);
            auto it = f.backoff.find(dest);
            if (it != f.backoff.end() && it->second.next_ms > now) continue;  // its timer pumps again
          }
          for (;;) {  // batches of 50 until the queue is empty or a send fails
            auto rows = self->store.read_sync([&](store::Transaction& tx) { return self->rooms.outbox(tx, dest, 50); });
            if (!rows || rows->empty()) break;
            std::string body = fmt::format("{{\"origin\":\"{}\",\"origin_server_ts\":{},\"pdus\":[", self->options.server_name,
                                           self->clock.now_ms());
            for (std::size_t i = 0; i < rows->size(); ++i) body += (i ? "," : "") + (*rows)[i].pdu_json;
            body += "]}";
            auto parsed = parse_json(body, kBodyLimits);
            // The transaction id is the first row's id: a retry resends the same transaction.
            std::string target = fmt::format("/_matrix/federation/v1/send/{}", rows->front().id);
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
            if (ok) {
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
            f.send_failures->inc();
            auto& b = f.backoff[dest];
            b.delay_ms = std::clamp(b.delay_ms * 2, kMinBackoffMs, kMaxBackoffMs);
            b.next_ms = self->clock.now_ms() + b.delay_ms;
            self->log.info("matrix.federation.send_failed",
                           {{"destination", dest},
                            {"error", resp ? fmt::format("HTTP {}", resp->status) : resp.error().message},
                            {"retry_ms", std::to_string(b.delay_ms)}});
            std::weak_ptr<Impl> weak = self;
            self->run_after(std::chrono::milliseconds(b.delay_ms), [weak] {
              if (auto s = weak.lock()) s->federation_pump();
            });
            break;
          }
        }
      }
      std::lock_guard lock(f.out_mu);
      if (!f.again) {
        f.pumping = false;
        return;
      }
      f.again = false;
    }
  });
  if (!queued) {
    std::lock_guard lock(f.out_mu);
    f.pumping = false;
  }
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
  Result<Received> receive(const std::string& room_id, PduIntegrity in) {
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
      for (const auto& idv : pdu.get("prev_events")->items()) {
        auto s = impl.rooms.stream_of(tx, idv.as_string());
        if (!s) return tl::unexpected(s.error());
        if (!*s) return fail(Errc::not_found, fmt::format("unknown prev event {} (fetching missing events is not supported yet)", idv.as_string()));
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
          auto got = receive(room_id, std::move(*checked));
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
    respond(fed_error(404, "M_UNRECOGNIZED", "Unrecognized request"));
  }
};

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

ApiResult<std::string> MatrixService::Impl::join_remote(Ctx& ctx, const std::string& room_id) {
  Federation& f = *federation;
  std::string dest(server_of(room_id));
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
