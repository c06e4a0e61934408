#include "core/config.h"

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/log.h"

namespace hearth {
namespace {

struct Binding {
  std::string_view key;
  std::string_view default_value;
  std::string_view description;
  // Returns an error message (empty on success). `node` is the TOML value.
  std::function<std::string(const toml::node&, Config&)> set;
};

std::string type_error(std::string_view want) { return fmt::format("expected {}", want); }

// An integer key of any width, checked against [min, max] before it is narrowed.
template <typename T>
auto integer_field(T Config::*field, std::int64_t min, std::int64_t max) {
  return [field, min, max](const toml::node& n, Config& c) -> std::string {
    auto v = n.value<std::int64_t>();
    if (!n.is_integer() || !v) return type_error("an integer");
    if (*v < min || *v > max) return fmt::format("must be between {} and {}", min, max);
    c.*field = static_cast<T>(*v);
    return {};
  };
}

auto bool_field(bool Config::*field) {
  return [field](const toml::node& n, Config& c) -> std::string {
    if (!n.is_boolean()) return type_error("true or false");
    c.*field = *n.value<bool>();
    return {};
  };
}

auto double_field(double Config::*field, double min, double max) {
  return [field, min, max](const toml::node& n, Config& c) -> std::string {
    if (!n.is_number()) return type_error("a number");
    double v = *n.value<double>();
    if (v < min || v > max) return fmt::format("must be between {} and {}", min, max);
    c.*field = v;
    return {};
  };
}

auto string_field(std::string Config::*field, std::vector<std::string_view> allowed = {}) {
  return [field, allowed](const toml::node& n, Config& c) -> std::string {
    if (!n.is_string()) return type_error("a string");
    std::string v = *n.value<std::string>();
    if (!allowed.empty()) {
      bool found = false;
      for (auto a : allowed) found |= (a == v);
      if (!found) {
        std::string list;
        for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        return fmt::format("must be one of: {}", list);
      }
    }
    c.*field = std::move(v);
    return {};
  };
}

auto string_list_field(std::vector<std::string> Config::*field, bool may_be_empty = false) {
  return [field, may_be_empty](const toml::node& n, Config& c) -> std::string {
    const auto* arr = n.as_array();
    if (!arr) return type_error("an array of strings");
    std::vector<std::string> out;
    for (const auto& e : *arr) {
      if (!e.is_string()) return type_error("an array of strings");
      out.push_back(*e.value<std::string>());
    }
    if (out.empty() && !may_be_empty) return "must not be empty";
    c.*field = std::move(out);
    return {};
  };
}

const std::vector<Binding>& bindings() {
  static const std::vector<Binding> list = {
      {"server.data_dir", "\"./data\"", "Directory for the database, blobs, TLS material and the admin socket.",
       string_field(&Config::data_dir)},
      {"server.shards", "0", "Event-loop threads; 0 means one per CPU core.",
       integer_field(&Config::shards, 0, 256)},
      {"server.drain_seconds", "10", "On SIGTERM, how long in-flight requests may take before connections are closed.",
       integer_field(&Config::drain_seconds, 0, 3600)},
      {"server.stall_warning_ms", "100", "An event-loop turn longer than this is logged with the handler's name and counted in /metrics (`hearth_loop_stalls_total`) (incident I09).",
       integer_field(&Config::stall_warning_ms, 1, 600000)},

      {"domain[].name", "\"localhost\"", "A domain (virtual host) served by this instance; the first is the primary domain.", nullptr},
      {"domain[].registration", "\"invite\"", "Who may create accounts: `closed`, `invite` (an invitation is required) or `open`.", nullptr},
      {"domain[].tls_cert", "\"\"", "PEM certificate chain for the domain; empty: a self-signed certificate generated once in `<data_dir>/tls/`.", nullptr},
      {"domain[].tls_key", "\"\"", "PEM private key for `tls_cert`.", nullptr},

      {"http.bind", "[\"127.0.0.1\"]", "Addresses the HTTP listeners bind to.",
       string_list_field(&Config::http_bind)},
      {"http.port", "8008", "Plain HTTP port (Matrix, WebSocket, uploads, /health, /metrics); 0 picks a free port, -1 disables.",
       integer_field(&Config::http_port, -1, 65535)},
      {"http.https_port", "8443", "HTTP over TLS port (SNI selects the domain's certificate, ALPN `http/1.1`); 0 picks a free port, -1 disables.",
       integer_field(&Config::https_port, -1, 65535)},
      {"http.max_body_bytes", "1048576", "Largest request body accepted; larger bodies get 413.",
       integer_field(&Config::http_max_body_bytes, 0, std::int64_t{1} << 40)},
      {"http.max_header_bytes", "16384", "Largest request head (request line and headers); larger gets 431.",
       integer_field(&Config::http_max_header_bytes, 1024, 1 << 20)},
      {"http.idle_timeout_seconds", "60", "Keep-alive connections idle this long are closed.",
       integer_field(&Config::http_idle_timeout_seconds, 1, 86400)},
      {"http.public_url", "\"\"", "Base URL users reach this server at (printed links, invitations); empty: derived from the first listener.",
       string_field(&Config::public_url)},

      {"xmpp.bind", "[\"127.0.0.1\"]", "Addresses the XMPP client listeners bind to.",
       string_list_field(&Config::xmpp_bind)},
      {"xmpp.c2s_port", "5222", "XMPP client port (RFC 6120; STARTTLS is required before authentication); 0 picks a free port, -1 disables.",
       integer_field(&Config::xmpp_c2s_port, -1, 65535)},
      {"xmpp.c2s_tls_port", "5223", "XMPP client port with TLS from the first byte (XEP-0368, ALPN `xmpp-client`); 0 picks a free port, -1 disables.",
       integer_field(&Config::xmpp_c2s_tls_port, -1, 65535)},
      {"xmpp.max_stanza_bytes", "262144", "Largest stanza a client may send; larger closes the stream with `policy-violation`.",
       integer_field(&Config::xmpp_max_stanza_bytes, 10000, 64 << 20)},
      {"xmpp.read_bytes_per_second", "65536", "Per-connection read rate after authentication (token bucket, 8 s of burst).",
       integer_field(&Config::xmpp_read_bytes_per_second, 1024, std::int64_t{1} << 32)},
      {"xmpp.max_offline_messages", "500", "Messages kept per account while it is offline; past it senders get `resource-constraint`.",
       integer_field(&Config::xmpp_max_offline_messages, 0, 1'000'000)},
      {"xmpp.max_roster_items", "1000", "Contacts per account.",
       integer_field(&Config::xmpp_max_roster_items, 1, 1'000'000)},
      {"xmpp.pep_max_item_bytes", "131072", "Largest PEP item payload (an avatar, an OMEMO bundle), serialised.",
       integer_field(&Config::xmpp_pep_max_item_bytes, 1024, 16 << 20)},
      {"xmpp.pep_max_nodes", "256", "PEP nodes per account.", integer_field(&Config::xmpp_pep_max_nodes, 1, 100'000)},
      {"xmpp.pep_max_items", "1000", "Items a PEP node keeps at most (what pubsub#max_items 'max' means).",
       integer_field(&Config::xmpp_pep_max_items, 1, 100'000)},
      {"xmpp.fast_token_ttl_days", "21", "Lifetime of XEP-0484 FAST tokens (one-round-trip logins of mobile clients); rotated daily while in use.",
       integer_field(&Config::xmpp_fast_token_ttl_days, 1, 3650)},
      {"xmpp.archive_retention_days", "0", "Days the message archive (XEP-0313) keeps a message; 0 keeps it forever. An account can have its own value (`hearthctl user retention`).",
       integer_field(&Config::xmpp_archive_retention_days, 0, 36500)},
      {"xmpp.archive_purge_interval_seconds", "3600", "How often expired archived messages are deleted (in small batches that never hold the database for long).",
       integer_field(&Config::xmpp_archive_purge_interval_seconds, 1, 86400)},
      {"xmpp.muc", "true", "Group chat (XEP-0045) at `conference.<domain>` for every domain.", bool_field(&Config::xmpp_muc)},
      {"xmpp.muc_max_users_per_room", "1000", "Most occupants a room may be configured to hold.",
       integer_field(&Config::xmpp_muc_max_users_per_room, 2, 100'000)},
      {"upload.enabled", "true", "File sharing (XEP-0363) at `upload.<domain>`, served by hearth's HTTP listeners under `/upload/`.",
       bool_field(&Config::upload_enabled)},
      {"upload.max_file_bytes", "104857600", "Largest file one upload may hold (I12: 100 MiB).",
       integer_field(&Config::upload_max_file_bytes, 1024, std::int64_t{1} << 40)},
      {"upload.daily_quota_bytes", "209715200", "Bytes one account may upload over any 24 hours (I12: 200 MiB).",
       integer_field(&Config::upload_daily_quota_bytes, 1024, std::int64_t{1} << 44)},
      {"upload.expiry_days", "14", "Uploaded files are deleted this many days after upload (I12: two weeks).",
       integer_field(&Config::upload_expiry_days, 1, 36500)},
      {"xmpp.idle_timeout_seconds", "600", "A client connection that sends nothing (not even a whitespace keepalive) this long is closed.",
       integer_field(&Config::xmpp_idle_timeout_seconds, 10, 86400)},
      {"xmpp.resume_timeout_seconds", "300", "Stream management (XEP-0198): how long a session whose connection dropped waits for its client to resume it; then its unacknowledged messages go to offline storage.",
       integer_field(&Config::xmpp_resume_timeout_seconds, 1, 86400)},
      {"xmpp.channel_binding", "true", "Offer SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS with TLS channel binding (`tls-exporter`, `tls-server-end-point`), advertised with XEP-0440 and preferred: a man in the middle with another certificate, even a valid one, cannot complete them (incident I13). Turn off only when a TLS-terminating proxy sits in front of hearth, where no binding can match.",
       bool_field(&Config::xmpp_channel_binding)},
      {"xmpp.strict_channel_binding", "false", "Refuse SCRAM logins that say the client could bind to the channel but saw no -PLUS mechanism (RFC 5802 downgrade detection). Off by default because older clients (slixmpp 1.8) say so when they only know `tls-unique`, which TLS 1.3 lacks; turn it on when every client speaks `tls-exporter` (incident I13).",
       bool_field(&Config::xmpp_strict_channel_binding)},
      {"xmpp.s2s_enabled", "true", "Federation with other XMPP servers (RFC 6120 server-to-server): TLS required, the peer's certificate verified for its domain, SASL EXTERNAL or XEP-0220 dialback inside TLS. Off: stanzas to other domains get `remote-server-not-found`.",
       bool_field(&Config::xmpp_s2s_enabled)},
      {"xmpp.s2s_port", "5269", "Server-to-server port (STARTTLS required, peers must present a certificate); 0 picks a free port, -1 disables incoming federation.",
       integer_field(&Config::xmpp_s2s_port, -1, 65535)},
      {"xmpp.s2s_static_routes", "[]", "Where to reach remote domains without DNS: entries `\"domain=host:port\"` (host may be `[v6]`), tried before DNS SRV (`_xmpp-server._tcp`).",
       string_list_field(&Config::xmpp_s2s_static_routes, true)},
      {"xmpp.s2s_ca_file", "\"\"", "Trust anchors (PEM) for remote servers' certificates; with `s2s_ca_dir` both empty, the system trust store.",
       string_field(&Config::xmpp_s2s_ca_file)},
      {"xmpp.s2s_ca_dir", "\"\"", "A hashed CA directory (`openssl rehash`) for remote servers' certificates.",
       string_field(&Config::xmpp_s2s_ca_dir)},
      {"xmpp.s2s_dialback", "true", "Accept and use XEP-0220 dialback, only inside TLS and only for a domain the peer's verified certificate names (no unverified dialback).",
       bool_field(&Config::xmpp_s2s_dialback)},
      {"xmpp.s2s_bidi", "true", "Bidirectional server-to-server streams (XEP-0288): a peer's stream also carries our stanzas back, so one connection serves both directions.",
       bool_field(&Config::xmpp_s2s_bidi)},
      {"xmpp.s2s_max_pending_bytes", "8388608", "Stanzas received on one server-to-server stream and not yet delivered (the peer sends faster than they are stored and routed); past it the stream ends with `policy-violation` (a flood). Reading is also bounded by 4x `xmpp.read_bytes_per_second`.",
       integer_field(&Config::xmpp_s2s_max_pending_bytes, 4096, std::int64_t{1} << 32)},
      {"xmpp.s2s_queue_max_stanzas", "1000", "Stanzas waiting per remote domain while its connection is being set up; past it senders get `resource-constraint`.",
       integer_field(&Config::xmpp_s2s_queue_max_stanzas, 1, 1'000'000)},
      {"xmpp.s2s_connect_timeout_seconds", "10", "Resolution plus TCP connect to a remote server.",
       integer_field(&Config::xmpp_s2s_connect_timeout_seconds, 1, 600)},
      {"xmpp.s2s_retry_initial_seconds", "2", "Wait before retrying a failed remote connection; doubled after each failure.",
       integer_field(&Config::xmpp_s2s_retry_initial_seconds, 1, 3600)},
      {"xmpp.s2s_retry_max_seconds", "300", "Longest wait between retries.",
       integer_field(&Config::xmpp_s2s_retry_max_seconds, 1, 86400)},
      {"xmpp.s2s_max_attempts", "5", "Connection attempts before the stanzas waiting for a remote domain bounce (`remote-server-not-found`, or `remote-server-timeout` if it was reachable before).",
       integer_field(&Config::xmpp_s2s_max_attempts, 1, 1000)},

      {"contact.abuse", "[]", "Where to report abuse (URIs such as `mailto:abuse@example.org`, `xmpp:abuse@example.org`); published with XEP-0157.",
       string_list_field(&Config::contact_abuse, true)},
      {"contact.admin", "[]", "How to reach the administrators (URIs).", string_list_field(&Config::contact_admin, true)},
      {"contact.security", "[]", "Where to report security issues (URIs).", string_list_field(&Config::contact_security, true)},
      {"contact.status", "[]", "Where the service's status is published (URIs, such as the static status page).",
       string_list_field(&Config::contact_status, true)},
      {"contact.support", "[]", "Where users get help (URIs).", string_list_field(&Config::contact_support, true)},

      {"turn.host", "\"\"", "STUN/TURN server (coturn) offered to clients for calls (XEP-0215); empty: none.",
       string_field(&Config::turn_host)},
      {"turn.port", "3478", "STUN and TURN port (UDP and TCP).", integer_field(&Config::turn_port, 1, 65535)},
      {"turn.tls_port", "0", "TURN over TLS port (`turns:`); 0: not offered.", integer_field(&Config::turn_tls_port, 0, 65535)},
      {"turn.secret", "\"\"", "coturn's `static-auth-secret`: TURN credentials are derived from it (username `expiry:user`, password base64 HMAC-SHA1); empty: STUN only.",
       string_field(&Config::turn_secret)},
      {"turn.ttl_seconds", "86400", "Lifetime of TURN credentials handed to a client.",
       integer_field(&Config::turn_ttl_seconds, 60, 30 * 86400)},
      {"cryptpad.enabled", "true", "Serve the CryptPad-compatible backend (netflux websocket, history keeper, RPC, `/api/config`, `/api/broadcast`) on the HTTP listeners.",
       bool_field(&Config::cryptpad_enabled)},
      {"cryptpad.websocket_path", "\"/cryptpad_websocket\"", "Path of the CryptPad websocket on the HTTP listeners.",
       string_field(&Config::cryptpad_websocket_path)},
      {"cryptpad.max_message_bytes", "1048576", "Largest websocket frame a CryptPad client may send; larger closes the connection (1009).",
       integer_field(&Config::cryptpad_max_message_bytes, 1024, 64 << 20)},
      {"cryptpad.ping_after_seconds", "15", "A CryptPad connection silent this long gets a server PING.",
       integer_field(&Config::cryptpad_ping_after_seconds, 1, 3600)},
      {"cryptpad.idle_timeout_seconds", "60", "A CryptPad connection silent this long (no frame, no PONG) is closed.",
       integer_field(&Config::cryptpad_idle_timeout_seconds, 2, 86400)},
      {"cryptpad.storage_limit_bytes", "52428800", "Storage quota per user key: pinned documents plus the files it uploaded or pinned; PIN past it fails with `E_OVER_LIMIT`, an upload with `NOT_ENOUGH_SPACE`.",
       integer_field(&Config::cryptpad_storage_limit_bytes, 0, std::int64_t{1} << 50)},
      {"cryptpad.max_upload_bytes", "20971520", "Largest CryptPad file upload (encrypted bytes), advertised in `/api/config`; `UPLOAD_STATUS` past it answers `TOO_LARGE`.",
       integer_field(&Config::cryptpad_max_upload_bytes, 0, std::int64_t{1} << 40)},
      {"cryptpad.http_unsafe_origin", "\"\"", "Main origin of the CryptPad web application, advertised in `/api/config` (e.g. `https://pad.example.org`).",
       string_field(&Config::cryptpad_http_unsafe_origin)},
      {"cryptpad.http_safe_origin", "\"\"", "Sandbox origin of the CryptPad web application, advertised in `/api/config`.",
       string_field(&Config::cryptpad_http_safe_origin)},
      {"cryptpad.instance_name", "\"\"", "Instance name shown by CryptPad's front page (`/api/instance`); empty: the host name.",
       string_field(&Config::cryptpad_instance_name)},
      {"cryptpad.instance_description", "\"\"", "Instance description shown by CryptPad's front page (`/api/instance`).",
       string_field(&Config::cryptpad_instance_description)},
      {"cryptpad.instance_location", "\"\"", "Where the instance is hosted, shown by CryptPad (`/api/instance`).",
       string_field(&Config::cryptpad_instance_location)},
      {"cryptpad.instance_notice", "\"\"", "A notice shown on CryptPad's front page (`/api/instance`).",
       string_field(&Config::cryptpad_instance_notice)},
      {"cryptpad.admin_keys", "[]", "Public signing keys (`edPublic`, base64, or CryptPad's `[user@host/KEY]` form) of the CryptPad administrators; more can be added from the admin panel (decrees).",
       string_list_field(&Config::cryptpad_admin_keys, true)},
      {"cryptpad.web_root", "\"\"", "A CryptPad checkout (holding `www/`, `customize.dist/`, `src/common/`) whose web application hearth serves on every path no other route takes, with CryptPad's security headers; empty: no web application.",
       string_field(&Config::cryptpad_web_root)},
      {"matrix.server_name", "\"\"", "Matrix server name: the part after `:` in `@user:server` and room ids; empty: the primary domain. Never change it once users exist.",
       string_field(&Config::matrix_server_name)},
      {"matrix.default_room_version", "\"11\"", "Room version of new rooms when the client names none: `10` or `11`.",
       string_field(&Config::matrix_default_room_version, {"10", "11"})},
      {"matrix.max_sync_timeout_seconds", "30", "Longest a `/sync` request waits for new events; longer client timeouts are shortened to this.",
       integer_field(&Config::matrix_max_sync_timeout_seconds, 0, 300)},
      {"matrix.max_upload_bytes", "52428800", "Largest Matrix media upload, at most `upload.max_file_bytes` (the smaller of the two is advertised as `m.upload.size`); larger: 413 `M_TOO_LARGE`, refused from the declared length before the body is read.",
       integer_field(&Config::matrix_max_upload_bytes, 1, std::int64_t{4} << 30)},
      {"matrix.media_quota_bytes", "1073741824", "Total size of the media one Matrix user may upload; past it uploads answer 403 `M_FORBIDDEN`. Matrix media also count against `upload.daily_quota_bytes`, shared with the account's XMPP uploads.",
       integer_field(&Config::matrix_media_quota_bytes, 0, std::int64_t{1} << 50)},
      {"matrix.media_retention_days", "0", "Matrix media are deleted this many days after upload (the blob store purges them in batches, as XMPP uploads after `upload.expiry_days`); 0 keeps them.",
       integer_field(&Config::matrix_media_retention_days, 0, 36500)},
      {"matrix.max_pending_uploads", "10", "Most asynchronous uploads (`POST /_matrix/media/v1/create`) one user may have created and not yet sent; past it 429 `M_LIMIT_EXCEEDED`. Unused ones expire after 24 hours.",
       integer_field(&Config::matrix_max_pending_uploads, 1, 10000)},
      {"matrix.coalesce_requests", "true", "Identical expensive Matrix reads (a room's full state, also in initial syncs) at the same room version are computed once and shared by the requests asking at once (incident I15); `false` computes each one.",
       bool_field(&Config::matrix_coalesce_requests)},
      {"matrix.max_pushers_per_user", "20", "Pushers (`/pushers/set`) one Matrix user may have; past it 400 `M_LIMIT_EXCEEDED`.",
       integer_field(&Config::matrix_max_pushers_per_user, 1, 1000)},
      {"matrix.push_queue_per_pusher", "100", "Notifications waiting for one push gateway (kept across restarts while it is unreachable); past it the oldest is dropped, with a `matrix.push.dropped` log line.",
       integer_field(&Config::matrix_push_queue_per_pusher, 1, 100000)},
      {"matrix.push_timeout_seconds", "10", "Longest one request to a push gateway may take; a timeout is retried with back-off.",
       integer_field(&Config::matrix_push_timeout_seconds, 1, 300)},
      {"matrix.push_to_private_addresses", "false", "Allow push gateways whose host resolves to a loopback, private, link-local or other non-public address; `false` refuses them (a user could otherwise make the server send requests into its own network).",
       bool_field(&Config::matrix_push_to_private_addresses)},
      {"matrix.federation", "false", "Serve the Matrix server-server API (`/_matrix/federation/`): remote users join public rooms here and their servers send events, checked per the spec (incident I19). First slice: see docs/matrix.md, \"Federation\".",
       bool_field(&Config::matrix_federation)},
      {"matrix.federation_destinations", "[]", "Where to reach remote Matrix servers without `.well-known`: entries `\"server=host:port\"` (host may be `[v6]`); the certificate must name the server.",
       string_list_field(&Config::matrix_federation_destinations, true)},
      {"matrix.federation_ca_file", "\"\"", "Trust anchors (PEM) for remote Matrix servers' certificates; empty: the system trust store.",
       string_field(&Config::matrix_federation_ca_file)},
      {"matrix.federation_timeout_seconds", "10", "Longest one outgoing federation request (key fetch, `.well-known`) may take.",
       integer_field(&Config::matrix_federation_timeout_seconds, 1, 300)},
      {"matrix.federation_insecure_skip_checks_for_tests", "false", "TEST ONLY, never on a real server: incoming PDUs skip the signature, hash and authorization checks and overwrite the room state (the failure of incident I19, for its defence-off test run).",
       bool_field(&Config::matrix_federation_insecure_skip_checks_for_tests)},

      {"limits.max_connections", "10000", "Connections open at once, all listeners together; past it new connections are closed at once.",
       integer_field(&Config::max_connections, 1, 10'000'000)},
      {"limits.max_connections_per_ip", "100", "Connections open at once from one IP address.",
       integer_field(&Config::max_connections_per_ip, 1, 10'000'000)},
      {"limits.requests_per_second_per_ip", "50", "Sustained HTTP requests per second per IP address (token bucket); past it: 429 with Retry-After.",
       double_field(&Config::requests_per_second_per_ip, 0.001, 1e9)},
      {"limits.request_burst_per_ip", "100", "Requests one IP address may send in a burst before the per-second rate applies.",
       integer_field(&Config::request_burst_per_ip, 1, 10'000'000)},
      {"limits.max_inflight_requests", "1000", "Requests being worked on at once; past it: 503 with Retry-After at once (never queued). /health and /metrics are exempt.",
       integer_field(&Config::max_inflight_requests, 1, 10'000'000)},
      {"limits.fd_reserve", "128", "File descriptors kept beyond `max_connections` for storage, health checks and the admin socket.",
       integer_field(&Config::fd_reserve, 16, 1'000'000)},

      {"store.readers", "4", "SQLite reader connections (each on its own thread).",
       integer_field(&Config::store_readers, 1, 64)},
      {"store.max_batch", "256", "Most writes committed together in one transaction (group commit).",
       integer_field(&Config::store_max_batch, 1, 100000)},
      {"store.queue_limit", "10000", "Writes or reads waiting at once; past it storage answers `unavailable` at once.",
       integer_field(&Config::store_queue_limit, 1, 10'000'000)},

      {"accounts.scram_iterations", "4096", "PBKDF2 iterations for the SCRAM-SHA-1 and SCRAM-SHA-256 stored keys.",
       integer_field(&Config::scram_iterations, 4096, 10'000'000)},
      {"accounts.invite_ttl_hours", "168", "Lifetime of a new invitation.",
       integer_field(&Config::invite_ttl_hours, 1, 24 * 365 * 10)},
      {"accounts.token_ttl_days", "0", "Lifetime of access tokens; 0 means they do not expire.",
       integer_field(&Config::token_ttl_days, 0, 36500)},

      {"ops.admin_socket", "\"\"", "Unix socket for hearthctl (mode 0600); empty: `<data_dir>/hearthd.sock`.",
       string_field(&Config::admin_socket)},
      {"ops.health_interval_seconds", "10", "How often health checks (disk, paths, database, descriptors) run.",
       integer_field(&Config::health_interval_seconds, 1, 3600)},
      {"ops.disk_warning_percent", "80", "Disk use (bytes or inodes) at which /health reports a warning.",
       integer_field(&Config::disk_warning_percent, 1, 100)},
      {"ops.disk_high_percent", "90", "Disk use at which the warning is raised to high (still a warning, logged each check).",
       integer_field(&Config::disk_high_percent, 1, 100)},
      {"ops.disk_critical_percent", "95", "Disk use at which /health reports critical.",
       integer_field(&Config::disk_critical_percent, 1, 100)},
      {"ops.disk_reserve_mib", "256", "Free space (MiB) under which hearthd enters read-only mode: reads, logins and history keep working, every write gets the protocol's \"try later\" error; it leaves the mode by itself once 1.25 times this, and at least 8 MiB more than this, is free again (incident I02).",
       integer_field(&Config::disk_reserve_mib, 0, 1 << 30)},
      {"ops.disk_reserve_inodes", "1000", "Free inodes under which hearthd enters read-only mode, like `disk_reserve_mib` (incident I03).",
       integer_field(&Config::disk_reserve_inodes, 0, 1 << 30)},
      {"ops.wal_warning_mib", "256", "Size of the database's write-ahead log (MiB) at which /health warns that checkpoints are not keeping up.",
       integer_field(&Config::wal_warning_mib, 1, 1 << 30)},
      {"ops.database_max_mib", "0", "Largest the database may grow (its file plus its WAL, MiB); 0: no limit but the disk. /health warns at `disk_warning_percent` and `disk_high_percent` of it, and hearthd enters read-only mode at `disk_critical_percent` of it (leaving it once under `disk_high_percent` again), so the database never hits a quota, a volume or a filesystem's file-size limit in the middle of a write; SQLite itself refuses to grow past the cap (`PRAGMA max_page_count`) as a backstop between two checks (incident I03).",
       integer_field(&Config::database_max_mib, 0, 1 << 30)},
      {"ops.open_files_warning_percent", "80", "Share of the open-files limit (RLIMIT_NOFILE) in use at which /health warns (incident I03).",
       integer_field(&Config::open_files_warning_percent, 1, 100)},
      {"ops.open_files_critical_percent", "95", "Share of the open-files limit in use at which /health reports critical.",
       integer_field(&Config::open_files_critical_percent, 1, 100)},
      {"ops.read_only_at_reserve", "true", "Enter read-only mode at the reserve floor. Off: hearthd only warns, and writes run until the disk is full (for tests of the defence; do not turn it off in production).",
       bool_field(&Config::read_only_at_reserve)},
      {"ops.status_page", "true", "Write a static status page (`index.html`) and an Atom feed (`feed.atom`) from the health checks and admin notices, for copying to another host (incident I14).",
       bool_field(&Config::status_page)},
      {"ops.status_dir", "\"\"", "Directory of the status page and feed; empty: `<data_dir>/status`.",
       string_field(&Config::status_dir)},
      {"ops.status_title", "\"hearth status\"", "Title of the status page and of its Atom feed.",
       string_field(&Config::status_title)},
      {"ops.replica_dir", "\"\"", "Directory of the continuous replica (incident I05): a full backup, then every `replica_interval_seconds` an incremental of what changed, each an immutable file; `hearthctl restore --from-replica` rebuilds a data directory from it. Put it on another disk or a network mount. Empty: no replica.",
       string_field(&Config::replica_dir)},
      {"ops.replica_interval_seconds", "60", "Seconds between two replica rounds: the most a restore from the replica loses (its RPO). A round with nothing changed writes nothing.",
       integer_field(&Config::replica_interval_seconds, 1, 86400)},
      {"ops.replica_max_incrementals", "1000", "Incrementals after which the replica starts a new chain with a full backup.",
       integer_field(&Config::replica_max_incrementals, 1, 1'000'000)},
      {"ops.replica_rebase_percent", "50", "The replica starts a new chain when its incrementals add up to more than this share (%) of its full backup, so a restore never reads much more than the data.",
       integer_field(&Config::replica_rebase_percent, 1, 10000)},
      {"ops.replica_keep_chains", "2", "Complete replica chains kept (the newest); older ones are deleted once a new full backup is complete.",
       integer_field(&Config::replica_keep_chains, 1, 100)},
      {"ops.debug_commands", "false", "Enable admin-socket commands that exist for resilience tests (`debug.block_shard`). Never in production.",
       bool_field(&Config::debug_commands)},

      {"log.level", "\"info\"", "`debug`, `info`, `warn` or `error`.",
       string_field(&Config::log_level, {"debug", "info", "warn", "error"})},
      {"log.format", "\"text\"", "`text` (logfmt) or `json` (one object per line).",
       string_field(&Config::log_format, {"text", "json"})},
  };
  return list;
}

std::string where(std::string_view origin, const toml::node& n) {
  const auto& src = n.source();
  if (src.begin.line == 0) return std::string(origin);
  return fmt::format("{}:{}:{}", origin, src.begin.line, src.begin.column);
}

tl::unexpected<Error> config_error(std::string_view origin, const toml::node& n, std::string_view key,
                                   std::string_view what) {
  return fail(Errc::invalid_argument, fmt::format("{}: key '{}': {}", where(origin, n), key, what));
}

Result<DomainConfig> parse_domain(const toml::table& t, std::string_view origin, std::size_t index) {
  DomainConfig d;
  for (const auto& [k, v] : t) {
    std::string key = fmt::format("domain[{}].{}", index, k.str());
    if (!v.is_string()) return config_error(origin, v, key, "expected a string");
    std::string s = *v.value<std::string>();
    if (k == "name") d.name = s;
    else if (k == "registration") {
      if (s != "closed" && s != "invite" && s != "open")
        return config_error(origin, v, key, "must be one of: closed, invite, open");
      d.registration = s;
    } else if (k == "tls_cert") d.tls_cert = s;
    else if (k == "tls_key") d.tls_key = s;
    else return config_error(origin, v, key, "unknown key");
  }
  if (d.name.empty())
    return fail(Errc::invalid_argument, fmt::format("{}: key 'domain[{}].name': is required", where(origin, t), index));
  if (d.tls_cert.empty() != d.tls_key.empty())
    return fail(Errc::invalid_argument, fmt::format("{}: key 'domain[{}].tls_cert': tls_cert and tls_key must be set together", where(origin, t), index));
  return d;
}

}  // namespace

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    for (const auto& b : bindings()) out.push_back({b.key, b.default_value, b.description});
    return out;
  }();
  return keys;
}

Config default_config() {
  Config c;
  c.domains.push_back(DomainConfig{"localhost"});
  return c;
}

Result<Config> parse_config(std::string_view text, std::string_view origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return fail(Errc::invalid_argument,
                fmt::format("{}:{}:{}: {}", origin, e.source().begin.line, e.source().begin.column,
                            e.description()));
  }
  Config c;
  for (const auto& [section, node] : root) {
    if (section == "domain") {
      const auto* arr = node.as_array();
      if (!arr) return config_error(origin, node, "domain", "expected [[domain]] tables");
      std::size_t i = 0;
      for (const auto& e : *arr) {
        const auto* t = e.as_table();
        if (!t) return config_error(origin, e, "domain", "expected [[domain]] tables");
        auto d = parse_domain(*t, origin, i++);
        if (!d) return tl::unexpected(d.error());
        c.domains.push_back(std::move(*d));
      }
      continue;
    }
    const auto* table = node.as_table();
    if (!table) return config_error(origin, node, section.str(), "unknown key (expected a [section])");
    for (const auto& [k, v] : *table) {
      std::string key = fmt::format("{}.{}", section.str(), k.str());
      const Binding* found = nullptr;
      for (const auto& b : bindings())
        if (b.key == key && b.set) found = &b;
      if (!found) return config_error(origin, v, key, "unknown key");
      if (auto msg = found->set(v, c); !msg.empty()) return config_error(origin, v, key, msg);
    }
  }
  if (c.domains.empty()) c.domains.push_back(DomainConfig{"localhost"});
  std::set<std::string> names;
  for (const auto& d : c.domains)
    if (!names.insert(d.name).second)
      return fail(Errc::invalid_argument, fmt::format("{}: key 'domain[].name': '{}' is listed twice", origin, d.name));
  if (c.open_files_warning_percent > c.open_files_critical_percent)
    return fail(Errc::invalid_argument,
                fmt::format("{}: key 'ops.open_files_warning_percent': must not exceed ops.open_files_critical_percent", origin));
  if (!(c.disk_warning_percent <= c.disk_high_percent && c.disk_high_percent <= c.disk_critical_percent))
    return fail(Errc::invalid_argument,
                fmt::format("{}: key 'ops.disk_warning_percent': thresholds must satisfy warning <= high <= critical", origin));
  if (c.max_connections_per_ip > c.max_connections)
    c.max_connections_per_ip = c.max_connections;
  return c;
}

Result<Config> load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(Errc::not_found, fmt::format("{}: cannot open configuration file", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace hearth
