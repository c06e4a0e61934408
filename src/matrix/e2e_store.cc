#include "matrix/e2e_store.h"

namespace hearth::matrix::e2e {

Result<bool> put_device_keys(store::Transaction& tx, const std::string& user, const std::string& device,
                             const std::string& json) {
  auto row = tx.query_one("SELECT json FROM matrix_device_keys WHERE user_id = ? AND device_id = ?", {user, device});
  if (!row) return tl::unexpected(row.error());
  if (*row && (*row)->text(0) == json) return false;
  auto up = tx.exec(
      "INSERT INTO matrix_device_keys(user_id, device_id, json) VALUES (?, ?, ?) "
      "ON CONFLICT(user_id, device_id) DO UPDATE SET json = excluded.json",
      {user, device, json});
  if (!up) return tl::unexpected(up.error());
  return true;
}

Result<std::map<std::string, std::string>> device_keys(store::Transaction& tx, const std::string& user) {
  std::map<std::string, std::string> out;
  auto q = tx.query("SELECT device_id, json FROM matrix_device_keys WHERE user_id = ?", {user},
                    [&](const store::Row& r) { out[std::string(r.text(0))] = std::string(r.text(1)); });
  if (!q) return tl::unexpected(q.error());
  return out;
}

namespace {
// "<algorithm>:<key id>" split at the first ':'; false when malformed.
bool split_key_id(const std::string& full, std::string& algorithm, std::string& id) {
  auto colon = full.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == full.size() || full.size() > 255) return false;
  algorithm = full.substr(0, colon);
  id = full.substr(colon + 1);
  return true;
}
}  // namespace

Result<void> add_one_time_keys(store::Transaction& tx, const std::string& user, const std::string& device,
                               const JsonValue& keys) {
  for (const auto& [full, key] : keys.members()) {
    std::string algorithm, id;
    if (!split_key_id(full, algorithm, id)) return fail(Errc::invalid_argument, "One-time key ids are <algorithm>:<id>");
    auto r = tx.exec(
        "INSERT INTO matrix_one_time_keys(user_id, device_id, algorithm, key_id, json) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        {user, device, algorithm, id, canonical_json(key)});
    if (!r) return tl::unexpected(r.error());
  }
  return ok();
}

Result<void> set_fallback_keys(store::Transaction& tx, const std::string& user, const std::string& device,
                               const JsonValue& keys) {
  for (const auto& [full, key] : keys.members()) {
    std::string algorithm, id;
    if (!split_key_id(full, algorithm, id)) return fail(Errc::invalid_argument, "Fallback key ids are <algorithm>:<id>");
    std::string json = canonical_json(key);
    // Re-uploading the same key keeps its "used" flag; a new key is unused.
    auto r = tx.exec(
        "INSERT INTO matrix_fallback_keys(user_id, device_id, algorithm, key_id, json, used) VALUES (?, ?, ?, ?, ?, 0) "
        "ON CONFLICT(user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, json = excluded.json, "
        "used = CASE WHEN key_id = excluded.key_id AND json = excluded.json THEN used ELSE 0 END",
        {user, device, algorithm, id, json});
    if (!r) return tl::unexpected(r.error());
  }
  return ok();
}

Result<std::map<std::string, std::int64_t>> one_time_key_counts(store::Transaction& tx, const std::string& user,
                                                                const std::string& device) {
  std::map<std::string, std::int64_t> out;
  auto q = tx.query(
      "SELECT algorithm, COUNT(*) FROM matrix_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
      {user, device}, [&](const store::Row& r) { out[std::string(r.text(0))] = r.integer(1); });
  if (!q) return tl::unexpected(q.error());
  return out;
}

Result<std::vector<std::string>> unused_fallback_key_types(store::Transaction& tx, const std::string& user,
                                                           const std::string& device) {
  std::vector<std::string> out;
  auto q = tx.query(
      "SELECT algorithm FROM matrix_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm",
      {user, device}, [&](const store::Row& r) { out.emplace_back(r.text(0)); });
  if (!q) return tl::unexpected(q.error());
  return out;
}

Result<std::optional<ClaimedKey>> claim_key(store::Transaction& tx, const std::string& user, const std::string& device,
                                            const std::string& algorithm) {
  auto row = tx.query_one(
      "SELECT key_id, json FROM matrix_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? "
      "ORDER BY key_id LIMIT 1",
      {user, device, algorithm});
  if (!row) return tl::unexpected(row.error());
  if (*row) {
    ClaimedKey k{algorithm + ":" + std::string((*row)->text(0)), std::string((*row)->text(1))};
    auto del = tx.exec(
        "DELETE FROM matrix_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
        {user, device, algorithm, std::string((*row)->text(0))});
    if (!del) return tl::unexpected(del.error());
    return std::optional<ClaimedKey>(std::move(k));
  }
  auto fb = tx.query_one(
      "SELECT key_id, json FROM matrix_fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?",
      {user, device, algorithm});
  if (!fb) return tl::unexpected(fb.error());
  if (!*fb) return std::optional<ClaimedKey>();
  auto used = tx.exec("UPDATE matrix_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                      {user, device, algorithm});
  if (!used) return tl::unexpected(used.error());
  return std::optional<ClaimedKey>(ClaimedKey{algorithm + ":" + std::string((*fb)->text(0)), std::string((*fb)->text(1))});
}

Result<void> forget_device(store::Transaction& tx, const std::string& user, const std::string& device) {
  for (auto sql : {"DELETE FROM matrix_device_keys WHERE user_id = ? AND device_id = ?",
                   "DELETE FROM matrix_one_time_keys WHERE user_id = ? AND device_id = ?",
                   "DELETE FROM matrix_fallback_keys WHERE user_id = ? AND device_id = ?",
                   "DELETE FROM matrix_to_device WHERE user_id = ? AND device_id = ?"})
    if (auto r = tx.exec(sql, {user, device}); !r) return tl::unexpected(r.error());
  return ok();
}

Result<std::int64_t> bump_device_list(store::Transaction& tx, const std::string& user) {
  auto pos = tx.exec(
      "INSERT INTO matrix_positions(name, value) VALUES ('device_lists', 1) "
      "ON CONFLICT(name) DO UPDATE SET value = value + 1");
  if (!pos) return tl::unexpected(pos.error());
  auto now = device_list_position(tx);
  if (!now) return now;
  auto up = tx.exec(
      "INSERT INTO matrix_device_lists(user_id, position) VALUES (?, ?) "
      "ON CONFLICT(user_id) DO UPDATE SET position = excluded.position",
      {user, *now});
  if (!up) return tl::unexpected(up.error());
  return *now;
}

Result<std::int64_t> device_list_position(store::Transaction& tx) {
  auto row = tx.query_one("SELECT value FROM matrix_positions WHERE name = 'device_lists'");
  if (!row) return tl::unexpected(row.error());
  return *row ? (*row)->integer(0) : 0;
}

Result<DeviceListChanges> device_list_changes(store::Transaction& tx, const std::string& user,
                                              std::int64_t since_stream, std::int64_t since_position) {
  DeviceListChanges out;
  // Everyone sharing a joined room with the user now.
  std::set<std::string> sharing;
  auto q = tx.query(
      "SELECT DISTINCT b.user_id FROM matrix_members a JOIN matrix_members b ON a.room_id = b.room_id "
      "WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join'",
      {user}, [&](const store::Row& r) { sharing.emplace(r.text(0)); });
  if (!q) return tl::unexpected(q.error());
  sharing.insert(user);
  // Their key or device changes.
  q = tx.query("SELECT user_id FROM matrix_device_lists WHERE position > ?", {since_position},
               [&](const store::Row& r) {
                 std::string u(r.text(0));
                 if (sharing.count(u)) out.changed.insert(std::move(u));
               });
  if (!q) return tl::unexpected(q.error());
  // Membership changes since the token in rooms the user is (or was) in.
  q = tx.query(
      "SELECT b.user_id, b.membership, b.stream, a.membership, a.stream FROM matrix_members a "
      "JOIN matrix_members b ON a.room_id = b.room_id "
      "WHERE a.user_id = ? AND (b.stream > ? OR a.stream > ?) AND b.user_id <> ?",
      {user, since_stream, since_stream, user}, [&](const store::Row& r) {
        std::string other(r.text(0));
        bool other_joined = r.text(1) == "join", me_joined = r.text(3) == "join";
        bool other_changed = r.integer(2) > since_stream, me_changed = r.integer(4) > since_stream;
        if (sharing.count(other)) {
          // Newly shared: the other joined my room, or I joined theirs.
          if ((other_joined && other_changed && me_joined) || (me_joined && me_changed && other_joined))
            out.changed.insert(other);
        } else if ((other_changed && !other_joined) || (me_changed && !me_joined)) {
          out.left.insert(other);
        }
      });
  if (!q) return tl::unexpected(q.error());
  return out;
}

Result<bool> claim_to_device_txn(store::Transaction& tx, const std::string& sender, const std::string& sender_device,
                                 const std::string& txn_id) {
  auto r = tx.exec(
      "INSERT INTO matrix_to_device_txns(sender, sender_device, txn_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
      {sender, sender_device, txn_id});
  if (!r) return tl::unexpected(r.error());
  return *r > 0;
}

Result<void> enqueue_to_device(store::Transaction& tx, const std::string& user, const std::string& device,
                               const std::string& sender, const std::string& type, const std::string& content) {
  auto r = tx.exec("INSERT INTO matrix_to_device(user_id, device_id, sender, type, content) VALUES (?, ?, ?, ?, ?)",
                   {user, device, sender, type, content});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<std::vector<ToDevice>> pending_to_device(store::Transaction& tx, const std::string& user,
                                                const std::string& device, std::int64_t after, int limit) {
  std::vector<ToDevice> out;
  auto q = tx.query(
      "SELECT id, sender, type, content FROM matrix_to_device WHERE user_id = ? AND device_id = ? AND id > ? "
      "ORDER BY id LIMIT ?",
      {user, device, after, static_cast<std::int64_t>(limit)}, [&](const store::Row& r) {
        out.push_back({r.integer(0), std::string(r.text(1)), std::string(r.text(2)), std::string(r.text(3))});
      });
  if (!q) return tl::unexpected(q.error());
  return out;
}

Result<std::int64_t> ack_to_device(store::Transaction& tx, const std::string& user, const std::string& device,
                                   std::int64_t upto) {
  return tx.exec("DELETE FROM matrix_to_device WHERE user_id = ? AND device_id = ? AND id <= ?", {user, device, upto});
}

Result<std::optional<std::string>> cross_signing_key(store::Transaction& tx, const std::string& user,
                                                     const std::string& key_type) {
  auto row = tx.query_one("SELECT json FROM matrix_cross_signing WHERE user_id = ? AND key_type = ?", {user, key_type});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(std::string((*row)->text(0)));
}

Result<void> put_cross_signing_key(store::Transaction& tx, const std::string& user, const std::string& key_type,
                                   const std::string& json) {
  auto r = tx.exec(
      "INSERT INTO matrix_cross_signing(user_id, key_type, json) VALUES (?, ?, ?) "
      "ON CONFLICT(user_id, key_type) DO UPDATE SET json = excluded.json",
      {user, key_type, json});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

bool backup_key_is_better(const JsonValue& candidate, const JsonValue& existing) {
  auto verified = [](const JsonValue& k) {
    const JsonValue* v = k.get("is_verified");
    return v && v->is_bool() && v->as_bool();
  };
  auto number = [](const JsonValue& k, std::string_view field) {
    const JsonValue* v = k.get(field);
    return v && v->is_int() ? v->as_int() : kMaxSafeInteger;
  };
  if (verified(candidate) != verified(existing)) return verified(candidate);
  if (number(candidate, "first_message_index") != number(existing, "first_message_index"))
    return number(candidate, "first_message_index") < number(existing, "first_message_index");
  return number(candidate, "forwarded_count") < number(existing, "forwarded_count");
}

}  // namespace hearth::matrix::e2e
