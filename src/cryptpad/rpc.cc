#include "cryptpad/rpc.h"

#include "cryptpad/admin.h"
#include "cryptpad/rpc_commands.h"
#include "cryptpad/web.h"

#include <sodium.h>
#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"

namespace hearth::cryptpad {

namespace {
constexpr std::int64_t kSessionIdleMs = 5 * 60 * 1000;
constexpr std::int64_t kTokenRotateMs = 60 * 1000;
constexpr std::size_t kMaxListItems = 10000;

tl::unexpected<std::string> err(std::string code) { return tl::unexpected<std::string>(std::move(code)); }

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

// -- dispatch ---------------------------------------------------------------------------
namespace {

const RpcCommand* find_command(std::string_view name) {
  for (const auto* group : {&file_commands(), &pin_commands(), &channel_commands(), &upload_commands(), &admin_commands()})
    for (const auto& c : *group)
      if (c.name == name) return &c;
  return nullptr;
}

}  // namespace

std::optional<std::vector<std::string>> rpc_string_list(const RawValue& v, const ParseLimits& limits) {
  return string_list(v, limits);
}

std::int64_t rpc_channel_size(RpcContext& ctx, const std::string& id) { return channel_size(ctx, id); }

std::int64_t RpcContext::limit_for(const std::string& key) const {
  return admin ? admin->limit_for(key).limit : options.default_storage_limit;
}

tl::expected<std::string, std::string> run_anonymous_rpc(RpcContext& ctx, const std::string& command,
                                                         const RawValue& arg) {
  const RpcCommand* cmd = find_command(command);
  if (!cmd || cmd->authenticated) return err("INVALID_RPC_CALL");
  const std::string no_key;
  RpcCall call{ctx, no_key, arg};
  auto values = cmd->handler(call);
  if (!values) return err(values.error());
  return values->empty() ? std::string("null") : std::move(values->front());
}

tl::expected<AuthenticatedReply, std::string> run_authenticated_rpc(RpcContext& ctx, const RpcRequest& r) {
  const std::string& key = r.public_key;
  if (!is_valid_public_key(key)) return err("INVALID_SIGNATURE_OR_PUBLIC_KEY");
  if (r.command != "COOKIE" && !ctx.sessions.valid(key, r.cookie)) return err("NO_COOKIE");
  const RpcCommand* cmd = find_command(r.command);
  if (!(cmd && cmd->unsigned_ok) && !verify_detached(r.signed_text, r.signature, key))
    return err("INVALID_SIGNATURE_OR_PUBLIC_KEY");
  if (!cmd || !cmd->authenticated) return err("UNSUPPORTED_RPC_CALL");
  RpcCall call{ctx, key, r.arg};
  auto values = cmd->handler(call);
  if (!values) return err(values.error());
  AuthenticatedReply reply;
  reply.values = std::move(*values);
  reply.destroyed = cmd->drops_key;
  if (!cmd->ends_session) reply.cookie = ctx.sessions.cookie_for(key);
  return reply;
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

void install_http_routes(net::Router& router, const CryptpadOptions& options, const std::string& history_keeper,
                         std::function<std::vector<std::string>()> admins, std::function<std::int64_t()> default_limit) {
  const std::string fresh = random_hex(4);
  auto config_js = [options, fresh, admins, default_limit] {
    JsonWriter c;
    c.begin_object();
    c.key("requireConf").begin_object().key("waitSeconds").value(600).key("urlArgs").value("ver=2026.2.2-" + fresh).end_object();
    c.key("removeDonateButton").value(true);
    c.key("enforceMFA").value(false);
    c.key("allowSubscriptions").value(false);
    c.key("websocketPath").value(options.websocket_path);
    c.key("httpUnsafeOrigin").value(options.http_unsafe_origin);
    c.key("httpSafeOrigin").value(options.http_safe_origin);
    c.key("enableEmbedding").value(false);
    c.key("fileHost").value(options.http_unsafe_origin);
    c.key("adminKeys").begin_array();
    for (const auto& k : admins()) c.value(k);
    c.end_array();
    c.key("moderatorKeys").begin_array().end_array();
    c.key("inactiveTime").value(90);
    c.key("supportMailbox").value("");
    c.key("defaultStorageLimit").value(default_limit());
    c.key("maxUploadSize").value(options.max_upload_bytes);
    c.key("premiumUploadSize").value(options.max_upload_bytes);
    c.key("restrictRegistration").value(false);
    c.key("restrictSsoRegistration").value(false);
    c.key("appsToDisable").begin_array().end_array();
    c.key("listMyInstance").value(false);
    c.key("sso").value(false);
    c.key("accounts_api").value(false);
    c.end_object();
    return amd(c.str());
  };
  const auto extra = api_headers(options);
  router.add("GET", "/api/config", [config_js, extra](net::HttpRequest&&, net::Respond respond) {
    with_headers(std::move(respond), extra)(js(config_js()));
  });

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
             [broadcast_js, extra](net::HttpRequest&&, net::Respond respond) {
               with_headers(std::move(respond), extra)(js(broadcast_js));
             });
  (void)history_keeper;
}

}  // namespace hearth::cryptpad
