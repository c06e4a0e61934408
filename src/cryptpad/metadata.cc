#include "cryptpad/metadata.h"

#include <algorithm>

#include "core/json.h"

namespace hearth::cryptpad {

Result<MetadataObject> MetadataObject::parse(std::string_view json, const ParseLimits& limits) {
  auto obj = parse_object(json, limits);
  if (!obj) return tl::unexpected(obj.error());
  MetadataObject m;
  for (auto& [k, v] : *obj) m.set(k, std::move(v.raw));
  return m;
}

const std::string* MetadataObject::get(std::string_view key) const {
  for (const auto& [k, v] : fields_)
    if (k == key) return &v;
  return nullptr;
}

void MetadataObject::set(std::string_view key, std::string raw_json) {
  for (auto& [k, v] : fields_)
    if (k == key) {
      v = std::move(raw_json);
      return;
    }
  fields_.emplace_back(std::string(key), std::move(raw_json));
}

void MetadataObject::erase(std::string_view key) {
  fields_.erase(std::remove_if(fields_.begin(), fields_.end(), [&](const auto& f) { return f.first == key; }),
                fields_.end());
}

std::string MetadataObject::json() const {
  JsonWriter w;
  w.begin_object();
  for (const auto& [k, v] : fields_) w.key(k).raw(v);
  w.end_object();
  return w.take();
}

std::vector<std::string> MetadataObject::strings(std::string_view key, const ParseLimits& limits) const {
  std::vector<std::string> out;
  const std::string* raw = get(key);
  if (!raw) return out;
  auto arr = parse_array(*raw, limits);
  if (!arr) return out;
  for (auto& v : *arr)
    if (v.is_string()) out.push_back(std::move(v.text));
  return out;
}

void MetadataObject::set_strings(std::string_view key, const std::vector<std::string>& values) {
  JsonWriter w;
  w.begin_array();
  for (const auto& v : values) w.value(v);
  w.end_array();
  set(key, w.take());
}

bool MetadataObject::boolean(std::string_view key) const {
  const std::string* raw = get(key);
  return raw && *raw == "true";
}

bool ChannelMeta::is_owner(const std::string& key) const {
  return std::find(owners.begin(), owners.end(), key) != owners.end();
}
bool ChannelMeta::is_allowed(const std::string& key) const {
  return std::find(allowed.begin(), allowed.end(), key) != allowed.end();
}

ChannelMeta ChannelMeta::from_record(const ChannelRecord& record, const ParseLimits& limits) {
  ChannelMeta m;
  m.exists = true;
  m.json = record.metadata;
  m.expire = record.expire;
  m.deleted = record.deleted;
  auto obj = MetadataObject::parse(record.metadata, limits);
  if (!obj) return m;
  if (const std::string* vk = obj->get("validateKey")) {
    auto arr = parse_array("[" + *vk + "]", limits);
    if (arr && arr->size() == 1 && (*arr)[0].is_string()) m.validate_key = (*arr)[0].text;
  }
  m.owners = obj->strings("owners", limits);
  m.pending_owners = obj->strings("pending_owners", limits);
  m.allowed = obj->strings("allowed", limits);
  m.restricted = obj->boolean("restricted");
  m.selfdestruct = obj->boolean("selfdestruct");
  return m;
}

Result<ChannelMeta::Initial> ChannelMeta::initial(const std::string& channel, std::string_view client_metadata,
                                                  std::int64_t now_ms, const ParseLimits& limits) {
  MetadataObject obj;
  if (!client_metadata.empty()) {
    auto parsed = MetadataObject::parse(client_metadata, limits);
    if (!parsed) return tl::unexpected(parsed.error());
    obj = std::move(*parsed);
  }
  Initial out;
  if (const std::string* vk = obj.get("validateKey")) {
    auto arr = parse_array("[" + *vk + "]", limits);
    if (!arr || arr->size() != 1 || !(*arr)[0].is_string() || !is_valid_public_key((*arr)[0].text))
      return fail(Errc::invalid_argument, "invalid validateKey");
  }
  obj.set("channel", json_quote(channel));
  obj.set("created", std::to_string(now_ms));
  if (const std::string* ex = obj.get("expire")) {
    auto arr = parse_array("[" + *ex + "]", limits);
    // Seconds from now; past 100 years it means "never" (and would overflow in ms).
    constexpr std::int64_t kMaxExpireSeconds = std::int64_t{100} * 365 * 24 * 3600;
    if (arr && arr->size() == 1 && (*arr)[0].type == RawValue::Type::number && (*arr)[0].is_integer &&
        (*arr)[0].integer > 0 && (*arr)[0].integer <= kMaxExpireSeconds) {
      std::int64_t abs = now_ms + (*arr)[0].integer * 1000;
      obj.set("expire", std::to_string(abs));
      out.record.expire = abs;
    } else {
      obj.erase("expire");
    }
  }
  out.record.metadata = obj.json();
  out.record.created = now_ms;
  return out;
}

namespace {

bool add_unique(std::vector<std::string>& list, const std::vector<std::string>& add) {
  bool changed = false;
  for (const auto& k : add)
    if (std::find(list.begin(), list.end(), k) == list.end()) {
      list.push_back(k);
      changed = true;
    }
  return changed;
}

bool remove_all(std::vector<std::string>& list, const std::vector<std::string>& rm) {
  auto before = list.size();
  list.erase(std::remove_if(list.begin(), list.end(),
                            [&](const std::string& k) { return std::find(rm.begin(), rm.end(), k) != rm.end(); }),
             list.end());
  return list.size() != before;
}

std::optional<std::vector<std::string>> key_list(const RawValue& value, const ParseLimits& limits) {
  if (value.type != RawValue::Type::array) return std::nullopt;
  auto arr = parse_array(value.raw, limits);
  if (!arr) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& v : *arr) {
    if (!v.is_string() || v.text.size() != 44) return std::nullopt;
    out.push_back(v.text);
  }
  return out;
}

}  // namespace

tl::expected<bool, std::string> apply_metadata_command(MetadataObject& md, const std::string& command,
                                                        const RawValue& value, const std::string& author,
                                                        const ParseLimits& limits) {
  auto owners = md.strings("owners", limits);
  auto pending = md.strings("pending_owners", limits);
  auto allowed = md.strings("allowed", limits);
  const bool is_owner = std::find(owners.begin(), owners.end(), author) != owners.end();
  const bool is_pending = std::find(pending.begin(), pending.end(), author) != pending.end();

  if (command == "UPDATE_EXPIRATION") return tl::unexpected(std::string("E_NOT_IMPLEMENTED"));

  if (!is_owner) {
    // A pending owner may only accept (ADD_OWNERS [self]) or decline (RM_PENDING_OWNERS [self]).
    auto keys = key_list(value, limits);
    bool self_only = is_pending && keys && keys->size() == 1 && (*keys)[0] == author;
    if (!self_only || (command != "ADD_OWNERS" && command != "RM_PENDING_OWNERS"))
      return tl::unexpected(std::string("INSUFFICIENT_PERMISSIONS"));
  }

  bool changed = false;
  if (command == "ADD_OWNERS" || command == "RM_OWNERS" || command == "RESET_OWNERS" ||
      command == "ADD_PENDING_OWNERS" || command == "RM_PENDING_OWNERS" || command == "ADD_ALLOWED" ||
      command == "RM_ALLOWED" || command == "RESET_ALLOWED") {
    auto keys = key_list(value, limits);
    if (!keys) return tl::unexpected(std::string("EINVAL"));
    if (command == "ADD_OWNERS") {
      changed = add_unique(owners, *keys);
      changed |= remove_all(pending, *keys);
      changed |= remove_all(allowed, *keys);  // owners are never in the allow list
    } else if (command == "RM_OWNERS") {
      changed = remove_all(owners, *keys);
    } else if (command == "RESET_OWNERS") {
      changed = owners != *keys;
      owners = *keys;
      changed |= remove_all(allowed, owners);
    } else if (command == "ADD_PENDING_OWNERS") {
      std::vector<std::string> add;
      for (const auto& k : *keys)
        if (std::find(owners.begin(), owners.end(), k) == owners.end()) add.push_back(k);
      changed = add_unique(pending, add);
    } else if (command == "RM_PENDING_OWNERS") {
      changed = remove_all(pending, *keys);
    } else if (command == "ADD_ALLOWED") {
      std::vector<std::string> add;
      for (const auto& k : *keys)
        if (std::find(owners.begin(), owners.end(), k) == owners.end()) add.push_back(k);
      changed = add_unique(allowed, add);
    } else if (command == "RM_ALLOWED") {
      changed = remove_all(allowed, *keys);
    } else {  // RESET_ALLOWED: every given key that is not an owner (CryptPad keeps only owners[0]; see docs)
      std::vector<std::string> next;
      for (const auto& k : *keys)
        if (std::find(owners.begin(), owners.end(), k) == owners.end() &&
            std::find(next.begin(), next.end(), k) == next.end())
          next.push_back(k);
      changed = next != allowed;
      allowed = std::move(next);
    }
    if (changed) {
      md.set_strings("owners", owners);
      if (!pending.empty() || md.get("pending_owners")) md.set_strings("pending_owners", pending);
      if (!allowed.empty() || md.get("allowed")) md.set_strings("allowed", allowed);
      if (owners.empty() && md.boolean("restricted")) md.set("restricted", "false");
    }
    return changed;
  }
  if (command == "RESTRICT_ACCESS" || command == "ALLOW_LINE_DELETION") {
    bool flag;
    if (value.type == RawValue::Type::boolean) {
      flag = value.boolean;
    } else {
      auto arr = value.type == RawValue::Type::array ? parse_array(value.raw, limits) : Result<std::vector<RawValue>>(fail(Errc::invalid_argument, ""));
      if (!arr || arr->empty() || (*arr)[0].type != RawValue::Type::boolean) return tl::unexpected(std::string("EINVAL"));
      flag = (*arr)[0].boolean;
    }
    const char* key = command == "RESTRICT_ACCESS" ? "restricted" : "deleteLines";
    if (md.boolean(key) == flag) return false;
    md.set(key, flag ? "true" : "false");
    return true;
  }
  if (command == "ADD_MAILBOX") {
    if (value.type != RawValue::Type::object) return tl::unexpected(std::string("EINVAL"));
    auto add = parse_object(value.raw, limits);
    if (!add) return tl::unexpected(std::string("EINVAL"));
    MetadataObject mailbox;
    if (const std::string* cur = md.get("mailbox"); cur && !cur->empty() && (*cur)[0] == '{') {
      if (auto m = MetadataObject::parse(*cur, limits)) mailbox = std::move(*m);
    }
    for (auto& [k, v] : *add) {
      if (k.size() != 44 || !v.is_string()) return tl::unexpected(std::string("EINVAL"));
      if (mailbox.get(k) && *mailbox.get(k) == v.raw) continue;
      mailbox.set(k, v.raw);
      changed = true;
    }
    if (changed) md.set("mailbox", mailbox.json());
    return changed;
  }
  if (command == "RM_MAILBOX") {
    auto keys = key_list(value, limits);
    if (!keys) return tl::unexpected(std::string("EINVAL"));
    const std::string* cur = md.get("mailbox");
    if (!cur || cur->empty() || (*cur)[0] != '{') return false;
    auto mailbox = MetadataObject::parse(*cur, limits);
    if (!mailbox) return false;
    for (const auto& k : *keys)
      if (mailbox->get(k)) {
        mailbox->erase(k);
        changed = true;
      }
    if (changed) md.set("mailbox", mailbox->json());
    return changed;
  }
  return tl::unexpected(std::string("UNSUPPORTED"));
}

}  // namespace hearth::cryptpad
