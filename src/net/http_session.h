// Private to net/: the HTTP and WebSocket session templates, instantiated once for plain
// TCP (session_plain.cc) and once for TLS (session_tls.cc) so that neither translation
// unit carries both. Includes Beast; nothing outside src/net/ may include it.
#pragma once

#include <fcntl.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <array>
#include <deque>
#include <limits>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "core/random.h"
#include "net/server_internal.h"

namespace hearth::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using Impl = HttpServer::Impl;

// ---------------------------------------------------------------------------------------
// Responding from any thread.

struct ResponseSlot {
  explicit ResponseSlot(asio::any_io_executor ex) : timer(ex) {}
  std::optional<HttpResponse> value;
  std::optional<BodyAdmission> admission;  // a streamed route's check_body result
  asio::steady_timer timer;
};

// A streamed body's file: removed when the request is over, unless the handler took it.
struct StagedBody {
  std::string path;
  StagedBody() = default;
  StagedBody(const StagedBody&) = delete;
  StagedBody& operator=(const StagedBody&) = delete;
  ~StagedBody() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

// Leaves the in-flight gate unless handed on to a Responder.
struct GateTicket {
  std::shared_ptr<InflightGate> gate;
  GateTicket() = default;
  GateTicket(const GateTicket&) = delete;
  GateTicket& operator=(const GateTicket&) = delete;
  ~GateTicket() {
    if (gate) gate->leave();
  }
};

class Responder {
 public:
  Responder(std::shared_ptr<ShardPost> shard, std::weak_ptr<ResponseSlot> slot,
            std::shared_ptr<InflightGate> gate)
      : shard_(std::move(shard)), slot_(std::move(slot)), gate_(std::move(gate)) {}
  ~Responder() {
    if (!done_.load()) deliver(HttpResponse::json(500, json_error("handler dropped the request")));
  }
  void deliver(HttpResponse r) {
    if (done_.exchange(true)) return;
    if (gate_) gate_->leave();
    shard_->post([slot = slot_, r = std::move(r)]() mutable {
      if (auto s = slot.lock()) {
        s->value = std::move(r);
        s->timer.cancel();
      }
    });
  }

 private:
  std::shared_ptr<ShardPost> shard_;
  std::weak_ptr<ResponseSlot> slot_;
  std::shared_ptr<InflightGate> gate_;
  std::atomic<bool> done_{false};
};

inline void invoke_handler(const HttpHandler& h, HttpRequest&& req, const Respond& respond) {
  try {
    h(std::move(req), respond);
  } catch (const std::exception& e) {
    respond(HttpResponse::json(500, json_error("internal error")));
  } catch (...) {
    respond(HttpResponse::json(500, json_error("internal error")));
  }
}

// ---------------------------------------------------------------------------------------
// WebSocket.

class WsOutbox {
 public:
  virtual ~WsOutbox() = default;
  virtual void enqueue(std::string message, bool binary) = 0;
  virtual void request_close(int code, std::string reason, bool overflow) = 0;
};

class WsHandle final : public WebSocketConnection, public std::enable_shared_from_this<WsHandle> {
 public:
  WsHandle(std::shared_ptr<ShardPost> shard, std::weak_ptr<WsOutbox> outbox, std::string ip,
           std::size_t budget)
      : shard_(std::move(shard)), outbox_(std::move(outbox)), ip_(std::move(ip)), budget_(budget) {}

  void send(std::string message, bool binary) override {
    if (closed_.load()) return;
    std::size_t n = message.size();
    if (queued_.fetch_add(n) + n > budget_) {
      queued_.fetch_sub(n);
      post_close(1008, "send queue overflow", true);
      return;
    }
    shard_->post([self = shared_from_this(), m = std::move(message), binary, n]() mutable {
      if (auto o = self->outbox_.lock()) o->enqueue(std::move(m), binary);
      else self->written(n);
    });
  }
  void close(int code, std::string reason) override { post_close(code, std::move(reason), false); }
  const std::string& remote_ip() const override { return ip_; }
  std::size_t queued_bytes() const override { return queued_.load(); }
  void post(std::function<void()> fn) override { shard_->post(std::move(fn)); }
  void post_after(std::chrono::milliseconds delay, std::function<void()> fn) override {
    shard_->post_after(delay, std::move(fn));
  }

  void written(std::size_t n) { queued_.fetch_sub(n); }
  void mark_closed() { closed_.store(true); }

 private:
  void post_close(int code, std::string reason, bool overflow) {
    if (closed_.load()) return;
    shard_->post([w = outbox_, code, reason = std::move(reason), overflow]() mutable {
      if (auto o = w.lock()) o->request_close(code, std::move(reason), overflow);
    });
  }

  std::shared_ptr<ShardPost> shard_;
  std::weak_ptr<WsOutbox> outbox_;
  std::string ip_;
  std::size_t budget_;
  std::atomic<std::size_t> queued_{0};
  std::atomic<bool> closed_{false};
};

template <typename Stream>
class WsSession final : public WsOutbox, public std::enable_shared_from_this<WsSession<Stream>> {
 public:
  WsSession(Impl& impl, Shard& shard, Stream&& stream, std::string ip, const WebSocketRoute& route)
      : impl_(impl), shard_(shard), ws_(std::move(stream)), ip_(std::move(ip)), route_(route) {}

  awaitable<void> run(http::request<http::empty_body> upgrade, HttpRequest request) {
    auto self = this->shared_from_this();
    websocket::stream_base::timeout t;
    t.handshake_timeout = std::min<std::chrono::seconds>(impl_.idle(), std::chrono::seconds(10));
    t.idle_timeout = impl_.idle();
    t.keep_alive_pings = true;
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(t);
    bool select_subprotocol = false;
    if (!route_.subprotocol.empty()) {
      std::string_view offered = upgrade[http::field::sec_websocket_protocol];
      for (std::size_t pos = 0; pos <= offered.size();) {
        auto comma = offered.find(',', pos);
        std::string_view item = offered.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (item == route_.subprotocol) select_subprotocol = true;
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
      }
    }
    ws_.set_option(websocket::stream_base::decorator(
        [select_subprotocol, proto = route_.subprotocol](websocket::response_type& res) {
          res.set(http::field::server, "hearth");
          if (select_subprotocol) res.set(http::field::sec_websocket_protocol, proto);
        }));
    ws_.read_message_max(route_.max_message_bytes);
    ws_.auto_fragment(false);

    // The acceptor runs before the handshake completes so that its callbacks are in place
    // before the client can send anything; what it sends waits for the handshake.
    handle_ = std::make_shared<WsHandle>(shard_.poster, std::weak_ptr<WsOutbox>(self), ip_,
                                         impl_.options.websocket_max_queued_bytes);
    try {
      callbacks_ = route_.acceptor(handle_, request);
    } catch (...) {
      request_close(1011, "internal error", false);
    }
    if (draining_) request_close(1001, "server shutting down", false);

    error_code ec;
    co_await ws_.async_accept(upgrade, ec_token(ec));
    if (ec) {
      finish();
      co_return;
    }
    impl_.metrics.count_status(101);
    accepted_ = true;
    if (!queue_.empty() || close_reason_) start_writer();

    beast::flat_buffer buffer;
    for (;;) {
      co_await ws_.async_read(buffer, ec_token(ec));
      if (ec) break;
      if (callbacks_.on_message) {
        auto data = buffer.data();
        std::string_view message(static_cast<const char*>(data.data()), data.size());
        try {
          callbacks_.on_message(message, !ws_.got_text());
        } catch (...) {
          request_close(1011, "internal error", false);
        }
      }
      buffer.consume(buffer.size());
    }
    finish();
  }

  void enqueue(std::string message, bool binary) override {
    if (closing_ || finished_) {
      handle_->written(message.size());
      return;
    }
    queue_.push_back({std::move(message), binary});
    start_writer();
  }

  void request_close(int code, std::string reason, bool overflow) override {
    if (closing_ || finished_) return;
    closing_ = true;
    if (overflow) {
      for (auto& m : queue_) handle_->written(m.data.size());
      queue_.clear();
      if (writing_ || !accepted_) {  // a write is stuck on a slow reader: cut the connection
        error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
        return;
      }
    }
    if (reason.size() > 120) reason.resize(120);
    close_reason_ = websocket::close_reason(static_cast<websocket::close_code>(code), reason);
    start_writer();
  }

  void begin_drain() {
    draining_ = true;
    if (handle_) request_close(1001, "server shutting down", false);
  }
  void force_close() {
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

 private:
  struct Outgoing {
    std::string data;
    bool binary;
  };

  void start_writer() {
    if (writing_ || !accepted_) return;
    writing_ = true;
    impl_.spawn(shard_, write_loop(this->shared_from_this()), "websocket.write");
  }

  awaitable<void> write_loop(std::shared_ptr<WsSession> self) {
    error_code ec;
    while (!queue_.empty() && !finished_) {
      Outgoing m = std::move(queue_.front());
      queue_.pop_front();
      ws_.binary(m.binary);
      co_await ws_.async_write(asio::buffer(m.data), ec_token(ec));
      handle_->written(m.data.size());
      if (ec) {
        for (auto& q : queue_) handle_->written(q.data.size());
        queue_.clear();
        writing_ = false;
        co_return;
      }
    }
    if (close_reason_ && !finished_ && ws_.is_open()) {
      auto reason = *close_reason_;
      close_reason_.reset();
      co_await ws_.async_close(reason, ec_token(ec));
    }
    writing_ = false;
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    if (handle_) handle_->mark_closed();
    if (callbacks_.on_close) {
      try {
        callbacks_.on_close();
      } catch (...) {
      }
    }
    callbacks_ = {};
  }

  Impl& impl_;
  Shard& shard_;
  websocket::stream<Stream> ws_;
  std::string ip_;
  const WebSocketRoute& route_;
  std::shared_ptr<WsHandle> handle_;
  WebSocketCallbacks callbacks_;
  std::deque<Outgoing> queue_;
  std::optional<websocket::close_reason> close_reason_;
  bool accepted_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool finished_ = false;
  bool draining_ = false;
};

// ---------------------------------------------------------------------------------------
// HTTP session: one per accepted connection, on one shard for its whole life.

template <typename Stream>
class HttpSession final : public Connection, public std::enable_shared_from_this<HttpSession<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  HttpSession(Impl& impl, Shard& shard, const Listener& listener, Stream&& stream, std::string ip)
      : impl_(impl),
        shard_(shard),
        listener_(listener),
        stream_(std::move(stream)),
        ip_(std::move(ip)),
        id_(impl.next_connection_id.fetch_add(1)) {}

  ~HttpSession() override {
    shard_.connections.erase(id_);
    impl_.release_connection(ip_);
  }

  void start() {
    shard_.connections.emplace(id_, this->weak_from_this());
    impl_.spawn(shard_, run(), "http.session");
  }

  void begin_drain() override {
    draining_ = true;
    if (ws_) {
      ws_->begin_drain();
    } else if (idle_) {
      error_code ignored;
      beast::get_lowest_layer(stream_).socket().close(ignored);
    }
  }

  void force_close() override {
    forced_ = true;
    if (ws_) {
      ws_->force_close();
      return;
    }
    if (auto slot = slot_.lock()) slot->timer.cancel();
    if (!upgraded_) {
      error_code ignored;
      beast::get_lowest_layer(stream_).socket().close(ignored);
    }
  }

 private:
  enum class Outcome { keep_alive, close, linger_close, abort };

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  awaitable<void> run() {
    auto self = this->shared_from_this();
    error_code ec;
    if (impl_.stopping.load()) draining_ = true;
    if constexpr (kTls) {
      SSL* ssl = stream_.native_handle();
      SSL_set_ex_data(ssl, alpn_ex_index(), const_cast<std::string*>(&listener_.alpn_wire));
      lowest().expires_after(impl_.idle());
      idle_ = true;
      co_await stream_.async_handshake(ssl::stream_base::server, ec_token(ec));
      idle_ = false;
      if (ec || draining_) {
        lowest().socket().close(ec);
        co_return;
      }
      if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) sni_ = lowercase(sni);
      const unsigned char* proto = nullptr;
      unsigned proto_len = 0;
      SSL_get0_alpn_selected(ssl, &proto, &proto_len);
      if (proto) alpn_.assign(reinterpret_cast<const char*>(proto), proto_len);
    }

    Outcome outcome = Outcome::close;
    while (!draining_) {
      outcome = co_await serve_one();
      if (outcome != Outcome::keep_alive || upgraded_) break;
    }
    if (upgraded_) co_return;
    co_await shut_down(outcome);
  }

  // Reads one request and answers it.
  // Counts a response that was written (or failed to be) and says what the connection does next.
  Outcome response_sent(int status, std::chrono::steady_clock::time_point started, const error_code& ec,
                        bool keep_alive, bool linger) {
    impl_.metrics.count_status(status);
    impl_.metrics.duration->observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (ec) return Outcome::abort;
    if (keep_alive) return Outcome::keep_alive;
    return linger ? Outcome::linger_close : Outcome::close;
  }

  awaitable<Outcome> serve_one() {
    error_code ec;
    http::request_parser<http::empty_body> head;
    head.header_limit(static_cast<std::uint32_t>(
        std::clamp<std::int64_t>(impl_.options.max_header_bytes, 256, 1 << 30)));
    head.body_limit(std::numeric_limits<std::uint64_t>::max());  // checked below, per route
    lowest().expires_after(impl_.idle());
    idle_ = true;
    co_await http::async_read_header(stream_, buffer_, head, ec_token(ec));
    idle_ = false;
    if (ec) co_return co_await on_read_error(ec);

    auto started = std::chrono::steady_clock::now();
    const auto& h = head.get();
    HttpRequest req;
    req.method = std::string(h.method_string());
    head_request_ = req.method == "HEAD";
    range_header_ = std::string(h[http::field::range]);
    req.target = std::string(h.target());
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    for (const auto& f : h) req.headers.emplace_back(lowercase(f.name_string()), std::string(f.value()));
    req.remote_ip = ip_;
    req.tls = kTls;
    req.alpn = alpn_;
    req.server_name = !sni_.empty() ? sni_ : host_without_port(req.header("host"));
    bool keep_alive = h.keep_alive();
    unsigned version = h.version();

    if (websocket::is_upgrade(h)) {
      if (const WebSocketRoute* route = impl_.router.find_websocket(req.path)) {
        if (!rate_allowed(req, nullptr)) co_return co_await write(rate_limited_, started, false, version, true);
        co_await upgrade(head.release(), std::move(req), *route);
        co_return Outcome::close;
      }
    }

    RouteMatch match = impl_.router.find(req.method, req.path);
    const RouteOptions* opts = match.options;
    std::int64_t limit = opts && opts->max_body_bytes >= 0 ? opts->max_body_bytes : impl_.options.max_body_bytes;
    if (auto declared = head.content_length(); declared && *declared > static_cast<std::uint64_t>(limit)) {
      impl_.metrics.rejected_body_too_large->inc();
      co_return co_await write(HttpResponse::json(413, json_error("request body too large")), started,
                               false, version, true);
    }

    if (match.kind == RouteMatch::Kind::handler && !opts->body_staging_dir.empty())
      co_return co_await serve_streamed(head, std::move(req), match, limit, keep_alive, version);

    if (!head.is_done()) {
      if (beast::iequals(h[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, version};
        lowest().expires_after(impl_.idle());
        co_await http::async_write(stream_, cont, ec_token(ec));
        if (ec) co_return Outcome::abort;
      }
      http::request_parser<http::string_body> body_parser{std::move(head)};
      body_parser.body_limit(static_cast<std::uint64_t>(std::max<std::int64_t>(0, limit)));
      lowest().expires_after(impl_.idle());
      co_await http::async_read(stream_, buffer_, body_parser, ec_token(ec));
      if (ec == http::error::body_limit) {
        impl_.metrics.rejected_body_too_large->inc();
        co_return co_await write(HttpResponse::json(413, json_error("request body too large")), started,
                                 false, version, true);
      }
      if (ec) co_return co_await on_read_error(ec);
      req.body = std::move(body_parser.get().body());
    }
    started = std::chrono::steady_clock::now();

    if (match.kind != RouteMatch::Kind::handler) {
      if (!rate_allowed(req, nullptr)) co_return co_await write(rate_limited_, started, keep_alive, version, false);
      HttpResponse r;
      if (match.kind == RouteMatch::Kind::method_not_allowed) {
        r = HttpResponse::json(405, json_error("method not allowed"));
        r.headers.emplace_back("Allow", match.allow);
      } else if (impl_.router.find_websocket(req.path)) {
        r = HttpResponse::json(426, json_error("websocket upgrade required"));
        r.headers.emplace_back("Upgrade", "websocket");
      } else {
        r = HttpResponse::json(404, json_error("not found"));
      }
      co_return co_await write(std::move(r), started, keep_alive, version, false);
    }

    if (!rate_allowed(req, opts)) co_return co_await write(rate_limited_, started, keep_alive, version, false);

    GateTicket ticket;
    if (!opts->exempt_from_admission) {
      if (!impl_.inflight->try_enter()) {
        impl_.metrics.rejected_admission->inc();
        auto r = HttpResponse::json(503, json_error("server busy"));
        r.headers.emplace_back("Retry-After", "1");
        co_return co_await write(std::move(r), started, keep_alive, version, false);
      }
      ticket.gate = impl_.inflight;
    }
    co_return co_await call_handler(match, std::move(req), ticket, started, keep_alive, version);
  }

  // Runs the route's handler (inline or on the worker pool) and writes its response.
  awaitable<Outcome> call_handler(const RouteMatch& match, HttpRequest req, GateTicket& ticket,
                                  std::chrono::steady_clock::time_point started, bool keep_alive, unsigned version) {
    const RouteOptions* opts = match.options;
    error_code ec;
    auto slot = std::make_shared<ResponseSlot>(stream_.get_executor());
    slot_ = slot;
    {
      auto responder = std::make_shared<Responder>(shard_.poster, slot, std::move(ticket.gate));
      Respond respond = [responder](HttpResponse r) { responder->deliver(std::move(r)); };
      if (opts->blocking) {
        const HttpHandler* handler = match.handler;
        bool queued = impl_.pool.try_post([handler, req = std::move(req), respond]() mutable {
          invoke_handler(*handler, std::move(req), respond);
        });
        if (!queued) {
          impl_.metrics.rejected_worker_pool->inc();
          auto r = HttpResponse::json(503, json_error("server busy"));
          r.headers.emplace_back("Retry-After", "1");
          respond(std::move(r));
        }
      } else {
        HandlerName name(match.path ? match.path->c_str() : "http");
        invoke_handler(*match.handler, std::move(req), respond);
      }
    }
    while (!slot->value && !forced_) {
      slot->timer.expires_at(asio::steady_timer::time_point::max());
      co_await slot->timer.async_wait(ec_token(ec));
    }
    if (!slot->value) co_return Outcome::abort;
    HttpResponse response = std::move(*slot->value);
    slot_.reset();
    co_return co_await write(std::move(response), started, keep_alive, version, false);
  }

  // A route with body_staging_dir: checks come before any body byte is read, then the
  // body goes to a staging file through one read buffer (buffer_), never whole in memory.
  awaitable<Outcome> serve_streamed(http::request_parser<http::empty_body>& head, HttpRequest req,
                                    const RouteMatch& match, std::int64_t limit, bool keep_alive, unsigned version) {
    const RouteOptions* opts = match.options;
    auto started = std::chrono::steady_clock::now();
    error_code ec;
    // Past a refusal the body stays unread: the connection closes after the answer.
    auto refuse = [&](HttpResponse r) { return write(std::move(r), started, false, version, true); };
    auto too_large = [&] {
      impl_.metrics.rejected_body_too_large->inc();
      return refuse(HttpResponse::json(413, json_error("request body too large")));
    };
    auto declared = head.content_length();
    if (!declared && !head.chunked()) co_return co_await refuse(HttpResponse::json(411, json_error("length required")));
    if (!rate_allowed(req, opts)) co_return co_await refuse(rate_limited_);
    GateTicket ticket;
    if (!opts->exempt_from_admission) {
      if (!impl_.inflight->try_enter()) {
        impl_.metrics.rejected_admission->inc();
        auto r = HttpResponse::json(503, json_error("server busy"));
        r.headers.emplace_back("Retry-After", "1");
        co_return co_await refuse(std::move(r));
      }
      ticket.gate = impl_.inflight;
    }
    if (opts->check_body) {
      std::optional<BodyAdmission> admission;
      auto run_check = [check = &opts->check_body](const HttpRequest& head_only) {
        try {
          return (*check)(head_only);
        } catch (...) {
          BodyAdmission a;
          a.refuse = HttpResponse::json(500, json_error("internal error"));
          return a;
        }
      };
      if (opts->blocking) {
        auto slot = std::make_shared<ResponseSlot>(stream_.get_executor());
        slot_ = slot;
        bool queued = impl_.pool.try_post(
            [run_check, head_only = req, poster = shard_.poster, w = std::weak_ptr<ResponseSlot>(slot)]() mutable {
              BodyAdmission a = run_check(head_only);
              poster->post([w, a = std::move(a)]() mutable {
                if (auto s = w.lock()) {
                  s->admission = std::move(a);
                  s->timer.cancel();
                }
              });
            });
        if (!queued) {
          impl_.metrics.rejected_worker_pool->inc();
          auto r = HttpResponse::json(503, json_error("server busy"));
          r.headers.emplace_back("Retry-After", "1");
          co_return co_await refuse(std::move(r));
        }
        while (!slot->admission && !forced_) {
          slot->timer.expires_at(asio::steady_timer::time_point::max());
          co_await slot->timer.async_wait(ec_token(ec));
        }
        slot_.reset();
        if (!slot->admission) co_return Outcome::abort;
        admission = std::move(slot->admission);
      } else {
        HandlerName name(match.path ? match.path->c_str() : "http");
        admission = run_check(req);
      }
      if (admission->refuse) co_return co_await refuse(std::move(*admission->refuse));
      if (admission->limit >= 0) limit = std::min(limit, admission->limit);
    }
    limit = std::max<std::int64_t>(0, limit);
    if (declared && *declared > static_cast<std::uint64_t>(limit)) co_return co_await too_large();

    StagedBody staged;
    staged.path = fmt::format("{}/http-{}", opts->body_staging_dir, random_hex(12));
    int fd = ::open(staged.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
      int err = errno;
      impl_.log.warn("http.staging_failed", {{"path", staged.path}, {"error", std::strerror(err)}});
      staged.path.clear();
      co_return co_await refuse(err == ENOSPC || err == EDQUOT
                                    ? HttpResponse::json(507, json_error("insufficient storage"))
                                    : HttpResponse::json(500, json_error("cannot stage the body")));
    }
    if (beast::iequals(head.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      lowest().expires_after(impl_.idle());
      co_await http::async_write(stream_, cont, ec_token(ec));
      if (ec) {
        ::close(fd);
        co_return Outcome::abort;
      }
    }
    std::int64_t bytes = 0;
    {
      http::request_parser<http::file_body> body_parser{std::move(head)};
      body_parser.body_limit(static_cast<std::uint64_t>(limit));
      beast::file file;
      file.native_handle(fd);
      body_parser.get().body().reset(std::move(file), ec);
      if (ec) co_return co_await refuse(HttpResponse::json(500, json_error("cannot stage the body")));
      // One idle timeout per read (not for the whole body): a large upload on a slow link
      // goes on as long as bytes arrive.
      while (!body_parser.is_done()) {
        lowest().expires_after(impl_.idle());
        co_await http::async_read_some(stream_, buffer_, body_parser, ec_token(ec));
        if (ec) break;
      }
      if (ec == http::error::body_limit) co_return co_await too_large();
      if (ec) co_return co_await on_read_error(ec);  // cut short, timed out, malformed
      auto size = body_parser.get().body().file().size(ec);
      if (ec) co_return co_await refuse(HttpResponse::json(500, json_error("cannot stage the body")));
      bytes = static_cast<std::int64_t>(size);
      body_parser.get().body().close();
    }
    req.body_file = staged.path;
    req.body_file_bytes = bytes;
    started = std::chrono::steady_clock::now();
    co_return co_await call_handler(match, std::move(req), ticket, started, keep_alive, version);
  }

  bool rate_allowed(const HttpRequest& req, const RouteOptions* opts) {
    if (opts && opts->exempt_from_rate_limit) return true;
    RateLimiter::Decision d;
    {
      std::lock_guard lock(impl_.rate_mutex);
      d = impl_.rate.acquire(ip_);
    }
    if (d.allowed) return true;
    impl_.metrics.rejected_rate_limit->inc();
    rate_limited_ = HttpResponse::json(429, json_error("too many requests"));
    rate_limited_.headers.emplace_back("Retry-After", std::to_string(d.retry_after_seconds));
    return false;
  }

  awaitable<Outcome> on_read_error(error_code ec) {
    if (ec == http::error::body_limit) {
      impl_.metrics.rejected_body_too_large->inc();
      co_return co_await write(HttpResponse::json(413, json_error("request body too large")),
                               std::chrono::steady_clock::now(), false, 11, true);
    }
    if (ec == http::error::header_limit) {
      impl_.metrics.rejected_header_too_large->inc();
      co_return co_await write(HttpResponse::json(431, json_error("request header too large")),
                               std::chrono::steady_clock::now(), false, 11, true);
    }
    if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      impl_.metrics.rejected_bad_request->inc();
      impl_.log.debug("http.bad_request", {{"ip", ip_}, {"error", ec.message()}});
      co_return co_await write(HttpResponse::json(400, json_error("bad request")),
                               std::chrono::steady_clock::now(), false, 11, true);
    }
    co_return Outcome::abort;
  }

  template <class Body>
  static void set_head(http::response<Body>& res, const HttpResponse& r, unsigned version) {
    res.version(version == 10 ? 10 : 11);
    res.result(static_cast<unsigned>(std::clamp(r.status, 100, 999)));
    res.set(http::field::server, "hearth");
    if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
    for (auto& [name, value] : r.headers) {
      if (name.empty() || name.find_first_of("\r\n:") != std::string::npos ||
          value.find_first_of("\r\n") != std::string::npos)
        continue;
      res.insert(name, value);
    }
  }

  awaitable<Outcome> write(HttpResponse r, std::chrono::steady_clock::time_point started, bool keep_alive,
                           unsigned version, bool linger) {
    if (!r.body_file.empty() && r.status == 200)
      co_return co_await write_file(std::move(r), started, keep_alive, version, linger);
    keep_alive = keep_alive && !draining_ && !impl_.stopping.load();
    http::response<http::string_body> res;
    set_head(res, r, version);
    bool no_body = r.status < 200 || r.status == 204 || r.status == 304;
    if (no_body) r.body.clear();
    else res.content_length(r.body.size());
    // HEAD: the length of what GET would send, and no body (RFC 9110 §9.3.2).
    if (head_request_) r.body.clear();
    res.body() = std::move(r.body);
    res.keep_alive(keep_alive);

    error_code ec;
    lowest().expires_after(impl_.idle());
    co_await http::async_write(stream_, res, ec_token(ec));
    co_return response_sent(r.status, started, ec, keep_alive, linger);
  }

  // A file body (HttpResponse::body_file): the head, then the file (or its requested
  // range) through one 64 KiB buffer, each write bounded by the idle timeout.
  awaitable<Outcome> write_file(HttpResponse r, std::chrono::steady_clock::time_point started, bool keep_alive,
                                unsigned version, bool linger) {
    int fd = ::open(r.body_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) co_return co_await write(HttpResponse::json(404, json_error("not found")), started, keep_alive, version, linger);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0)
      co_return co_await write(HttpResponse::json(500, json_error("internal error")), started, keep_alive, version, linger);
    const std::int64_t size = st.st_size;
    std::int64_t first = 0, length = size;
    const bool enveloped = !r.body_file_prefix.empty() || !r.body_file_suffix.empty();
    if (!enveloped) r.headers.emplace_back("Accept-Ranges", "bytes");
    if (!range_header_.empty() && !enveloped) {
      if (auto range = parse_byte_range(range_header_, size); !range) {
        // Not a single byte range we understand: the whole file (RFC 9110 §14.2 allows it).
      } else if (range->first < 0) {
        HttpResponse refused = HttpResponse::json(416, json_error("range not satisfiable"));
        refused.headers.emplace_back("Content-Range", fmt::format("bytes */{}", size));
        co_return co_await write(std::move(refused), started, keep_alive, version, linger);
      } else {
        first = range->first;
        length = range->second - range->first + 1;
        r.status = 206;
        r.headers.emplace_back("Content-Range", fmt::format("bytes {}-{}/{}", range->first, range->second, size));
      }
    }
    keep_alive = keep_alive && !draining_ && !impl_.stopping.load();
    http::response<http::empty_body> res;
    set_head(res, r, version);
    res.content_length(static_cast<std::uint64_t>(r.body_file_prefix.size() + length + r.body_file_suffix.size()));
    res.keep_alive(keep_alive);
    error_code ec;
    lowest().expires_after(impl_.idle());
    http::response_serializer<http::empty_body> sr{res};
    co_await http::async_write_header(stream_, sr, ec_token(ec));
    if (!ec && !head_request_ && !r.body_file_prefix.empty())
      co_await asio::async_write(stream_, asio::buffer(r.body_file_prefix), ec_token(ec));
    if (!ec && !head_request_) {
      std::vector<char> chunk(std::size_t{64} << 10);
      std::int64_t offset = first, left = length;
      while (left > 0) {
        ssize_t n = ::pread(fd, chunk.data(), static_cast<std::size_t>(std::min<std::int64_t>(left, chunk.size())), offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {  // the file shrank or failed under us: the client sees a cut body
          ec = asio::error::broken_pipe;
          break;
        }
        lowest().expires_after(impl_.idle());
        co_await asio::async_write(stream_, asio::buffer(chunk.data(), static_cast<std::size_t>(n)), ec_token(ec));
        if (ec) break;
        offset += n;
        left -= n;
      }
    }
    if (!ec && !head_request_ && !r.body_file_suffix.empty()) {
      lowest().expires_after(impl_.idle());
      co_await asio::async_write(stream_, asio::buffer(r.body_file_suffix), ec_token(ec));
    }
    co_return response_sent(r.status, started, ec, keep_alive, linger);
  }

  awaitable<void> upgrade(http::request<http::empty_body> upgrade_req, HttpRequest req,
                          const WebSocketRoute& route) {
    upgraded_ = true;
    lowest().expires_never();
    auto ws = std::make_shared<WsSession<Stream>>(impl_, shard_, std::move(stream_), ip_, route);
    ws_ = ws;
    if (draining_) ws->begin_drain();
    co_await ws->run(std::move(upgrade_req), std::move(req));
    ws_.reset();
  }

  // Closes the connection; after an error response, reads (and drops) what the client
  // still sends for a moment so that the close does not reset the connection before the
  // client read the response.
  awaitable<void> shut_down(Outcome outcome) {
    error_code ec;
    if (outcome == Outcome::abort || forced_) {
      lowest().socket().close(ec);
      co_return;
    }
    if constexpr (kTls) {
      lowest().expires_after(kLingerTime);
      co_await stream_.async_shutdown(ec_token(ec));
    } else {
      lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
      if (outcome == Outcome::linger_close || outcome == Outcome::close) {
        lowest().expires_after(kLingerTime);
        std::array<char, 4096> scratch;
        std::size_t total = 0;
        while (!ec && total < kLingerBytes) {
          total += co_await lowest().async_read_some(asio::buffer(scratch), ec_token(ec));
        }
      }
    }
    lowest().socket().close(ec);
  }

  Impl& impl_;
  Shard& shard_;
  const Listener& listener_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::string ip_;
  std::uint64_t id_;
  std::string sni_;
  std::string alpn_;
  HttpResponse rate_limited_;
  bool head_request_ = false;  // the request being answered is a HEAD
  std::string range_header_;   // its Range header ("" if none), for file responses
  std::weak_ptr<ResponseSlot> slot_;
  std::shared_ptr<WsSession<Stream>> ws_;
  bool idle_ = false;
  bool draining_ = false;
  bool forced_ = false;
  bool upgraded_ = false;
};

}  // namespace hearth::net
