// Fuzzes what clients send for push rules and /sync filters: a JSON body is tried as a
// filter, as a push rule (put, then the stored form re-read must render the same), and as
// an event evaluated against the rules; the first line, if any, is also a glob pattern
// matched against the rest. The whole input is also a pusher URL, a push gateway's answer
// and (when JSON) a pusher's data for a notification body, which must parse back.
// Nothing may crash; the storage round trip must be exact.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "matrix/push_gateway.h"
#include "matrix/push_rules.h"
#include "matrix/sync_filter.h"

using namespace hearth::matrix;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto nl = text.find('\n'); nl != std::string_view::npos && nl <= kMaxPushPatternBytes) {
    (void)glob_matches(text.substr(0, nl), text.substr(nl + 1), true);
    (void)glob_matches(text.substr(0, nl), text.substr(nl + 1), false);
    (void)type_pattern_matches(text.substr(0, nl), text.substr(nl + 1));
  }
  if (auto url = parse_gateway_url(text); url && (url->host.empty() || url->port < 1 || url->port > 65535)) std::abort();
  (void)judge_gateway_answer(200, text, "key");
  auto v = parse_json(text, {1 << 16, 16});
  if (!v) return 0;
  EventFacts facts{"$e", "!r:example.org", "m.room.message", "@s:example.org", "S", "R", "#r:example.org", *v, true};
  PusherTarget pusher{"app", "key", 1, *v};
  if (!parse_json(notification_body(facts, *v, 1, pusher), {1 << 20, 40})) std::abort();
  if (!parse_json(badge_body(1, pusher), {1 << 20, 40})) std::abort();
  (void)SyncFilter::parse(*v);
  auto set = PushRuleSet::for_user("@fuzz:example.org", *v);
  for (auto kind : {PushRuleKind::override_rule, PushRuleKind::content, PushRuleKind::underride})
    (void)set.put(kind, "rule", *v, "", "");
  if (const JsonValue* a = v->get("actions")) (void)set.set_actions(PushRuleKind::underride, ".m.rule.message", *a);
  auto again = PushRuleSet::for_user("@fuzz:example.org", set.stored());
  if (canonical_json(again.client_json()) != canonical_json(set.client_json())) std::abort();
  PushContext ctx;
  ctx.member_count = 2;
  ctx.display_name = "Fuzz";
  ctx.sender_may_notify = [](std::string_view) { return true; };
  (void)set.evaluate(*v, ctx);
  return 0;
}
