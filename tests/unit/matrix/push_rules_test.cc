// Push rules: the spec's defaults, user changes, glob matching and evaluation.
#include <gtest/gtest.h>

#include "matrix/push_rules.h"

namespace hearth::matrix {
namespace {

JsonValue parse(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text;
  return v ? *v : JsonValue();
}

const std::string kAlice = "@alice:example.org";

PushContext group(std::int64_t members = 5, bool sender_may_notify = false) {
  PushContext c;
  c.member_count = members;
  c.display_name = "Alice Liddell";
  c.sender_may_notify = [sender_may_notify](std::string_view key) { return key == "room" && sender_may_notify; };
  return c;
}

JsonValue message(std::string body, std::string sender = "@bob:example.org", std::string extra = "") {
  return parse(R"({"type":"m.room.message","room_id":"!r:example.org","sender":")" + sender +
               R"(","content":{"msgtype":"m.text","body":)" + "\"" + body + "\"" + extra + "}}");
}

TEST(PushGlob, SpecExamples) {
  EXPECT_TRUE(glob_matches("lunc?*", "Lunch plans", false));
  EXPECT_TRUE(glob_matches("lunc?*", "LUNCH", false));
  EXPECT_FALSE(glob_matches("lunc?*", " lunch", false));
  EXPECT_FALSE(glob_matches("lunc?*", "lunc", false));
  // content.body: any substring between word boundaries.
  EXPECT_TRUE(glob_matches("ex*ple", "An example event.", true));
  EXPECT_TRUE(glob_matches("ex*ple", "exple", true));
  EXPECT_TRUE(glob_matches("ex*ple", "An exciting triple-whammy", true));
  EXPECT_FALSE(glob_matches("cake", "cupcakes", true));
  EXPECT_TRUE(glob_matches("cake", "a cake!", true));
  EXPECT_TRUE(glob_matches("@room", "hey @room, lunch", true));
  // '?' is one code point, not one byte.
  EXPECT_TRUE(glob_matches("caf?", "café", false));
  // literal: wildcards are plain characters.
  EXPECT_FALSE(glob_matches("a*", "abc", true, true));
  EXPECT_TRUE(glob_matches("a*", "x a* y", true, true));
}

TEST(PushGlob, DottedPathsWithEscapes) {
  auto e = parse(R"({"content":{"m.mentions":{"room":true},"a\\b":1}})");
  ASSERT_NE(property_at(e, "content.m\\.mentions.room"), nullptr);
  EXPECT_TRUE(property_at(e, "content.m\\.mentions.room")->as_bool());
  EXPECT_EQ(property_at(e, "content.m.mentions.room"), nullptr);
  EXPECT_NE(property_at(e, "content.a\\\\b"), nullptr);
}

TEST(PushRules, DefaultsFollowTheSpec) {
  auto set = PushRuleSet::for_user(kAlice, JsonValue());
  auto j = set.client_json();
  const auto& global = *j.get("global");
  std::vector<std::string> override_ids, underride_ids;
  for (const auto& r : global.get("override")->items()) override_ids.push_back(r.get("rule_id")->as_string());
  for (const auto& r : global.get("underride")->items()) underride_ids.push_back(r.get("rule_id")->as_string());
  EXPECT_EQ(override_ids, (std::vector<std::string>{
                              ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
                              ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.contains_display_name",
                              ".m.rule.is_room_mention", ".m.rule.roomnotif", ".m.rule.tombstone",
                              ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"}));
  EXPECT_EQ(underride_ids, (std::vector<std::string>{".m.rule.call", ".m.rule.encrypted_room_one_to_one",
                                                     ".m.rule.room_one_to_one", ".m.rule.message",
                                                     ".m.rule.encrypted"}));
  const auto& master = global.get("override")->items()[0];
  EXPECT_FALSE(master.get("enabled")->as_bool());
  EXPECT_TRUE(master.get("default")->as_bool());
  const auto& content = global.get("content")->items();
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0].string_at("pattern"), "alice");
  EXPECT_TRUE(global.get("room")->items().empty());
  // The invite rule names the user.
  EXPECT_EQ(global.get("override")->items()[2].get("conditions")->items()[2].string_at("pattern"), kAlice);
}

TEST(PushRules, EvaluationOfTheDefaults) {
  auto set = PushRuleSet::for_user(kAlice, JsonValue());
  auto plain = set.evaluate(message("hello"), group());
  EXPECT_TRUE(plain.notify);
  EXPECT_FALSE(plain.highlight);
  EXPECT_EQ(plain.rule_id, ".m.rule.message");
  EXPECT_EQ(plain.tweaks, JsonValue::object());
  auto one_to_one = set.evaluate(message("hello"), group(2));
  EXPECT_EQ(one_to_one.rule_id, ".m.rule.room_one_to_one");
  EXPECT_EQ(canonical_json(one_to_one.tweaks), R"({"sound":"default"})");  // tweaks reach push gateways
  // Own messages never notify.
  EXPECT_FALSE(set.evaluate(message("hello", kAlice), group()).notify);
  // Notices are suppressed.
  EXPECT_FALSE(set.evaluate(parse(R"({"type":"m.room.message","sender":"@bob:example.org","content":{"msgtype":"m.notice","body":"bot"}})"),
                            group())
                   .notify);
  // Mentions highlight: by m.mentions, display name, or user name (word boundaries).
  auto mention = set.evaluate(message("hi", "@bob:example.org", R"(,"m.mentions":{"user_ids":["@alice:example.org"]})"), group());
  EXPECT_TRUE(mention.highlight);
  EXPECT_EQ(mention.rule_id, ".m.rule.is_user_mention");
  EXPECT_EQ(canonical_json(mention.tweaks), R"({"highlight":true,"sound":"default"})");
  EXPECT_EQ(set.evaluate(message("ask alice liddell"), group()).rule_id, ".m.rule.contains_display_name");
  EXPECT_EQ(set.evaluate(message("ALICE: look"), group()).rule_id, ".m.rule.contains_user_name");
  EXPECT_FALSE(set.evaluate(message("malice aforethought"), group()).highlight);
  // @room needs the sender's notification power.
  EXPECT_FALSE(set.evaluate(message("@room lunch"), group(5, false)).highlight);
  EXPECT_TRUE(set.evaluate(message("@room lunch"), group(5, true)).highlight);
  auto room_mention = message("lunch", "@bob:example.org", R"(,"m.mentions":{"room":true})");
  EXPECT_EQ(set.evaluate(room_mention, group(5, true)).rule_id, ".m.rule.is_room_mention");
  // Invitations for me notify; other member events do not.
  auto invite = parse(R"({"type":"m.room.member","state_key":"@alice:example.org","sender":"@bob:example.org","content":{"membership":"invite"}})");
  EXPECT_TRUE(set.evaluate(invite, group()).notify);
  auto join = parse(R"({"type":"m.room.member","state_key":"@carol:example.org","sender":"@carol:example.org","content":{"membership":"join"}})");
  EXPECT_FALSE(set.evaluate(join, group()).notify);
  // Encrypted, call, edits, reactions, tombstone.
  auto enc = parse(R"({"type":"m.room.encrypted","sender":"@bob:example.org","content":{"ciphertext":"x"}})");
  EXPECT_EQ(set.evaluate(enc, group(2)).rule_id, ".m.rule.encrypted_room_one_to_one");
  EXPECT_EQ(set.evaluate(enc, group(3)).rule_id, ".m.rule.encrypted");
  EXPECT_EQ(set.evaluate(parse(R"({"type":"m.call.invite","sender":"@bob:example.org","content":{}})"), group()).rule_id,
            ".m.rule.call");
  EXPECT_FALSE(set.evaluate(message("edit", "@bob:example.org", R"(,"m.relates_to":{"rel_type":"m.replace"})"), group()).notify);
  EXPECT_FALSE(set.evaluate(parse(R"({"type":"m.reaction","sender":"@bob:example.org","content":{}})"), group()).notify);
  auto tomb = parse(R"({"type":"m.room.tombstone","state_key":"","sender":"@bob:example.org","content":{}})");
  EXPECT_TRUE(set.evaluate(tomb, group()).highlight);
  // Unknown event types match nothing.
  EXPECT_FALSE(set.evaluate(parse(R"({"type":"org.example","sender":"@bob:example.org","content":{}})"), group()).notify);
}

TEST(PushRules, UserRulesOrderingEnabledActionsAndStorage) {
  auto set = PushRuleSet::for_user(kAlice, JsonValue());
  // A room rule silencing one room beats the underride message rule.
  ASSERT_TRUE(set.put(PushRuleKind::room, "!r:example.org", parse(R"({"actions":[]})"), "", ""));
  EXPECT_FALSE(set.evaluate(message("hello"), group()).notify);
  // An override with conditions; member count comparison.
  ASSERT_TRUE(set.put(PushRuleKind::override_rule, "beer",
                      parse(R"({"conditions":[{"kind":"event_match","key":"content.body","pattern":"beer"},{"kind":"room_member_count","is":"<=10"}],"actions":["notify",{"set_tweak":"highlight","value":false}]})"),
                      "", ""));
  auto beer = set.evaluate(message("beer time"), group(10));
  EXPECT_TRUE(beer.notify);
  EXPECT_FALSE(beer.highlight);
  EXPECT_EQ(beer.rule_id, "beer");
  EXPECT_EQ(set.evaluate(message("beer time"), group(11)).rule_id, "!r:example.org");
  // Unknown condition kinds never match.
  ASSERT_TRUE(set.put(PushRuleKind::override_rule, "odd", parse(R"({"conditions":[{"kind":"org.unknown"}],"actions":["notify"]})"),
                      "beer", ""));
  EXPECT_EQ(set.rule(PushRuleKind::override_rule, "odd")->get("enabled")->as_bool(), true);
  auto j = set.client_json();
  const auto& over = j.get("global")->get("override")->items();
  EXPECT_EQ(over[0].string_at("rule_id"), ".m.rule.master");
  EXPECT_EQ(over[1].string_at("rule_id"), "odd");  // before "beer"
  EXPECT_EQ(over[2].string_at("rule_id"), "beer");
  // Reserved ids, unknown before, bad bodies.
  EXPECT_EQ(set.put(PushRuleKind::override_rule, ".mine", parse(R"({"actions":[]})"), "", "").error().code,
            Errc::invalid_argument);
  EXPECT_EQ(set.put(PushRuleKind::override_rule, "x", parse(R"({"actions":[]})"), "nope", "").error().code, Errc::not_found);
  EXPECT_EQ(set.put(PushRuleKind::content, "x", parse(R"({"actions":[]})"), "", "").error().code, Errc::invalid_argument);
  EXPECT_EQ(set.remove(PushRuleKind::override_rule, ".m.rule.master").error().code, Errc::permission_denied);
  // Defaults: disable and change actions; the master rule silences everything.
  ASSERT_TRUE(set.set_enabled(PushRuleKind::override_rule, ".m.rule.master", true));
  EXPECT_FALSE(set.evaluate(message("beer"), group()).notify);
  ASSERT_TRUE(set.set_enabled(PushRuleKind::override_rule, ".m.rule.master", false));
  ASSERT_TRUE(set.set_actions(PushRuleKind::underride, ".m.rule.message", parse(R"(["notify",{"set_tweak":"highlight"}])")));
  ASSERT_TRUE(set.remove(PushRuleKind::room, "!r:example.org"));
  EXPECT_TRUE(set.evaluate(message("hello"), group()).highlight);
  // Round trip through storage keeps everything, stores only the difference.
  auto stored = set.stored();
  EXPECT_EQ(stored.get("defaults")->members().size(), 1u);
  auto again = PushRuleSet::for_user(kAlice, stored);
  EXPECT_EQ(canonical_json(again.client_json()), canonical_json(set.client_json()));
  // A limit on user rules per kind.
  for (std::size_t i = 0; i < kMaxPushRulesPerKind; ++i) {
    auto r = again.put(PushRuleKind::sender, "@u" + std::to_string(i) + ":x", parse(R"({"actions":[]})"), "", "");
    if (!r) {
      EXPECT_EQ(r.error().code, Errc::resource_exhausted);
      EXPECT_EQ(i, kMaxPushRulesPerKind);
    }
  }
  EXPECT_EQ(again.put(PushRuleKind::sender, "@one-more:x", parse(R"({"actions":[]})"), "", "").error().code,
            Errc::resource_exhausted);
}

}  // namespace
}  // namespace hearth::matrix
