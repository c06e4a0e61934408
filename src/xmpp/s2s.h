// Private to xmpp/: server-to-server federation (RFC 6120 with TLS required, XEP-0178 SASL
// EXTERNAL, XEP-0220 dialback inside TLS only, XEP-0288 bidirectional streams).
//
// Federation owns the outgoing routes — one per (local domain, remote domain) pair, each a
// bounded queue plus at most one connection — and the sessions of the s2s listener.
// Outgoing: static route or DNS SRV (_xmpps-server, then _xmpp-server, then the domain on
// 5269), TCP, STARTTLS, the peer's certificate verified for the remote domain, then SASL
// EXTERNAL (or dialback when the peer offers only that); on failure the queue waits for a
// retry with exponential backoff, and after the last attempt its stanzas bounce to their
// senders with <remote-server-not-found/> (never connected) or <remote-server-timeout/>.
// Incoming: STARTTLS required; the peer's certificate must verify and name the domain it
// claims; SASL EXTERNAL (or dialback for that same verified domain) authenticates it;
// stanzas whose 'from' is not the authenticated domain end the stream with <invalid-from/>,
// those to a domain we do not serve with <host-unknown/>; more than max_pending_inbound_bytes
// of stanzas waiting for the worker pool end it with <policy-violation/> (a flood: the peer
// sends faster than we deliver, beyond what the read rate lets through).
//
// Threads: send() is thread-safe (one mutex over the route table); connections and their
// sessions live on their shard threads; inbound stanzas are handed to `inbound` on the
// worker pool, in order per connection.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/metrics.h"
#include "net/net.h"
#include "xmpp/s2s_rules.h"
#include "xmpp/xml.h"
#include "xmpp/xmpp.h"

namespace hearth::xmpp {

struct S2sOptions {
  std::vector<StaticRoute> static_routes;
  std::size_t queue_max_stanzas = 1000;     // per remote domain
  std::size_t queue_max_bytes = 4 << 20;    // per remote domain
  int connect_timeout_seconds = 10;
  int retry_initial_seconds = 2;
  int retry_max_seconds = 300;
  int max_attempts = 5;                     // connection attempts before the queue bounces
  int idle_timeout_seconds = 600;
  bool dialback = true;                     // XEP-0220 inside TLS, for a verified certificate only
  bool bidi = true;                         // XEP-0288 both ways
  std::size_t max_stanza_bytes = 256 * 1024;
  std::size_t read_bytes_per_second = 256 * 1024;
  std::size_t read_burst_bytes = 1024 * 1024;
  std::size_t max_pending_inbound_bytes = 8 << 20;  // per connection, waiting for the worker pool
  std::string dialback_secret;              // XEP-0185
};

class Federation : public std::enable_shared_from_this<Federation> {
 public:
  using Connect = std::function<void(net::OutgoingStreamSpec, net::StreamConnectHandler)>;
  // A stanza for local delivery (from a remote server, or a bounce), jabber:client.
  using Inbound = std::function<void(Element)>;

  Federation(S2sOptions options, std::function<bool(std::string_view)> is_local, Logger& log, MetricsRegistry& metrics,
             Offload offload, RunAfter run_after, Inbound inbound);
  ~Federation();

  // Outgoing connections go through this (HttpServer::connect_stream); set before use.
  void set_connector(Connect connect);
  // Queues a serialised stanza (default namespace jabber:server) for `remote_domain`.
  // Thread-safe.
  void send(const std::string& local_domain, const std::string& remote_domain, std::string stanza);
  // For the s2s listener.
  net::StreamAcceptor acceptor();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace hearth::xmpp
