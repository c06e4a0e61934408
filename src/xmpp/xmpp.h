// hearth::xmpp — the XMPP client service (RFC 6120/6121) on top of net/ stream listeners.
//
// XmppService owns the session registry and creates one C2sSession per accepted
// connection (through the StreamAcceptor it hands to net). A session lives on its
// connection's shard thread; work that blocks (SASL credential checks, roster and offline
// storage) runs on net's worker pool, one job at a time per session, and its result is
// posted back to the session's shard, so stanzas of one session are processed in order.
// Delivery to other sessions goes through their connections' thread-safe send().
//
// Lifecycle: construct after accounts/ and the store are open, call migrate(), hand
// acceptor() to HttpServer::listen_stream, destroy after the server stopped.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net.h"

namespace hearth {
class Clock;
}
namespace hearth::accounts {
class Accounts;
}
namespace hearth::store {
class Store;
}
namespace hearth::blobs {
class BlobStore;
}

namespace hearth::xmpp {

struct XmppOptions {
  std::vector<std::string> domains;  // served domains; the first is the default
  std::size_t max_stanza_bytes = 256 * 1024;
  std::size_t read_bytes_per_second = 64 * 1024;  // per connection, after authentication
  std::size_t read_burst_bytes = 512 * 1024;
  int idle_timeout_seconds = 600;  // no bytes at all (clients ping or send whitespace)
  int max_offline_messages = 500;
  int max_roster_items = 1000;
  std::size_t pep_max_item_bytes = 128 * 1024;  // XEP-0163: one item's payload
  int pep_max_nodes = 256;                     // per account
  int pep_max_items = 1000;                    // per node ("max")
  // XEP-0157: contact addresses by kind ("abuse", "admin", "security", "status",
  // "support"), each a list of URIs (mailto:, xmpp:, https:).
  std::vector<std::pair<std::string, std::vector<std::string>>> contact_addresses;
  // XEP-0215: STUN/TURN (coturn with a shared secret); empty host: not offered.
  std::string turn_host;
  int turn_port = 3478;
  int turn_tls_port = 0;
  std::string turn_secret;
  int turn_ttl_seconds = 86400;
  int max_auth_attempts = 3;
  int resume_timeout_seconds = 300;
  int fast_token_ttl_days = 21;  // XEP-0484 tokens
  int archive_retention_days = 0;  // XEP-0313 archive kept this long unless an account has its own; 0: forever
  int archive_purge_interval_seconds = 3600;
  int archive_purge_batch = 500;  // rows per transaction; the purge yields between batches
  bool muc = true;                 // XEP-0045 at conference.<domain> for every served domain
  blobs::BlobStore* upload_blobs = nullptr;  // XEP-0363 at upload.<domain> when set; must outlive the service
  int upload_expiry_days = 14;
  int muc_max_users_per_room = 1000;  // XEP-0198: how long a dropped session waits for its client
  bool channel_binding = true;  // offer SCRAM-*-PLUS (xmpp.channel_binding)
  bool strict_channel_binding = false;  // reject the SCRAM "y" flag while -PLUS is offered
  std::string sasl_secret;  // makes fake SCRAM salts for unknown users stable; random if empty
  // Federation (RFC 6120 s2s, see s2s.h). Off: stanzas to other domains get
  // <remote-server-not-found/> as before.
  bool s2s_enabled = true;
  std::vector<std::string> s2s_static_routes;  // "domain=host:port", before DNS SRV
  std::size_t s2s_queue_max_stanzas = 1000;    // waiting per remote domain; past it <resource-constraint/>
  int s2s_connect_timeout_seconds = 10;
  int s2s_retry_initial_seconds = 2;  // backoff between connection attempts, doubled each time
  int s2s_retry_max_seconds = 300;
  int s2s_max_attempts = 5;  // then what waits bounces with <remote-server-not-found/>/<remote-server-timeout/>
  bool s2s_dialback = true;  // XEP-0220, inside TLS and for a certificate valid for the domain only
  bool s2s_bidi = true;      // XEP-0288: offer and request bidirectional streams
  std::size_t s2s_max_pending_bytes = 8 << 20;  // per s2s stream, received and not yet delivered
  std::string s2s_dialback_secret;  // XEP-0185 key secret; random (per start) if empty
};

// Runs a blocking job off the event loops; false when the pool is saturated.
using Offload = std::function<bool(std::function<void()>)>;
// Runs a (non-blocking) function on some event loop after a delay.
using RunAfter = std::function<void(std::chrono::milliseconds, std::function<void()>)>;

class XmppService {
 public:
  XmppService(XmppOptions options, accounts::Accounts& accounts, store::Store& store, Clock& clock, Logger& log,
              MetricsRegistry& metrics, Offload offload, RunAfter run_after);
  ~XmppService();
  XmppService(const XmppService&) = delete;
  XmppService& operator=(const XmppService&) = delete;

  Result<void> migrate();

  // XEP-0363: the PUT/GET routes of uploads (call before the Router goes to the server).
  void install_http_routes(net::Router& router);
  // The base URL upload slots point at, once the HTTP listeners are bound.
  void set_public_url(const std::string& url);

  // RFC 7395 XMPP over WebSocket at this path of the HTTP listeners (installed by
  // install_http_routes with XEP-0156 host-meta discovery).
  static constexpr std::string_view kWebSocketPath = "/xmpp-websocket";
  net::WebSocketAcceptor websocket_acceptor();

  // For HttpServer::listen_stream. `direct_tls`: the listener already negotiated TLS
  // (XEP-0368); otherwise STARTTLS is required before authentication.
  net::StreamAcceptor acceptor(bool direct_tls);

  // Federation: the acceptor for the s2s listener (STARTTLS required; the listener should
  // set StreamListenerSpec::request_peer_certificate), and the way out for outgoing
  // streams (HttpServer::connect_stream), set before the server runs. Only meaningful when
  // s2s_enabled; parse errors in s2s_static_routes are reported by check_options().
  net::StreamAcceptor s2s_acceptor();
  void set_s2s_connector(std::function<void(net::OutgoingStreamSpec, net::StreamConnectHandler)> connect);
  // Validates options that can be wrong (static routes).
  static Result<void> check_options(const XmppOptions& options);

  // An account was deleted: its sessions are closed and everything XMPP kept for it
  // (roster, offline queue, archive, vCard, private storage, block list) is removed.
  // Blocking (storage); call off the event loops.
  Result<void> forget_account(const std::string& bare);

  // Number of bound (resource-holding) sessions.
  std::size_t session_count() const;

  // An account's own archive retention in days (0: forever), or nullopt for the server's
  // default. Blocking (storage).
  Result<void> set_archive_retention(const std::string& bare, std::optional<int> days);

  // Starts the periodic archive purge (at once, then every archive_purge_interval_seconds):
  // small batches on the worker pool, yielding to the event loops between them.
  void start_background_tasks();
  // Graceful restart (incident I18), old process: the coming drain saves every resumable
  // XEP-0198 session (ids, counters, unacknowledged stanzas) for the successor and drops
  // its connection without a stream error, so that the client resumes there; sessions
  // already detached (waiting for their client) are saved at once, on the calling thread
  // (blocking). Call before stopping the server. The successor restores them in
  // start_background_tasks().
  void hand_over_on_drain();
  // After the server stopped (the worker pool too), on the calling thread (blocking).
  // Sessions detached during the drain (XMPP over WebSocket gets a plain close) are handed
  // over like the others after a hand-over; else detached sessions end here and what their
  // clients never acknowledged goes to offline storage instead of being lost with the
  // process.
  void hand_over_detached_sessions();
  void end_detached_sessions();

  struct Impl;

 private:
  // Forgets the data of accounts deleted while the daemon was stopped (hearthctl).
  Result<void> sweep_deleted_accounts();
  void restore_handed_over_sessions();

  std::shared_ptr<Impl> impl_;
};

}  // namespace hearth::xmpp
