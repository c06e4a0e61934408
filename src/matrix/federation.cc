#include "matrix/federation.h"

#include <charconv>
#include <vector>

#include <fmt/format.h>

#include "matrix/auth_rules.h"

namespace hearth::matrix {

Result<XMatrixAuth> parse_x_matrix(std::string_view header) {
  if (header.size() > 2048) return fail(Errc::invalid_argument, "X-Matrix header too long");
  constexpr std::string_view kScheme = "X-Matrix ";
  if (header.size() < kScheme.size() || header.substr(0, kScheme.size()) != kScheme)
    return fail(Errc::invalid_argument, "not an X-Matrix authorization");
  std::string_view rest = header.substr(kScheme.size());
  XMatrixAuth a;
  while (!rest.empty()) {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == ',')) rest.remove_prefix(1);
    auto eq = rest.find('=');
    if (eq == std::string_view::npos) break;
    std::string_view name = rest.substr(0, eq);
    rest.remove_prefix(eq + 1);
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      rest.remove_prefix(1);
      bool closed = false;
      while (!rest.empty()) {
        char c = rest.front();
        rest.remove_prefix(1);
        if (c == '\\' && !rest.empty()) {
          value += rest.front();
          rest.remove_prefix(1);
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          value += c;
        }
      }
      if (!closed) return fail(Errc::invalid_argument, "unterminated quoted value");
    } else {
      auto end = rest.find(',');
      value = std::string(rest.substr(0, end));
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    }
    if (name == "origin") a.origin = value;
    else if (name == "destination") a.destination = value;
    else if (name == "key") a.key_id = value;
    else if (name == "sig") a.sig = value;
  }
  if (a.origin.empty() || a.key_id.empty() || a.sig.empty())
    return fail(Errc::invalid_argument, "X-Matrix needs origin, key and sig");
  return a;
}

JsonValue x_matrix_request_json(std::string_view method, std::string_view uri, std::string_view origin,
                                std::string_view destination, const JsonValue* content) {
  JsonValue o = JsonValue::object();
  o.set("method", JsonValue::string(std::string(method)));
  o.set("uri", JsonValue::string(std::string(uri)));
  o.set("origin", JsonValue::string(std::string(origin)));
  o.set("destination", JsonValue::string(std::string(destination)));
  if (content) o.set("content", *content);
  return o;
}

std::string x_matrix_header(std::string_view method, std::string_view uri, std::string_view origin,
                            std::string_view destination, const JsonValue* content, const SigningKey& key) {
  JsonValue o = x_matrix_request_json(method, uri, origin, destination, content);
  sign_json(o, origin, key);
  std::string sig = o.get("signatures")->get(origin)->get(key.key_id())->as_string();
  return fmt::format("X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{}\"", origin, destination,
                     key.key_id(), sig);
}

Result<std::map<std::string, RemoteKey>> verify_server_keys(const JsonValue& response, std::string_view server,
                                                            std::int64_t now_ms) {
  if (response.string_at("server_name") != server) return fail(Errc::permission_denied, "key response for another server");
  const JsonValue* until = response.get("valid_until_ts");
  if (!until || !until->is_int() || until->as_int() <= now_ms) return fail(Errc::permission_denied, "server keys expired");
  const JsonValue* verify = response.get("verify_keys");
  if (!verify || !verify->is_object() || verify->members().empty())
    return fail(Errc::invalid_argument, "no verify_keys");
  std::map<std::string, RemoteKey> out;
  for (const auto& [id, v] : verify->members()) {
    if (id.rfind("ed25519:", 0) != 0) continue;
    auto raw = base64_decode(v.string_at("key"));
    if (!raw || raw->size() != 32) return fail(Errc::invalid_argument, "bad verify key");
    if (!verify_json_signature(response, server, id, *raw))
      return fail(Errc::permission_denied, fmt::format("key response not signed by {}", id));
    out[id] = RemoteKey{std::move(*raw), until->as_int()};
  }
  if (out.empty()) return fail(Errc::invalid_argument, "no ed25519 verify key");
  return out;
}

Result<std::string> ServerKeyCache::key(const std::string& server, const std::string& key_id, std::int64_t now_ms) {
  {
    std::lock_guard lock(mu_);
    auto it = keys_.find({server, key_id});
    if (it != keys_.end() && it->second.valid_until_ms > now_ms) return it->second.public_key;
    auto f = failed_until_.find(server);
    if (f != failed_until_.end() && f->second > now_ms)
      return fail(Errc::unavailable, fmt::format("keys of {} unavailable (recent failure)", server));
  }
  auto fetched = fetch_(server);
  Result<std::map<std::string, RemoteKey>> keys =
      fetched ? verify_server_keys(*fetched, server, now_ms) : tl::unexpected(fetched.error());
  std::lock_guard lock(mu_);
  if (!keys) {
    if (failed_until_.size() > 10000) failed_until_.clear();  // bound: names come from peers
    failed_until_[server] = now_ms + retry_after_ms_;
    return tl::unexpected(keys.error());
  }
  failed_until_.erase(server);
  for (auto& [id, k] : *keys) {
    k.valid_until_ms = std::min(k.valid_until_ms, now_ms + max_cache_ms_);
    keys_[{server, id}] = k;
  }
  if (keys_.size() > 10000) keys_.clear();  // bound; refetched on demand
  auto it = keys_.find({server, key_id});
  if (it == keys_.end()) return fail(Errc::permission_denied, fmt::format("{} has no key {}", server, key_id));
  return it->second.public_key;
}

Result<void> verify_server_signature(const JsonValue& object, const std::string& server, ServerKeyCache& keys,
                                     std::int64_t now_ms) {
  const JsonValue* sigs = object.get("signatures");
  const JsonValue* mine = sigs ? sigs->get(server) : nullptr;
  if (!mine || !mine->is_object() || mine->members().empty())
    return fail(Errc::permission_denied, fmt::format("not signed by {}", server));
  int tried = 0;
  for (const auto& [key_id, unused] : mine->members()) {
    if (key_id.rfind("ed25519:", 0) != 0 || ++tried > 4) continue;
    auto k = keys.key(server, key_id, now_ms);
    if (!k) continue;
    if (verify_json_signature(object, server, key_id, *k)) return ok();
  }
  return fail(Errc::permission_denied, fmt::format("no valid signature of {}", server));
}

Result<PduIntegrity> check_pdu_integrity(const JsonValue& pdu, RoomVersion version, ServerKeyCache& keys,
                                         std::int64_t now_ms) {
  if (!pdu.is_object()) return fail(Errc::invalid_argument, "a PDU is an object");
  if (canonical_json(pdu).size() > 65536 /* spec: "Size limits" */) return fail(Errc::invalid_argument, "PDU too large");
  std::string_view sender = pdu.string_at("sender");
  if (pdu.string_at("room_id").empty() || sender.empty() || server_of(sender).empty() || pdu.string_at("type").empty())
    return fail(Errc::invalid_argument, "PDU lacks room_id, sender or type");
  const JsonValue* content = pdu.get("content");
  if (!content || !content->is_object()) return fail(Errc::invalid_argument, "PDU content must be an object");
  const JsonValue* auth = pdu.get("auth_events");
  const JsonValue* prev = pdu.get("prev_events");
  if (!auth || !auth->is_array() || auth->items().size() > 10 || !prev || !prev->is_array() || prev->items().size() > 20)
    return fail(Errc::invalid_argument, "PDU auth_events/prev_events missing or too many");
  for (const auto* list : {auth, prev})
    for (const auto& id : list->items())
      if (!id.is_string() || id.as_string().size() > 255) return fail(Errc::invalid_argument, "bad event id");
  const JsonValue* sk = pdu.get("state_key");
  if (sk && (!sk->is_string() || sk->as_string().size() > 255)) return fail(Errc::invalid_argument, "bad state_key");
  if (pdu.string_at("type").size() > 255 || sender.size() > 255) return fail(Errc::invalid_argument, "id too long");

  PduIntegrity out;
  out.event_id = event_id_for(pdu, version);
  JsonValue redacted = redact_event(pdu, version);
  if (auto r = verify_server_signature(redacted, std::string(server_of(sender)), keys, now_ms); !r)
    return tl::unexpected(r.error());
  const JsonValue* hashes = pdu.get("hashes");
  const JsonValue* h = hashes ? hashes->get("sha256") : nullptr;
  auto expected = h && h->is_string() ? base64_decode(h->as_string()) : Result<std::string>(fail(Errc::invalid_argument, ""));
  if (expected && *expected == content_hash(pdu)) {
    out.pdu = pdu;
  } else {
    out.pdu = std::move(redacted);
    out.redacted = true;
  }
  return out;
}

Result<std::map<std::string, Destination>> parse_destinations(const std::vector<std::string>& entries) {
  std::map<std::string, Destination> out;
  for (const auto& e : entries) {
    auto eq = e.find('=');
    auto colon = e.rfind(':');
    if (eq == std::string::npos || colon == std::string::npos || colon < eq)
      return fail(Errc::invalid_argument, fmt::format("\"{}\": expected server=host:port", e));
    Destination d;
    d.tls_name = e.substr(0, eq);
    d.host = e.substr(eq + 1, colon - eq - 1);
    if (d.host.size() > 2 && d.host.front() == '[' && d.host.back() == ']') d.host = d.host.substr(1, d.host.size() - 2);
    std::string_view port = std::string_view(e).substr(colon + 1);
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), d.port);
    if (ec != std::errc() || p != port.data() + port.size() || d.port <= 0 || d.port > 65535 || d.host.empty() ||
        d.tls_name.empty())
      return fail(Errc::invalid_argument, fmt::format("\"{}\": expected server=host:port", e));
    out[d.tls_name] = d;
  }
  return out;
}

}  // namespace hearth::matrix
