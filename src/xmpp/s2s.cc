// Server-to-server federation: outgoing routes and their connections, the s2s listener's
// sessions (see s2s.h).
#include "xmpp/s2s.h"

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <sodium.h>

#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "core/random.h"
#include "xmpp/im.h"
#include "xmpp/jid.h"
#include "xmpp/sasl.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kStreamNs = "http://etherx.jabber.org/streams";
constexpr std::string_view kTlsNs = "urn:ietf:params:xml:ns:xmpp-tls";
constexpr std::string_view kSaslNs = "urn:ietf:params:xml:ns:xmpp-sasl";
constexpr std::string_view kStreamErrorNs = "urn:ietf:params:xml:ns:xmpp-streams";
constexpr std::string_view kStanzaErrorNs = "urn:ietf:params:xml:ns:xmpp-stanzas";
constexpr std::string_view kDialbackNs = "jabber:server:dialback";
constexpr std::string_view kDialbackFeatureNs = "urn:xmpp:features:dialback";
constexpr std::string_view kBidiFeatureNs = "urn:xmpp:features:bidi";
constexpr std::string_view kBidiNs = "urn:xmpp:bidi";
constexpr int kMaxSrvRecords = 32;

// Blocking DNS SRV lookup (glibc's resolver); empty when there is none or on error.
std::vector<SrvRecord> lookup_srv(const std::string& name) {
  std::vector<SrvRecord> out;
  struct __res_state res {};
  if (res_ninit(&res) != 0) return out;
  unsigned char answer[4096];
  int len = res_nquery(&res, name.c_str(), ns_c_in, ns_t_srv, answer, sizeof answer);
  ns_msg msg;
  if (len > 0 && ns_initparse(answer, len, &msg) == 0) {
    int count = std::min<int>(ns_msg_count(msg, ns_s_an), kMaxSrvRecords);
    for (int i = 0; i < count; ++i) {
      ns_rr rr;
      if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_srv || ns_rr_rdlen(rr) < 7) continue;
      const unsigned char* rd = ns_rr_rdata(rr);
      char target[NS_MAXDNAME];
      if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, target, sizeof target) < 0) continue;
      out.push_back({ns_get16(rd), ns_get16(rd + 2), ns_get16(rd + 4), target[0] ? std::string(target) : "."});
    }
  }
  res_nclose(&res);
  return out;
}

std::string stream_header(std::string_view from, std::string_view to, std::string_view id) {
  return fmt::format(
      "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='{}' xmlns:db='{}' from='{}' to='{}'{} "
      "version='1.0'>",
      kStreamNs, kDialbackNs, xml_escape(from), xml_escape(to), id.empty() ? std::string() : fmt::format(" id='{}'", id));
}

std::string stream_error_xml(std::string_view condition, std::string_view text) {
  return fmt::format("<stream:error><{} xmlns='{}'/><text xmlns='{}' xml:lang='en'>{}</text></stream:error></stream:stream>",
                     condition, kStreamErrorNs, kStreamErrorNs, xml_escape(text));
}

std::string route_key(std::string_view local, std::string_view remote) { return fmt::format("{}\n{}", local, remote); }

}  // namespace

// ---- shared state -------------------------------------------------------------------------

struct Federation::State : std::enable_shared_from_this<Federation::State> {
  State(S2sOptions o, std::function<bool(std::string_view)> local, Logger& l, MetricsRegistry& m, Offload off,
        RunAfter after, Inbound in)
      : options(std::move(o)),
        is_local(std::move(local)),
        log(l),
        offload(std::move(off)),
        run_after(std::move(after)),
        inbound(std::move(in)),
        out_ok(m.counter("hearth_xmpp_s2s_streams_total", "Server-to-server streams authenticated or refused.",
                         {{"direction", "out"}, {"result", "ok"}})),
        out_failed(m.counter("hearth_xmpp_s2s_streams_total", "Server-to-server streams authenticated or refused.",
                             {{"direction", "out"}, {"result", "failed"}})),
        in_ok(m.counter("hearth_xmpp_s2s_streams_total", "Server-to-server streams authenticated or refused.",
                        {{"direction", "in"}, {"result", "ok"}})),
        in_refused(m.counter("hearth_xmpp_s2s_streams_total", "Server-to-server streams authenticated or refused.",
                             {{"direction", "in"}, {"result", "refused"}})),
        bounced(m.counter("hearth_xmpp_s2s_bounced_total",
                          "Stanzas for remote domains answered with an error (queue full, unreachable).")) {
    if (options.dialback_secret.empty()) options.dialback_secret = random_token(32);
  }

  struct Route {
    Route(std::string l, std::string r, const S2sOptions& o)
        : local(std::move(l)), remote(std::move(r)), queue(o.queue_max_stanzas, o.queue_max_bytes) {}
    std::string local, remote;
    OutboundQueue queue;
    enum class Phase { idle, connecting, ready } phase = Phase::idle;
    std::shared_ptr<net::StreamConnection> conn;
    std::uint64_t generation = 0;  // of the current connection attempt
    int failures = 0;
    bool ever_connected = false;
    bool retry_pending = false;
  };

  S2sOptions options;
  std::function<bool(std::string_view)> is_local;
  Logger& log;
  Offload offload;
  RunAfter run_after;
  Inbound inbound;
  Federation::Connect connect;
  Counter& out_ok;
  Counter& out_failed;
  Counter& in_ok;
  Counter& in_refused;
  Counter& bounced;

  std::mutex mutex;
  std::map<std::string, std::unique_ptr<Route>> routes;  // by route_key

  void send(const std::string& local, const std::string& remote, std::string stanza);
  // Under `mutex`: begins a connection attempt for `r` (the work runs unlocked).
  void start_locked(Route& r);
  void try_targets(std::string key, std::uint64_t generation, std::vector<std::pair<std::string, int>> targets,
                   std::size_t index, std::string local, std::string remote);
  void route_ready(const std::string& key, std::uint64_t generation, std::shared_ptr<net::StreamConnection> conn);
  // XEP-0288: an incoming stream the peer made bidirectional carries our stanzas for
  // (local, remote) unless a stream for that pair is up already. Returns the key and the
  // generation to report its end with (route_down), or nullopt when not used.
  std::optional<std::pair<std::string, std::uint64_t>> attach_bidi(const std::string& local, const std::string& remote,
                                                                   std::shared_ptr<net::StreamConnection> conn);
  void route_down(const std::string& key, std::uint64_t generation, const std::string& why);
  void bounce(std::deque<std::string> stanzas, std::string_view type, std::string_view condition, std::string_view text);
};

namespace {

// Stanzas of one stream (incoming, or outgoing made bidirectional), handed to the worker
// pool one at a time, in order.
struct InboundLine {
  std::mutex mutex;
  std::deque<std::pair<Element, std::size_t>> pending;  // with its size, serialised
  std::size_t pending_bytes = 0;
  bool running = false;
};

// False when the line is full (a flood) or the pool refused the work.
bool deliver_inbound(const std::shared_ptr<Federation::State>& state, const std::shared_ptr<InboundLine>& line,
                     Element st) {
  std::size_t bytes = st.serialize().size();
  {
    std::lock_guard lock(line->mutex);
    if (line->pending_bytes + bytes > state->options.max_pending_inbound_bytes) return false;
    line->pending_bytes += bytes;
    line->pending.emplace_back(std::move(st), bytes);
    if (line->running) return true;
    line->running = true;
  }
  auto job = [line, state] {
    for (;;) {
      Element next("x");
      {
        std::lock_guard lock(line->mutex);
        if (line->pending.empty()) {
          line->running = false;
          return;
        }
        next = std::move(line->pending.front().first);
        line->pending_bytes -= line->pending.front().second;
        line->pending.pop_front();
      }
      state->inbound(std::move(next));
    }
  };
  if (state->offload(job)) return true;
  std::lock_guard lock(line->mutex);
  line->running = false;
  line->pending.clear();
  line->pending_bytes = 0;
  return false;
}

// The checks every stanza from a peer passes: a stanza of jabber:server, from a domain
// authenticated on the stream, to one served here. "" when it passes, else the stream
// error condition (and `text`).
std::string_view check_inbound(const Federation::State& state, const Element& st,
                               const std::function<bool(std::string_view)>& authenticated, std::string& text) {
  if (st.ns() != kServerNs || (st.name() != "message" && st.name() != "presence" && st.name() != "iq")) {
    text = fmt::format("<{}/> in {}", st.name(), st.ns());
    return "unsupported-stanza-type";
  }
  auto from = Jid::parse(st.attr("from"));
  if (!from || !authenticated(from->domain)) {
    text = "'from' is not a domain authenticated on this stream";
    return "invalid-from";
  }
  auto to = Jid::parse(st.attr("to"));
  if (!to || !state.is_local(to->domain)) {
    text = "'to' is not a domain served here";
    return "host-unknown";
  }
  return {};
}

// ---- outgoing ------------------------------------------------------------------------------

class OutSession final : public XmlStreamHandler, public std::enable_shared_from_this<OutSession> {
 public:
  OutSession(std::shared_ptr<Federation::State> state, std::string key, std::uint64_t generation, std::string local,
             std::string remote, std::shared_ptr<net::StreamConnection> conn)
      : state_(std::move(state)),
        key_(std::move(key)),
        generation_(generation),
        local_(std::move(local)),
        remote_(std::move(remote)),
        conn_(std::move(conn)),
        parser_(*this, XmlLimits{state_->options.max_stanza_bytes}) {}

  net::StreamCallbacks callbacks() {
    conn_->set_idle_timeout(state_->options.idle_timeout_seconds);
    conn_->send(stream_header(local_, remote_, {}));
    auto self = shared_from_this();
    net::StreamCallbacks cb;
    cb.on_data = [self](std::string_view bytes) { self->on_data(bytes); };
    cb.on_close = [self] { self->on_close(); };
    cb.on_drain = [self] { self->end("</stream:stream>"); };
    return cb;
  }

  void on_stream_open(const StreamHeader& h) override {
    if (h.content_ns != kServerNs) return fail("the peer's stream is not jabber:server");
    stream_id_ = h.id;
  }

  void on_stanza(Element&& st) override {
    net::HandlerName name("xmpp.s2s.out");
    if (ended_) return;
    if (st.ns() == kStreamNs && st.name() == "features") return on_features(st);
    if (st.ns() == kStreamNs && st.name() == "error") {
      std::string condition;
      for (const auto& c : st.children())
        if (c.ns() == kStreamErrorNs && c.name() != "text") condition = c.name();
      return fail(fmt::format("stream error from the peer: {}", condition));
    }
    if (st.ns() == kTlsNs && st.name() == "proceed" && !tls_) {
      parser_.request_restart(RestartInput::reject_rest);
      auto self = shared_from_this();
      conn_->start_tls_client(remote_, local_, [self](Result<void> r) { self->tls_done(std::move(r)); });
      return;
    }
    if (st.ns() == kSaslNs && st.name() == "success" && tls_ && !authenticated_) {
      authenticated_ = true;
      parser_.request_restart(RestartInput::parse_rest);
      conn_->send(stream_header(local_, remote_, {}));
      return;
    }
    if (st.ns() == kSaslNs && st.name() == "failure") return fail("SASL EXTERNAL refused");
    if (ready_ && bidi_) {
      // XEP-0288: the peer's stanzas for us on our stream; its certificate named remote_.
      std::string text;
      auto condition = check_inbound(*state_, st, [this](std::string_view d) { return d == remote_; }, text);
      if (!condition.empty()) return stream_error(condition, text);
      st.replace_ns(kServerNs, kClientNs);
      if (!deliver_inbound(state_, line_, std::move(st))) stream_error("policy-violation", "too many stanzas waiting: slow down");
      return;
    }
    if (st.ns() == kDialbackNs && st.name() == "result" && dialback_sent_) {
      if (st.attr("type") == "valid") {
        authenticated_ = true;
        return ready();
      }
      std::string condition;
      if (const Element* err = st.child("error")) {
        for (const auto& c : err->children())
          if (c.ns() == kStanzaErrorNs && c.name() != "text") condition = c.name();
      }
      return fail(fmt::format("dialback refused ({})", condition.empty() ? std::string(st.attr("type")) : condition));
    }
    // Stanzas on our outgoing stream (bidirectional streams are not negotiated): ignored.
  }

  void on_stream_close() override { end("</stream:stream>"); }

 private:
  void on_data(std::string_view bytes) {
    if (ended_) return;
    if (auto r = parser_.feed(bytes); !r) fail(fmt::format("bad XML from the peer: {}", r.error().message));
  }

  void on_close() {
    ended_ = true;
    if (reported_) return;
    reported_ = true;
    state_->route_down(key_, generation_, failure_.empty() ? "connection closed" : failure_);
  }

  void on_features(const Element& f) {
    if (!tls_) {
      if (!f.child("starttls", kTlsNs)) return fail("the peer does not offer STARTTLS");
      conn_->send(fmt::format("<starttls xmlns='{}'/>", kTlsNs));
      return;
    }
    if (!authenticated_) {
      if (state_->options.bidi && !bidi_ && f.child("bidi", kBidiFeatureNs)) {
        bidi_ = true;
        conn_->send(fmt::format("<bidi xmlns='{}'/>", kBidiNs));
      }
      bool external = false;
      if (const Element* mechs = f.child("mechanisms", kSaslNs))
        for (const auto& m : mechs->children())
          if (m.name() == "mechanism" && m.text() == "EXTERNAL") external = true;
      if (external) {
        conn_->send(fmt::format("<auth xmlns='{}' mechanism='EXTERNAL'>{}</auth>", kSaslNs, sasl_base64_encode(local_)));
        return;
      }
      if (state_->options.dialback && f.child("dialback", kDialbackFeatureNs)) {
        dialback_sent_ = true;
        conn_->send(fmt::format("<db:result from='{}' to='{}'>{}</db:result>", xml_escape(local_), xml_escape(remote_),
                                dialback_key(state_->options.dialback_secret, remote_, local_, stream_id_)));
        return;
      }
      return fail("the peer offers neither SASL EXTERNAL nor dialback");
    }
    ready();
  }

  void tls_done(Result<void> r) {
    if (ended_) return;
    if (!r) return fail(fmt::format("TLS: {}", r.error().message));
    tls_ = true;
    auto cert = conn_->peer_certificate();
    if (!cert.chain_valid)
      return fail(fmt::format("the peer's certificate does not verify: {}", cert.present ? cert.verify_error : "none"));
    if (!certificate_matches_domain(cert, remote_)) return fail(fmt::format("the peer's certificate is not for {}", remote_));
    conn_->send(stream_header(local_, remote_, {}));
  }

  void ready() {
    if (ready_) return;
    ready_ = true;
    state_->out_ok.inc();
    state_->log.info("xmpp.s2s_out_ready", {{"from", local_}, {"to", remote_}});
    state_->route_ready(key_, generation_, conn_);
  }

  void fail(std::string why) {
    if (ended_) return;
    if (!ready_) state_->out_failed.inc();
    state_->log.info("xmpp.s2s_out_failed", {{"from", local_}, {"to", remote_}, {"reason", why}});
    failure_ = std::move(why);
    end("</stream:stream>");
  }

  void end(std::string_view farewell) {
    if (ended_) return;
    ended_ = true;
    conn_->send(std::string(farewell));
    conn_->close();
  }

  void stream_error(std::string_view condition, std::string_view text) {
    failure_ = fmt::format("sent stream error {}", condition);
    end(stream_error_xml(condition, text));
  }

  std::shared_ptr<Federation::State> state_;
  std::shared_ptr<InboundLine> line_ = std::make_shared<InboundLine>();
  bool bidi_ = false;
  std::string key_;
  std::uint64_t generation_;
  std::string local_, remote_;
  std::shared_ptr<net::StreamConnection> conn_;
  XmlStreamParser parser_;
  std::string stream_id_;
  std::string failure_;
  bool tls_ = false;
  bool authenticated_ = false;
  bool dialback_sent_ = false;
  bool ready_ = false;
  bool ended_ = false;
  bool reported_ = false;
};

// ---- incoming ------------------------------------------------------------------------------

class InSession final : public XmlStreamHandler, public std::enable_shared_from_this<InSession> {
 public:
  InSession(std::shared_ptr<Federation::State> state, std::shared_ptr<net::StreamConnection> conn)
      : state_(std::move(state)), conn_(std::move(conn)), parser_(*this, XmlLimits{state_->options.max_stanza_bytes}) {}

  net::StreamCallbacks callbacks() {
    conn_->set_idle_timeout(state_->options.idle_timeout_seconds);
    conn_->set_read_rate(state_->options.read_bytes_per_second, state_->options.read_burst_bytes);
    auto self = shared_from_this();
    net::StreamCallbacks cb;
    cb.on_data = [self](std::string_view bytes) {
      if (self->closed_) return;
      if (auto r = self->parser_.feed(bytes); !r)
        self->stream_error(stream_error_condition(self->parser_.last_error_kind()), r.error().message);
    };
    cb.on_close = [self] {
      self->closed_ = true;
      for (const auto& [key, generation] : std::exchange(self->bidi_routes_, {}))
        self->state_->route_down(key, generation, "bidirectional stream closed");
    };
    cb.on_drain = [self] { self->stream_error("system-shutdown", "the server is restarting"); };
    return cb;
  }

  void on_stream_open(const StreamHeader& h) override {
    if (h.content_ns != kServerNs) return stream_error("invalid-namespace", "this port serves jabber:server");
    auto to = prep_domain(h.to);
    if (!to || !state_->is_local(*to)) return stream_error("host-unknown", fmt::format("this server does not serve {}", h.to));
    auto from = prep_domain(h.from);
    if (h.from.empty() || !from) return stream_error("invalid-from", "a server stream names its domain in 'from'");
    if (!local_.empty() && (*to != local_ || *from != remote_))
      return stream_error("invalid-from", "a restarted stream must keep its addresses");
    local_ = *to;
    remote_ = *from;
    stream_id_ = random_token(12);
    conn_->send(stream_header(local_, remote_, stream_id_));
    header_sent_ = true;
    send_features();
  }

  void on_stanza(Element&& st) override {
    net::HandlerName name("xmpp.s2s.in");
    if (closed_) return;
    if (!tls_) {
      if (st.name() == "starttls" && st.ns() == kTlsNs) return start_tls();
      return stream_error("policy-violation", "STARTTLS is required before anything else");
    }
    if (st.ns() == kDialbackNs && st.name() == "result") return on_dialback_result(st);
    if (st.ns() == kDialbackNs && st.name() == "verify") return on_dialback_verify(st);
    if (st.ns() == kBidiNs && st.name() == "bidi") {
      bidi_ = state_->options.bidi;
      return;
    }
    if (authorized_.empty()) {
      if (st.ns() == kSaslNs && st.name() == "auth") return on_auth(st);
      return stream_error("not-authorized", "authenticate first");
    }
    std::string text;
    auto condition = check_inbound(*state_, st, [this](std::string_view d) { return authorized_.count(std::string(d)) > 0; }, text);
    if (!condition.empty()) return stream_error(condition, text);
    st.replace_ns(kServerNs, kClientNs);
    if (!deliver_inbound(state_, line_, std::move(st))) stream_error("policy-violation", "too many stanzas waiting: slow down");
  }

  void on_stream_close() override {
    if (closed_) return;
    closed_ = true;
    conn_->send("</stream:stream>");
    conn_->close();
  }

 private:
  bool certificate_ok(const std::string& domain, std::string* why) const {
    auto cert = conn_->peer_certificate();
    if (!cert.present) {
      *why = "no client certificate";
      return false;
    }
    if (!cert.chain_valid) {
      *why = fmt::format("the certificate does not verify: {}", cert.verify_error);
      return false;
    }
    if (!certificate_matches_domain(cert, domain)) {
      *why = fmt::format("the certificate is not for {}", domain);
      return false;
    }
    return true;
  }

  void send_features() {
    std::string f = "<stream:features>";
    if (state_->options.bidi && authorized_.empty()) f += fmt::format("<bidi xmlns='{}'/>", kBidiFeatureNs);
    if (!tls_) {
      f += fmt::format("<starttls xmlns='{}'><required/></starttls>", kTlsNs);
    } else if (authorized_.empty()) {
      std::string why;
      if (certificate_ok(remote_, &why)) f += fmt::format("<mechanisms xmlns='{}'><mechanism>EXTERNAL</mechanism></mechanisms>", kSaslNs);
      if (state_->options.dialback) f += fmt::format("<dialback xmlns='{}'><errors/></dialback>", kDialbackFeatureNs);
      else if (!certificate_ok(remote_, &why)) {
        conn_->send(f + "</stream:features>");
        refuse("not-authorized", why);
        return;
      }
    }
    f += "</stream:features>";
    conn_->send(std::move(f));
  }

  void start_tls() {
    conn_->send(fmt::format("<proceed xmlns='{}'/>", kTlsNs));
    parser_.request_restart(RestartInput::reject_rest);
    auto self = shared_from_this();
    conn_->start_tls([self](Result<void> r) {
      if (!r) return;  // the connection closes
      self->tls_ = true;
    });
  }

  void on_auth(const Element& st) {
    if (st.attr("mechanism") != "EXTERNAL") {
      conn_->send(fmt::format("<failure xmlns='{}'><invalid-mechanism/></failure>", kSaslNs));
      return;
    }
    std::string text = st.text(), authzid;
    if (!text.empty() && text != "=") {
      if (!sasl_base64_decode(text, authzid)) {
        conn_->send(fmt::format("<failure xmlns='{}'><incorrect-encoding/></failure>", kSaslNs));
        return;
      }
      auto prepped = prep_domain(authzid);
      if (!prepped || *prepped != remote_) {
        conn_->send(fmt::format("<failure xmlns='{}'><invalid-authzid/></failure>", kSaslNs));
        return refuse("not-authorized", "the authorization identity is not the stream's 'from'");
      }
    }
    std::string why;
    if (!certificate_ok(remote_, &why)) {
      conn_->send(fmt::format("<failure xmlns='{}'><not-authorized/><text xml:lang='en'>{}</text></failure>", kSaslNs,
                              xml_escape(why)));
      return refuse("not-authorized", why);
    }
    authorized_.insert(remote_);
    state_->in_ok.inc();
    state_->log.info("xmpp.s2s_in_authenticated", {{"from", remote_}, {"to", local_}, {"method", "EXTERNAL"}});
    attach_bidi(remote_);
    conn_->send(fmt::format("<success xmlns='{}'/>", kSaslNs));
    parser_.request_restart(RestartInput::parse_rest);
  }

  // XEP-0220 inside TLS: the claimed domain is accepted when the peer's certificate
  // verifies for it (RFC 6120 §13.7.2, XEP-0344); otherwise refused with a dialback error —
  // no verification callback, so a certificate that does not match never gets in.
  void on_dialback_result(const Element& st) {
    if (!state_->options.dialback) return stream_error("unsupported-stanza-type", "dialback is not enabled");
    auto from = prep_domain(st.attr("from"));
    auto to = prep_domain(st.attr("to"));
    std::string reply_from(st.attr("to")), reply_to(st.attr("from"));
    auto answer = [&](std::string_view type, std::string_view extra) {
      conn_->send(fmt::format("<db:result from='{}' to='{}' type='{}'>{}</db:result>", xml_escape(reply_from),
                              xml_escape(reply_to), type, extra));
    };
    if (!to || !state_->is_local(*to))
      return answer("error", fmt::format("<error type='cancel'><item-not-found xmlns='{}'/></error>", kStanzaErrorNs));
    std::string why;
    if (!from || !certificate_ok(*from, &why)) {
      state_->in_refused.inc();
      state_->log.info("xmpp.s2s_in_refused", {{"from", std::string(st.attr("from"))}, {"to", local_}, {"method", "dialback"}, {"reason", why}});
      return answer("error", fmt::format("<error type='cancel'><not-authorized xmlns='{0}'/><text xmlns='{0}' xml:lang='en'>{1}</text></error>",
                                         kStanzaErrorNs, xml_escape(why.empty() ? "bad domain" : why)));
    }
    bool first = authorized_.empty();
    authorized_.insert(*from);
    if (first) state_->in_ok.inc();
    state_->log.info("xmpp.s2s_in_authenticated", {{"from", *from}, {"to", local_}, {"method", "dialback"}});
    answer("valid", {});
    attach_bidi(*from);
  }

  // We are the authoritative server: is this the key we gave on a stream we opened?
  void on_dialback_verify(const Element& st) {
    std::string from(st.attr("from")), to(st.attr("to")), id(st.attr("id"));
    bool valid = state_->is_local(to) && !id.empty() &&
                 st.text() == dialback_key(state_->options.dialback_secret, from, to, id);
    conn_->send(fmt::format("<db:verify from='{}' to='{}' id='{}' type='{}'/>", xml_escape(to), xml_escape(from),
                            xml_escape(id), valid ? "valid" : "invalid"));
  }

  void attach_bidi(const std::string& remote) {
    if (!bidi_) return;
    if (auto route = state_->attach_bidi(local_, remote, conn_)) bidi_routes_.push_back(std::move(*route));
  }

  void refuse(std::string_view condition, std::string_view why) {
    state_->in_refused.inc();
    state_->log.info("xmpp.s2s_in_refused", {{"from", remote_}, {"to", local_}, {"reason", std::string(why)}});
    stream_error(condition, why);
  }

  void stream_error(std::string_view condition, std::string_view text) {
    if (closed_) return;
    closed_ = true;
    if (!header_sent_) conn_->send(stream_header(local_, remote_, random_token(12)));
    conn_->send(stream_error_xml(condition, text));
    conn_->close();
  }

  std::shared_ptr<Federation::State> state_;
  std::shared_ptr<net::StreamConnection> conn_;
  XmlStreamParser parser_;
  std::shared_ptr<InboundLine> line_ = std::make_shared<InboundLine>();
  std::string local_, remote_, stream_id_;
  std::set<std::string> authorized_;  // remote domains this stream may send from
  std::vector<std::pair<std::string, std::uint64_t>> bidi_routes_;  // routes this stream carries (XEP-0288)
  bool bidi_ = false;
  bool tls_ = false;
  bool header_sent_ = false;
  bool closed_ = false;
};

}  // namespace

// ---- routes ----------------------------------------------------------------------------------

void Federation::State::send(const std::string& local, const std::string& remote, std::string stanza) {
  std::unique_lock lock(mutex);
  auto& slot = routes[route_key(local, remote)];
  if (!slot) slot = std::make_unique<Route>(local, remote, options);
  Route& r = *slot;
  if (r.phase == Route::Phase::ready && r.conn) {
    r.conn->send(std::move(stanza));
    return;
  }
  if (!r.queue.push(stanza)) {
    lock.unlock();
    std::deque<std::string> one;
    one.push_back(std::move(stanza));
    bounce(std::move(one), "wait", "resource-constraint", fmt::format("too many stanzas waiting for {}", remote));
    return;
  }
  if (r.phase == Route::Phase::idle && !r.retry_pending) start_locked(r);
}

void Federation::State::start_locked(Route& r) {
  r.phase = Route::Phase::connecting;
  std::uint64_t generation = ++r.generation;
  std::string key = route_key(r.local, r.remote);
  for (const auto& s : options.static_routes) {
    if (s.domain == r.remote) {
      std::vector<std::pair<std::string, int>> targets{{s.host, s.port}};
      auto self = shared_from_this();
      run_after(std::chrono::milliseconds(0), [self, key, generation, targets, local = r.local, remote = r.remote] {
        self->try_targets(key, generation, targets, 0, local, remote);
      });
      return;
    }
  }
  auto self = shared_from_this();
  bool queued = offload([self, key, generation, local = r.local, remote = r.remote] {
    auto order = order_srv(lookup_srv("_xmpp-server._tcp." + remote + "."),
                           [](std::uint32_t bound) { return bound ? randombytes_uniform(bound) : 0u; });
    std::vector<std::pair<std::string, int>> targets;
    for (auto& rec : order.records) targets.emplace_back(rec.target, rec.port);
    if (order.records.empty() && !order.decidedly_absent) targets.emplace_back(remote, 5269);  // RFC 6120 §3.2.2
    if (targets.empty()) return self->route_down(key, generation, "no server for the domain (SRV '.')");
    self->run_after(std::chrono::milliseconds(0), [self, key, generation, targets, local, remote] {
      self->try_targets(key, generation, targets, 0, local, remote);
    });
  });
  if (!queued) {
    r.phase = Route::Phase::idle;
    r.retry_pending = true;
    run_after(std::chrono::seconds(1), [self, key] {
      std::lock_guard lock(self->mutex);
      auto it = self->routes.find(key);
      if (it == self->routes.end()) return;
      it->second->retry_pending = false;
      if (it->second->phase == Route::Phase::idle && !it->second->queue.empty()) self->start_locked(*it->second);
    });
  }
}

void Federation::State::try_targets(std::string key, std::uint64_t generation,
                                    std::vector<std::pair<std::string, int>> targets, std::size_t index,
                                    std::string local, std::string remote) {
  if (!connect) return route_down(key, generation, "federation has no connector");
  if (index >= targets.size()) return route_down(key, generation, "no server reachable");
  net::OutgoingStreamSpec spec;
  spec.host = targets[index].first;
  spec.port = targets[index].second;
  spec.connect_timeout_seconds = options.connect_timeout_seconds;
  auto self = shared_from_this();
  connect(spec, [self, key, generation, targets, index, local, remote](
                    Result<std::shared_ptr<net::StreamConnection>> conn) -> net::StreamCallbacks {
    if (!conn) {
      self->log.info("xmpp.s2s_connect_failed",
                     {{"to", remote}, {"host", targets[index].first}, {"error", conn.error().message}});
      self->try_targets(key, generation, targets, index + 1, local, remote);
      return {};
    }
    auto session = std::make_shared<OutSession>(self, key, generation, local, remote, *conn);
    return session->callbacks();
  });
}

void Federation::State::route_ready(const std::string& key, std::uint64_t generation,
                                    std::shared_ptr<net::StreamConnection> conn) {
  std::lock_guard lock(mutex);
  auto it = routes.find(key);
  if (it == routes.end() || it->second->generation != generation) return conn->close();
  Route& r = *it->second;
  r.phase = Route::Phase::ready;
  r.conn = std::move(conn);
  r.failures = 0;
  r.ever_connected = true;
  for (auto& s : r.queue.take_all()) r.conn->send(std::move(s));
}

std::optional<std::pair<std::string, std::uint64_t>> Federation::State::attach_bidi(
    const std::string& local, const std::string& remote, std::shared_ptr<net::StreamConnection> conn) {
  std::lock_guard lock(mutex);
  std::string key = route_key(local, remote);
  auto& slot = routes[key];
  if (!slot) slot = std::make_unique<Route>(local, remote, options);
  Route& r = *slot;
  if (r.phase == Route::Phase::ready && r.conn) return std::nullopt;
  std::uint64_t generation = ++r.generation;  // an attempt of ours in flight is superseded
  r.phase = Route::Phase::ready;
  r.conn = std::move(conn);
  r.failures = 0;
  r.ever_connected = true;
  r.retry_pending = false;
  log.info("xmpp.s2s_bidi", {{"from", local}, {"to", remote}});
  for (auto& s : r.queue.take_all()) r.conn->send(std::move(s));
  return std::make_pair(key, generation);
}

void Federation::State::route_down(const std::string& key, std::uint64_t generation, const std::string& why) {
  std::deque<std::string> give_up;
  bool ever = false;
  std::string remote;
  {
    std::lock_guard lock(mutex);
    auto it = routes.find(key);
    if (it == routes.end() || it->second->generation != generation) return;
    Route& r = *it->second;
    r.phase = Route::Phase::idle;
    r.conn.reset();
    remote = r.remote;
    if (r.queue.empty()) return;
    ++r.failures;
    ever = r.ever_connected;
    if (r.failures >= options.max_attempts) {
      r.failures = 0;
      give_up = r.queue.take_all();
    } else {
      r.retry_pending = true;
      int delay = retry_delay_seconds(r.failures, options.retry_initial_seconds, options.retry_max_seconds);
      log.info("xmpp.s2s_retry", {{"to", r.remote}, {"in_seconds", static_cast<std::int64_t>(delay)}, {"reason", why}});
      auto self = shared_from_this();
      run_after(std::chrono::seconds(delay), [self, key] {
        std::lock_guard relock(self->mutex);
        auto found = self->routes.find(key);
        if (found == self->routes.end()) return;
        Route& again = *found->second;
        again.retry_pending = false;
        if (again.phase == Route::Phase::idle && !again.queue.empty()) self->start_locked(again);
      });
    }
  }
  if (!give_up.empty())
    bounce(std::move(give_up), "cancel", ever ? "remote-server-timeout" : "remote-server-not-found",
           fmt::format("{} is unreachable: {}", remote, why));
}

void Federation::State::bounce(std::deque<std::string> stanzas, std::string_view type, std::string_view condition,
                               std::string_view text) {
  bounced.inc(stanzas.size());
  std::vector<Element> errors;
  for (auto& s : stanzas) {
    auto st = parse_element(s);
    if (!st) continue;
    st->replace_ns(kServerNs, kClientNs);
    st->replace_ns("", kClientNs);  // serialised without xmlns for the s2s stream
    std::string t(st->attr("type"));
    // RFC 6120 §10.4.3: messages and iq requests are answered; presence is not worth it.
    if (t == "error" || st->name() == "presence" || (st->name() == "iq" && t != "get" && t != "set")) continue;
    errors.push_back(make_error_reply(*st, type, condition, text));
  }
  if (errors.empty()) return;
  auto in = inbound;
  offload([in, errors = std::move(errors)]() mutable {
    for (auto& e : errors) in(std::move(e));
  });
}

// ---- Federation --------------------------------------------------------------------------

Federation::Federation(S2sOptions options, std::function<bool(std::string_view)> is_local, Logger& log,
                       MetricsRegistry& metrics, Offload offload, RunAfter run_after, Inbound inbound)
    : state_(std::make_shared<State>(std::move(options), std::move(is_local), log, metrics, std::move(offload),
                                     std::move(run_after), std::move(inbound))) {}

Federation::~Federation() = default;

void Federation::set_connector(Connect connect) { state_->connect = std::move(connect); }

void Federation::send(const std::string& local_domain, const std::string& remote_domain, std::string stanza) {
  state_->send(local_domain, remote_domain, std::move(stanza));
}

net::StreamAcceptor Federation::acceptor() {
  auto state = state_;
  return [state](std::shared_ptr<net::StreamConnection> conn) {
    auto session = std::make_shared<InSession>(state, std::move(conn));
    return session->callbacks();
  };
}

}  // namespace hearth::xmpp
