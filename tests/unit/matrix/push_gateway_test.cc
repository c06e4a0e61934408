#include "matrix/push_gateway.h"

#include <gtest/gtest.h>

namespace hearth::matrix {
namespace {

JsonValue parse(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text;
  return v ? *v : JsonValue();
}

PusherTarget pusher(std::string_view data_json) {
  return PusherTarget{"org.example.app", "key-1", 1700000000, parse(data_json)};
}

EventFacts message_facts() {
  EventFacts e;
  e.event_id = "$ev1";
  e.room_id = "!room:hearth.test";
  e.type = "m.room.message";
  e.sender = "@bob:hearth.test";
  e.sender_display_name = "Bob";
  e.room_name = "Kitchen";
  e.room_alias = "#kitchen:hearth.test";
  e.content = parse(R"({"body":"hello","msgtype":"m.text"})");
  return e;
}

TEST(GatewayUrl, AcceptsHttpsAndHttpWithTheNotifyPath) {
  auto u = parse_gateway_url("https://push.example.org/_matrix/push/v1/notify");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "push.example.org");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/_matrix/push/v1/notify");
  auto plain = parse_gateway_url("http://127.0.0.1:8123/_matrix/push/v1/notify?up=1");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->tls);
  EXPECT_EQ(plain->host, "127.0.0.1");
  EXPECT_EQ(plain->port, 8123);
  EXPECT_EQ(plain->target, "/_matrix/push/v1/notify?up=1");
  auto v6 = parse_gateway_url("https://[2001:db8::1]:8443/_matrix/push/v1/notify");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "2001:db8::1");
  EXPECT_EQ(v6->port, 8443);
  EXPECT_EQ(parse_gateway_url("http://gw.example/_matrix/push/v1/notify")->port, 80);
}

TEST(GatewayUrl, RefusesOtherSchemesPathsAndMalformedParts) {
  for (std::string_view bad :
       {"ftp://gw.example/_matrix/push/v1/notify", "https://gw.example", "https://gw.example/",
        "https://gw.example/prefix/_matrix/push/v1/notify", "https://gw.example/_matrix/push/v1/notify/",
        "https://user:pw@gw.example/_matrix/push/v1/notify", "https://gw.example/_matrix/push/v1/notify#x",
        "https://gw.example:0/_matrix/push/v1/notify", "https://gw.example:99999/_matrix/push/v1/notify",
        "https://gw.example:/_matrix/push/v1/notify", "https://gw.example:8a/_matrix/push/v1/notify",
        "https:///_matrix/push/v1/notify", "https://g w/_matrix/push/v1/notify",
        "https://gw.example/_matrix/push/v1/notify?a b", "https://[::1/_matrix/push/v1/notify", ""}) {
    auto u = parse_gateway_url(bad);
    ASSERT_FALSE(u) << bad;
    EXPECT_EQ(u.error().code, Errc::invalid_argument) << bad;
  }
  EXPECT_FALSE(parse_gateway_url("https://gw.example/_matrix/push/v1/notify?" + std::string(3000, 'a')));
}

TEST(NotificationBody, CarriesTheEventCountsAndDevice) {
  JsonValue tweaks = parse(R"({"sound":"default"})");
  auto body = parse(notification_body(message_facts(), tweaks, 3,
                                      pusher(R"({"url":"https://gw/_matrix/push/v1/notify","custom":"x"})")));
  const JsonValue* n = body.get("notification");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->string_at("event_id"), "$ev1");
  EXPECT_EQ(n->string_at("room_id"), "!room:hearth.test");
  EXPECT_EQ(n->string_at("type"), "m.room.message");
  EXPECT_EQ(n->string_at("sender"), "@bob:hearth.test");
  EXPECT_EQ(n->string_at("sender_display_name"), "Bob");
  EXPECT_EQ(n->string_at("room_name"), "Kitchen");
  EXPECT_EQ(n->string_at("room_alias"), "#kitchen:hearth.test");
  EXPECT_EQ(n->string_at("prio"), "high");  // a sound
  EXPECT_EQ(*n->get("content"), parse(R"({"body":"hello","msgtype":"m.text"})"));
  EXPECT_EQ(*n->get("counts"), parse(R"({"unread":3})"));
  EXPECT_EQ(n->get("user_is_target"), nullptr);
  ASSERT_EQ(n->get("devices")->items().size(), 1u);
  const JsonValue& d = n->get("devices")->items()[0];
  EXPECT_EQ(d.string_at("app_id"), "org.example.app");
  EXPECT_EQ(d.string_at("pushkey"), "key-1");
  EXPECT_EQ(d.get("pushkey_ts")->as_int(), 1700000000);
  EXPECT_EQ(*d.get("data"), parse(R"({"custom":"x"})"));  // minus url
  EXPECT_EQ(*d.get("tweaks"), tweaks);
}

TEST(NotificationBody, EventIdOnlyLeavesOutSenderNamesAndContent) {
  auto body =
      parse(notification_body(message_facts(), JsonValue::object(), 0,
                              pusher(R"({"url":"https://gw/_matrix/push/v1/notify","format":"event_id_only"})")));
  const JsonValue* n = body.get("notification");
  ASSERT_NE(n, nullptr);
  std::vector<std::string> keys;
  for (const auto& [k, v] : n->members()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"counts", "devices", "event_id", "prio", "room_id"}));
  EXPECT_EQ(*n->get("counts"), JsonValue::object());  // zero counts are omitted
  EXPECT_EQ(n->string_at("prio"), "low");
  // format stays in the device's data (spec: only url is removed).
  EXPECT_EQ(*n->get("devices")->items()[0].get("data"), parse(R"({"format":"event_id_only"})"));
}

TEST(NotificationBody, MemberEventsNameTheirTargetAndOmitUnknownNames) {
  EventFacts e = message_facts();
  e.type = "m.room.member";
  e.user_is_target = true;
  e.room_name.clear();
  e.room_alias.clear();
  e.sender_display_name.clear();
  e.content.reset();
  auto n = *parse(notification_body(e, JsonValue::object(), 1, pusher("{}"))).get("notification");
  EXPECT_TRUE(n.get("user_is_target")->as_bool());
  for (auto absent : {"room_name", "room_alias", "sender_display_name", "content"})
    EXPECT_EQ(n.get(absent), nullptr) << absent;
}

TEST(NotificationBody, BadgeUpdateHasOnlyCountsAndDevices) {
  auto n = *parse(badge_body(2, pusher(R"({"url":"http://gw/_matrix/push/v1/notify"})"))).get("notification");
  std::vector<std::string> keys;
  for (const auto& [k, v] : n.members()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"counts", "devices", "prio"}));
  EXPECT_EQ(n.string_at("prio"), "low");
  EXPECT_EQ(*n.get("counts"), parse(R"({"unread":2})"));
}

TEST(PushPriority, HighForSoundHighlightOrEncrypted) {
  EXPECT_EQ(push_priority("m.room.message", JsonValue::object()), "low");
  EXPECT_EQ(push_priority("m.room.message", parse(R"({"highlight":true})")), "high");
  EXPECT_EQ(push_priority("m.room.message", parse(R"({"highlight":false})")), "low");
  EXPECT_EQ(push_priority("m.room.message", parse(R"({"sound":"ring"})")), "high");
  EXPECT_EQ(push_priority("m.room.encrypted", JsonValue::object()), "high");
}

TEST(GatewayAnswer, ClassifiesStatusAndRejectedKeys) {
  EXPECT_EQ(judge_gateway_answer(200, R"({"rejected":[]})", "key-1"), GatewayVerdict::delivered);
  EXPECT_EQ(judge_gateway_answer(200, "not json", "key-1"), GatewayVerdict::delivered);
  EXPECT_EQ(judge_gateway_answer(200, R"({"rejected":["other"]})", "key-1"), GatewayVerdict::delivered);
  EXPECT_EQ(judge_gateway_answer(200, R"({"rejected":["other","key-1"]})", "key-1"), GatewayVerdict::pushkey_rejected);
  EXPECT_EQ(judge_gateway_answer(std::nullopt, "", "key-1"), GatewayVerdict::retry);
  EXPECT_EQ(judge_gateway_answer(500, "", "key-1"), GatewayVerdict::retry);
  EXPECT_EQ(judge_gateway_answer(503, "", "key-1"), GatewayVerdict::retry);
  EXPECT_EQ(judge_gateway_answer(429, "", "key-1"), GatewayVerdict::retry);
  EXPECT_EQ(judge_gateway_answer(400, "", "key-1"), GatewayVerdict::drop);
  EXPECT_EQ(judge_gateway_answer(404, "", "key-1"), GatewayVerdict::drop);
  EXPECT_EQ(judge_gateway_answer(301, "", "key-1"), GatewayVerdict::drop);
}

TEST(PushRetry, DoublesFromOneSecondUpToTheCap) {
  std::vector<std::int64_t> got;
  for (int failures = 1; failures <= 6; ++failures) got.push_back(push_retry_delay_ms(failures, 20'000));
  EXPECT_EQ(got, (std::vector<std::int64_t>{1000, 2000, 4000, 8000, 16000, 20000}));
  EXPECT_EQ(push_retry_delay_ms(1000, 900'000), 900'000);  // no overflow after many failures
}

}  // namespace
}  // namespace hearth::matrix
