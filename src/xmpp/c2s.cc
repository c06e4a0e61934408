// Client-to-server sessions (RFC 6120): stream negotiation, STARTTLS, SASL, resource
// binding; bound sessions hand their stanzas to ImRouter on the worker pool.

#include <atomic>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "accounts/accounts.h"
#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"
#include "xmpp/caps.h"
#include "xmpp/im.h"
#include "xmpp/jid.h"
#include "xmpp/mod_blocking.h"
#include "xmpp/mod_extdisco.h"
#include "xmpp/mod_last.h"
#include "xmpp/mod_pep.h"
#include "xmpp/mod_push.h"
#include "xmpp/mod_upload.h"
#include "blobs/blobs.h"
#include "xmpp/muc.h"
#include "xmpp/mod_private.h"
#include "xmpp/mod_vcard.h"
#include "xmpp/mod_mam.h"
#include "xmpp/registry.h"
#include "xmpp/s2s.h"
#include "xmpp/sasl2.h"
#include "xmpp/fast.h"
#include "xmpp/sasl.h"
#include "xmpp/sm_handover.h"
#include "xmpp/xml.h"
#include "xmpp/xmpp.h"
#include "xmpp/xmpp_store.h"
#include "xmpp/ws_framing.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kTlsNs = "urn:ietf:params:xml:ns:xmpp-tls";
constexpr std::string_view kSaslNs = "urn:ietf:params:xml:ns:xmpp-sasl";
constexpr std::string_view kBindNs = "urn:ietf:params:xml:ns:xmpp-bind";
constexpr std::string_view kSessionNs = "urn:ietf:params:xml:ns:xmpp-session";
constexpr std::string_view kStreamErrorNs = "urn:ietf:params:xml:ns:xmpp-streams";
constexpr std::string_view kSaslCbNs = "urn:xmpp:sasl-cb:0";
constexpr std::string_view kSmNs = "urn:xmpp:sm:3";
constexpr std::string_view kRegisterNs = "jabber:iq:register";
constexpr std::string_view kCsiNs = "urn:xmpp:csi:0";
constexpr std::string_view kParsNs = "urn:xmpp:pars:0";
constexpr std::size_t kMaxQueuedStanzas = 256;

}  // namespace

// ---- the service --------------------------------------------------------------------

struct XmppService::Impl {
  Impl(XmppOptions o, accounts::Accounts& a, store::Store& s, Clock& c, Logger& l, MetricsRegistry& m, Offload off,
       RunAfter after)
      : options(std::move(o)),
        accounts(a),
        store(s),
        clock(c),
        log(l),
        metrics(m),
        offload(std::move(off)),
        run_after(std::move(after)),
        xstore(s, c, XmppStoreOptions{o.max_roster_items, o.max_offline_messages}),
        handovers(s),
        fast(s, c, FastOptions{std::int64_t{o.fast_token_ttl_days} * 24 * 3600 * 1000}),
        im(options.domains, a, xstore, registry, c, l, m),
        sessions_open(m.gauge("hearth_xmpp_sessions", "Bound XMPP client sessions.")),
        auth_ok(m.counter("hearth_xmpp_auth_total", "SASL authentications.", {{"result", "success"}})),
        auth_failed(m.counter("hearth_xmpp_auth_total", "SASL authentications.", {{"result", "failure"}})),
        stream_errors(m.counter("hearth_xmpp_stream_errors_total", "Streams closed with a stream error.")),
        resumptions(m.counter("hearth_xmpp_sm_resumptions_total", "XEP-0198 sessions resumed on a new connection.")),
        archive_purged(m.counter("hearth_xmpp_archive_purged_total", "Archived messages deleted by the retention purge.")) {
    if (options.sasl_secret.empty()) options.sasl_secret = random_token(32);
    im.set_executor([offload = offload, run_after = run_after,
                     deferred = &m.counter("hearth_xmpp_route_deferred_total",
                                           "Message routings deferred because the worker pool was full.")](
                        std::function<void()> job) {
      offload_or_retry(offload, run_after, *deferred, std::make_shared<std::function<void()>>(std::move(job)));
      return true;
    });
  }

  // Routing after an archive commit must run on the worker pool (it may block on the
  // store). When the pool's queue is full, the hand-off is retried from a loop timer; each
  // session has at most one such stanza in flight, so the waiting ones stay bounded.
  static void offload_or_retry(const Offload& offload, const RunAfter& run_after, Counter& deferred,
                               std::shared_ptr<std::function<void()>> job) {
    if (offload([job] { (*job)(); })) return;
    deferred.inc();
    run_after(std::chrono::milliseconds(5),
              [offload, run_after, &deferred, job] { offload_or_retry(offload, run_after, deferred, job); });
  }

  XmppOptions options;
  accounts::Accounts& accounts;
  store::Store& store;
  Clock& clock;
  Logger& log;
  MetricsRegistry& metrics;
  Offload offload;
  RunAfter run_after;
  XmppStore xstore;
  SmHandoverStore handovers;
  // Graceful restart (incident I18): the coming drain hands resumable sessions to the
  // successor process instead of ending them.
  std::atomic<bool> handing_over{false};
  FastTokens fast;
  SessionRegistry registry;
  ImRouter im;
  Gauge& sessions_open;
  Counter& auth_ok;
  Counter& auth_failed;
  Counter& stream_errors;
  Counter& resumptions;
  Counter& archive_purged;
  std::atomic<std::uint64_t> next_id{1};
  std::shared_ptr<BlockList> blocks;
  std::shared_ptr<Pep> pep;
  std::shared_ptr<LastActivity> last;
  std::shared_ptr<PushService> push;
  std::vector<std::shared_ptr<HttpUploadService>> uploads;  // one per domain; they share tables
  std::mutex url_mutex;
  std::string public_url;  // https://host:port, once the listeners are bound
  // Per-module removal of an account's data (filled by migrate()).
  std::vector<std::function<Result<void>(const std::string& bare)>> erasers;
  std::shared_ptr<Federation> federation;  // when s2s_enabled

  // XEP-0198 state of one bound session that enabled stream management; shared by the
  // connection that owns it now and the resumption map.
  struct SmState {
    std::string id;  // empty unless resumable
    SessionIdentity me;
    std::atomic<std::uint32_t> handled{0};  // client stanzas handled (durable)
    std::mutex mutex;
    bool detached = false;
    bool ended = false;
    bool restored = false;  // handed over by the previous process (a row in xmpp_sm_handover)
    std::uint64_t generation = 0;  // bumps on every detach/attach, cancelling old timers
    std::function<void()> take_over;  // closes the connection that owns the state now
  };
  std::mutex sm_mutex;
  std::unordered_map<std::string, std::shared_ptr<SmState>> resumable;

  // The stream-management part of a handed-over session's record (graceful restart): its
  // identity, counters and what the client has not acknowledged, taken from its sink.
  void take_stream_state(HandedOverSession& rec, const SessionIdentity& me, const SmState& state) {
    auto frozen = me.sink->hand_over();
    rec.sm_id = state.id;
    rec.localpart = me.localpart;
    rec.domain = me.domain;
    rec.resource = me.resource;
    rec.handled = state.handled.load();
    rec.sent = frozen.sent;
    rec.acked = frozen.acked;
    rec.unacked = std::move(frozen.unacked);
    rec.saved_ms = clock.now_ms();
  }

  // A bound session is over for good: it leaves the registry, its contacts see it go,
  // and what its client never acknowledged is re-routed (offline storage).
  void end_session(const SessionIdentity& me, const std::string& sm_id, bool restored = false) {
    if (!sm_id.empty()) {
      std::lock_guard lock(sm_mutex);
      resumable.erase(sm_id);
    }

    bool was_available = false;
    bool registered = false;
    for (const auto& s : registry.sessions(me.bare))
      if (s.id == me.id) {
        registered = true;
        was_available = s.available;
      }
    if (registered) {
      registry.unbind(me.bare, me.id);
      sessions_open.add(-1);
    }
    if (blocks) blocks->session_closed(me.bare, me.id);
    auto unacked = me.sink->take_unacked();
    auto self = this;
    offload([self, me, was_available, unacked = std::move(unacked), restored, sm_id]() mutable {
      self->im.session_closed(me, was_available);
      self->im.reroute_unacked(me.bare, std::move(unacked));
      if (restored) (void)self->handovers.remove(sm_id);  // its stanzas are rerouted now
    });
  }
};

namespace {

// Answers SASL's credential questions for one domain from accounts/ (worker thread).
class AccountCredentials final : public SaslCredentials {
 public:
  AccountCredentials(accounts::Accounts& accounts, std::string domain) : accounts_(accounts), domain_(std::move(domain)) {}
  Result<accounts::ScramCredentials> scram(std::string_view localpart, accounts::ScramHash hash) override {
    return accounts_.scram_credentials(domain_, localpart, hash);
  }
  Result<void> verify_plain(std::string_view localpart, std::string_view password) override {
    auto r = accounts_.verify_password(domain_, localpart, password);
    if (!r) return tl::unexpected(r.error());
    return ok();
  }

 private:
  accounts::Accounts& accounts_;
  std::string domain_;
};

class C2sSession final : public XmlStreamHandler, public std::enable_shared_from_this<C2sSession> {
 public:
  C2sSession(std::shared_ptr<XmppService::Impl> svc, std::shared_ptr<net::StreamConnection> conn, bool direct_tls)
      : svc_(std::move(svc)),
        conn_(std::move(conn)),
        parser_(*this, XmlLimits{svc_->options.max_stanza_bytes}),
        tls_(direct_tls) {
    conn_->set_idle_timeout(svc_->options.idle_timeout_seconds);
  }

  // ---- net callbacks (shard thread) ----
  void on_data(std::string_view bytes) {
    if (closed_) return;
    auto r = parser_.feed(bytes);
    if (!r) {
      if (!header_sent_) send_header(svc_->options.domains.front());
      stream_error(stream_error_condition(parser_.last_error_kind()), r.error().message);
    }
  }

  void on_close() {
    if (closed_finally_) return;
    closed_finally_ = true;
    closed_ = true;
    queued_.clear();
    if (handed_over_) {
      // Stanzas routed to this session after its state was saved: to offline storage.
      auto late = me_.sink->take_unacked();
      if (!late.empty())
        svc_->offload([svc = svc_, bare = me_.bare, late = std::move(late)]() mutable {
          svc->im.reroute_unacked(bare, std::move(late));
        });
      return;
    }
    if (!bound_ || taken_over_) return;
    bool displaced = !svc_->registry.find(me_.bare, me_.resource) ||
                     svc_->registry.find(me_.bare, me_.resource)->id != me_.id;
    if (sm_ && !sm_->id.empty() && !ending_ && !displaced) {
      // XEP-0198: keep the session for its client to resume; stanzas queue meanwhile.
      std::uint64_t generation;
      {
        std::lock_guard lock(sm_->mutex);
        sm_->detached = true;
        sm_->take_over = nullptr;
        generation = ++sm_->generation;
      }
      me_.sink->detach();
      auto svc = svc_;
      auto state = sm_;
      svc_->run_after(std::chrono::seconds(svc_->options.resume_timeout_seconds), [svc, state, generation] {
        {
          std::lock_guard lock(state->mutex);
          if (state->generation != generation || !state->detached || state->ended) return;
          state->ended = true;
        }
        svc->log.info("xmpp.sm_expired", {{"jid", state->me.full}});
        svc->end_session(state->me, state->id, state->restored);
      });
      return;
    }
    if (sm_) {
      std::lock_guard lock(sm_->mutex);
      sm_->ended = true;
    }
    svc_->end_session(me_, sm_ ? sm_->id : std::string(), sm_ && sm_->restored);
  }

  void on_drain() {
    if (svc_->handing_over.load() && bound_ && sm_ && !sm_->id.empty() && !closed_) {
      // Graceful restart: stop reading (stanzas not yet handled are not counted in h, so
      // the client re-sends them after resuming), let a running job finish, then save the
      // session for the successor and drop the connection without a stream error.
      closed_ = true;
      handing_over_ = true;
      queued_.clear();
      if (!busy_) hand_over();
      return;
    }
    stream_error("system-shutdown", "the server is restarting");
  }

  // ---- parser callbacks (shard thread) ----
  void on_stream_open(const StreamHeader& h) override {
    if (h.content_ns != kClientNs) {
      send_header(svc_->options.domains.front());
      stream_error("invalid-namespace", "this port serves jabber:client");
      return;
    }
    std::string to = h.to.empty() ? svc_->options.domains.front() : h.to;
    auto domain = prep_domain(to);
    if (!domain || !svc_->im.is_local_domain(*domain)) {
      send_header(svc_->options.domains.front());
      stream_error("host-unknown", fmt::format("this server does not serve {}", to));
      return;
    }
    if (!domain_.empty() && *domain != domain_) {
      send_header(domain_);
      stream_error("host-unknown", "a restarted stream must address the same domain");
      return;
    }
    domain_ = *domain;
    send_header(domain_);
    send_features();
  }

  void on_stanza(Element&& st) override {
    net::HandlerName name("xmpp.c2s.stanza");
    if (closed_) return;
    if (busy_) {
      if (queued_.size() >= kMaxQueuedStanzas) {
        stream_error("policy-violation", "too many stanzas waiting");
        return;
      }
      queued_.push_back(std::move(st));
      return;
    }
    dispatch(std::move(st));
  }

  void on_stream_close() override {
    if (closed_) return;
    ending_ = true;  // a clean close ends the session: nothing to resume
    conn_->send("</stream:stream>");
    closed_ = true;
    conn_->close();
  }

 private:
  enum class Phase { features, tls_handshake, authenticating, authenticated, bound };

  void dispatch(Element st) {
    if (!tls_) {
      if (st.name() == "starttls" && st.ns() == kTlsNs) return start_tls();
      return stream_error("policy-violation", "STARTTLS is required before anything else");
    }
    if (phase_ == Phase::features || phase_ == Phase::authenticating) {
      if (st.ns() == kSaslNs) return handle_sasl(st);
      if (st.ns() == kSasl2Ns) return handle_sasl2(st);
      if (st.name() == "starttls") return stream_error("policy-violation", "TLS is already in place");
      if (st.name() == "iq" && st.ns() == kClientNs && phase_ == Phase::features) return preauth_iq(std::move(st));
      return stream_error("not-authorized", "authenticate first");
    }
    if (st.ns() == kSmNs) return handle_sm(st);
    if (st.ns() == kCsiNs && phase_ == Phase::bound && (st.name() == "active" || st.name() == "inactive")) {
      me_.sink->set_active(st.name() == "active");
      return;
    }
    if (st.ns() != kClientNs || (st.name() != "iq" && st.name() != "message" && st.name() != "presence"))
      return stream_error("unsupported-stanza-type", fmt::format("<{}/> in {}", st.name(), st.ns()));
    if (phase_ == Phase::authenticated) {
      const Element* bind = st.name() == "iq" && st.attr("type") == "set" ? st.child("bind", kBindNs) : nullptr;
      if (bind) return do_bind(st, *bind);
      if (st.name() == "iq") {
        Element r = make_error_reply(st, "cancel", "not-allowed", "bind a resource first");
        r.remove_attr("to");
        return send_stanza(r);
      }
      return stream_error("not-authorized", "bind a resource first");
    }
    // Bound: the router does the rest on the worker pool, one stanza at a time.
    if (st.name() == "iq" && st.child("bind", kBindNs)) {
      Element r = make_error_reply(st, "cancel", "not-allowed", "a resource is already bound");
      return send_stanza(r);
    }
    // The stanza counts as handled (XEP-0198 h) only once the router says it finished:
    // delivered, or durably stored.
    run_until_finished(
        [svc = svc_, me = me_, st = std::move(st)](ImRouter::Finished finished) mutable {
          svc->im.handle_from_client(me, std::move(st), std::move(finished));
        },
        [sm = sm_] {
          if (sm) ++sm->handled;
        });
  }

  // Before authentication only account creation is allowed: XEP-0077 in-band
  // registration, gated by the domain's policy and XEP-0401 invitation tokens.
  void preauth_iq(Element st) {
    const Element* payload = nullptr;
    for (const auto& c : st.children()) payload = &c;
    std::string type(st.attr("type"));
    auto answer = [this, st](std::optional<Element> payload, std::string_view err_type = {},
                             std::string_view condition = {}, std::string_view text = {}) {
      if (!condition.empty()) {
        Element e = make_error_reply(st, err_type, condition, text);
        e.remove_attr("to");
        return send_stanza(e);
      }
      Element r("iq", std::string(kClientNs));
      r.set_attr("type", "result");
      r.set_attr("id", std::string(st.attr("id")));
      if (payload) r.add_child(std::move(*payload));
      send_stanza(r);
    };
    if (!payload) return answer(std::nullopt, "modify", "bad-request", "empty iq");
    if (payload->ns() == kParsNs && payload->name() == "preauth" && type == "set") {
      std::string token(payload->attr("token"));
      auto ok = std::make_shared<bool>(false);
      auto accounts = &svc_->accounts;
      return run_blocking([accounts, token, ok] { *ok = static_cast<bool>(accounts->check_invite(token)); },
                          [self = shared_from_this(), token, ok, answer] {
                            if (!*ok) return answer(std::nullopt, "cancel", "item-not-found", "no such invitation");
                            self->invite_token_ = token;
                            answer(std::nullopt);
                          });
    }
    if (payload->ns() != kRegisterNs || payload->name() != "query")
      return answer(std::nullopt, "cancel", "service-unavailable", "authenticate first");
    if (type == "get") {
      Element q("query", std::string(kRegisterNs));
      q.add_child(Element("instructions", std::string(kRegisterNs)))
          .add_text("Choose a user name and a password. An invitation is needed unless the server is open.");
      q.add_child(Element("username", std::string(kRegisterNs)));
      q.add_child(Element("password", std::string(kRegisterNs)));
      return answer(std::move(q));
    }
    if (type != "set") return answer(std::nullopt, "modify", "bad-request");
    if (payload->child("remove", kRegisterNs)) return answer(std::nullopt, "cancel", "not-allowed", "log in first");
    const Element* user = payload->child("username", kRegisterNs);
    const Element* pass = payload->child("password", kRegisterNs);
    if (!user || !pass || user->text().empty() || pass->text().empty())
      return answer(std::nullopt, "modify", "not-acceptable", "a user name and a password are needed");
    auto localpart = prep_localpart(user->text());
    auto password = sasl_prep(pass->text());
    if (!localpart || !password) return answer(std::nullopt, "modify", "not-acceptable", "that user name or password cannot be used");
    auto result = std::make_shared<Result<accounts::UserInfo>>(fail(Errc::internal, "not run"));
    auto accounts = &svc_->accounts;
    std::optional<std::string> token = invite_token_.empty() ? std::nullopt : std::optional<std::string>(invite_token_);
    run_blocking(
        [accounts, domain = domain_, lp = *localpart, pw = *password, token, result] {
          *result = accounts->register_user(domain, lp, pw, token ? std::optional<std::string_view>(*token) : std::nullopt);
        },
        [self = shared_from_this(), result, answer] {
          if (*result) {
            self->svc_->log.info("accounts.registered", {{"jid", (*result)->jid()}, {"admin", (*result)->admin}, {"via", "xmpp"}});
            self->invite_token_.clear();
            return answer(std::nullopt);
          }
          switch (result->error().code) {
            case Errc::already_exists: return answer(std::nullopt, "cancel", "conflict", "that user name is taken");
            case Errc::invalid_argument: return answer(std::nullopt, "modify", "not-acceptable", result->error().message);
            case Errc::permission_denied:
            case Errc::not_found:
            case Errc::expired: return answer(std::nullopt, "cancel", "not-allowed", "registration needs a valid invitation");
            default: return answer(std::nullopt, "wait", "internal-server-error");
          }
        });
  }

  void handle_sm(const Element& st) {
    if (st.name() == "enable") {
      if (phase_ != Phase::bound || sm_)
        return send_sm_failed("unexpected-request", sm_ ? "already enabled" : "bind a resource first");
      conn_->send(enable_sm(st.attr("resume") == "true" || st.attr("resume") == "1"));
      return;
    }
    if (st.name() == "resume") return resume(st);
    if (!sm_) return send_sm_failed("unexpected-request", "stream management is not enabled");
    if (st.name() == "r") {
      me_.sink->send_raw(fmt::format("<a xmlns='{}' h='{}'/>", kSmNs, sm_->handled.load()));
      return;
    }
    if (st.name() == "a") {
      auto h = parse_h(st.attr("h"));
      if (!h || !me_.sink->ack(*h)) {
        ending_ = true;
        return stream_error("undefined-condition", "acknowledged more stanzas than were sent",
                            "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='" + std::string(st.attr("h")) +
                                "' send-count='" + std::to_string(me_.sink->sent_count()) + "'/>");
      }
      return;
    }
    stream_error("unsupported-stanza-type", fmt::format("<{}/> in {}", st.name(), kSmNs));
  }

  // Turns on XEP-0198 for the bound session; returns the <enabled/> element.
  std::string enable_sm(bool resume) {
    sm_ = std::make_shared<XmppService::Impl::SmState>();
    sm_->me = me_;
    if (resume) {
      sm_->id = random_token(18);
      std::weak_ptr<C2sSession> weak = shared_from_this();
      sm_->take_over = [weak] {
        if (auto s = weak.lock()) s->conn_->post([s] { s->taken_over(); });
      };
      std::lock_guard lock(svc_->sm_mutex);
      svc_->resumable[sm_->id] = sm_;
    }
    me_.sink->enable_acks();
    if (resume)
      return fmt::format("<enabled xmlns='{}' id='{}' resume='true' max='{}'/>", kSmNs, sm_->id,
                         svc_->options.resume_timeout_seconds);
    return fmt::format("<enabled xmlns='{}'/>", kSmNs);
  }

  static std::optional<std::uint32_t> parse_h(std::string_view text) {
    if (text.empty() || text.size() > 10) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : text) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > 0xffffffffull) return std::nullopt;
    return static_cast<std::uint32_t>(v);
  }

  void send_sm_failed(std::string_view condition, std::string_view text, std::optional<std::uint32_t> h = {}) {
    std::string hattr = h ? fmt::format(" h='{}'", *h) : std::string();
    conn_->send(fmt::format("<failed xmlns='{}'{}><{} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
                            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{}</text></failed>",
                            kSmNs, hattr, condition, xml_escape(text)));
  }

  // XEP-0198 §5: take over a detached (or still attached, but stale) session.
  void resume(const Element& st) {
    if (phase_ != Phase::authenticated) return send_sm_failed("unexpected-request", "resume right after authenticating");
    auto h = parse_h(st.attr("h"));
    if (!h) return send_sm_failed("item-not-found", "no such session to resume");
    std::string failure = take_over_session(std::string(st.attr("previd")));
    if (!failure.empty()) return send_sm_failed("item-not-found", failure);
    conn_->send(fmt::format("<resumed xmlns='{}' previd='{}' h='{}'/>", kSmNs, sm_->id, sm_->handled.load()));
    attach_resumed(*h);
  }

  // Moves a resumable session onto this connection (me_, sm_, phase); "" on success, else
  // why not. The caller tells the client, then calls attach_resumed().
  std::string take_over_session(const std::string& previd) {
    std::shared_ptr<XmppService::Impl::SmState> state;
    {
      std::lock_guard lock(svc_->sm_mutex);
      auto it = svc_->resumable.find(previd);
      if (it != svc_->resumable.end()) state = it->second;
    }
    if (!state || state->me.localpart != localpart_ || state->me.domain != domain_) return "no such session to resume";
    std::function<void()> take_over;
    {
      std::lock_guard lock(state->mutex);
      if (state->ended) return "the session ended";
      take_over = std::move(state->take_over);
      state->detached = false;
      ++state->generation;
      std::weak_ptr<C2sSession> weak = shared_from_this();
      state->take_over = [weak] {
        if (auto s = weak.lock()) s->conn_->post([s] { s->taken_over(); });
      };
    }
    if (take_over) take_over();  // the old connection is still open: it loses the session
    me_ = state->me;
    sm_ = state;
    bound_ = true;
    phase_ = Phase::bound;
    return {};
  }

  // After <resumed/> went out: re-sends what the client has not acknowledged.
  void attach_resumed(std::uint32_t h) {
    if (!me_.sink->attach(conn_, h)) {
      ending_ = true;
      return stream_error("undefined-condition", "acknowledged more stanzas than were sent");
    }
    svc_->resumptions.inc();
    svc_->log.info("xmpp.sm_resumed", {{"jid", me_.full}, {"ip", conn_->remote_ip()}});
    if (sm_->restored) {
      // Resumed across a graceful restart: the row has served its purpose, and messages
      // stored offline while the session moved between processes are delivered now.
      sm_->restored = false;
      svc_->offload([svc = svc_, me = me_, id = sm_->id] {
        (void)svc->handovers.remove(id);
        if (auto taken = svc->xstore.take_offline(me.bare))
          for (auto& m : *taken) me.sink->deliver(std::move(m.stanza));
      });
    }
  }

  // Another connection resumed this session: close quietly, leaving the session alone.
  void taken_over() {
    taken_over_ = true;
    if (closed_) return;
    closed_ = true;
    conn_->send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
    conn_->close();
  }

  // Graceful restart (incident I18): this session leaves routing (later stanzas for it go
  // to offline storage, see on_close), its state goes to xmpp_sm_handover, and only once
  // that is durable is the connection dropped, so the client resumes at the successor.
  void hand_over() {
    if (handed_over_) return;
    handed_over_ = true;
    HandedOverSession rec;
    if (auto entry = svc_->registry.find(me_.bare, me_.resource); entry && entry->id == me_.id) {
      rec.available = entry->available;
      rec.priority = entry->priority;
      rec.presence = entry->last_presence;
      rec.carbons = entry->carbons;
      rec.roster_pushes = entry->wants_roster_pushes;
      svc_->registry.unbind(me_.bare, me_.id);
      svc_->sessions_open.add(-1);
    }
    {
      std::lock_guard lock(svc_->sm_mutex);
      svc_->resumable.erase(sm_->id);
    }
    {
      std::lock_guard lock(sm_->mutex);
      sm_->ended = true;
    }
    svc_->take_stream_state(rec, me_, *sm_);
    auto svc = svc_;
    auto conn = conn_;
    auto me = me_;
    bool was_available = rec.available;
    auto job = std::make_shared<HandedOverSession>(std::move(rec));
    bool queued = svc_->offload([svc, conn, me, was_available, job] {
      if (auto r = svc->handovers.save(*job); !r) {
        // Not saved: the session ends here, as on a plain shutdown; nothing is lost.
        svc->log.warn("xmpp.sm_handover_failed", {{"jid", me.full}, {"error", r.error().describe()}});
        svc->im.session_closed(me, was_available);
        svc->im.reroute_unacked(me.bare, std::move(job->unacked));
      } else {
        svc->log.info("xmpp.sm_handed_over", {{"jid", me.full}, {"unacked", static_cast<std::int64_t>(job->unacked.size())}});
      }
      conn->close();
    });
    if (!queued) {
      svc_->log.warn("xmpp.sm_handover_failed", {{"jid", me_.full}, {"error", "worker pool full"}});
      svc_->im.reroute_unacked(me_.bare, std::move(job->unacked));
      conn_->close();
    }
  }

  // Runs `job` on the worker pool; the session processes nothing else until it is done.
  void run_blocking(std::function<void()> job, std::function<void()> then = {}) {
    run_until_finished(
        [job = std::move(job)](ImRouter::Finished finished) {
          job();
          finished();
        },
        std::move(then));
  }

  // Runs `job` on the worker pool; it may finish later on another thread (a message waiting
  // for its group commit): the session processes nothing else until the job calls `finished`.
  void run_until_finished(std::function<void(ImRouter::Finished)> job, std::function<void()> then) {
    busy_ = true;
    auto self = shared_from_this();
    bool queued = svc_->offload([self, job = std::move(job), then = std::move(then)]() mutable {
      job([self, then = std::move(then)]() mutable {
        self->conn_->post([self, then = std::move(then)] {
          if (then) then();
          self->resume();
        });
      });
    });
    if (!queued) {
      busy_ = false;
      stream_error("resource-constraint", "the server is overloaded; reconnect later");
    }
  }

  void resume() {
    busy_ = false;
    if (handing_over_) return hand_over();
    while (!busy_ && !closed_ && !queued_.empty()) {
      Element next = std::move(queued_.front());
      queued_.pop_front();
      dispatch(std::move(next));
    }
  }

  void start_tls() {
    conn_->send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    phase_ = Phase::tls_handshake;
    parser_.request_restart(RestartInput::reject_rest);
    auto self = shared_from_this();
    conn_->start_tls([self](Result<void> r) {
      if (!r) {
        self->svc_->log.debug("xmpp.starttls_failed", {{"ip", self->conn_->remote_ip()}, {"error", r.error().message}});
        self->closed_ = true;
        self->conn_->close();
        return;
      }
      self->tls_ = true;
      self->phase_ = Phase::features;
      self->header_sent_ = false;
    });
  }

  ChannelBinding channel_binding() const {
    ChannelBinding cb;
    if (!tls_ || !svc_->options.channel_binding) return cb;
    for (auto type : {"tls-exporter", "tls-server-end-point"})
      if (conn_->channel_binding(type)) cb.offered_types.emplace_back(type);
    auto conn = conn_;
    cb.data = [conn](std::string_view type) { return conn->channel_binding(type); };
    return cb;
  }

  // What send_features() advertised on this stream, for XEP-0474: SASL and SASL2 offer
  // the same list, and <sasl-channel-binding/> goes out exactly when a type is offered.
  AdvertisedSasl advertised_sasl() const {
    ChannelBinding cb = channel_binding();
    return {offered_sasl_mechanisms(tls_, cb), cb.offered_types};
  }

  void handle_sasl(const Element& st) {
    if (st.name() == "auth") {
      if (phase_ == Phase::authenticating) return stream_error("policy-violation", "an authentication is in progress");
      std::string mech(st.attr("mechanism"));
      credentials_ = std::make_unique<AccountCredentials>(svc_->accounts, domain_);
      // Without strict channel binding, a non-PLUS exchange does not know -PLUS was offered,
      // so a client that only has a binding type we do not offer (tls-unique) may say "y".
      ChannelBinding cb = channel_binding();
      bool plus = mech.size() > 5 && mech.compare(mech.size() - 5, 5, "-PLUS") == 0;
      if (!plus && !svc_->options.strict_channel_binding) cb.offered_types.clear();
      mechanism_ = make_sasl_mechanism(mech, tls_, cb, *credentials_, svc_->options.sasl_secret);
      if (!mechanism_) return sasl_failure("invalid-mechanism", "");
      mechanism_->set_advertised(advertised_sasl());
      std::string text = st.text();
      bool has_initial = !text.empty();
      std::string initial;
      if (text == "=") initial.clear();
      else if (has_initial && !sasl_base64_decode(text, initial)) return sasl_failure("incorrect-encoding", "");
      phase_ = Phase::authenticating;
      sasl_exchange([initial, has_initial](SaslMechanism& m) { return m.start(initial, has_initial); });
    } else if (st.name() == "response") {
      if (phase_ != Phase::authenticating || !mechanism_) return stream_error("policy-violation", "no authentication in progress");
      std::string raw;
      std::string text = st.text();
      if (text != "=" && !sasl_base64_decode(text, raw)) return sasl_failure("incorrect-encoding", "");
      sasl_exchange([raw](SaslMechanism& m) { return m.step(raw); });
    } else if (st.name() == "abort") {
      sasl_failure("aborted", "");
    } else {
      stream_error("unsupported-stanza-type", "unknown SASL element");
    }
  }

  // ---- XEP-0388 SASL2, XEP-0386 Bind 2, XEP-0484 FAST ----

  // The FAST mechanisms this connection can use (channel binding permitting).
  std::vector<std::string> fast_mechanisms() const {
    std::vector<std::string> out;
    if (!tls_) return out;
    if (conn_->channel_binding("tls-exporter")) out.emplace_back("HT-SHA-256-EXPR");
    if (conn_->channel_binding("tls-server-end-point")) out.emplace_back("HT-SHA-256-ENDP");
    out.emplace_back("HT-SHA-256-NONE");
    return out;
  }

  void handle_sasl2(const Element& st) {
    if (st.name() == "authenticate") {
      if (phase_ == Phase::authenticating) return stream_error("policy-violation", "an authentication is in progress");
      auto req = parse_sasl2_authenticate(st);
      if (!req) {
        sasl2_ = std::make_unique<Sasl2Request>();
        return sasl_failure("malformed-request", req.error().message);
      }
      sasl2_ = std::make_unique<Sasl2Request>(std::move(*req));
      if (auto cb_type = ht_channel_binding(sasl2_->mechanism)) return fast_authenticate(*cb_type);
      credentials_ = std::make_unique<AccountCredentials>(svc_->accounts, domain_);
      ChannelBinding cb = channel_binding();
      const std::string& mech = sasl2_->mechanism;
      bool plus = mech.size() > 5 && mech.compare(mech.size() - 5, 5, "-PLUS") == 0;
      if (!plus && !svc_->options.strict_channel_binding) cb.offered_types.clear();
      mechanism_ = make_sasl_mechanism(mech, tls_, cb, *credentials_, svc_->options.sasl_secret);
      if (!mechanism_) return sasl_failure("invalid-mechanism", "");
      mechanism_->set_advertised(advertised_sasl());
      phase_ = Phase::authenticating;
      bool has_initial = sasl2_->initial_response.has_value();
      std::string initial = has_initial ? *sasl2_->initial_response : std::string();
      sasl_exchange([initial, has_initial](SaslMechanism& m) { return m.start(initial, has_initial); });
    } else if (st.name() == "response") {
      if (phase_ != Phase::authenticating || !mechanism_ || !sasl2_)
        return stream_error("policy-violation", "no authentication in progress");
      std::string raw;
      if (!sasl_base64_decode(st.text(), raw)) return sasl_failure("incorrect-encoding", "");
      sasl_exchange([raw](SaslMechanism& m) { return m.step(raw); });
    } else if (st.name() == "abort") {
      if (!sasl2_) sasl2_ = std::make_unique<Sasl2Request>();
      sasl_failure("aborted", "");
    } else {
      stream_error("unsupported-stanza-type", "unknown SASL2 element");
    }
  }

  // XEP-0484: one round trip with a token ("authcid NUL HMAC(token, 'Initiator' || cb)").
  void fast_authenticate(const std::string& cb_type) {
    auto offered = fast_mechanisms();
    if (std::find(offered.begin(), offered.end(), sasl2_->mechanism) == offered.end())
      return sasl_failure("invalid-mechanism", "");
    if (!sasl2_->initial_response) return sasl_failure("malformed-request", "FAST needs an initial response");
    auto parts = split_ht_message(*sasl2_->initial_response);
    if (!parts) return sasl_failure("malformed-request", "not an HT message");
    if (sasl2_->user_agent_id.empty()) return sasl_failure("not-authorized", "FAST needs a user-agent id");
    std::string authcid = parts->first;
    if (auto at = authcid.find('@'); at != std::string::npos) {
      auto jid = Jid::parse(authcid);
      if (!jid || jid->domain != domain_) return sasl_failure("not-authorized", "");
      authcid = jid->local;
    }
    auto localpart = prep_localpart(authcid);
    if (!localpart) return sasl_failure("not-authorized", "");
    std::string cb_data;
    if (!cb_type.empty()) {
      auto data = conn_->channel_binding(cb_type);
      if (!data) return sasl_failure("not-authorized", "");
      cb_data = *data;
    }
    phase_ = Phase::authenticating;
    auto result = std::make_shared<Result<FastVerified>>(fail(Errc::internal, "not run"));
    auto* fast = &svc_->fast;
    std::string owner = *localpart + "@" + domain_;
    run_blocking(
        [fast, owner, client = sasl2_->user_agent_id, mech = sasl2_->mechanism, proof = parts->second, cb_data,
         result] { *result = fast->verify(owner, client, mech, proof, cb_data); },
        [self = shared_from_this(), result, cb_data, lp = *localpart] {
          if (self->closed_) return;
          if (!*result) {
            self->svc_->auth_failed.inc();
            bool expired = result->error().code == Errc::expired;
            return self->sasl_failure(expired ? "credentials-expired" : "not-authorized", "");
          }
          self->localpart_ = lp;
          self->fast_token_ = (*result)->token;
          self->fast_rotate_ = (*result)->rotate;
          self->sasl2_success(ht_responder_proof((*result)->token, cb_data), self->sasl2_->mechanism);
        });
  }

  // The mechanism succeeded: inline resumption, Bind 2, FAST tokens, then <success/> and
  // the features of the authenticated stream (no restart).
  void sasl2_success(std::string additional_data, std::string mechanism) {
    svc_->auth_ok.inc();
    std::string bare = localpart_ + "@" + domain_;
    svc_->log.info("xmpp.authenticated", {{"jid", bare}, {"mechanism", mechanism}, {"ip", conn_->remote_ip()}, {"sasl", "2"}});
    conn_->set_read_rate(svc_->options.read_bytes_per_second, svc_->options.read_burst_bytes);
    Sasl2Request req = std::move(*sasl2_);
    phase_ = Phase::authenticated;

    std::string resumed_xml;
    std::optional<std::uint32_t> resume_h;
    if (req.resume) {
      std::string failure = take_over_session(req.resume->previd);
      if (failure.empty()) {
        resumed_xml = fmt::format("<resumed xmlns='{}' previd='{}' h='{}'/>", kSmNs, sm_->id, sm_->handled.load());
        resume_h = req.resume->h;
      } else {
        resumed_xml = fmt::format("<failed xmlns='{}'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
                                  kSmNs);
      }
    }
    bool bind = req.bind.has_value() && !resume_h;

    struct Work {
      std::optional<FastToken> token;
      std::string metadata;  // <metadata xmlns='urn:xmpp:mam:2'/>
      std::vector<OfflineMessage> offline;
    };
    auto work = std::make_shared<Work>();
    std::string token_mechanism;
    auto offered = fast_mechanisms();
    if (!req.request_token.empty() && !req.user_agent_id.empty() &&
        std::find(offered.begin(), offered.end(), req.request_token) != offered.end())
      token_mechanism = req.request_token;
    else if (req.fast && fast_rotate_ && !req.fast_invalidate)
      token_mechanism = req.mechanism;
    auto svc = svc_;
    std::string used = fast_token_;
    run_blocking(
        [svc, work, bare, req, token_mechanism, used, bind] {
          if (req.fast && req.fast_invalidate) (void)svc->fast.invalidate(bare, req.user_agent_id, used);
          if (!token_mechanism.empty()) {
            auto t = svc->fast.issue(bare, req.user_agent_id, token_mechanism);
            if (t) work->token = *t;
          }
          if (!bind) return;
          std::string meta = "<metadata xmlns='urn:xmpp:mam:2'>";
          ArchiveQuery first;
          first.max = 1;
          ArchiveQuery last = first;
          last.last_page = true;
          auto a = svc->xstore.query_archive(bare, first);
          auto b = svc->xstore.query_archive(bare, last);
          if (a && b && !a->items.empty() && !b->items.empty()) {
            meta += fmt::format("<start id='{}' timestamp='{}'/>", xml_escape(a->items.front().id),
                                format_delay_stamp(a->items.front().stamp_ms));
            meta += fmt::format("<end id='{}' timestamp='{}'/>", xml_escape(b->items.back().id),
                                format_delay_stamp(b->items.back().stamp_ms));
          }
          work->metadata = meta + "</metadata>";
          // XEP-0386 §3: offline messages are not sent; the client fetches them from the
          // archive. Those the archive does not keep are delivered below instead.
          if (auto taken = svc->xstore.take_offline(bare)) work->offline = std::move(*taken);
        },
        [self = shared_from_this(), work, req, bind, resumed_xml, resume_h, additional_data, bare] {
          if (self->closed_) return;
          std::string bound_xml;
          if (bind) {
            std::string resource = bind2_resource(req.bind->tag, bare, req.user_agent_id);
            auto prepped = prep_resource(resource);
            self->bind_session(prepped ? *prepped : bind2_resource("", bare, req.user_agent_id));
            if (req.bind->enable_carbons) self->svc_->registry.set_carbons(bare, self->me_.id, true);
            if (req.bind->inactive) self->me_.sink->set_active(false);
            std::string sm_xml = req.bind->enable_sm ? self->enable_sm(req.bind->sm_resume) : std::string();
            bound_xml = fmt::format("<bound xmlns='{}'>{}{}</bound>", kBind2Ns, work->metadata, sm_xml);
          }
          std::string out = fmt::format("<success xmlns='{}'>", kSasl2Ns);
          if (!additional_data.empty())
            out += fmt::format("<additional-data>{}</additional-data>", sasl_base64_encode(additional_data));
          out += fmt::format("<authorization-identifier>{}</authorization-identifier>",
                             xml_escape(self->bound_ ? self->me_.full : bare));
          out += bound_xml + resumed_xml;
          if (work->token)
            out += fmt::format("<token xmlns='{}' token='{}' expiry='{}'/>", kFastNs, work->token->token,
                               format_delay_stamp(work->token->expires_ms));
          out += "</success>";
          self->conn_->send(std::move(out));
          self->send_features();
          if (resume_h) self->attach_resumed(*resume_h);
          for (auto& m : work->offline) {
            auto stanza = parse_element(m.stanza);
            if (stanza && !archivable(*stanza)) self->me_.sink->deliver(std::move(m.stanza));
          }
        });
  }

  void sasl_exchange(std::function<SaslStep(SaslMechanism&)> fn) {
    auto result = std::make_shared<SaslStep>();
    SaslMechanism* mech = mechanism_.get();
    run_blocking([mech, fn = std::move(fn), result] { *result = fn(*mech); },
                 [self = shared_from_this(), result] { self->sasl_result(*result); });
  }

  void sasl_result(const SaslStep& step) {
    if (closed_) return;
    switch (step.kind) {
      case SaslStep::Kind::challenge:
        if (sasl2_)
          conn_->send(fmt::format("<challenge xmlns='{}'>{}</challenge>", kSasl2Ns, sasl_base64_encode(step.data)));
        else
          conn_->send(fmt::format("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                                  step.data.empty() ? "=" : sasl_base64_encode(step.data)));
        return;
      case SaslStep::Kind::failure:
        svc_->auth_failed.inc();
        sasl_failure(sasl_failure_condition(step.failure), step.text);
        return;
      case SaslStep::Kind::success: {
        if (sasl2_) {
          localpart_ = mechanism_->authenticated_localpart();
          std::string name(mechanism_->mechanism_name());
          mechanism_.reset();
          credentials_.reset();
          return sasl2_success(step.data, name);
        }
        svc_->auth_ok.inc();
        localpart_ = mechanism_->authenticated_localpart();
        svc_->log.info("xmpp.authenticated", {{"jid", localpart_ + "@" + domain_}, {"mechanism", mechanism_->mechanism_name()},
                                              {"ip", conn_->remote_ip()}});
        std::string body = step.data.empty() ? "" : sasl_base64_encode(step.data);
        conn_->send(fmt::format("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>", body));
        mechanism_.reset();
        credentials_.reset();  // an idle session keeps nothing of its authentication
        phase_ = Phase::authenticated;
        header_sent_ = false;
        parser_.reset();
        conn_->set_read_rate(svc_->options.read_bytes_per_second, svc_->options.read_burst_bytes);
        return;
      }
    }
  }

  void sasl_failure(std::string_view condition, std::string_view text) {
    mechanism_.reset();
    phase_ = Phase::features;
    std::string out;
    if (sasl2_) {
      // XEP-0388 §2.6.2: the RFC 6120 condition, in its own namespace.
      out = fmt::format("<failure xmlns='{}'><{} xmlns='{}'/>", kSasl2Ns, condition, kSaslNs);
      sasl2_.reset();
    } else {
      out = fmt::format("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{}/>", condition);
    }
    if (!text.empty()) out += "<text xml:lang='en'>" + xml_escape(text) + "</text>";
    out += "</failure>";
    conn_->send(std::move(out));
    if (condition != "aborted" && ++auth_failures_ >= svc_->options.max_auth_attempts)
      stream_error("policy-violation", "too many failed authentication attempts");
  }

  void do_bind(const Element& iq, const Element& bind) {
    std::string wanted;
    if (const Element* r = bind.child("resource", kBindNs)) wanted = r->text();
    std::string resource;
    if (wanted.empty()) {
      resource = "hearth-" + random_hex(6);
    } else {
      auto prepped = prep_resource(wanted);
      if (!prepped) {
        Element e = make_error_reply(iq, "modify", "bad-request", prepped.error().message);
        e.remove_attr("to");
        return send_stanza(e);
      }
      resource = *prepped;
    }
    bind_session(resource);
    Element r("iq", std::string(kClientNs));
    r.set_attr("type", "result");
    r.set_attr("id", std::string(iq.attr("id")));
    r.add_child(Element("bind", std::string(kBindNs))).add_child(Element("jid", std::string(kBindNs))).add_text(me_.full);
    send_stanza(r);
  }

  // Binds `resource` (already prepared) to this stream, replacing a session that holds it.
  void bind_session(const std::string& resource) {
    me_.localpart = localpart_;
    me_.domain = domain_;
    me_.resource = resource;
    me_.bare = localpart_ + "@" + domain_;
    me_.full = me_.bare + "/" + resource;
    me_.id = svc_->next_id++;
    me_.sink = std::make_shared<SessionSink>(conn_);
    auto entry = std::make_shared<SessionEntry>();
    entry->full_jid = me_.full;
    entry->resource = resource;
    entry->sink = me_.sink;
    entry->id = me_.id;
    // RFC 6120 §7.7.2.2: a new session with a resource in use replaces the old one.
    if (auto old = svc_->registry.bind(me_.bare, entry)) {
      old->sink->close_connection(
          "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text "
          "xmlns='urn:ietf:params:xml:ns:xmpp-streams'>replaced by a new connection</text></stream:error>"
          "</stream:stream>");
      // The replaced session may be detached (waiting for a resumption) with no
      // connection left to notice: end it here. Its own on_close, if it ever comes,
      // finds itself displaced and does nothing more.
      svc_->sessions_open.add(-1);
      std::shared_ptr<XmppService::Impl::SmState> old_state;
      {
        std::lock_guard lock(svc_->sm_mutex);
        for (auto it = svc_->resumable.begin(); it != svc_->resumable.end(); ++it)
          if (it->second->me.id == old->id) {
            old_state = it->second;
            svc_->resumable.erase(it);
            break;
          }
      }
      if (old_state) {
        std::lock_guard lock(old_state->mutex);
        old_state->ended = true;
      }
      auto svc = svc_;
      auto bare = me_.bare;
      svc_->offload([svc, bare, unacked = old->sink->take_unacked()]() mutable {
        svc->im.reroute_unacked(bare, std::move(unacked));
      });
    }
    bound_ = true;
    phase_ = Phase::bound;
    svc_->sessions_open.add(1);
  }

  void send_stanza(const Element& st) {
    if (bound_) return ImRouter::send(*me_.sink, st);
    std::string out;
    st.serialize_to(out, kClientNs);
    conn_->send(std::move(out));
  }

  void send_header(const std::string& from) {
    if (header_sent_) return;
    header_sent_ = true;
    conn_->send(fmt::format(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "id='{}' from='{}' version='1.0' xml:lang='en'>",
        random_token(12), from));
  }

  void send_features() {
    std::string f = "<stream:features>";
    if (!tls_) {
      f += "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>";
    } else if (phase_ == Phase::features) {
      f += "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>";
      ChannelBinding cb = channel_binding();
      for (const auto& m : offered_sasl_mechanisms(tls_, cb)) f += "<mechanism>" + m + "</mechanism>";
      f += "</mechanisms>";
      f += fmt::format("<authentication xmlns='{}'>", kSasl2Ns);
      for (const auto& m : offered_sasl_mechanisms(tls_, cb)) f += "<mechanism>" + m + "</mechanism>";
      f += fmt::format("<inline><bind xmlns='{}'><inline><feature var='urn:xmpp:carbons:2'/><feature "
                       "var='{}'/><feature var='{}'/></inline></bind><sm xmlns='{}'/><fast xmlns='{}'>",
                       kBind2Ns, kCsiNs, kSmNs, kSmNs, kFastNs);
      for (const auto& m : fast_mechanisms()) f += "<mechanism>" + m + "</mechanism>";
      f += "</fast></inline></authentication>";
      f += "<register xmlns='http://jabber.org/features/iq-register'/>";
      if (!cb.offered_types.empty()) {
        f += fmt::format("<sasl-channel-binding xmlns='{}'>", kSaslCbNs);
        for (const auto& t : cb.offered_types) f += "<channel-binding type='" + t + "'/>";
        f += "</sasl-channel-binding>";
      }
    } else if (phase_ == Phase::authenticated) {
      f += "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>";
      f += fmt::format("<session xmlns='{}'><optional/></session>", kSessionNs);
      f += "<ver xmlns='urn:xmpp:features:rosterver'/>";
      f += fmt::format("<sm xmlns='{}'/>", kSmNs);
      f += fmt::format("<csi xmlns='{}'/>", kCsiNs);
      // XEP-0115 §6.3: the server's own capabilities, so clients can skip a disco query.
      f += fmt::format("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{}' ver='{}'/>",
                       ImRouter::kServerCapsNode, svc_->im.server_caps_ver());
    } else if (phase_ == Phase::bound) {
      // After SASL2 with Bind 2 or an inline resumption (no stream restart).
      if (!sm_) f += fmt::format("<sm xmlns='{}'/>", kSmNs);
      f += fmt::format("<csi xmlns='{}'/>", kCsiNs);
    }
    f += "</stream:features>";
    conn_->send(std::move(f));
  }

  void stream_error(std::string_view condition, std::string_view text, std::string_view app_element = {}) {
    if (closed_) return;
    closed_ = true;
    ending_ = true;
    svc_->stream_errors.inc();
    if (!header_sent_) send_header(domain_.empty() ? svc_->options.domains.front() : domain_);
    conn_->send(fmt::format(
        "<stream:error><{} xmlns='{}'/><text xmlns='{}' xml:lang='en'>{}</text>{}</stream:error></stream:stream>",
        condition, kStreamErrorNs, kStreamErrorNs, xml_escape(text), app_element));
    conn_->close();
  }

  std::shared_ptr<XmppService::Impl> svc_;
  std::shared_ptr<net::StreamConnection> conn_;
  XmlStreamParser parser_;
  bool tls_;
  Phase phase_ = Phase::features;
  bool header_sent_ = false;
  bool closed_ = false;
  bool closed_finally_ = false;
  bool busy_ = false;
  bool bound_ = false;
  bool ending_ = false;       // no resumption: clean close, stream error, replaced
  bool taken_over_ = false;   // another connection resumed this session
  bool handing_over_ = false;  // graceful restart: hand over once the running job ends
  bool handed_over_ = false;   // saved for the successor process (hand_over())
  std::shared_ptr<XmppService::Impl::SmState> sm_;
  int auth_failures_ = 0;
  std::string domain_;
  std::string localpart_;
  std::string invite_token_;  // XEP-0401 token presented before registering
  std::unique_ptr<AccountCredentials> credentials_;
  std::unique_ptr<SaslMechanism> mechanism_;
  std::unique_ptr<Sasl2Request> sasl2_;  // XEP-0388: set while a SASL2 exchange runs
  std::string fast_token_;                // XEP-0484: the token this stream authenticated with
  bool fast_rotate_ = false;
  std::list<Element> queued_;  // a list: empty, it holds no memory
  SessionIdentity me_;

};

}  // namespace

XmppService::XmppService(XmppOptions options, accounts::Accounts& accounts, store::Store& store, Clock& clock,
                         Logger& log, MetricsRegistry& metrics, Offload offload, RunAfter run_after)
    : impl_(std::make_shared<Impl>(std::move(options), accounts, store, clock, log, metrics, std::move(offload),
                                   std::move(run_after))) {
  const XmppOptions& o = impl_->options;
  if (!o.s2s_enabled) return;
  S2sOptions so;
  for (const auto& text : o.s2s_static_routes)
    if (auto r = parse_static_route(text)) so.static_routes.push_back(*r);
  so.queue_max_stanzas = o.s2s_queue_max_stanzas;
  so.connect_timeout_seconds = o.s2s_connect_timeout_seconds;
  so.retry_initial_seconds = o.s2s_retry_initial_seconds;
  so.retry_max_seconds = o.s2s_retry_max_seconds;
  so.max_attempts = o.s2s_max_attempts;
  so.idle_timeout_seconds = o.idle_timeout_seconds;
  so.dialback = o.s2s_dialback;
  so.bidi = o.s2s_bidi;
  so.max_pending_inbound_bytes = o.s2s_max_pending_bytes;
  so.dialback_secret = o.s2s_dialback_secret;
  so.max_stanza_bytes = o.max_stanza_bytes;
  so.read_bytes_per_second = o.read_bytes_per_second * 4;
  so.read_burst_bytes = o.read_burst_bytes * 4;
  Impl* impl = impl_.get();
  impl_->federation = std::make_shared<Federation>(
      so, [impl](std::string_view domain) { return impl->im.serves(domain); }, impl_->log, impl_->metrics,
      impl_->offload, impl_->run_after, [impl](Element st) { impl->im.handle_from_remote(std::move(st)); });
  impl_->im.set_remote([fed = impl_->federation](const std::string& local, const std::string& remote, std::string st) {
    fed->send(local, remote, std::move(st));
  });
}

Result<void> XmppService::check_options(const XmppOptions& options) {
  for (const auto& text : options.s2s_static_routes)
    if (auto r = parse_static_route(text); !r) return tl::unexpected(r.error());
  return {};
}

net::StreamAcceptor XmppService::s2s_acceptor() {
  if (!impl_->federation)
    return [](std::shared_ptr<net::StreamConnection> conn) {
      conn->close();
      return net::StreamCallbacks{};
    };
  return impl_->federation->acceptor();
}

void XmppService::set_s2s_connector(std::function<void(net::OutgoingStreamSpec, net::StreamConnectHandler)> connect) {
  if (impl_->federation) impl_->federation->set_connector(std::move(connect));
}

XmppService::~XmppService() = default;

Result<void> XmppService::migrate() {
  if (auto r = impl_->xstore.migrate(); !r) return r;
  if (auto r = impl_->handovers.migrate(); !r) return r;
  if (auto r = impl_->fast.migrate(); !r) return r;
  IqTable& iqs = impl_->im.iqs();
  if (auto r = register_vcard(iqs, impl_->store, impl_->clock); !r) return r;
  if (auto r = register_private(iqs, impl_->store, impl_->clock); !r) return r;
  const XmppOptions& o = impl_->options;
  register_external_services(iqs, impl_->clock,
                             {o.turn_host, o.turn_port, o.turn_tls_port, o.turn_secret, o.turn_ttl_seconds});
  if (auto form = server_info_form(o.contact_addresses)) impl_->im.add_server_form(std::move(*form));
  Impl* impl = impl_.get();  // Impl owns the table: a shared_ptr here would be a cycle
  impl_->last = std::make_shared<LastActivity>(
      impl_->store, impl_->xstore, impl_->registry, impl_->clock,
      [impl](const std::string& owner, const std::string& contact) { return impl->im.blocked(owner, contact); });
  if (auto r = impl_->last->register_iqs(iqs); !r) return r;
  impl_->im.set_logout_hook(
      [last = impl_->last](const std::string& bare, const std::string& status) { last->note_logout(bare, status); });
  auto blocks = register_blocking(iqs, impl_->store, [impl](const std::string& owner, const Element& push) {
    for (const auto& s : impl->registry.sessions(owner)) {
      if (!impl->blocks->wants_pushes(owner, s.id)) continue;
      Element copy = push;
      copy.set_attr("to", s.full_jid);
      ImRouter::send(*s.sink, copy);
    }
  });
  if (!blocks) return tl::unexpected(blocks.error());
  impl_->blocks = *blocks;
  impl_->im.set_blocklist(*blocks);
  impl_->pep = std::make_shared<Pep>(
      impl_->store, impl_->xstore, impl_->registry, impl_->clock,
      [impl](const std::string& owner, const std::string& contact) { return impl->im.blocked(owner, contact); },
      PepOptions{impl_->options.pep_max_item_bytes, impl_->options.pep_max_nodes, impl_->options.pep_max_items});
  if (auto r = impl_->pep->register_iqs(iqs); !r) return r;
  impl_->im.set_pep(impl_->pep);
  impl_->push = std::make_shared<PushService>(impl_->store, impl_->clock, impl_->log, impl_->metrics, [impl](const Element& iq) {
    // App servers on our own domains are reached at once; others need federation.
    auto to = Jid::parse(iq.attr("to"));
    if (to && impl->im.is_remote(to->domain)) return impl->im.send_remote(iq);
    if (!to || !impl->im.is_local_domain(to->domain) || to->local.empty()) return false;
    bool sent = false;
    for (const auto& s : impl->registry.sessions(to->bare())) {
      if (!to->resource.empty() ? s.resource != to->resource : !s.available) continue;
      Element copy = iq;
      copy.set_attr("to", s.full_jid);
      ImRouter::send(*s.sink, copy);
      sent = true;
    }
    return sent;
  });
  if (auto r = impl_->push->register_iqs(iqs); !r) return r;
  impl_->im.set_push_hook([push = impl_->push](const std::string& owner, const std::string& sender) {
    push->notify(owner, sender);
  });
  if (o.upload_blobs) {
    for (const auto& domain : o.domains) {
      UploadOptions uo;
      uo.domain = "upload." + domain;
      uo.expiry_days = o.upload_expiry_days;
      auto upload = std::make_shared<HttpUploadService>(uo, *o.upload_blobs, impl_->store, impl_->clock, impl_->log,
                                                        [impl](const Element& st) { return impl->im.deliver_from_service(st); });
      if (auto r = upload->migrate(); !r) return r;
      impl_->im.add_service(uo.domain, upload);
      impl_->uploads.push_back(upload);
    }
  }
  if (o.muc) {
    for (const auto& domain : o.domains) {
      MucOptions mo;
      mo.domain = "conference." + domain;
      mo.max_users_per_room = o.muc_max_users_per_room;
      auto muc = std::make_shared<MucService>(mo, impl_->store, impl_->xstore, impl_->clock, impl_->log,
                                              [impl](const Element& st) { return impl->im.deliver_from_service(st); });
      if (auto r = muc->migrate(); !r) return r;
      impl_->im.add_service(mo.domain, muc);
    }
  }

  auto delete_rows = [impl](const char* sql) {
    return [impl, sql](const std::string& bare) -> Result<void> {
      return impl->store.write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto r = tx.exec(sql, {bare});
        if (!r) return tl::unexpected(r.error());
        return true;
      }).map([](bool) {});
    };
  };
  impl_->erasers = {
      [impl](const std::string& bare) { return impl->xstore.forget_account(bare); },
      delete_rows("DELETE FROM xmpp_vcard WHERE owner = ?"),
      delete_rows("DELETE FROM xmpp_private WHERE owner = ?"),
      [impl](const std::string& bare) { return impl->blocks->unblock_all(bare); },
      [impl](const std::string& bare) { return impl->pep->forget_account(bare); },
      [impl](const std::string& bare) { return impl->fast.forget_account(bare); },
      [impl](const std::string& bare) { return impl->last->forget_account(bare); },
      [impl](const std::string& bare) { return impl->push->forget_account(bare); },
      [impl](const std::string& bare) -> Result<void> {
        if (!impl->options.upload_blobs) return ok();
        return impl->options.upload_blobs->forget_owner(bare);
      },
  };
  return sweep_deleted_accounts();
}

Result<void> XmppService::sweep_deleted_accounts() {
  auto users = impl_->accounts.list_users("");
  if (!users) return tl::unexpected(users.error());
  std::set<std::string> live;
  for (const auto& u : *users) live.insert(u.jid());
  auto owners = impl_->store.read_sync([](store::Transaction& tx) -> Result<std::vector<std::string>> {
    std::vector<std::string> out;
    auto r = tx.query(
        "SELECT owner FROM xmpp_roster UNION SELECT owner FROM xmpp_offline UNION SELECT owner FROM xmpp_archive "
        "UNION SELECT owner FROM xmpp_vcard UNION SELECT owner FROM xmpp_private UNION SELECT owner FROM xmpp_blocklist "
        "UNION SELECT owner FROM xmpp_pep_node UNION SELECT owner FROM xmpp_fast_token "
        "UNION SELECT owner FROM xmpp_last_activity",
        {}, [&](const store::Row& row) { out.emplace_back(row.text(0)); });
    if (!r) return tl::unexpected(r.error());
    return out;
  });
  if (!owners) return tl::unexpected(owners.error());
  for (const auto& owner : *owners) {
    if (live.count(owner)) continue;
    // Rooms (conference.<domain>) keep archives too; only accounts' data is swept.
    auto at = owner.find('@');
    std::string domain = at == std::string::npos ? owner : owner.substr(at + 1);
    if (std::find(impl_->options.domains.begin(), impl_->options.domains.end(), domain) == impl_->options.domains.end())
      continue;
    impl_->log.info("xmpp.forgot_deleted_account", {{"jid", owner}});
    if (auto r = forget_account(owner); !r) return r;
  }
  return ok();
}

Result<void> XmppService::forget_account(const std::string& bare) {
  for (const auto& s : impl_->registry.sessions(bare))
    s.sink->close_connection(
        "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text "
        "xmlns='urn:ietf:params:xml:ns:xmpp-streams'>this account was deleted</text></stream:error></stream:stream>");
  for (const auto& erase : impl_->erasers)
    if (auto r = erase(bare); !r) return r;
  return ok();
}

std::size_t XmppService::session_count() const { return impl_->registry.count(); }

Result<void> XmppService::set_archive_retention(const std::string& bare, std::optional<int> days) {
  return impl_->xstore.set_archive_retention(bare, days);
}

namespace {

// One purge batch on the worker pool; the next batch is scheduled on an event loop, so
// live traffic runs between batches (incident I11/I16).
void purge_archive(std::weak_ptr<XmppService::Impl> weak, std::int64_t purged_so_far) {
  auto impl = weak.lock();
  if (!impl) return;
  auto retry_later = [weak](std::chrono::milliseconds delay) {
    if (auto i = weak.lock()) i->run_after(delay, [weak] { purge_archive(weak, 0); });
  };
  bool queued = impl->offload([weak, purged_so_far, retry_later] {
    auto impl = weak.lock();
    if (!impl) return;
    const auto& o = impl->options;
    auto n = impl->xstore.purge_expired_archive(o.archive_retention_days, impl->clock.now_ms(), o.archive_purge_batch);
    if (n && !impl->uploads.empty()) {
      // XEP-0363 files past their expiry (incident I12) go in the same small batches.
      auto files = impl->uploads.front()->purge(impl->clock.now_ms(), o.archive_purge_batch);
      if (!files) n = tl::unexpected(files.error());
      else *n = std::max(*n, *files);
    }
    std::chrono::milliseconds interval(std::int64_t{o.archive_purge_interval_seconds} * 1000);
    if (!n) {
      impl->log.warn("xmpp.archive_purge_failed", {{"error", n.error().describe()}});
      return retry_later(interval);
    }
    impl->archive_purged.inc(static_cast<std::uint64_t>(*n));
    if (*n >= o.archive_purge_batch) {
      impl->run_after(std::chrono::milliseconds(5), [weak, total = purged_so_far + *n] { purge_archive(weak, total); });
      return;
    }
    if (purged_so_far + *n > 0) impl->log.info("xmpp.archive_purged", {{"messages", purged_so_far + *n}});
    retry_later(interval);
  });
  if (!queued) retry_later(std::chrono::seconds(1));
}

}  // namespace

void XmppService::start_background_tasks() {
  restore_handed_over_sessions();
  purge_archive(impl_, 0);
}

void XmppService::hand_over_on_drain() {
  impl_->handing_over.store(true);
  // Sessions already detached (a client between networks) have no connection to drain:
  // hand them over here, so that they can still be resumed at the successor.
  hand_over_detached_sessions();
}

void XmppService::hand_over_detached_sessions() {
  Impl& s = *impl_;
  std::vector<std::shared_ptr<Impl::SmState>> states;
  {
    std::lock_guard lock(s.sm_mutex);
    for (auto& [id, state] : s.resumable) states.push_back(state);
  }
  for (auto& state : states) {
    {
      std::lock_guard lock(state->mutex);
      if (!state->detached || state->ended) continue;
      state->ended = true;  // this process neither resumes nor expires it any more
    }
    {
      std::lock_guard lock(s.sm_mutex);
      s.resumable.erase(state->id);
    }
    const SessionIdentity& me = state->me;
    HandedOverSession rec;
    if (auto entry = s.registry.find(me.bare, me.resource); entry && entry->id == me.id) {
      rec.available = entry->available;
      rec.priority = entry->priority;
      rec.presence = entry->last_presence;
      rec.carbons = entry->carbons;
      rec.roster_pushes = entry->wants_roster_pushes;
      s.registry.unbind(me.bare, me.id);
      s.sessions_open.add(-1);
    }
    s.take_stream_state(rec, me, *state);
    if (auto r = s.handovers.save(rec); !r) {
      s.log.warn("xmpp.sm_handover_failed", {{"jid", me.full}, {"error", r.error().describe()}});
      s.im.session_closed(me, rec.available);
      s.im.reroute_unacked(me.bare, std::move(rec.unacked));
      if (state->restored) (void)s.handovers.remove(state->id);
    } else {
      s.log.info("xmpp.sm_handed_over", {{"jid", me.full}, {"unacked", static_cast<std::int64_t>(rec.unacked.size())},
                                         {"detached", true}});
    }
    s.im.reroute_unacked(me.bare, me.sink->take_unacked());  // routed to it meanwhile
  }
}

void XmppService::end_detached_sessions() {
  Impl& s = *impl_;
  std::vector<std::shared_ptr<Impl::SmState>> states;
  {
    std::lock_guard lock(s.sm_mutex);
    for (auto& [id, state] : s.resumable) states.push_back(state);
    s.resumable.clear();
  }
  for (auto& state : states) {
    {
      std::lock_guard lock(state->mutex);
      if (!state->detached || state->ended) continue;
      state->ended = true;
    }
    // As end_session, but here and now: the worker pool has stopped.
    const SessionIdentity& me = state->me;
    s.registry.unbind(me.bare, me.id);
    s.sessions_open.add(-1);
    s.im.reroute_unacked(me.bare, me.sink->take_unacked());
    if (state->restored) (void)s.handovers.remove(state->id);
    s.log.info("xmpp.sm_ended_at_exit", {{"jid", me.full}});
  }
}

// Sessions the previous process handed over (incident I18): detached and resumable, as if
// their connection had just dropped, each with its own resumption window.
void XmppService::restore_handed_over_sessions() {
  Impl& s = *impl_;
  auto rows = s.handovers.load_all();
  if (!rows) {
    s.log.error("xmpp.sm_restore_failed", {{"error", rows.error().describe()}});
    return;
  }
  for (auto& rec : *rows) {
    auto state = std::make_shared<Impl::SmState>();
    state->id = rec.sm_id;
    state->restored = true;
    state->detached = true;
    state->handled.store(rec.handled);
    SessionIdentity& me = state->me;
    me.localpart = rec.localpart;
    me.domain = rec.domain;
    me.resource = rec.resource;
    me.bare = rec.localpart + "@" + rec.domain;
    me.full = me.bare + "/" + rec.resource;
    me.id = s.next_id++;
    me.sink = SessionSink::restore({rec.sent, rec.acked, std::move(rec.unacked)});
    auto entry = std::make_shared<SessionEntry>();
    entry->full_jid = me.full;
    entry->resource = me.resource;
    entry->sink = me.sink;
    entry->id = me.id;
    entry->available = rec.available;
    entry->priority = rec.priority;
    entry->last_presence = rec.presence;
    entry->carbons = rec.carbons;
    entry->wants_roster_pushes = rec.roster_pushes;
    if (s.registry.bind(me.bare, entry)) continue;  // cannot happen in a fresh process
    s.sessions_open.add(1);
    {
      std::lock_guard lock(s.sm_mutex);
      s.resumable[state->id] = state;
    }
    std::uint64_t generation = state->generation;
    std::shared_ptr<Impl> svc = impl_;
    s.run_after(std::chrono::seconds(s.options.resume_timeout_seconds), [svc, state, generation] {
      {
        std::lock_guard lock(state->mutex);
        if (state->generation != generation || !state->detached || state->ended) return;
        state->ended = true;
      }
      svc->log.info("xmpp.sm_expired", {{"jid", state->me.full}});
      svc->end_session(state->me, state->id, state->restored);
    });
    s.log.info("xmpp.sm_restored", {{"jid", me.full}});
  }
}

void XmppService::install_http_routes(net::Router& router) {
  if (!impl_->uploads.empty()) impl_->uploads.front()->install_routes(router);
  router.websocket(std::string(kWebSocketPath), websocket_acceptor(), impl_->options.max_stanza_bytes, "xmpp");
  // XEP-0156: where web clients find the WebSocket endpoint.
  auto impl = impl_;
  auto endpoint = [impl]() {
    std::lock_guard lock(impl->url_mutex);
    std::string url = impl->public_url;
    if (url.rfind("https://", 0) == 0) url = "wss://" + url.substr(8);
    else if (url.rfind("http://", 0) == 0) url = "ws://" + url.substr(7);
    return url + std::string(kWebSocketPath);
  };
  router.add("GET", "/.well-known/host-meta", [endpoint](net::HttpRequest&&, net::Respond respond) {
    net::HttpResponse r;
    r.content_type = "application/xrd+xml";
    r.body = fmt::format(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
        "  <Link rel='urn:xmpp:alt-connections:websocket' href='{}'/>\n</XRD>\n",
        xml_escape(endpoint()));
    r.headers.emplace_back("Access-Control-Allow-Origin", "*");
    respond(std::move(r));
  });
  router.add("GET", "/.well-known/host-meta.json", [endpoint](net::HttpRequest&&, net::Respond respond) {
    net::HttpResponse r = net::HttpResponse::json(
        200, fmt::format("{{\"links\":[{{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"{}\"}}]}}", endpoint()));
    r.headers.emplace_back("Access-Control-Allow-Origin", "*");
    respond(std::move(r));
  });
}

void XmppService::set_public_url(const std::string& url) {
  for (const auto& u : impl_->uploads) u->set_public_url(url);
  std::lock_guard lock(impl_->url_mutex);
  impl_->public_url = url;
  while (!impl_->public_url.empty() && impl_->public_url.back() == '/') impl_->public_url.pop_back();
}

namespace {

// RFC 7395: a c2s session over a WebSocket. The session writes the byte stream it always
// writes; this turns it into one message per element (ws_framing.h).
class WsStream final : public net::StreamConnection {
 public:
  WsStream(std::shared_ptr<net::WebSocketConnection> ws, bool secure, std::string server_name)
      : ws_(std::move(ws)), secure_(secure), server_name_(std::move(server_name)) {}
  void send(std::string bytes) override {
    std::vector<std::string> messages;
    {
      std::lock_guard lock(mutex_);
      messages = frame_outgoing(pending_, bytes);
      // Order matters across threads: send while holding the lock.
      for (auto& m : messages) ws_->send(std::move(m));
    }
  }
  void close() override { ws_->close(1000); }
  void start_tls(std::function<void(Result<void>)> done, std::string) override {
    done(fail(Errc::unavailable, "a WebSocket gets its TLS from wss://"));
  }
  bool is_tls() const override { return secure_; }
  std::string remote_ip() const override { return ws_->remote_ip(); }
  std::string server_name() const override { return server_name_; }
  std::string alpn() const override { return {}; }
  std::string tls_version() const override { return {}; }
  Result<std::string> channel_binding(std::string_view) const override {
    return fail(Errc::unavailable, "no channel binding over WebSocket");
  }
  void set_read_rate(std::size_t, std::size_t) override {}
  void set_idle_timeout(int) override {}
  void post(std::function<void()> fn) override { ws_->post(std::move(fn)); }
  void post_after(std::chrono::milliseconds delay, std::function<void()> fn) override {
    ws_->post_after(delay, std::move(fn));
  }

 private:
  std::shared_ptr<net::WebSocketConnection> ws_;
  bool secure_;
  std::string server_name_;
  std::mutex mutex_;
  std::string pending_;
};

bool is_loopback(std::string_view ip) { return ip == "::1" || ip.rfind("127.", 0) == 0; }

}  // namespace

net::WebSocketAcceptor XmppService::websocket_acceptor() {
  auto impl = impl_;
  return [impl](std::shared_ptr<net::WebSocketConnection> ws, const net::HttpRequest& request) {
    // Credentials travel inside; plain ws:// only from this machine (a reverse proxy that
    // terminates TLS).
    if (!request.tls && !is_loopback(request.remote_ip)) {
      ws->close(1008, "use wss://");
      return net::WebSocketCallbacks{};
    }
    auto conn = std::make_shared<WsStream>(ws, true, request.server_name);
    auto session = std::make_shared<C2sSession>(impl, conn, /*direct_tls=*/true);
    net::WebSocketCallbacks cb;
    cb.on_message = [session](std::string_view message, bool) {
      auto bytes = unframe_incoming(message);
      session->on_data(bytes ? std::string_view(*bytes) : message);
    };
    cb.on_close = [session] { session->on_close(); };
    return cb;
  };
}

net::StreamAcceptor XmppService::acceptor(bool direct_tls) {
  auto impl = impl_;
  return [impl, direct_tls](std::shared_ptr<net::StreamConnection> conn) {
    auto session = std::make_shared<C2sSession>(impl, conn, direct_tls);
    net::StreamCallbacks cb;
    cb.on_data = [session](std::string_view bytes) { session->on_data(bytes); };
    cb.on_close = [session] { session->on_close(); };
    cb.on_drain = [session] { session->on_drain(); };
    return cb;
  };
}

}  // namespace hearth::xmpp
