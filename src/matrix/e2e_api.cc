// End-to-end encryption support (client-server API "End-to-end encryption", "Send-to-Device
// messaging", "Device management"): key upload/query/claim/changes, cross-signing keys and
// signatures, to-device messages, device deletion with UIA, and the /sync sections for them.
#include <set>
#include <utility>

#include <fmt/format.h>

#include "core/json.h"
#include "core/random.h"
#include "matrix/auth_rules.h"
#include "matrix/e2e_store.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

constexpr int kMaxToDevicePerSync = 100;
constexpr std::size_t kMaxKeysPerUpload = 1000;
constexpr std::size_t kMaxQueryUsers = 1000;

bool is_local(std::string_view user_id, std::string_view server) {
  return user_id.size() > 3 && user_id[0] == '@' && server_of(user_id) == server;
}

// Checks the ed25519 self-signature of a device-keys or cross-signing-key object with the
// key named `key_id` ("ed25519:<id>") found in the object's own "keys" (device keys) or
// given explicitly.
bool self_signed(const JsonValue& object, const std::string& user_id, const std::string& key_id,
                 std::string_view public_key_b64) {
  auto pk = base64_decode(public_key_b64);
  if (!pk || pk->size() != 32) return false;
  return verify_json_signature(object, user_id, key_id, *pk);
}

// The single ed25519 public key of a cross-signing key object, with its id.
std::optional<std::pair<std::string, std::string>> cross_signing_public(const JsonValue& key) {
  const JsonValue* keys = key.get("keys");
  if (!keys || !keys->is_object() || keys->members().size() != 1) return std::nullopt;
  const auto& [id, value] = keys->members().front();
  if (!id.starts_with("ed25519:") || !value.is_string()) return std::nullopt;
  return std::pair{id, value.as_string()};
}

}  // namespace

std::vector<std::string> MatrixService::Impl::joined_rooms_and_self(store::Transaction& tx, const std::string& user) {
  std::vector<std::string> keys{user};
  if (auto ms = rooms.memberships_of(tx, user); ms)
    for (const auto& m : *ms)
      if (m.membership == "join") keys.push_back(m.room_id);
  return keys;
}

ApiResult<std::string> MatrixService::Impl::keys_upload(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* dk = body->get("device_keys");
  std::string dk_json;
  if (dk && !dk->is_null()) {
    if (!dk->is_object() || dk->string_at("user_id") != ctx.user_id || dk->string_at("device_id") != ctx.device_id)
      return api_error(400, "M_INVALID_PARAM", "device_keys must name this user and device");
    const JsonValue* algs = dk->get("algorithms");
    const JsonValue* keys = dk->get("keys");
    if (!algs || !algs->is_array() || !keys || !keys->is_object())
      return api_error(400, "M_BAD_JSON", "device_keys needs algorithms and keys");  // required keys missing
    std::string key_id = "ed25519:" + ctx.device_id;
    const JsonValue* ed = keys->get(key_id);
    if (!ed || !ed->is_string() || !self_signed(*dk, ctx.user_id, key_id, ed->as_string()))
      return api_error(400, "M_INVALID_SIGNATURE", "device_keys are not signed by the device's ed25519 key");
    JsonValue copy = *dk;
    copy.erase("unsigned");
    dk_json = canonical_json(copy);
  }
  const JsonValue* otks = body->get("one_time_keys");
  const JsonValue* fallback = body->get("fallback_keys");
  if (!fallback) fallback = body->get("org.matrix.msc2732.fallback_keys");
  for (const JsonValue* v : {otks, fallback}) {
    if (v && !v->is_null() && (!v->is_object() || v->members().size() > kMaxKeysPerUpload))
      return api_error(400, "M_INVALID_PARAM", "Keys must be an object of at most 1000 keys");
  }
  bool changed = false;
  std::vector<std::string> wake;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<std::map<std::string, std::int64_t>> {
    if (!dk_json.empty()) {
      auto c = e2e::put_device_keys(tx, ctx.user_id, ctx.device_id, dk_json);
      if (!c) return tl::unexpected(c.error());
      if (*c) {
        changed = true;
        if (auto b = e2e::bump_device_list(tx, ctx.user_id); !b) return tl::unexpected(b.error());
        wake = joined_rooms_and_self(tx, ctx.user_id);
      }
    }
    if (otks && otks->is_object())
      if (auto a = e2e::add_one_time_keys(tx, ctx.user_id, ctx.device_id, *otks); !a) return tl::unexpected(a.error());
    if (fallback && fallback->is_object())
      if (auto a = e2e::set_fallback_keys(tx, ctx.user_id, ctx.device_id, *fallback); !a)
        return tl::unexpected(a.error());
    return e2e::one_time_key_counts(tx, ctx.user_id, ctx.device_id);
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (changed) notify(0, std::move(wake));
  JsonWriter w;
  w.begin_object().key("one_time_key_counts").begin_object();
  for (const auto& [alg, n] : *r) w.key(alg).value(n);
  w.end_object().end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::keys_query(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* wanted = body->get("device_keys");
  if (!wanted || !wanted->is_object() || wanted->members().size() > kMaxQueryUsers)
    return api_error(400, "M_INVALID_PARAM", "device_keys must be an object of at most 1000 users");
  // The users' current devices (accounts/, read before our own transaction: store calls
  // do not nest).
  std::map<std::string, std::map<std::string, std::string>> names_of;
  for (const auto& [user, list] : wanted->members()) {
    if (!is_local(user, options.server_name)) continue;
    auto& names = names_of[user];
    if (auto list_d = accounts.list_devices(options.server_name, user.substr(1, user.find(':') - 1)); list_d)
      for (const auto& d : *list_d) names[d.device_id] = d.display_name;
  }
  // Users of other servers: asked over federation (a federation request itself has no user).
  bool ask_remote = federation && !ctx.user_id.empty();
  RemoteKeys remote = ask_remote ? remote_keys(*wanted, false) : RemoteKeys{};
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    std::string devices = remote.device_keys, masters = remote.master_keys, selfs = remote.self_signing_keys, users;
    std::string failures = remote.failures;
    for (const auto& [user, list] : wanted->members()) {
      if (!is_local(user, options.server_name)) {
        if (ask_remote) continue;
        failures += (failures.empty() ? "" : ",") + json_quote(server_of(user)) + R"(:{"errcode":"M_UNRECOGNIZED","error":"Federation is not supported"})";
        continue;
      }
      auto keys = e2e::device_keys(tx, user);
      if (!keys) return tl::unexpected(keys.error());
      std::set<std::string> only;
      if (list.is_array())
        for (const auto& d : list.items())
          if (d.is_string()) only.insert(d.as_string());
      auto& names = names_of[user];
      std::string per_user;
      for (const auto& [device, json] : *keys) {
        if (!only.empty() && !only.count(device)) continue;
        if (!names.count(device)) continue;  // the device was deleted
        std::string entry = json;
        entry.pop_back();
        entry += ",\"unsigned\":{";
        if (!names[device].empty()) entry += "\"device_display_name\":" + json_quote(names[device]);
        entry += "}}";
        per_user += (per_user.empty() ? "" : ",") + json_quote(device) + ":" + entry;
      }
      devices += (devices.empty() ? "" : ",") + json_quote(user) + ":{" + per_user + "}";
      for (auto [type, out] : {std::pair{"master", &masters}, std::pair{"self_signing", &selfs},
                               std::pair{"user_signing", &users}}) {
        if (std::string_view(type) == "user_signing" && user != ctx.user_id) continue;  // only one's own
        auto k = e2e::cross_signing_key(tx, user, type);
        if (!k) return tl::unexpected(k.error());
        if (!*k) continue;
        std::string key_json = **k;
        if (std::string_view(type) == "master") {
          // Signatures other users made with their user-signing keys are private to each
          // signer: the requester sees the owner's own and their own only.
          auto parsed = parse_json(key_json);
          if (JsonValue* sigs = parsed ? parsed->get("signatures") : nullptr; sigs && sigs->is_object()) {
            std::vector<std::string> others;
            for (const auto& [signer, _] : sigs->members())
              if (signer != user && signer != ctx.user_id) others.push_back(signer);
            if (!others.empty()) {
              for (const auto& signer : others) sigs->erase(signer);
              key_json = canonical_json(*parsed);
            }
          }
        }
        *out += (out->empty() ? "" : ",") + json_quote(user) + ":" + key_json;
      }
    }
    return fmt::format(
        R"({{"device_keys":{{{}}},"master_keys":{{{}}},"self_signing_keys":{{{}}},"user_signing_keys":{{{}}},"failures":{{{}}}}})",
        devices, masters, selfs, users, failures);
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return *r;
}

ApiResult<std::string> MatrixService::Impl::keys_claim(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* wanted = body->get("one_time_keys");
  if (!wanted || !wanted->is_object() || wanted->members().size() > kMaxQueryUsers)
    return api_error(400, "M_INVALID_PARAM", "one_time_keys must be an object of at most 1000 users");
  bool ask_remote = federation && !ctx.user_id.empty();
  RemoteKeys remote = ask_remote ? remote_keys(*wanted, true) : RemoteKeys{};
  std::string failures = remote.failures;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<std::string> {
    std::string out = remote.one_time_keys;
    std::size_t claims = 0;
    for (const auto& [user, devices] : wanted->members()) {
      if (!is_local(user, options.server_name)) {
        if (ask_remote) continue;
        if (failures.find(json_quote(server_of(user))) == std::string::npos)
          failures += (failures.empty() ? "" : ",") + json_quote(server_of(user)) +
                      R"(:{"errcode":"M_UNRECOGNIZED","error":"Federation is not supported"})";
        continue;
      }
      if (!devices.is_object()) continue;
      std::string per_user;
      for (const auto& [device, algorithm] : devices.members()) {
        if (!algorithm.is_string() || ++claims > kMaxKeysPerUpload) continue;
        auto k = e2e::claim_key(tx, user, device, algorithm.as_string());
        if (!k) return tl::unexpected(k.error());
        if (!*k) continue;
        per_user += (per_user.empty() ? "" : ",") + json_quote(device) + ":{" + json_quote((*k)->key_id) + ":" +
                    (*k)->json + "}";
      }
      if (!per_user.empty()) out += (out.empty() ? "" : ",") + json_quote(user) + ":{" + per_user + "}";
    }
    return out;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return fmt::format(R"({{"one_time_keys":{{{}}},"failures":{{{}}}}})", *r, failures);
}

ApiResult<std::string> MatrixService::Impl::keys_changes(Ctx& ctx) {
  SyncParams from, to;
  if (!parse_since(ctx.query_param("from"), from) || !from.since)
    return api_error(400, "M_INVALID_PARAM", "from must be a sync token");
  std::string to_token = ctx.query_param("to");
  if (!to_token.empty() && !parse_since(to_token, to)) return api_error(400, "M_INVALID_PARAM", "Invalid to token");
  auto r = store.read_sync([&](store::Transaction& tx) {
    return e2e::device_list_changes(tx, ctx.user_id, *from.since, from.since_device_lists);
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  JsonWriter w;
  w.begin_object().key("changed").begin_array();
  for (const auto& u : r->changed) w.value(u);
  w.end_array().key("left").begin_array();
  for (const auto& u : r->left) w.value(u);
  w.end_array().end_object();
  return w.take();
}

ApiResult<std::string> MatrixService::Impl::send_to_device(Ctx& ctx) {
  const std::string& type = ctx.params[0];
  const std::string& txn = ctx.params[1];
  if (type.empty() || type.size() > 255 || txn.empty() || txn.size() > 255)
    return api_error(400, "M_INVALID_PARAM", "Bad event type or transaction id");
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* messages = body->get("messages");
  if (!messages || !messages->is_object()) return api_error(400, "M_BAD_JSON", "messages must be an object");
  std::vector<std::string> targets;
  std::map<std::string, std::vector<std::string>> devices_of;  // read first: store calls do not nest
  if (messages->members().size() > kMaxQueryUsers) return api_error(400, "M_BAD_JSON", "Too many users");
  for (const auto& [user, per_device] : messages->members()) {
    if (!is_local(user, options.server_name)) continue;
    if (auto known = accounts.list_devices(options.server_name, user.substr(1, user.find(':') - 1)); known)
      for (const auto& d : *known) devices_of[user].push_back(d.device_id);
  }
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto fresh = e2e::claim_to_device_txn(tx, ctx.user_id, ctx.device_id, txn);
    if (!fresh) return tl::unexpected(fresh.error());
    if (!*fresh) return false;  // a retry: already queued
    std::size_t queued = 0;
    for (const auto& [user, per_device] : messages->members()) {
      if (!is_local(user, options.server_name) || !per_device.is_object()) continue;  // remote: below
      auto known = devices_of.find(user);
      if (known == devices_of.end()) continue;  // unknown user
      for (const auto& [device, content] : per_device.members()) {
        if (!content.is_object()) continue;
        std::string json = canonical_json(content);
        for (const auto& d : known->second) {
          if (device != "*" && d != device) continue;
          if (++queued > 10'000) return fail(Errc::invalid_argument, "Too many to-device messages");
          if (auto q = e2e::enqueue_to_device(tx, user, d, ctx.user_id, type, json); !q)
            return tl::unexpected(q.error());
        }
      }
      targets.push_back(user);
    }
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!targets.empty()) notify(0, std::move(targets));
  if (*r) remote_to_device(ctx.user_id, type, ctx.device_id + ":" + txn, *messages);
  return std::string("{}");
}

ApiResult<void> MatrixService::Impl::require_password(Ctx& ctx, const JsonValue& body) {
  static constexpr std::string_view kFlows = R"([{"stages":["m.login.password"]}])";
  const JsonValue* auth = body.get("auth");
  std::string session(auth ? auth->string_at("session") : std::string_view());
  if (session.empty() || session.size() > 64) session = random_token(18);
  auto unauthorized = [&](std::string_view errcode, std::string_view error) -> ApiResult<void> {
    std::string out = fmt::format(R"({{"flows":{},"params":{{}},"session":{},"completed":[])", kFlows, json_quote(session));
    if (!errcode.empty()) out += fmt::format(R"(,"errcode":{},"error":{})", json_quote(errcode), json_quote(error));
    ctx.respond(json_response(401, out + "}"));
    return api_error(0, "", "");
  };
  if (!auth || !auth->is_object() || auth->string_at("type") != "m.login.password") return unauthorized({}, {});
  std::string who(auth->string_at("user"));
  if (const JsonValue* id = auth->get("identifier"); id && id->is_object()) who = std::string(id->string_at("user"));
  if (!who.empty() && who != ctx.localpart && who != ctx.user_id)
    return unauthorized("M_FORBIDDEN", "You can only authenticate as yourself");
  auto ok_pw = accounts.verify_password(options.server_name, ctx.localpart, auth->string_at("password"));
  if (!ok_pw) {
    if (ok_pw.error().code == Errc::unauthenticated) return unauthorized("M_FORBIDDEN", "Invalid password");
    return tl::unexpected(to_api_error(ok_pw.error()));
  }
  return {};
}

ApiResult<std::string> MatrixService::Impl::device_signing_upload(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  // Each given key must belong to the user and carry exactly one ed25519 key; the
  // self-signing and user-signing keys must be signed by the master key.
  std::map<std::string, std::string> to_store;
  auto existing_master = store.read_sync([&](store::Transaction& tx) { return e2e::cross_signing_key(tx, ctx.user_id, "master"); });
  if (!existing_master) return tl::unexpected(to_api_error(existing_master.error()));
  const JsonValue* master = body->get("master_key");
  std::optional<std::pair<std::string, std::string>> master_pub;
  if (master) {
    if (!master->is_object() || master->string_at("user_id") != ctx.user_id || !(master_pub = cross_signing_public(*master)))
      return api_error(400, "M_INVALID_PARAM", "Invalid master_key");
    to_store["master"] = canonical_json(*master);
  } else if (*existing_master) {
    auto m = parse_json(**existing_master);
    if (m) master_pub = cross_signing_public(*m);
  }
  for (auto [field, type] : {std::pair{"self_signing_key", "self_signing"}, std::pair{"user_signing_key", "user_signing"}}) {
    const JsonValue* k = body->get(field);
    if (!k) continue;
    if (!k->is_object() || k->string_at("user_id") != ctx.user_id || !cross_signing_public(*k))
      return api_error(400, "M_INVALID_PARAM", fmt::format("Invalid {}", field));
    if (!master_pub || !self_signed(*k, ctx.user_id, master_pub->first, master_pub->second))
      return api_error(400, "M_INVALID_SIGNATURE", fmt::format("{} is not signed by the master key", field));
    to_store[type] = canonical_json(*k);
  }
  // UIA (spec: required unless no master key exists yet, or the request re-uploads the
  // same master key).
  bool same_master = *existing_master && to_store.count("master") && to_store["master"] == **existing_master;
  if (*existing_master && !same_master) {
    if (auto a = require_password(ctx, *body); !a) return tl::unexpected(a.error());
  }
  std::vector<std::string> wake;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (const auto& [type, json] : to_store)
      if (auto p = e2e::put_cross_signing_key(tx, ctx.user_id, type, json); !p) return tl::unexpected(p.error());
    // A user-signing key is private to its owner (spec: only their own keys/query shows
    // it): changing only that one is no device-list change for the people they share rooms with.
    if (to_store.size() == 1 && to_store.count("user_signing")) return true;
    if (auto b = e2e::bump_device_list(tx, ctx.user_id); !b) return tl::unexpected(b.error());
    wake = joined_rooms_and_self(tx, ctx.user_id);
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  notify(0, std::move(wake));
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::signatures_upload(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  std::string failures;
  std::set<std::string> changed_users;
  std::vector<std::string> wake;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (const auto& [user, objects] : body->members()) {
      if (!is_local(user, options.server_name) || !objects.is_object()) continue;
      for (const auto& [key_id, signed_obj] : objects.members()) {
        const JsonValue* sigs = signed_obj.get("signatures");
        const JsonValue* mine = sigs ? sigs->get(ctx.user_id) : nullptr;
        if (!mine || !mine->is_object()) continue;
        // The target: a device of `user`, or one of their cross-signing keys (by public key).
        std::string stored;
        std::string cs_type;
        auto dk = e2e::device_keys(tx, user);
        if (!dk) return tl::unexpected(dk.error());
        if (auto it = dk->find(key_id); it != dk->end()) stored = it->second;
        for (auto type : {"master", "self_signing", "user_signing"}) {
          if (!stored.empty()) break;
          auto k = e2e::cross_signing_key(tx, user, type);
          if (!k) return tl::unexpected(k.error());
          if (!*k) continue;
          auto v = parse_json(**k);
          auto pub = v ? cross_signing_public(*v) : std::nullopt;
          if (pub && pub->second == key_id) {
            stored = **k;
            cs_type = type;
          }
        }
        auto fail_one = [&](std::string_view code, std::string_view msg) {
          failures += (failures.empty() ? "" : ",") + json_quote(user) + ":{" + json_quote(key_id) +
                      fmt::format(R"(:{{"errcode":{},"error":{}}}}})", json_quote(code), json_quote(msg));
        };
        if (stored.empty()) {
          fail_one("M_NOT_FOUND", "Unknown key");
          continue;
        }
        auto target = parse_json(stored);
        if (!target) continue;
        // The signed object must be the stored one (besides signatures and unsigned).
        JsonValue a = *target, b = signed_obj;
        for (auto* o : {&a, &b}) {
          o->erase("signatures");
          o->erase("unsigned");
        }
        if (!(a == b)) {
          fail_one("M_INVALID_SIGNATURE", "The signed object differs from the stored key");
          continue;
        }
        // Check each new signature against the signer's cross-signing keys or device key.
        JsonValue merged = *target;
        JsonValue all_sigs = merged.get("signatures") ? *merged.get("signatures") : JsonValue::object();
        JsonValue user_sigs = all_sigs.get(ctx.user_id) ? *all_sigs.get(ctx.user_id) : JsonValue::object();
        bool any = false;
        for (const auto& [sig_key_id, sig] : mine->members()) {
          std::string pub;
          std::string id_part = sig_key_id.substr(sig_key_id.find(':') + 1);
          for (auto type : {"master", "self_signing", "user_signing"}) {
            auto k = e2e::cross_signing_key(tx, ctx.user_id, type);
            if (!k) return tl::unexpected(k.error());
            auto v = *k ? parse_json(**k) : tl::unexpected(JsonParseError{JsonError::not_json, ""});
            auto p = v ? cross_signing_public(*v) : std::nullopt;
            if (p && p->first == sig_key_id) pub = p->second;
          }
          auto own = e2e::device_keys(tx, ctx.user_id);
          if (!own) return tl::unexpected(own.error());
          if (pub.empty())
            if (auto it = own->find(id_part); it != own->end())
              if (auto v = parse_json(it->second); v)
                if (const JsonValue* ks = v->get("keys"); ks && ks->get(sig_key_id) && ks->get(sig_key_id)->is_string())
                  pub = ks->get(sig_key_id)->as_string();
          JsonValue check = b;
          JsonValue one = JsonValue::object();
          JsonValue by = JsonValue::object();
          by.set(sig_key_id, sig);
          one.set(ctx.user_id, by);
          check.set("signatures", one);
          if (pub.empty() || !self_signed(check, ctx.user_id, sig_key_id, pub)) continue;
          user_sigs.set(sig_key_id, sig);
          any = true;
        }
        if (!any) {
          fail_one("M_INVALID_SIGNATURE", "No valid signature");
          continue;
        }
        all_sigs.set(ctx.user_id, user_sigs);
        merged.set("signatures", all_sigs);
        std::string json = canonical_json(merged);
        if (cs_type.empty()) {
          if (auto p = e2e::put_device_keys(tx, user, key_id, json); !p) return tl::unexpected(p.error());
        } else if (auto p = e2e::put_cross_signing_key(tx, user, cs_type, json); !p) {
          return tl::unexpected(p.error());
        }
        changed_users.insert(user);
      }
    }
    for (const auto& u : changed_users) {
      if (auto b = e2e::bump_device_list(tx, u); !b) return tl::unexpected(b.error());
      auto k = joined_rooms_and_self(tx, u);
      wake.insert(wake.end(), k.begin(), k.end());
    }
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!wake.empty()) notify(0, std::move(wake));
  return fmt::format(R"({{"failures":{{{}}}}})", failures);
}

ApiResult<void> MatrixService::Impl::delete_devices_of(const std::string& user, const std::string& localpart,
                                                       const std::vector<std::string>& device_ids) {
  for (const auto& d : device_ids) {
    auto del = accounts.delete_device(options.server_name, localpart, d);
    if (!del && del.error().code != Errc::not_found) return tl::unexpected(to_api_error(del.error()));
  }
  std::vector<std::string> wake;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (const auto& d : device_ids)
      if (auto f = e2e::forget_device(tx, user, d); !f) return tl::unexpected(f.error());
    if (auto b = e2e::bump_device_list(tx, user); !b) return tl::unexpected(b.error());
    wake = joined_rooms_and_self(tx, user);
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  notify(0, std::move(wake));
  return {};
}

ApiResult<std::string> MatrixService::Impl::device_delete(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  auto list = accounts.list_devices(options.server_name, ctx.localpart);
  if (!list) return tl::unexpected(to_api_error(list.error()));
  bool known = false;
  for (const auto& d : *list) known |= d.device_id == ctx.params[0];
  if (!known) return api_error(404, "M_NOT_FOUND", "No such device");
  if (auto a = require_password(ctx, *body); !a) return tl::unexpected(a.error());
  if (auto d = delete_devices_of(ctx.user_id, ctx.localpart, {ctx.params[0]}); !d) return tl::unexpected(d.error());
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::delete_devices(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* ids = body->get("devices");
  if (!ids || !ids->is_array() || ids->items().size() > 1000)
    return api_error(400, "M_BAD_JSON", "devices must be an array of at most 1000 ids");
  std::vector<std::string> devices;
  for (const auto& d : ids->items())
    if (d.is_string()) devices.push_back(d.as_string());
  if (auto a = require_password(ctx, *body); !a) return tl::unexpected(a.error());
  if (auto d = delete_devices_of(ctx.user_id, ctx.localpart, devices); !d) return tl::unexpected(d.error());
  return std::string("{}");
}

Result<std::string> MatrixService::Impl::e2e_sync_sections(store::Transaction& tx, const std::string& user_id,
                                                           const std::string& device_id, const SyncParams& p,
                                                           bool initial, std::int64_t* next_td, std::int64_t* next_dl,
                                                           bool* nonempty) {
  std::string out = ",\"to_device\":{\"events\":[";
  auto msgs = e2e::pending_to_device(tx, user_id, device_id, p.since_to_device, kMaxToDevicePerSync);
  if (!msgs) return tl::unexpected(msgs.error());
  *next_td = p.since_to_device;
  for (std::size_t i = 0; i < msgs->size(); ++i) {
    const auto& m = (*msgs)[i];
    out += (i ? "," : "") + fmt::format(R"({{"sender":{},"type":{},"content":{}}})", json_quote(m.sender),
                                        json_quote(m.type), m.content);
    *next_td = m.id;
  }
  out += "]}";
  if (!msgs->empty()) *nonempty = true;
  auto pos = e2e::device_list_position(tx);
  if (!pos) return tl::unexpected(pos.error());
  *next_dl = std::max(*pos, p.since_device_lists);
  out += ",\"device_lists\":{\"changed\":[";
  if (!initial) {
    auto ch = e2e::device_list_changes(tx, user_id, p.since.value_or(0), p.since_device_lists);
    if (!ch) return tl::unexpected(ch.error());
    bool first = true;
    for (const auto& u : ch->changed) out += (std::exchange(first, false) ? "" : ",") + json_quote(u);
    out += "],\"left\":[";
    first = true;
    for (const auto& u : ch->left) out += (std::exchange(first, false) ? "" : ",") + json_quote(u);
    if (!ch->changed.empty() || !ch->left.empty()) *nonempty = true;
  } else {
    out += "],\"left\":[";
  }
  out += "]},\"device_one_time_keys_count\":{";
  auto counts = e2e::one_time_key_counts(tx, user_id, device_id);
  if (!counts) return tl::unexpected(counts.error());
  bool first = true;
  for (const auto& [alg, n] : *counts) out += (std::exchange(first, false) ? "" : ",") + json_quote(alg) + ":" + std::to_string(n);
  out += "},\"device_unused_fallback_key_types\":[";
  auto fb = e2e::unused_fallback_key_types(tx, user_id, device_id);
  if (!fb) return tl::unexpected(fb.error());
  for (std::size_t i = 0; i < fb->size(); ++i) out += (i ? "," : "") + json_quote((*fb)[i]);
  out += "]";
  return out;
}

Result<void> MatrixService::Impl::ack_to_device(const std::string& user_id, const std::string& device_id,
                                                std::int64_t upto) {
  if (upto <= 0) return ok();
  auto any = store.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT 1 FROM matrix_to_device WHERE user_id = ? AND device_id = ? AND id <= ? LIMIT 1",
                            {user_id, device_id, upto});
    if (!row) return tl::unexpected(row.error());
    return row->has_value();
  });
  if (!any) return tl::unexpected(any.error());
  if (!*any) return ok();
  auto r = store.write_sync([&](store::Transaction& tx) { return e2e::ack_to_device(tx, user_id, device_id, upto); });
  if (!r) return tl::unexpected(r.error());
  return ok();
}

}  // namespace hearth::matrix
