#include "matrix/push_rules.h"

#include <algorithm>
#include <cctype>

namespace hearth::matrix {

namespace {

constexpr PushRuleKind kKinds[] = {PushRuleKind::override_rule, PushRuleKind::content, PushRuleKind::room,
                                   PushRuleKind::sender, PushRuleKind::underride};

std::size_t idx(PushRuleKind k) { return static_cast<std::size_t>(k); }

// UTF-8 to code points (invalid bytes count as one code point each), ASCII lower-cased.
std::vector<char32_t> folded(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (extra && i + extra >= s.size()) extra = 0;
    char32_t cp = extra ? (c & (0x3F >> extra)) : c;
    for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    if (cp < 128) cp = static_cast<char32_t>(std::tolower(static_cast<int>(cp)));
    out.push_back(cp);
    i += 1 + extra;
  }
  return out;
}

bool word_char(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

JsonValue str(std::string s) { return JsonValue::string(std::move(s)); }

JsonValue cond_match(std::string key, std::string pattern) {
  JsonValue c = JsonValue::object();
  c.set("kind", str("event_match"));
  c.set("key", str(std::move(key)));
  c.set("pattern", str(std::move(pattern)));
  return c;
}

JsonValue tweak(std::string name, std::optional<std::string> value) {
  JsonValue t = JsonValue::object();
  t.set("set_tweak", str(std::move(name)));
  if (value) t.set("value", str(std::move(*value)));
  return t;
}

JsonValue actions(bool notify, std::optional<std::string> sound, bool highlight) {
  JsonValue a = JsonValue::array();
  if (notify) a.items().push_back(str("notify"));
  if (sound) a.items().push_back(tweak("sound", sound));
  if (highlight) a.items().push_back(tweak("highlight", std::nullopt));
  return a;
}

bool scalar(const JsonValue& v) { return v.is_string() || v.is_int() || v.is_bool() || v.is_null(); }

bool valid_actions(const JsonValue& a) {
  if (!a.is_array() || a.items().size() > 20) return false;
  for (const auto& x : a.items()) {
    if (x.is_string()) continue;
    if (!x.is_object() || !x.get("set_tweak") || !x.get("set_tweak")->is_string()) return false;
  }
  return true;
}

bool valid_conditions(const JsonValue& c) {
  if (!c.is_array() || c.items().size() > kMaxPushConditions) return false;
  for (const auto& x : c.items()) {
    if (!x.is_object() || !x.get("kind") || !x.get("kind")->is_string()) return false;
    for (const auto& [k, v] : x.members())
      if (v.is_string() && v.as_string().size() > kMaxPushPatternBytes) return false;
  }
  return true;
}

}  // namespace

std::optional<PushRuleKind> parse_push_rule_kind(std::string_view s) {
  for (auto k : kKinds)
    if (push_rule_kind_name(k) == s) return k;
  return std::nullopt;
}

std::string_view push_rule_kind_name(PushRuleKind k) {
  switch (k) {
    case PushRuleKind::override_rule: return "override";
    case PushRuleKind::content: return "content";
    case PushRuleKind::room: return "room";
    case PushRuleKind::sender: return "sender";
    case PushRuleKind::underride: return "underride";
  }
  return "";
}

bool glob_matches(std::string_view pattern_sv, std::string_view text_sv, bool word_boundaries, bool literal) {
  auto p = folded(pattern_sv);
  auto t = folded(text_sv);
  const std::size_t m = p.size();
  auto is_star = [&](std::size_t k) { return !literal && p[k] == U'*'; };
  // NFA simulation: state k = "the first k pattern symbols are matched".
  std::vector<char> cur(m + 1, 0), next(m + 1, 0);
  auto close = [&](std::vector<char>& s) {
    for (std::size_t k = 0; k < m; ++k)
      if (s[k] && is_star(k)) s[k + 1] = 1;
  };
  auto boundary_before = [&](std::size_t i) { return i == 0 || !word_char(t[i - 1]); };
  auto boundary_after = [&](std::size_t j) { return j == t.size() || !word_char(t[j]); };
  // A match must start and end at a boundary in word mode: the character next to the
  // matched substring must be a non-word one (or the text's edge).
  for (std::size_t i = 0;; ++i) {
    if (i == 0 || (word_boundaries && boundary_before(i))) {
      cur[0] = 1;
      close(cur);
    }
    if (cur[m] && (word_boundaries ? boundary_after(i) : i == t.size())) return true;
    if (i == t.size()) return false;
    std::fill(next.begin(), next.end(), 0);
    bool any = false;
    for (std::size_t k = 0; k < m; ++k) {
      if (!cur[k]) continue;
      if (is_star(k)) {
        next[k] = 1;
        any = true;
      } else if ((!literal && p[k] == U'?') || p[k] == t[i]) {
        next[k + 1] = 1;
        any = true;
      }
    }
    close(next);
    std::swap(cur, next);
    if (!any && !word_boundaries) return false;
  }
}

const JsonValue* property_at(const JsonValue& event, std::string_view path) {
  const JsonValue* v = &event;
  std::string key;
  for (std::size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '.') {
      if (!v->is_object()) return nullptr;
      v = v->get(key);
      if (!v) return nullptr;
      key.clear();
    } else if (path[i] == '\\' && i + 1 < path.size() && (path[i + 1] == '.' || path[i + 1] == '\\')) {
      key += path[++i];
    } else {
      key += path[i];
    }
  }
  return v;
}

PushRuleSet PushRuleSet::for_user(const std::string& user_id, const JsonValue& stored) {
  PushRuleSet set;
  set.user_id_ = user_id;
  std::string localpart = user_id.substr(1, user_id.find(':') - 1);
  auto add = [&](PushRuleKind kind, std::string id, std::vector<JsonValue> conds, JsonValue acts, bool enabled = true) {
    Rule r;
    r.rule_id = std::move(id);
    r.is_default = true;
    r.enabled = enabled;
    r.actions = std::move(acts);
    if (kind == PushRuleKind::content) {
      r.pattern = localpart;
    } else {
      r.conditions = JsonValue::array(std::move(conds));
    }
    set.rules_[idx(kind)].push_back(std::move(r));
  };
  using K = PushRuleKind;
  const auto none = JsonValue::array();
  const std::optional<std::string> dflt = "default";
  auto prop = [](std::string kind, std::string key, JsonValue value) {
    JsonValue c = JsonValue::object();
    c.set("kind", str(std::move(kind)));
    c.set("key", str(std::move(key)));
    c.set("value", std::move(value));
    return c;
  };
  JsonValue sender_room = JsonValue::object();
  sender_room.set("kind", str("sender_notification_permission"));
  sender_room.set("key", str("room"));
  JsonValue display_name = JsonValue::object();
  display_name.set("kind", str("contains_display_name"));
  JsonValue two = JsonValue::object();
  two.set("kind", str("room_member_count"));
  two.set("is", str("2"));
  // Override rules; .m.rule.master stays first (it outranks user rules).
  add(K::override_rule, ".m.rule.master", {}, none, false);
  add(K::override_rule, ".m.rule.suppress_notices", {cond_match("content.msgtype", "m.notice")}, none);
  add(K::override_rule, ".m.rule.invite_for_me",
      {cond_match("type", "m.room.member"), cond_match("content.membership", "invite"), cond_match("state_key", user_id)},
      actions(true, dflt, false));
  add(K::override_rule, ".m.rule.member_event", {cond_match("type", "m.room.member")}, none);
  add(K::override_rule, ".m.rule.is_user_mention",
      {prop("event_property_contains", "content.m\\.mentions.user_ids", str(user_id))}, actions(true, dflt, true));
  add(K::override_rule, ".m.rule.contains_display_name", {display_name}, actions(true, dflt, true));
  add(K::override_rule, ".m.rule.is_room_mention",
      {prop("event_property_is", "content.m\\.mentions.room", JsonValue::boolean(true)), sender_room},
      actions(true, std::nullopt, true));
  add(K::override_rule, ".m.rule.roomnotif", {cond_match("content.body", "@room"), sender_room},
      actions(true, std::nullopt, true));
  add(K::override_rule, ".m.rule.tombstone", {cond_match("type", "m.room.tombstone"), cond_match("state_key", "")},
      actions(true, std::nullopt, true));
  add(K::override_rule, ".m.rule.reaction", {cond_match("type", "m.reaction")}, none);
  add(K::override_rule, ".m.rule.room.server_acl",
      {cond_match("type", "m.room.server_acl"), cond_match("state_key", "")}, none);
  add(K::override_rule, ".m.rule.suppress_edits",
      {prop("event_property_is", "content.m\\.relates_to.rel_type", str("m.replace"))}, none);
  add(K::content, ".m.rule.contains_user_name", {}, actions(true, dflt, true));
  add(K::underride, ".m.rule.call", {cond_match("type", "m.call.invite")}, actions(true, "ring", false));
  add(K::underride, ".m.rule.encrypted_room_one_to_one", {two, cond_match("type", "m.room.encrypted")},
      actions(true, dflt, false));
  add(K::underride, ".m.rule.room_one_to_one", {two, cond_match("type", "m.room.message")}, actions(true, dflt, false));
  add(K::underride, ".m.rule.message", {cond_match("type", "m.room.message")}, actions(true, std::nullopt, false));
  add(K::underride, ".m.rule.encrypted", {cond_match("type", "m.room.encrypted")}, actions(true, std::nullopt, false));

  // The user's changes to defaults: {"defaults":{"<kind>/<id>":{"enabled":b,"actions":[...]}}}
  if (const JsonValue* d = stored.get("defaults"); d && d->is_object()) {
    for (const auto& [key, change] : d->members()) {
      auto slash = key.find('/');
      auto kind = parse_push_rule_kind(std::string_view(key).substr(0, slash));
      if (!kind || slash == std::string::npos) continue;
      Rule* r = set.find(*kind, std::string_view(key).substr(slash + 1));
      if (!r || !r->is_default) continue;
      if (const JsonValue* e = change.get("enabled"); e && e->is_bool()) r->enabled = e->as_bool();
      if (const JsonValue* a = change.get("actions"); a && valid_actions(*a)) r->actions = *a;
    }
  }
  // The user's own rules: {"user":{"<kind>":[rule json...]}}, inserted before the defaults
  // (after .m.rule.master for override).
  if (const JsonValue* u = stored.get("user"); u && u->is_object()) {
    for (auto kind : kKinds) {
      const JsonValue* list = u->get(push_rule_kind_name(kind));
      if (!list || !list->is_array()) continue;
      auto& rules = set.rules_[idx(kind)];
      std::size_t at = kind == K::override_rule ? 1 : 0;
      for (const auto& j : list->items()) {
        Rule r;
        r.rule_id = std::string(j.string_at("rule_id"));
        if (r.rule_id.empty() || r.rule_id[0] == '.') continue;
        const JsonValue* e = j.get("enabled");
        r.enabled = !e || !e->is_bool() || e->as_bool();
        const JsonValue* a = j.get("actions");
        r.actions = (a && valid_actions(*a)) ? *a : JsonValue::array();
        if (const JsonValue* c = j.get("conditions")) r.conditions = *c;
        r.pattern = std::string(j.string_at("pattern"));
        rules.insert(rules.begin() + static_cast<std::ptrdiff_t>(at++), std::move(r));
      }
    }
  }
  return set;
}

JsonValue PushRuleSet::stored() const {
  JsonValue out = JsonValue::object();
  JsonValue user = JsonValue::object();
  JsonValue defaults = JsonValue::object();
  PushRuleSet pristine = for_user(user_id_, JsonValue());
  for (auto kind : kKinds) {
    JsonValue list = JsonValue::array();
    for (const auto& r : rules_[idx(kind)]) {
      if (!r.is_default) {
        list.items().push_back(rule_json(kind, r));
        continue;
      }
      const Rule* base = pristine.find(kind, r.rule_id);
      if (!base || (base->enabled == r.enabled && base->actions == r.actions)) continue;
      JsonValue change = JsonValue::object();
      change.set("enabled", JsonValue::boolean(r.enabled));
      change.set("actions", r.actions);
      defaults.set(std::string(push_rule_kind_name(kind)) + "/" + r.rule_id, std::move(change));
    }
    if (!list.items().empty()) user.set(std::string(push_rule_kind_name(kind)), std::move(list));
  }
  out.set("user", std::move(user));
  out.set("defaults", std::move(defaults));
  return out;
}

JsonValue PushRuleSet::rule_json(PushRuleKind kind, const Rule& r) {
  JsonValue j = JsonValue::object();
  j.set("rule_id", str(r.rule_id));
  j.set("default", JsonValue::boolean(r.is_default));
  j.set("enabled", JsonValue::boolean(r.enabled));
  j.set("actions", r.actions);
  if (kind == PushRuleKind::override_rule || kind == PushRuleKind::underride)
    j.set("conditions", r.conditions.is_array() ? r.conditions : JsonValue::array());
  if (kind == PushRuleKind::content) j.set("pattern", str(r.pattern));
  return j;
}

JsonValue PushRuleSet::client_json() const {
  JsonValue global = JsonValue::object();
  for (auto kind : kKinds) {
    JsonValue list = JsonValue::array();
    for (const auto& r : rules_[idx(kind)]) list.items().push_back(rule_json(kind, r));
    global.set(std::string(push_rule_kind_name(kind)), std::move(list));
  }
  JsonValue out = JsonValue::object();
  out.set("global", std::move(global));
  return out;
}

PushRuleSet::Rule* PushRuleSet::find(PushRuleKind kind, std::string_view rule_id) {
  for (auto& r : rules_[idx(kind)])
    if (r.rule_id == rule_id) return &r;
  return nullptr;
}

const PushRuleSet::Rule* PushRuleSet::find(PushRuleKind kind, std::string_view rule_id) const {
  return const_cast<PushRuleSet*>(this)->find(kind, rule_id);
}

Result<JsonValue> PushRuleSet::rule(PushRuleKind kind, std::string_view rule_id) const {
  const Rule* r = find(kind, rule_id);
  if (!r) return fail(Errc::not_found, "No such push rule");
  return rule_json(kind, *r);
}

Result<void> PushRuleSet::put(PushRuleKind kind, std::string_view rule_id, const JsonValue& body,
                              std::string_view before, std::string_view after) {
  if (rule_id.empty() || rule_id.size() > kMaxPushRuleIdBytes || rule_id.find('\\') != std::string_view::npos)
    return fail(Errc::invalid_argument, "Invalid rule id");
  if (rule_id[0] == '.') return fail(Errc::invalid_argument, "Rule ids starting with '.' are reserved for the server");
  Rule r;
  r.rule_id = std::string(rule_id);
  const JsonValue* a = body.get("actions");
  if (!a || !valid_actions(*a)) return fail(Errc::invalid_argument, "actions must be an array of actions");
  r.actions = *a;
  if (kind == PushRuleKind::override_rule || kind == PushRuleKind::underride) {
    const JsonValue* c = body.get("conditions");
    r.conditions = c ? *c : JsonValue::array();
    if (!valid_conditions(r.conditions)) return fail(Errc::invalid_argument, "Invalid conditions");
  } else if (kind == PushRuleKind::content) {
    const JsonValue* p = body.get("pattern");
    if (!p || !p->is_string() || p->as_string().empty() || p->as_string().size() > kMaxPushPatternBytes)
      return fail(Errc::invalid_argument, "Content rules need a pattern");
    r.pattern = p->as_string();
  }
  auto& rules = rules_[idx(kind)];
  if (Rule* old = find(kind, rule_id)) r.enabled = old->enabled;  // PUT keeps the enabled flag
  std::erase_if(rules, [&](const Rule& x) { return x.rule_id == rule_id; });
  std::size_t user_count = std::count_if(rules.begin(), rules.end(), [](const Rule& x) { return !x.is_default; });
  if (user_count >= kMaxPushRulesPerKind) return fail(Errc::resource_exhausted, "Too many push rules");
  // Default position: the end of the user rules (below the user's other rules).
  std::size_t first_user = kind == PushRuleKind::override_rule ? 1 : 0;
  std::size_t at = first_user + user_count;
  for (auto [name, offset] : {std::pair{before, 0}, std::pair{after, 1}}) {
    if (name.empty()) continue;
    auto it = std::find_if(rules.begin(), rules.end(), [&](const Rule& x) { return x.rule_id == name; });
    if (it == rules.end()) return fail(Errc::not_found, "The before/after rule does not exist");
    if (it->is_default) return fail(Errc::invalid_argument, "before/after must name a user rule");
    at = static_cast<std::size_t>(it - rules.begin()) + offset;
  }
  rules.insert(rules.begin() + static_cast<std::ptrdiff_t>(at), std::move(r));
  return ok();
}

Result<void> PushRuleSet::remove(PushRuleKind kind, std::string_view rule_id) {
  const Rule* r = find(kind, rule_id);
  if (!r) return fail(Errc::not_found, "No such push rule");
  if (r->is_default) return fail(Errc::permission_denied, "Server-default rules cannot be deleted");
  std::erase_if(rules_[idx(kind)], [&](const Rule& x) { return x.rule_id == rule_id; });
  return ok();
}

Result<void> PushRuleSet::set_enabled(PushRuleKind kind, std::string_view rule_id, bool enabled) {
  Rule* r = find(kind, rule_id);
  if (!r) return fail(Errc::not_found, "No such push rule");
  r->enabled = enabled;
  return ok();
}

Result<void> PushRuleSet::set_actions(PushRuleKind kind, std::string_view rule_id, const JsonValue& acts) {
  Rule* r = find(kind, rule_id);
  if (!r) return fail(Errc::not_found, "No such push rule");
  if (!valid_actions(acts)) return fail(Errc::invalid_argument, "actions must be an array of actions");
  r->actions = acts;
  return ok();
}

bool PushRuleSet::matches(PushRuleKind kind, const Rule& r, const JsonValue& event, const PushContext& ctx) const {
  switch (kind) {
    case PushRuleKind::room: return event.string_at("room_id") == r.rule_id;
    case PushRuleKind::sender: return event.string_at("sender") == r.rule_id;
    case PushRuleKind::content: {
      const JsonValue* body = property_at(event, "content.body");
      return body && body->is_string() && glob_matches(r.pattern, body->as_string(), true);
    }
    default: break;
  }
  if (!r.conditions.is_array()) return true;
  for (const auto& c : r.conditions.items()) {
    std::string_view k = c.string_at("kind");
    if (k == "event_match") {
      const JsonValue* pattern = c.get("pattern");
      std::string_view key = c.string_at("key");
      const JsonValue* v = property_at(event, key);
      if (!pattern || !pattern->is_string() || !v || !v->is_string()) return false;
      if (!glob_matches(pattern->as_string(), v->as_string(), key == "content.body")) return false;
    } else if (k == "event_property_is" || k == "event_property_contains") {
      const JsonValue* want = c.get("value");
      const JsonValue* v = property_at(event, c.string_at("key"));
      if (!want || !scalar(*want) || !v) return false;
      if (k == "event_property_is") {
        if (!scalar(*v) || !(*v == *want)) return false;
      } else {
        if (!v->is_array() || std::none_of(v->items().begin(), v->items().end(),
                                           [&](const JsonValue& x) { return scalar(x) && x == *want; }))
          return false;
      }
    } else if (k == "contains_display_name") {
      const JsonValue* body = property_at(event, "content.body");
      if (ctx.display_name.empty() || !body || !body->is_string() ||
          !glob_matches(ctx.display_name, body->as_string(), true, true))
        return false;
    } else if (k == "room_member_count") {
      std::string_view is = c.string_at("is");
      std::string_view op = "==";
      for (std::string_view o : {"==", "<=", ">=", "<", ">"})
        if (is.starts_with(o)) {
          op = o;
          is.remove_prefix(o.size());
          break;
        }
      if (is.empty() || is.size() > 15 || !std::all_of(is.begin(), is.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        return false;
      std::int64_t n = std::stoll(std::string(is));
      std::int64_t m = ctx.member_count;
      bool okay = op == "==" ? m == n : op == "<" ? m < n : op == ">" ? m > n : op == "<=" ? m <= n : m >= n;
      if (!okay) return false;
    } else if (k == "sender_notification_permission") {
      if (!ctx.sender_may_notify || !ctx.sender_may_notify(c.string_at("key"))) return false;
    } else {
      return false;  // unknown conditions never match
    }
  }
  return true;
}

PushOutcome PushRuleSet::evaluate(const JsonValue& event, const PushContext& ctx) const {
  PushOutcome out;
  if (event.string_at("sender") == user_id_) return out;
  for (auto kind : kKinds) {
    for (const auto& r : rules_[idx(kind)]) {
      if (!r.enabled || !matches(kind, r, event, ctx)) continue;
      out.rule_id = r.rule_id;
      for (const auto& a : r.actions.items()) {
        if (a.is_string() && a.as_string() == "notify") out.notify = true;
        if (a.is_object() && a.string_at("set_tweak") == "highlight") {
          const JsonValue* v = a.get("value");
          out.highlight = !v || (v->is_bool() && v->as_bool());
        }
        if (a.is_object() && !a.string_at("set_tweak").empty()) {
          const JsonValue* v = a.get("value");
          out.tweaks.set(std::string(a.string_at("set_tweak")), v ? *v : JsonValue::boolean(true));
        }
      }
      return out;
    }
  }
  return out;
}

}  // namespace hearth::matrix
