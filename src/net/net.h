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
// The same server also runs raw byte-stream listeners (XMPP c2s/s2s: STARTTLS or direct
// TLS), which share its shards, connection caps and drain; see listen_stream().
//
// This header includes no Boost or OpenSSL headers; Asio/Beast code lives only in
// server.cc, session_plain.cc, session_tls.cc and stream_session.cc (see README.md).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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
  // Routes with RouteOptions::body_staging_dir: the body is not in `body` but in this file
  // (complete, its size checked against the limit; not yet fsynced). The handler may take
  // it (rename it, e.g. blobs::BlobStore::put_file); whatever is still there once the
  // response is given is removed by the server.
  std::string body_file;
  std::int64_t body_file_bytes = 0;
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
  // Set (status 200): the body is this file's bytes instead of `body`, read and sent in
  // chunks (one buffer in memory, whatever the file's size). A single-range request
  // (`Range: bytes=a-b`, `a-`, `-n`) is answered 206 with Content-Range, one past the end
  // 416; Accept-Ranges says so. A file that cannot be opened is answered 404.
  std::string body_file;
  // Sent right before and after body_file's bytes (a multipart envelope); with either set,
  // Range is not honoured.
  std::string body_file_prefix, body_file_suffix;

  static HttpResponse text(int status, std::string body);
  static HttpResponse json(int status, std::string body);  // application/json
};

// Completes a request. Call it once, from any thread; later calls are ignored. The server
// posts the response back to the connection's shard, so calling it after the client went
// away (or after the server stopped) is safe. If every copy is destroyed without a call,
// the client gets a 500.
using Respond = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(HttpRequest&&, Respond)>;

// What a streamed route says about one request's body before it is read (see
// RouteOptions::check_body).
struct BodyAdmission {
  // Set: answer this at once; the body is not read and the connection closes after it.
  std::optional<HttpResponse> refuse;
  // The most bytes this body may have (e.g. an upload slot's declared size), at most the
  // route's max_body_bytes; -1: the route's max_body_bytes.
  std::int64_t limit = -1;
};
using BodyCheck = std::function<BodyAdmission(const HttpRequest& head)>;

struct RouteOptions {
  bool exempt_from_admission = false;   // /health, /metrics: answer even when overloaded
  bool exempt_from_rate_limit = false;
  bool blocking = false;                // run the handler on the bounded worker pool
  std::int64_t max_body_bytes = -1;     // -1: ServerOptions::max_body_bytes
  // Streamed bodies (large uploads). Non-empty: the body is written chunk by chunk (one
  // read buffer, not the whole body, in memory) to a new file in this directory and the
  // handler gets its path in HttpRequest::body_file. The request must declare its length
  // (Content-Length, else 411) or be chunked; rate limit, admission and check_body run
  // before any body byte is read, and a declared length over the limit gets 413 at once.
  // A body cut short, over the limit or timed out (idle_timeout_seconds without a byte)
  // is refused and its file removed; the handler never sees it.
  std::string body_staging_dir;
  // Optional, streamed routes only: decides from the head (body empty) whether to read
  // the body and how large it may be. Runs where the handler runs (worker pool for
  // blocking routes).
  BodyCheck check_body;
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
  // Runs `fn` on the connection's shard thread (where its callbacks run), now or after a
  // delay; dropped once the server stopped. For front ends that hop to the worker pool and
  // back, as stream sessions do.
  virtual void post(std::function<void()> fn) { (void)fn; }
  virtual void post_after(std::chrono::milliseconds delay, std::function<void()> fn) {
    (void)delay;
    (void)fn;
  }
  virtual const std::string& remote_ip() const = 0;
  // Bytes queued by send() and not yet written to the socket (thread-safe, a snapshot).
  // Producers of long replies (CryptPad history) pause above a watermark instead of
  // overflowing the budget.
  virtual std::size_t queued_bytes() const { return 0; }
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
  const std::string* path = nullptr;  // the route's path (or prefix); valid while the Router lives
  std::string allow;  // method_not_allowed: "GET, POST"
};

struct WebSocketRoute {
  WebSocketAcceptor acceptor;
  std::size_t max_message_bytes = 1 << 20;
  std::string subprotocol;
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
  // `subprotocol`: when the client offers it (Sec-WebSocket-Protocol), the handshake selects
  // it (RFC 6455 §4.2.2; XMPP over WebSocket needs "xmpp", RFC 7395 §3.2).
  void websocket(std::string path, WebSocketAcceptor a, std::size_t max_message_bytes = 1 << 20,
                 std::string subprotocol = {});

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

// The DANE "3 1 1" digest of a certificate (RFC 6698 §2.1: selector 1, the DER
// SubjectPublicKeyInfo; matching type 1, SHA-256), as lowercase hex, for the first
// certificate of the PEM file `cert_file` (the leaf of a chain). It survives renewals
// that keep the key. Errc::not_found when the file is missing, invalid_argument when it
// holds no certificate.
Result<std::string> certificate_spki_sha256_hex(const std::string& cert_file);

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

// Graceful restart (incident I18): a listening socket handed by a running hearthd to its
// successor (over the admin socket, SCM_RIGHTS), so that the port never stops accepting:
// connections that arrive while the old process drains and the new one starts wait in the
// kernel's listen backlog instead of being refused. `kind` names the listener: "http",
// "https", or a stream listener's name ("xmpp-client", "xmpp-client-tls").
struct ListeningSocket {
  int fd = -1;  // owned by whoever holds the struct
  std::string kind;
  std::string address;  // as configured ("127.0.0.1", "::")
  int port = 0;         // the bound port
};

// ---------------------------------------------------------------------------------------
// Raw byte streams (XMPP). net owns the socket, TLS, caps, read throttling and timers; the
// protocol layer sees ordered chunks of bytes and writes bytes back.

struct StreamListenerSpec {
  std::string address;
  int port = 0;
  bool direct_tls = false;  // TLS from the first byte (XEP-0368); else plain with STARTTLS
  std::vector<std::string> alpn = {"xmpp-client"};  // server preference order
  std::string name = "xmpp-client";                 // metrics label and logs
  // Mutual TLS (XMPP s2s, XEP-0178): ask the peer for a certificate during the handshake.
  // A missing or unverifiable one does not fail the handshake; the protocol layer reads
  // the outcome from StreamConnection::peer_certificate() and decides.
  bool request_peer_certificate = false;
};

// What the TLS peer presented. `chain_valid`: the chain verified against
// ServerOptions::peer_ca_file / peer_ca_dir (the system trust store when both are empty).
// Names are the subjectAltName entries, as they are in the certificate (the protocol layer
// matches them against the domain it expects; see xmpp's certificate name rules).
struct PeerCertificate {
  bool present = false;
  bool chain_valid = false;
  std::string verify_error;             // OpenSSL's reason when !chain_valid
  std::vector<std::string> dns_names;   // SAN dNSName
  std::vector<std::string> xmpp_addrs;  // SAN otherName id-on-xmppAddr (RFC 6120 §13.7.1.4)
  std::vector<std::string> srv_names;   // SAN otherName SRVName (RFC 4985), e.g. "_xmpp-server.example.org"
};

// A live stream connection, handed to the listener's StreamAcceptor. The handle is
// thread-safe, may be kept after the connection closed (its methods then do nothing) and
// never keeps the connection itself alive. Calls made on the connection's shard thread
// take effect at once (in call order); calls from other threads are posted to the shard.
class StreamConnection {
 public:
  virtual ~StreamConnection() = default;

  // Queues bytes (encrypted once TLS is up). Past ServerOptions::stream_max_queued_bytes
  // of unwritten bytes the connection is cut at once and on_close fires.
  virtual void send(std::string bytes) = 0;
  // Writes what is queued, then a TLS close_notify and a TCP FIN, then closes (after at
  // most idle_timeout_seconds for a peer that does not read). Stops delivering on_data.
  // Idempotent.
  virtual void close() = 0;

  // STARTTLS on a plain connection. The caller has already queued `<proceed/>` with send()
  // and calls this right after (best from on_data; else from the thread that sent), so
  // that it reaches the shard before the client can answer `<proceed/>`. Queued bytes are
  // written in plaintext first; from this call on, no more plaintext is read or delivered
  // and later send()s wait for the handshake. The handshake (SNI picks the
  // identity as for HTTPS, ALPN from the listener) is fed first `unconsumed` — bytes of the
  // last on_data chunk that followed the STARTTLS command, i.e. a pipelined ClientHello —
  // then bytes already read from the socket but not delivered, then the socket.
  // `done` runs once on the shard thread: ok when the handshake finished (decrypted
  // on_data follows), an error if TLS is unavailable (no identity, already TLS: the
  // connection stays as it was) or the handshake failed, timed out or the connection
  // closed during it (on_close then follows). If the connection closed before this request reached it, `done` is
  // dropped and on_close is the signal.
  virtual void start_tls(std::function<void(Result<void>)> done, std::string unconsumed) = 0;
  void start_tls(std::function<void(Result<void>)> done) { start_tls(std::move(done), {}); }

  // Connection facts. The TLS ones are fixed when the handshake finishes (before `done` or
  // the acceptor runs) and are "" (false) before.
  virtual bool is_tls() const = 0;
  virtual std::string remote_ip() const = 0;
  virtual std::string server_name() const = 0;  // SNI, lowercased; "" if none / not TLS
  virtual std::string alpn() const = 0;         // negotiated ALPN protocol, "" if none
  virtual std::string tls_version() const = 0;  // "TLSv1.3", "TLSv1.2" or ""
  // The peer's certificate (see PeerCertificate); empty before the handshake, and on
  // server-side connections whose listener does not request one.
  virtual PeerCertificate peer_certificate() const { return {}; }
  // Outgoing connections (HttpServer::connect_stream): STARTTLS as the TLS client. Sends
  // SNI `server_name`, presents the identity matching `local_name` (the first identity if
  // none matches) and verifies the server's chain into peer_certificate(); a chain that
  // does not verify does not fail the handshake (the caller checks). `done` as for
  // start_tls. On accepted connections this fails with Errc::invalid_argument.
  virtual void start_tls_client(std::string server_name, std::string local_name,
                                std::function<void(Result<void>)> done) {
    (void)server_name;
    (void)local_name;
    done(fail(Errc::invalid_argument, "not an outgoing connection"));
  }

  // Channel-binding data (raw bytes) for SCRAM-*-PLUS:
  //  "tls-exporter" (RFC 9266): 32 bytes of SSL_export_keying_material with label
  //    "EXPORTER-Channel-Binding" and no context; TLS 1.3, or TLS 1.2 with extended
  //    master secret, else Errc::unavailable.
  //  "tls-server-end-point" (RFC 5929): hash of the server certificate (DER) with its
  //    signature's hash, SHA-256 if that is MD5 or SHA-1; unavailable if it has none.
  // Not TLS: Errc::unavailable. Unknown type: Errc::invalid_argument.
  virtual Result<std::string> channel_binding(std::string_view type) const = 0;

  // Token bucket on bytes read from the socket (ciphertext under TLS): reading pauses when
  // it is empty and resumes when refilled; no read is larger than the bucket holds, so
  // no on_data chunk exceeds burst_bytes (at least 1). 0 bytes_per_second: unlimited.
  virtual void set_read_rate(std::size_t bytes_per_second, std::size_t burst_bytes) = 0;
  // Closes (as close()) after this long without bytes read; 0: never (the default). TLS
  // handshakes (direct TLS; STARTTLS from the call to its end) are bounded separately by
  // ServerOptions::idle_timeout_seconds.
  virtual void set_idle_timeout(int seconds) = 0;

  // Runs fn later on the connection's shard thread, for protocol state owned there; fn
  // is dropped if the connection closed first.
  virtual void post(std::function<void()> fn) = 0;
  virtual void post_after(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
};

// Called on the connection's shard thread.
struct StreamCallbacks {
  std::function<void(std::string_view bytes)> on_data;  // in order; chunks of <= 16 KiB
  // Exactly once, after the last on_data: peer closed, error, budget overflow, idle
  // timeout, close(), or server stop.
  std::function<void()> on_close;
  // Server stop began: say goodbye (e.g. `</stream:stream>`) and close(). Unset: close()
  // at once. Connections still open after drain_seconds are cut.
  std::function<void()> on_drain;
};
// Called on the connection's shard thread when a connection was accepted (after the TLS
// handshake for direct_tls). Must not block.
using StreamAcceptor = std::function<StreamCallbacks(std::shared_ptr<StreamConnection>)>;

// An outgoing stream connection (XMPP s2s). `host` is a name or an address literal.
struct OutgoingStreamSpec {
  std::string host;
  int port = 0;
  std::string name = "xmpp-server-out";  // metrics label and logs
  int connect_timeout_seconds = 10;      // resolution + TCP connect
};
// Called once on the connection's shard thread: with the connection once TCP connected
// (the returned callbacks then drive it as for an accepted one), or with the error
// (resolution, refused, timeout, server stopping; the returned callbacks are ignored).
using StreamConnectHandler = std::function<StreamCallbacks(Result<std::shared_ptr<StreamConnection>>)>;

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
  std::size_t stream_max_queued_bytes = 4 << 20;     // per stream connection outgoing budget
  int stall_warning_ms = 100;  // a shard loop turn longer than this is a stall (incident I09)
  // Trust anchors for peers' certificates (s2s, both directions); both empty: the system
  // trust store.
  std::string peer_ca_file;
  std::string peer_ca_dir;
};

// The stall detector (incident I09). Every shard runs a heartbeat timer; a watchdog
// thread notices when a shard's heartbeat is late by more than stall_warning_ms — one loop
// turn (one handler) ran that long — and logs `loop.stalled` with the shard and the name
// of the handler running at that moment, counts it in hearth_loop_stalls_total{shard}, and
// logs `loop.stall_ended` with the duration when the shard turns again. A stall that never
// ends stays visible through stalled_ms in LoopHealth (the liveness check).
//
// HandlerName labels the work running on a shard thread for that report: construct one on
// the stack (the name must outlive it: a string literal, or a string the server keeps);
// the innermost label wins. Net labels HTTP routes and stream callbacks; protocol modules
// may add finer labels. Off a shard thread it does nothing. Cheap: one atomic exchange.
class HandlerName {
 public:
  explicit HandlerName(const char* name);
  ~HandlerName();
  HandlerName(const HandlerName&) = delete;
  HandlerName& operator=(const HandlerName&) = delete;

 private:
  const char* previous_ = nullptr;
  bool active_ = false;
};

struct LoopHealth {
  std::uint64_t stalls_total = 0;  // since start, all shards
  std::int64_t stalled_ms = 0;     // the longest stall going on right now (0: none)
  std::string last_handler;        // handler of the last stall ("" if none yet)
  int last_shard = -1;
};

// Lifecycle: create → listen (any number of times) → run (blocks) … stop (from any
// thread) → run returns → destroy. run() may be called once. The Router, Logger and
// MetricsRegistry must outlive the server (the Router is moved in).
//
// Stop drains: listeners close (new connections are refused), requests in flight are
// completed and answered with `Connection: close`, idle keep-alive connections are closed,
// WebSockets get a 1001 close and stream connections get on_drain; after drain_seconds
// whatever is left is cut. Then the
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
  // The same for raw byte-stream listeners. Stream connections count against the same
  // caps as HTTP (past a cap they are closed at once) and are exported as
  // hearth_stream_connections_open{listener=<name>}. direct_tls needs a TLS identity.
  Result<std::vector<BoundEndpoint>> listen_stream(const std::vector<StreamListenerSpec>& specs,
                                                   StreamAcceptor acceptor);
  // Opens an outgoing stream connection (counted against the connection caps under the
  // remote address, drained on stop like accepted ones); `handler` runs once, see
  // StreamConnectHandler. Thread-safe; call once run() started.
  void connect_stream(OutgoingStreamSpec spec, StreamConnectHandler handler);
  // Graceful restart, successor side: sockets inherited from the previous process. Call
  // before listen()/listen_stream(); a later spec of the same kind and address (and port,
  // unless the spec asks for port 0) takes the inherited socket as it is instead of
  // binding a new one. Inherited sockets no spec claimed are closed when run() starts.
  void adopt(std::vector<ListeningSocket> sockets);
  // Graceful restart, predecessor side: a duplicate (close-on-exec) of every listening
  // socket, for the caller to send and close. Thread-safe. The server keeps accepting
  // until stop(), which closes only its own descriptors; the successor's keep listening.
  std::vector<ListeningSocket> listening_sockets() const;
  // Runs the shard threads; blocks the calling thread until stop() finished draining.
  void run();
  // Thread-safe and idempotent; returns at once (run() does the draining). Not
  // async-signal-safe: call it from a signal-handling thread, not a signal handler.
  void stop();
  // Posts fn to the blocking worker pool; false (fn not run) if its queue is full or the
  // server stopped.
  bool offload(std::function<void()> fn);
  // Runs fn on some shard thread after `delay` (counted from run() if called before it);
  // dropped if the shards stop first (timers still fire while draining).
  void run_after(std::chrono::milliseconds delay, std::function<void()> fn);
  // The stall detector's view of the shards (thread-safe).
  LoopHealth loop_health() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::net
