// The Push Gateway API as a pusher sees it (spec: "Push Gateway API",
// POST /_matrix/push/v1/notify): where a pusher's URL points, the notification body sent
// for one event (or for a badge update), what the gateway's answer means, and how long
// to wait before retrying a gateway that failed.
//
// Pure values and functions: no I/O, no shared state; safe on any thread. The queue and
// the HTTP calls live in push_delivery.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "matrix/canonical_json.h"

namespace hearth::matrix {

// The path every pusher URL must have (spec: pusher data.url).
inline constexpr std::string_view kPushNotifyPath = "/_matrix/push/v1/notify";

struct GatewayUrl {
  bool tls = true;   // https
  std::string host;  // a name or an address literal (IPv6 without brackets)
  int port = 443;
  std::string target;  // the path and query, as sent in the request line
};

// Parses a pusher's data.url: http:// or https://, a host, an optional port, the path
// exactly /_matrix/push/v1/notify, an optional query; no user info, no fragment, at most
// 2048 bytes. invalid_argument with a message for the client otherwise.
Result<GatewayUrl> parse_gateway_url(std::string_view url);

// A pusher as the notification's `devices` entry needs it.
struct PusherTarget {
  std::string app_id, pushkey;
  std::int64_t pushkey_ts_s = 0;  // when the pushkey was last set (seconds)
  JsonValue data;                 // the pusher's data object as the client set it
};

// What is known about the event a user is notified of.
struct EventFacts {
  std::string event_id, room_id, type, sender;
  std::string sender_display_name, room_name, room_alias;  // "" when unknown: omitted
  std::optional<JsonValue> content;                        // omitted when absent
  bool user_is_target = false;                             // a member event whose state_key is the notified user
};

// "high" when the notification may make a sound or highlight, or when its effect is
// unknown (an encrypted event); "low" otherwise (the same choice Synapse makes).
std::string_view push_priority(std::string_view event_type, const JsonValue& tweaks);

// The request body for one event: {"notification":{event fields, prio, counts, devices}}.
// With data.format "event_id_only", only event_id, room_id, prio, counts and devices go
// out (no sender, names or content). Zero counts are omitted (spec). The device's data is
// the pusher's data minus `url` (spec: "minus the url key"; `format` stays).
std::string notification_body(const EventFacts& event, const JsonValue& tweaks, std::int64_t unread,
                              const PusherTarget& pusher);

// A badge update: only counts (and prio low), no event, so the app can clear its badge
// after the user read something elsewhere.
std::string badge_body(std::int64_t unread, const PusherTarget& pusher);

// What to do with a queued notification after one delivery attempt.
enum class GatewayVerdict {
  delivered,         // 2xx; the pushkey was accepted
  pushkey_rejected,  // 2xx listing our pushkey in `rejected`: remove the pusher
  retry,             // transport failure, timeout, 5xx or 429: keep it, back off
  drop,              // any other answer (4xx, 3xx): the gateway will never take it
};

// `status` is the HTTP status, or nullopt when no answer arrived (connection, TLS,
// timeout); `body` the answer's body.
GatewayVerdict judge_gateway_answer(std::optional<int> status, std::string_view body, std::string_view pushkey);

// The wait before attempt `failures + 1` after `failures` consecutive failures (>= 1):
// 1 s, doubling, at most `max_ms`.
std::int64_t push_retry_delay_ms(int failures, std::int64_t max_ms);

}  // namespace hearth::matrix
