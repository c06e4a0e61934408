// Private to net/: the server state shared by server.cc (listeners, shards, stop) and the
// session translation units (session_plain.cc, session_tls.cc, stream_session.cc). Unlike net.h this
// header includes Asio; nothing outside src/net/ may include it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "core/clock.h"
#include "net/limits.h"
#include "net/net.h"
#include "net/worker_pool.h"

namespace hearth::net {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using asio::awaitable;
using asio::use_awaitable;

inline constexpr auto kLingerTime = std::chrono::seconds(1);
inline constexpr std::size_t kLingerBytes = 64 << 10;

inline auto ec_token(error_code& ec) { return asio::redirect_error(use_awaitable, ec); }

struct ShardPost {
  std::mutex mutex;
  asio::io_context* ctx = nullptr;
  void post(std::function<void()> fn) {
    std::lock_guard lock(mutex);
    if (ctx) asio::post(*ctx, std::move(fn));
  }
  void post_after(std::chrono::milliseconds delay, std::function<void()> fn) {
    std::lock_guard lock(mutex);
    if (!ctx) return;
    auto timer = std::make_shared<asio::steady_timer>(*ctx, delay);
    timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code& ec) {
      if (!ec) fn();
    });
  }
};

// What stop() needs from every live connection; called on the connection's shard.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual void begin_drain() = 0;  // finish the current request, then close
  virtual void force_close() = 0;
};

// An io_context whose pending handlers can be destroyed separately from its services.
// Handlers of one shard can own sockets of another shard (an accept in flight targets the
// next shard), so every shard's handlers must go before any shard's services do.
struct ShardContext : asio::io_context {
  using asio::io_context::io_context;
  void destroy_pending_handlers() { shutdown(); }
};

struct Shard {
  int index = 0;
  // Stall detector: the heartbeat's last beat (steady ns) and the running handler's name.
  std::atomic<std::int64_t> last_beat_ns{0};
  std::atomic<const char*> handler{nullptr};
  // Watchdog thread only.
  bool stall_reported = false;
  std::int64_t stall_since_ns = 0;
  const char* stall_handler = nullptr;
  Counter* stalls = nullptr;
  std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> connections;  // shard thread
  std::shared_ptr<ShardPost> poster = std::make_shared<ShardPost>();
  std::unique_ptr<ShardContext> ctx = std::make_unique<ShardContext>(1);
  std::thread thread;
};

struct Listener {
  ListenerSpec spec;  // for stream listeners: address, port and tls = direct_tls
  // Stream listeners only (acceptor set): the spec, the shared acceptor and the gauge.
  StreamListenerSpec stream_spec;
  std::shared_ptr<StreamAcceptor> stream_acceptor;
  Gauge* stream_open = nullptr;
  BoundEndpoint bound;
  int home = 0;  // shard whose thread runs the accept loop
  std::string alpn_wire;  // length-prefixed ALPN list in server preference order
  std::unique_ptr<tcp::acceptor> acceptor;
  std::size_t next_shard = 0;
  bool in_error_burst = false;
};

struct Metrics {
  Counter* requests[6];  // by status class: 1xx..5xx, other
  Gauge* open;
  Counter* rejected_connection_cap;
  Counter* rejected_ip_cap;
  Counter* rejected_rate_limit;
  Counter* rejected_admission;
  Counter* rejected_body_too_large;
  Counter* rejected_header_too_large;
  Counter* rejected_bad_request;
  Counter* rejected_worker_pool;
  Counter* accept_errors;
  Histogram* duration;

  explicit Metrics(MetricsRegistry& r) {
    static constexpr const char* classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    for (int i = 0; i < 6; ++i)
      requests[i] = &r.counter("hearth_http_requests_total", "HTTP responses sent, by status class",
                               {{"code", classes[i]}});
    open = &r.gauge("hearth_http_connections_open", "Open HTTP/WebSocket connections");
    auto rejected = [&](const char* reason) {
      return &r.counter("hearth_http_rejected_total", "Connections or requests refused by a limit",
                        {{"reason", reason}});
    };
    rejected_connection_cap = rejected("connection_cap");
    rejected_ip_cap = rejected("ip_cap");
    rejected_rate_limit = rejected("rate_limit");
    rejected_admission = rejected("admission");
    rejected_body_too_large = rejected("body_too_large");
    rejected_header_too_large = rejected("header_too_large");
    rejected_bad_request = rejected("bad_request");
    rejected_worker_pool = rejected("worker_pool");
    accept_errors = &r.counter("hearth_http_accept_errors_total", "Failed accept() calls");
    duration = &r.histogram("hearth_http_request_duration_seconds",
                            "Time from a request's last byte read to its response written",
                            latency_buckets());
  }
  void count_status(int status) {
    int c = status / 100;
    requests[(c >= 1 && c <= 5) ? c - 1 : 5]->inc();
  }
};


// SSL ex-data slot holding the listener's ALPN list for the ALPN callback.
int alpn_ex_index();

inline std::string lowercase(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
inline std::string host_without_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto end = host.find(']');
    return lowercase(host.substr(1, end == std::string_view::npos ? host.npos : end - 1));
  }
  auto colon = host.rfind(':');
  if (colon != std::string_view::npos) host = host.substr(0, colon);
  return lowercase(host);
}
inline std::string json_error(std::string_view message) {
  return fmt::format("{{\"error\":\"{}\"}}", message);
}
// ---------------------------------------------------------------------------------------
// Server-wide state shared by all shards. Lives as long as the HttpServer.

// ---------------------------------------------------------------------------------------
// Server-wide state shared by all shards. Lives as long as the HttpServer.

struct HttpServer::Impl {
  Impl(ServerOptions o, Router r, Logger& l, MetricsRegistry& m)
      : options(o),
        router(std::move(r)),
        log(l),
        metrics_registry(m),
        metrics(m),
        connections(o.max_connections, o.max_connections_per_ip),
        rate(o.requests_per_second_per_ip, o.request_burst_per_ip, clock),
        inflight(std::make_shared<InflightGate>(o.max_inflight_requests)),
        pool(o.worker_threads, static_cast<std::size_t>(std::max(1, o.worker_queue_depth))) {}
  ~Impl();

  ServerOptions options;
  Router router;
  Logger& log;
  MetricsRegistry& metrics_registry;
  Metrics metrics;

  std::mutex connections_mutex;
  std::condition_variable connections_cv;
  ConnectionTable connections;

  SystemClock clock;
  std::mutex rate_mutex;
  RateLimiter rate;

  std::shared_ptr<InflightGate> inflight;
  WorkerPool pool;

  std::vector<std::unique_ptr<ssl::context>> tls;  // one per identity, same order
  std::vector<std::string> tls_domains;
  // TLS client contexts for outgoing streams (s2s), one per identity (its certificate is
  // presented as the client certificate), same order; they verify with peer_store.
  std::vector<std::unique_ptr<ssl::context>> tls_client;
  X509_STORE* peer_store = nullptr;  // trust anchors for peers' certificates (owned)
  // The pseudo-listener outgoing stream connections belong to (never bound).
  Listener outgoing;
  // Index of the client context whose identity covers `local_name` (0 if none does).
  std::size_t client_context_for(std::string_view local_name) const;

  std::vector<std::unique_ptr<Shard>> shards;
  std::mutex listeners_mutex;
  std::vector<std::unique_ptr<Listener>> listeners;
  std::vector<ListeningSocket> inherited;  // graceful restart; guarded by listeners_mutex

  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> next_connection_id{1};
  std::atomic<std::size_t> next_timer_shard{0};

  // Stall detector (see HandlerName in net.h).
  std::thread watchdog;
  std::mutex watchdog_mutex;
  std::condition_variable watchdog_cv;
  bool watchdog_stop = false;
  mutable std::mutex loop_mutex;
  LoopHealth loop;  // under loop_mutex
  Histogram* stall_seconds = nullptr;
  std::vector<std::shared_ptr<std::function<void(error_code)>>> heartbeats;  // one per shard
  void start_heartbeat(Shard& shard);
  void watchdog_loop();

  std::mutex run_mutex;
  std::condition_variable run_cv;
  bool stop_requested = false;
  bool running = false;
  bool finished = false;

  std::chrono::seconds idle() const { return std::chrono::seconds(std::max(1, options.idle_timeout_seconds)); }

  void start_accepting(Listener& l);
  void close_unclaimed_inherited();
  awaitable<void> accept_loop(Listener& l);
  void hand_off(Listener& l, Shard& shard, tcp::socket socket);
  Result<std::vector<BoundEndpoint>> add_listeners(std::vector<std::unique_ptr<Listener>> created);
  // `gauge`: the listener's open-connections gauge (nullptr: the HTTP one).
  void release_connection(const std::string& ip, Gauge* gauge = nullptr) {
    std::lock_guard lock(connections_mutex);
    connections.close(ip);
    (gauge ? gauge : metrics.open)->add(-1);
    connections_cv.notify_all();
  }
  int open_connections() {
    std::lock_guard lock(connections_mutex);
    return connections.total();
  }
  void spawn(Shard& shard, awaitable<void> a, const char* what);
};


// Start a session for an accepted, admitted connection; called on `shard`'s thread.
void start_plain_session(HttpServer::Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket,
                         std::string ip);
void start_tls_session(HttpServer::Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket,
                       std::string ip);
// stream_session.cc: a raw byte-stream connection on a stream listener.
void start_stream_session(HttpServer::Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket,
                          std::string ip);
// stream_session.cc: an outgoing stream connection (HttpServer::connect_stream).
void connect_stream_session(HttpServer::Impl& impl, Shard& shard, OutgoingStreamSpec spec,
                            StreamConnectHandler handler);
// server.cc: true when the certificate name pattern ("*.example.org" or a name) covers `name`.
bool domain_matches(std::string_view pattern, std::string_view name);
// An address as text (IPv4-mapped IPv6 addresses shown as IPv4).
std::string ip_string(const asio::ip::address& a);

}  // namespace hearth::net
