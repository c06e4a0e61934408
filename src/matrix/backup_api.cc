// Server-side room key backup (client-server API "Server-side key backups"): versions
// (create, get, update, delete) and keys per version, room and session, with the spec's
// rule for which of two backed-up copies of a session key is kept, `count` and `etag`.
#include <fmt/format.h>

#include "core/json.h"
#include "matrix/e2e_store.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

constexpr std::size_t kMaxSessionsPerPut = 10'000;

struct Version {
  std::int64_t version = 0;
  std::string algorithm, auth_data;
  std::int64_t etag = 0;
};

// The given version, or the newest one when `version` is empty.
Result<std::optional<Version>> load_version(store::Transaction& tx, const std::string& user, const std::string& version) {
  std::optional<store::OwnedRow> row;
  if (version.empty()) {
    auto r = tx.query_one(
        "SELECT version, algorithm, auth_data, etag FROM matrix_backup_versions WHERE user_id = ? "
        "ORDER BY version DESC LIMIT 1",
        {user});
    if (!r) return tl::unexpected(r.error());
    row = std::move(*r);
  } else {
    if (version.find_first_not_of("0123456789") != std::string::npos || version.size() > 15)
      return std::optional<Version>();
    auto r = tx.query_one(
        "SELECT version, algorithm, auth_data, etag FROM matrix_backup_versions WHERE user_id = ? AND version = ?",
        {user, std::stoll(version)});
    if (!r) return tl::unexpected(r.error());
    row = std::move(*r);
  }
  if (!row) return std::optional<Version>();
  return std::optional<Version>(
      Version{row->integer(0), std::string(row->text(1)), std::string(row->text(2)), row->integer(3)});
}

Result<std::int64_t> key_count(store::Transaction& tx, const std::string& user, std::int64_t version) {
  auto r = tx.query_one("SELECT COUNT(*) FROM matrix_backup_keys WHERE user_id = ? AND version = ?", {user, version});
  if (!r) return tl::unexpected(r.error());
  return (*r)->integer(0);
}

bool valid_key_data(const JsonValue& k) {
  const JsonValue* fmi = k.get("first_message_index");
  const JsonValue* fc = k.get("forwarded_count");
  const JsonValue* v = k.get("is_verified");
  const JsonValue* sd = k.get("session_data");
  return k.is_object() && fmi && fmi->is_int() && fc && fc->is_int() && v && v->is_bool() && sd && sd->is_object();
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::backup_version_create(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* auth = body->get("auth_data");
  if (body->string_at("algorithm").empty() || !auth || !auth->is_object())
    return api_error(400, "M_BAD_JSON", "algorithm and auth_data are required");
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    // Version numbers are never reused, even after the newest version was deleted.
    auto last = load_version(tx, ctx.user_id, "");
    if (!last) return tl::unexpected(last.error());
    const std::string counter = "backup_version:" + ctx.user_id;
    auto seen = tx.query_one("SELECT value FROM matrix_positions WHERE name = ?", {counter});
    if (!seen) return tl::unexpected(seen.error());
    std::int64_t v = std::max(*last ? (*last)->version : 0, *seen ? (*seen)->integer(0) : 0) + 1;
    auto pos = tx.exec("INSERT INTO matrix_positions(name, value) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                       {counter, v});
    if (!pos) return tl::unexpected(pos.error());
    auto in = tx.exec("INSERT INTO matrix_backup_versions(user_id, version, algorithm, auth_data) VALUES (?, ?, ?, ?)",
                      {ctx.user_id, v, std::string(body->string_at("algorithm")), canonical_json(*auth)});
    if (!in) return tl::unexpected(in.error());
    return v;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return fmt::format(R"({{"version":"{}"}})", *r);
}

ApiResult<std::string> MatrixService::Impl::backup_version_get(Ctx& ctx) {
  std::string version = ctx.params.empty() ? "" : ctx.params[0];
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto v = load_version(tx, ctx.user_id, version);
    if (!v) return tl::unexpected(v.error());
    if (!*v) return std::optional<std::string>();
    auto n = key_count(tx, ctx.user_id, (*v)->version);
    if (!n) return tl::unexpected(n.error());
    return std::optional<std::string>(fmt::format(R"({{"algorithm":{},"auth_data":{},"count":{},"etag":"{}","version":"{}"}})",
                                                  json_quote((*v)->algorithm), (*v)->auth_data, *n, (*v)->etag,
                                                  (*v)->version));
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "No current backup version");
  return **r;
}

ApiResult<std::string> MatrixService::Impl::backup_version_put(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* auth = body->get("auth_data");
  if (!auth || !auth->is_object()) return api_error(400, "M_BAD_JSON", "auth_data is required");
  if (const JsonValue* v = body->get("version"); v && (!v->is_string() || v->as_string() != ctx.params[0]))
    return api_error(400, "M_INVALID_PARAM", "version does not match the path");
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto v = load_version(tx, ctx.user_id, ctx.params[0]);
    if (!v) return tl::unexpected(v.error());
    if (!*v) return fail(Errc::not_found, "Unknown backup version");
    if (body->string_at("algorithm") != (*v)->algorithm)
      return fail(Errc::invalid_argument, "The algorithm of a backup version cannot change");
    auto up = tx.exec("UPDATE matrix_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
                      {canonical_json(*auth), ctx.user_id, (*v)->version});
    if (!up) return tl::unexpected(up.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return std::string("{}");
}

ApiResult<std::string> MatrixService::Impl::backup_version_delete(Ctx& ctx) {
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto v = load_version(tx, ctx.user_id, ctx.params[0]);
    if (!v) return tl::unexpected(v.error());
    if (!*v) return fail(Errc::not_found, "Unknown backup version");
    for (auto sql : {"DELETE FROM matrix_backup_keys WHERE user_id = ? AND version = ?",
                     "DELETE FROM matrix_backup_versions WHERE user_id = ? AND version = ?"})
      if (auto d = tx.exec(sql, {ctx.user_id, (*v)->version}); !d) return tl::unexpected(d.error());
    return true;
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  return std::string("{}");
}

// PUT/GET/DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=...
ApiResult<std::string> MatrixService::Impl::backup_keys(Ctx& ctx) {
  std::string version = ctx.query_param("version");
  if (version.empty()) return api_error(400, "M_MISSING_PARAM", "version is required");
  const std::string room = ctx.params.size() >= 1 ? ctx.params[0] : "";
  const std::string session = ctx.params.size() >= 2 ? ctx.params[1] : "";
  const std::string& method = ctx.http.method;
  // The sessions to store: room -> session -> KeyBackupData.
  std::vector<std::tuple<std::string, std::string, JsonValue>> puts;
  if (method == "PUT") {
    auto body = ctx.body(options.max_body_bytes);
    if (!body) return tl::unexpected(body.error());
    auto add_room = [&](const std::string& room_id, const JsonValue& r) -> bool {
      const JsonValue* sessions = r.get("sessions");
      if (!sessions || !sessions->is_object()) return false;
      for (const auto& [sid, data] : sessions->members()) {
        if (!valid_key_data(data) || puts.size() >= kMaxSessionsPerPut) return false;
        puts.emplace_back(room_id, sid, data);
      }
      return true;
    };
    bool okay = true;
    if (!session.empty()) {
      okay = valid_key_data(*body);
      if (okay) puts.emplace_back(room, session, *body);
    } else if (!room.empty()) {
      okay = add_room(room, *body);
    } else {
      const JsonValue* rooms_v = body->get("rooms");
      okay = rooms_v && rooms_v->is_object();
      if (okay)
        for (const auto& [room_id, r] : rooms_v->members()) okay = okay && add_room(room_id, r);
    }
    if (!okay) return api_error(400, "M_BAD_JSON", "Invalid key backup data");
  }
  struct Out {
    std::optional<std::string> body;
    std::string current;  // for M_WRONG_ROOM_KEYS_VERSION
  };
  auto work = [&](store::Transaction& tx) -> Result<Out> {
    auto v = load_version(tx, ctx.user_id, version);
    if (!v) return tl::unexpected(v.error());
    auto current = load_version(tx, ctx.user_id, "");
    if (!current) return tl::unexpected(current.error());
    if (!*v) return fail(Errc::not_found, "Unknown backup version");
    const std::int64_t ver = (*v)->version;
    if (method == "PUT" && (*current)->version != ver)
      return Out{std::nullopt, std::to_string((*current)->version)};
    std::string where = "user_id = ? AND version = ?";
    std::vector<store::Value> args{ctx.user_id, ver};
    if (!room.empty()) {
      where += " AND room_id = ?";
      args.emplace_back(room);
    }
    if (!session.empty()) {
      where += " AND session_id = ?";
      args.emplace_back(session);
    }
    bool changed = false;
    if (method == "PUT") {
      for (auto& [room_id, sid, data] : puts) {
        auto old = tx.query_one(
            "SELECT json FROM matrix_backup_keys WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?",
            {ctx.user_id, ver, room_id, sid});
        if (!old) return tl::unexpected(old.error());
        if (*old) {
          auto existing = parse_json((*old)->text(0));
          if (existing && !e2e::backup_key_is_better(data, *existing)) continue;
        }
        auto up = tx.exec(
            "INSERT INTO matrix_backup_keys(user_id, version, room_id, session_id, json) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(user_id, version, room_id, session_id) DO UPDATE SET json = excluded.json",
            {ctx.user_id, ver, room_id, sid, canonical_json(data)});
        if (!up) return tl::unexpected(up.error());
        changed = true;
      }
    } else if (method == "DELETE") {
      auto d = tx.exec("DELETE FROM matrix_backup_keys WHERE " + where, std::span<const store::Value>(args));
      if (!d) return tl::unexpected(d.error());
      changed = *d > 0;
    } else {
      std::map<std::string, std::string> by_room;
      std::string single;
      auto q = tx.query("SELECT room_id, session_id, json FROM matrix_backup_keys WHERE " + where + " ORDER BY room_id",
                        std::span<const store::Value>(args), [&](const store::Row& r) {
                          std::string& s = by_room[std::string(r.text(0))];
                          s += (s.empty() ? "" : ",") + json_quote(r.text(1)) + ":" + std::string(r.text(2));
                          single = std::string(r.text(2));
                        });
      if (!q) return tl::unexpected(q.error());
      if (!session.empty()) {
        if (single.empty()) return fail(Errc::not_found, "No such session in the backup");
        return Out{single, {}};
      }
      if (!room.empty()) return Out{"{\"sessions\":{" + by_room[room] + "}}", {}};
      std::string out = "{\"rooms\":{";
      bool first = true;
      for (const auto& [room_id, sessions] : by_room)
        out += (std::exchange(first, false) ? "" : ",") + json_quote(room_id) + ":{\"sessions\":{" + sessions + "}}";
      return Out{out + "}}", {}};
    }
    if (changed) {
      auto e = tx.exec("UPDATE matrix_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
                       {ctx.user_id, ver});
      if (!e) return tl::unexpected(e.error());
    }
    auto after = load_version(tx, ctx.user_id, std::to_string(ver));
    if (!after) return tl::unexpected(after.error());
    auto n = key_count(tx, ctx.user_id, ver);
    if (!n) return tl::unexpected(n.error());
    return Out{fmt::format(R"({{"count":{},"etag":"{}"}})", *n, (*after)->etag), {}};
  };
  auto r = method == "GET" ? store.read_sync(work) : store.write_sync(work);
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!r->body) {
    ctx.respond(json_response(403, fmt::format(
        R"({{"errcode":"M_WRONG_ROOM_KEYS_VERSION","error":"Wrong backup version","current_version":"{}"}})",
        r->current)));
    return api_error(0, "", "");
  }
  return *r->body;
}

}  // namespace hearth::matrix
