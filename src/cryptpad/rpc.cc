#include "cryptpad/rpc.h"

#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"

namespace hearth::cryptpad {

namespace {
constexpr std::int64_t kSessionIdleMs = 5 * 60 * 1000;
constexpr std::int64_t kTokenRotateMs = 60 * 1000;
constexpr std::size_t kMaxListItems = 10000;
std::mutex metadata_mutex;  // SET_METADATA is read-modify-write

using Error = tl::unexpected<std::string>;
Error err(std::string code) { return Error(std::move(code)); }

std::optional<std::vector<std::string>> string_list(const RawValue& v, const ParseLimits& limits) {
  if (v.type != RawValue::Type::array) return std::nullopt;
  auto arr = parse_array(v.raw, limits);
  if (!arr || arr->size() > kMaxListItems) return std::nullopt;
  std::vector<std::string> out;
  for (auto& e : *arr) {
    if (!e.is_string()) return std::nullopt;
    out.push_back(std::move(e.text));
  }
  return out;
}

std::int64_t channel_size(RpcContext& ctx, const std::string& id) {
  auto s = ctx.store.size_sync(id);
  return s ? *s : 0;
}

}  // namespace

// -- sessions -------------------------------------------------------------------------
void RpcSessions::sweep_locked(std::int64_t now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_used > kSessionIdleMs) it = sessions_.erase(it);
    else ++it;
  }
}

std::string RpcSessions::cookie_for(const std::string& key) {
  std::lock_guard lock(mu_);
  const std::int64_t now = clock_.now_ms();
  sweep_locked(now);
  auto& s = sessions_[key];
  s.last_used = now;
  if (s.tokens.empty() || now - s.tokens.back().second > kTokenRotateMs) {
    s.tokens.emplace_back(random_hex(8), now);
    if (s.tokens.size() > 2) s.tokens.erase(s.tokens.begin());
  }
  const auto& [token, created] = s.tokens.back();
  return fmt::format("{}|{}|{}", created / 5000 * 5000, static_cast<long>(getpid()), token);
}

bool RpcSessions::valid(const std::string& key, const std::string& cookie) {
  auto a = cookie.find('|');
  auto b = a == std::string::npos ? a : cookie.find('|', a + 1);
  if (b == std::string::npos) return false;
  if (cookie.substr(a + 1, b - a - 1) != std::to_string(static_cast<long>(getpid()))) return false;
  const std::string token = cookie.substr(b + 1);
  std::lock_guard lock(mu_);
  const std::int64_t now = clock_.now_ms();
  auto it = sessions_.find(key);
  if (it == sessions_.end() || now - it->second.last_used > kSessionIdleMs) return false;
  for (const auto& t : it->second.tokens)
    if (secrets_equal(t.first, token)) {
      it->second.last_used = now;
      return true;
    }
  return false;
}

void RpcSessions::expire(const std::string& key) {
  std::lock_guard lock(mu_);
  sessions_.erase(key);
}

std::string pin_list_hash(std::vector<std::string> channels) {
  std::sort(channels.begin(), channels.end());
  channels.erase(std::unique(channels.begin(), channels.end()), channels.end());
  JsonWriter w;
  w.begin_array();
  for (const auto& c : channels) w.value(c);
  w.end_array();
  unsigned char hash[crypto_hash_sha512_BYTES];
  crypto_hash_sha512(hash, reinterpret_cast<const unsigned char*>(w.str().data()), w.str().size());
  return base64_encode(std::string_view(reinterpret_cast<const char*>(hash), sizeof hash));
}

// -- anonymous ------------------------------------------------------------------------
tl::expected<std::string, std::string> run_anonymous_rpc(RpcContext& ctx, const std::string& command,
                                                         const RawValue& arg) {
  if (command == "GET_FILE_SIZE") {
    if (!arg.is_string()) return err("INVALID_FILE_ID");
    return std::to_string(channel_size(ctx, arg.text));
  }
  if (command == "GET_MULTIPLE_FILE_SIZE") {
    auto ids = string_list(arg, ctx.limits);
    if (!ids) return err("INVALID_FILE_ID");
    JsonWriter w;
    w.begin_object();
    for (const auto& id : *ids) w.key(id).value(channel_size(ctx, id));
    w.end_object();
    return w.take();
  }
  if (command == "GET_DELETED_PADS") {
    auto ids = string_list(arg, ctx.limits);
    if (!ids) return err("INVALID_ARGUMENTS");
    JsonWriter w;
    w.begin_array();
    for (const auto& id : *ids) {
      auto rec = ctx.store.load_sync(id);
      if (rec && *rec && (*rec)->deleted) w.value(id);
    }
    w.end_array();
    return w.take();
  }
  if (command == "IS_CHANNEL_PINNED") return std::string("true");
  if (command == "IS_PREMIUM") return std::string("false");
  if (command == "IS_NEW_CHANNEL") {
    if (!arg.is_string()) return err("INVALID_CHAN");
    auto rec = ctx.store.load_sync(arg.text);
    auto idx = ctx.store.index_sync(arg.text);
    if (!rec || !idx) return err("E_STORAGE");
    JsonWriter w;
    w.begin_object();
    if (*rec && (*rec)->deleted) {
      w.key("isNew").value(false).key("reason").value(*(*rec)->deleted);
    } else {
      w.key("isNew").value(!*rec && idx->last_seq == 0);
    }
    w.end_object();
    return w.take();
  }
  if (command == "GET_METADATA") {
    if (!arg.is_string()) return err("INVALID_CHAN");
    auto rec = ctx.store.load_sync(arg.text);
    if (!rec) return err("E_STORAGE");
    if (!*rec) return std::string("{}");
    return (*rec)->metadata;
  }
  if (command == "WRITE_PRIVATE_MESSAGE") {
    auto args = arg.type == RawValue::Type::array ? parse_array(arg.raw, ctx.limits)
                                                  : Result<std::vector<RawValue>>(fail(Errc::invalid_argument, ""));
    if (!args || args->size() < 2 || !(*args)[0].is_string() || !(*args)[1].is_string()) return err("INVALID_ARGUMENTS");
    auto t = ctx.write_private_message((*args)[0].text, (*args)[1].text);
    if (!t) return err(t.error());
    return std::to_string(*t);
  }
  return err("INVALID_RPC_CALL");
}

// -- authenticated ----------------------------------------------------------------------
tl::expected<AuthenticatedReply, std::string> run_authenticated_rpc(RpcContext& ctx, const RpcRequest& r) {
  const std::string& key = r.public_key;
  if (!is_valid_public_key(key)) return err("INVALID_SIGNATURE_OR_PUBLIC_KEY");
  if (r.command != "COOKIE" && !ctx.sessions.valid(key, r.cookie)) return err("NO_COOKIE");
  if (!verify_detached(r.signed_text, r.signature, key)) return err("INVALID_SIGNATURE_OR_PUBLIC_KEY");

  AuthenticatedReply reply;
  const std::string& cmd = r.command;
  auto finish = [&]() -> tl::expected<AuthenticatedReply, std::string> {
    reply.cookie = ctx.sessions.cookie_for(key);
    return reply;
  };
  auto pins_hash = [&]() -> tl::expected<std::string, std::string> {
    auto pins = ctx.store.pins_sync(key);
    if (!pins) return err("E_STORAGE");
    return json_quote(pin_list_hash(*pins));
  };

  if (cmd == "COOKIE") return finish();
  if (cmd == "GET_HASH") {
    auto h = pins_hash();
    if (!h) return err(h.error());
    reply.values.push_back(*h);
    return finish();
  }
  if (cmd == "GET_PIN_LIST") {
    auto pins = ctx.store.pins_sync(key);
    if (!pins) return err("E_STORAGE");
    JsonWriter w;
    w.begin_array();
    for (const auto& p : *pins) w.value(p);
    w.end_array();
    reply.values.push_back(w.take());
    return finish();
  }
  if (cmd == "GET_TOTAL_SIZE") {
    auto total = ctx.store.pinned_size_sync(key);
    if (!total) return err("E_STORAGE");
    reply.values.push_back(std::to_string(*total));
    return finish();
  }
  if (cmd == "GET_LIMIT" || cmd == "UPDATE_LIMITS") {
    reply.values = {std::to_string(ctx.options.default_storage_limit), "\"\"", "\"\""};
    return finish();
  }
  if (cmd == "PIN" || cmd == "UNPIN" || cmd == "RESET") {
    auto ids = string_list(r.arg, ctx.limits);
    if (!ids) return err("INVALID_PIN_LIST");
    if (cmd == "PIN") {
      // Usage now plus what the new, not yet pinned documents add.
      auto pins = ctx.store.pins_sync(key);
      auto total = ctx.store.pinned_size_sync(key);
      if (!pins || !total) return err("E_STORAGE");
      std::vector<std::string> targets;
      for (const auto& p : *pins) targets.push_back(p.substr(0, p.find('#')));
      std::sort(targets.begin(), targets.end());
      std::int64_t usage = *total;
      std::vector<std::string> added;
      for (const auto& id : *ids) {
        std::string target = id.substr(0, id.find('#'));
        if (std::binary_search(targets.begin(), targets.end(), target) ||
            std::find(added.begin(), added.end(), target) != added.end())
          continue;
        added.push_back(target);
        usage += channel_size(ctx, target);
      }
      if (usage > ctx.options.default_storage_limit) return err("E_OVER_LIMIT");
    }
    // RESET is allowed over quota (CryptPad means to allow it once and never counts).
    if (auto p = ctx.store.pin_sync(key, *ids, cmd != "UNPIN", cmd == "RESET"); !p) return err("E_STORAGE");
    auto h = pins_hash();
    if (!h) return err(h.error());
    reply.values.push_back(*h);
    return finish();
  }
  if (cmd == "EXPIRE_SESSION") {
    ctx.sessions.expire(key);
    reply.cookie = "";
    return reply;
  }
  if (cmd == "DESTROY") {
    reply.destroyed = true;
    return finish();
  }
  if (cmd == "SET_METADATA") {
    if (r.arg.type != RawValue::Type::object) return err("INVALID_ARGUMENTS");
    auto obj = parse_object(r.arg.raw, ctx.limits);
    if (!obj) return err("INVALID_ARGUMENTS");
    std::string channel, command;
    std::optional<RawValue> value;
    for (auto& [k, v] : *obj) {
      if (k == "channel" && v.is_string()) channel = v.text;
      else if (k == "command" && v.is_string()) command = v.text;
      else if (k == "value") value = v;
    }
    if (channel.empty() || command.empty() || !value) return err("INVALID_ARGUMENTS");
    std::lock_guard lock(metadata_mutex);
    auto rec = ctx.store.load_sync(channel);
    if (!rec) return err("E_STORAGE");
    if (!*rec || (*rec)->deleted) return err("ENOENT");
    auto md = MetadataObject::parse((*rec)->metadata, ctx.limits);
    if (!md) return err("E_STORAGE");
    auto changed = apply_metadata_command(*md, command, *value, key, ctx.limits);
    if (!changed) return err(changed.error());
    ChannelRecord next = **rec;
    if (*changed) {
      next.metadata = md->json();
      if (auto u = ctx.store.update_metadata_sync(channel, next.metadata); !u) return err("E_STORAGE");
      ChannelMeta meta = ChannelMeta::from_record(next, ctx.limits);
      if (auto cp = ctx.store.last_checkpoint_id_sync(channel); cp && *cp) meta.last_cp_id = **cp;
      ctx.metadata_changed(channel, meta);
    }
    reply.values.push_back(next.metadata);
    return finish();
  }
  if (cmd == "REMOVE_OWNED_CHANNEL" || cmd == "CLEAR_OWNED_CHANNEL" || cmd == "TRIM_HISTORY") {
    // REMOVE_OWNED_CHANNEL: "chan" or {channel, reason}; CLEAR_OWNED_CHANNEL: "chan";
    // TRIM_HISTORY: {channel, hash}.
    std::string channel, reason = "", hash;
    if (r.arg.is_string()) {
      channel = r.arg.text;
    } else if (r.arg.type == RawValue::Type::object) {
      auto obj = parse_object(r.arg.raw, ctx.limits);
      if (!obj) return err("INVALID_ARGUMENTS");
      for (auto& [k, v] : *obj) {
        if (k == "channel" && v.is_string()) channel = v.text;
        else if (k == "reason" && v.is_string()) reason = v.text;
        else if (k == "hash" && v.is_string()) hash = v.text;
      }
    }
    if (channel.empty() || classify_channel(channel) == ChannelKind::invalid) return err("INVALID_CHAN");
    if (cmd == "TRIM_HISTORY" && hash.empty()) return err("INVALID_ARGUMENTS");
    auto rec = ctx.store.load_sync(channel);
    if (!rec) return err("E_STORAGE");
    if (!*rec || (*rec)->deleted) return err("ENOENT");
    if (!ChannelMeta::from_record(**rec, ctx.limits).is_owner(key)) return err("INSUFFICIENT_PERMISSIONS");
    JsonWriter notice;
    if (cmd == "REMOVE_OWNED_CHANNEL") {
      if (reason.empty()) reason = "OWNER_DELETED";
      if (!ctx.store.mark_deleted_sync(channel, reason)) return err("E_STORAGE");
      notice.begin_object().key("error").value("EDELETED").key("message").value(reason).key("channel").value(channel).end_object();
    } else if (cmd == "CLEAR_OWNED_CHANNEL") {
      if (!ctx.store.remove_messages_sync(channel, std::numeric_limits<std::int64_t>::max())) return err("E_STORAGE");
      notice.begin_object().key("error").value("ECLEARED").key("channel").value(channel).end_object();
    } else {
      auto seq = ctx.store.seq_of_hash_sync(channel, hash);
      if (!seq) return err("E_STORAGE");
      if (!*seq) return err("ENOENT");
      if (!ctx.store.remove_messages_sync(channel, **seq)) return err("E_STORAGE");
    }
    ctx.channel_changed(channel, notice.str());
    return finish();
  }
  return err("UNSUPPORTED_RPC_CALL");
}

// -- HTTP -------------------------------------------------------------------------------
namespace {

std::string amd(const std::string& json) { return "define(function(){;\nreturn " + json + ";\n});"; }

net::HttpResponse js(std::string body) {
  net::HttpResponse r;
  r.status = 200;
  r.content_type = "text/javascript; charset=utf-8";
  r.headers.push_back({"Cache-Control", "no-cache"});
  r.body = std::move(body);
  return r;
}

}  // namespace

void install_http_routes(net::Router& router, const CryptpadOptions& options, const std::string& history_keeper) {
  const std::string fresh = random_hex(4);
  JsonWriter c;
  c.begin_object();
  c.key("requireConf").begin_object().key("waitSeconds").value(600).key("urlArgs").value("ver=2026.2.2-" + fresh).end_object();
  c.key("removeDonateButton").value(true);
  c.key("enforceMFA").value(false);
  c.key("onlyOffice").begin_object().end_object();
  c.key("allowSubscriptions").value(false);
  c.key("websocketPath").value(options.websocket_path);
  c.key("httpUnsafeOrigin").value(options.http_unsafe_origin);
  c.key("httpSafeOrigin").value(options.http_safe_origin);
  c.key("enableEmbedding").value(false);
  c.key("fileHost").value(options.http_unsafe_origin);
  c.key("adminKeys").begin_array().end_array();
  c.key("moderatorKeys").begin_array().end_array();
  c.key("inactiveTime").value(90);
  c.key("supportMailbox").value("");
  c.key("defaultStorageLimit").value(options.default_storage_limit);
  c.key("maxUploadSize").value(options.max_upload_bytes);
  c.key("premiumUploadSize").value(options.max_upload_bytes);
  c.key("restrictRegistration").value(false);
  c.key("restrictSsoRegistration").value(false);
  c.key("appsToDisable").begin_array().end_array();
  c.key("listMyInstance").value(false);
  c.key("sso").value(false);
  c.key("accounts_api").value(false);
  c.end_object();
  const std::string config_js = amd(c.str());
  router.add("GET", "/api/config", [config_js](net::HttpRequest&&, net::Respond respond) { respond(js(config_js)); });

  // A curve25519 key regenerated at each start, as CryptPad does.
  unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
  if (sodium_init() >= 0) crypto_box_keypair(pk, sk);
  sodium_memzero(sk, sizeof sk);
  JsonWriter b;
  b.begin_object()
      .key("curvePublic")
      .value(base64_encode(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk)))
      .key("lastBroadcastHash")
      .value("")
      .key("surveyURL")
      .value("")
      .key("maintenance")
      .value(false)
      .end_object();
  const std::string broadcast_js = amd(b.str());
  router.add("GET", "/api/broadcast",
             [broadcast_js](net::HttpRequest&&, net::Respond respond) { respond(js(broadcast_js)); });
  (void)history_keeper;
}

}  // namespace hearth::cryptpad
