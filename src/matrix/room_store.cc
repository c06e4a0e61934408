#include "matrix/room_store.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "core/json.h"
#include "matrix/auth_rules.h"
#include "matrix/relations.h"
#include "matrix/search.h"

namespace hearth::matrix {

const std::vector<store::Migration>& matrix_migrations() {
  static const std::vector<store::Migration> list = {
      {1, "rooms, events, state, memberships, aliases, filters", R"sql(
CREATE TABLE matrix_rooms(
  room_id TEXT PRIMARY KEY,
  version TEXT NOT NULL,
  last_event_id TEXT NOT NULL DEFAULT '',
  depth INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL);
CREATE TABLE matrix_events(
  stream INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  room_id TEXT NOT NULL,
  type TEXT NOT NULL,
  state_key TEXT,
  sender TEXT NOT NULL,
  ts INTEGER NOT NULL,
  pdu TEXT NOT NULL,
  client TEXT NOT NULL,
  unsigned_extra TEXT NOT NULL DEFAULT '',
  txn_device TEXT,
  txn_id TEXT);
CREATE INDEX matrix_events_room ON matrix_events(room_id, stream);
CREATE UNIQUE INDEX matrix_events_txn ON matrix_events(room_id, sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;
CREATE TABLE matrix_state(
  room_id TEXT NOT NULL,
  type TEXT NOT NULL,
  state_key TEXT NOT NULL,
  stream INTEGER NOT NULL,
  PRIMARY KEY(room_id, type, state_key)) WITHOUT ROWID;
CREATE TABLE matrix_members(
  room_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  membership TEXT NOT NULL,
  stream INTEGER NOT NULL,
  PRIMARY KEY(room_id, user_id)) WITHOUT ROWID;
CREATE INDEX matrix_members_user ON matrix_members(user_id);
CREATE TABLE matrix_aliases(
  alias TEXT PRIMARY KEY,
  room_id TEXT NOT NULL,
  creator TEXT NOT NULL);
CREATE TABLE matrix_filters(
  filter_id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL,
  json TEXT NOT NULL);
)sql"},
      {2, "profiles and account data", R"sql(
CREATE TABLE matrix_profiles(
  user_id TEXT PRIMARY KEY,
  displayname TEXT,
  avatar_url TEXT);
CREATE TABLE matrix_account_data(
  user_id TEXT NOT NULL,
  room_id TEXT NOT NULL,
  type TEXT NOT NULL,
  content TEXT NOT NULL,
  position INTEGER NOT NULL,
  PRIMARY KEY(user_id, room_id, type)) WITHOUT ROWID;
CREATE INDEX matrix_account_data_position ON matrix_account_data(user_id, position);
CREATE TABLE matrix_positions(
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL);
)sql"},
      {3, "receipts", R"sql(
CREATE TABLE matrix_receipts(
  room_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  type TEXT NOT NULL,
  event_id TEXT NOT NULL,
  ts INTEGER NOT NULL,
  serial INTEGER NOT NULL,
  PRIMARY KEY(room_id, user_id, type)) WITHOUT ROWID;
CREATE INDEX matrix_receipts_serial ON matrix_receipts(room_id, serial);
)sql"},
      {4, "room directory", R"sql(
CREATE TABLE matrix_directory(
  room_id TEXT PRIMARY KEY,
  added_ms INTEGER NOT NULL);
)sql"},
      {5, "end-to-end encryption: device keys, one-time and fallback keys, to-device messages, device list changes, cross-signing keys", R"sql(
CREATE TABLE matrix_device_keys(
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  json TEXT NOT NULL,
  PRIMARY KEY(user_id, device_id)) WITHOUT ROWID;
CREATE TABLE matrix_one_time_keys(
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  key_id TEXT NOT NULL,
  json TEXT NOT NULL,
  PRIMARY KEY(user_id, device_id, algorithm, key_id)) WITHOUT ROWID;
CREATE TABLE matrix_fallback_keys(
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  key_id TEXT NOT NULL,
  json TEXT NOT NULL,
  used INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(user_id, device_id, algorithm)) WITHOUT ROWID;
CREATE TABLE matrix_to_device(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  type TEXT NOT NULL,
  content TEXT NOT NULL);
CREATE INDEX matrix_to_device_target ON matrix_to_device(user_id, device_id, id);
CREATE TABLE matrix_to_device_txns(
  sender TEXT NOT NULL,
  sender_device TEXT NOT NULL,
  txn_id TEXT NOT NULL,
  PRIMARY KEY(sender, sender_device, txn_id)) WITHOUT ROWID;
CREATE TABLE matrix_device_lists(
  user_id TEXT PRIMARY KEY,
  position INTEGER NOT NULL);
CREATE INDEX matrix_device_lists_position ON matrix_device_lists(position);
CREATE TABLE matrix_cross_signing(
  user_id TEXT NOT NULL,
  key_type TEXT NOT NULL,
  json TEXT NOT NULL,
  PRIMARY KEY(user_id, key_type)) WITHOUT ROWID;
)sql"},
      {6, "server-side room key backup", R"sql(
CREATE TABLE matrix_backup_versions(
  user_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  algorithm TEXT NOT NULL,
  auth_data TEXT NOT NULL,
  etag INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(user_id, version)) WITHOUT ROWID;
CREATE TABLE matrix_backup_keys(
  user_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  room_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  json TEXT NOT NULL,
  PRIMARY KEY(user_id, version, room_id, session_id)) WITHOUT ROWID;
)sql"},
      {7, "media repository", R"sql(
CREATE TABLE matrix_media(
  media_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL,
  filename TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE INDEX matrix_media_user ON matrix_media(user_id);
)sql"},
      {8, "push rules and pushers", R"sql(
CREATE TABLE matrix_push_rules(
  user_id TEXT PRIMARY KEY,
  json TEXT NOT NULL);
CREATE TABLE matrix_pushers(
  user_id TEXT NOT NULL,
  app_id TEXT NOT NULL,
  pushkey TEXT NOT NULL,
  json TEXT NOT NULL,
  PRIMARY KEY(app_id, pushkey, user_id)) WITHOUT ROWID;
CREATE INDEX matrix_pushers_user ON matrix_pushers(user_id);
)sql"},
      {9, "login tokens (m.login.token)", R"sql(
CREATE TABLE matrix_login_tokens(
  token_hash TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  expires_ms INTEGER NOT NULL);
)sql"},
      {10, "federation: remote events that were rejected or soft-failed (incident I19)", R"sql(
CREATE TABLE matrix_unaccepted_events(
  event_id TEXT PRIMARY KEY,
  room_id TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  pdu TEXT NOT NULL,
  received_ms INTEGER NOT NULL);
CREATE INDEX matrix_unaccepted_events_room ON matrix_unaccepted_events(room_id);
)sql"},
      {11, "federation: outgoing PDUs per destination", R"sql(
CREATE TABLE matrix_federation_outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  destination TEXT NOT NULL,
  pdu TEXT NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE INDEX matrix_federation_outbox_destination ON matrix_federation_outbox(destination, id);
)sql"},
      {12, "event relations (threads, edits, references), existing events included", R"sql(
CREATE TABLE matrix_relations(
  event_id TEXT PRIMARY KEY,
  parent_id TEXT NOT NULL,
  rel_type TEXT NOT NULL,
  room_id TEXT NOT NULL,
  stream INTEGER NOT NULL,
  sender TEXT NOT NULL,
  type TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX matrix_relations_parent ON matrix_relations(parent_id, rel_type, stream);
CREATE INDEX matrix_relations_room ON matrix_relations(room_id, rel_type, stream);
INSERT OR IGNORE INTO matrix_relations(event_id, parent_id, rel_type, room_id, stream, sender, type)
  SELECT event_id, json_extract(client, '$.content."m.relates_to".event_id'),
         json_extract(client, '$.content."m.relates_to".rel_type'), room_id, stream, sender, type
  FROM matrix_events
  WHERE json_type(client, '$.content."m.relates_to".event_id') = 'text'
    AND json_type(client, '$.content."m.relates_to".rel_type') = 'text'
    AND json_extract(client, '$.content."m.relates_to".event_id') <> ''
    AND json_extract(client, '$.content."m.relates_to".rel_type') <> '';
)sql"},
      {13, "full-text search of content.body/name/topic (older events indexed in the background)", R"sql(
CREATE VIRTUAL TABLE matrix_search USING fts5(body, name, topic, room_id UNINDEXED,
  tokenize = 'unicode61 remove_diacritics 2');
INSERT INTO matrix_positions(name, value)
  VALUES ('search_backfill', (SELECT COALESCE(MAX(stream), 0) + 1 FROM matrix_events))
  ON CONFLICT(name) DO UPDATE SET value = excluded.value;
)sql"},
      {14, "threaded read receipts: thread_id ('' for unthreaded) in the receipt key", R"sql(
CREATE TABLE matrix_receipts_threaded(
  room_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  type TEXT NOT NULL,
  thread_id TEXT NOT NULL DEFAULT '',
  event_id TEXT NOT NULL,
  ts INTEGER NOT NULL,
  serial INTEGER NOT NULL,
  PRIMARY KEY(room_id, user_id, type, thread_id)) WITHOUT ROWID;
INSERT INTO matrix_receipts_threaded(room_id, user_id, type, thread_id, event_id, ts, serial)
  SELECT room_id, user_id, type, '', event_id, ts, serial FROM matrix_receipts;
DROP TABLE matrix_receipts;
ALTER TABLE matrix_receipts_threaded RENAME TO matrix_receipts;
CREATE INDEX matrix_receipts_serial ON matrix_receipts(room_id, serial);
)sql"},
      {15, "a room's state events by type and key (history visibility and one member's past memberships without scanning the room)", R"sql(
CREATE INDEX matrix_events_state ON matrix_events(room_id, type, state_key, stream) WHERE state_key IS NOT NULL;
)sql"},
  };
  return list;
}

std::string render_event(const StoredEvent& e, std::string_view user_id, std::string_view device_id,
                         std::int64_t now_ms) {
  std::string out = e.client_json;
  out.pop_back();  // the closing '}'
  out += ",\"unsigned\":{";
  out += fmt::format("\"age\":{}", std::max<std::int64_t>(0, now_ms - e.ts));
  if (!e.unsigned_extra.empty()) out += "," + e.unsigned_extra;
  if (!e.bundled.empty()) out += ",\"m.relations\":" + e.bundled;
  if (!e.txn_id.empty() && e.sender == user_id && e.txn_device == device_id) {
    out += ",\"transaction_id\":";
    std::string_view txn = e.txn_id;
    if (e.type == "m.room.redaction" && txn.substr(0, 7) == "redact:") txn.remove_prefix(7);  // own namespace
    json_escape_to(out, txn);
  }
  out += "}}";
  return out;
}

const JsonValue* RoomAppender::lookup(std::string_view type, std::string_view key) const {
  auto it = state.find(std::make_pair(std::string(type), std::string(key)));
  return it == state.end() ? nullptr : &it->second.pdu;
}

std::string stored_event_columns(std::string_view alias) {
  std::string prefix = alias.empty() ? std::string() : std::string(alias) + ".";
  return fmt::format(
      "{0}stream, {0}event_id, {0}room_id, {0}type, {0}state_key, {0}sender, {0}ts, {0}client, {0}unsigned_extra, "
      "{0}txn_device, {0}txn_id",
      prefix);
}

JsonValue stored_event_content(const StoredEvent& e) {
  auto v = parse_json(e.client_json, {std::size_t{1} << 24, 128});
  const JsonValue* c = v ? v->get("content") : nullptr;
  return c ? *c : JsonValue::object();
}

StoredEvent read_stored_event(const store::Row& r) {
  StoredEvent e;
  e.stream = r.integer(0);
  e.event_id = std::string(r.text(1));
  e.room_id = std::string(r.text(2));
  e.type = std::string(r.text(3));
  if (!r.is_null(4)) e.state_key = std::string(r.text(4));
  e.sender = std::string(r.text(5));
  e.ts = r.integer(6);
  e.client_json = std::string(r.text(7));
  e.unsigned_extra = std::string(r.text(8));
  e.txn_device = std::string(r.text(9));
  e.txn_id = std::string(r.text(10));
  return e;
}

namespace {

std::string sql_events(std::string_view tail) {
  return fmt::format("SELECT {} FROM matrix_events {}", stored_event_columns(), tail);
}

}  // namespace

RoomAppender RoomStore::new_room(std::string room_id, RoomVersion version) const {
  RoomAppender r;
  r.room_id = std::move(room_id);
  r.version = version;
  return r;
}

Result<RoomAppender> RoomStore::load_room(store::Transaction& tx, std::string_view room_id) const {
  auto row = tx.query_one("SELECT version, last_event_id, depth FROM matrix_rooms WHERE room_id = ?", {room_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail(Errc::not_found, "unknown room");
  auto version = parse_room_version((*row)->text(0));
  if (!version) return fail(Errc::corrupt, "room with an unknown version");
  RoomAppender room;
  room.room_id = std::string(room_id);
  room.version = *version;
  room.last_event_id = std::string((*row)->text(1));
  room.depth = (*row)->integer(2);
  room.exists = true;
  Result<void> bad = ok();
  // Two key ranges around the member rows: `type <> 'm.room.member'` would walk all of
  // them (10,000 in a big room) on every event appended.
  auto r = tx.query(
      "SELECT s.type, s.state_key, e.event_id, e.pdu FROM matrix_state s JOIN matrix_events e ON e.stream = s.stream "
      "WHERE s.room_id = ? AND s.type < 'm.room.member' UNION ALL "
      "SELECT s.type, s.state_key, e.event_id, e.pdu FROM matrix_state s JOIN matrix_events e ON e.stream = s.stream "
      "WHERE s.room_id = ? AND s.type > 'm.room.member'",
      {room_id, room_id}, [&](const store::Row& row) {
        auto pdu = parse_json(row.text(3), {std::size_t{1} << 24, 128});
        if (!pdu) {
          bad = fail(Errc::corrupt, "stored event is not JSON");
          return;
        }
        room.state[{std::string(row.text(0)), std::string(row.text(1))}] = {std::string(row.text(2)), std::move(*pdu)};
      });
  if (!r) return tl::unexpected(r.error());
  if (!bad) return tl::unexpected(bad.error());
  return room;
}

namespace {

// Member events are loaded on demand (a big room has many), everything else up front.
Result<void> load_member(store::Transaction& tx, RoomAppender& room, std::string_view user_id) {
  auto key = std::make_pair(std::string("m.room.member"), std::string(user_id));
  if (!room.exists || room.state.count(key)) return ok();
  auto row = tx.query_one(
      "SELECT e.event_id, e.pdu FROM matrix_state s JOIN matrix_events e ON e.stream = s.stream "
      "WHERE s.room_id = ? AND s.type = 'm.room.member' AND s.state_key = ?",
      {room.room_id, user_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return ok();
  auto pdu = parse_json((*row)->text(1), {std::size_t{1} << 24, 128});
  if (!pdu) return fail(Errc::corrupt, "stored event is not JSON");
  room.state[key] = {std::string((*row)->text(0)), std::move(*pdu)};
  return ok();
}

}  // namespace

Result<AppendedEvent> RoomStore::append(store::Transaction& tx, RoomAppender& room, NewEvent ev,
                                        std::int64_t now_ms) const {
  auto built = build(tx, room, ev, now_ms);
  if (!built) return tl::unexpected(built.error());
  return append_built(tx, room, *built, ev.txn_device, ev.txn_id, now_ms);
}

Result<RoomStore::BuiltEvent> RoomStore::build(store::Transaction& tx, RoomAppender& room, const NewEvent& ev,
                                               std::int64_t now_ms) const {
  // Size limits of the spec's "Size limits": ids, type and state_key at most 255 bytes.
  if (ev.type.empty() || ev.type.size() > 255 || ev.sender.size() > 255 || room.room_id.size() > 255 ||
      (ev.state_key && ev.state_key->size() > 255))
    return fail(Errc::invalid_argument, "type, state_key, sender and room id are limited to 255 bytes");
  bool is_member = ev.type == "m.room.member";
  if (auto r = load_member(tx, room, ev.sender); !r) return tl::unexpected(r.error());
  const JsonValue* via = nullptr;
  if (is_member && ev.state_key) {
    if (auto r = load_member(tx, room, *ev.state_key); !r) return tl::unexpected(r.error());
    via = ev.content.get("join_authorised_via_users_server");
    if (via && via->is_string())
      if (auto r = load_member(tx, room, via->as_string()); !r) return tl::unexpected(r.error());
  }

  JsonValue pdu = JsonValue::object();
  pdu.set("type", JsonValue::string(ev.type));
  pdu.set("room_id", JsonValue::string(room.room_id));
  pdu.set("sender", JsonValue::string(ev.sender));
  if (ev.state_key) pdu.set("state_key", JsonValue::string(*ev.state_key));
  pdu.set("content", ev.content);
  pdu.set("origin_server_ts", JsonValue::integer(now_ms));
  pdu.set("depth", JsonValue::integer(std::min(room.depth + 1, kMaxSafeInteger)));
  if (ev.redacts && room.version == RoomVersion::v10) pdu.set("redacts", JsonValue::string(*ev.redacts));

  std::vector<JsonValue> prev, auth;
  if (!room.last_event_id.empty()) prev.push_back(JsonValue::string(room.last_event_id));
  auto add_auth = [&](std::string_view type, std::string_view key) {
    auto it = room.state.find(std::make_pair(std::string(type), std::string(key)));
    if (it == room.state.end()) return;
    JsonValue id = JsonValue::string(it->second.event_id);
    if (std::find(auth.begin(), auth.end(), id) == auth.end()) auth.push_back(std::move(id));
  };
  if (ev.type != "m.room.create") {
    add_auth("m.room.create", "");
    add_auth("m.room.power_levels", "");
    add_auth("m.room.member", ev.sender);
    if (is_member && ev.state_key) {
      add_auth("m.room.member", *ev.state_key);
      std::string_view m = ev.content.string_at("membership");
      if (m == "join" || m == "invite" || m == "knock") add_auth("m.room.join_rules", "");
      if (via && via->is_string()) add_auth("m.room.member", via->as_string());
    }
  }
  pdu.set("prev_events", JsonValue::array(std::move(prev)));
  pdu.set("auth_events", JsonValue::array(std::move(auth)));

  StateLookup lookup = [&room](std::string_view type, std::string_view key) { return room.lookup(type, key); };
  if (auto r = check_event_auth(pdu, room.version, lookup); !r) return tl::unexpected(r.error());

  std::string event_id = hash_and_sign_event(pdu, room.version, server_name_, key_);
  return BuiltEvent{std::move(event_id), std::move(pdu)};
}

Result<AppendedEvent> RoomStore::append_built(store::Transaction& tx, RoomAppender& room, const BuiltEvent& ev,
                                              const std::string& txn_device, const std::string& txn_id,
                                              std::int64_t now_ms) const {
  const JsonValue& pdu = ev.pdu;
  const JsonValue* sk = pdu.get("state_key");
  std::optional<std::string> state_key;
  if (sk && sk->is_string()) state_key = sk->as_string();
  bool is_member = pdu.string_at("type") == "m.room.member";
  if (state_key && is_member)
    if (auto r = load_member(tx, room, *state_key); !r) return tl::unexpected(r.error());
  if (auto r = load_member(tx, room, pdu.string_at("sender")); !r) return tl::unexpected(r.error());
  StateLookup lookup = [&room](std::string_view type, std::string_view key) { return room.lookup(type, key); };
  if (auto r = check_event_auth(pdu, room.version, lookup); !r) return tl::unexpected(r.error());
  std::string pdu_json = canonical_json(pdu);
  if (pdu_json.size() > kMaxPduBytes) return fail(Errc::resource_exhausted, std::string(kEventTooLarge));

  auto appended = insert_event(tx, room, ev.event_id, pdu, pdu_json, txn_device, txn_id, /*update_state=*/true, now_ms);
  if (!appended || !outbox_) return appended;
  // Queue for the other servers with joined members (and a member event's remote target).
  std::set<std::string> servers;
  if (is_member && state_key && server_of(*state_key) != server_name_) servers.insert(std::string(server_of(*state_key)));
  auto q = tx.query("SELECT user_id FROM matrix_members WHERE room_id = ? AND membership = 'join'", {room.room_id},
                    [&](const store::Row& row) {
                      std::string_view server = server_of(row.text(0));
                      if (!server.empty() && server != server_name_) servers.insert(std::string(server));
                    });
  if (!q) return tl::unexpected(q.error());
  for (const auto& server : servers) {
    auto r = tx.exec("INSERT INTO matrix_federation_outbox(destination, pdu, created_ms) VALUES (?,?,?)",
                     {server, pdu_json, now_ms});
    if (!r) return tl::unexpected(r.error());
  }
  return appended;
}

Result<std::vector<RoomStore::Outgoing>> RoomStore::outbox(store::Transaction& tx, std::string_view destination,
                                                           int limit) const {
  std::vector<Outgoing> out;
  auto r = tx.query("SELECT id, pdu FROM matrix_federation_outbox WHERE destination = ? ORDER BY id LIMIT ?",
                    {destination, limit},
                    [&](const store::Row& row) { out.push_back({row.integer(0), std::string(row.text(1))}); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::vector<std::string>> RoomStore::outbox_destinations(store::Transaction& tx) const {
  std::vector<std::string> out;
  auto r = tx.query("SELECT DISTINCT destination FROM matrix_federation_outbox", {},
                    [&](const store::Row& row) { out.emplace_back(row.text(0)); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<void> RoomStore::outbox_remove(store::Transaction& tx, std::string_view destination, std::int64_t upto_id) const {
  auto r = tx.exec("DELETE FROM matrix_federation_outbox WHERE destination = ? AND id <= ?", {destination, upto_id});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<std::int64_t> RoomStore::outbox_keep_newest_per_room(store::Transaction& tx,
                                                            std::string_view destination) const {
  return tx.exec(
      "DELETE FROM matrix_federation_outbox WHERE destination = ? AND id NOT IN (SELECT MAX(id) FROM "
      "matrix_federation_outbox WHERE destination = ? GROUP BY json_extract(pdu, '$.room_id'))",
      {destination, destination});
}

Result<AppendedEvent> RoomStore::insert_event(store::Transaction& tx, RoomAppender& room, const std::string& event_id,
                                              const JsonValue& pdu, const std::string& pdu_json,
                                              const std::string& txn_device_in, const std::string& txn_id_in,
                                              bool update_state, std::int64_t now_ms,
                                              std::optional<std::int64_t> history_stream) const {
  if (history_stream) update_state = false;
  std::string type(pdu.string_at("type"));
  std::string sender(pdu.string_at("sender"));
  std::optional<std::string> state_key;
  if (const JsonValue* sk = pdu.get("state_key"); sk && sk->is_string()) state_key = sk->as_string();
  const JsonValue* content_p = pdu.get("content");
  JsonValue content = content_p ? *content_p : JsonValue::object();
  const JsonValue* ts_p = pdu.get("origin_server_ts");
  std::int64_t ts = ts_p && ts_p->is_int() ? ts_p->as_int() : now_ms;
  std::optional<std::string> redacts;
  if (type == "m.room.redaction") {
    std::string_view r = room.version == RoomVersion::v10 ? pdu.string_at("redacts") : content.string_at("redacts");
    if (!r.empty()) redacts = std::string(r);
  }
  bool is_member = type == "m.room.member";
  // The client format (without "unsigned").
  JsonValue client = JsonValue::object();
  client.set("content", content);
  client.set("event_id", JsonValue::string(event_id));
  client.set("origin_server_ts", JsonValue::integer(ts));
  client.set("room_id", JsonValue::string(room.room_id));
  client.set("sender", JsonValue::string(sender));
  client.set("type", JsonValue::string(type));
  if (state_key) client.set("state_key", JsonValue::string(*state_key));
  if (redacts) client.set("redacts", JsonValue::string(*redacts));
  std::string unsigned_extra;
  if (state_key && update_state) {
    if (is_member)
      if (auto r = load_member(tx, room, *state_key); !r) return tl::unexpected(r.error());
    auto it = room.state.find(std::make_pair(type, *state_key));
    if (it != room.state.end()) {
      unsigned_extra = "\"prev_content\":";
      const JsonValue* pc = it->second.pdu.get("content");
      unsigned_extra += pc ? canonical_json(*pc) : "{}";
      unsigned_extra += ",\"replaces_state\":";
      json_escape_to(unsigned_extra, it->second.event_id);
    }
  }

  if (!room.exists) {
    auto r = tx.exec("INSERT INTO matrix_rooms(room_id, version, created_ms) VALUES (?, ?, ?)",
                     {room.room_id, room_version_id(room.version), now_ms});
    if (!r) return tl::unexpected(r.error());
    room.exists = true;
  }
  std::optional<std::string> txn_device, txn_id;
  if (!txn_id_in.empty()) {
    txn_device = txn_device_in;
    txn_id = txn_id_in;
  }
  if (history_stream) {
    auto ins = tx.exec(
        "INSERT INTO matrix_events(stream, event_id, room_id, type, state_key, sender, ts, pdu, client, unsigned_extra) "
        "VALUES (?,?,?,?,?,?,?,?,?,'')",
        {*history_stream, event_id, room.room_id, type, state_key, sender, ts, pdu_json, canonical_json(client)});
    if (!ins) return tl::unexpected(ins.error());
    return AppendedEvent{event_id, *history_stream};
  }
  auto ins = tx.exec(
      "INSERT INTO matrix_events(event_id, room_id, type, state_key, sender, ts, pdu, client, unsigned_extra, "
      "txn_device, txn_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
      {event_id, room.room_id, type, state_key, sender, ts, pdu_json, canonical_json(client), unsigned_extra,
       txn_device, txn_id});
  if (!ins) return tl::unexpected(ins.error());
  std::int64_t stream = tx.last_insert_id();
  if (relation_of(content)) {
    StoredEvent row;
    row.stream = stream;
    row.event_id = event_id;
    row.room_id = room.room_id;
    row.type = type;
    row.sender = sender;
    if (auto r = index_relation(tx, row, content); !r) return tl::unexpected(r.error());
  }
  if (auto r = index_for_search(tx, stream, room.room_id, content); !r) return tl::unexpected(r.error());
  if (state_key && update_state) {
    if (auto r = set_state_row(tx, room.room_id, type, *state_key, stream, content.string_at("membership")); !r)
      return tl::unexpected(r.error());
    room.state[{type, *state_key}] = {event_id, pdu};
  }
  const JsonValue* depth_p = pdu.get("depth");
  room.depth = std::max(room.depth + 1, depth_p && depth_p->is_int() ? depth_p->as_int() : 0);
  room.depth = std::min(room.depth, kMaxSafeInteger);
  room.last_event_id = event_id;
  auto head = tx.exec("UPDATE matrix_rooms SET last_event_id = ?, depth = ? WHERE room_id = ?",
                      {event_id, room.depth, room.room_id});
  if (!head) return tl::unexpected(head.error());
  return AppendedEvent{event_id, stream};
}

Result<void> RoomStore::set_state_row(store::Transaction& tx, const std::string& room_id, const std::string& type,
                                      const std::string& state_key, std::int64_t stream,
                                      std::string_view membership) const {
  auto r = tx.exec(
      "INSERT INTO matrix_state(room_id, type, state_key, stream) VALUES (?,?,?,?) "
      "ON CONFLICT(room_id, type, state_key) DO UPDATE SET stream = excluded.stream",
      {room_id, type, state_key, stream});
  if (!r) return tl::unexpected(r.error());
  if (type == "m.room.member") {
    auto m = tx.exec(
        "INSERT INTO matrix_members(room_id, user_id, membership, stream) VALUES (?,?,?,?) "
        "ON CONFLICT(room_id, user_id) DO UPDATE SET membership = excluded.membership, stream = excluded.stream",
        {room_id, state_key, membership, stream});
    if (!m) return tl::unexpected(m.error());
  }
  return ok();
}

Result<void> RoomStore::record_unaccepted(store::Transaction& tx, const std::string& room_id,
                                         const std::string& event_id, const std::string& pdu_json,
                                         std::string_view status, std::string_view reason, std::int64_t now_ms) const {
  auto r = tx.exec(
      "INSERT INTO matrix_unaccepted_events(event_id, room_id, status, reason, pdu, received_ms) VALUES (?,?,?,?,?,?) "
      "ON CONFLICT(event_id) DO NOTHING",
      {event_id, room_id, status, reason, pdu_json, now_ms});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<std::optional<std::string>> RoomStore::unaccepted_status(store::Transaction& tx,
                                                               std::string_view event_id) const {
  auto row = tx.query_one("SELECT status FROM matrix_unaccepted_events WHERE event_id = ?", {event_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(std::string((*row)->text(0)));
}

Result<StateMap> RoomStore::current_state_map(store::Transaction& tx, std::string_view room_id) const {
  StateMap out;
  auto r = tx.query(
      "SELECT s.type, s.state_key, e.event_id FROM matrix_state s JOIN matrix_events e ON e.stream = s.stream "
      "WHERE s.room_id = ?",
      {room_id}, [&](const store::Row& row) {
        out[{std::string(row.text(0)), std::string(row.text(1))}] = std::string(row.text(2));
      });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<StateMap> RoomStore::state_map_at(store::Transaction& tx, std::string_view room_id, std::int64_t stream) const {
  auto events = state_at(tx, room_id, stream);
  if (!events) return tl::unexpected(events.error());
  StateMap out;
  for (auto& e : *events)
    if (e.state_key) out[{e.type, *e.state_key}] = e.event_id;
  return out;
}

Result<std::optional<std::int64_t>> RoomStore::stream_of(store::Transaction& tx, std::string_view event_id) const {
  auto row = tx.query_one("SELECT stream FROM matrix_events WHERE event_id = ?", {event_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<std::int64_t>();
  return std::optional<std::int64_t>((*row)->integer(0));
}

Result<VisibilityFilter> VisibilityFilter::load(store::Transaction& tx, std::string_view room_id,
                                                std::string_view user_id) {
  VisibilityFilter f;
  auto content_field = [](std::string_view client_json, std::string_view key) {
    auto v = parse_json(client_json, {std::size_t{1} << 24, 128});
    const JsonValue* c = v ? v->get("content") : nullptr;
    return c ? std::string(c->string_at(key)) : std::string();
  };
  f.user_id_ = std::string(user_id);
  // Two lookups in matrix_events_state, not one OR: without statistics SQLite would
  // answer the OR from matrix_events_room, reading every event of the room.
  auto r = tx.query(
      "SELECT stream, type, client FROM matrix_events WHERE room_id = ? AND type = 'm.room.history_visibility' "
      "AND state_key = '' UNION ALL SELECT stream, type, client FROM matrix_events WHERE room_id = ? "
      "AND type = 'm.room.member' AND state_key = ? ORDER BY 1",
      {room_id, room_id, user_id}, [&](const store::Row& row) {
        if (row.text(1) == "m.room.member") {
          f.membership_.emplace_back(row.integer(0), content_field(row.text(2), "membership"));
        } else {
          f.visibility_.emplace_back(row.integer(0), content_field(row.text(2), "history_visibility"));
        }
      });
  if (!r) return tl::unexpected(r.error());
  return f;
}

bool VisibilityFilter::visible(std::int64_t stream, bool own_member_event) const {
  if (own_member_event) return true;  // a user always sees their own membership changes
  std::string_view visibility = "shared";
  for (const auto& [at, value] : visibility_) {
    if (at >= stream) break;
    visibility = value;
  }
  if (visibility == "world_readable") return true;
  std::string_view membership = "leave";
  bool joined_later = false;
  for (const auto& [at, value] : membership_) {
    if (at <= stream) membership = value;
    else if (value == "join") joined_later = true;
  }
  if (membership == "join") return true;
  if (visibility == "shared" && (joined_later || (!membership_.empty() && membership_.back().second == "join")))
    return true;
  return visibility == "invited" && membership == "invite";
}

Result<JsonValue> RoomStore::pdu(store::Transaction& tx, std::string_view event_id) const {
  auto row = tx.query_one("SELECT pdu FROM matrix_events WHERE event_id = ?", {event_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail(Errc::not_found, "unknown event");
  auto v = parse_json((*row)->text(0), {std::size_t{1} << 24, 128});
  if (!v) return fail(Errc::corrupt, "stored event is not JSON");
  return std::move(*v);
}

Result<void> RoomStore::apply_redaction(store::Transaction& tx, const RoomAppender& room, std::string_view target,
                                        std::string_view redaction_event_id) const {
  auto original = pdu(tx, target);
  if (!original) return tl::unexpected(original.error());
  auto because = event(tx, redaction_event_id);
  if (!because) return tl::unexpected(because.error());
  auto row = event(tx, target);
  if (!row) return tl::unexpected(row.error());
  if (!*because || !*row) return fail(Errc::not_found, "unknown event");
  JsonValue redacted = redact_event(*original, room.version);
  auto client = parse_json((*row)->client_json, {std::size_t{1} << 24, 128});
  if (!client) return fail(Errc::corrupt, "stored event is not JSON");
  client->set("content", *redacted.get("content"));
  std::string extra = "\"redacted_because\":" + render_event(**because, "", "", (*because)->ts);
  auto r = tx.exec("UPDATE matrix_events SET pdu = ?, client = ?, unsigned_extra = ? WHERE event_id = ?",
                   {canonical_json(redacted), canonical_json(*client), extra, target});
  if (!r) return tl::unexpected(r.error());
  if (auto u = unindex_relation(tx, target); !u) return tl::unexpected(u.error());
  if (auto u = unindex_for_search(tx, (*row)->stream); !u) return tl::unexpected(u.error());
  return ok();
}

Result<std::optional<std::string>> RoomStore::find_txn(store::Transaction& tx, std::string_view room_id,
                                                       std::string_view sender, std::string_view device,
                                                       std::string_view txn_id) const {
  auto row = tx.query_one(
      "SELECT event_id FROM matrix_events WHERE room_id = ? AND sender = ? AND txn_device = ? AND txn_id = ?",
      {room_id, sender, device, txn_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(std::string((*row)->text(0)));
}

Result<std::int64_t> RoomStore::max_stream(store::Transaction& tx) const {
  auto row = tx.query_one("SELECT COALESCE(MAX(stream), 0) FROM matrix_events");
  if (!row) return tl::unexpected(row.error());
  return (*row)->integer(0);
}

Result<std::vector<RoomStore::Membership>> RoomStore::memberships_of(store::Transaction& tx,
                                                                     std::string_view user_id) const {
  std::vector<Membership> out;
  auto r = tx.query("SELECT room_id, membership, stream FROM matrix_members WHERE user_id = ? ORDER BY room_id",
                    {user_id}, [&](const store::Row& row) {
                      out.push_back({std::string(row.text(0)), std::string(row.text(1)), row.integer(2)});
                    });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::optional<std::string>> RoomStore::membership(store::Transaction& tx, std::string_view room_id,
                                                         std::string_view user_id) const {
  auto row = tx.query_one("SELECT membership FROM matrix_members WHERE room_id = ? AND user_id = ?", {room_id, user_id});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(std::string((*row)->text(0)));
}

Result<std::vector<StoredEvent>> RoomStore::timeline(store::Transaction& tx, std::string_view room_id,
                                                     std::int64_t after, std::int64_t upto, int limit,
                                                     bool* more) const {
  std::vector<StoredEvent> out;
  auto r = tx.query(sql_events("WHERE room_id = ? AND stream > ? AND stream <= ? ORDER BY stream DESC LIMIT ?"),
                    {room_id, after, upto, limit + 1}, [&](const store::Row& row) { out.push_back(read_stored_event(row)); });
  if (!r) return tl::unexpected(r.error());
  if (more) *more = static_cast<int>(out.size()) > limit;
  if (static_cast<int>(out.size()) > limit) out.resize(limit);
  std::reverse(out.begin(), out.end());
  return out;
}

Result<std::vector<StoredEvent>> RoomStore::paginate(store::Transaction& tx, std::string_view room_id,
                                                     std::int64_t from, bool backwards, int limit,
                                                     std::int64_t upto) const {
  std::vector<StoredEvent> out;
  auto on_row = [&](const store::Row& row) { out.push_back(read_stored_event(row)); };
  Result<void> r = backwards
                       ? tx.query(sql_events("WHERE room_id = ? AND stream <= ? ORDER BY stream DESC LIMIT ?"),
                                  {room_id, from, limit}, on_row)
                       : tx.query(sql_events("WHERE room_id = ? AND stream > ? AND stream <= ? ORDER BY stream LIMIT ?"),
                                  {room_id, from, upto, limit}, on_row);
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::vector<StoredEvent>> RoomStore::current_state(store::Transaction& tx, std::string_view room_id,
                                                          std::int64_t changed_after, std::int64_t before,
                                                          bool without_members) const {
  std::vector<StoredEvent> out;
  auto r = tx.query(
      fmt::format("SELECT e.{} FROM matrix_state s JOIN matrix_events e ON e.stream = s.stream "
                  "WHERE s.room_id = ? AND s.stream > ? AND s.stream < ?{} ORDER BY s.stream",
                  "stream, e.event_id, e.room_id, e.type, e.state_key, e.sender, e.ts, e.client, e.unsigned_extra, "
                  "e.txn_device, e.txn_id",
                  without_members ? " AND s.type <> 'm.room.member'" : ""),
      {room_id, changed_after, before}, [&](const store::Row& row) { out.push_back(read_stored_event(row)); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::optional<StoredEvent>> RoomStore::state_event(store::Transaction& tx, std::string_view room_id,
                                                          std::string_view type, std::string_view state_key) const {
  std::optional<StoredEvent> out;
  auto r = tx.query(sql_events("WHERE stream = (SELECT stream FROM matrix_state WHERE room_id = ? AND type = ? AND "
                               "state_key = ?)"),
                    {room_id, type, state_key}, [&](const store::Row& row) { out = read_stored_event(row); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::vector<StoredEvent>> RoomStore::state_at(store::Transaction& tx, std::string_view room_id,
                                                     std::int64_t stream) const {
  std::vector<StoredEvent> out;
  auto r = tx.query(sql_events("WHERE stream IN (SELECT MAX(stream) FROM matrix_events WHERE room_id = ? AND "
                               "state_key IS NOT NULL AND stream <= ? GROUP BY type, state_key) ORDER BY stream"),
                    {room_id, stream}, [&](const store::Row& row) { out.push_back(read_stored_event(row)); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::optional<StoredEvent>> RoomStore::event(store::Transaction& tx, std::string_view event_id) const {
  std::optional<StoredEvent> out;
  auto r = tx.query(sql_events("WHERE event_id = ?"), {event_id}, [&](const store::Row& row) { out = read_stored_event(row); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

Result<std::vector<StoredEvent>> RoomStore::members(store::Transaction& tx, std::string_view room_id) const {
  std::vector<StoredEvent> out;
  auto r = tx.query(sql_events("WHERE stream IN (SELECT stream FROM matrix_members WHERE room_id = ?) ORDER BY stream"),
                    {room_id}, [&](const store::Row& row) { out.push_back(read_stored_event(row)); });
  if (!r) return tl::unexpected(r.error());
  return out;
}

}  // namespace hearth::matrix
