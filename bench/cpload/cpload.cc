// cpload: a CryptPad-protocol fan-out load generator (netflux over a websocket, as
// CryptPad's netflux-websocket + chainpad-netflux clients speak it). CH channels x CL
// clients per channel; each channel has an ed25519 validateKey, given as channel metadata
// in the first member's GET_HISTORY, so the server verifies every message's signature.
// Every client sends N signed messages closed-loop (the next after the server's ACK); every
// other client of the channel receives each one (fan-out).
//
//   cpload <ws url> <channels> <clients per channel> <messages per client>
//          [server pid] [max seconds]
//
// Messages are signed (libsodium crypto_sign, signature || message, base64) before the
// timed phase; receivers do not re-verify (the server did). Prints one JSON object, with the
// same keys as the former Node generator: signed messages/s (ACKed), deliveries/s, ACK
// latency p50/p99, delivery latency p50/p99, client CPU (this process) and server CPU/RSS
// summed over the server's process tree from /proc (CryptPad runs worker processes).
//
// One thread, one io_context, C++20 coroutines, one Boost.Beast websocket (plain TCP) per
// client; 127.0.0.1/localhost only; bounded by max seconds. It does not link any hearth
// library, so it is an independent client.

#include <sodium.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/core.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proc_stats.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------- options

struct Options {
  std::string url, host, port = "80", path = "/";
  int channels = 20, clients = 10, messages = 20, server_pid = 0;
  double max_seconds = 120;
};

[[noreturn]] void usage(const std::string& why) {
  if (!why.empty()) fmt::print(stderr, "cpload: {}\n", why);
  fmt::print(why.empty() ? stdout : stderr,
             "usage: cpload <ws url> <channels> <clients per channel> <messages per client>\n"
             "              [server pid] [max seconds]\n");
  std::exit(why.empty() ? 0 : 2);
}

double to_number(const char* what, const std::string& v) {
  try {
    std::size_t used = 0;
    double d = std::stod(v, &used);
    if (used == v.size()) return d;
  } catch (const std::exception&) {
  }
  usage(fmt::format("{}: not a number: '{}'", what, v));
}

Options parse_options(int argc, char** argv) {
  if (argc > 1 && (std::string_view(argv[1]) == "-h" || std::string_view(argv[1]) == "--help")) usage("");
  if (argc < 2 || argc > 7) usage("expected 1 to 6 arguments");
  Options o;
  o.url = argv[1];
  std::smatch m;
  static const std::regex re(R"(^ws://(127\.0\.0\.1|localhost)(?::(\d+))?(/.*)?$)");
  if (!std::regex_match(o.url, m, re)) {
    fmt::print(stderr, "cpload: loopback only (ws://127.0.0.1 or ws://localhost, plain TCP)\n");
    std::exit(2);
  }
  o.host = m[1];
  if (m[2].matched) o.port = m[2];
  if (m[3].matched) o.path = m[3];
  const char* names[] = {"channels", "clients per channel", "messages per client", "server pid", "max seconds"};
  double v[5] = {20, 10, 20, 0, 120};
  for (int i = 2; i < argc; ++i) v[i - 2] = to_number(names[i - 2], argv[i]);
  o.channels = static_cast<int>(v[0]);
  o.clients = static_cast<int>(v[1]);
  o.messages = static_cast<int>(v[2]);
  o.server_pid = static_cast<int>(v[3]);
  o.max_seconds = v[4];
  if (o.channels < 1 || o.clients < 1 || o.messages < 0) usage("channels and clients must be >= 1, messages >= 0");
  return o;
}

// ---------------------------------------------------------------- /proc of the server tree

double tree_cpu(int pid) {
  double s = 0;
  for (int p : bench::process_tree(pid)) s += bench::process_cpu_seconds(p);
  return s;
}

long tree_rss(int pid) {
  long s = 0;
  for (int p : bench::process_tree(pid)) s += bench::process_rss_kib(p);
  return s;
}

// ---------------------------------------------------------------- helpers

std::string base64(const unsigned char* p, std::size_t n) {
  std::string out(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), p, n, sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> b(bytes);
  randombytes_buf(b.data(), b.size());
  std::string out(bytes * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), b.data(), b.size());
  out.resize(bytes * 2);
  return out;
}

// The value at quantile q as cpload.js computed it (nearest rank on the sorted samples).
double pct(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(std::llround(q * static_cast<double>(v.size() - 1)));
  return v[std::min(v.size() - 1, i)];
}

// A number rounded to `digits` decimals, printed as JavaScript prints it (+x.toFixed(d)).
std::string fixed(double x, int digits) {
  if (!std::isfinite(x)) return "null";
  double scale = std::pow(10.0, digits);
  double r = std::round(x * scale) / scale;
  if (r == 0) r = 0;  // no "-0"
  return fmt::format("{}", r);
}

// ---------------------------------------------------------------- state

struct Client {
  explicit Client(asio::io_context& io) : ws(io), signal(io) {}
  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer buf;
  asio::steady_timer signal;  // cancelled when the client is ready (or failed) in setup
  std::string chan, validate_key, uid, hk;
  enum class State { connecting, joining, history, ready, failed } state = State::connecting;
  long long seq = 1, msg_seq = -1, ping_seq = -1, hist_seq = -1;
  long long txid = 0;
  std::vector<std::string> queue;  // signed messages, base64
  std::size_t next = 0;
  double msg_sent = 0, last_ping_ok = 0;
  bool done = false;
  std::deque<std::string> out;
  bool writing = false;
};

struct Run {
  Options opt;
  std::vector<std::shared_ptr<Client>> clients;
  std::unordered_map<std::string, double> sent_at;  // first 86 base64 chars -> ms
  std::vector<double> ack_lat, del_lat;
  long long acked = 0, delivered = 0, errors = 0;
  double t0 = 0, t_last = 0, cpu0 = 0, scpu0 = 0;
  long rss_idle = 0, rss_ready = 0;
  std::size_t finished = 0;
  bool done = false;
  simdjson::dom::parser parser, inner;
};

Run* run = nullptr;

[[noreturn]] void finish(bool timed_out) {
  Run& r = *run;
  r.done = true;
  double wall = ((r.t_last ? r.t_last : now_ms()) - r.t0) / 1000;
  double scpu = tree_cpu(r.opt.server_pid) - r.scpu0;
  long long CH = r.opt.channels, CL = r.opt.clients, N = r.opt.messages;
  std::string s = "{";
  auto kv = [&](std::string_view k, const std::string& v) {
    if (s.size() > 1) s += ',';
    s += fmt::format("\"{}\":{}", k, v);
  };
  auto i = [](long long v) { return std::to_string(v); };
  kv("workload", "\"cryptpad\"");
  kv("channels", i(CH));
  kv("clients_per_channel", i(CL));
  kv("clients", i(CH * CL));
  kv("messages_per_client", i(N));
  kv("sent", i(CH * CL * N));
  kv("acked", i(r.acked));
  kv("delivered", i(r.delivered));
  kv("expected_deliveries", i(r.acked * (CL - 1)));
  kv("errors", i(r.errors));
  kv("timed_out", timed_out ? "true" : "false");
  kv("wall_s", fixed(wall, 3));
  kv("per_s", wall > 0 ? fixed(r.acked / wall, 1) : "null");
  kv("deliveries_per_s", wall > 0 ? fixed(r.delivered / wall, 1) : "null");
  kv("p50_ms", fixed(pct(r.ack_lat, 0.5), 2));
  kv("p99_ms", fixed(pct(r.ack_lat, 0.99), 2));
  kv("delivery_p50_ms", fixed(pct(r.del_lat, 0.5), 2));
  kv("delivery_p99_ms", fixed(pct(r.del_lat, 0.99), 2));
  kv("client_cpu_s", fixed(bench::own_cpu_seconds() - r.cpu0, 3));
  kv("server_cpu_s", fixed(scpu, 3));
  kv("server_cpu_us_per_op", r.acked ? fixed(scpu / r.acked * 1e6, 1) : "0");
  kv("processes", i(static_cast<long long>(bench::process_tree(r.opt.server_pid).size())));
  kv("rss_kib_idle", i(r.rss_idle));
  kv("rss_kib_ready", i(r.rss_ready));
  kv("rss_kib_after", i(tree_rss(r.opt.server_pid)));
  s += "}\n";
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
  std::_Exit(timed_out ? 1 : 0);
}

[[noreturn]] void fail(const std::string& why) {
  fmt::print(stderr, "cpload: {}\n", why);
  std::fflush(stderr);
  std::_Exit(1);
}

// ---------------------------------------------------------------- sending

void write_next(const std::shared_ptr<Client>& cl) {
  if (cl->out.empty()) {
    cl->writing = false;
    return;
  }
  cl->writing = true;
  cl->ws.async_write(asio::buffer(cl->out.front()), [cl](beast::error_code ec, std::size_t) {
    if (ec) {
      if (!run->done) fail("write: " + ec.message());
      return;
    }
    cl->out.pop_front();
    write_next(cl);
  });
}

void send(const std::shared_ptr<Client>& cl, std::string frame) {
  cl->out.push_back(std::move(frame));
  if (!cl->writing) write_next(cl);
}

asio::awaitable<void> drain();

// Sends the client's next signed message, or marks it done.
void send_next(const std::shared_ptr<Client>& cl) {
  Run& r = *run;
  if (cl->next >= cl->queue.size()) {
    if (!cl->done) {
      cl->done = true;
      cl->msg_seq = -1;
      if (++r.finished == r.clients.size())
        asio::co_spawn(cl->ws.get_executor(), drain(), asio::detached);
    }
    return;
  }
  const std::string& m = cl->queue[cl->next++];
  double s = now_ms();
  r.sent_at[m.substr(0, 86)] = s;
  cl->msg_sent = s;
  cl->msg_seq = cl->seq++;
  send(cl, fmt::format("[{},\"MSG\",\"{}\",\"{}\"]", cl->msg_seq, cl->chan, m));
}

void set_state(const std::shared_ptr<Client>& cl, Client::State s) {
  cl->state = s;
  if (s == Client::State::ready || s == Client::State::failed) cl->signal.cancel();
}

// ---------------------------------------------------------------- receiving

std::string_view str(simdjson::dom::element e) {
  std::string_view v;
  if (e.get_string().get(v)) return {};
  return v;
}

// A direct message from the history keeper during setup: metadata, history, or the end
// of history ({"state":1,"channel":...,"txid":...}).
void on_history(const std::shared_ptr<Client>& cl, std::string_view body) {
  simdjson::dom::element doc;
  if (run->inner.parse(body.data(), body.size(), true).get(doc)) return;
  simdjson::dom::object o;
  if (doc.get_object().get(o)) return;  // an array: a history message (none on new channels)
  simdjson::dom::element e;
  if (!o["txid"].get(e)) {
    int64_t t = 0;
    if (!e.get_int64().get(t) && t != cl->txid) return;  // another request's
  }
  if (!o["error"].get(e) && str(o["channel"]) == cl->chan) {
    fmt::print(stderr, "cpload: history keeper error for {}: {}\n", cl->chan, body);
    return set_state(cl, Client::State::failed);
  }
  int64_t state = 0;
  if (!o["state"].get(e) && !e.get_int64().get(state) && state == 1 && str(o["channel"]) == cl->chan)
    set_state(cl, Client::State::ready);
}

void on_frame(const std::shared_ptr<Client>& cl, std::string_view text) {
  Run& r = *run;
  simdjson::dom::element doc;
  if (r.parser.parse(text.data(), text.size(), true).get(doc)) return;
  simdjson::dom::array a;
  if (doc.get_array().get(a)) return;
  std::array<simdjson::dom::element, 6> f;
  std::size_t n = 0;
  for (auto e : a) {
    if (n < f.size()) f[n] = e;
    ++n;
  }
  if (n < 2) return;
  int64_t seq = 0;
  if (f[0].get_int64().get(seq)) return;
  if (seq != 0) {  // a reply to one of our requests: ACK, JACK or ERROR
    std::string_view kind = str(f[1]);
    if (seq == cl->ping_seq) {
      cl->ping_seq = -1;
      cl->last_ping_ok = now_ms();
    } else if (seq == cl->msg_seq) {
      if (kind == "ACK") {
        ++r.acked;
        double t = now_ms();
        r.ack_lat.push_back(t - cl->msg_sent);
        if (t > r.t_last) r.t_last = t;
      } else {
        ++r.errors;
        fmt::print(stderr, "cpload: {}\n", text);
      }
      send_next(cl);
    } else if (kind == "ERROR") {
      fmt::print(stderr, "cpload: error in setup: {}\n", text);
      if (cl->state != Client::State::ready) set_state(cl, Client::State::failed);
    }
    return;
  }
  if (n < 4) return;
  std::string_view type = str(f[2]);
  if (type == "MSG" && n >= 5) {
    std::string_view to = str(f[3]), body = str(f[4]);
    if (to == cl->chan) {  // a channel message from another member
      if (!r.t0) return;
      auto it = r.sent_at.find(std::string(body.substr(0, 86)));
      if (it != r.sent_at.end()) {
        ++r.delivered;
        r.t_last = now_ms();
        r.del_lat.push_back(r.t_last - it->second);
      }
    } else if (to == cl->uid && !cl->hk.empty() && str(f[1]) == cl->hk && cl->state == Client::State::history) {
      on_history(cl, body);
    }
  } else if (type == "PING") {
    std::string pong(text);
    if (auto p = pong.find("\"PING\""); p != std::string::npos) pong.replace(p, 6, "\"PONG\"");
    send(cl, std::move(pong));
  } else if (type == "JOIN") {
    std::string_view who = str(f[1]);
    if (str(f[3]) != cl->chan) return;
    if (who.size() == 16 && cl->hk.empty()) cl->hk = who;  // the history keeper's id
    if (who == cl->uid && cl->state == Client::State::joining) {
      if (cl->hk.empty()) {
        fmt::print(stderr, "cpload: no history keeper in {}\n", cl->chan);
        return set_state(cl, Client::State::failed);
      }
      // chainpad-netflux's GET_HISTORY: our txid and the channel's metadata (validateKey).
      std::string req = fmt::format(R"(["GET_HISTORY","{}",{{"txid":{},"metadata":{{"validateKey":"{}"}}}}])",
                                    cl->chan, cl->txid, cl->validate_key);
      std::string esc;
      for (char c : req) {
        if (c == '"' || c == '\\') esc += '\\';
        esc += c;
      }
      cl->hist_seq = cl->seq++;
      cl->state = Client::State::history;
      send(cl, fmt::format("[{},\"MSG\",\"{}\",\"{}\"]", cl->hist_seq, cl->hk, esc));
    }
  } else if (type == "IDENT" && cl->state == Client::State::connecting) {
    cl->uid = str(f[3]);
    cl->last_ping_ok = now_ms();
    cl->state = Client::State::joining;
    send(cl, fmt::format("[{},\"JOIN\",\"{}\"]", cl->seq++, cl->chan));
  }
}

asio::awaitable<void> read_loop(std::shared_ptr<Client> cl) {
  for (;;) {
    beast::error_code ec;
    co_await cl->ws.async_read(cl->buf, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (run->done) co_return;
      if (cl->state != Client::State::ready) {
        fmt::print(stderr, "cpload: connection closed in setup: {}\n", ec.message());
        set_state(cl, Client::State::failed);
        co_return;
      }
      // Lost in the timed phase: its outstanding and remaining messages are errors.
      fmt::print(stderr, "cpload: connection lost: {}\n", ec.message());
      if (!cl->done) {
        run->errors += static_cast<long long>(cl->queue.size() - cl->next) + (cl->msg_seq >= 0 ? 1 : 0);
        cl->next = cl->queue.size();
        send_next(cl);
      }
      co_return;
    }
    auto d = cl->buf.cdata();
    on_frame(cl, std::string_view(static_cast<const char*>(d.data()), d.size()));
    cl->buf.consume(cl->buf.size());
  }
}

// As netflux-websocket: a PING when nothing has answered one for 15 s, checked every 5 s.
asio::awaitable<void> pinger() {
  asio::steady_timer t(co_await asio::this_coro::executor);
  for (;;) {
    t.expires_after(std::chrono::seconds(5));
    co_await t.async_wait(asio::use_awaitable);
    double now = now_ms();
    for (auto& cl : run->clients) {
      if (cl->state != Client::State::ready || cl->ping_seq >= 0 || now - cl->last_ping_ok < 15000) continue;
      cl->ping_seq = cl->seq++;
      send(cl, fmt::format("[{},\"PING\"]", cl->ping_seq));
    }
  }
}

// After the last ACK: let the last deliveries arrive (bounded), then report.
asio::awaitable<void> drain() {
  Run& r = *run;
  asio::steady_timer t(co_await asio::this_coro::executor);
  double end = now_ms() + 5000;
  while (r.delivered < r.acked * (r.opt.clients - 1) && now_ms() < end) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(asio::use_awaitable);
  }
  finish(false);
}

asio::awaitable<void> main_task(asio::io_context& io) {
  Run& r = *run;
  const Options& o = r.opt;
  tcp::resolver resolver(io);
  auto endpoints = co_await resolver.async_resolve(o.host, o.port, asio::use_awaitable);
  r.rss_idle = tree_rss(o.server_pid);
  for (int c = 0; c < o.channels; ++c) {
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    std::string validate_key = base64(pk, sizeof pk);
    std::string chan = random_hex(16);
    for (int m = 0; m < o.clients; ++m) {
      auto cl = std::make_shared<Client>(io);
      cl->chan = chan;
      cl->validate_key = validate_key;
      cl->txid = static_cast<long long>(randombytes_uniform(1000000));
      for (int i = 0; i < o.messages; ++i) {
        std::string msg = fmt::format("{}-{}-{}-{}", c, m, i, std::string(120, 'x'));
        std::vector<unsigned char> sm(msg.size() + crypto_sign_BYTES);
        unsigned long long smlen = 0;
        crypto_sign(sm.data(), &smlen, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), sk);
        cl->queue.push_back(base64(sm.data(), smlen));
      }
      beast::error_code ec;
      co_await beast::get_lowest_layer(cl->ws).async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) fail(fmt::format("connect {}: {}", o.url, ec.message()));
      beast::get_lowest_layer(cl->ws).socket().set_option(tcp::no_delay(true));
      cl->ws.text(true);
      co_await cl->ws.async_handshake(o.host + ":" + o.port, o.path, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) fail(fmt::format("websocket handshake {}: {}", o.url, ec.message()));
      r.clients.push_back(cl);
      asio::co_spawn(io, read_loop(cl), asio::detached);
      cl->signal.expires_at(asio::steady_timer::time_point::max());
      if (cl->state != Client::State::ready && cl->state != Client::State::failed)
        co_await cl->signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (cl->state != Client::State::ready) fail(fmt::format("client {}-{} could not join {}", c, m, chan));
    }
    sodium_memzero(sk, sizeof sk);
  }
  asio::co_spawn(io, pinger(), asio::detached);
  r.rss_ready = tree_rss(o.server_pid);
  r.cpu0 = bench::own_cpu_seconds();
  r.scpu0 = tree_cpu(o.server_pid);
  r.t0 = now_ms();
  r.sent_at.reserve(r.clients.size() * static_cast<std::size_t>(o.messages) * 2);
  r.ack_lat.reserve(r.clients.size() * static_cast<std::size_t>(o.messages));
  r.del_lat.reserve(r.clients.size() * static_cast<std::size_t>(o.messages) * static_cast<std::size_t>(o.clients));
  for (auto& cl : r.clients) send_next(cl);
}

}  // namespace

int main(int argc, char** argv) {
  Run r;
  r.opt = parse_options(argc, argv);
  run = &r;
  if (sodium_init() < 0) fail("sodium_init failed");
  asio::io_context io(1);
  asio::steady_timer deadline(io);
  deadline.expires_after(std::chrono::milliseconds(static_cast<long long>(r.opt.max_seconds * 1000)));
  deadline.async_wait([](beast::error_code ec) {
    if (ec) return;
    fmt::print(stderr, "cpload: deadline\n");
    finish(true);
  });
  asio::co_spawn(io, main_task(io), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      fail(x.what());
    }
  });
  io.run();
  return 0;
}
