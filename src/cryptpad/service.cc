// The netflux relay, the history keeper and the websocket RPC (see cryptpad.h for the
// threading contract).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"
#include "cryptpad/admin.h"
#include "cryptpad/auth.h"
#include "cryptpad/channel_store.h"
#include "cryptpad/files.h"
#include "cryptpad/cryptpad.h"
#include "cryptpad/metadata.h"
#include "cryptpad/protocol.h"
#include "cryptpad/web.h"
#include "cryptpad/rpc.h"
#include "store/store.h"

namespace hearth::cryptpad {

namespace {

std::string frame(std::initializer_list<std::string_view> raw_parts) {
  std::string out = "[";
  bool first = true;
  for (auto p : raw_parts) {
    if (!first) out += ',';
    first = false;
    out += p;
  }
  out += ']';
  return out;
}

std::string q(std::string_view s) { return json_quote(s); }
std::string num(std::int64_t n) { return std::to_string(n); }

}  // namespace

struct User {
  std::string id;
  std::shared_ptr<net::WebSocketConnection> conn;
  std::set<std::string> channels;       // guarded by Impl::mu
  std::deque<std::string> inbox;        // guarded by Impl::mu
  bool busy = false;                    // a drain job is queued or running
  bool closed = false;
  std::int64_t last_seen_ms = 0;
  std::int64_t last_ping_ms = 0;
  std::set<std::string> keys;           // ed25519 keys proven over RPC
  std::string ip;                       // remote address (ACTIVE_SESSIONS counts unique ones)

  void send(std::string msg) { conn->send(std::move(msg)); }
};

struct Channel {
  std::string id;
  std::vector<std::shared_ptr<User>> members;
  std::optional<ChannelMeta> meta;  // cached while the channel is open
  bool expiry_notified = false;
};

struct CryptpadService::Impl : std::enable_shared_from_this<CryptpadService::Impl> {
  CryptpadOptions options;
  ChannelStore channels_store;
  Clock& clock;
  Logger& log;
  Offload offload;
  RunAfter run_after;
  std::string hk;
  ParseLimits limits;
  RpcSessions sessions;
  std::shared_ptr<CryptpadFiles> files;
  std::shared_ptr<CryptpadAuth> auth;
  std::shared_ptr<CryptpadAdmin> admin;
  std::atomic<bool> stopped{false};

  Counter& frames_in;
  Counter& messages_stored;
  Counter& messages_rejected;
  Gauge& connections;
  Counter& history_pauses;

  mutable std::mutex mu;
  std::unordered_map<std::string, std::shared_ptr<User>> users;
  std::unordered_map<std::string, Channel> channels;
  // Empty selfdestruct channels waiting for their delay, with the timer's generation (a
  // rejoin and leave schedules a newer timer; the older one then does nothing).
  std::map<std::string, std::uint64_t> selfdestruct_pending;
  std::uint64_t selfdestruct_generation = 0;

  Impl(CryptpadOptions o, store::Store& store, Clock& c, Logger& l, MetricsRegistry& m, Offload off, RunAfter ra)
      : options(std::move(o)),
        channels_store(store),
        clock(c),
        log(l),
        offload(std::move(off)),
        run_after(std::move(ra)),
        sessions(c),
        files(std::make_shared<CryptpadFiles>(store, c, options.blobs, options.max_upload_bytes)),
        auth(std::make_shared<CryptpadAuth>(store, c, *files)),
        admin(std::make_shared<CryptpadAdmin>(store, c, options.admin_keys, options.default_storage_limit)),
        frames_in(m.counter("hearth_cryptpad_frames_total", "Netflux frames received")),
        messages_stored(m.counter("hearth_cryptpad_messages_stored_total", "Channel messages stored")),
        messages_rejected(m.counter("hearth_cryptpad_messages_rejected_total",
                                    "Channel messages refused (validation, storage)")),
        connections(m.gauge("hearth_cryptpad_connections", "Open CryptPad websocket connections")),
        history_pauses(m.counter("hearth_cryptpad_history_pauses_total",
                                 "History replies paused because the client reads slower than they are produced")) {
    hk = options.history_keeper_id.empty() ? random_hex(8) : options.history_keeper_id;
    limits.max_bytes = options.max_message_bytes;
    limits.max_depth = options.max_json_depth;
  }

  std::int64_t now_ms() const { return clock.now_ms(); }
  std::int64_t mono_ms() const { return clock.monotonic_ns() / 1'000'000; }

  // -- connections -------------------------------------------------------------------
  net::WebSocketCallbacks accept(std::shared_ptr<net::WebSocketConnection> conn, std::string ip = {}) {
    auto user = std::make_shared<User>();
    user->id = random_hex(16);
    user->ip = std::move(ip);
    user->conn = std::move(conn);
    user->last_seen_ms = user->last_ping_ms = mono_ms();
    {
      std::lock_guard lock(mu);
      users[user->id] = user;
    }
    connections.add(1);
    user->send(frame({"0", "\"\"", "\"IDENT\"", q(user->id)}));
    std::weak_ptr<Impl> weak = shared_from_this();
    net::WebSocketCallbacks cb;
    cb.on_message = [weak, user](std::string_view message, bool) {
      if (auto self = weak.lock()) self->on_message(user, message);
    };
    cb.on_close = [weak, user] {
      if (auto self = weak.lock()) self->on_close(user);
    };
    return cb;
  }

  void on_message(const std::shared_ptr<User>& user, std::string_view message) {
    frames_in.inc();
    bool start = false;
    {
      std::lock_guard lock(mu);
      if (user->closed) return;
      user->last_seen_ms = mono_ms();
      if (user->inbox.size() >= options.max_queued_frames) {
        user->conn->close(1008, "too many queued frames");
        return;
      }
      user->inbox.emplace_back(message);
      if (!user->busy) start = user->busy = true;
    }
    if (start) schedule_drain(user);
  }

  void schedule_drain(const std::shared_ptr<User>& user) {
    std::weak_ptr<Impl> weak = shared_from_this();
    if (!offload([weak, user] {
          if (auto self = weak.lock()) self->drain(user);
        })) {
      {
        std::lock_guard lock(mu);
        user->busy = false;
        user->inbox.clear();
      }
      user->conn->close(1013, "server busy");
    }
  }

  void drain(const std::shared_ptr<User>& user) {
    // At most a few frames per job so that one busy connection does not hold a worker.
    for (int i = 0; i < 32; ++i) {
      std::string msg;
      {
        std::lock_guard lock(mu);
        if (user->closed || user->inbox.empty()) {
          user->busy = false;
          return;
        }
        msg = std::move(user->inbox.front());
        user->inbox.pop_front();
      }
      if (!handle(user, msg)) return;  // a long reply is streaming; it resumes the drain
    }
    schedule_drain(user);
  }

  void on_close(const std::shared_ptr<User>& user) {
    std::lock_guard lock(mu);
    if (user->closed) return;
    user->closed = true;
    user->inbox.clear();
    users.erase(user->id);
    connections.add(-1);
    for (const auto& chan : user->channels) leave_locked(user, chan, nullptr);
    user->channels.clear();
  }

  // Removes `user` from `chan` and tells the remaining members. Caller holds mu.
  void leave_locked(const std::shared_ptr<User>& user, const std::string& chan, const char* /*reason*/) {
    auto it = channels.find(chan);
    if (it == channels.end()) return;
    auto& members = it->second.members;
    members.erase(std::remove(members.begin(), members.end(), user), members.end());
    std::string msg = frame({"0", q(user->id), "\"LEAVE\"", q(chan)});
    for (const auto& m : members) m->send(msg);
    if (!members.empty()) return;
    const bool selfdestruct = it->second.meta && it->second.meta->selfdestruct && !it->second.meta->deleted;
    channels.erase(it);
    if (selfdestruct) schedule_selfdestruct(chan);
  }

  // A selfdestruct channel is removed a delay after its last member left, unless someone
  // joined again meanwhile. Caller holds mu.
  void schedule_selfdestruct(const std::string& chan) {
    const std::uint64_t generation = ++selfdestruct_generation;
    selfdestruct_pending[chan] = generation;
    std::weak_ptr<Impl> weak = shared_from_this();
    run_after(std::chrono::seconds(options.selfdestruct_delay_seconds), [weak, chan, generation] {
      auto self = weak.lock();
      if (!self) return;
      self->offload([weak, chan, generation] {
        if (auto me = weak.lock()) me->finish_selfdestruct(chan, generation);
      });
    });
  }

  void finish_selfdestruct(const std::string& chan, std::uint64_t generation) {
    {
      std::lock_guard lock(mu);
      auto it = selfdestruct_pending.find(chan);
      if (it == selfdestruct_pending.end() || it->second != generation) return;  // rejoined meanwhile
      selfdestruct_pending.erase(it);
      if (channels.count(chan)) return;
    }
    if (auto r = channels_store.mark_deleted_sync(chan, "SELFDESTRUCT"); !r)
      log.warn("cryptpad.selfdestruct_failed", {{"channel", chan}, {"error", r.error().describe()}});
  }

  void idle_sweep() {
    if (stopped) return;
    const std::int64_t now = mono_ms();
    {
      std::lock_guard lock(mu);
      for (auto& [id, user] : users) {
        std::int64_t idle = now - user->last_seen_ms;
        if (idle > std::int64_t{options.idle_timeout_seconds} * 1000) {
          user->conn->close(1000, "idle timeout");
        } else if (idle > std::int64_t{options.ping_after_seconds} * 1000 &&
                   now - user->last_ping_ms >= std::int64_t{options.ping_after_seconds} * 1000) {
          user->last_ping_ms = now;
          user->send(frame({"0", "\"\"", "\"PING\"", num(now_ms())}));
        }
      }
      // Expired channels: members are told once; the store refuses further use.
      const std::int64_t wall = now_ms();
      for (auto& [id, ch] : channels) {
        if (!ch.meta || !ch.meta->expire || *ch.meta->expire > wall || ch.expiry_notified) continue;
        ch.expiry_notified = true;
        JsonWriter w;
        w.begin_object().key("error").value("EEXPIRED").key("channel").value(id).end_object();
        const std::string msg = frame({"0", q(hk), "\"MSG\"", q(id), q(w.str())});
        for (const auto& m : ch.members) m->send(msg);
      }
    }
    archive_expired();
    schedule_sweep();
  }

  // Channels past their expiry are archived in place (placeholder EXPIRED; the rows stay
  // until retention purges them), a batch at a time on the worker pool, as CryptPad's
  // EXPIRE tasks do.
  std::atomic<bool> archiving{false};
  void archive_expired() {
    if (archiving.exchange(true)) return;
    std::weak_ptr<Impl> weak = shared_from_this();
    bool queued = offload([weak] {
      auto self = weak.lock();
      if (!self) return;
      auto done = self->channels_store.archive_expired_sync(self->now_ms(), 100);
      if (!done) {
        self->log.warn("cryptpad.expiry_failed", {{"error", done.error().describe()}});
      } else {
        for (const auto& chan : *done) self->channel_changed(chan, "");
      }
      self->archiving = false;
    });
    if (!queued) archiving = false;
  }

  void schedule_sweep() {
    std::weak_ptr<Impl> weak = shared_from_this();
    int every = std::max(1, std::min(options.ping_after_seconds, options.idle_timeout_seconds) / 3);
    run_after(std::chrono::seconds(every), [weak] {
      if (auto self = weak.lock()) self->idle_sweep();
    });
  }

  // -- frames ------------------------------------------------------------------------
  // Returns false when the frame's reply continues asynchronously (history streaming);
  // the stream calls drain() again when it is done.
  bool handle(const std::shared_ptr<User>& user, const std::string& text) {
    auto f = parse_frame(text, limits);
    if (!f) {
      const auto& m = f.error().message;
      if (m == "not JSON" || m == "JSON nesting too deep" || m == "JSON text too large") {
        log.debug("cryptpad.bad_message", {{"user", user->id}, {"error", m}});
        user->conn->close(1008, "BAD_MESSAGE");
      }
      return true;  // well-formed JSON of another shape: ignored, as chainpad-server does
    }
    const std::string seq = num(f->seq);
    if (f->cmd == "JOIN") join(user, seq, f->args);
    else if (f->cmd == "LEAVE") leave(user, seq, f->args);
    else if (f->cmd == "MSG") return msg(user, seq, f->args);
    else if (f->cmd == "PING") user->send(frame({seq, "\"ACK\""}));
    // PONG and unknown commands only reset the idle timer (done in on_message).
    return true;
  }

  void error(const std::shared_ptr<User>& user, const std::string& seq, std::string_view code, std::string_view arg_raw) {
    user->send(frame({seq, "\"ERROR\"", q(code), arg_raw}));
  }

  // Loads (once per open channel) the channel's metadata.
  ChannelMeta meta_of(const std::string& chan) {
    {
      std::lock_guard lock(mu);
      auto it = channels.find(chan);
      if (it != channels.end() && it->second.meta) return *it->second.meta;
    }
    ChannelMeta meta;
    auto rec = channels_store.load_sync(chan);
    if (rec && *rec) meta = ChannelMeta::from_record(**rec, limits);
    if (!rec) meta.load_error = true;
    if (auto cp = channels_store.last_checkpoint_id_sync(chan); cp && *cp) meta.last_cp_id = **cp;
    if (!meta.load_error) {
      std::lock_guard lock(mu);
      auto it = channels.find(chan);
      if (it != channels.end() && !it->second.meta) it->second.meta = meta;
    }
    return meta;
  }

  bool may_access(const ChannelMeta& meta, const User& user) const {
    if (!meta.restricted) return true;
    for (const auto& k : user.keys)
      if (meta.is_owner(k) || meta.is_allowed(k)) return true;
    return false;
  }

  std::string restricted_list(const ChannelMeta& meta) const {
    JsonWriter w;
    w.begin_array().value(hk);
    for (const auto& k : meta.owners) w.value(k);
    for (const auto& k : meta.allowed) w.value(k);
    w.end_array();
    return w.take();
  }

  void join(const std::shared_ptr<User>& user, const std::string& seq, const std::vector<RawValue>& args) {
    std::string chan;
    if (args.empty() || args[0].type == RawValue::Type::null) {
      chan = random_hex(16);
    } else if (!args[0].is_string() || args[0].text.empty() || args[0].text.size() > 64) {
      return error(user, seq, "EINVAL", args.empty() ? "null" : args[0].raw);
    } else {
      chan = args[0].text;
    }
    ChannelKind kind = classify_channel(chan);
    bool meta_selfdestruct = false;
    std::optional<ChannelMeta> loaded;
    if (kind == ChannelKind::stored || kind == ChannelKind::other) {
      loaded = meta_of(chan);
      if (!may_access(*loaded, *user)) return error(user, seq, "ERESTRICTED", restricted_list(*loaded));
      meta_selfdestruct = loaded->selfdestruct && !loaded->deleted;
    }
    std::unique_lock lock(mu);
    if (user->closed) return;
    if (meta_selfdestruct && !channels.count(chan)) {
      if (!selfdestruct_pending.erase(chan)) {
        // Closed and not waiting for its delay: the server restarted meanwhile. It is
        // removed now, as CryptPad does.
        lock.unlock();
        channels_store.mark_deleted_sync(chan, "SELFDESTRUCT");
        return error(user, seq, "ESELFDESTRUCT", q(chan));
      }
    }
    auto& ch = channels[chan];
    ch.id = chan;
    if (!ch.meta && loaded && !loaded->load_error) ch.meta = std::move(*loaded);  // cached while open
    const std::string hk_join = frame({"0", q(hk), "\"JOIN\"", q(chan)});
    const std::string own_join = frame({"0", q(user->id), "\"JOIN\"", q(chan)});
    const bool broadcast = kind == ChannelKind::broadcast;
    if (std::find(ch.members.begin(), ch.members.end(), user) != ch.members.end()) {
      error(user, seq, "EJOINED", q(chan));
      user->send(hk_join);
      if (!broadcast)
        for (const auto& m : ch.members)
          if (m != user) user->send(frame({"0", q(m->id), "\"JOIN\"", q(chan)}));
      user->send(own_join);
      return;
    }
    user->send(frame({seq, "\"JACK\"", q(chan)}));
    user->send(hk_join);
    if (!broadcast)
      for (const auto& m : ch.members) user->send(frame({"0", q(m->id), "\"JOIN\"", q(chan)}));
    ch.members.push_back(user);
    user->channels.insert(chan);
    if (broadcast) {
      user->send(own_join);
    } else {
      for (const auto& m : ch.members) m->send(own_join);
    }
  }

  void leave(const std::shared_ptr<User>& user, const std::string& seq, const std::vector<RawValue>& args) {
    if (args.empty() || !args[0].is_string()) return error(user, seq, "EINVAL", args.empty() ? "null" : args[0].raw);
    const std::string& chan = args[0].text;
    std::lock_guard lock(mu);
    auto it = channels.find(chan);
    if (it == channels.end()) return error(user, seq, "ENOENT", q(chan));
    auto& members = it->second.members;
    if (std::find(members.begin(), members.end(), user) == members.end())
      return error(user, seq, "NOT_IN_CHAN", q(chan));
    user->send(frame({seq, "\"ACK\""}));
    user->channels.erase(chan);
    leave_locked(user, chan, nullptr);
  }

  // Sends `msg` to every member of `chan` except `except`.
  void relay(const std::string& chan, const std::string& msg, const User* except) {
    std::lock_guard lock(mu);
    auto it = channels.find(chan);
    if (it == channels.end()) return;
    for (const auto& m : it->second.members)
      if (m.get() != except) m->send(msg);
  }

  bool msg(const std::shared_ptr<User>& user, const std::string& seq, const std::vector<RawValue>& args) {
    if (args.size() < 2 || !args[0].is_string()) {
      error(user, seq, "EINVAL", args.empty() ? "null" : args[0].raw);
      return true;
    }
    const std::string& target = args[0].text;
    if (target == hk) {
      if (!args[1].is_string()) {
        error(user, seq, "EINVAL", q(hk));
        return true;
      }
      return hk_message(user, seq, args[1].text);
    }
    // Users first: their ids are assigned by the server, while anyone may JOIN a channel
    // named like someone's id to intercept their direct messages.
    bool is_channel = false, is_user = false;
    std::shared_ptr<User> peer;
    {
      std::lock_guard lock(mu);
      auto u = users.find(target);
      if (u != users.end()) {
        is_user = true;
        peer = u->second;
      } else {
        is_channel = channels.count(target) > 0;
      }
    }
    if (is_user) {
      peer->send(frame({"0", q(user->id), "\"MSG\"", q(target), args[1].raw}));
      user->send(frame({seq, "\"ACK\""}));
    } else if (!is_channel) {
      error(user, seq, "enoent", q(target));
    } else {
      channel_message(user, seq, target, args[1]);
    }
    return true;
  }

  void channel_message(const std::shared_ptr<User>& user, const std::string& seq, const std::string& chan,
                       const RawValue& content) {
    const std::string relay_msg = frame({"0", q(user->id), "\"MSG\"", q(chan), content.raw});
    ChannelKind kind = classify_channel(chan);
    if (kind == ChannelKind::ephemeral) {
      relay(chan, relay_msg, user.get());
      return user->send(frame({seq, "\"ACK\""}));
    }
    auto reject = [&](std::string_view why) {
      messages_rejected.inc();
      log.debug("cryptpad.message_rejected", {{"channel", chan}, {"user", user->id}, {"reason", why}});
      user->send(frame({seq, "\"ERROR\""}));
    };
    if (kind == ChannelKind::invalid || !content.is_string()) return reject("invalid channel or content");
    ChannelMeta meta = meta_of(chan);
    if (meta.load_error) return reject("storage");
    if (meta.deleted) return reject("deleted");
    if (meta.expire && *meta.expire <= now_ms()) return reject("expired");
    if (!may_access(meta, *user)) return reject("restricted");
    const std::string& text = content.text;
    Checkpoint cp = parse_checkpoint(text);
    if (!meta.validate_key.empty()) {
      if (auto v = verify_channel_message(text, meta.validate_key); !v) return reject(v.error().message);
    }
    if (cp.is_checkpoint && !cp.id.empty()) {
      std::lock_guard lock(mu);
      auto it = channels.find(chan);
      if (it != channels.end() && it->second.meta) {
        if (it->second.meta->last_cp_id == cp.id) {
          // A duplicate of the last checkpoint: relayed and acknowledged, not stored.
          for (const auto& m : it->second.members)
            if (m != user) m->send(relay_msg);
          user->send(frame({seq, "\"ACK\""}));
          return;
        }
        it->second.meta->last_cp_id = cp.id;
      }
    }
    std::weak_ptr<Impl> weak = shared_from_this();
    channels_store.append(chan, user->id, text, now_ms(), cp.is_checkpoint, cp.id,
                          [weak, user, seq, chan, relay_msg](Result<std::int64_t> r) {
                            auto self = weak.lock();
                            if (!self) return;
                            if (!r) {
                              self->messages_rejected.inc();
                              self->log.warn("cryptpad.store_failed", {{"channel", chan}, {"error", r.error().describe()}});
                              self->channel_changed(chan, "");  // forget the optimistic checkpoint id
                              return user->send(frame({seq, "\"ERROR\""}));
                            }
                            self->messages_stored.inc();
                            self->relay(chan, relay_msg, user.get());
                            user->send(frame({seq, "\"ACK\""}));
                          });
  }

  // -- history keeper ----------------------------------------------------------------
  void hk_send(const std::shared_ptr<User>& user, std::string_view content, std::optional<std::int64_t> priority = {}) {
    if (priority)
      user->send(frame({"0", q(hk), "\"MSG\"", q(user->id), q(content), num(*priority)}));
    else
      user->send(frame({"0", q(hk), "\"MSG\"", q(user->id), q(content)}));
  }

  static std::string history_line(std::string_view slot0, const std::string& chan, const StoredMessage& m) {
    return frame({slot0, m.sender ? q(*m.sender) : "null", "\"MSG\"", q(chan), q(m.content), num(m.time)});
  }

  bool hk_message(const std::shared_ptr<User>& user, const std::string& seq, const std::string& content) {
    auto req = parse_hk_request(content, limits);
    if (!req) {
      error(user, seq, "EINVAL", q(hk));
      return true;
    }
    if (!req->is_history) {
      user->send(frame({seq, "\"ACK\""}));
      rpc(user, req->rpc);
      return true;
    }
    auto& h = req->history;
    if (h.kind == HistoryRequest::Kind::get_history_range) {
      if (h.txid_raw.empty()) return error(user, seq, "NO_TXID", q(hk)), true;
      if (!h.count && !h.cp_count && !h.to) return error(user, seq, "UNSPECIFIED_COUNT", q(hk)), true;
    }
    ChannelMeta meta = meta_of(h.channel);
    if (!may_access(meta, *user)) return error(user, seq, "ERESTRICTED", q(hk)), true;
    user->send(frame({seq, "\"ACK\""}));
    switch (h.kind) {
      case HistoryRequest::Kind::get_history: return get_history(user, h, meta);
      case HistoryRequest::Kind::get_history_range: return get_history_range(user, h);
      case HistoryRequest::Kind::get_full_history: return get_full_history(user, h);
    }
    return true;
  }

  std::string error_object(std::string_view code, const std::string& chan, const std::string& txid,
                           const std::optional<std::string>& message = {}) {
    JsonWriter w;
    w.begin_object().key("error").value(code);
    if (message) w.key("message").value(*message);
    w.key("channel").value(chan);
    if (!txid.empty()) w.key("txid").raw(txid);
    w.end_object();
    return w.take();
  }

  bool is_member(const std::shared_ptr<User>& user, const std::string& chan) {
    std::lock_guard lock(mu);
    auto it = channels.find(chan);
    return it != channels.end() &&
           std::find(it->second.members.begin(), it->second.members.end(), user) != it->second.members.end();
  }

  // A history reply streamed in pages from the store. Above a watermark of bytes queued
  // on the connection it pauses (RunAfter, then the worker pool) instead of overflowing the
  // connection's outgoing budget; the connection's next frames wait until it finished.
  struct HistoryStream {
    std::shared_ptr<User> user;
    std::string chan;
    std::int64_t next = 1, last = 0;
    std::optional<std::int64_t> priority;
    std::function<std::string(const StoredMessage&)> line;
    std::string end;        // sent after the last line
    std::string on_error;   // sent instead of `end` when the store fails
  };
  static constexpr std::size_t kStreamHighWater = 1 << 20;
  static constexpr std::int64_t kStreamPage = 16;

  // Sends pages until done (true) or paused (false: it resumes the drain itself).
  bool pump(const std::shared_ptr<HistoryStream>& st) {
    while (st->next <= st->last) {
      {
        std::lock_guard lock(mu);
        if (st->user->closed) return true;
      }
      if (st->user->conn->queued_bytes() > kStreamHighWater) {
        history_pauses.inc();
        std::weak_ptr<Impl> weak = shared_from_this();
        run_after(std::chrono::milliseconds(20), [weak, st] {
          auto self = weak.lock();
          if (!self) return;
          if (!self->offload([weak, st] {
                if (auto me = weak.lock())
                  if (me->pump(st)) me->drain(st->user);
              })) {
            st->user->conn->close(1013, "server busy");
          }
        });
        return false;
      }
      // One page; stop early (and re-read the rest later) once the watermark is reached.
      const std::int64_t to = std::min(st->last, st->next + kStreamPage - 1);
      bool full = false;
      auto r = channels_store.read_range_sync(st->chan, st->next, to, [&](const StoredMessage& m) {
        if (full || m.seq < st->next) return;
        hk_send(st->user, st->line(m), st->priority);
        st->next = m.seq + 1;
        full = st->user->conn->queued_bytes() > kStreamHighWater;
      });
      if (!r) {
        log.warn("cryptpad.history_read_failed", {{"channel", st->chan}, {"error", r.error().describe()}});
        if (!st->on_error.empty()) hk_send(st->user, st->on_error, st->priority);
        return true;
      }
      if (!full) st->next = to + 1;
    }
    if (!st->end.empty()) hk_send(st->user, st->end, st->priority);
    return true;
  }

  bool get_history(const std::shared_ptr<User>& user, const HistoryRequest& h, ChannelMeta meta) {
    const std::string& chan = h.channel;
    const std::string txid = h.txid_raw.empty() ? "null" : h.txid_raw;
    auto prio = h.priority;
    // Sends one history-keeper message and ends the request.
    auto done = [&](const std::string& content) {
      hk_send(user, content, prio);
      return true;
    };
    if (meta.load_error) return done(error_object("EUNKNOWN", chan, txid));
    const bool expired = (meta.expire && *meta.expire <= now_ms()) || (meta.deleted && *meta.deleted == "EXPIRED");
    if (expired) return done(error_object("EEXPIRED", chan, ""));
    if (meta.deleted) return done(error_object("EDELETED", chan, txid, meta.deleted));
    if (meta.exists) hk_send(user, meta.json, prio);
    auto index = channels_store.index_sync(chan);
    if (!index) return done(error_object("EUNKNOWN", chan, txid));
    std::optional<std::int64_t> known;
    if (h.last_known_hash) {
      auto s = channels_store.seq_of_hash_sync(chan, *h.last_known_hash);
      if (!s || !*s) return done(error_object("EUNKNOWN", chan, txid));
      known = **s;
    }
    auto start = history_start(*index, known);
    if (!start) return done(error_object("EUNKNOWN", chan, txid));
    if (!meta.exists && index->last_seq == 0 && is_member(user, chan) &&
        classify_channel(chan) != ChannelKind::ephemeral) {
      auto created = ChannelMeta::initial(chan, h.metadata_raw, now_ms(), limits);
      if (!created) return true;  // invalid validateKey: the request is dropped, as CryptPad does
      auto stored = channels_store.create_sync(chan, created->record);
      if (stored) {
        ChannelMeta fresh = ChannelMeta::from_record(*stored, limits);
        {
          std::lock_guard lock(mu);
          auto it = channels.find(chan);
          if (it != channels.end()) it->second.meta = fresh;
        }
        hk_send(user, fresh.json, prio);
      }
    }
    JsonWriter end;
    end.begin_object().key("state").value(1).key("channel").value(chan).key("txid").raw(txid).end_object();
    auto st = std::make_shared<HistoryStream>();
    st->user = user;
    st->chan = chan;
    st->next = *start;
    st->last = index->last_seq;
    st->priority = prio;
    st->line = [txid, chan](const StoredMessage& m) { return history_line(txid, chan, m); };
    st->end = end.take();
    st->on_error = st->end;
    return pump(st);
  }

  bool get_history_range(const std::shared_ptr<User>& user, const HistoryRequest& h) {
    const std::string& chan = h.channel;
    const std::string& txid = h.txid_raw;
    auto range_error = [&](std::string_view err) {
      hk_send(user, frame({"\"HISTORY_RANGE_ERROR\"", txid, q(err)}));
      return true;
    };
    auto index = channels_store.index_sync(chan);
    if (!index) return range_error("E_STORAGE");
    std::int64_t last = index->last_seq;
    if (h.from) {
      auto s = channels_store.seq_of_hash_sync(chan, *h.from);
      if (!s) return range_error("E_STORAGE");
      if (!*s) return range_error("ENOENT");
      last = **s;
    }
    std::int64_t first = 1;
    if (h.count) {
      first = std::max<std::int64_t>(1, last - std::max<std::int64_t>(*h.count, 0) + 1);
    } else if (h.cp_count) {
      auto cps = channels_store.checkpoints_before_sync(chan, last, std::max<std::int64_t>(*h.cp_count, 1));
      if (!cps) return range_error("E_STORAGE");
      first = cps->empty() ? 1 : cps->back();
    } else if (h.to && *h.to != "NONE") {
      auto s = channels_store.seq_of_hash_sync(chan, *h.to);
      if (!s) return range_error("E_STORAGE");
      if (!*s) return range_error("ENOENT");
      first = **s;
    }
    auto st = std::make_shared<HistoryStream>();
    st->user = user;
    st->chan = chan;
    st->next = first;
    st->last = last;
    st->line = [txid, chan](const StoredMessage& m) {
      return frame({"\"HISTORY_RANGE\"", txid, history_line("0", chan, m)});
    };
    st->end = frame({"\"HISTORY_RANGE_END\"", txid, q(chan)});
    st->on_error = frame({"\"HISTORY_RANGE_ERROR\"", txid, q("E_STORAGE")});
    return pump(st);
  }

  bool get_full_history(const std::shared_ptr<User>& user, const HistoryRequest& h) {
    const std::string& chan = h.channel;
    auto index = channels_store.index_sync(chan);
    if (!index) return hk_send(user, frame({"\"ERROR\"", q(chan), q("E_STORAGE")})), true;
    auto st = std::make_shared<HistoryStream>();
    st->user = user;
    st->chan = chan;
    st->next = 1;
    st->last = index->last_seq;
    st->line = [chan](const StoredMessage& m) { return frame({"\"FULL_HISTORY\"", history_line("0", chan, m)}); };
    st->end = frame({"\"FULL_HISTORY_END\"", q(chan)});
    st->on_error = frame({"\"ERROR\"", q(chan), q("E_STORAGE")});
    return pump(st);
  }

  // -- RPC ----------------------------------------------------------------------------
  void rpc(const std::shared_ptr<User>& user, const RpcRequest& r) {
    RpcContext ctx{channels_store, sessions, clock, options, limits};
    ctx.files = files.get();
    ctx.admin = admin.get();
    ctx.auth = auth.get();
    ctx.data_dir = options.data_dir;
    ctx.session_stats = [this] {
      std::lock_guard lock(mu);
      std::set<std::string> ips;
      for (const auto& [id, u] : users) ips.insert(u->ip);
      return std::pair<std::int64_t, std::int64_t>(static_cast<std::int64_t>(users.size()),
                                                   static_cast<std::int64_t>(ips.size()));
    };
    ctx.active_channels = [this] {
      std::lock_guard lock(mu);
      return static_cast<std::int64_t>(channels.size());
    };
    ctx.metadata_changed = [this](const std::string& chan, const ChannelMeta& meta) { metadata_changed(chan, meta); };
    ctx.meta_of = [this](const std::string& chan) { return meta_of(chan); };
    ctx.channel_changed = [this](const std::string& chan, const std::string& notice) { channel_changed(chan, notice); };
    ctx.write_private_message = [this](const std::string& chan, const std::string& content) {
      return write_private_message(chan, content);
    };
    if (!r.authenticated) {
      auto v = run_anonymous_rpc(ctx, r.command, r.arg);
      if (!v) return hk_send(user, frame({r.txid_raw, "\"ERROR\"", q(v.error())}));
      return hk_send(user, frame({r.txid_raw, "null", *v, "null"}));
    }
    auto v = run_authenticated_rpc(ctx, r);
    if (!v) return hk_send(user, frame({r.txid_raw, "\"ERROR\"", q(v.error())}));
    {
      std::lock_guard lock(mu);
      if (v->destroyed) user->keys.erase(r.public_key);
      else user->keys.insert(r.public_key);
    }
    std::string out = "[" + r.txid_raw + "," + q(v->cookie);
    for (const auto& part : v->values) out += "," + part;
    out += "]";
    hk_send(user, out);
  }

  // WRITE_PRIVATE_MESSAGE: stored with sender null, then relayed to the members as
  // [0, null, "MSG", chan, content]. Returns the server time of the message.
  tl::expected<std::int64_t, std::string> write_private_message(const std::string& chan, const std::string& content) {
    ChannelKind kind = classify_channel(chan);
    if (kind == ChannelKind::invalid || kind == ChannelKind::ephemeral) return tl::unexpected(std::string("EINVAL"));
    ChannelMeta meta = meta_of(chan);
    if (meta.load_error) return tl::unexpected(std::string("E_STORAGE"));
    if (meta.deleted) return tl::unexpected(std::string("EDELETED"));
    if (meta.restricted) return tl::unexpected(std::string("ERESTRICTED"));
    if (!meta.validate_key.empty() && !verify_channel_message(content, meta.validate_key)) {
      messages_rejected.inc();
      return tl::unexpected(std::string("EINVAL"));
    }
    Checkpoint cp = parse_checkpoint(content);
    const std::int64_t time = now_ms();
    std::promise<Result<std::int64_t>> stored;
    auto future = stored.get_future();
    channels_store.append(chan, std::nullopt, content, time, cp.is_checkpoint, cp.id,
                          [&stored](Result<std::int64_t> r) { stored.set_value(std::move(r)); });
    if (!future.get()) {
      messages_rejected.inc();
      return tl::unexpected(std::string("E_STORAGE"));
    }
    messages_stored.inc();
    relay(chan, frame({"0", "null", "\"MSG\"", q(chan), q(content)}), nullptr);
    return time;
  }

  void channel_changed(const std::string& chan, const std::string& notice) {
    std::lock_guard lock(mu);
    auto it = channels.find(chan);
    if (it == channels.end()) return;
    it->second.meta.reset();  // reloaded on next use
    if (notice.empty()) return;
    const std::string msg = frame({"0", q(hk), "\"MSG\"", q(chan), q(notice)});
    for (const auto& m : it->second.members) m->send(msg);
  }

  // Pushes new metadata to the channel's members (see docs/cryptpad.md for the quirks).
  void metadata_changed(const std::string& chan, const ChannelMeta& meta) {
    std::lock_guard lock(mu);
    auto it = channels.find(chan);
    if (it == channels.end()) return;
    it->second.meta = meta;
    if (!meta.restricted) {
      // CryptPad encodes the object twice here; clients ignore it, and so do we keep it.
      std::string twice = q(meta.json);
      for (const auto& m : it->second.members) m->send(frame({"0", q(hk), "\"MSG\"", q(m->id), q(twice)}));
      return;
    }
    auto& members = it->second.members;
    std::vector<std::shared_ptr<User>> removed;
    for (const auto& m : members) {
      if (may_access(meta, *m)) {
        m->send(frame({"0", q(hk), "\"MSG\"", q(m->id), q(meta.json)}));
      } else {
        JsonWriter w;
        w.begin_object().key("error").value("ERESTRICTED").key("channel").value(chan).end_object();
        m->send(frame({"0", q(hk), "\"MSG\"", q(m->id), q(w.str())}));
        removed.push_back(m);
      }
    }
    for (const auto& m : removed) {
      m->channels.erase(chan);
      leave_locked(m, chan, nullptr);
      if (channels.find(chan) == channels.end()) break;
    }
  }
};

CryptpadService::CryptpadService(CryptpadOptions options, store::Store& store, Clock& clock, Logger& log,
                                 MetricsRegistry& metrics, Offload offload, RunAfter run_after)
    : impl_(std::make_shared<Impl>(std::move(options), store, clock, log, metrics, std::move(offload),
                                   std::move(run_after))) {}

CryptpadService::~CryptpadService() { impl_->stopped = true; }

Result<void> CryptpadService::migrate() {
  if (auto m = impl_->channels_store.migrate(); !m) return m;
  return impl_->admin->load();
}

const std::string& CryptpadService::history_keeper_id() const { return impl_->hk; }

std::size_t CryptpadService::connection_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->users.size();
}

void CryptpadService::install(net::Router& router) {
  std::weak_ptr<Impl> weak = impl_;
  router.websocket(
      impl_->options.websocket_path,
      [weak](std::shared_ptr<net::WebSocketConnection> conn, const net::HttpRequest& req) -> net::WebSocketCallbacks {
        auto self = weak.lock();
        if (!self) {
          conn->close(1001, "shutting down");
          return {};
        }
        return self->accept(std::move(conn), req.remote_ip);
      },
      impl_->options.max_message_bytes);
  auto admin = impl_->admin;
  install_http_routes(router, impl_->options, impl_->hk, [admin] { return admin->admins(); },
                      [admin] { return admin->default_limit(); });
  install_auth_routes(router, impl_->auth, impl_->files, impl_->options);
  install_web_routes(router, impl_->options);
}

void CryptpadService::start() { impl_->schedule_sweep(); }

}  // namespace hearth::cryptpad
