// In-process HttpServer tests: the server listens on 127.0.0.1 port 0 and the tests talk to
// it over raw sockets (and OpenSSL for TLS). Waits use deadlines on conditions; socket
// reads time out after 10 s so a broken server fails a test instead of hanging it.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
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

class CaptureSink : public LogSink {
 public:
  void write_line(std::string_view line) override {
    std::lock_guard lock(mutex_);
    lines_.emplace_back(line);
  }
  int count(std::string_view event) const {
    std::lock_guard lock(mutex_);
    int n = 0;
    std::string needle = "event=" + std::string(event);
    for (const auto& l : lines_) {
      auto at = l.find(needle);
      if (at == std::string::npos) continue;
      auto after = at + needle.size();
      if (after == l.size() || l[after] == ' ' || l[after] == '\n') ++n;
    }
    return n;
  }
  std::string dump() const {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& l : lines_) out += l;
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

// A blocking test client over a raw socket, optionally with TLS.
class Client {
 public:
  ~Client() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  static int make_socket(const std::string& bind_ip = {}) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!bind_ip.empty()) {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      ::inet_pton(AF_INET, bind_ip.c_str(), &a.sin_addr);
      ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    return fd;
  }

  static bool connect_fd(int fd, int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    return ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }

  static std::unique_ptr<Client> connect(int port, const std::string& bind_ip = {}) {
    auto c = std::make_unique<Client>();
    c->fd_ = make_socket(bind_ip);
    if (!connect_fd(c->fd_, port)) return nullptr;
    return c;
  }

  static std::unique_ptr<Client> adopt(int fd) {
    auto c = std::make_unique<Client>();
    c->fd_ = fd;
    return c;
  }

  bool start_tls(const std::string& sni, const std::vector<std::string>& alpn) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
    std::string wire;
    for (const auto& p : alpn) {
      wire += static_cast<char>(p.size());
      wire += p;
    }
    if (!wire.empty())
      SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                          static_cast<unsigned>(wire.size()));
    return SSL_connect(ssl_) == 1;
  }

  std::string alpn() const {
    const unsigned char* p = nullptr;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl_, &p, &n);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
  }
  bool peer_certificate_names(const std::string& host) const {
    X509* x = SSL_get1_peer_certificate(ssl_);
    if (!x) return false;
    bool ok = X509_check_host(x, host.c_str(), 0, 0, nullptr) == 1;
    X509_free(x);
    return ok;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      long n = ssl_ ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                    : ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads more into the buffer; false on EOF, reset or timeout.
  bool fill() {
    char chunk[16384];
    long n = ssl_ ? SSL_read(ssl_, chunk, sizeof chunk) : ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<std::size_t>(n));
    return true;
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
      char chunk[4096];
      long n = ssl_ ? SSL_read(ssl_, chunk, sizeof chunk) : ::recv(fd_, chunk, sizeof chunk, 0);
      if (n == 0) return true;
      if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
    }
  }

  std::string& buffer() { return buf_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string header(const std::string& name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return v;
    return {};
  }
  bool has(const std::string& name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return true;
    return false;
  }
};

// `head_only`: the answer to a HEAD request (headers, no body whatever Content-Length says).
std::optional<Response> read_response(Client& c, bool head_only = false) {
  auto& buf = c.buffer();
  std::size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos)
    if (!c.fill()) return std::nullopt;
  std::string head = buf.substr(0, end);
  buf.erase(0, end + 4);
  Response r;
  std::size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12) return std::nullopt;
  r.status = std::stoi(status_line.substr(9, 3));
  std::size_t pos = line_end;
  while (pos != std::string::npos && pos < head.size()) {
    std::size_t start = pos + 2;
    std::size_t next = head.find("\r\n", start);
    std::string line = head.substr(start, next == std::string::npos ? std::string::npos : next - start);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers.emplace_back(name, value);
    }
    pos = next;
  }
  if (r.status == 101 || head_only) return r;
  std::size_t length = r.has("content-length") ? std::stoul(r.header("content-length")) : 0;
  if (!c.read_exact(length, r.body)) return std::nullopt;
  return r;
}

std::string request(const std::string& method, const std::string& target, const std::string& extra = {},
                    const std::string& body = {}) {
  std::string out = method + " " + target + " HTTP/1.1\r\nHost: example.test:8008\r\n" + extra;
  if (!body.empty()) out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return out + "\r\n" + body;
}

ServerOptions test_options() {
  ServerOptions o;
  o.shards = 2;
  o.worker_threads = 2;
  o.requests_per_second_per_ip = 0;
  o.idle_timeout_seconds = 30;
  o.drain_seconds = 10;
  return o;
}

void add_basic_routes(Router& r) {
  r.add("GET", "/hello", [](HttpRequest&& req, Respond respond) {
    respond(HttpResponse::text(200, "hello"));
  });
  r.add("POST", "/echo", [](HttpRequest&& req, Respond respond) {
    respond(HttpResponse::text(200, req.body));
  });
}

// A server on 127.0.0.1:0 running on a background thread.
class TestServer {
 public:
  explicit TestServer(Router router, ServerOptions options = test_options(),
                      std::vector<TlsIdentity> identities = {}, std::vector<ListenerSpec> extra = {})
      : sink_(std::make_shared<CaptureSink>()), log_(sink_, LogLevel::debug, LogFormat::text) {
    auto created = HttpServer::create(options, std::move(router), std::move(identities), log_, metrics_);
    if (!created) {
      ADD_FAILURE() << created.error().describe();
      return;
    }
    server_ = std::move(*created);
    std::vector<ListenerSpec> specs{{"127.0.0.1", 0, false}};
    for (auto& e : extra) specs.push_back(e);
    auto bound = server_->listen(specs);
    if (!bound) {
      ADD_FAILURE() << bound.error().describe();
      return;
    }
    port_ = (*bound)[0].port;
    if (bound->size() > 1) tls_port_ = (*bound)[1].port;
    thread_ = std::thread([this] {
      server_->run();
      returned_ = true;
    });
  }
  ~TestServer() { stop(); }

  void request_stop() { server_->stop(); }
  void stop() {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }

  HttpServer& server() { return *server_; }
  int port() const { return port_; }
  int tls_port() const { return tls_port_; }
  bool returned() const { return returned_; }
  CaptureSink& log() { return *sink_; }
  MetricsRegistry& metrics() { return metrics_; }

 private:
  std::shared_ptr<CaptureSink> sink_;
  Logger log_;
  MetricsRegistry metrics_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::atomic<bool> returned_{false};
  int port_ = 0;
  int tls_port_ = 0;
};

std::optional<Response> get(int port, const std::string& path, const std::string& bind_ip = {}) {
  auto c = Client::connect(port, bind_ip);
  if (!c || !c->send(request("GET", path))) return std::nullopt;
  return read_response(*c);
}

// Handlers that keep their Respond until the test releases them.
struct HeldRequests {
  std::mutex mutex;
  std::vector<Respond> held;
  HttpHandler handler() {
    return [this](HttpRequest&&, Respond respond) {
      std::lock_guard lock(mutex);
      held.push_back(std::move(respond));
    };
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return held.size();
  }
  void release_all(int status = 200) {
    std::vector<Respond> out;
    {
      std::lock_guard lock(mutex);
      out.swap(held);
    }
    for (auto& r : out) r(HttpResponse::text(status, "released"));
  }
};

// ---------------------------------------------------------------------------------------

TEST(HttpServer, ParsesRequestAndSetsStandardHeaders) {
  Router router;
  router.add("GET", "/inspect/x%20y", [](HttpRequest&& req, Respond respond) {
    std::string out = req.method + "|" + req.target + "|" + req.path + "|" + req.query + "|" +
                      std::string(req.header("x-custom")) + "|" + req.remote_ip + "|" + req.server_name +
                      "|" + (req.tls ? "tls" : "plain");
    HttpResponse r = HttpResponse::json(200, "{}");
    r.headers.emplace_back("X-Out", out);
    r.headers.emplace_back("X-Evil", "a\r\nInjected: 1");
    respond(std::move(r));
  });
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(request("GET", "/inspect/x%20y?a=1&b=2", "X-Custom: Value\r\n")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("x-out"), "GET|/inspect/x%20y?a=1&b=2|/inspect/x%20y|a=1&b=2|Value|127.0.0.1|example.test|plain");
  EXPECT_EQ(r->header("server"), "hearth");
  EXPECT_EQ(r->header("content-length"), "2");
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_FALSE(r->has("x-evil"));
  EXPECT_FALSE(r->has("injected"));
}

// Graceful restart (incident I18): the successor serves on the predecessor's socket, and a
// connection made while neither accepts waits in the backlog instead of being refused.
TEST(HttpServer, SuccessorAdoptsListeningSocketsAndConnectionsWaitInBetween) {
  Router old_routes;
  old_routes.add("GET", "/who", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "old")); });
  TestServer old_server(std::move(old_routes));
  auto sockets = old_server.server().listening_sockets();
  ASSERT_EQ(sockets.size(), 1u);
  EXPECT_EQ(sockets[0].kind, "http");
  EXPECT_EQ(sockets[0].address, "127.0.0.1");
  EXPECT_EQ(sockets[0].port, old_server.port());
  old_server.stop();  // drains and closes its own descriptor only

  auto waiting = Client::connect(old_server.port());
  ASSERT_TRUE(waiting) << "refused between the two servers";
  ASSERT_TRUE(waiting->send(request("GET", "/who")));

  Logger log(LogLevel::error, LogFormat::text);
  MetricsRegistry metrics;
  Router new_routes;
  new_routes.add("GET", "/who", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "new")); });
  auto successor = HttpServer::create(test_options(), std::move(new_routes), {}, log, metrics);
  ASSERT_TRUE(successor);
  (*successor)->adopt(std::move(sockets));
  auto bound = (*successor)->listen({{"127.0.0.1", 0, false}});
  ASSERT_TRUE(bound) << bound.error().describe();
  EXPECT_EQ((*bound)[0].port, old_server.port());
  std::thread runner([&] { (*successor)->run(); });
  auto r = read_response(*waiting);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "new");
  (*successor)->stop();
  runner.join();
}

TEST(HttpServer, KeepAliveServesSeveralRequestsThenHonoursConnectionClose) {
  Router router;
  add_basic_routes(router);
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c->send(request("GET", "/hello")));
    auto r = read_response(*c);
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello");
  }
  // Two pipelined requests, the second asking to close.
  ASSERT_TRUE(c->send(request("GET", "/hello") + request("GET", "/hello", "Connection: close\r\n")));
  ASSERT_TRUE(read_response(*c));
  auto last = read_response(*c);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->header("connection"), "close");
  EXPECT_TRUE(c->wait_closed());
}

TEST(HttpServer, HeadAnswersCarryTheLengthButNoBody) {
  Router router;
  add_basic_routes(router);
  router.add("HEAD", "/hello", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "hello")); });
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  // Pipelined: if the HEAD answer carried a body, it would be read as the GET's status line.
  ASSERT_TRUE(c->send(request("HEAD", "/hello") + request("GET", "/hello")));
  auto head = read_response(*c, true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"), "5");
  auto get = read_response(*c);
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "hello");
}

TEST(HttpServer, FileBodiesAreSentWholeOrByRange) {
  std::string path = (std::filesystem::temp_directory_path() / ("hearth-file-body-" + std::to_string(::getpid()))).string();
  std::string content;
  for (int i = 0; i < 200'000; ++i) content += static_cast<char>('a' + i % 26);
  {
    std::ofstream out(path, std::ios::binary);
    out << content;
  }
  Router router;
  auto serve = [path](HttpRequest&&, Respond respond) {
    HttpResponse r;
    r.content_type = "application/octet-stream";
    r.body_file = path;
    respond(std::move(r));
  };
  router.add("GET", "/file", serve);
  router.add("HEAD", "/file", serve);
  router.add("GET", "/missing", [path](HttpRequest&&, Respond respond) {
    HttpResponse r;
    r.body_file = path + ".gone";
    respond(std::move(r));
  });
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  // One keep-alive connection: each answer must end exactly where its length says.
  ASSERT_TRUE(c->send(request("GET", "/file") + request("GET", "/file", "Range: bytes=70000-70009\r\n") +
                      request("GET", "/file", "Range: bytes=-3\r\n") +
                      request("GET", "/file", "Range: bytes=200000-\r\n") + request("HEAD", "/file") +
                      request("GET", "/missing")));
  auto whole = read_response(*c);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->status, 200);
  EXPECT_EQ(whole->header("accept-ranges"), "bytes");
  EXPECT_TRUE(whole->body == content) << whole->body.size();
  auto part = read_response(*c);
  ASSERT_TRUE(part);
  EXPECT_EQ(part->status, 206);
  EXPECT_EQ(part->header("content-range"), "bytes 70000-70009/200000");
  EXPECT_EQ(part->body, content.substr(70000, 10));
  auto tail = read_response(*c);
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail->status, 206);
  EXPECT_EQ(tail->body, content.substr(200000 - 3));
  auto past = read_response(*c);
  ASSERT_TRUE(past);
  EXPECT_EQ(past->status, 416);
  EXPECT_EQ(past->header("content-range"), "bytes */200000");
  auto head = read_response(*c, true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"), "200000");
  auto missing = read_response(*c);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  std::filesystem::remove(path);
}

TEST(HttpServer, UnknownPathIs404JsonAndWrongMethodIs405WithAllow) {
  Router router;
  add_basic_routes(router);
  router.add("PUT", "/hello", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "")); });
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(request("GET", "/nope")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(r->body, R"({"error":"not found"})");
  ASSERT_TRUE(c->send(request("DELETE", "/hello")));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->header("allow"), "GET, PUT");
}

TEST(HttpServer, ReadsContentLengthAndChunkedBodies) {
  Router router;
  add_basic_routes(router);
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(request("POST", "/echo", "", "ping-body")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "ping-body");
  ASSERT_TRUE(c->send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "abcdefg");
  // Expect: 100-continue gets an interim response before the body is sent.
  ASSERT_TRUE(c->send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 100);
  ASSERT_TRUE(c->send("ok"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "ok");
}

TEST(HttpServer, MalformedRequestGets400AndIsClosed) {
  Router router;
  add_basic_routes(router);
  TestServer s(std::move(router));
  for (std::string bad : {"GARBAGE\r\n\r\n", "GET /hello HTTP/1.1\r\nBad Header Line\r\n\r\n",
                          "GET /hello HTTP/9.9\r\n\r\n",
                          "POST /echo HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n"}) {
    auto c = Client::connect(s.port());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->send(bad));
    auto r = read_response(*c);
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(c->wait_closed());
  }
  EXPECT_TRUE(get(s.port(), "/hello"));  // still serving
}

TEST(HttpServer, OversizedHeaderGets431AndIsClosed) {
  Router router;
  add_basic_routes(router);
  ServerOptions o = test_options();
  o.max_header_bytes = 1024;
  TestServer s(std::move(router), o);
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(request("GET", "/hello", "X-Big: " + std::string(2000, 'a') + "\r\n")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(c->wait_closed());
}

TEST(HttpServer, OversizedBodyGets413BeforeItIsRead) {
  Router router;
  add_basic_routes(router);
  RouteOptions small;
  small.max_body_bytes = 4;
  router.add("POST", "/small", [](HttpRequest&& req, Respond respond) { respond(HttpResponse::text(200, req.body)); },
             small);
  ServerOptions o = test_options();
  o.max_body_bytes = 100;
  TestServer s(std::move(router), o);

  // Declared length over the server default: answered without sending the body.
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c->send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c->wait_closed());

  // The route's own limit.
  c = Client::connect(s.port());
  ASSERT_TRUE(c->send(request("POST", "/small", "", "12345")));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c->wait_closed());
  c = Client::connect(s.port());
  ASSERT_TRUE(c->send(request("POST", "/small", "", "1234")));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  // Chunked bodies have no declared length: the parser's limit catches them.
  c = Client::connect(s.port());
  std::string chunk(80, 'z');
  ASSERT_TRUE(c->send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n" + chunk +
                      "\r\n50\r\n" + chunk + "\r\n0\r\n\r\n"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << s.log().dump();
  EXPECT_TRUE(c->wait_closed());

  auto metrics = s.metrics().render();
  EXPECT_NE(metrics.find("hearth_http_rejected_total{reason=\"body_too_large\"} 3"), std::string::npos) << metrics;
}

// Routes with body_staging_dir: the body goes to a file the handler reads; checks come
// before the body; whatever is refused or cut short leaves no file behind.
TEST(HttpServer, StreamedBodiesAreStagedInFilesAfterTheirChecks) {
  auto dir = std::filesystem::temp_directory_path() / ("hearth-stream-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto staged_files = [&] {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
    return n;
  };
  std::atomic<int> handled{0};
  Router router;
  RouteOptions streamed;
  streamed.blocking = true;
  streamed.max_body_bytes = 1000;
  streamed.body_staging_dir = dir.string();
  streamed.check_body = [](const HttpRequest& head) {
    BodyAdmission a;
    if (!head.header("x-refuse").empty()) a.refuse = HttpResponse::text(403, "refused");
    if (auto l = head.header("x-limit"); !l.empty()) a.limit = std::stoll(std::string(l));
    return a;
  };
  router.add("PUT", "/up", [&handled](HttpRequest&& req, Respond respond) {
    ++handled;
    std::string content;
    if (FILE* f = std::fopen(req.body_file.c_str(), "rb")) {
      char buf[256];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) content.append(buf, n);
      std::fclose(f);
    }
    respond(HttpResponse::text(200, std::to_string(req.body_file_bytes) + ":" + content + ":" + req.body));
  }, streamed);
  TestServer s(std::move(router));

  auto c = Client::connect(s.port());
  ASSERT_TRUE(c->send(request("PUT", "/up", "", "hello")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "5:hello:");  // in the file, not in `body`
  ASSERT_TRUE(c->send("PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "7:abcdefg:");
  // Expect: 100-continue is answered once the checks passed.
  ASSERT_TRUE(c->send("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 100);
  ASSERT_TRUE(c->send("ok"));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "2:ok:");
  EXPECT_TRUE(wait_until([&] { return staged_files() == 0; }));

  struct Case {
    std::string wire;
    int status;
  };
  std::vector<Case> refused = {
      {"PUT /up HTTP/1.1\r\nHost: x\r\n\r\n", 411},                                           // no length
      {"PUT /up HTTP/1.1\r\nHost: x\r\nX-Refuse: 1\r\nContent-Length: 3\r\n\r\nabc", 403},    // check_body
      {"PUT /up HTTP/1.1\r\nHost: x\r\nX-Limit: 2\r\nContent-Length: 3\r\n\r\nabc", 413},     // its limit
      {"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413},                   // the route's
      {"PUT /up HTTP/1.1\r\nHost: x\r\nX-Limit: 5\r\nTransfer-Encoding: chunked\r\n\r\n"      // chunked past it
       "4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", 413},
  };
  for (const auto& k : refused) {
    c = Client::connect(s.port());
    ASSERT_TRUE(c->send(k.wire));
    r = read_response(*c);
    ASSERT_TRUE(r) << k.wire;
    EXPECT_EQ(r->status, k.status) << k.wire;
    EXPECT_TRUE(c->wait_closed()) << k.wire;
  }
  EXPECT_EQ(handled.load(), 3);
  // Shorter than declared: the client goes away mid-body; the handler never runs.
  c = Client::connect(s.port());
  ASSERT_TRUE(c->send("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n0123456789"));
  EXPECT_TRUE(wait_until([&] { return staged_files() == 1; }));
  c.reset();
  EXPECT_TRUE(wait_until([&] { return staged_files() == 0; })) << s.log().dump();
  EXPECT_EQ(handled.load(), 3);
  EXPECT_TRUE(get(s.port(), "/up"));  // still serving
  std::filesystem::remove_all(dir);
}

TEST(HttpServer, IdleKeepAliveConnectionIsClosed) {
  Router router;
  add_basic_routes(router);
  ServerOptions o = test_options();
  o.idle_timeout_seconds = 1;
  TestServer s(std::move(router), o);
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c->send(request("GET", "/hello")));
  ASSERT_TRUE(read_response(*c));
  EXPECT_TRUE(c->wait_closed());
}

TEST(HttpServer, RespondFromAnotherThreadDroppedAndThrowingHandlers) {
  Router router;
  router.add("GET", "/async", [](HttpRequest&&, Respond respond) {
    std::thread([respond] { respond(HttpResponse::text(202, "later")); }).detach();
  });
  router.add("GET", "/twice", [](HttpRequest&&, Respond respond) {
    respond(HttpResponse::text(200, "first"));
    respond(HttpResponse::text(500, "second"));
  });
  router.add("GET", "/drop", [](HttpRequest&&, Respond) {});
  router.add("GET", "/throw", [](HttpRequest&&, Respond) { throw std::runtime_error("boom"); });
  HeldRequests held;
  router.add("GET", "/hold", held.handler());
  TestServer s(std::move(router));

  auto r = get(s.port(), "/async");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(r->body, "later");
  r = get(s.port(), "/twice");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "first");
  r = get(s.port(), "/drop");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  r = get(s.port(), "/throw");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);

  // Responding after the client went away is harmless.
  {
    auto c = Client::connect(s.port());
    ASSERT_TRUE(c->send(request("GET", "/hold")));
    ASSERT_TRUE(wait_until([&] { return held.count() == 1; }));
  }
  held.release_all();
  r = get(s.port(), "/async");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
}

// ---------------------------------------------------------------------------------------
// Limits.

TEST(HttpServerLimits, PerIpConnectionCapRefusesOnlyThatIp) {
  Router router;
  add_basic_routes(router);
  ServerOptions o = test_options();
  o.max_connections_per_ip = 3;
  TestServer s(std::move(router), o);

  std::vector<std::unique_ptr<Client>> hogs;
  for (int i = 0; i < 3; ++i) {
    hogs.push_back(Client::connect(s.port(), "127.0.0.2"));
    ASSERT_TRUE(hogs.back());
    ASSERT_TRUE(hogs.back()->send(request("GET", "/hello")));
    ASSERT_TRUE(read_response(*hogs.back()));  // the connection is established server-side
  }
  auto extra = Client::connect(s.port(), "127.0.0.2");
  ASSERT_TRUE(extra);
  auto r = read_response(*extra);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("retry-after"), "1");
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(extra->wait_closed());

  r = get(s.port(), "/hello", "127.0.0.1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  // Closing one frees a slot for that IP again.
  hogs.pop_back();
  EXPECT_TRUE(wait_until([&] {
    auto again = get(s.port(), "/hello", "127.0.0.2");
    return again && again->status == 200;
  }));
  EXPECT_NE(s.metrics().render().find("hearth_http_rejected_total{reason=\"ip_cap\"}"), std::string::npos);
}

TEST(HttpServerLimits, GlobalConnectionCap) {
  Router router;
  add_basic_routes(router);
  ServerOptions o = test_options();
  o.max_connections = 2;
  TestServer s(std::move(router), o);
  std::vector<std::unique_ptr<Client>> open;
  for (const char* ip : {"127.0.0.3", "127.0.0.4"}) {
    open.push_back(Client::connect(s.port(), ip));
    ASSERT_TRUE(open.back()->send(request("GET", "/hello")));
    ASSERT_TRUE(read_response(*open.back()));
  }
  auto r = get(s.port(), "/hello", "127.0.0.5");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(s.metrics().counter("hearth_http_rejected_total", "", {{"reason", "connection_cap"}}).value(), 1u);
}

TEST(HttpServerLimits, RateLimitAnswers429WithRetryAfter) {
  Router router;
  add_basic_routes(router);
  RouteOptions exempt;
  exempt.exempt_from_rate_limit = true;
  router.add("GET", "/free", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "free")); },
             exempt);
  ServerOptions o = test_options();
  o.requests_per_second_per_ip = 0.01;  // no refill during the test
  o.request_burst_per_ip = 3;
  TestServer s(std::move(router), o);
  auto c = Client::connect(s.port());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c->send(request("GET", "/hello")));
    auto r = read_response(*c);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << i;
  }
  ASSERT_TRUE(c->send(request("GET", "/hello")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_GE(std::stoi(r->header("retry-after")), 1);
  // Same connection keeps working for exempt routes; other IPs are unaffected.
  ASSERT_TRUE(c->send(request("GET", "/free")));
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = get(s.port(), "/hello", "127.0.0.6");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServerLimits, AdmissionRejectsPastInflightBoundAtOnce) {
  Router router;
  HeldRequests held;
  router.add("GET", "/hold", held.handler());
  RouteOptions exempt;
  exempt.exempt_from_admission = true;
  router.add("GET", "/health", [](HttpRequest&&, Respond respond) { respond(HttpResponse::text(200, "ok")); },
             exempt);
  ServerOptions o = test_options();
  o.max_inflight_requests = 2;
  TestServer s(std::move(router), o);

  std::vector<std::unique_ptr<Client>> waiting;
  for (int i = 0; i < 2; ++i) {
    waiting.push_back(Client::connect(s.port()));
    ASSERT_TRUE(waiting.back()->send(request("GET", "/hold")));
  }
  ASSERT_TRUE(wait_until([&] { return held.count() == 2; }));

  auto r = get(s.port(), "/hold");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("retry-after"), "1");
  EXPECT_EQ(held.count(), 2u);  // never queued
  r = get(s.port(), "/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  held.release_all();
  for (auto& c : waiting) {
    auto done = read_response(*c);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status, 200);
  }
  // Slots are free again.
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c->send(request("GET", "/hold")));
  ASSERT_TRUE(wait_until([&] { return held.count() == 1; }));
  held.release_all();
  r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(s.metrics().counter("hearth_http_rejected_total", "", {{"reason", "admission"}}).value(), 1u);
}

TEST(HttpServerLimits, BlockingRoutesRunOnTheBoundedWorkerPool) {
  std::mutex mutex;
  std::thread::id shard_thread, worker_thread;
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  Router router;
  router.add("GET", "/shard", [&](HttpRequest&&, Respond respond) {
    std::lock_guard lock(mutex);
    shard_thread = std::this_thread::get_id();
    respond(HttpResponse::text(200, ""));
  });
  RouteOptions blocking;
  blocking.blocking = true;
  router.add("GET", "/block", [&](HttpRequest&& req, Respond respond) {
    {
      std::lock_guard lock(mutex);
      worker_thread = std::this_thread::get_id();
    }
    if (req.query == "wait") {
      entered.set_value();
      released.wait();
    }
    respond(HttpResponse::text(200, "blocked"));
  }, blocking);
  ServerOptions o = test_options();
  o.shards = 1;
  o.worker_threads = 1;
  o.worker_queue_depth = 1;
  TestServer s(std::move(router), o);

  ASSERT_TRUE(get(s.port(), "/shard"));
  auto r = get(s.port(), "/block");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "blocked");
  {
    std::lock_guard lock(mutex);
    EXPECT_NE(shard_thread, worker_thread);
  }

  auto busy = Client::connect(s.port());
  ASSERT_TRUE(busy->send(request("GET", "/block?wait")));
  entered.get_future().wait();  // the only worker is busy
  std::atomic<bool> ran{false};
  EXPECT_TRUE(s.server().offload([&] { ran = true; }));  // fills the queue (depth 1)
  EXPECT_FALSE(s.server().offload([] {}));
  r = get(s.port(), "/block");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  release.set_value();
  r = read_response(*busy);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(wait_until([&] { return ran.load(); }));
}

// ---------------------------------------------------------------------------------------
// TLS.

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("hearth-net-tls-" + std::to_string(::getpid()));
    for (std::string d : {"a.test", "b.test"}) {
      TlsIdentity id{d, (dir_ / (d + ".crt")).string(), (dir_ / (d + ".key")).string()};
      auto r = ensure_self_signed_certificate({d}, id.cert_file, id.key_file);
      ASSERT_TRUE(r) << r.error().describe();
      identities_.push_back(id);
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::vector<TlsIdentity> identities_;
};

TEST_F(TlsTest, SniSelectsIdentityAndAlpnIsNegotiated) {
  Router router;
  router.add("GET", "/who", [](HttpRequest&& req, Respond respond) {
    respond(HttpResponse::text(200, std::string(req.tls ? "tls" : "plain") + " " + req.server_name + " " +
                                        (req.alpn.empty() ? "-" : req.alpn)));
  });
  ListenerSpec tls{"127.0.0.1", 0, true, {"xmpp-client", "http/1.1"}};
  TestServer s(std::move(router), test_options(), identities_, {tls});
  ASSERT_NE(s.tls_port(), 0);

  struct Case {
    std::string sni;
    std::vector<std::string> alpn;
    std::string cert_name, body;
  };
  for (const Case& k : {Case{"b.test", {"h2", "http/1.1"}, "b.test", "tls b.test http/1.1"},
                        Case{"a.test", {"xmpp-client", "http/1.1"}, "a.test", "tls a.test xmpp-client"},
                        Case{"unknown.test", {"foo"}, "a.test", "tls unknown.test -"},
                        Case{"", {}, "a.test", "tls example.test -"}}) {
    auto c = Client::connect(s.tls_port());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->start_tls(k.sni, k.alpn)) << k.sni;
    EXPECT_TRUE(c->peer_certificate_names(k.cert_name)) << k.sni;
    ASSERT_TRUE(c->send(request("GET", "/who")));
    auto r = read_response(*c);
    ASSERT_TRUE(r) << k.sni;
    EXPECT_EQ(r->body, k.body);
  }
}

TEST_F(TlsTest, BadCertificateFileIsAnErrorValue) {
  Logger log;
  MetricsRegistry metrics;
  auto r = HttpServer::create(test_options(), Router{}, {{"x.test", "/nonexistent.crt", "/nonexistent.key"}}, log,
                              metrics);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
}

// ---------------------------------------------------------------------------------------
// WebSocket.

struct Frame {
  int opcode = -1;
  std::string payload;
  int close_code() const {
    return payload.size() >= 2 ? (static_cast<unsigned char>(payload[0]) << 8) | static_cast<unsigned char>(payload[1])
                               : -1;
  }
};

bool ws_handshake(Client& c, const std::string& path) {
  if (!c.send("GET " + path +
              " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
    return false;
  auto r = read_response(c);
  return r && r->status == 101 && r->header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
}

bool ws_send(Client& c, int opcode, const std::string& payload) {
  std::string f;
  f += static_cast<char>(0x80 | opcode);
  if (payload.size() < 126) {
    f += static_cast<char>(0x80 | payload.size());
  } else if (payload.size() < 65536) {
    f += static_cast<char>(0x80 | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xff);
  } else {
    f += static_cast<char>(0x80 | 127);
    for (int i = 7; i >= 0; --i) f += static_cast<char>((payload.size() >> (8 * i)) & 0xff);
  }
  const char mask[4] = {0x11, 0x22, 0x33, 0x44};
  f.append(mask, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f += static_cast<char>(payload[i] ^ mask[i % 4]);
  return c.send(f);
}

std::optional<Frame> ws_read(Client& c) {
  std::string head;
  if (!c.read_exact(2, head)) return std::nullopt;
  Frame f;
  f.opcode = head[0] & 0x0f;
  std::uint64_t len = head[1] & 0x7f;
  std::string ext;
  if (len == 126) {
    if (!c.read_exact(2, ext)) return std::nullopt;
    len = (static_cast<unsigned char>(ext[0]) << 8) | static_cast<unsigned char>(ext[1]);
  } else if (len == 127) {
    if (!c.read_exact(8, ext)) return std::nullopt;
    len = 0;
    for (char ch : ext) len = (len << 8) | static_cast<unsigned char>(ch);
  }
  if (!c.read_exact(len, f.payload)) return std::nullopt;
  return f;
}

// Reads frames until a close frame; returns its code (-1 if the connection ended first).
int ws_read_close(Client& c) {
  for (;;) {
    auto f = ws_read(c);
    if (!f) return -1;
    if (f->opcode == 8) return f->close_code();
  }
}

struct WsState {
  std::mutex mutex;
  std::shared_ptr<WebSocketConnection> connection;
  std::string path_seen;
  std::atomic<int> closes{0};
  std::shared_ptr<WebSocketConnection> get() {
    std::lock_guard lock(mutex);
    return connection;
  }
};

Router ws_router(WsState& state, std::size_t max_message = 1024) {
  Router router;
  router.websocket(
      "/ws",
      [&state](std::shared_ptr<WebSocketConnection> conn, const HttpRequest& req) {
        {
          std::lock_guard lock(state.mutex);
          state.connection = conn;
          state.path_seen = req.path + " " + conn->remote_ip();
        }
        WebSocketCallbacks cb;
        std::weak_ptr<WebSocketConnection> weak = conn;
        cb.on_message = [weak](std::string_view m, bool binary) {
          auto c = weak.lock();
          if (!c) return;
          if (m == "big") c->send(std::string(4096, 'x'));
          else if (m == "bye") c->close(1000, "bye");
          else c->send("echo:" + std::string(m), binary);
        };
        cb.on_close = [&state] { ++state.closes; };
        return cb;
      },
      max_message);
  return router;
}

TEST(WebSocket, EchoesTextAndBinaryAnswersPingAndClosesOnce) {
  WsState state;
  TestServer s(ws_router(state));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(ws_handshake(*c, "/ws"));
  {
    std::lock_guard lock(state.mutex);
    EXPECT_EQ(state.path_seen, "/ws 127.0.0.1");
  }
  ASSERT_TRUE(ws_send(*c, 1, "hi"));
  auto f = ws_read(*c);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->opcode, 1);
  EXPECT_EQ(f->payload, "echo:hi");
  ASSERT_TRUE(ws_send(*c, 2, std::string("\0\1\2", 3)));
  f = ws_read(*c);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->opcode, 2);
  EXPECT_EQ(f->payload, std::string("echo:\0\1\2", 8));
  ASSERT_TRUE(ws_send(*c, 9, "png"));
  f = ws_read(*c);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->opcode, 10);
  EXPECT_EQ(f->payload, "png");

  // Sending from a foreign thread.
  std::thread([&] { state.get()->send("pushed"); }).join();
  f = ws_read(*c);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->payload, "pushed");

  ASSERT_TRUE(ws_send(*c, 8, std::string("\x03\xe8", 2)));
  EXPECT_EQ(ws_read_close(*c), 1000);
  EXPECT_TRUE(c->wait_closed());
  c.reset();
  ASSERT_TRUE(wait_until([&] { return state.closes.load() == 1; }));
  state.get()->send("after close is ignored");
  state.get()->close();
  s.stop();
  EXPECT_EQ(state.closes.load(), 1);
}

TEST(WebSocket, ServerInitiatedClose) {
  WsState state;
  TestServer s(ws_router(state));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(ws_handshake(*c, "/ws"));
  ASSERT_TRUE(ws_send(*c, 1, "bye"));
  EXPECT_EQ(ws_read_close(*c), 1000);
  ASSERT_TRUE(ws_send(*c, 8, std::string("\x03\xe8", 2)));
  EXPECT_TRUE(c->wait_closed());
  c.reset();
  EXPECT_TRUE(wait_until([&] { return state.closes.load() == 1; }));
}

TEST(WebSocket, OversizedMessageClosesWith1009) {
  WsState state;
  TestServer s(ws_router(state, 1024));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(ws_handshake(*c, "/ws"));
  ASSERT_TRUE(ws_send(*c, 1, std::string(2000, 'a')));
  EXPECT_EQ(ws_read_close(*c), 1009);
  EXPECT_TRUE(wait_until([&] { return state.closes.load() == 1; }));
}

TEST(WebSocket, OutgoingQueueOverBudgetClosesWith1008) {
  WsState state;
  ServerOptions o = test_options();
  o.websocket_max_queued_bytes = 1024;
  TestServer s(ws_router(state), o);
  auto c = Client::connect(s.port());
  ASSERT_TRUE(ws_handshake(*c, "/ws"));
  ASSERT_TRUE(ws_send(*c, 1, "big"));
  EXPECT_EQ(ws_read_close(*c), 1008);
  ASSERT_TRUE(ws_send(*c, 8, std::string("\x03\xf0", 2)));
  EXPECT_TRUE(c->wait_closed());
  c.reset();
  EXPECT_TRUE(wait_until([&] { return state.closes.load() == 1; }));
}

TEST(WebSocket, PlainRequestOnWebSocketPathGets426) {
  WsState state;
  TestServer s(ws_router(state));
  auto r = get(s.port(), "/ws");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 426);
}

// ---------------------------------------------------------------------------------------
// Stop and drain.

TEST(HttpServerDrain, StopFinishesInflightRefusesNewAndClosesIdle) {
  Router router;
  add_basic_routes(router);
  HeldRequests held;
  router.add("GET", "/hold", held.handler());
  TestServer s(std::move(router));

  auto idle = Client::connect(s.port());
  ASSERT_TRUE(idle->send(request("GET", "/hello")));
  ASSERT_TRUE(read_response(*idle));
  auto busy = Client::connect(s.port());
  ASSERT_TRUE(busy->send(request("GET", "/hold")));
  ASSERT_TRUE(wait_until([&] { return held.count() == 1; }));

  s.request_stop();
  EXPECT_TRUE(idle->wait_closed());
  EXPECT_TRUE(wait_until([&] {
    int fd = Client::make_socket();
    bool refused = !Client::connect_fd(fd, s.port());
    ::close(fd);
    return refused;
  }));
  EXPECT_FALSE(s.returned());  // still waiting for the held request

  held.release_all();
  auto r = read_response(*busy);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(busy->wait_closed());
  EXPECT_TRUE(wait_until([&] { return s.returned(); }));
  EXPECT_GE(s.log().count("http.draining"), 1);
  EXPECT_GE(s.log().count("http.stopped"), 1);
}

TEST(HttpServerDrain, StopClosesWebSocketsWith1001) {
  WsState state;
  TestServer s(ws_router(state));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(ws_handshake(*c, "/ws"));
  s.request_stop();
  EXPECT_EQ(ws_read_close(*c), 1001);
  ASSERT_TRUE(ws_send(*c, 8, std::string("\x03\xe9", 2)));
  EXPECT_TRUE(c->wait_closed());
  c.reset();
  EXPECT_TRUE(wait_until([&] { return s.returned(); }));
  EXPECT_EQ(state.closes.load(), 1);
}

TEST(HttpServerDrain, StopBeforeRunReturnsPromptly) {
  Logger log;
  MetricsRegistry metrics;
  auto server = HttpServer::create(test_options(), Router{}, {}, log, metrics);
  ASSERT_TRUE(server);
  ASSERT_TRUE((*server)->listen({{"127.0.0.1", 0, false}}));
  (*server)->stop();
  (*server)->run();
  SUCCEED();
}

// ---------------------------------------------------------------------------------------
// Listen and accept errors.

TEST(HttpServerListen, AddressInUseIsAnErrorValue) {
  Router router;
  TestServer s(std::move(router));
  Logger log;
  MetricsRegistry metrics;
  auto other = HttpServer::create(test_options(), Router{}, {}, log, metrics);
  ASSERT_TRUE(other);
  auto r = (*other)->listen({{"127.0.0.1", s.port(), false}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::unavailable);
  auto bad = (*other)->listen({{"not an address", 0, false}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::invalid_argument);
  auto no_tls = (*other)->listen({{"127.0.0.1", 0, true}});
  ASSERT_FALSE(no_tls);
}

int highest_open_fd() {
  int highest = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') highest = std::max(highest, std::atoi(e->d_name));
  ::closedir(d);
  return highest;
}

TEST(HttpServerListen, DescriptorExhaustionBacksOffLogsOnceAndRecovers) {
  Router router;
  add_basic_routes(router);
  ServerOptions o = test_options();
  o.shards = 1;
  TestServer s(std::move(router), o);
  Counter& errors = s.metrics().counter("hearth_http_accept_errors_total", "");
  int client = Client::make_socket();

  rlimit original{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &original), 0);
  rlimit low = original;
  low.rlim_cur = static_cast<rlim_t>(highest_open_fd() + 4);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> fillers;
  for (int fd; (fd = ::dup(client)) >= 0;) fillers.push_back(fd);

  bool connected = Client::connect_fd(client, s.port());  // completes in the kernel's backlog
  bool retried = wait_until([&] { return errors.value() >= 3; });

  for (int fd : fillers) ::close(fd);
  ::setrlimit(RLIMIT_NOFILE, &original);
  ASSERT_TRUE(connected);
  ASSERT_TRUE(retried);
  EXPECT_EQ(s.log().count("http.accept_error"), 1);

  auto c = Client::adopt(client);
  ASSERT_TRUE(c->send(request("GET", "/hello")));
  auto r = read_response(*c);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(wait_until([&] { return s.log().count("http.accept_recovered") == 1; })) << s.log().dump();
}

TEST(HttpServerMetrics, RequestsConnectionsAndDurationsAreExported) {
  Router router;
  add_basic_routes(router);
  TestServer s(std::move(router));
  auto c = Client::connect(s.port());
  ASSERT_TRUE(c->send(request("GET", "/hello")));
  ASSERT_TRUE(read_response(*c));
  ASSERT_TRUE(c->send(request("GET", "/missing")));
  ASSERT_TRUE(read_response(*c));
  // Metrics are updated once the response is written, which may be just after the client read it.
  ASSERT_TRUE(wait_until([&] {
    return s.metrics().render().find("hearth_http_request_duration_seconds_count 2") != std::string::npos;
  }));
  std::string text = s.metrics().render();
  EXPECT_NE(text.find("hearth_http_requests_total{code=\"2xx\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("hearth_http_requests_total{code=\"4xx\"} 1"), std::string::npos);
  EXPECT_NE(text.find("hearth_http_connections_open 1"), std::string::npos);
  EXPECT_NE(text.find("hearth_http_request_duration_seconds_count 2"), std::string::npos);
  EXPECT_NE(text.find("hearth_http_rejected_total{reason=\"rate_limit\"} 0"), std::string::npos);
  c.reset();
  EXPECT_TRUE(wait_until([&] {
    return s.metrics().render().find("hearth_http_connections_open 0") != std::string::npos;
  }));
}

}  // namespace
}  // namespace hearth::net
