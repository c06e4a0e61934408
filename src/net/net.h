// hearth::net — listeners, TLS, HTTP/1.1 + WebSocket server, router, limits, admission.
//
// Every protocol front end that speaks HTTP or WebSocket registers its routes on a Router,
// and hearthd hands the Router to one HttpServer. The server enforces, before any handler
// runs: connection caps (global and per IP), a per-IP request rate, header/body size limits
// and an in-flight bound (admission control: past it requests are answered 503 at once,
// never queued).
//
// Threads: the server runs N shards, each one io_context on its own thread. A connection
// is assigned to one shard when accepted and stays there; its handlers are called on that
// shard's thread (or on the bounded worker pool for RouteOptions::blocking routes).
// Handlers must not block a shard thread: anything slow (argon2, synchronous storage)
// belongs on the worker pool or the store's own threads.
//
// This header includes no Boost or OpenSSL headers; Asio/Beast code lives only in
// server.cc, session_plain.cc and session_tls.cc (see README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

namespace hearth::net {

// One parsed request, owned by the handler once passed to it.
struct HttpRequest {
  std::string method;  // "GET"
  std::string target;  // as sent: "/a/b%20c?x=1"
  std::string path;    // target up to '?', not percent-decoded: "/a/b%20c"
  std::string query;   // after '?', without it: "x=1"
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, in order
  std::string body;
  std::string remote_ip;    // "127.0.0.1" (IPv4-mapped IPv6 addresses are shown as IPv4)
  std::string server_name;  // TLS: the SNI name (Host if no SNI); plain: Host without port
  std::string alpn;         // TLS: negotiated ALPN protocol, "" if none
  bool tls = false;

  // First value of a header; "" if absent.
  std::string_view header(std::string_view lowercase_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  // Extra headers. Content-Length, Server and Connection are set by the server; values
  // containing CR or LF are dropped.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  static HttpResponse text(int status, std::string body);
  static HttpResponse json(int status, std::string body);  // application/json
};

// Completes a request. Call it once, from any thread; later calls are ignored. The server
// posts the response back to the connection's shard, so calling it after the client went
// away (or after the server stopped) is safe. If every copy is destroyed without a call,
// the client gets a 500.
using Respond = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(HttpRequest&&, Respond)>;

struct RouteOptions {
  bool exempt_from_admission = false;   // /health, /metrics: answer even when overloaded
  bool exempt_from_rate_limit = false;
  bool blocking = false;                // run the handler on the bounded worker pool
  std::int64_t max_body_bytes = -1;     // -1: ServerOptions::max_body_bytes
};

// A live WebSocket, handed to the route's acceptor. The handle is thread-safe and may be
// kept after the connection closed (its methods then do nothing); it never keeps the
// connection itself alive.
class WebSocketConnection {
 public:
  virtual ~WebSocketConnection() = default;
  // Queues a message. Past the connection's outgoing byte budget
  // (ServerOptions::websocket_max_queued_bytes) the queue is dropped and the connection is
  // closed with 1008.
  virtual void send(std::string message, bool binary = false) = 0;
  // Sends what is queued, then a close frame.
  virtual void close(int code = 1000, std::string reason = {}) = 0;
  virtual const std::string& remote_ip() const = 0;
};

// Called on the connection's shard thread. on_close is called exactly once, when the
// connection ended for any reason (including server stop).
struct WebSocketCallbacks {
  std::function<void(std::string_view message, bool binary)> on_message;
  std::function<void()> on_close;
};
using WebSocketAcceptor =
    std::function<WebSocketCallbacks(std::shared_ptr<WebSocketConnection>, const HttpRequest&)>;

// What Router::find resolved a request to.
struct RouteMatch {
  enum class Kind { handler, not_found, method_not_allowed };
  Kind kind = Kind::not_found;
  const HttpHandler* handler = nullptr;  // valid while the Router lives
  const RouteOptions* options = nullptr;
  std::string allow;  // method_not_allowed: "GET, POST"
};

struct WebSocketRoute {
  WebSocketAcceptor acceptor;
  std::size_t max_message_bytes = 1 << 20;
};

// The routing table. Built on one thread before HttpServer::create, immutable afterwards
// (lookups are then safe from every shard).
class Router {
 public:
  // Exact path. Method "*" matches any method.
  void add(std::string method, std::string path, HttpHandler h, RouteOptions o = {});
  // Every path starting with `prefix`; the longest prefix that accepts the method wins.
  void add_prefix(std::string method, std::string prefix, HttpHandler h, RouteOptions o = {});
  // WebSocket upgrade on an exact path. A request on that path without an Upgrade header
  // gets 426 (unless an HTTP route matches it).
  void websocket(std::string path, WebSocketAcceptor a, std::size_t max_message_bytes = 1 << 20);

  // Exact routes first, then prefixes from longest to shortest. not_found if no path
  // matches; method_not_allowed (with the union of accepted methods) if paths match but
  // none accepts the method.
  RouteMatch find(std::string_view method, std::string_view path) const;
  const WebSocketRoute* find_websocket(std::string_view path) const;

 private:
  struct Route {
    std::string method, path;
    bool prefix = false;
    HttpHandler handler;
    RouteOptions options;
  };
  std::vector<Route> exact_;
  std::vector<Route> prefixes_;  // kept sorted by prefix length, longest first
  std::vector<std::pair<std::string, WebSocketRoute>> websockets_;
};

struct TlsIdentity {
  std::string domain;  // "example.org" or "*.example.org"
  std::string cert_file, key_file;  // PEM; cert_file may hold a chain
};

// Generates a self-signed certificate (EC P-256, SAN DNS:<each name>, IP:127.0.0.1,
// IP:::1, valid 10 years) unless both files already exist. Creates parent directories;
// the key file gets mode 0600. Files are written to a temporary name and renamed.
Result<void> ensure_self_signed_certificate(const std::vector<std::string>& dns_names,
                                            const std::string& cert_file,
                                            const std::string& key_file);

struct ListenerSpec {
  std::string address;  // "127.0.0.1", "::", "0.0.0.0"
  int port = 0;         // 0: ephemeral (see BoundEndpoint)
  bool tls = false;
  std::vector<std::string> alpn = {"http/1.1"};  // server preference order
};

struct BoundEndpoint {
  std::string address;
  int port;
  bool tls;
};

struct ServerOptions {
  int shards = 0;                        // 0: hardware_concurrency
  int worker_threads = 0;                // blocking pool; 0: 2 * cores
  int worker_queue_depth = 1024;         // pool queue bound; past it blocking routes get 503
  int max_connections = 10000;           // <= 0: unlimited
  int max_connections_per_ip = 100;      // <= 0: unlimited
  double requests_per_second_per_ip = 50;  // <= 0: unlimited
  int request_burst_per_ip = 100;
  int max_inflight_requests = 1000;      // <= 0: unlimited
  std::int64_t max_body_bytes = 1 << 20;
  std::int64_t max_header_bytes = 16 << 10;
  int idle_timeout_seconds = 60;         // keep-alive idle, header/body/write stalls, TLS handshake
  int drain_seconds = 10;
  std::size_t websocket_max_queued_bytes = 4 << 20;  // per connection outgoing budget
};

// Lifecycle: create → listen (any number of times) → run (blocks) … stop (from any
// thread) → run returns → destroy. run() may be called once. The Router, Logger and
// MetricsRegistry must outlive the server (the Router is moved in).
//
// Stop drains: listeners close (new connections are refused), requests in flight are
// completed and answered with `Connection: close`, idle keep-alive connections are closed
// and WebSockets get a 1001 close; after drain_seconds whatever is left is cut. Then the
// worker pool finishes its queue, the shard threads end and run() returns.
//
// Accepting: one acceptor per listener, living on shard (listener index % N), accepts
// each connection directly onto the next shard in round-robin order.
class HttpServer {
 public:
  static Result<std::unique_ptr<HttpServer>> create(ServerOptions options, Router router,
                                                    std::vector<TlsIdentity> identities,
                                                    Logger& log, MetricsRegistry& metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens now (errors as values, e.g. address in use; on error none of this
  // call's listeners stay open). Connections are accepted once run() starts.
  Result<std::vector<BoundEndpoint>> listen(const std::vector<ListenerSpec>& specs);
  // Runs the shard threads; blocks the calling thread until stop() finished draining.
  void run();
  // Thread-safe and idempotent; returns at once (run() does the draining). Not
  // async-signal-safe: call it from a signal-handling thread, not a signal handler.
  void stop();
  // Posts fn to the blocking worker pool; false (fn not run) if its queue is full or the
  // server stopped.
  bool offload(std::function<void()> fn);

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::net
