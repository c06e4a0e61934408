#include "cryptpad/admin.h"

#include "core/clock.h"
#include "core/json.h"
#include "store/store.h"

namespace hearth::cryptpad {

namespace {
tl::unexpected<std::string> err(std::string code) { return tl::unexpected<std::string>(std::move(code)); }
}  // namespace

CryptpadAdmin::CryptpadAdmin(store::Store& store, Clock& clock, std::vector<std::string> configured_admins,
                             std::int64_t default_limit)
    : store_(store), clock_(clock), configured_default_(default_limit), default_limit_(default_limit) {
  for (auto& k : configured_admins)
    if (auto c = canonical_key(k)) configured_.insert(*c);
}

std::optional<std::string> CryptpadAdmin::canonical_key(std::string_view text) {
  if (!text.empty() && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
    // The key itself may contain '/': take the last 44 characters.
    if (text.size() < 44) return std::nullopt;
    text = text.substr(text.size() - 44);
  }
  std::string key(text);
  for (auto& c : key)
    if (c == '-') c = '/';
  if (!is_valid_public_key(key)) return std::nullopt;
  return key;
}

Result<void> CryptpadAdmin::load() {
  std::vector<std::pair<std::string, std::string>> rows;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto q = tx.query("SELECT command, args FROM cryptpad_decrees ORDER BY seq", {},
                      [&](const store::Row& row) { rows.emplace_back(row.text(0), row.text(1)); });
    if (!q) return tl::unexpected(q.error());
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  std::lock_guard lock(mu_);
  for (const auto& [command, args] : rows) (void)apply_locked(command, args);
  return ok();
}

bool CryptpadAdmin::is_admin(const std::string& key) const {
  std::lock_guard lock(mu_);
  return (configured_.count(key) && !removed_admins_.count(key)) || decreed_admins_.count(key);
}

std::vector<std::string> CryptpadAdmin::admins() const {
  std::lock_guard lock(mu_);
  std::set<std::string> all(decreed_admins_);
  for (const auto& k : configured_)
    if (!removed_admins_.count(k)) all.insert(k);
  return {all.begin(), all.end()};
}

StorageLimit CryptpadAdmin::limit_for(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = limits_.find(key);
  if (it != limits_.end()) return it->second;
  return StorageLimit{default_limit_, "", ""};
}

std::int64_t CryptpadAdmin::default_limit() const {
  std::lock_guard lock(mu_);
  return default_limit_;
}

std::string CryptpadAdmin::custom_limits_json() const {
  std::lock_guard lock(mu_);
  JsonWriter w;
  w.begin_object();
  for (const auto& [k, l] : limits_)
    w.key(k).begin_object().key("limit").value(l.limit).key("plan").value(l.plan).key("note").value(l.note)
        .key("origin").value("decree").end_object();
  w.end_object();
  return w.take();
}

tl::expected<bool, std::string> CryptpadAdmin::apply_locked(const std::string& command, const std::string& args_json) {
  auto args = parse_array(args_json, parse_limits_);
  if (!args) return err("INVALID_ARGS");
  auto key_arg = [&]() -> std::optional<std::string> {
    if (args->empty() || !(*args)[0].is_string()) return std::nullopt;
    return canonical_key((*args)[0].text);
  };
  if (command == "ADD_ADMIN_KEY" || command == "RM_ADMIN_KEY") {
    if (args->size() != 1) return err("INVALID_ARGS");
    auto key = key_arg();
    if (!key) return err("INVALID_KEY");
    bool admin = (configured_.count(*key) && !removed_admins_.count(*key)) || decreed_admins_.count(*key);
    if (command == "ADD_ADMIN_KEY") {
      if (admin) return false;
      removed_admins_.erase(*key);
      if (!configured_.count(*key)) decreed_admins_.insert(*key);
    } else {
      if (!admin) return false;
      decreed_admins_.erase(*key);
      if (configured_.count(*key)) removed_admins_.insert(*key);
    }
    return true;
  }
  if (command == "SET_QUOTA") {
    if (args->size() != 2 || (*args)[1].type != RawValue::Type::object) return err("INVALID_ARGS");
    auto key = key_arg();
    if (!key) return err("INVALID_ARGS");
    auto members = parse_object((*args)[1].raw, parse_limits_);
    if (!members) return err("INVALID_ARGS");
    StorageLimit l;
    bool has_limit = false;
    for (const auto& [k, v] : *members) {
      if (k == "limit" && v.is_integer && v.integer >= 0) {
        l.limit = v.integer;
        has_limit = true;
      } else if (k == "plan" && v.is_string()) {
        l.plan = v.text;
      } else if (k == "note" && v.is_string()) {
        l.note = v.text;
      }
    }
    if (!has_limit) return err("INVALID_ARGS");
    limits_[*key] = l;
    return true;
  }
  if (command == "RM_QUOTA") {
    if (args->size() != 1) return err("INVALID_ARGS");
    auto key = key_arg();
    if (!key) return err("INVALID_ARGS");
    if (!limits_.erase(*key)) return err("ENOENT");
    return true;
  }
  if (command == "UPDATE_DEFAULT_STORAGE") {
    if (args->size() != 1 || !(*args)[0].is_integer || (*args)[0].integer < 0) return err("INVALID_ARGS");
    if ((*args)[0].integer == default_limit_) return false;
    default_limit_ = (*args)[0].integer;
    return true;
  }
  return err("E_NOT_IMPLEMENTED");
}

tl::expected<bool, std::string> CryptpadAdmin::decree(const std::string& command, const RawValue& args,
                                                      const std::string& author) {
  std::lock_guard lock(mu_);
  // Apply to a copy first, so that a decree that cannot be stored changes nothing.
  auto saved_admins = decreed_admins_;
  auto saved_removed = removed_admins_;
  auto saved_limits = limits_;
  auto saved_default = default_limit_;
  auto changed = apply_locked(command, args.raw);
  if (!changed || !*changed) return changed;
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec("INSERT INTO cryptpad_decrees(command, args, author, time) VALUES (?, ?, ?, ?)",
                     {command, args.raw, author, clock_.now_ms()});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) {
    decreed_admins_ = std::move(saved_admins);
    removed_admins_ = std::move(saved_removed);
    limits_ = std::move(saved_limits);
    default_limit_ = saved_default;
    return err("E_STORAGE");
  }
  return true;
}

}  // namespace hearth::cryptpad
