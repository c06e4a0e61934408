// HttpServer: shards, acceptors, TLS contexts, stop and drain. Sessions live in
// http_session.h (instantiated by session_plain.cc and session_tls.cc).
#include <fcntl.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ssl.hpp>

#include "net/server_internal.h"

namespace hearth::net {

// The running shard's handler-name slot (null off shard threads); see HandlerName.
thread_local std::atomic<const char*>* current_handler_slot = nullptr;

HandlerName::HandlerName(const char* name) {
  if (current_handler_slot) {
    previous_ = current_handler_slot->exchange(name, std::memory_order_relaxed);
    active_ = true;
  }
}

HandlerName::~HandlerName() {
  if (active_) current_handler_slot->store(previous_, std::memory_order_relaxed);
}

namespace {

constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
}  // namespace

bool domain_matches(std::string_view pattern, std::string_view name) {
  auto iequal = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  };
  if (pattern.substr(0, 2) == "*.") {
    auto dot = name.find('.');
    return dot != std::string_view::npos && dot > 0 && iequal(pattern.substr(1), name.substr(dot));
  }
  return iequal(pattern, name);
}
std::string ip_string(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  return a.to_string();
}

std::size_t HttpServer::Impl::client_context_for(std::string_view local_name) const {
  for (std::size_t i = 0; i < tls_domains.size(); ++i)
    if (domain_matches(tls_domains[i], local_name)) return i;
  return 0;
}

namespace {
// Peers' certificates are verified after the handshake by the protocol layer (with the
// result recorded here), so that a bad one gets a protocol error instead of a TLS alert.
int accept_any_peer(int, X509_STORE_CTX*) { return 1; }
}  // namespace

int alpn_ex_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
void HttpServer::Impl::spawn(Shard& shard, awaitable<void> a, const char* what) {
  asio::co_spawn(*shard.ctx, std::move(a), [this, what](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log.error("http.bug", {{"where", what}, {"error", ex.what()}});
    } catch (...) {
      log.error("http.bug", {{"where", what}});
    }
  });
}

namespace {

using Impl = HttpServer::Impl;

// ---------------------------------------------------------------------------------------
// TLS callbacks.

int select_server_name(SSL* ssl, int*, void* arg) {
  auto* impl = static_cast<Impl*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  for (std::size_t i = 0; i < impl->tls_domains.size(); ++i) {
    if (domain_matches(impl->tls_domains[i], name)) {
      SSL_CTX* ctx = impl->tls[i]->native_handle();
      if (SSL_get_SSL_CTX(ssl) != ctx) SSL_set_SSL_CTX(ssl, ctx);
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_OK;  // unknown name: keep the first identity
}

int select_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned inlen, void*) {
  auto* server = static_cast<const std::string*>(SSL_get_ex_data(ssl, alpn_ex_index()));
  if (!server) return SSL_TLSEXT_ERR_NOACK;
  for (std::size_t i = 0; i < server->size();) {
    std::size_t len = static_cast<unsigned char>((*server)[i]);
    std::string_view want(server->data() + i + 1, len);
    for (unsigned j = 0; j < inlen;) {
      unsigned clen = in[j];
      if (j + 1 + clen > inlen) break;
      if (std::string_view(reinterpret_cast<const char*>(in + j + 1), clen) == want) {
        *out = in + j + 1;
        *outlen = static_cast<unsigned char>(clen);
        return SSL_TLSEXT_ERR_OK;
      }
      j += 1 + clen;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

awaitable<void> refuse_connection(tcp::socket socket, bool tls) {
  error_code ec;
  if (tls) {
    socket.close(ec);
    co_return;
  }
  static const std::string kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nServer: hearth\r\nRetry-After: 1\r\n"
      "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n\r\n"
      "server busy\n";
  asio::steady_timer deadline(socket.get_executor());
  deadline.expires_after(kLingerTime);
  deadline.async_wait([&socket](error_code e) {
    if (!e) socket.close(e);  // a client that neither reads nor closes
  });
  co_await asio::async_write(socket, asio::buffer(kBusy), ec_token(ec));
  if (!ec) {
    socket.shutdown(tcp::socket::shutdown_send, ec);
    std::array<char, 1024> scratch;
    std::size_t total = 0;
    while (!ec && total < kLingerBytes) total += co_await socket.async_read_some(asio::buffer(scratch), ec_token(ec));
  }
  deadline.cancel();
  socket.close(ec);
}

bool is_resource_error(const error_code& ec) {
  return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory || ec.value() == ENFILE;
}

}  // namespace


// ---------------------------------------------------------------------------------------
// Accepting.

void HttpServer::Impl::start_accepting(Listener& l) {
  spawn(*shards[static_cast<std::size_t>(l.home)], accept_loop(l), "http.accept");
}

awaitable<void> HttpServer::Impl::accept_loop(Listener& l) {
  asio::steady_timer backoff(*shards[static_cast<std::size_t>(l.home)]->ctx);
  for (;;) {
    Shard& target = *shards[l.next_shard++ % shards.size()];
    error_code ec;
    tcp::socket socket = co_await l.acceptor->async_accept(*target.ctx, ec_token(ec));
    if (stopping.load() || !l.acceptor->is_open()) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      metrics.accept_errors->inc();
      if (!l.in_error_burst) {
        l.in_error_burst = true;
        log.warn("http.accept_error", {{"addr", l.bound.address}, {"port", l.bound.port},
                                       {"error", ec.message()}});
      }
      if (ec == asio::error::connection_aborted) continue;
      backoff.expires_after(is_resource_error(ec) ? kAcceptBackoff : kAcceptBackoff / 2);
      co_await backoff.async_wait(ec_token(ec));
      continue;
    }
    if (l.in_error_burst) {
      l.in_error_burst = false;
      log.info("http.accept_recovered", {{"addr", l.bound.address}, {"port", l.bound.port}});
    }
    hand_off(l, target, std::move(socket));
  }
}

void HttpServer::Impl::hand_off(Listener& l, Shard& shard, tcp::socket socket) {
  error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  if (ec) return;  // already gone
  std::string ip = ip_string(endpoint.address());
  socket.set_option(tcp::no_delay(true), ec);

  ConnectionTable::Admit admit;
  {
    std::lock_guard lock(connections_mutex);
    admit = connections.try_open(ip);
    if (admit == ConnectionTable::Admit::ok) (l.stream_open ? l.stream_open : metrics.open)->add(1);
  }
  if (admit != ConnectionTable::Admit::ok) {
    (admit == ConnectionTable::Admit::global_cap ? metrics.rejected_connection_cap : metrics.rejected_ip_cap)->inc();
    // TLS and stream listeners: just close (no HTTP 503 to send).
    asio::post(*shard.ctx, [this, &shard, s = std::move(socket), tls = l.spec.tls || l.stream_acceptor]() mutable {
      spawn(shard, refuse_connection(std::move(s), tls), "http.refuse");
    });
    return;
  }
  asio::post(*shard.ctx, [this, &shard, &l, s = std::move(socket), ip = std::move(ip)]() mutable {
    if (l.stream_acceptor) start_stream_session(*this, shard, l, std::move(s), std::move(ip));
    else if (l.spec.tls) start_tls_session(*this, shard, l, std::move(s), std::move(ip));
    else start_plain_session(*this, shard, l, std::move(s), std::move(ip));
  });

}

// ---------------------------------------------------------------------------------------
// HttpServer.

HttpServer::Impl::~Impl() {
  if (peer_store) X509_STORE_free(peer_store);
  for (auto& s : inherited)
    if (s.fd >= 0) ::close(s.fd);
  for (auto& s : shards) {
    std::lock_guard lock(s->poster->mutex);
    s->poster->ctx = nullptr;
  }
  pool.stop();
  // Destroying pending handlers destroys the sessions and accept loops, which still use
  // this object's members and may own sockets of another shard: all handlers first, then
  // the acceptors and contexts.
  for (auto& s : shards) s->ctx->destroy_pending_handlers();
  for (auto& l : listeners) l->acceptor.reset();
  heartbeats.clear();  // their timers belong to the contexts
  for (auto& s : shards) s->ctx.reset();
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;

Result<std::unique_ptr<HttpServer>> HttpServer::create(ServerOptions options, Router router,
                                                       std::vector<TlsIdentity> identities, Logger& log,
                                                       MetricsRegistry& metrics) {
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (options.shards <= 0) options.shards = cores;
  if (options.worker_threads <= 0) options.worker_threads = 2 * cores;
  if (options.max_body_bytes < 0) options.max_body_bytes = 0;
  try {
    auto impl = std::make_unique<Impl>(options, std::move(router), log, metrics);
    for (const auto& id : identities) {
      auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
      ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
      // Idle connections should not hold OpenSSL's ~34 KiB of record buffers; renegotiation
      // is a CPU-exhaustion vector and nothing here needs it.
      SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
      SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_RENEGOTIATION);
      error_code ec;
      ctx->use_certificate_chain_file(id.cert_file, ec);
      if (ec) return fail(Errc::invalid_argument, fmt::format("TLS certificate {}: {}", id.cert_file, ec.message()));
      ctx->use_private_key_file(id.key_file, ssl::context::pem, ec);
      if (ec) return fail(Errc::invalid_argument, fmt::format("TLS key {}: {}", id.key_file, ec.message()));
      SSL_CTX* native = ctx->native_handle();
      if (SSL_CTX_check_private_key(native) != 1)
        return fail(Errc::invalid_argument, fmt::format("TLS key {} does not match {}", id.key_file, id.cert_file));
      SSL_CTX_set_tlsext_servername_callback(native, select_server_name);
      SSL_CTX_set_tlsext_servername_arg(native, impl.get());
      SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);
      impl->tls.push_back(std::move(ctx));
      impl->tls_domains.push_back(id.domain);
    }
    impl->peer_store = X509_STORE_new();
    if (!impl->peer_store) return fail(Errc::internal, "cannot create a certificate store");
    if (!options.peer_ca_file.empty() || !options.peer_ca_dir.empty()) {
      if (!options.peer_ca_file.empty() && X509_STORE_load_file(impl->peer_store, options.peer_ca_file.c_str()) != 1)
        return fail(Errc::invalid_argument, fmt::format("cannot load CA file {}", options.peer_ca_file));
      if (!options.peer_ca_dir.empty() && X509_STORE_load_path(impl->peer_store, options.peer_ca_dir.c_str()) != 1)
        return fail(Errc::invalid_argument, fmt::format("cannot load CA directory {}", options.peer_ca_dir));
    } else {
      X509_STORE_set_default_paths(impl->peer_store);
    }
    for (const auto& id : identities) {
      auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
      ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      SSL_CTX* native = ctx->native_handle();
      SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
      SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
      error_code ec;
      ctx->use_certificate_chain_file(id.cert_file, ec);
      if (!ec) ctx->use_private_key_file(id.key_file, ssl::context::pem, ec);
      if (ec) return fail(Errc::invalid_argument, fmt::format("TLS client identity {}: {}", id.cert_file, ec.message()));
      SSL_CTX_set1_cert_store(native, impl->peer_store);
      SSL_CTX_set_verify(native, SSL_VERIFY_PEER, accept_any_peer);
      impl->tls_client.push_back(std::move(ctx));
    }
    impl->outgoing.stream_spec.name = "xmpp-server-out";
    impl->outgoing.stream_open = &impl->metrics_registry.gauge(
        "hearth_stream_connections_open", "Open raw stream (XMPP) connections", {{"listener", "xmpp-server-out"}});
    for (int i = 0; i < options.shards; ++i) {
      auto shard = std::make_unique<Shard>();
      shard->index = i;
      shard->poster->ctx = shard->ctx.get();
      shard->stalls = &impl->metrics_registry.counter(
          "hearth_loop_stalls_total", "Event-loop turns longer than server.stall_warning_ms (incident I09).",
          {{"shard", std::to_string(i)}});
      impl->shards.push_back(std::move(shard));
    }
    impl->stall_seconds = &impl->metrics_registry.histogram(
        "hearth_loop_stall_seconds", "Duration of event-loop stalls (turns over server.stall_warning_ms).",
        {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
    return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
  } catch (const std::exception& e) {
    return fail(Errc::internal, fmt::format("http server: {}", e.what()));
  }
}

namespace {
// A listener for `spec`, not yet bound (listen_stream fills in the stream fields).
Result<std::unique_ptr<Listener>> make_listener(Impl& s, const ListenerSpec& spec) {
  if (spec.port < 0 || spec.port > 65535) return fail(Errc::invalid_argument, fmt::format("bad port {}", spec.port));
  if (spec.tls && s.tls.empty()) return fail(Errc::invalid_argument, "TLS listener without a TLS identity");
  auto l = std::make_unique<Listener>();
  l->spec = spec;
  for (const auto& p : spec.alpn) {
    if (p.empty() || p.size() > 255) return fail(Errc::invalid_argument, "bad ALPN protocol name");
    l->alpn_wire += static_cast<char>(p.size());
    l->alpn_wire += p;
  }
  return l;
}
}  // namespace

// Binds `created` (none stays open on error), then registers them and, if the server runs,
// starts accepting.
Result<std::vector<BoundEndpoint>> HttpServer::Impl::add_listeners(std::vector<std::unique_ptr<Listener>> created) {
  std::vector<BoundEndpoint> bound;
  std::lock_guard lock(listeners_mutex);
  for (std::size_t i = 0; i < created.size(); ++i) {
    Listener& l = *created[i];
    const ListenerSpec& spec = l.spec;
    error_code ec;
    auto address = asio::ip::make_address(spec.address, ec);
    if (ec) return fail(Errc::invalid_argument, fmt::format("bad listen address '{}'", spec.address));
    l.home = static_cast<int>((listeners.size() + i) % shards.size());
    l.acceptor = std::make_unique<tcp::acceptor>(*shards[static_cast<std::size_t>(l.home)]->ctx);
    tcp::endpoint endpoint(address, static_cast<unsigned short>(spec.port));
    auto where = fmt::format("{}:{}", spec.address, spec.port);
    const std::string kind = l.stream_acceptor ? l.stream_spec.name : (spec.tls ? "https" : "http");
    auto adopted = std::find_if(inherited.begin(), inherited.end(), [&](const ListeningSocket& s) {
      return s.fd >= 0 && s.kind == kind && s.address == spec.address && (spec.port == 0 || s.port == spec.port);
    });
    if (adopted != inherited.end()) {
      // Graceful restart: the predecessor's socket, already bound and listening.
      int fd = std::exchange(adopted->fd, -1);
      l.acceptor->assign(endpoint.protocol(), fd, ec);
      if (ec) {
        ::close(fd);
        return fail(Errc::unavailable, fmt::format("cannot adopt the inherited socket for {}: {}", where, ec.message()));
      }
      log.info("http.adopted_listener", {{"kind", kind}, {"addr", spec.address}, {"port", adopted->port}});
    } else {
      l.acceptor->open(endpoint.protocol(), ec);
      if (!ec) l.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) l.acceptor->bind(endpoint, ec);
      if (ec) return fail(Errc::unavailable, fmt::format("cannot bind {}: {}", where, ec.message()));
      l.acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) return fail(Errc::unavailable, fmt::format("cannot listen on {}: {}", where, ec.message()));
    }
    auto local = l.acceptor->local_endpoint(ec);
    l.bound = BoundEndpoint{spec.address, ec ? spec.port : local.port(), spec.tls};
    bound.push_back(l.bound);
  }
  bool is_running;
  {
    std::lock_guard run_lock(run_mutex);
    is_running = running && !stop_requested;
  }
  for (auto& l : created) {
    if (l->stream_acceptor)
      log.info("stream.listening", {{"name", l->stream_spec.name}, {"addr", l->bound.address},
                                    {"port", l->bound.port}, {"tls", l->bound.tls}});
    else
      log.info("http.listening", {{"addr", l->bound.address}, {"port", l->bound.port}, {"tls", l->bound.tls}});
    if (is_running) start_accepting(*l);
    listeners.push_back(std::move(l));
  }
  return bound;
}

Result<std::vector<BoundEndpoint>> HttpServer::listen(const std::vector<ListenerSpec>& specs) {
  std::vector<std::unique_ptr<Listener>> created;
  for (const auto& spec : specs) {
    auto l = make_listener(*impl_, spec);
    if (!l) return tl::unexpected(l.error());
    created.push_back(std::move(*l));
  }
  return impl_->add_listeners(std::move(created));
}

Result<std::vector<BoundEndpoint>> HttpServer::listen_stream(const std::vector<StreamListenerSpec>& specs,
                                                             StreamAcceptor acceptor) {
  if (!acceptor) return fail(Errc::invalid_argument, "stream listener without an acceptor");
  auto shared = std::make_shared<StreamAcceptor>(std::move(acceptor));
  std::vector<std::unique_ptr<Listener>> created;
  for (const auto& spec : specs) {
    auto l = make_listener(*impl_, ListenerSpec{spec.address, spec.port, spec.direct_tls, spec.alpn});
    if (!l) return tl::unexpected(l.error());
    (*l)->stream_spec = spec;
    (*l)->stream_acceptor = shared;
    (*l)->stream_open = &impl_->metrics_registry.gauge(
        "hearth_stream_connections_open", "Open raw stream (XMPP) connections", {{"listener", spec.name}});
    created.push_back(std::move(*l));
  }
  return impl_->add_listeners(std::move(created));
}

void HttpServer::connect_stream(OutgoingStreamSpec spec, StreamConnectHandler handler) {
  Impl& s = *impl_;
  Shard& shard = *s.shards[s.next_timer_shard.fetch_add(1) % s.shards.size()];
  shard.poster->post([&s, &shard, spec = std::move(spec), handler = std::move(handler)]() mutable {
    connect_stream_session(s, shard, std::move(spec), std::move(handler));
  });
}

void HttpServer::adopt(std::vector<ListeningSocket> sockets) {
  std::lock_guard lock(impl_->listeners_mutex);
  for (auto& s : sockets) impl_->inherited.push_back(std::move(s));
}

std::vector<ListeningSocket> HttpServer::listening_sockets() const {
  std::vector<ListeningSocket> out;
  std::lock_guard lock(impl_->listeners_mutex);
  for (auto& l : impl_->listeners) {
    if (!l->acceptor || !l->acceptor->is_open()) continue;
    int fd = ::fcntl(l->acceptor->native_handle(), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) continue;
    out.push_back({fd, l->stream_acceptor ? l->stream_spec.name : (l->spec.tls ? "https" : "http"), l->spec.address,
                   l->bound.port});
  }
  return out;
}

void HttpServer::Impl::close_unclaimed_inherited() {
  std::lock_guard lock(listeners_mutex);
  for (auto& s : inherited)
    if (s.fd >= 0) {
      log.warn("http.inherited_listener_unused", {{"kind", s.kind}, {"addr", s.address}, {"port", s.port}});
      ::close(std::exchange(s.fd, -1));
    }
  inherited.clear();
}

void HttpServer::run() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.run_mutex);
    if (s.running || s.finished) return;
    s.running = true;
  }
  s.close_unclaimed_inherited();
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto& shard : s.shards) guards.emplace_back(shard->ctx->get_executor());
  {
    std::lock_guard lock(s.listeners_mutex);
    for (auto& l : s.listeners) s.start_accepting(*l);
  }
  for (auto& shard : s.shards) {
    s.start_heartbeat(*shard);
    shard->thread = std::thread([&s, sh = shard.get(), ctx = shard->ctx.get()] {
      current_handler_slot = &sh->handler;
      for (;;) {
        try {
          ctx->run();
          return;
        } catch (const std::exception& e) {
          s.log.error("http.bug", {{"where", "shard"}, {"error", e.what()}});
        }
      }
    });
  }

  s.watchdog = std::thread([&s] { s.watchdog_loop(); });
  {
    std::unique_lock lock(s.run_mutex);
    s.run_cv.wait(lock, [&] { return s.stop_requested; });
  }
  s.stopping.store(true);
  s.log.info("http.draining", {{"connections", s.open_connections()}, {"inflight", s.inflight->inflight()}});

  {
    std::lock_guard lock(s.listeners_mutex);
    for (auto& l : s.listeners) {
      asio::post(*s.shards[static_cast<std::size_t>(l->home)]->ctx, [acceptor = l->acceptor.get()] {
        error_code ignored;
        acceptor->close(ignored);
      });
    }
  }
  auto for_each_connection = [&](auto fn) {
    for (auto& shard : s.shards) {
      asio::post(*shard->ctx, [shard = shard.get(), fn] {
        std::vector<std::shared_ptr<Connection>> live;
        for (auto& [id, weak] : shard->connections)
          if (auto c = weak.lock()) live.push_back(std::move(c));
        for (auto& c : live) fn(*c);
      });
    }
  };
  for_each_connection([](Connection& c) { c.begin_drain(); });

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(std::max(0, s.options.drain_seconds));
  bool drained;
  {
    std::unique_lock lock(s.connections_mutex);
    drained = s.connections_cv.wait_until(lock, deadline, [&] { return s.connections.total() == 0; });
  }
  if (!drained) {
    s.log.warn("http.drain_timeout", {{"connections", s.open_connections()}});
    for_each_connection([](Connection& c) { c.force_close(); });
    std::unique_lock lock(s.connections_mutex);
    s.connections_cv.wait_for(lock, std::chrono::seconds(2), [&] { return s.connections.total() == 0; });
  }

  s.pool.stop();
  guards.clear();
  for (auto& shard : s.shards) shard->ctx->stop();
  for (auto& shard : s.shards)
    if (shard->thread.joinable()) shard->thread.join();
  {
    std::lock_guard lock(s.watchdog_mutex);
    s.watchdog_stop = true;
  }
  s.watchdog_cv.notify_all();
  if (s.watchdog.joinable()) s.watchdog.join();
  {
    std::lock_guard lock(s.run_mutex);
    s.finished = true;
  }
  s.log.info("http.stopped");
}

void HttpServer::stop() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.run_mutex);
    s.stop_requested = true;
  }
  s.stopping.store(true);
  s.run_cv.notify_all();
}

bool HttpServer::offload(std::function<void()> fn) { return impl_->pool.try_post(std::move(fn)); }

void HttpServer::run_after(std::chrono::milliseconds delay, std::function<void()> fn) {
  Impl& s = *impl_;
  Shard& shard = *s.shards[s.next_timer_shard.fetch_add(1) % s.shards.size()];
  shard.poster->post([&s, &shard, delay, fn = std::move(fn)]() mutable {
    auto timer = std::make_shared<asio::steady_timer>(*shard.ctx, delay);
    timer->async_wait([&s, timer, fn = std::move(fn)](error_code ec) {
      if (ec) return;
      try {
        fn();
      } catch (const std::exception& e) {
        s.log.error("http.bug", {{"where", "run_after"}, {"error", e.what()}});
      } catch (...) {
        s.log.error("http.bug", {{"where", "run_after"}});
      }
    });
  });
}

namespace {
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
std::chrono::milliseconds beat_interval(const ServerOptions& o) {
  return std::chrono::milliseconds(std::clamp(o.stall_warning_ms / 4, 5, 1000));
}
}  // namespace

// A repeating timer on the shard: it can only beat between handlers, so a late beat
// means one turn ran long. The function object lives in `heartbeats` (Impl), the timer in
// the function object; pending waits hold only a raw pointer to it.
void HttpServer::Impl::start_heartbeat(Shard& shard) {
  shard.last_beat_ns.store(steady_ns());
  auto timer = std::make_shared<asio::steady_timer>(*shard.ctx);
  auto beat = std::make_shared<std::function<void(error_code)>>();
  auto interval = beat_interval(options);
  auto* raw = beat.get();
  *beat = [&shard, timer, interval, raw](error_code ec) {
    if (ec) return;
    shard.last_beat_ns.store(steady_ns(), std::memory_order_relaxed);
    timer->expires_after(interval);
    timer->async_wait([raw](error_code e) { (*raw)(e); });
  };
  timer->expires_after(interval);
  timer->async_wait([raw](error_code e) { (*raw)(e); });
  heartbeats.push_back(std::move(beat));
}

void HttpServer::Impl::watchdog_loop() {
  const std::int64_t threshold_ns = std::int64_t{options.stall_warning_ms} * 1'000'000;
  const auto interval = beat_interval(options);
  const std::int64_t slack_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(interval).count();
  std::unique_lock lock(watchdog_mutex);
  while (!watchdog_stop) {
    watchdog_cv.wait_for(lock, interval, [this] { return watchdog_stop; });
    if (watchdog_stop) break;
    std::int64_t now = steady_ns();
    std::int64_t longest = 0;
    for (auto& shard : shards) {
      std::int64_t late = now - shard->last_beat_ns.load(std::memory_order_relaxed) - slack_ns;
      if (late > threshold_ns) {
        longest = std::max(longest, late);
        if (!shard->stall_reported) {
          shard->stall_reported = true;
          shard->stall_since_ns = now - late;
          const char* name = shard->handler.load(std::memory_order_relaxed);
          shard->stall_handler = name;
          shard->stalls->inc();
          std::string handler = name ? name : "unknown";
          log.warn("loop.stalled", {{"shard", shard->index}, {"handler", handler}, {"ms", late / 1'000'000}});
          std::lock_guard l(loop_mutex);
          ++loop.stalls_total;
          loop.last_handler = handler;
          loop.last_shard = shard->index;
        }
      } else if (shard->stall_reported) {
        shard->stall_reported = false;
        double seconds = static_cast<double>(now - shard->stall_since_ns) / 1e9;
        stall_seconds->observe(seconds);
        log.warn("loop.stall_ended", {{"shard", shard->index},
                                      {"handler", shard->stall_handler ? shard->stall_handler : "unknown"},
                                      {"ms", static_cast<std::int64_t>(seconds * 1000)}});
      }
    }
    std::lock_guard l(loop_mutex);
    loop.stalled_ms = longest / 1'000'000;
  }
}

LoopHealth HttpServer::loop_health() const {
  std::lock_guard lock(impl_->loop_mutex);
  return impl_->loop;
}

}  // namespace hearth::net
