// Raw byte-stream connections (XMPP): plain with STARTTLS, or direct TLS. TLS runs on
// OpenSSL memory BIOs driven by this file's read and write loops instead of
// asio::ssl::stream: bytes already read in plaintext can then be handed to the handshake
// (a pipelined ClientHello), the switch happens mid-connection on the same socket, and the
// TU stays small. Reads wait for readability and then read into a stack buffer, so an idle
// connection holds no read buffer.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <deque>
#include <list>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "net/server_internal.h"

namespace hearth::net {
namespace {

using Impl = HttpServer::Impl;
using SteadyClock = std::chrono::steady_clock;
constexpr std::size_t kReadChunk = 16 << 10;
constexpr std::size_t kMaxWriteBatch = 256 << 10;

struct TlsFacts {
  bool tls = false;
  std::string sni, alpn, version;
  std::optional<std::string> exporter, end_point;
  // Shared and immutable once recorded; null when the peer sent none (every c2s client).
  std::shared_ptr<const PeerCertificate> peer;
};

// The subjectAltName entries of a peer certificate (RFC 6120 §13.7.1.4: dNSName,
// id-on-xmppAddr, SRVName).
void read_alt_names(X509* cert, PeerCertificate& out) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return;
  auto text = [](const ASN1_STRING* v) {
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)), static_cast<std::size_t>(ASN1_STRING_length(v)));
  };
  static const ASN1_OBJECT* xmpp_addr = OBJ_txt2obj("1.3.6.1.5.5.7.8.5", 1);
  static const ASN1_OBJECT* srv_name = OBJ_txt2obj("1.3.6.1.5.5.7.8.7", 1);
  constexpr std::size_t kMaxNames = 256;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && i < static_cast<int>(kMaxNames); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS) {
      out.dns_names.push_back(text(n->d.dNSName));
    } else if (n->type == GEN_OTHERNAME && n->d.otherName && n->d.otherName->value) {
      const ASN1_TYPE* v = n->d.otherName->value;
      if (xmpp_addr && OBJ_cmp(n->d.otherName->type_id, xmpp_addr) == 0 && v->type == V_ASN1_UTF8STRING)
        out.xmpp_addrs.push_back(text(v->value.utf8string));
      else if (srv_name && OBJ_cmp(n->d.otherName->type_id, srv_name) == 0 && v->type == V_ASN1_IA5STRING)
        out.srv_names.push_back(text(v->value.ia5string));
    }
  }
  GENERAL_NAMES_free(names);
}

// RFC 5929 tls-server-end-point: the certificate's signature hash, SHA-256 for MD5/SHA-1.
std::optional<std::string> end_point_hash(X509* cert) {
  int md_nid = NID_undef, pk_nid = NID_undef;
  if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid) != 1 || md_nid == NID_undef)
    return std::nullopt;
  if (md_nid == NID_md5 || md_nid == NID_sha1) md_nid = NID_sha256;
  const EVP_MD* md = EVP_get_digestbynid(md_nid);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (!md || X509_digest(cert, md, out, &len) != 1) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(out), len);
}

// The transport under a connection's SSL object (one BIO for both directions). OpenSSL
// reads ciphertext from `in` (the socket read being processed, on the stack) after `held`
// (bytes a previous read left over, and a pipelined ClientHello), and writes ciphertext to
// `out`, which the session moves to its write queue. Nothing is kept while idle.
struct TlsTransport {
  const char* in = nullptr;
  std::size_t in_len = 0;
  std::string held;
  std::size_t held_pos = 0;
  std::string out;

  // After a pump: what OpenSSL did not read from `in` is kept for the next one.
  void keep_unread() {
    if (in_len) held.append(in, in_len);
    in = nullptr;
    in_len = 0;
  }
};

int transport_write(BIO* b, const char* data, int len) {
  auto* t = static_cast<TlsTransport*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  t->out.append(data, static_cast<std::size_t>(len));
  return len;
}

int transport_read(BIO* b, char* data, int len) {
  auto* t = static_cast<TlsTransport*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  std::size_t want = static_cast<std::size_t>(len), n = 0;
  if (t->held_pos < t->held.size()) {
    n = std::min(want, t->held.size() - t->held_pos);
    std::memcpy(data, t->held.data() + t->held_pos, n);
    t->held_pos += n;
    if (t->held_pos == t->held.size()) {
      std::string().swap(t->held);
      t->held_pos = 0;
    }
  } else if (t->in_len) {
    n = std::min(want, t->in_len);
    std::memcpy(data, t->in, n);
    t->in += n;
    t->in_len -= n;
  }
  if (n == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  return static_cast<int>(n);
}

long transport_ctrl(BIO* b, int cmd, long, void*) {
  auto* t = static_cast<TlsTransport*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
      return t ? static_cast<long>(t->held.size() - t->held_pos + t->in_len) : 0;
    case BIO_CTRL_WPENDING:
      return t ? static_cast<long>(t->out.size()) : 0;
    default:
      return 0;
  }
}

// The BIO method, made once and never changed (immutable shared state).
const BIO_METHOD* transport_method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hearth stream transport");
    if (!m) return static_cast<BIO_METHOD*>(nullptr);
    BIO_meth_set_write(m, transport_write);
    BIO_meth_set_read(m, transport_read);
    BIO_meth_set_ctrl(m, transport_ctrl);
    BIO_meth_set_create(m, [](BIO* b) {
      BIO_set_init(b, 1);
      return 1;
    });
    return m;
  }();
  return method;
}

class StreamSession;

// The thread-safe handle given to the protocol layer.
class StreamHandle final : public StreamConnection {
 public:
  StreamHandle(std::shared_ptr<ShardPost> shard, std::weak_ptr<StreamSession> session, std::string ip,
               std::size_t budget, TlsFacts facts)
      : shard_(std::move(shard)),
        session_(std::move(session)),
        ip_(std::move(ip)),
        budget_(budget),
        thread_(std::this_thread::get_id()),
        facts_(std::move(facts)) {}

  using StreamConnection::start_tls;
  void send(std::string bytes) override;
  void close() override;
  void start_tls(std::function<void(Result<void>)> done, std::string unconsumed) override;
  bool is_tls() const override { return facts().tls; }
  std::string remote_ip() const override { return ip_; }
  std::string server_name() const override { return facts().sni; }
  std::string alpn() const override { return facts().alpn; }
  std::string tls_version() const override { return facts().version; }
  PeerCertificate peer_certificate() const override {
    auto peer = facts().peer;
    return peer ? *peer : PeerCertificate{};
  }
  void start_tls_client(std::string server_name, std::string local_name,
                        std::function<void(Result<void>)> done) override;
  Result<std::string> channel_binding(std::string_view type) const override;
  void set_read_rate(std::size_t bytes_per_second, std::size_t burst_bytes) override;
  void set_idle_timeout(int seconds) override;
  void post(std::function<void()> fn) override;
  void post_after(std::chrono::milliseconds delay, std::function<void()> fn) override;

  // Shard side.
  void written(std::size_t n) {
    if (n) queued_.fetch_sub(n);
  }
  void mark_closed() { closed_.store(true); }
  void set_facts(TlsFacts f) {
    std::lock_guard lock(mutex_);
    facts_ = std::move(f);
  }

 private:
  TlsFacts facts() const {
    std::lock_guard lock(mutex_);
    return facts_;
  }
  // Runs f(session) on the shard: at once when called there, else posted.
  template <typename F>
  void on_shard(F f);

  std::shared_ptr<ShardPost> shard_;
  std::weak_ptr<StreamSession> session_;
  const std::string ip_;
  const std::size_t budget_;
  const std::thread::id thread_;  // the shard thread (handles are created there)
  std::atomic<std::size_t> queued_{0};
  std::atomic<bool> closed_{false};
  mutable std::mutex mutex_;
  TlsFacts facts_;
};

// One connection, on one shard for its life. The read loop owns the lifecycle (it calls
// finish); the write loop runs while there is something to write.
class StreamSession final : public Connection, public std::enable_shared_from_this<StreamSession> {
 public:
  StreamSession(Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket, std::string ip)
      : impl_(impl),
        shard_(shard),
        listener_(listener),
        socket_(std::move(socket)),
        ip_(std::move(ip)),
        id_(impl.next_connection_id.fetch_add(1)),
        idle_timer_(*shard.ctx) {}

  ~StreamSession() override {
    finish();
    if (ssl_) SSL_free(ssl_);  // frees the BIOs
    shard_.connections.erase(id_);
    impl_.release_connection(ip_, listener_.stream_open);
  }

  void start() {
    error_code ec;
    if (impl_.stopping.load()) {
      socket_.close(ec);
      if (auto handler = client_ ? std::exchange(client_->connect_handler, nullptr) : nullptr)
        call_user([&] { handler(fail(Errc::unavailable, "server stopping")); }, "stream.connect_failed");
      return;
    }
    socket_.non_blocking(true, ec);
    shard_.connections.emplace(id_, weak_from_this());
    impl_.spawn(shard_, read_loop(shared_from_this()), "stream.read");
  }

  // --- Connection (drain) ---
  void begin_drain() override {
    draining_ = true;
    if (!accepted_) return cut();
    if (closing_ || cut_) return;
    if (!cb_.on_drain) return request_close();
    if (!call_user(cb_.on_drain, "stream.on_drain")) request_close();
  }
  void force_close() override { cut(); }

  // --- Requests from the handle, on the shard thread ---
  bool alive() const { return !finished_ && !cut_; }

  void enqueue(std::string bytes, std::size_t credit) {
    if (!alive() || closing_) return release(credit);
    switch (tls_) {
      case Tls::none:
        out_.push_back({std::move(bytes), credit});
        return kick_writer();
      case Tls::pending:
      case Tls::handshaking:
        held_.push_back({std::move(bytes), credit});
        return;
      case Tls::up:
        return encrypt(bytes, credit);
      case Tls::failed:
        return release(credit);
    }
  }

  void overflow() {
    if (!alive()) return;
    impl_.log.info("stream.send_overflow", {{"listener", listener_.stream_spec.name}, {"ip", ip_}});
    // Rare: look the counter up here rather than keeping one per listener.
    impl_.metrics_registry
        .counter("hearth_stream_send_overflows_total",
                 "Stream connections cut because their client did not read what was queued for it (incident I10).",
                 {{"listener", listener_.stream_spec.name}})
        .inc();
    cut();
  }

  void request_close() {
    if (closing_ || cut_) return;
    closing_ = true;
    arm_close_deadline(impl_.idle());
    kick_writer();
    wake();
  }

  // An outgoing connection: `handler` gets the handle once started (instead of a
  // listener's acceptor).
  void set_outgoing(StreamConnectHandler handler) {
    client_ = std::make_unique<ClientSide>();
    client_->connect_handler = std::move(handler);
  }

  void start_tls_client(std::string server_name, std::string local_name, std::function<void(Result<void>)> done) {
    if (finished_) return;
    if (!client_) {
      shard_.poster->post([done = std::move(done)] { done(fail(Errc::invalid_argument, "not an outgoing connection")); });
      return;
    }
    if (impl_.tls_client.empty()) {
      shard_.poster->post([done = std::move(done)] { done(fail(Errc::unavailable, "no TLS identity configured")); });
      return;
    }
    client_->tls_client = true;
    client_->sni = std::move(server_name);
    client_->local = std::move(local_name);
    start_tls(std::move(done), {});
  }

  void start_tls(std::function<void(Result<void>)> done, std::string unconsumed) {
    if (finished_) return;
    auto refuse = [&](Errc code, const char* why) {
      shard_.poster->post([done = std::move(done), code, why] { done(fail(code, why)); });
    };
    if (tls_ != Tls::none) return refuse(Errc::invalid_argument, "TLS already started");
    if (impl_.tls.empty()) return refuse(Errc::unavailable, "no TLS identity configured");
    if (closing_ || cut_) return refuse(Errc::unavailable, "connection closing");
    tls_done_ = std::move(done);
    pre_tls_ = std::move(unconsumed);
    tls_ = Tls::pending;
    handshake_started_ = SteadyClock::now();  // the flush and handshake get idle_timeout_seconds
    arm_idle();
    kick_writer();  // flushes queued plaintext, then begins the handshake
  }

  void set_read_rate(std::size_t bytes_per_second, std::size_t burst_bytes) {
    rate_ = static_cast<double>(bytes_per_second);
    burst_ = static_cast<double>(std::max<std::size_t>(1, burst_bytes));
    tokens_ = burst_;
    refilled_at_ = SteadyClock::now();
    wake();
  }

  void set_idle_timeout(int seconds) {
    idle_ = std::chrono::seconds(std::max(0, seconds));
    arm_idle();
  }

  void add_timer(std::chrono::milliseconds delay, std::function<void()> fn) {
    if (!alive()) return;
    auto it = timers_.emplace(timers_.end(), *shard_.ctx);
    it->expires_after(delay);
    it->async_wait([w = weak_from_this(), it, fn = std::move(fn)](error_code ec) {
      auto s = w.lock();
      if (!s) return;
      s->timers_.erase(it);
      if (!ec && s->alive()) s->call_user(fn, "stream.post_after");
    });
  }

  template <typename F>
  bool call_user(const F& fn, const char* what) {
    HandlerName name(what);
    try {
      fn();
      return true;
    } catch (const std::exception& e) {
      impl_.log.error("stream.bug", {{"where", what}, {"error", e.what()}});
    } catch (...) {
      impl_.log.error("stream.bug", {{"where", what}});
    }
    return false;
  }

 private:
  enum class Tls { none, pending, handshaking, up, failed };
  struct Chunk {
    std::string data;
    std::size_t credit;  // bytes of the send budget this chunk releases once written
  };
  enum class ReadStatus { more, eof, error };
  // An io_context executor rather than any_io_executor: 32 bytes less per timer.
  using Timer = asio::basic_waitable_timer<SteadyClock, asio::wait_traits<SteadyClock>, asio::io_context::executor_type>;
  struct ClientSide {
    StreamConnectHandler connect_handler;  // until started
    bool tls_client = false;
    std::string sni, local;
  };

  void release(std::size_t credit) {
    if (handle_) handle_->written(credit);
  }

  // ---- reading ----

  awaitable<void> read_loop(std::shared_ptr<StreamSession> self) {
    handshake_started_ = last_read_ = SteadyClock::now();
    if (!cut_) {
      if (listener_.spec.tls) {
        if (!begin_handshake()) cut();
      } else {
        accept();
      }
    }
    arm_idle();
    ReadStatus status = ReadStatus::more;
    error_code ec;
    while (!cut_ && status == ReadStatus::more) {
      if (tls_ == Tls::pending && !closing_) {  // until the plaintext before STARTTLS is written
        co_await pause(SteadyClock::duration::max());
        continue;
      }
      std::size_t want = kReadChunk;
      if (rate_ > 0 && !closing_) {
        refill();
        if (tokens_ < 1) {
          co_await pause(std::chrono::duration_cast<SteadyClock::duration>(
              std::chrono::duration<double>((1 - tokens_) / rate_)));
          continue;
        }
        want = std::min(want, static_cast<std::size_t>(tokens_));
      }
      co_await socket_.async_wait(tcp::socket::wait_read, ec_token(ec));
      if (ec) break;
      if (tls_ == Tls::pending && !closing_) continue;  // leave it to the handshake
      status = read_available(want);
    }
    if (status == ReadStatus::eof && !cut_ && accepted_) {
      // The peer finished sending: write what is queued, then close.
      request_close();
      while (!cut_ && !fin_sent_) co_await pause(SteadyClock::duration::max());
    }
    cut();
    finish();
  }

  ReadStatus read_available(std::size_t want) {
    char buf[kReadChunk];
    error_code ec;
    std::size_t n = socket_.read_some(asio::buffer(buf, want), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) return ReadStatus::more;
    if (ec) return ec == asio::error::eof ? ReadStatus::eof : ReadStatus::error;
    last_read_ = SteadyClock::now();
    if (rate_ > 0) tokens_ -= static_cast<double>(n);
    if (closing_) return ReadStatus::more;  // lingering: drop what still arrives
    switch (tls_) {
      case Tls::none:
        deliver(buf, n);
        break;
      case Tls::pending:
        pre_tls_.append(buf, n);
        break;
      case Tls::handshaking:
      case Tls::up:
        transport_.in = buf;  // read by OpenSSL in place, no copy kept
        transport_.in_len = n;
        pump_tls();
        transport_.keep_unread();
        break;
      case Tls::failed:
        break;
    }
    return ReadStatus::more;
  }

  void deliver(const char* data, std::size_t n) {
    if (!accepted_ || closing_ || cut_ || !cb_.on_data) return;
    std::string_view bytes(data, n);
    if (!call_user([&] { cb_.on_data(bytes); }, "stream.on_data")) cut();
  }

  void refill() {
    auto now = SteadyClock::now();
    tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - refilled_at_).count());
    refilled_at_ = now;
  }

  awaitable<void> pause(SteadyClock::duration d) {
    error_code ec;
    if (!wake_) wake_ = std::make_unique<Timer>(*shard_.ctx);
    if (d == SteadyClock::duration::max()) wake_->expires_at(SteadyClock::time_point::max());
    else wake_->expires_after(std::max<SteadyClock::duration>(d, std::chrono::milliseconds(1)));
    co_await wake_->async_wait(ec_token(ec));
  }
  void wake() {
    if (wake_) wake_->cancel();
  }

  // ---- accepting and TLS ----

  void accept() {
    handle_ = std::make_shared<StreamHandle>(shard_.poster, weak_from_this(), ip_,
                                             impl_.options.stream_max_queued_bytes,
                                             facts_ ? std::move(*facts_) : TlsFacts{});
    facts_.reset();
    StreamCallbacks cb;
    if (client_ && client_->connect_handler) {
      auto handler = std::exchange(client_->connect_handler, nullptr);
      std::shared_ptr<StreamConnection> h = handle_;
      if (!call_user([&] { cb = handler(h); }, "stream.connected")) return cut();
    } else if (!call_user([&] { cb = (*listener_.stream_acceptor)(handle_); }, "stream.acceptor")) {
      return cut();
    }
    cb_ = std::move(cb);
    accepted_ = true;
    arm_idle();
  }

  bool begin_handshake() {
    if (impl_.tls.empty()) return false;
    bool tls_client = client_ && client_->tls_client;
    if (tls_client)
      ssl_ = SSL_new(impl_.tls_client[impl_.client_context_for(client_->local)]->native_handle());
    else
      ssl_ = SSL_new(impl_.tls.front()->native_handle());
    const BIO_METHOD* method = transport_method();
    BIO* bio = method ? BIO_new(method) : nullptr;
    if (!ssl_ || !bio) {
      BIO_free(bio);
      return false;
    }
    BIO_set_data(bio, &transport_);
    SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: SSL_free frees it
    SSL_set_ex_data(ssl_, alpn_ex_index(), const_cast<std::string*>(&listener_.alpn_wire));
    SSL_set_options(ssl_, SSL_OP_NO_RENEGOTIATION);
    if (tls_client) {
      if (!client_->sni.empty()) SSL_set_tlsext_host_name(ssl_, client_->sni.c_str());
      SSL_set_connect_state(ssl_);
      tls_ = Tls::handshaking;
      pump_tls();  // the ClientHello
      wake();
      return true;
    }
    if (listener_.stream_spec.request_peer_certificate) {
      static constexpr unsigned char kSessionContext[] = "hearth-s2s";
      SSL_set_session_id_context(ssl_, kSessionContext, sizeof kSessionContext - 1);
      SSL_set_verify(ssl_, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
      SSL_set1_verify_cert_store(ssl_, impl_.peer_store);
    }
    SSL_set_accept_state(ssl_);
    tls_ = Tls::handshaking;
    if (!pre_tls_.empty()) {
      transport_.held = std::exchange(pre_tls_, {});
      transport_.held_pos = 0;
      pump_tls();
    }
    wake();
    return true;
  }

  // Runs the handshake or decrypts what is buffered, then queues what OpenSSL wrote.
  void pump_tls() {
    if (tls_ == Tls::handshaking) {
      ERR_clear_error();
      int r = SSL_do_handshake(ssl_);
      if (r != 1) {
        int e = SSL_get_error(ssl_, r);
        flush_tls(0);
        if (e != SSL_ERROR_WANT_READ) tls_failed();
        return;
      }
      tls_ = Tls::up;
      record_facts();
      flush_tls(0);
      for (auto& c : std::exchange(held_, {})) encrypt(c.data, c.credit);
      arm_idle();
      if (!accepted_) {
        accept();
      } else if (tls_done_) {
        auto done = std::exchange(tls_done_, nullptr);
        call_user([&] { done(ok()); }, "stream.start_tls");
      }
    }
    if (tls_ != Tls::up) return;
    char buf[kReadChunk];
    // Under a read rate, decrypted chunks are no larger than the burst either.
    int want = rate_ > 0 ? static_cast<int>(std::min<double>(burst_, sizeof buf)) : static_cast<int>(sizeof buf);
    while (!cut_ && !closing_) {
      ERR_clear_error();
      int n = SSL_read(ssl_, buf, want);
      if (n > 0) {
        deliver(buf, static_cast<std::size_t>(n));
        continue;
      }
      int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_WANT_READ) break;
      if (e == SSL_ERROR_ZERO_RETURN) {  // close_notify: answer it and close
        request_close();
        break;
      }
      impl_.log.debug("stream.tls_error", {{"ip", ip_}, {"error", static_cast<std::int64_t>(e)}});
      cut();
      return;
    }
    flush_tls(0);
  }

  void tls_failed() {
    tls_ = Tls::failed;
    impl_.log.debug("stream.tls_handshake_failed", {{"listener", listener_.stream_spec.name}, {"ip", ip_}});
    for (auto& c : std::exchange(held_, {})) release(c.credit);
    if (auto done = std::exchange(tls_done_, nullptr))
      call_user([&] { done(fail(Errc::unavailable, "TLS handshake failed")); }, "stream.start_tls");
    request_close();  // sends the alert OpenSSL queued, then FIN
  }

  void record_facts() {
    TlsFacts f;
    f.tls = true;
    if (const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) f.sni = lowercase(sni);
    const unsigned char* proto = nullptr;
    unsigned proto_len = 0;
    SSL_get0_alpn_selected(ssl_, &proto, &proto_len);
    if (proto) f.alpn.assign(reinterpret_cast<const char*>(proto), proto_len);
    f.version = SSL_get_version(ssl_);
    int v = SSL_version(ssl_);
    if (v == TLS1_3_VERSION || (v == TLS1_2_VERSION && SSL_get_extms_support(ssl_) == 1)) {
      static constexpr char kLabel[] = "EXPORTER-Channel-Binding";
      std::string out(32, '\0');
      if (SSL_export_keying_material(ssl_, reinterpret_cast<unsigned char*>(out.data()), out.size(), kLabel,
                                     sizeof kLabel - 1, nullptr, 0, 0) == 1)
        f.exporter = std::move(out);
    }
    if (X509* cert = SSL_get_certificate(ssl_)) f.end_point = end_point_hash(cert);
    if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
      auto names = std::make_shared<PeerCertificate>();
      names->present = true;
      long v = SSL_get_verify_result(ssl_);
      names->chain_valid = v == X509_V_OK;
      if (v != X509_V_OK) names->verify_error = X509_verify_cert_error_string(v);
      read_alt_names(peer, *names);
      f.peer = std::move(names);
    }
    // Kept once: by the handle, or here until accept() hands them to it.
    if (handle_) handle_->set_facts(std::move(f));
    else facts_ = std::make_unique<TlsFacts>(std::move(f));
  }

  void encrypt(const std::string& plain, std::size_t credit) {
    if (cut_) return release(credit);
    if (!plain.empty()) {
      ERR_clear_error();
      if (SSL_write(ssl_, plain.data(), static_cast<int>(plain.size())) <= 0) {
        release(credit);
        return cut();
      }
    }
    flush_tls(credit);
  }

  // Moves what OpenSSL wrote into the outgoing queue.
  void flush_tls(std::size_t credit) {
    if (transport_.out.empty()) return release(credit);
    out_.push_back({std::exchange(transport_.out, {}), credit});
    kick_writer();
  }

  // ---- writing ----

  void kick_writer() {
    if (writing_ || cut_) return;
    writing_ = true;
    impl_.spawn(shard_, write_loop(shared_from_this()), "stream.write");
  }

  awaitable<void> write_loop(std::shared_ptr<StreamSession> self) {
    error_code ec;
    std::vector<Chunk> batch;
    std::vector<asio::const_buffer> buffers;
    while (!cut_) {
      if (!out_.empty()) {
        batch.clear();
        buffers.clear();
        std::size_t bytes = 0;
        while (!out_.empty() && bytes < kMaxWriteBatch) {
          bytes += out_.front().data.size();
          batch.push_back(std::move(out_.front()));
          out_.pop_front();
        }
        for (auto& c : batch) buffers.emplace_back(asio::buffer(c.data));
        co_await asio::async_write(socket_, buffers, ec_token(ec));
        for (auto& c : batch) release(c.credit);
        if (ec) {
          cut();
          break;
        }
        continue;
      }
      if (tls_ == Tls::pending && !closing_) {
        if (!begin_handshake()) {
          tls_failed();
          continue;
        }
        continue;
      }
      if (closing_ && !fin_sent_) {
        if (tls_ == Tls::up && !notify_sent_) {
          notify_sent_ = true;
          ERR_clear_error();
          SSL_shutdown(ssl_);
          flush_tls(0);
          continue;
        }
        fin_sent_ = true;
        socket_.shutdown(tcp::socket::shutdown_send, ec);
        arm_close_deadline(kLingerTime);  // for the peer's FIN
        wake();
      }
      break;
    }
    writing_ = false;
  }

  // ---- timers and the end ----

  SteadyClock::time_point idle_deadline() const {
    if (!accepted_ || tls_ == Tls::pending || tls_ == Tls::handshaking) return handshake_started_ + impl_.idle();
    if (idle_.count() > 0) return last_read_ + idle_;
    return SteadyClock::time_point::max();
  }

  void arm_idle() {
    if (cut_) return;
    auto at = idle_deadline();
    if (at == SteadyClock::time_point::max()) {
      idle_timer_.cancel();
      return;
    }
    idle_timer_.expires_at(at);
    idle_timer_.async_wait([w = weak_from_this()](error_code ec) {
      if (ec) return;
      if (auto s = w.lock()) s->on_idle_timer();
    });
  }

  void on_idle_timer() {
    if (cut_ || closing_) return;
    auto at = idle_deadline();
    if (at == SteadyClock::time_point::max()) return;
    if (SteadyClock::now() < at) return arm_idle();
    impl_.log.debug("stream.idle_timeout", {{"listener", listener_.stream_spec.name}, {"ip", ip_}});
    if (!accepted_ || tls_ == Tls::pending || tls_ == Tls::handshaking) cut();
    else request_close();
  }

  void arm_close_deadline(SteadyClock::duration d) {
    if (!close_deadline_) close_deadline_ = std::make_unique<Timer>(*shard_.ctx);
    close_deadline_->expires_after(d);
    close_deadline_->async_wait([w = weak_from_this()](error_code ec) {
      if (ec) return;
      if (auto s = w.lock()) s->cut();
    });
  }

  // Closes the socket now; pending reads and writes complete with an error.
  void cut() {
    if (cut_) return;
    cut_ = true;
    error_code ec;
    socket_.close(ec);
    wake();
    idle_timer_.cancel();
    if (close_deadline_) close_deadline_->cancel();
    for (auto* q : {&out_, &held_}) {
      for (auto& c : *q) release(c.credit);
      q->clear();
    }
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    if (handle_) handle_->mark_closed();
    for (auto& t : timers_) t.cancel();
    if (auto done = std::exchange(tls_done_, nullptr))
      call_user([&] { done(fail(Errc::unavailable, "connection closed")); }, "stream.start_tls");
    if (accepted_ && cb_.on_close) call_user(cb_.on_close, "stream.on_close");
    cb_ = {};
  }

  Impl& impl_;
  Shard& shard_;
  const Listener& listener_;
  tcp::socket socket_;
  const std::string ip_;
  const std::uint64_t id_;
  std::shared_ptr<StreamHandle> handle_;
  StreamCallbacks cb_;
  std::unique_ptr<ClientSide> client_;  // outgoing connections only

  Tls tls_ = Tls::none;
  TlsTransport transport_;  // before ssl_'s BIO is freed (in the destructor's body)
  SSL* ssl_ = nullptr;
  std::unique_ptr<TlsFacts> facts_;  // until the handle exists (direct TLS)
  std::function<void(Result<void>)> tls_done_;
  std::string pre_tls_;       // bytes for the handshake before anything read from the socket
  // Lists, not deques: an empty std::list holds no memory (a deque allocates ~600 bytes).
  std::list<Chunk> held_;     // plaintext sent while TLS is being set up
  std::list<Chunk> out_;      // bytes for the socket, in order

  // Made on first use: an idle authenticated connection needs only idle_timer_.
  std::unique_ptr<Timer> wake_;  // the read loop's pauses
  Timer idle_timer_;
  std::unique_ptr<Timer> close_deadline_;
  std::list<Timer> timers_;  // post_after
  SteadyClock::time_point last_read_, handshake_started_, refilled_at_;
  std::chrono::seconds idle_{0};
  double rate_ = 0, burst_ = 0, tokens_ = 0;

  bool accepted_ = false;
  bool draining_ = false;
  bool writing_ = false;
  bool closing_ = false;     // close requested: flush, close_notify, FIN
  bool notify_sent_ = false;
  bool fin_sent_ = false;
  bool cut_ = false;         // socket closed
  bool finished_ = false;    // on_close delivered
};

// ---------------------------------------------------------------------------------------
// StreamHandle.

template <typename F>
void StreamHandle::on_shard(F f) {
  if (std::this_thread::get_id() == thread_) {
    if (auto s = session_.lock()) f(*s);
    return;
  }
  shard_->post([w = session_, f = std::move(f)]() mutable {
    if (auto s = w.lock()) f(*s);
  });
}

void StreamHandle::send(std::string bytes) {
  if (closed_.load()) return;
  std::size_t n = bytes.size();
  if (queued_.fetch_add(n) + n > budget_) {
    queued_.fetch_sub(n);
    on_shard([](StreamSession& s) { s.overflow(); });
    return;
  }
  on_shard([b = std::move(bytes), n](StreamSession& s) mutable { s.enqueue(std::move(b), n); });
}

void StreamHandle::close() {
  if (!closed_.load()) on_shard([](StreamSession& s) { s.request_close(); });
}

void StreamHandle::start_tls(std::function<void(Result<void>)> done, std::string unconsumed) {
  on_shard([d = std::move(done), u = std::move(unconsumed)](StreamSession& s) mutable {
    s.start_tls(std::move(d), std::move(u));
  });
}

void StreamHandle::start_tls_client(std::string server_name, std::string local_name,
                                    std::function<void(Result<void>)> done) {
  on_shard([n = std::move(server_name), l = std::move(local_name), d = std::move(done)](StreamSession& s) mutable {
    s.start_tls_client(std::move(n), std::move(l), std::move(d));
  });
}

Result<std::string> StreamHandle::channel_binding(std::string_view type) const {
  bool exporter = type == "tls-exporter";
  if (!exporter && type != "tls-server-end-point")
    return fail(Errc::invalid_argument, fmt::format("unknown channel-binding type '{}'", type));
  std::lock_guard lock(mutex_);
  if (!facts_.tls) return fail(Errc::unavailable, "channel binding needs TLS");
  const auto& value = exporter ? facts_.exporter : facts_.end_point;
  if (!value)
    return fail(Errc::unavailable, exporter ? "tls-exporter needs TLS 1.3 or the extended master secret"
                                            : "certificate has no usable signature hash");
  return *value;
}

void StreamHandle::set_read_rate(std::size_t bytes_per_second, std::size_t burst_bytes) {
  on_shard([=](StreamSession& s) { s.set_read_rate(bytes_per_second, burst_bytes); });
}

void StreamHandle::set_idle_timeout(int seconds) {
  on_shard([=](StreamSession& s) { s.set_idle_timeout(seconds); });
}

void StreamHandle::post(std::function<void()> fn) {
  if (closed_.load()) return;
  shard_->post([w = session_, fn = std::move(fn)] {
    if (auto s = w.lock(); s && s->alive()) s->call_user(fn, "stream.post");
  });
}

void StreamHandle::post_after(std::chrono::milliseconds delay, std::function<void()> fn) {
  if (closed_.load()) return;
  shard_->post([w = session_, delay, fn = std::move(fn)]() mutable {
    if (auto s = w.lock()) s->add_timer(delay, std::move(fn));
  });
}

awaitable<void> connect_outgoing(Impl& impl, Shard& shard, OutgoingStreamSpec spec, StreamConnectHandler handler) {
  auto refuse = [&](std::string why) {
    HandlerName name("stream.connect_failed");
    try {
      handler(fail(Errc::unavailable, std::move(why)));
    } catch (...) {
      impl.log.error("stream.bug", {{"where", "stream.connect_failed"}});
    }
  };
  if (impl.stopping.load()) co_return refuse("server stopping");
  error_code ec;
  tcp::resolver resolver(*shard.ctx);
  tcp::socket socket(*shard.ctx);
  asio::steady_timer deadline(*shard.ctx);
  bool timed_out = false;
  deadline.expires_after(std::chrono::seconds(std::max(1, spec.connect_timeout_seconds)));
  deadline.async_wait([&](error_code e) {
    if (e) return;
    timed_out = true;
    resolver.cancel();
    error_code ignored;
    socket.close(ignored);
  });
  auto endpoints = co_await resolver.async_resolve(spec.host, std::to_string(spec.port), ec_token(ec));
  if (ec) {
    deadline.cancel();
    co_return refuse(fmt::format("cannot resolve {}: {}", spec.host, timed_out ? "timed out" : ec.message()));
  }
  co_await asio::async_connect(socket, endpoints, ec_token(ec));
  deadline.cancel();
  if (ec || timed_out)
    co_return refuse(fmt::format("cannot connect to {}:{}: {}", spec.host, spec.port, timed_out ? "timed out" : ec.message()));
  auto endpoint = socket.remote_endpoint(ec);
  if (ec) co_return refuse("connection lost");
  std::string ip = ip_string(endpoint.address());
  socket.set_option(tcp::no_delay(true), ec);
  {
    std::lock_guard lock(impl.connections_mutex);
    if (impl.connections.try_open(ip) != ConnectionTable::Admit::ok) {
      socket.close(ec);
      co_return refuse("connection cap reached");
    }
    impl.outgoing.stream_open->add(1);
  }
  if (impl.stopping.load()) {
    impl.release_connection(ip, impl.outgoing.stream_open);
    co_return refuse("server stopping");
  }
  auto session = std::make_shared<StreamSession>(impl, shard, impl.outgoing, std::move(socket), std::move(ip));
  session->set_outgoing(std::move(handler));
  session->start();
}

}  // namespace

void connect_stream_session(HttpServer::Impl& impl, Shard& shard, OutgoingStreamSpec spec, StreamConnectHandler handler) {
  impl.spawn(shard, connect_outgoing(impl, shard, std::move(spec), std::move(handler)), "stream.connect");
}

void start_stream_session(HttpServer::Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket,
                          std::string ip) {
  std::make_shared<StreamSession>(impl, shard, listener, std::move(socket), std::move(ip))->start();
}

}  // namespace hearth::net
