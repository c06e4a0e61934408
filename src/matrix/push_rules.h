// Push rules (spec: "Push Notifications", "Push Rules"): the server-default rule set,
// a user's changes to it, and the evaluation of an event against the rules.
//
// A user's rules are the spec's defaults (built for the user's id and localpart) merged
// with what the user stored: their own rules per kind, plus the `enabled` flag and
// `actions` they set on default rules. Only that difference is persisted (as JSON, see
// stored()), so a change of the defaults in a later hearth reaches every user.
//
// Evaluation order (spec): .m.rule.master, then override (user rules before the
// defaults), content, room, sender, underride; the first enabled rule whose conditions
// hold gives the actions. Globs support `*` and `?` and match case-insensitively (ASCII
// case folding); `content.body` matches at word boundaries.
//
// Pure values: no I/O, no shared state; safe on any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"

namespace hearth::matrix {

enum class PushRuleKind { override_rule, content, room, sender, underride };
// "override" / "content" / "room" / "sender" / "underride"; nullopt for anything else.
std::optional<PushRuleKind> parse_push_rule_kind(std::string_view s);
std::string_view push_rule_kind_name(PushRuleKind k);

// Limits on what a user may store.
inline constexpr std::size_t kMaxPushRulesPerKind = 100;
inline constexpr std::size_t kMaxPushConditions = 20;
inline constexpr std::size_t kMaxPushPatternBytes = 512;
inline constexpr std::size_t kMaxPushRuleIdBytes = 255;

// Glob match (`*`, `?`; ASCII case-insensitive). word_boundaries: the pattern may match
// any substring that starts and ends at a word boundary (spec: event_match on
// content.body); otherwise it must match the whole text. literal: `*` and `?` are plain
// characters (display-name search). Linear in text size times pattern size.
bool glob_matches(std::string_view pattern, std::string_view text, bool word_boundaries, bool literal = false);

// Follows a dot-separated property path ("content.m\.mentions.user_ids": `\.` is a dot in
// a key, `\\` a backslash); nullptr when absent.
const JsonValue* property_at(const JsonValue& event, std::string_view path);

// What evaluation needs to know about the room and the user besides the event.
struct PushContext {
  std::int64_t member_count = 0;  // joined members
  std::string display_name;       // the user's display name in the room ("" if none)
  // Whether the event's sender has the power level notifications.<key> requires.
  std::function<bool(std::string_view key)> sender_may_notify;
};

struct PushOutcome {
  bool notify = false;
  bool highlight = false;
  std::string rule_id;  // the matching rule, "" if none
  // The rule's set_tweak actions as {"sound":"default","highlight":true} (a highlight
  // tweak without a value is true), for push gateways.
  JsonValue tweaks = JsonValue::object();
};

class PushRuleSet {
 public:
  // The rules of `user_id` ("@local:server"): defaults merged with `stored` (as returned by
  // stored(); null or malformed parts are ignored).
  static PushRuleSet for_user(const std::string& user_id, const JsonValue& stored);

  // The difference to the defaults, to persist.
  JsonValue stored() const;
  // {"global":{"override":[...],"content":[...],...}} as GET /pushrules/ answers (also the
  // m.push_rules account data content).
  JsonValue client_json() const;

  // One rule as the API shows it; not_found if absent.
  Result<JsonValue> rule(PushRuleKind kind, std::string_view rule_id) const;
  // PUT /pushrules/global/{kind}/{ruleId}: adds or replaces a user rule. `before`/`after`
  // name a user rule of the same kind. invalid_argument for a bad body or a rule id that
  // starts with '.', not_found for an unknown before/after, resource_exhausted past the
  // per-kind limit.
  Result<void> put(PushRuleKind kind, std::string_view rule_id, const JsonValue& body, std::string_view before,
                   std::string_view after);
  // Removes a user rule; not_found if absent (default rules cannot be removed:
  // permission_denied).
  Result<void> remove(PushRuleKind kind, std::string_view rule_id);
  Result<void> set_enabled(PushRuleKind kind, std::string_view rule_id, bool enabled);
  Result<void> set_actions(PushRuleKind kind, std::string_view rule_id, const JsonValue& actions);

  // Evaluates an event (client format) for this user. Events the user sent never notify.
  PushOutcome evaluate(const JsonValue& event, const PushContext& ctx) const;

 private:
  struct Rule {
    std::string rule_id;
    bool is_default = false;
    bool enabled = true;
    JsonValue actions;     // array
    JsonValue conditions;  // array (override/underride); null otherwise
    std::string pattern;   // content rules
  };
  Rule* find(PushRuleKind kind, std::string_view rule_id);
  const Rule* find(PushRuleKind kind, std::string_view rule_id) const;
  static JsonValue rule_json(PushRuleKind kind, const Rule& r);
  bool matches(PushRuleKind kind, const Rule& r, const JsonValue& event, const PushContext& ctx) const;

  std::string user_id_;
  std::vector<Rule> rules_[5];  // per kind, in priority order (user rules first, then defaults)
};

}  // namespace hearth::matrix
