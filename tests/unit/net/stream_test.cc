// In-process tests of HttpServer's raw byte-stream listeners (XMPP c2s): the server listens
// on 127.0.0.1 port 0 and a line protocol defined here plays the XMPP layer; the client is
// a raw socket plus OpenSSL. Waits use deadlines on conditions; socket reads time out after
// 10 s so a broken server fails a test instead of hanging it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "net/net.h"

namespace hearth::net {
namespace {

using namespace std::chrono_literals;

template <typename Pred>
bool wait_until(Pred pred, std::chrono::seconds limit = 20s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Client side.

class Client {
 public:
  ~Client() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  static std::unique_ptr<Client> connect(int port, int rcvbuf = 0) {
    auto c = std::make_unique<Client>();
    c->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{10, 0};
    ::setsockopt(c->fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(c->fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0) ::setsockopt(c->fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return nullptr;
    return c;
  }

  // Sets up the client SSL object (not yet connected).
  void prepare_tls(const std::string& sni, const std::vector<std::string>& alpn, int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (max_version) SSL_CTX_set_max_proto_version(ctx_, max_version);
    ssl_ = SSL_new(ctx_);
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
    std::string wire;
    for (const auto& p : alpn) {
      wire += static_cast<char>(p.size());
      wire += p;
    }
    if (!wire.empty())
      SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                          static_cast<unsigned>(wire.size()));
  }

  bool start_tls(const std::string& sni, const std::vector<std::string>& alpn = {}, int max_version = 0) {
    prepare_tls(sni, alpn, max_version);
    SSL_set_fd(ssl_, fd_);
    return SSL_connect(ssl_) == 1;
  }

  // The ClientHello the prepared SSL object would send, produced into a memory BIO; the
  // handshake is then continued on the socket with finish_tls().
  std::string client_hello(const std::string& sni) {
    prepare_tls(sni, {});
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO* wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl_, rbio, wbio);
    SSL_connect(ssl_);  // wants to read the ServerHello
    std::string hello(BIO_ctrl_pending(wbio), '\0');
    BIO_read(wbio, hello.data(), static_cast<int>(hello.size()));
    return hello;
  }
  bool finish_tls() {
    SSL_set_fd(ssl_, fd_);  // replaces the memory BIOs
    return SSL_connect(ssl_) == 1;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      long n = ssl_ && SSL_is_init_finished(ssl_) ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                                                  : ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  bool fill() {
    char chunk[16384];
    long n = ssl_ && SSL_is_init_finished(ssl_) ? SSL_read(ssl_, chunk, sizeof chunk)
                                                : ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  // One line without its '\n'. Plaintext reads go byte by byte so that nothing after the
  // line (such as a ServerHello) is taken from the socket.
  std::optional<std::string> line() {
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string out = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return out;
      }
      if (ssl_ && SSL_is_init_finished(ssl_)) {
        if (!fill()) return std::nullopt;
      } else {
        char ch;
        if (::recv(fd_, &ch, 1, 0) != 1) return std::nullopt;
        buf_ += ch;
      }
    }
  }

  bool read_exact(std::size_t n, std::string& out) {
    while (buf_.size() < n)
      if (!fill()) return false;
    out = buf_.substr(0, n);
    buf_.erase(0, n);
    return true;
  }

  // True if the server closes the connection (after any pending data).
  bool wait_closed() {
    for (;;) {
      buf_.clear();
      char chunk[16384];
      long n = ssl_ && SSL_is_init_finished(ssl_) ? SSL_read(ssl_, chunk, sizeof chunk)
                                                  : ::recv(fd_, chunk, sizeof chunk, 0);
      if (n == 0) return true;
      if (n < 0) {
        bool timeout = errno == EAGAIN || errno == EWOULDBLOCK;
        if (ssl_ && SSL_is_init_finished(ssl_)) {
          int e = SSL_get_error(ssl_, static_cast<int>(n));
          return e != SSL_ERROR_WANT_READ && !(e == SSL_ERROR_SYSCALL && timeout);
        }
        return !timeout;
      }
    }
  }

  std::string& buffer() { return buf_; }
  std::string alpn() const {
    const unsigned char* p = nullptr;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl_, &p, &n);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
  }
  bool peer_is(const std::string& host) const {
    X509* x = SSL_get1_peer_certificate(ssl_);
    bool ok = x && X509_check_host(x, host.c_str(), 0, 0, nullptr) == 1;
    X509_free(x);
    return ok;
  }
  std::string exporter() const {
    std::string out(32, '\0');
    static constexpr char kLabel[] = "EXPORTER-Channel-Binding";
    if (SSL_export_keying_material(ssl_, reinterpret_cast<unsigned char*>(out.data()), out.size(), kLabel,
                                   sizeof kLabel - 1, nullptr, 0, 0) != 1)
      return {};
    return out;
  }
  std::string peer_cert_sha256() const {
    X509* x = SSL_get1_peer_certificate(ssl_);
    unsigned char* der = nullptr;
    int len = x ? i2d_X509(x, &der) : -1;
    X509_free(x);
    if (len <= 0) return {};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    EVP_Digest(der, static_cast<std::size_t>(len), md, &md_len, EVP_sha256(), nullptr);
    OPENSSL_free(der);
    return std::string(reinterpret_cast<const char*>(md), md_len);
  }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

// ---------------------------------------------------------------------------------------
// Server side: a line protocol standing in for the XMPP layer.
//   "starttls"  -> "proceed", then start_tls with the rest of the chunk
//   "info"      -> "<tls|plain> <sni|-> <alpn|-> <version|->"
//   "close"     -> "bye", then close()
//   anything    -> "echo:<line>"
// Raw mode records bytes without answering.

struct Session {
  std::shared_ptr<StreamConnection> conn;
  std::string pending;          // unparsed input
  std::string received;         // everything delivered (raw mode)
  std::vector<std::size_t> chunks;
  std::atomic<int> closes{0};
  std::atomic<int> drains{0};
  std::atomic<int> tls_done{0};
  std::optional<Error> tls_error;
  std::atomic<bool> tls_at_accept{false};
  std::mutex mutex;
};

struct Protocol {
  bool raw = false;
  std::function<void(StreamConnection&)> on_accept;
  std::function<void(Session&)> on_drain;

  std::mutex mutex;
  std::vector<std::shared_ptr<Session>> sessions;

  std::size_t count() {
    std::lock_guard lock(mutex);
    return sessions.size();
  }
  std::shared_ptr<Session> at(std::size_t i) {
    std::lock_guard lock(mutex);
    return i < sessions.size() ? sessions[i] : nullptr;
  }
  std::shared_ptr<Session> wait_session(std::size_t i) {
    std::shared_ptr<Session> s;
    wait_until([&] { return (s = at(i)) != nullptr; });
    return s;
  }

  StreamAcceptor acceptor() {
    return [this](std::shared_ptr<StreamConnection> conn) {
      auto s = std::make_shared<Session>();
      s->conn = conn;
      s->tls_at_accept = conn->is_tls();
      {
        std::lock_guard lock(mutex);
        sessions.push_back(s);
      }
      if (on_accept) on_accept(*conn);
      StreamCallbacks cb;
      std::weak_ptr<Session> weak = s;
      cb.on_data = [this, weak](std::string_view bytes) {
        if (auto s = weak.lock()) handle(*s, bytes);
      };
      cb.on_close = [s] { ++s->closes; };
      if (on_drain) cb.on_drain = [this, s] {
        ++s->drains;
        on_drain(*s);
      };
      return cb;
    };
  }

  void handle(Session& s, std::string_view bytes) {
    {
      std::lock_guard lock(s.mutex);
      s.chunks.push_back(bytes.size());
      s.received.append(bytes);
    }
    if (raw) return;
    s.pending.append(bytes);
    for (std::size_t nl; (nl = s.pending.find('\n')) != std::string::npos;) {
      std::string line = s.pending.substr(0, nl);
      s.pending.erase(0, nl + 1);
      auto& c = *s.conn;
      if (line == "starttls") {
        c.send("proceed\n");
        std::string rest = std::move(s.pending);
        s.pending.clear();
        c.start_tls(
            [&s](Result<void> r) {
              if (!r) {
                std::lock_guard lock(s.mutex);
                s.tls_error = r.error();
              }
              ++s.tls_done;
            },
            std::move(rest));
        return;
      }
      if (line == "info") {
        auto dash = [](std::string v) { return v.empty() ? std::string("-") : v; };
        c.send(std::string(c.is_tls() ? "tls" : "plain") + " " + dash(c.server_name()) + " " + dash(c.alpn()) +
               " " + dash(c.tls_version()) + "\n");
      } else if (line == "close") {
        c.send("bye\n");
        c.close();
      } else {
        c.send("echo:" + line + "\n");
      }
    }
  }
};

class TlsFiles {
 public:
  TlsFiles() {
    dir_ = std::filesystem::temp_directory_path() / ("hearth-net-stream-" + std::to_string(::getpid()));
    for (std::string d : {"a.test", "b.test"}) {
      TlsIdentity id{d, (dir_ / (d + ".crt")).string(), (dir_ / (d + ".key")).string()};
      auto r = ensure_self_signed_certificate({d}, id.cert_file, id.key_file);
      EXPECT_TRUE(r) << r.error().describe();
      identities.push_back(id);
    }
  }
  ~TlsFiles() { std::filesystem::remove_all(dir_); }
  std::vector<TlsIdentity> identities;

 private:
  std::filesystem::path dir_;
};

ServerOptions stream_options() {
  ServerOptions o;
  o.shards = 2;
  o.worker_threads = 1;
  o.requests_per_second_per_ip = 0;
  o.idle_timeout_seconds = 30;
  o.drain_seconds = 10;
  return o;
}

// A server with one HTTP listener (GET /hello), a STARTTLS stream listener and a direct
// TLS stream listener, all on 127.0.0.1:0, running on a background thread.
class StreamServer {
 public:
  explicit StreamServer(Protocol& protocol, ServerOptions options = stream_options()) {
    Router router;
    router.add("GET", "/hello", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "hello")); });
    auto created = HttpServer::create(options, std::move(router), tls_.identities, log_, metrics_);
    if (!created) {
      ADD_FAILURE() << created.error().describe();
      return;
    }
    server_ = std::move(*created);
    auto http = server_->listen({{"127.0.0.1", 0, false}});
    auto streams = server_->listen_stream(
        {{"127.0.0.1", 0, false}, {"127.0.0.1", 0, true, {"xmpp-client"}, "xmpp-client-tls"}}, protocol.acceptor());
    if (!http || !streams) {
      ADD_FAILURE() << "listen failed";
      return;
    }
    http_port_ = (*http)[0].port;
    plain_port_ = (*streams)[0].port;
    tls_port_ = (*streams)[1].port;
    EXPECT_TRUE((*streams)[1].tls);
    thread_ = std::thread([this] {
      server_->run();
      returned_ = true;
    });
  }
  ~StreamServer() { stop(); }

  void request_stop() { server_->stop(); }
  void stop() {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }

  HttpServer& server() { return *server_; }
  int http_port() const { return http_port_; }
  int plain_port() const { return plain_port_; }
  int tls_port() const { return tls_port_; }
  bool returned() const { return returned_; }
  std::string metrics() const { return metrics_.render(); }

 private:
  TlsFiles tls_;
  Logger log_;
  MetricsRegistry metrics_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::atomic<bool> returned_{false};
  int http_port_ = 0, plain_port_ = 0, tls_port_ = 0;
};

bool has(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// ---------------------------------------------------------------------------------------

TEST(StreamListener, EchoesOverPlainAndReportsConnectionFacts) {
  Protocol p;
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("hello\nwor"));
  EXPECT_EQ(c->line(), "echo:hello");
  ASSERT_TRUE(c->send("ld\ninfo\n"));
  EXPECT_EQ(c->line(), "echo:world");
  EXPECT_EQ(c->line(), "plain - - -");

  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  auto& conn = *session->conn;
  EXPECT_EQ(conn.remote_ip(), "127.0.0.1");
  EXPECT_FALSE(conn.is_tls());
  auto cb = conn.channel_binding("tls-exporter");
  ASSERT_FALSE(cb);
  EXPECT_EQ(cb.error().code, Errc::unavailable);
  EXPECT_TRUE(has(s.metrics(), "hearth_stream_connections_open{listener=\"xmpp-client\"} 1")) << s.metrics();
  EXPECT_TRUE(has(s.metrics(), "hearth_http_connections_open 0"));

  c.reset();  // peer closes
  EXPECT_TRUE(wait_until([&] { return session->closes == 1; }));
  EXPECT_TRUE(wait_until([&] { return has(s.metrics(), "hearth_stream_connections_open{listener=\"xmpp-client\"} 0"); }));
  conn.send("after close\n");  // a no-op, never a crash
  conn.close();
  s.stop();
  EXPECT_EQ(session->closes, 1);
}

TEST(StreamListener, SendFromAnotherThreadPostAndTimersRunOnTheShard) {
  Protocol p;
  p.raw = true;
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("x"));
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  auto conn = session->conn;

  std::thread sender([conn] {
    for (int i = 0; i < 200; ++i) conn->send("m" + std::to_string(i) + "\n");
  });
  sender.join();
  for (int i = 0; i < 200; ++i) ASSERT_EQ(c->line(), "m" + std::to_string(i)) << i;

  std::atomic<int> ran{0};
  std::thread::id posted_on, delayed_on, server_timer_on;
  conn->post([&] {
    posted_on = std::this_thread::get_id();
    ++ran;
  });
  conn->post_after(20ms, [&] {
    delayed_on = std::this_thread::get_id();
    ++ran;
  });
  s.server().run_after(10ms, [&] {
    server_timer_on = std::this_thread::get_id();
    ++ran;
  });
  ASSERT_TRUE(wait_until([&] { return ran == 3; }));
  EXPECT_EQ(posted_on, delayed_on);  // the connection's shard
  EXPECT_NE(posted_on, std::this_thread::get_id());
  EXPECT_NE(server_timer_on, std::thread::id());

  // A timer on a connection that closed first is dropped.
  std::atomic<bool> late{false};
  conn->post_after(500ms, [&] { late = true; });
  c.reset();
  ASSERT_TRUE(wait_until([&] { return session->closes == 1; }));
  s.stop();
  EXPECT_FALSE(late);
  EXPECT_EQ(session->closes, 1);
}

TEST(StreamListener, CloseFlushesQueuedBytesThenClosesOnce) {
  Protocol p;
  const std::string big(1 << 20, 'z');
  p.on_accept = [&big](StreamConnection& conn) {
    conn.send(big);
    conn.send("\nend\n");
    conn.close();
    conn.send("dropped\n");  // after close(): not sent
  };
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  std::string got;
  ASSERT_TRUE(c->read_exact(big.size(), got));
  EXPECT_EQ(got, big);
  EXPECT_EQ(c->line(), "");
  EXPECT_EQ(c->line(), "end");
  EXPECT_TRUE(c->wait_closed());
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  c.reset();
  EXPECT_TRUE(wait_until([&] { return session->closes == 1; }));
  s.stop();
  EXPECT_EQ(session->closes, 1);
}

TEST(StreamListener, OutgoingBudgetOverflowCutsTheConnection) {
  Protocol p;
  p.raw = true;
  ServerOptions o = stream_options();
  o.stream_max_queued_bytes = 64 << 10;
  StreamServer s(p, o);
  auto c = Client::connect(s.plain_port(), 4096);  // small receive buffer, and it never reads
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("x"));
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  const std::string chunk(16 << 10, 'q');
  std::size_t sent = 0;
  while (session->closes == 0 && sent < (std::size_t{512} << 20)) {
    session->conn->send(chunk);
    sent += chunk.size();
    if (sent % (1 << 20) == 0) std::this_thread::yield();
  }
  EXPECT_TRUE(wait_until([&] { return session->closes == 1; }));
  EXPECT_TRUE(c->wait_closed());
  session->conn->send(chunk);  // no-op now
  s.stop();
  EXPECT_EQ(session->closes, 1);
}

TEST(StreamListener, StartTlsUpgradesAfterPlaintextExchange) {
  Protocol p;
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("before\n"));
  EXPECT_EQ(c->line(), "echo:before");
  ASSERT_TRUE(c->send("starttls\n"));
  EXPECT_EQ(c->line(), "proceed");
  ASSERT_TRUE(c->start_tls("b.test", {"xmpp-client"}));
  EXPECT_TRUE(c->peer_is("b.test"));
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  ASSERT_TRUE(wait_until([&] { return session->tls_done == 1; }));
  EXPECT_FALSE(session->tls_error);
  ASSERT_TRUE(c->send("secret\ninfo\n"));
  EXPECT_EQ(c->line(), "echo:secret");
  EXPECT_EQ(c->line(), "tls b.test xmpp-client TLSv1.3");
  EXPECT_TRUE(session->conn->is_tls());
  EXPECT_EQ(session->conn->server_name(), "b.test");

  // A second STARTTLS is refused without closing.
  std::atomic<int> second{0};
  std::optional<Errc> second_error;
  session->conn->start_tls([&](Result<void> r) {
    if (!r) second_error = r.error().code;
    ++second;
  });
  ASSERT_TRUE(wait_until([&] { return second == 1; }));
  EXPECT_EQ(second_error, Errc::invalid_argument);

  ASSERT_TRUE(c->send("close\n"));
  EXPECT_EQ(c->line(), "bye");
  EXPECT_TRUE(c->wait_closed());  // close_notify, then FIN
  c.reset();
  EXPECT_TRUE(wait_until([&] { return session->closes == 1; }));
  s.stop();
  EXPECT_EQ(session->closes, 1);
  EXPECT_EQ(session->tls_done, 1);
}

TEST(StreamListener, ClientHelloPipelinedAfterStartTlsGoesToTheHandshake) {
  Protocol p;
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  std::string hello = c->client_hello("a.test");
  ASSERT_FALSE(hello.empty());
  ASSERT_TRUE(c->send("starttls\n" + hello));  // one segment: the server reads both at once
  EXPECT_EQ(c->line(), "proceed");
  ASSERT_TRUE(c->finish_tls());
  EXPECT_TRUE(c->peer_is("a.test"));
  ASSERT_TRUE(c->send("after\n"));
  EXPECT_EQ(c->line(), "echo:after");
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  EXPECT_EQ(session->tls_done, 1);
  EXPECT_FALSE(session->tls_error);
  {
    std::lock_guard lock(session->mutex);
    // The hello came in the chunk with STARTTLS (and was handed back by the protocol) or,
    // if the segment was split, was never delivered; either way nothing else was.
    const std::string& r = session->received;
    EXPECT_TRUE(r == "starttls\n" + hello + "after\n" || r == "starttls\nafter\n");
  }
  c.reset();
  EXPECT_TRUE(wait_until([&] { return session->closes == 1; }));
}

TEST(StreamListener, PlaintextInjectedAfterStartTlsIsNeverExecuted) {
  Protocol p;
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("starttls\ninjected\n"));
  EXPECT_EQ(c->line(), "proceed");
  // The injected line is fed to the handshake, which fails (an alert at most); the
  // connection closes and the line is never answered.
  while (c->fill()) {
  }
  EXPECT_EQ(c->buffer().find("echo:"), std::string::npos);
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  ASSERT_TRUE(wait_until([&] { return session->closes == 1; }));
  EXPECT_EQ(session->tls_done, 1);
  std::lock_guard lock(session->mutex);
  ASSERT_TRUE(session->tls_error);
  EXPECT_EQ(session->received.rfind("starttls\n", 0), 0u);
}

TEST(StreamListener, StalledStartTlsHandshakeTimesOutAndClosesOnce) {
  Protocol p;
  ServerOptions o = stream_options();
  o.idle_timeout_seconds = 1;
  StreamServer s(p, o);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("starttls\n"));
  EXPECT_EQ(c->line(), "proceed");
  EXPECT_TRUE(c->wait_closed());  // no ClientHello follows
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  ASSERT_TRUE(wait_until([&] { return session->closes == 1; }));
  EXPECT_EQ(session->tls_done, 1);
  std::lock_guard lock(session->mutex);
  EXPECT_TRUE(session->tls_error);
}

TEST(StreamListener, DirectTlsNegotiatesXmppClientAlpnBeforeTheAcceptor) {
  Protocol p;
  StreamServer s(p);
  auto c = Client::connect(s.tls_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->start_tls("a.test", {"h2", "xmpp-client"}));
  EXPECT_EQ(c->alpn(), "xmpp-client");
  EXPECT_TRUE(c->peer_is("a.test"));
  ASSERT_TRUE(c->send("info\nping\n"));
  EXPECT_EQ(c->line(), "tls a.test xmpp-client TLSv1.3");
  EXPECT_EQ(c->line(), "echo:ping");
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  EXPECT_TRUE(session->tls_at_accept);
  EXPECT_TRUE(has(s.metrics(), "hearth_stream_connections_open{listener=\"xmpp-client-tls\"} 1"));

  // A client that does not speak TLS never reaches the acceptor.
  auto plain = Client::connect(s.tls_port());
  ASSERT_TRUE(plain);
  ASSERT_TRUE(plain->send("not a client hello\n"));
  EXPECT_TRUE(plain->wait_closed());
  EXPECT_EQ(p.count(), 1u);
}

TEST(StreamListener, ChannelBindingMatchesWhatTheClientComputes) {
  Protocol p;
  StreamServer s(p);
  for (int max_version : {0, TLS1_2_VERSION}) {
    auto c = Client::connect(s.tls_port());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->start_tls("b.test", {"xmpp-client"}, max_version));
    ASSERT_TRUE(c->send("info\n"));
    EXPECT_EQ(c->line(), max_version ? "tls b.test xmpp-client TLSv1.2" : "tls b.test xmpp-client TLSv1.3");
    auto session = p.wait_session(p.count() - 1);
    ASSERT_TRUE(session);

    auto exporter = session->conn->channel_binding("tls-exporter");  // TLS 1.2: with EMS (default)
    ASSERT_TRUE(exporter) << exporter.error().describe();
    EXPECT_EQ(exporter->size(), 32u);
    EXPECT_EQ(*exporter, c->exporter());

    auto end_point = session->conn->channel_binding("tls-server-end-point");
    ASSERT_TRUE(end_point) << end_point.error().describe();
    EXPECT_EQ(end_point->size(), 32u);  // P-256 with SHA-256: SHA-256 of the DER
    EXPECT_EQ(*end_point, c->peer_cert_sha256());

    auto unknown = session->conn->channel_binding("tls-unique");
    ASSERT_FALSE(unknown);
    EXPECT_EQ(unknown.error().code, Errc::invalid_argument);
  }
}

TEST(StreamListener, ReadRateLimitDeliversEverythingInOrderInBurstSizedChunks) {
  Protocol p;
  p.raw = true;
  p.on_accept = [](StreamConnection& conn) { conn.set_read_rate(64 << 10, 1000); };
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  std::string data;
  for (int i = 0; data.size() < (40 << 10); ++i) data += std::to_string(i) + ",";
  ASSERT_TRUE(c->send(data));
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(session->mutex);
    return session->received.size() >= data.size();
  }));
  std::lock_guard lock(session->mutex);
  EXPECT_EQ(session->received, data);
  for (auto n : session->chunks) EXPECT_LE(n, 1000u);
  EXPECT_GE(session->chunks.size(), data.size() / 1000);
}

TEST(StreamListener, IdleTimeoutClosesOnce) {
  Protocol p;
  p.on_accept = [](StreamConnection& conn) { conn.set_idle_timeout(1); };
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("ping\n"));
  EXPECT_EQ(c->line(), "echo:ping");
  EXPECT_TRUE(c->wait_closed());  // nothing more sent
  c.reset();
  auto session = p.wait_session(0);
  ASSERT_TRUE(session);
  EXPECT_TRUE(wait_until([&] { return session->closes == 1; }));
  s.stop();
  EXPECT_EQ(session->closes, 1);
}

std::string http_get_status(Client& c) {
  if (!c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")) return "send failed";
  auto status = c.line();
  if (!status) return "closed";
  // Skip the rest of the response: headers, blank line, "hello" body.
  for (auto l = c.line(); l && *l != "\r"; l = c.line()) {
  }
  std::string body;
  c.read_exact(5, body);
  return status->substr(9, 3);
}

TEST(StreamListener, PerIpCapIsSharedWithHttp) {
  Protocol p;
  ServerOptions o = stream_options();
  o.max_connections_per_ip = 2;
  StreamServer s(p, o);
  auto http = Client::connect(s.http_port());
  ASSERT_TRUE(http);
  EXPECT_EQ(http_get_status(*http), "200");
  auto stream = Client::connect(s.plain_port());
  ASSERT_TRUE(stream);
  ASSERT_TRUE(stream->send("one\n"));
  EXPECT_EQ(stream->line(), "echo:one");

  auto refused_stream = Client::connect(s.plain_port());
  ASSERT_TRUE(refused_stream);
  EXPECT_TRUE(refused_stream->wait_closed());
  auto refused_http = Client::connect(s.http_port());
  ASSERT_TRUE(refused_http);
  EXPECT_EQ(http_get_status(*refused_http), "503");
  EXPECT_EQ(p.count(), 1u);

  stream.reset();
  auto first = p.wait_session(0);
  ASSERT_TRUE(wait_until([&] { return first->closes == 1; }));
  std::unique_ptr<Client> again;
  ASSERT_TRUE(wait_until([&] {  // the slot is freed once the connection is gone
    again = Client::connect(s.plain_port());
    return again && again->send("two\n") && again->line() == "echo:two";
  }));
}

TEST(StreamListener, DrainCallsOnDrainAndRunReturnsAfterTheGoodbye) {
  Protocol p;
  p.on_drain = [](Session& s) {
    s.conn->send("going away\n");
    s.conn->close();
  };
  StreamServer s(p);
  auto c = Client::connect(s.plain_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("hi\n"));
  EXPECT_EQ(c->line(), "echo:hi");
  auto session = p.wait_session(0);
  s.request_stop();
  EXPECT_EQ(c->line(), "going away");
  EXPECT_TRUE(c->wait_closed());
  c.reset();
  EXPECT_TRUE(wait_until([&] { return s.returned(); }));
  EXPECT_EQ(session->drains, 1);
  EXPECT_EQ(session->closes, 1);
  // No connect to the old port to show the listener closed: run() returns only after
  // closing its acceptors, and under parallel ctest another test may already have been
  // given the same ephemeral port (a flaky failure seen once in a full run).
}

TEST(StreamListener, DrainCutsConnectionsStillOpenAfterDrainSeconds) {
  Protocol p;
  p.on_drain = [](Session&) {};  // ignores the drain
  ServerOptions o = stream_options();
  o.drain_seconds = 1;
  StreamServer s(p, o);
  auto c = Client::connect(s.tls_port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->start_tls("a.test"));
  ASSERT_TRUE(c->send("hi\n"));
  EXPECT_EQ(c->line(), "echo:hi");
  auto session = p.wait_session(0);
  s.request_stop();
  EXPECT_TRUE(c->wait_closed());
  EXPECT_TRUE(wait_until([&] { return s.returned(); }));
  EXPECT_EQ(session->drains, 1);
  EXPECT_EQ(session->closes, 1);
}

TEST(StreamListener, ListenErrorsAreValues) {
  Logger log;
  MetricsRegistry metrics;
  auto server = HttpServer::create(stream_options(), Router{}, {}, log, metrics);
  ASSERT_TRUE(server);
  Protocol p;
  auto no_identity = (*server)->listen_stream({{"127.0.0.1", 0, true}}, p.acceptor());
  ASSERT_FALSE(no_identity);
  EXPECT_EQ(no_identity.error().code, Errc::invalid_argument);
  auto bad_address = (*server)->listen_stream({{"not an address", 0}}, p.acceptor());
  ASSERT_FALSE(bad_address);
  auto no_acceptor = (*server)->listen_stream({{"127.0.0.1", 0}}, nullptr);
  ASSERT_FALSE(no_acceptor);
}

}  // namespace
}  // namespace hearth::net
