// xmppload: an XMPP client load generator (one epoll loop, many connections, OpenSSL).
//
// It speaks the client side of RFC 6120/6121: stream header, STARTTLS, SASL SCRAM-SHA-1 or
// SCRAM-SHA-256 (RFC 5802/7677, no channel binding), resource binding, initial presence and
// chat messages; and in-band registration (XEP-0077) to create accounts on servers that
// allow it. Workloads (--workload):
//   login     M logins (fresh TCP+TLS+SCRAM+bind, then close), N in flight
//   messages  C connected clients, K messages in a burst (or paced with --rate), client i
//             sends to client (i+1) % C; delivery latency from a timestamp in the body
//   muc       C clients join one room (XEP-0045); S of them post K groupchat messages in
//             a burst (or paced with --rate); every occupant receives every message, so
//             deliveries = K x C; latency at the receivers from a timestamp in the body
//   idle      authenticated TLS connections held open up to each --conns target; the
//             server's resident memory is read from /proc/<--server-pid>/status
//   register  create accounts u1..uN in-band
// The result is one JSON object on stdout; progress and errors go to stderr. Every loop is
// bounded by count and by --max-seconds.
//
// SCRAM's salted password (PBKDF2, 4096 iterations) is cached per (mechanism, salt,
// iterations) as RFC 5802 §5.1 allows clients to do, so the generator's CPU goes to TLS and
// the protocol rather than to re-deriving the same key; the server's cost is unchanged.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "proc_stats.h"

namespace {

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// ---------------------------------------------------------------- options

struct Options {
  std::string workload = "login";
  std::string host = "127.0.0.1";
  int port = 5222;
  std::string domain = "localhost";
  std::string user_prefix = "u";
  std::string password = "benchpass";
  int users = 1000;           // accounts u1..uN exist
  int first_user = 1;
  bool tls = true;            // STARTTLS when offered
  std::string mech = "SCRAM-SHA-1";
  int concurrency = 50;       // connection attempts in flight
  int total = 2000;           // login: logins; register: accounts
  int clients = 200;          // messages
  int messages = 20000;       // messages
  double rate = 0;            // messages per second; 0 = burst
  int body_bytes = 64;        // padding in each message body
  std::vector<int> conns{1000, 5000};  // idle targets
  int sources = 1;            // idle: 127.0.0.2 .. 127.0.0.(1+sources)
  int server_pid = 0;
  double settle_seconds = 3;
  double max_seconds = 300;
  std::string label;
  std::string scram_cache;    // file that keeps salted-password keys between invocations
  int senders = 10;           // muc: occupants that post
  std::string room = "bench"; // muc: room node at conference.<domain>
  std::string muc_service;    // muc: default conference.<domain>
};

[[noreturn]] void usage(const char* why) {
  if (why) fmt::print(stderr, "xmppload: {}\n", why);
  fmt::print(why ? stderr : stdout,
             "usage: xmppload --workload login|messages|muc|idle|register --port P --domain D [--host H]\n"
             "  [--users N] [--first-user N] [--password PW] [--mech SCRAM-SHA-1|SCRAM-SHA-256] [--no-tls]\n"
             "  [--concurrency N] [--total N] [--clients N] [--messages N] [--rate R] [--body-bytes N]\n"
             "  [--conns 1000,5000] [--sources N] [--server-pid PID] [--settle-seconds S]\n"
             "  [--max-seconds S] [--label TEXT] [--scram-cache FILE]\n"
             "  muc: [--clients N] [--senders N] [--messages N] [--rate R] [--room NODE] [--muc-service JID]\n");
  std::exit(why ? 2 : 0);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "-h" || a == "--help") usage(nullptr);
    else if (a == "--workload") o.workload = val();
    else if (a == "--host") o.host = val();
    else if (a == "--port") o.port = std::stoi(val());
    else if (a == "--domain") o.domain = val();
    else if (a == "--user-prefix") o.user_prefix = val();
    else if (a == "--password") o.password = val();
    else if (a == "--users") o.users = std::stoi(val());
    else if (a == "--first-user") o.first_user = std::stoi(val());
    else if (a == "--no-tls") o.tls = false;
    else if (a == "--mech") o.mech = val();
    else if (a == "--concurrency") o.concurrency = std::stoi(val());
    else if (a == "--total") o.total = std::stoi(val());
    else if (a == "--clients") o.clients = std::stoi(val());
    else if (a == "--messages") o.messages = std::stoi(val());
    else if (a == "--rate") o.rate = std::stod(val());
    else if (a == "--body-bytes") o.body_bytes = std::stoi(val());
    else if (a == "--conns") {
      o.conns.clear();
      std::stringstream ss(val());
      for (std::string p; std::getline(ss, p, ',');) o.conns.push_back(std::stoi(p));
      std::sort(o.conns.begin(), o.conns.end());
    } else if (a == "--sources") o.sources = std::stoi(val());
    else if (a == "--server-pid") o.server_pid = std::stoi(val());
    else if (a == "--settle-seconds") o.settle_seconds = std::stod(val());
    else if (a == "--max-seconds") o.max_seconds = std::stod(val());
    else if (a == "--label") o.label = val();
    else if (a == "--scram-cache") o.scram_cache = val();
    else if (a == "--senders") o.senders = std::stoi(val());
    else if (a == "--room") o.room = val();
    else if (a == "--muc-service") o.muc_service = val();
    else usage(("unknown option " + a).c_str());
  }
  if (o.mech != "SCRAM-SHA-1" && o.mech != "SCRAM-SHA-256") usage("--mech must be SCRAM-SHA-1 or SCRAM-SHA-256");
  if (o.concurrency < 1 || o.total < 1 || o.clients < 2 || o.messages < 1 || o.users < 1) usage("counts must be positive");
  if (o.max_seconds <= 0 || o.max_seconds > 3600) usage("--max-seconds must be in (0, 3600]");
  return o;
}

// ---------------------------------------------------------------- /proc readings

// ---------------------------------------------------------------- base64, SCRAM

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string b64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    std::uint32_t v = (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8) | std::uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    std::uint32_t v = std::uint8_t(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    std::uint32_t v = (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string b64_decode(std::string_view in) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = std::strchr(kB64, c);
    if (c == '=' || c == 0 || p == nullptr) continue;
    acc = (acc << 6) | std::uint32_t(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

struct ScramKeys {
  std::string client_key, stored_key, server_key;
};

class ScramCache {
 public:
  const ScramKeys& keys(const std::string& mech, const std::string& password, const std::string& salt, int iterations) {
    std::string k = mech + '\0' + salt + '\0' + std::to_string(iterations) + '\0' + password;
    auto it = cache_.find(k);
    if (it != cache_.end()) return it->second;
    const EVP_MD* md = mech == "SCRAM-SHA-256" ? EVP_sha256() : EVP_sha1();
    std::size_t n = EVP_MD_size(md);
    std::string salted(n, '\0');
    PKCS5_PBKDF2_HMAC(password.data(), int(password.size()), reinterpret_cast<const unsigned char*>(salt.data()),
                      int(salt.size()), iterations, md, int(n), reinterpret_cast<unsigned char*>(salted.data()));
    ScramKeys keys;
    keys.client_key = hmac(md, salted, "Client Key");
    keys.stored_key = hash(md, keys.client_key);
    keys.server_key = hmac(md, salted, "Server Key");
    return cache_.emplace(std::move(k), std::move(keys)).first->second;
  }
  static std::string hmac(const EVP_MD* md, std::string_view key, std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(md, key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
    return std::string(reinterpret_cast<char*>(out), len);
  }
  static std::string hash(const EVP_MD* md, std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
    return std::string(reinterpret_cast<char*>(out), len);
  }

 // One line per entry: hex(key) hex(client_key) hex(stored_key) hex(server_key).
  void load(const std::string& path) {
    std::ifstream f(path);
    std::string k, a, b, c;
    while (f >> k >> a >> b >> c) cache_[unhex(k)] = ScramKeys{unhex(a), unhex(b), unhex(c)};
  }
  void save(const std::string& path) const {
    std::ofstream f(path + ".tmp");
    for (const auto& [k, v] : cache_)
      f << hex(k) << ' ' << hex(v.client_key) << ' ' << hex(v.stored_key) << ' ' << hex(v.server_key) << '\n';
    f.close();
    std::rename((path + ".tmp").c_str(), path.c_str());
  }
  std::size_t size() const { return cache_.size(); }

 private:
  static std::string hex(std::string_view s) {
    static const char d[] = "0123456789abcdef";
    std::string o;
    for (unsigned char c : s) {
      o += d[c >> 4];
      o += d[c & 15];
    }
    return o;
  }
  static std::string unhex(std::string_view s) {
    std::string o;
    for (std::size_t i = 0; i + 1 < s.size(); i += 2) o += char(std::stoi(std::string(s.substr(i, 2)), nullptr, 16));
    return o;
  }
  std::map<std::string, ScramKeys> cache_;
};

// "a=1,b=2" -> value of key `k`
std::string scram_attr(std::string_view msg, char k) {
  std::size_t pos = 0;
  while (pos < msg.size()) {
    std::size_t end = msg.find(',', pos);
    if (end == std::string_view::npos) end = msg.size();
    if (end - pos >= 2 && msg[pos] == k && msg[pos + 1] == '=') return std::string(msg.substr(pos + 2, end - pos - 2));
    pos = end + 1;
  }
  return {};
}

// ---------------------------------------------------------------- XML framing

// Returns the end (one past '>') of the complete element starting at `start` (which is at
// '<'), or npos when more bytes are needed. Enough for stanzas: tags, quoted attributes,
// text without '<', and the odd comment or processing instruction.
std::size_t element_end(const std::string& s, std::size_t start) {
  int depth = 0;
  std::size_t i = start;
  while (true) {
    i = s.find('<', i);
    if (i == std::string::npos || i + 1 >= s.size()) return std::string::npos;
    char c = s[i + 1];
    if (c == '/') {
      std::size_t e = s.find('>', i);
      if (e == std::string::npos) return std::string::npos;
      --depth;
      if (depth <= 0) return e + 1;
      i = e + 1;
    } else if (c == '?' || c == '!') {
      std::size_t e = s.find('>', i);
      if (e == std::string::npos) return std::string::npos;
      i = e + 1;
    } else {
      char quote = 0;
      std::size_t e = i + 1;
      for (; e < s.size(); ++e) {
        char ch = s[e];
        if (quote) {
          if (ch == quote) quote = 0;
        } else if (ch == '"' || ch == '\'') {
          quote = ch;
        } else if (ch == '>') {
          break;
        }
      }
      if (e >= s.size()) return std::string::npos;
      if (s[e - 1] == '/') {
        if (depth == 0) return e + 1;
      } else {
        ++depth;
      }
      i = e + 1;
    }
  }
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Text of the first <name>...</name> inside `s`.
std::string_view child_text(std::string_view s, std::string_view name) {
  std::string open = "<" + std::string(name);
  std::size_t p = 0;
  while ((p = s.find(open, p)) != std::string_view::npos) {
    std::size_t after = p + open.size();
    if (after < s.size() && (s[after] == '>' || s[after] == ' ')) break;
    p = after;
  }
  if (p == std::string_view::npos) return {};
  std::size_t gt = s.find('>', p);
  if (gt == std::string_view::npos || s[gt - 1] == '/') return {};
  std::size_t close = s.find("</" + std::string(name), gt);
  if (close == std::string_view::npos) return {};
  return s.substr(gt + 1, close - gt - 1);
}

// ---------------------------------------------------------------- connections

struct Stats {
  std::vector<double> latency_ms;
  long ok = 0, failed = 0, exists = 0;
  std::map<std::string, long> errors;
  std::string mech_used;
  void error(const std::string& why) { ++errors[why]; }
};

class Loop;

enum class Phase { connecting, features, proceed, handshake, sasl, binding, session, ready, registering, done };

class Conn {
 public:
  Conn(Loop& loop, int index, int user, std::string resource, std::uint32_t source_ip)
      : loop_(loop), index_(index), user_(user), resource_(std::move(resource)), source_ip_(source_ip) {}
  ~Conn();

  bool start();
  void on_event(std::uint32_t events);
  void send(std::string_view data);
  void fail(const std::string& why);
  void close_quietly();

  int index() const { return index_; }
  int fd() const { return fd_; }
  Phase phase() const { return phase_; }
  std::int64_t started_ns() const { return started_ns_; }
  std::string full_jid() const;
  bool dead() const { return dead_; }

 private:
  void on_readable();
  void on_writable();
  void flush();
  void update_interest();
  void process_input();
  void handle_stanza(std::string_view st);
  void handle_features(std::string_view st);
  void send_header();
  void start_tls();
  void continue_handshake();
  void on_bound();

  Loop& loop_;
  int index_;
  int user_;
  std::string resource_;
  std::uint32_t source_ip_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  Phase phase_ = Phase::connecting;
  bool header_seen_ = false;
  bool reset_parser_ = false;
  bool want_write_ = false;
  bool interest_out_ = true;
  bool dead_ = false;
  bool need_session_ = false;
  std::string in_, out_;
  std::string client_first_bare_, expected_server_sig_;
  std::int64_t started_ns_ = 0;
};

class Loop {
 public:
  explicit Loop(const Options& o) : opt(o) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  // every login is a full handshake
  }

  const Options& opt;
  int epfd = -1;
  SSL_CTX* ctx = nullptr;
  ScramCache scram;
  Stats stats;

  // Filled by the workloads.
  std::function<void(Conn&)> on_ready;          // bound (+ presence sent) or registered
  std::function<void(Conn&, std::string_view)> on_message;
  std::function<void(Conn&)> on_gone;           // failed or closed (after stats)
  std::function<void(Conn&, std::string_view)> on_other;  // presence / iq once ready

  void run_once(int timeout_ms) {
    epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Conn*>(evs[i].data.ptr);
      if (!c->dead()) c->on_event(evs[i].events);
    }
  }
};

Conn::~Conn() {
  if (ssl_) SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
}

std::string Conn::full_jid() const {
  return fmt::format("{}{}@{}/{}", loop_.opt.user_prefix, user_, loop_.opt.domain, resource_);
}

bool Conn::start() {
  started_ns_ = now_ns();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    fail(fmt::format("socket: {}", std::strerror(errno)));
    return false;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (source_ip_ != 0) {
    setsockopt(fd_, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(source_ip_);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      fail(fmt::format("bind: {}", std::strerror(errno)));
      return false;
    }
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(std::uint16_t(loop_.opt.port));
  inet_pton(AF_INET, loop_.opt.host.c_str(), &dst.sin_addr);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) {
    fail(fmt::format("connect: {}", std::strerror(errno)));
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = this;
  epoll_ctl(loop_.epfd, EPOLL_CTL_ADD, fd_, &ev);
  return true;
}

void Conn::fail(const std::string& why) {
  if (dead_) return;
  ++loop_.stats.failed;
  loop_.stats.error(why);
  close_quietly();
}

void Conn::close_quietly() {
  if (dead_) return;
  dead_ = true;
  phase_ = Phase::done;
  if (fd_ >= 0) {
    epoll_ctl(loop_.epfd, EPOLL_CTL_DEL, fd_, nullptr);
    ::close(fd_);
    fd_ = -1;
  }
  if (loop_.on_gone) loop_.on_gone(*this);
}

void Conn::update_interest() {
  bool want = want_write_ || !out_.empty() || phase_ == Phase::connecting;
  if (want == interest_out_ || fd_ < 0) return;
  interest_out_ = want;
  epoll_event ev{};
  ev.events = EPOLLIN | (want ? std::uint32_t(EPOLLOUT) : 0u);
  ev.data.ptr = this;
  epoll_ctl(loop_.epfd, EPOLL_CTL_MOD, fd_, &ev);
}

void Conn::on_event(std::uint32_t events) {
  if (phase_ == Phase::connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(fmt::format("connect: {}", std::strerror(err)));
    if (!(events & (EPOLLOUT | EPOLLIN))) return;
    phase_ = Phase::features;
    send_header();
    update_interest();
    return;
  }
  if (phase_ == Phase::handshake) return continue_handshake();
  if (events & (EPOLLOUT)) on_writable();
  if (dead_) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable();
}

void Conn::send_header() {
  header_seen_ = false;
  send(fmt::format("<?xml version='1.0'?><stream:stream to='{}' xmlns='jabber:client' "
                   "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
                   loop_.opt.domain));
}

void Conn::send(std::string_view data) {
  if (dead_) return;
  out_.append(data);
  flush();
}

void Conn::flush() {
  while (!out_.empty() && !dead_) {
    if (ssl_) {
      int n = SSL_write(ssl_, out_.data(), int(std::min<std::size_t>(out_.size(), 1 << 20)));
      if (n > 0) {
        out_.erase(0, std::size_t(n));
        continue;
      }
      int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
      return fail("tls write");
    }
    ssize_t n = ::write(fd_, out_.data(), out_.size());
    if (n > 0) {
      out_.erase(0, std::size_t(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    return fail(fmt::format("write: {}", std::strerror(errno)));
  }
  update_interest();
}

void Conn::on_writable() {
  if (want_write_) {
    want_write_ = false;
    on_readable();
  }
  flush();
}

void Conn::on_readable() {
  char buf[16384];
  bool got = false;
  while (!dead_) {
    if (ssl_) {
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n > 0) {
        in_.append(buf, std::size_t(n));
        got = true;
        continue;
      }
      int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_WANT_READ) break;
      if (e == SSL_ERROR_WANT_WRITE) {
        want_write_ = true;
        update_interest();
        break;
      }
      if (got) process_input();
      return fail(e == SSL_ERROR_ZERO_RETURN ? "closed by server" : "tls read");
    }
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n > 0) {
      in_.append(buf, std::size_t(n));
      got = true;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    if (got) process_input();
    return fail(n == 0 ? "closed by server" : fmt::format("read: {}", std::strerror(errno)));
  }
  if (got) process_input();
}

void Conn::process_input() {
  std::size_t pos = 0;
  while (!dead_) {
    if (!header_seen_) {
      std::size_t h = in_.find("<stream:stream", pos);
      if (h == std::string::npos) break;
      std::size_t gt = in_.find('>', h);
      if (gt == std::string::npos) break;
      header_seen_ = true;
      pos = gt + 1;
      continue;
    }
    while (pos < in_.size() && (in_[pos] == ' ' || in_[pos] == '\n' || in_[pos] == '\r' || in_[pos] == '\t')) ++pos;
    if (pos >= in_.size()) break;
    if (in_.compare(pos, 16, "</stream:stream>") == 0) return fail("stream closed by server");
    std::size_t end = element_end(in_, pos);
    if (end == std::string::npos) break;
    handle_stanza(std::string_view(in_).substr(pos, end - pos));
    pos = end;
    if (reset_parser_) {
      reset_parser_ = false;
      in_.clear();
      return;
    }
  }
  if (!dead_) in_.erase(0, pos);
}

void Conn::handle_stanza(std::string_view st) {
  if (starts_with(st, "<stream:error")) {
    std::size_t p = st.find('<', 14);
    std::string cond = p == std::string_view::npos ? "" : std::string(st.substr(p + 1, st.find_first_of(" />", p) - p - 1));
    return fail("stream error " + cond);
  }
  switch (phase_) {
    case Phase::features:
      if (starts_with(st, "<stream:features")) return handle_features(st);
      return;
    case Phase::proceed:
      if (starts_with(st, "<proceed")) return start_tls();
      return fail("starttls refused");
    case Phase::sasl: {
      const EVP_MD* md = loop_.stats.mech_used == "SCRAM-SHA-256" ? EVP_sha256() : EVP_sha1();
      if (starts_with(st, "<challenge")) {
        std::size_t gt = st.find('>');
        std::string server_first = b64_decode(st.substr(gt + 1, st.rfind('<') - gt - 1));
        std::string nonce = scram_attr(server_first, 'r');
        std::string salt = b64_decode(scram_attr(server_first, 's'));
        int iterations = std::atoi(scram_attr(server_first, 'i').c_str());
        if (nonce.empty() || salt.empty() || iterations < 1) return fail("bad scram challenge");
        const ScramKeys& k = loop_.scram.keys(loop_.stats.mech_used, loop_.opt.password, salt, iterations);
        std::string without_proof = "c=biws,r=" + nonce;
        std::string auth_message = client_first_bare_ + "," + server_first + "," + without_proof;
        std::string sig = ScramCache::hmac(md, k.stored_key, auth_message);
        std::string proof = k.client_key;
        for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = char(proof[i] ^ sig[i]);
        expected_server_sig_ = b64_encode(ScramCache::hmac(md, k.server_key, auth_message));
        send(fmt::format("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                         b64_encode(without_proof + ",p=" + b64_encode(proof))));
        return;
      }
      if (starts_with(st, "<success")) {
        std::size_t gt = st.find('>');
        std::string final_msg;
        if (st[gt - 1] != '/') final_msg = b64_decode(st.substr(gt + 1, st.rfind('<') - gt - 1));
        if (!final_msg.empty() && scram_attr(final_msg, 'v') != expected_server_sig_)
          return fail("server signature mismatch");
        reset_parser_ = true;
        phase_ = Phase::features;
        send_header();
        return;
      }
      return fail("sasl failure");
    }
    case Phase::binding:
      if (starts_with(st, "<iq") && st.find("id='bind'") != std::string_view::npos) {
        if (st.find("type='result'") == std::string_view::npos) return fail("bind failed");
        if (phase_ == Phase::binding && need_session_) {
          phase_ = Phase::session;
          send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
          return;
        }
        return on_bound();
      }
      return;
    case Phase::session:
      if (starts_with(st, "<iq") && st.find("id='sess'") != std::string_view::npos) return on_bound();
      return;
    case Phase::registering:
      if (starts_with(st, "<iq") && st.find("id='reg'") != std::string_view::npos) {
        if (st.find("type='result'") != std::string_view::npos) {
          ++loop_.stats.ok;
        } else if (st.find("conflict") != std::string_view::npos) {
          ++loop_.stats.exists;
        } else {
          return fail("registration refused");
        }
        loop_.stats.latency_ms.push_back((now_ns() - started_ns_) / 1e6);
        send("</stream:stream>");
        if (loop_.on_ready) loop_.on_ready(*this);
        return close_quietly();
      }
      return;
    case Phase::ready:
      if (starts_with(st, "<message") && loop_.on_message) loop_.on_message(*this, st);
      else if (loop_.on_other) loop_.on_other(*this, st);
      return;
    default:
      return;
  }
}

void Conn::handle_features(std::string_view st) {
  if (!ssl_ && loop_.opt.tls && st.find("<starttls") != std::string_view::npos) {
    phase_ = Phase::proceed;
    send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    return;
  }
  if (loop_.opt.workload == "register") {
    phase_ = Phase::registering;
    send(fmt::format("<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{}{}</username>"
                     "<password>{}</password></query></iq>",
                     loop_.opt.user_prefix, user_, loop_.opt.password));
    return;
  }
  if (st.find("<mechanisms") != std::string_view::npos) {
    const std::string& m = loop_.opt.mech;
    if (st.find("<mechanism>" + m + "</mechanism>") == std::string_view::npos) return fail(m + " not offered");
    loop_.stats.mech_used = m;
    unsigned char raw[18];
    RAND_bytes(raw, sizeof raw);
    client_first_bare_ = fmt::format("n={}{},r={}", loop_.opt.user_prefix, user_,
                                     b64_encode(std::string_view(reinterpret_cast<char*>(raw), sizeof raw)));
    phase_ = Phase::sasl;
    send(fmt::format("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>", m,
                     b64_encode("n,," + client_first_bare_)));
    return;
  }
  if (st.find("<bind") != std::string_view::npos) {
    // Session establishment (RFC 3921) only when the server does not mark it optional.
    std::size_t s = st.find("<session");
    need_session_ = s != std::string_view::npos && st.find("<optional", s) == std::string_view::npos;
    phase_ = Phase::binding;
    send(fmt::format("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     "<resource>{}</resource></bind></iq>",
                     resource_));
    return;
  }
  fail("unexpected features");
}

void Conn::start_tls() {
  reset_parser_ = true;
  phase_ = Phase::handshake;
  ssl_ = SSL_new(loop_.ctx);
  SSL_set_fd(ssl_, fd_);
  SSL_set_tlsext_host_name(ssl_, loop_.opt.domain.c_str());
  SSL_set_connect_state(ssl_);
  continue_handshake();
}

void Conn::continue_handshake() {
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    phase_ = Phase::features;
    want_write_ = false;
    send_header();
    update_interest();
    return;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) {
    want_write_ = false;
  } else if (e == SSL_ERROR_WANT_WRITE) {
    want_write_ = true;
  } else {
    return fail("tls handshake");
  }
  update_interest();
}

void Conn::on_bound() {
  phase_ = Phase::ready;
  if (loop_.on_ready) loop_.on_ready(*this);
}

// ---------------------------------------------------------------- workloads

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
};

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5))]; };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

class Json {
 public:
  void num(const std::string& k, double v) { add(k, fmt::format("{:.6g}", v)); }
  void integer(const std::string& k, long v) { add(k, std::to_string(v)); }
  void str(const std::string& k, const std::string& v) {
    std::string e;
    for (char c : v) {
      if (c == '"' || c == '\\') e += '\\';
      if (std::uint8_t(c) >= 0x20) e += c;
    }
    add(k, "\"" + e + "\"");
  }
  std::string text() const { return "{" + body_ + "}"; }

 private:
  void add(const std::string& k, const std::string& v) {
    if (!body_.empty()) body_ += ", ";
    body_ += "\"" + k + "\": " + v;
  }
  std::string body_;
};

std::uint32_t source_for(const Options& o, long k) {
  if (o.sources <= 0) return 0;
  return (127u << 24) | std::uint32_t(2 + k % o.sources);  // 127.0.0.2 ...
}

void common_json(Json& j, const Options& o, const Stats& s) {
  j.str("workload", o.workload);
  if (!o.label.empty()) j.str("label", o.label);
  j.str("mech", s.mech_used.empty() ? o.mech : s.mech_used);
  j.str("transport", o.tls ? "starttls" : "plain");
  std::string errs;
  for (const auto& [k, v] : s.errors) errs += fmt::format("{}{}x {}", errs.empty() ? "" : "; ", v, k);
  j.str("errors", errs);
}

// login / register: `total` connections, `concurrency` in flight, each closed when done.
int run_logins(Loop& loop, const Options& o) {
  std::vector<std::unique_ptr<Conn>> live;
  long started = 0, finished = 0, inflight = 0;
  std::map<Conn*, std::size_t> slot;
  loop.on_ready = [&](Conn& c) {
    if (o.workload == "login") {
      loop.stats.latency_ms.push_back((now_ns() - c.started_ns()) / 1e6);
      ++loop.stats.ok;
      c.send("</stream:stream>");
      c.close_quietly();
    }
  };
  loop.on_gone = [&](Conn& c) {
    (void)c;
    ++finished;
    --inflight;
  };
  double cpu0 = bench::own_cpu_seconds(), scpu0 = bench::process_cpu_seconds(o.server_pid);
  std::int64_t t0 = now_ns(), deadline = t0 + std::int64_t(o.max_seconds * 1e9);
  std::vector<std::unique_ptr<Conn>> conns;
  while (finished < o.total && now_ns() < deadline) {
    while (inflight < o.concurrency && started < o.total) {
      int user = o.first_user + int(started % o.users);
      auto c = std::make_unique<Conn>(loop, int(started), user, fmt::format("L{}", started), source_for(o, started));
      ++started;
      ++inflight;
      Conn* raw = c.get();
      conns.push_back(std::move(c));
      raw->start();
    }
    loop.run_once(20);
    // Free finished connections now and then (their fds are already closed).
    if (conns.size() > 4096) {
      std::erase_if(conns, [](const std::unique_ptr<Conn>& c) { return c->dead(); });
    }
  }
  double wall = (now_ns() - t0) / 1e9;
  double cpu = bench::own_cpu_seconds() - cpu0, scpu = bench::process_cpu_seconds(o.server_pid) - scpu0;
  Json j;
  common_json(j, o, loop.stats);
  long done = o.workload == "register" ? loop.stats.ok + loop.stats.exists : loop.stats.ok;
  j.integer("ok", loop.stats.ok);
  if (o.workload == "register") j.integer("exists", loop.stats.exists);
  j.integer("failed", loop.stats.failed + (o.total - finished));
  j.num("wall_s", wall);
  j.num("per_s", done / wall);
  auto p = percentiles(loop.stats.latency_ms);
  j.num("p50_ms", p.p50);
  j.num("p99_ms", p.p99);
  j.num("client_cpu_s", cpu);
  j.num("server_cpu_s", scpu);
  if (done > 0) j.num("server_cpu_us_per_op", scpu / double(done) * 1e6);
  fmt::print("{}\n", j.text());
  return loop.stats.failed == 0 && finished == o.total ? 0 : 1;
}

// Connects `target` clients (users first_user.., resource from `res`), `concurrency` at a
// time; returns when all are ready or on the deadline. Failed ones are counted in stats.
struct Fleet {
  std::vector<std::unique_ptr<Conn>> conns;
  long ready = 0, gone = 0, inflight = 0;
};

void connect_fleet(Loop& loop, const Options& o, Fleet& f, long target, const std::string& res_prefix,
                   std::int64_t deadline) {
  while (f.ready < target && now_ns() < deadline) {
    while (f.inflight < o.concurrency && long(f.conns.size()) < target + f.gone && long(f.conns.size()) - f.gone < target) {
      long k = long(f.conns.size());
      int user = o.first_user + int(k % o.users);
      auto c = std::make_unique<Conn>(loop, int(k), user, fmt::format("{}{}", res_prefix, k), source_for(o, k));
      ++f.inflight;
      Conn* raw = c.get();
      f.conns.push_back(std::move(c));
      raw->start();
    }
    if (f.gone > target) break;  // too many failures: give up
    loop.run_once(20);
  }
}

int run_messages(Loop& loop, const Options& o) {
  Fleet f;
  std::int64_t deadline = now_ns() + std::int64_t(o.max_seconds * 1e9);
  loop.on_ready = [&](Conn& c) {
    --f.inflight;
    ++f.ready;
    c.send("<presence/>");
  };
  loop.on_gone = [&](Conn& c) {
    if (c.phase() != Phase::ready) --f.inflight;
    ++f.gone;
  };
  long received = 0, errors = 0;
  std::int64_t last_recv = 0;
  std::vector<double>& lat = loop.stats.latency_ms;
  lat.reserve(std::size_t(o.messages));
  loop.on_message = [&](Conn&, std::string_view st) {
    if (st.find("type='error'") != std::string_view::npos || st.find("type=\"error\"") != std::string_view::npos) {
      ++errors;
      return;
    }
    std::string_view body = child_text(st, "body");
    std::size_t t = body.find("t=");
    if (t == std::string_view::npos) return;
    std::int64_t sent = std::atoll(std::string(body.substr(t + 2, 20)).c_str());
    last_recv = now_ns();
    lat.push_back((last_recv - sent) / 1e6);
    ++received;
  };
  connect_fleet(loop, o, f, o.clients, "m", deadline);
  if (f.ready < o.clients) {
    fmt::print(stderr, "xmppload: only {} of {} clients connected\n", f.ready, o.clients);
    Json j;
    common_json(j, o, loop.stats);
    j.integer("connected", f.ready);
    fmt::print("{}\n", j.text());
    return 1;
  }
  // Let presence and roster traffic settle.
  std::int64_t settle = now_ns() + 1'000'000'000;
  while (now_ns() < settle) loop.run_once(20);

  std::vector<Conn*> clients;
  for (auto& c : f.conns)
    if (!c->dead() && c->phase() == Phase::ready) clients.push_back(c.get());
  const long C = long(clients.size());
  std::vector<std::string> targets;
  for (long i = 0; i < C; ++i) targets.push_back(clients[std::size_t((i + 1) % C)]->full_jid());
  std::string pad(std::size_t(std::max(0, o.body_bytes)), 'x');
  auto message = [&](long i, long seq) {
    return fmt::format("<message to='{}' type='chat' id='m{}'><body>t={} seq={} {}</body></message>", targets[std::size_t(i)],
                       seq, now_ns(), seq, pad);
  };

  double cpu0 = bench::own_cpu_seconds(), scpu0 = bench::process_cpu_seconds(o.server_pid);
  std::int64_t t0 = now_ns();
  long sent = 0;
  if (o.rate <= 0) {
    // Burst: every client queues its share at once.
    long per = o.messages / C, extra = o.messages % C;
    for (long i = 0; i < C; ++i) {
      std::string batch;
      long n = per + (i < extra ? 1 : 0);
      for (long k = 0; k < n; ++k) batch += message(i, sent++);
      clients[std::size_t(i)]->send(batch);
    }
  }
  std::int64_t send_deadline = t0 + std::int64_t(o.max_seconds * 1e9);
  std::int64_t last_progress = now_ns();
  long last_received = 0;
  while (received + errors < o.messages) {
    std::int64_t now = now_ns();
    if (o.rate > 0 && sent < o.messages) {
      long due = std::min<long>(o.messages, long((now - t0) / 1e9 * o.rate) + 1);
      for (; sent < due; ++sent) clients[std::size_t(sent % C)]->send(message(sent % C, sent));
    }
    if (received != last_received) {
      last_received = received;
      last_progress = now;
    }
    // Stop when nothing has arrived for 30 s after the last send, or at the deadline.
    if (sent >= o.messages && now - last_progress > 30'000'000'000) break;
    if (now > send_deadline) break;
    loop.run_once(o.rate > 0 ? 1 : 20);
  }
  double wall = ((last_recv ? last_recv : now_ns()) - t0) / 1e9;
  double cpu = bench::own_cpu_seconds() - cpu0, scpu = bench::process_cpu_seconds(o.server_pid) - scpu0;
  Json j;
  common_json(j, o, loop.stats);
  j.integer("clients", C);
  j.integer("sent", sent);
  j.integer("received", received);
  j.integer("error_replies", errors);
  j.integer("lost", sent - received);
  j.integer("disconnected", f.gone);
  if (o.rate > 0) j.num("rate_target", o.rate);
  j.num("wall_s", wall);
  j.num("per_s", wall > 0 ? received / wall : 0);
  auto p = percentiles(lat);
  j.num("p50_ms", p.p50);
  j.num("p99_ms", p.p99);
  j.num("max_ms", p.max);
  j.num("client_cpu_s", cpu);
  j.num("server_cpu_s", scpu);
  if (received > 0) j.num("server_cpu_us_per_op", scpu / double(received) * 1e6);
  fmt::print("{}\n", j.text());
  return received == sent && sent == o.messages ? 0 : 1;
}

std::string_view attr(std::string_view st, std::string_view name) {
  std::size_t gt = st.find('>');
  std::string_view head = st.substr(0, gt);
  for (char q : {'\'', '"'}) {
    std::string key = fmt::format(" {}={}", name, q);
    std::size_t p = head.find(key);
    if (p == std::string_view::npos) continue;
    p += key.size();
    std::size_t e = head.find(q, p);
    if (e == std::string_view::npos) return {};
    return head.substr(p, e - p);
  }
  return {};
}

// muc: C occupants in one room, S senders, K messages; every occupant gets every message.
int run_muc(Loop& loop, const Options& o) {
  const std::string service = o.muc_service.empty() ? "conference." + o.domain : o.muc_service;
  const std::string room = o.room + "@" + service;
  Fleet f;
  std::int64_t deadline = now_ns() + std::int64_t(o.max_seconds * 1e9);
  long joined = 0, join_errors = 0, presences = 0;
  bool configured = false, config_sent = false;
  std::vector<char> is_joined;
  auto join = [&](Conn& c) {
    c.send(fmt::format("<presence to='{}/n{}'><x xmlns='http://jabber.org/protocol/muc'>"
                       "<history maxstanzas='0'/></x></presence>", room, c.index()));
  };
  loop.on_ready = [&](Conn& c) {
    --f.inflight;
    ++f.ready;
    c.send("<presence/>");
    if (c.index() == 0) join(c);  // the first occupant creates (and configures) the room
  };
  loop.on_gone = [&](Conn& c) {
    if (c.phase() != Phase::ready) --f.inflight;
    ++f.gone;
  };
  loop.on_other = [&](Conn& c, std::string_view st) {
    if (starts_with(st, "<presence")) {
      ++presences;
      std::string_view from = attr(st, "from");
      if (from.size() > room.size() && from.substr(0, room.size()) == room &&
          from.substr(room.size()) == fmt::format("/n{}", c.index())) {
        if (attr(st, "type") == "error") {
          ++join_errors;
          loop.stats.error("join refused");
          return;
        }
        if (std::size_t(c.index()) < is_joined.size() && !is_joined[std::size_t(c.index())]) {
          is_joined[std::size_t(c.index())] = 1;
          ++joined;
        }
        // A new room that waits for configuration (status 201): accept the defaults
        // (an instant room), as clients do.
        if (c.index() == 0 && !config_sent) {
          config_sent = true;
          // Raise the room's occupant cap (servers default to 200 or so): the same form
          // submission everywhere, which also unlocks a room that waits for it (status 201).
          c.send(fmt::format("<iq type='set' to='{}' id='cfg'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                             "<x xmlns='jabber:x:data' type='submit'>"
                             "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                             "<field var='muc#roomconfig_maxusers'><value>1000</value></field>"
                             "</x></query></iq>", room));
        }
      }
    } else if (starts_with(st, "<iq") && attr(st, "id") == "cfg") {
      if (attr(st, "type") != "result") loop.stats.error("room configuration refused");
      configured = true;
    }
  };
  long received = 0, errors = 0;
  std::int64_t last_recv = 0;
  std::vector<double>& lat = loop.stats.latency_ms;
  lat.reserve(std::size_t(o.messages) * std::size_t(o.clients));
  loop.on_message = [&](Conn&, std::string_view st) {
    if (attr(st, "type") == "error") {
      ++errors;
      return;
    }
    std::string_view body = child_text(st, "body");
    std::size_t t = body.find("t=");
    if (t == std::string_view::npos) return;
    std::int64_t sent = std::atoll(std::string(body.substr(t + 2, 20)).c_str());
    last_recv = now_ns();
    lat.push_back((last_recv - sent) / 1e6);
    ++received;
  };
  is_joined.assign(std::size_t(o.clients), 0);
  double jcpu0 = bench::process_cpu_seconds(o.server_pid);
  std::int64_t j0 = now_ns();
  // The room's creator first, then everyone else.
  connect_fleet(loop, o, f, 1, "r", deadline);
  while (!configured && now_ns() < deadline && f.gone == 0) loop.run_once(20);
  Options o2 = o;
  auto join_rest = [&](Conn& c) {
    --f.inflight;
    ++f.ready;
    c.send("<presence/>");
    join(c);
  };
  loop.on_ready = join_rest;
  connect_fleet(loop, o2, f, o.clients, "r", deadline);
  while (joined + join_errors < f.ready && now_ns() < deadline) loop.run_once(20);
  double join_s = (now_ns() - j0) / 1e9, join_cpu = bench::process_cpu_seconds(o.server_pid) - jcpu0;
  long rss_joined = bench::process_rss_kib(o.server_pid);
  if (joined < o.clients) {
    fmt::print(stderr, "xmppload: only {} of {} occupants joined ({} connected)\n", joined, o.clients, f.ready);
    Json j;
    common_json(j, o, loop.stats);
    j.integer("connected", f.ready);
    j.integer("joined", joined);
    fmt::print("{}\n", j.text());
    return 1;
  }
  std::int64_t settle = now_ns() + 1'000'000'000;
  while (now_ns() < settle) loop.run_once(20);

  std::vector<Conn*> clients;
  for (auto& c : f.conns)
    if (!c->dead() && c->phase() == Phase::ready) clients.push_back(c.get());
  const long C = long(clients.size());
  const long S = std::max(1L, std::min<long>(o.senders, C));
  std::string pad(std::size_t(std::max(0, o.body_bytes)), 'x');
  auto message = [&](long seq) {
    return fmt::format("<message to='{}' type='groupchat' id='g{}'><body>t={} seq={} {}</body></message>", room, seq,
                       now_ns(), seq, pad);
  };
  const long expected = long(o.messages) * C;
  double cpu0 = bench::own_cpu_seconds(), scpu0 = bench::process_cpu_seconds(o.server_pid);
  std::int64_t t0 = now_ns();
  long sent = 0;
  if (o.rate <= 0) {
    long per = o.messages / S, extra = o.messages % S;
    for (long i = 0; i < S; ++i) {
      std::string batch;
      long n = per + (i < extra ? 1 : 0);
      for (long k = 0; k < n; ++k) batch += message(sent++);
      clients[std::size_t(i)]->send(batch);
    }
  }
  std::int64_t send_deadline = t0 + std::int64_t(o.max_seconds * 1e9);
  std::int64_t last_progress = now_ns();
  long last_received = 0;
  while (received + errors < expected) {
    std::int64_t now = now_ns();
    if (o.rate > 0 && sent < o.messages) {
      long due = std::min<long>(o.messages, long((now - t0) / 1e9 * o.rate) + 1);
      for (; sent < due; ++sent) clients[std::size_t(sent % S)]->send(message(sent));
    }
    if (received != last_received) {
      last_received = received;
      last_progress = now;
    }
    // A slow server may take longer than this before its first delivery (Prosody took
    // 20-30 s under the 500-occupant burst): 60 s without progress ends the run.
    if (sent >= o.messages && now - last_progress > 60'000'000'000) break;
    if (now > send_deadline) break;
    loop.run_once(o.rate > 0 ? 1 : 20);
  }
  double wall = ((last_recv ? last_recv : now_ns()) - t0) / 1e9;
  double cpu = bench::own_cpu_seconds() - cpu0, scpu = bench::process_cpu_seconds(o.server_pid) - scpu0;
  Json j;
  common_json(j, o, loop.stats);
  j.integer("clients", C);
  j.integer("senders", S);
  j.integer("sent", sent);
  j.integer("expected", long(sent) * C);
  j.integer("received", received);
  j.integer("error_replies", errors);
  j.integer("lost", long(sent) * C - received);
  j.integer("disconnected", f.gone);
  j.integer("presences_seen", presences);
  j.num("join_s", join_s);
  j.num("join_server_cpu_s", join_cpu);
  j.integer("rss_kib_joined", rss_joined);
  if (o.rate > 0) j.num("rate_target", o.rate);
  j.num("wall_s", wall);
  j.num("per_s", wall > 0 ? received / wall : 0);
  j.num("sent_per_s", wall > 0 ? sent / wall : 0);
  auto p = percentiles(lat);
  j.num("p50_ms", p.p50);
  j.num("p99_ms", p.p99);
  j.num("max_ms", p.max);
  j.num("client_cpu_s", cpu);
  j.num("server_cpu_s", scpu);
  if (received > 0) j.num("server_cpu_us_per_op", scpu / double(received) * 1e6);
  if (sent > 0) j.num("server_cpu_us_per_sent", scpu / double(sent) * 1e6);
  fmt::print("{}\n", j.text());
  return received == long(sent) * C && sent == o.messages ? 0 : 1;
}

int run_idle(Loop& loop, const Options& o) {
  Fleet f;
  std::int64_t deadline = now_ns() + std::int64_t(o.max_seconds * 1e9);
  loop.on_ready = [&](Conn& c) {
    --f.inflight;
    ++f.ready;
    c.send("<presence/>");
  };
  loop.on_gone = [&](Conn& c) {
    if (c.phase() != Phase::ready) --f.inflight;
    ++f.gone;
  };
  long idle_rss = bench::process_rss_kib(o.server_pid);
  Json j;
  common_json(j, o, loop.stats);
  j.integer("idle_rss_kib", idle_rss);
  int rc = 0;
  double cpu0 = bench::own_cpu_seconds(), scpu0 = bench::process_cpu_seconds(o.server_pid);
  std::int64_t t0 = now_ns();
  for (int target : o.conns) {
    connect_fleet(loop, o, f, target, "i", deadline);
    long alive = f.ready - f.gone;
    if (f.ready < target) {
      fmt::print(stderr, "xmppload: only {} of {} idle connections\n", f.ready, target);
      j.integer(fmt::format("connected_{}", target), f.ready);
      rc = 1;
      break;
    }
    if (target == o.conns.front()) {
      double wall = (now_ns() - t0) / 1e9;
      j.num("login_per_s", f.ready / wall);
    }
    std::int64_t settle = now_ns() + std::int64_t(o.settle_seconds * 1e9);
    while (now_ns() < settle) loop.run_once(50);
    long rss = bench::process_rss_kib(o.server_pid);
    alive = f.ready - (f.gone - 0);
    j.integer(fmt::format("rss_kib_{}", target), rss);
    j.integer(fmt::format("alive_{}", target), alive);
    j.num(fmt::format("per_conn_kib_{}", target), double(rss - idle_rss) / double(target));
    fmt::print(stderr, "xmppload: {} connections: server RSS {} KiB ({:.1f} KiB each)\n", target, rss,
               double(rss - idle_rss) / double(target));
  }
  double cpu = bench::own_cpu_seconds() - cpu0, scpu = bench::process_cpu_seconds(o.server_pid) - scpu0;
  j.integer("disconnected", f.gone);
  j.num("client_cpu_s", cpu);
  j.num("server_cpu_s", scpu);
  if (f.ready > 0) j.num("server_cpu_us_per_op", scpu / double(f.ready) * 1e6);
  fmt::print("{}\n", j.text());
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  Loop loop(o);
  if (!o.scram_cache.empty()) loop.scram.load(o.scram_cache);
  std::size_t cached = loop.scram.size();
  int rc = 0;
  if (o.workload == "login" || o.workload == "register") {
    rc = run_logins(loop, o);
  } else if (o.workload == "messages") {
    rc = run_messages(loop, o);
  } else if (o.workload == "muc") {
    rc = run_muc(loop, o);
  } else if (o.workload == "idle") {
    if (!o.conns.empty() && rlim_t(o.conns.back()) + 64 > rl.rlim_cur)
      fmt::print(stderr, "xmppload: open-file limit {} is below {} connections\n", rl.rlim_cur, o.conns.back());
    rc = run_idle(loop, o);
  } else {
    usage("unknown workload");
  }
  if (!o.scram_cache.empty() && loop.scram.size() != cached) loop.scram.save(o.scram_cache);
  return rc;
}
