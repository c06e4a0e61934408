#include "matrix/push_gateway.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace hearth::matrix {

namespace {

constexpr std::size_t kMaxUrlBytes = 2048;

Result<GatewayUrl> bad_url(std::string_view why) {
  return fail(Errc::invalid_argument, fmt::format("data.url {}", why));
}

JsonValue device_entry(const PusherTarget& pusher, const JsonValue& tweaks) {
  JsonValue device = JsonValue::object();
  device.set("app_id", JsonValue::string(pusher.app_id));
  device.set("pushkey", JsonValue::string(pusher.pushkey));
  device.set("pushkey_ts", JsonValue::integer(pusher.pushkey_ts_s));
  JsonValue data = pusher.data.is_object() ? pusher.data : JsonValue::object();
  data.erase("url");
  device.set("data", std::move(data));
  device.set("tweaks", tweaks.is_object() ? tweaks : JsonValue::object());
  return device;
}

JsonValue counts(std::int64_t unread) {
  JsonValue c = JsonValue::object();
  if (unread > 0) c.set("unread", JsonValue::integer(unread));
  return c;
}

std::string wrap(JsonValue notification) {
  JsonValue body = JsonValue::object();
  body.set("notification", std::move(notification));
  return canonical_json(body);
}

}  // namespace

Result<GatewayUrl> parse_gateway_url(std::string_view url) {
  if (url.size() > kMaxUrlBytes) return bad_url("is too long");
  GatewayUrl out;
  if (url.starts_with("https://")) {
    url.remove_prefix(8);
  } else if (url.starts_with("http://")) {
    url.remove_prefix(7);
    out.tls = false;
    out.port = 80;
  } else {
    return bad_url("must be an http(s) URL");
  }
  if (url.find('#') != std::string_view::npos) return bad_url("must not have a fragment");
  auto slash = url.find('/');
  if (slash == std::string_view::npos) return bad_url("must have the path /_matrix/push/v1/notify");
  std::string_view authority = url.substr(0, slash), target = url.substr(slash);
  if (authority.find('@') != std::string_view::npos) return bad_url("must not carry user info");
  std::string_view port;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return bad_url("has a malformed IPv6 host");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad_url("has a malformed host");
      port = rest.substr(1);
    }
  } else {
    auto colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty() || out.host.size() > 255) return bad_url("has no valid host");
  for (char c : out.host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '_'))
      return bad_url("has a malformed host");
  if (!port.empty() || authority.ends_with(':')) {
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return bad_url("has a malformed port");
    out.port = std::stoi(std::string(port));
    if (out.port < 1 || out.port > 65535) return bad_url("has a malformed port");
  }
  std::string_view path = target.substr(0, target.find('?'));
  if (path != kPushNotifyPath) return bad_url("must have the path /_matrix/push/v1/notify");
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      return bad_url("has characters that need escaping");
  out.target = std::string(target);
  return out;
}

std::string_view push_priority(std::string_view event_type, const JsonValue& tweaks) {
  auto set = [&](std::string_view key) {
    const JsonValue* v = tweaks.get(key);
    return v && !v->is_null() && !(v->is_bool() && !v->as_bool());
  };
  return event_type == "m.room.encrypted" || set("highlight") || set("sound") ? "high" : "low";
}

std::string notification_body(const EventFacts& event, const JsonValue& tweaks, std::int64_t unread,
                              const PusherTarget& pusher) {
  JsonValue n = JsonValue::object();
  n.set("event_id", JsonValue::string(event.event_id));
  n.set("room_id", JsonValue::string(event.room_id));
  n.set("prio", JsonValue::string(std::string(push_priority(event.type, tweaks))));
  n.set("counts", counts(unread));
  n.set("devices", JsonValue::array({device_entry(pusher, tweaks)}));
  if (pusher.data.string_at("format") != "event_id_only") {
    n.set("type", JsonValue::string(event.type));
    n.set("sender", JsonValue::string(event.sender));
    auto optional_text = [&](const char* key, const std::string& value) {
      if (!value.empty()) n.set(key, JsonValue::string(value));
    };
    optional_text("sender_display_name", event.sender_display_name);
    optional_text("room_name", event.room_name);
    optional_text("room_alias", event.room_alias);
    if (event.user_is_target) n.set("user_is_target", JsonValue::boolean(true));
    if (event.content) n.set("content", *event.content);
  }
  return wrap(std::move(n));
}

std::string badge_body(std::int64_t unread, const PusherTarget& pusher) {
  JsonValue n = JsonValue::object();
  n.set("prio", JsonValue::string("low"));
  n.set("counts", counts(unread));
  n.set("devices", JsonValue::array({device_entry(pusher, JsonValue::object())}));
  return wrap(std::move(n));
}

GatewayVerdict judge_gateway_answer(std::optional<int> status, std::string_view body, std::string_view pushkey) {
  if (!status || *status >= 500 || *status == 429) return GatewayVerdict::retry;
  if (*status < 200 || *status >= 300) return GatewayVerdict::drop;
  if (auto answer = parse_json(body, {64 << 10, 16}); answer)
    if (const JsonValue* rejected = answer->get("rejected"); rejected && rejected->is_array())
      for (const auto& key : rejected->items())
        if (key.is_string() && key.as_string() == pushkey) return GatewayVerdict::pushkey_rejected;
  return GatewayVerdict::delivered;
}

std::int64_t push_retry_delay_ms(int failures, std::int64_t max_ms) {
  std::int64_t delay = 1000;
  for (int i = 1; i < failures && delay < max_ms; ++i) delay *= 2;
  return std::min(delay, max_ms);
}

}  // namespace hearth::matrix
