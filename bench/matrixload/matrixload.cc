// matrixload: a Matrix client-server load generator (one Asio loop, Beast HTTP/1.1 keep-alive).
//
// Registers users (registration tokens from `hearthctl invite create`, one per line in
// --tokens, or m.login.dummy when the server allows open registration, as Synapse with
// enable_registration_without_verification), creates one room, lets the senders join, then
// for each concurrency level (--levels 1,16,64) every sender PUTs m.room.message events
// closed-loop (the next after the previous answer) until --messages events are sent at that
// level. One receiver long-polls /sync and records, per event, the time from the start of
// its PUT to its arrival in a /sync answer (send-to-sync latency). It reports sends/s,
// p50/p99 send latency, p50/p99 send-to-sync latency, server CPU and RSS (from /proc of
// --server-pid), and its own CPU (getrusage), as one JSON object per level on stdout.
//
// One thread, one io_context, C++20 coroutines; one keep-alive connection per user plus one
// for the receiver. Only /sync answers are parsed in the timed phase (simdjson). Bounded by
// --messages and --max-seconds (per level); 127.0.0.1 only. It does not link any hearth
// library, so it is an independent client.

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/core.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proc_stats.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------- options

struct Options {
  int port = 0;
  std::string host = "127.0.0.1";
  std::string tokens;  // file with one registration token per line
  std::vector<int> levels{1, 16, 64};
  int messages = 1000;  // sends per level
  int server_pid = 0;
  double max_seconds = 120;  // per level
  std::string label;
  std::string prefix;
};

[[noreturn]] void usage(const std::string& why) {
  if (!why.empty()) fmt::print(stderr, "matrixload: {}\n", why);
  fmt::print(why.empty() ? stdout : stderr,
             "usage: matrixload --port P [--host 127.0.0.1] [--tokens FILE] [--levels 1,16,64]\n"
             "  [--messages N (sends per level)] [--server-pid PID] [--max-seconds S (per level)]\n"
             "  [--label TEXT] [--prefix TEXT]\n");
  std::exit(why.empty() ? 0 : 2);
}

int to_int(const std::string& opt, const std::string& v) {
  try {
    std::size_t used = 0;
    int n = std::stoi(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  usage(fmt::format("{}: invalid int value: '{}'", opt, v));
}

double to_double(const std::string& opt, const std::string& v) {
  try {
    std::size_t used = 0;
    double d = std::stod(v, &used);
    if (used == v.size()) return d;
  } catch (const std::exception&) {
  }
  usage(fmt::format("{}: invalid float value: '{}'", opt, v));
}

Options parse_options(int argc, char** argv) {
  Options o;
  bool have_port = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    bool inline_value = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
      inline_value = true;
    }
    auto val = [&]() -> std::string {
      if (inline_value) return v;
      if (i + 1 >= argc) usage("argument " + a + ": expected one argument");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") usage("");
    else if (a == "--port") o.port = to_int(a, val()), have_port = true;
    else if (a == "--host") o.host = val();
    else if (a == "--tokens") o.tokens = val();
    else if (a == "--levels") {
      o.levels.clear();
      std::stringstream ss(val());
      for (std::string p; std::getline(ss, p, ',');) o.levels.push_back(to_int(a, p));
    } else if (a == "--messages") o.messages = to_int(a, val());
    else if (a == "--server-pid") o.server_pid = to_int(a, val());
    else if (a == "--max-seconds") o.max_seconds = to_double(a, val());
    else if (a == "--label") o.label = val();
    else if (a == "--prefix") o.prefix = val();
    else usage("unrecognized arguments: " + a);
  }
  if (!have_port) usage("the following arguments are required: --port");
  if (o.levels.empty()) usage("--levels: empty");
  for (int l : o.levels)
    if (l < 1) usage("--levels: every level must be at least 1");
  return o;
}

// ---------------------------------------------------------------- /proc readings

// The q-quantile as the Python generator computed it: nearest rank, rounded half up.
double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(v.size() - 1, i)];
}

// ---------------------------------------------------------------- JSON text

std::string json_str(std::string_view s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) o += fmt::format("\\u{:04x}", c);
        else o += static_cast<char>(c);
    }
  }
  return o + '"';
}

// A float rounded to `digits` decimals and printed as Python prints it (shortest form that
// reads back, always with a fraction or exponent), so the output matches the old generator's.
std::string py_round(double x, int digits) {
  double r = std::strtod(fmt::format("{:.{}f}", x, digits).c_str(), nullptr);
  std::string s = fmt::format("{}", r);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// One output object: keys in insertion order, Python's ", " and ": " separators.
class JsonLine {
 public:
  void raw(std::string_view k, std::string_view v) {
    text_ += text_.empty() ? "{" : ", ";
    text_ += json_str(k);
    text_ += ": ";
    text_ += v;
  }
  void str(std::string_view k, std::string_view v) { raw(k, json_str(v)); }
  void integer(std::string_view k, long long v) { raw(k, std::to_string(v)); }
  void num(std::string_view k, double v, int digits) { raw(k, py_round(v, digits)); }
  std::string text() const { return text_ + "}"; }

 private:
  std::string text_;
};

// ---------------------------------------------------------------- HTTP

struct Reply {
  int status = 0;  // -1: no answer (connection failed twice)
  std::string body;
};

// One keep-alive HTTP/1.1 connection; requests on it are sequential. A request that fails on
// a connection the server may have closed is retried once on a new connection.
class HttpConn {
 public:
  HttpConn(asio::io_context& io, tcp::endpoint ep, std::string host_header)
      : stream_(io), ep_(ep), host_header_(std::move(host_header)) {}

  asio::awaitable<Reply> request(http::verb method, std::string target, std::string token,
                                 std::string body = {}, bool has_body = false) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, host_header_);
    req.content_length(body.size());
    if (has_body) req.set(http::field::content_type, "application/json");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    req.body() = std::move(body);
    for (int attempt = 0; attempt < 2; ++attempt) {
      beast::error_code ec;
      if (!open_) {
        stream_.expires_after(kTimeout);
        co_await stream_.async_connect(ep_, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          close();
          continue;
        }
        stream_.socket().set_option(tcp::no_delay(true), ec);
        open_ = true;
      }
      stream_.expires_after(kTimeout);
      co_await http::async_write(stream_, req, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        close();
        continue;
      }
      http::response_parser<http::string_body> parser;
      parser.body_limit(std::uint64_t{1} << 30);
      co_await http::async_read(stream_, buffer_, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        close();
        continue;
      }
      stream_.expires_never();
      auto res = parser.release();
      if (!res.keep_alive()) close();
      co_return Reply{static_cast<int>(res.result_int()), std::move(res.body())};
    }
    co_return Reply{-1, {}};
  }

  void close() {
    beast::error_code ec;
    stream_.socket().close(ec);
    buffer_.clear();
    open_ = false;
  }

 private:
  // No answer in a minute counts as a failed request (the old generator waited forever).
  static constexpr std::chrono::seconds kTimeout{60};
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  tcp::endpoint ep_;
  std::string host_header_;
  bool open_ = false;
};

const std::string kApi = "/_matrix/client/v3";
// Ask for up to 5,000 timeline events per /sync, so a burst is not cut to a `limited`
// timeline (the events it leaves out are counted as not_synced).
const std::string kFilter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A5000%7D%7D%7D";

std::string describe(const Reply& r) {
  if (r.status < 0) return "no answer (connection failed)";
  return fmt::format("{} {}", r.status, std::string_view(r.body).substr(0, 300));
}

[[noreturn]] void fail(const std::string& why) {
  fmt::print(stderr, "matrixload: {}\n", why);
  std::fflush(stdout);
  std::_Exit(1);
}

std::string str_at(simdjson::dom::element e, std::string_view key) {
  std::string_view v;
  if (e[key].get(v) != simdjson::SUCCESS) return {};
  return std::string(v);
}

struct User {
  std::unique_ptr<HttpConn> http;
  std::string token, id;
};

// ---------------------------------------------------------------- the run

class Run {
 public:
  Run(asio::io_context& io, Options o) : io_(io), o_(std::move(o)) {
    auto addr = o_.host == "::1" ? asio::ip::make_address("::1") : asio::ip::make_address("127.0.0.1");
    ep_ = tcp::endpoint(addr, static_cast<unsigned short>(o_.port));
    host_header_ = fmt::format("{}:{}", o_.host, o_.port);
  }

  asio::awaitable<void> main();

 private:
  std::unique_ptr<HttpConn> conn() { return std::make_unique<HttpConn>(io_, ep_, host_header_); }
  asio::awaitable<User> register_user(std::unique_ptr<HttpConn> http, std::string name, const std::string* token);
  asio::awaitable<void> syncer();
  asio::awaitable<void> sender(User& u, int level);
  asio::awaitable<void> sleep(double seconds) {
    asio::steady_timer t(io_, std::chrono::microseconds(static_cast<long long>(seconds * 1e6)));
    beast::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  asio::io_context& io_;
  Options o_;
  tcp::endpoint ep_;
  std::string host_header_;
  std::string prefix_, room_, rq_;
  std::vector<User> users_;
  simdjson::dom::parser parser_;  // used only between two co_awaits

  // Receiver state.
  std::unique_ptr<HttpConn> sync_http_;
  std::string since_;
  bool stop_sync_ = false;
  bool sync_done_ = false;
  long limited_ = 0;
  std::unordered_map<std::string, double> sent_at_;  // body marker -> time the PUT started
  std::unordered_map<std::string, double> arrived_;  // marker -> time seen in /sync

  // Level state, shared by its senders (one thread: no locks).
  long txn_ = 0;
  long count_ = 0;
  long errors_ = 0;
  double deadline_ = 0;
  std::vector<double> lat_;
  std::vector<std::string> markers_;
  int running_ = 0;
  asio::steady_timer* level_done_ = nullptr;
};

asio::awaitable<User> Run::register_user(std::unique_ptr<HttpConn> http, std::string name, const std::string* token) {
  std::string base = fmt::format(R"({{"username": {}, "password": "benchpass-matrix", "initial_device_display_name": "matrixload")",
                                 json_str(name));
  Reply r = co_await http->request(http::verb::post, kApi + "/register", "", base + "}", true);
  if (r.status != 200) {
    if (r.status != 401) fail(fmt::format("register {}: {}", name, describe(r)));
    simdjson::dom::element js;
    if (parser_.parse(r.body).get(js) != simdjson::SUCCESS) fail(fmt::format("register {}: bad JSON {}", name, r.body));
    std::string session = str_at(js, "session");
    bool token_flow = false;
    simdjson::dom::array flows;
    if (js["flows"].get(flows) == simdjson::SUCCESS) {
      for (auto f : flows) {
        simdjson::dom::array stages;
        if (f["stages"].get(stages) != simdjson::SUCCESS) continue;
        for (auto s : stages) {
          std::string_view sv;
          if (s.get(sv) == simdjson::SUCCESS && sv == "m.login.registration_token") token_flow = true;
        }
      }
    }
    std::string auth = token && token_flow
                           ? fmt::format(R"({{"type": "m.login.registration_token", "token": {})", json_str(*token))
                           : std::string(R"({"type": "m.login.dummy")");
    if (!session.empty()) auth += R"(, "session": )" + json_str(session);
    auth += "}";
    r = co_await http->request(http::verb::post, kApi + "/register", "", base + R"(, "auth": )" + auth + "}", true);
    if (r.status != 200) fail(fmt::format("register {}: {}", name, describe(r)));
  }
  simdjson::dom::element js;
  if (parser_.parse(r.body).get(js) != simdjson::SUCCESS) fail(fmt::format("register {}: bad JSON {}", name, r.body));
  User u;
  u.token = str_at(js, "access_token");
  u.id = str_at(js, "user_id");
  u.http = std::move(http);
  co_return u;
}

asio::awaitable<void> Run::syncer() {
  const std::string& token = users_[0].token;
  while (!stop_sync_) {
    Reply r = co_await sync_http_->request(
        http::verb::get, fmt::format("{}/sync?timeout=5000&since={}&filter={}", kApi, since_, kFilter), token);
    double now = now_s();
    if (stop_sync_) break;
    simdjson::dom::element js;
    if (r.status != 200 || parser_.parse(r.body).get(js) != simdjson::SUCCESS) {
      co_await sleep(0.1);
      continue;
    }
    std::string_view nb;
    if (js["next_batch"].get(nb) == simdjson::SUCCESS) since_ = std::string(nb);
    simdjson::dom::element tl;
    if (js["rooms"]["join"][room_]["timeline"].get(tl) != simdjson::SUCCESS) continue;
    bool limited = false;
    if (tl["limited"].get(limited) == simdjson::SUCCESS && limited) ++limited_;
    simdjson::dom::array events;
    if (tl["events"].get(events) != simdjson::SUCCESS) continue;
    for (auto ev : events) {
      std::string_view body;
      if (ev["content"]["body"].get(body) != simdjson::SUCCESS || body.substr(0, 3) != "mk ") continue;
      std::string_view rest = body.substr(3);
      rest.remove_prefix(std::min(rest.size(), rest.find_first_not_of(" \t\r\n")));
      std::string_view mk = rest.substr(0, rest.find_first_of(" \t\r\n"));
      if (!mk.empty()) arrived_.emplace(std::string(mk), now);  // the first sighting counts
    }
  }
  sync_done_ = true;
}

asio::awaitable<void> Run::sender(User& u, int level) {
  while (count_ < o_.messages && now_s() < deadline_) {
    ++count_;
    long txn = ++txn_;
    std::string mk = fmt::format("{}-{}", level, txn);
    double s = now_s();
    sent_at_[mk] = s;
    Reply r = co_await u.http->request(
        http::verb::put, fmt::format("{}/rooms/{}/send/m.room.message/{}{}", kApi, rq_, prefix_, txn), u.token,
        fmt::format(R"({{"msgtype": "m.text", "body": "mk {} {}"}})", mk, std::string(64, 'x')), true);
    if (r.status != 200) {
      ++errors_;
      continue;
    }
    lat_.push_back((now_s() - s) * 1000);
    markers_.push_back(std::move(mk));
  }
  if (--running_ == 0 && level_done_) level_done_->cancel();
}

asio::awaitable<void> Run::main() {
  const int nsenders = *std::max_element(o_.levels.begin(), o_.levels.end());
  std::vector<std::string> tokens;
  if (!o_.tokens.empty()) {
    std::ifstream f(o_.tokens);
    if (!f) fail("cannot read " + o_.tokens);
    for (std::string line; std::getline(f, line);) {
      auto b = line.find_first_not_of(" \t\r\n\f\v");
      auto e = line.find_last_not_of(" \t\r\n\f\v");
      tokens.push_back(b == std::string::npos ? "" : line.substr(b, e - b + 1));
    }
  }
  prefix_ = o_.prefix;
  if (prefix_.empty()) {
    std::random_device rd;
    prefix_ = fmt::format("ml{:06x}", rd() & 0xffffff);
  }
  const int pid = o_.server_pid;
  const long rss_idle = bench::process_rss_kib(pid);

  // Users: 0 is the room creator and the /sync receiver; 1..nsenders send.
  double t_reg = now_s(), scpu_reg = bench::process_cpu_seconds(pid);
  for (int i = 0; i <= nsenders; ++i) {
    const std::string* tok = static_cast<std::size_t>(i) < tokens.size() ? &tokens[std::size_t(i)] : nullptr;
    users_.push_back(co_await register_user(conn(), fmt::format("{}u{}", prefix_, i), tok));
  }
  double reg_s = now_s() - t_reg, reg_cpu = bench::process_cpu_seconds(pid) - scpu_reg;
  User& owner = users_[0];
  Reply r = co_await owner.http->request(http::verb::post, kApi + "/createRoom", owner.token,
                                         R"({"preset": "public_chat", "name": "bench"})", true);
  simdjson::dom::element js;
  if (r.status != 200 || parser_.parse(r.body).get(js) != simdjson::SUCCESS)
    fail("createRoom: " + describe(r));
  room_ = str_at(js, "room_id");
  for (char c : room_) {
    if (c == '!') rq_ += "%21";
    else if (c == ':') rq_ += "%3A";
    else rq_ += c;
  }
  for (std::size_t i = 1; i < users_.size(); ++i) {
    r = co_await users_[i].http->request(http::verb::post, fmt::format("{}/rooms/{}/join", kApi, rq_), users_[i].token,
                                         "{}", true);
    if (r.status != 200) fail("join: " + describe(r));
  }
  // Initial sync of the receiver: where its incremental syncs start.
  sync_http_ = conn();
  r = co_await sync_http_->request(http::verb::get, kApi + "/sync?timeout=0", owner.token);
  if (r.status != 200 || parser_.parse(r.body).get(js) != simdjson::SUCCESS)
    fail("initial sync: " + describe(r));
  since_ = str_at(js, "next_batch");
  const long rss_ready = bench::process_rss_kib(pid);

  asio::co_spawn(io_, syncer(), asio::detached);
  for (int level : o_.levels) {
    lat_.clear();
    markers_.clear();
    errors_ = 0;
    count_ = 0;
    deadline_ = now_s() + o_.max_seconds;
    double cpu0 = bench::own_cpu_seconds(), scpu0 = bench::process_cpu_seconds(pid);
    double t0 = now_s();

    asio::steady_timer done(io_);
    level_done_ = &done;
    running_ = level;
    for (int i = 1; i <= level; ++i) asio::co_spawn(io_, sender(users_[std::size_t(i)], level), asio::detached);
    while (running_ > 0) {
      done.expires_after(std::chrono::hours(1));
      beast::error_code ec;
      co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    level_done_ = nullptr;
    double wall = now_s() - t0;
    // Wait (bounded) for the receiver to see every event of this level.
    double w_end = now_s() + 15;
    auto all_arrived = [&] {
      return std::all_of(markers_.begin(), markers_.end(), [&](const std::string& m) { return arrived_.count(m) > 0; });
    };
    while (!all_arrived() && now_s() < w_end) co_await sleep(0.02);
    double cpu = bench::own_cpu_seconds() - cpu0, scpu = bench::process_cpu_seconds(pid) - scpu0;
    std::vector<double> s2s;
    long not_synced = 0;
    for (const auto& m : markers_) {
      auto it = arrived_.find(m);
      if (it == arrived_.end()) ++not_synced;
      else s2s.push_back((it->second - sent_at_[m]) * 1000);
    }
    const auto n = static_cast<long>(markers_.size());
    JsonLine j;
    j.str("workload", "matrix");
    j.str("label", o_.label);
    j.integer("senders", level);
    j.integer("sent", n);
    j.integer("errors", errors_);
    j.integer("not_synced", not_synced);
    j.integer("limited_syncs", limited_);
    j.num("wall_s", wall, 3);
    if (wall > 0) j.num("per_s", double(n) / wall, 2);
    else j.integer("per_s", 0);
    j.num("p50_ms", pct(lat_, .5), 2);
    j.num("p99_ms", pct(lat_, .99), 2);
    j.num("sync_p50_ms", pct(s2s, .5), 2);
    j.num("sync_p99_ms", pct(s2s, .99), 2);
    j.num("client_cpu_s", cpu, 3);
    j.num("server_cpu_s", scpu, 3);
    if (n > 0) j.num("server_cpu_us_per_op", scpu / double(n) * 1e6, 1);
    else j.integer("server_cpu_us_per_op", 0);
    j.integer("rss_kib_idle", rss_idle);
    j.integer("rss_kib_ready", rss_ready);
    j.integer("rss_kib_after", bench::process_rss_kib(pid));
    j.num("register_s", reg_s, 3);
    j.num("register_server_cpu_s", reg_cpu, 3);
    j.integer("users", static_cast<long long>(users_.size()));
    fmt::print("{}\n", j.text());
    std::fflush(stdout);
  }
  // Let the receiver's long poll end (at most 7 s), then drop its connection.
  stop_sync_ = true;
  double w_end = now_s() + 7;
  while (!sync_done_ && now_s() < w_end) co_await sleep(0.02);
  sync_http_->close();
  for (auto& u : users_) u.http->close();
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  if (o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1") {
    fmt::print(stderr, "matrixload: loopback only\n");
    return 1;
  }
  asio::io_context io(1);
  Run run(io, std::move(o));
  asio::co_spawn(io, run.main(), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        fail(ex.what());
      }
    }
    io.stop();
  });
  io.run();
  // The receiver may still be in a long poll that refers to `run`: leave without unwinding.
  std::fflush(stdout);
  std::_Exit(0);
}
