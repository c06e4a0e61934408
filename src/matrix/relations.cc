#include "matrix/relations.h"

#include <fmt/format.h>

#include "core/json.h"

namespace hearth::matrix {

namespace {

const std::string kEventColumns = stored_event_columns("e");

std::optional<JsonValue> parse_client(const StoredEvent& e) {
  auto v = parse_json(e.client_json, {std::size_t{1} << 24, 128});
  if (!v) return std::nullopt;
  return std::move(*v);
}

bool is_redacted(const StoredEvent& e) { return e.unsigned_extra.find("\"redacted_because\"") != std::string::npos; }

constexpr int kMaxBundledReferences = 100;

}  // namespace

std::optional<RelationRef> relation_of(const JsonValue& content) {
  const JsonValue* rel = content.get("m.relates_to");
  if (!rel || !rel->is_object()) return std::nullopt;
  const JsonValue* type = rel->get("rel_type");
  const JsonValue* parent = rel->get("event_id");
  if (!type || !parent || !type->is_string() || !parent->is_string()) return std::nullopt;
  if (type->as_string().empty() || parent->as_string().empty() || type->as_string().size() > 255 ||
      parent->as_string().size() > 255)
    return std::nullopt;
  return RelationRef{type->as_string(), parent->as_string()};
}

bool is_valid_edit(const JsonValue& original, const JsonValue& replacement) {
  if (original.get("state_key") || replacement.get("state_key")) return false;
  if (original.string_at("room_id") != replacement.string_at("room_id")) return false;
  if (original.string_at("sender") != replacement.string_at("sender")) return false;
  if (original.string_at("type") != replacement.string_at("type")) return false;
  const JsonValue* oc = original.get("content");
  if (oc) {
    auto own = relation_of(*oc);
    if (own && own->rel_type == "m.replace") return false;  // edits of edits are not edits
  }
  const JsonValue* rc = replacement.get("content");
  if (!rc) return false;
  auto rel = relation_of(*rc);
  if (!rel || rel->rel_type != "m.replace" || rel->parent_id != original.string_at("event_id")) return false;
  if (replacement.string_at("type") == "m.room.encrypted") return true;  // m.new_content is inside the ciphertext
  const JsonValue* nc = rc->get("m.new_content");
  return nc && nc->is_object();
}

std::string aggregation_json(const Aggregation& a) {
  if (!a.thread && !a.replace && a.references.empty()) return {};
  JsonWriter w;
  w.begin_object();
  if (a.replace) w.key("m.replace").raw(*a.replace);
  if (!a.references.empty()) {
    w.key("m.reference").begin_object().key("chunk").begin_array();
    for (const auto& id : a.references) w.begin_object().key("event_id").value(id).end_object();
    w.end_array().end_object();
  }
  if (a.thread) {
    w.key("m.thread")
        .begin_object()
        .key("count")
        .value(a.thread->count)
        .key("current_user_participated")
        .value(a.thread->current_user_participated)
        .key("latest_event")
        .raw(a.thread->latest_event)
        .end_object();
  }
  w.end_object();
  return w.take();
}

Result<void> index_relation(store::Transaction& tx, const StoredEvent& e, const JsonValue& content) {
  auto rel = relation_of(content);
  if (!rel) return ok();
  auto r = tx.exec(
      "INSERT INTO matrix_relations(event_id, parent_id, rel_type, room_id, stream, sender, type) VALUES (?,?,?,?,?,?,?) "
      "ON CONFLICT(event_id) DO NOTHING",
      {e.event_id, rel->parent_id, rel->rel_type, e.room_id, e.stream, e.sender, e.type});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<void> unindex_relation(store::Transaction& tx, std::string_view event_id) {
  auto r = tx.exec("DELETE FROM matrix_relations WHERE event_id = ?", {event_id});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<RelationPage> related_events(store::Transaction& tx, const RelationQuery& q) {
  // Bounds are exclusive stream positions; a missing bound is open.
  std::int64_t low = 0, high = INT64_MAX;
  if (q.backwards) {
    if (q.from) high = *q.from;
    if (q.to) low = *q.to;
  } else {
    if (q.from) low = *q.from;
    if (q.to) high = *q.to;
  }
  std::string sql = fmt::format(
      "WITH RECURSIVE tree(id, depth) AS (SELECT ?, 0 UNION SELECT r.event_id, t.depth + 1 FROM matrix_relations r "
      "JOIN tree t ON r.parent_id = t.id WHERE t.depth < ?) "
      "SELECT {} FROM tree t JOIN matrix_relations r ON r.event_id = t.id JOIN matrix_events e ON e.stream = r.stream "
      "WHERE t.depth > 0 AND (? = '' OR r.rel_type = ?) AND (? = '' OR r.type = ?) AND r.stream > ? AND r.stream < ? "
      "GROUP BY r.event_id ORDER BY r.stream {} LIMIT ?",
      kEventColumns, q.backwards ? "DESC" : "ASC");
  RelationPage page;
  auto r = tx.query(sql,
                    {q.parent_id, std::max(1, q.depth), q.rel_type, q.rel_type, q.event_type, q.event_type, low, high,
                     q.limit + 1},
                    [&](const store::Row& row) { page.chunk.push_back(read_stored_event(row)); });
  if (!r) return tl::unexpected(r.error());
  if (static_cast<int>(page.chunk.size()) > q.limit) {
    page.chunk.resize(q.limit);
    page.next = page.chunk.back().stream;
  }
  return page;
}

Result<ThreadPage> thread_roots(store::Transaction& tx, std::string_view room_id,
                                std::optional<std::string_view> participant, std::optional<std::int64_t> before,
                                int limit) {
  std::string who = participant ? std::string(*participant) : std::string();
  std::vector<std::pair<std::string, std::int64_t>> roots;  // root id, latest reply
  auto r = tx.query(
      "SELECT r.parent_id, MAX(r.stream) AS latest FROM matrix_relations r WHERE r.room_id = ? AND "
      "r.rel_type = 'm.thread' GROUP BY r.parent_id HAVING latest < ? AND (? = '' OR SUM(r.sender = ?) > 0 OR EXISTS "
      "(SELECT 1 FROM matrix_events e WHERE e.event_id = r.parent_id AND e.sender = ?)) ORDER BY latest DESC LIMIT ?",
      {room_id, before.value_or(INT64_MAX), who, who, who, limit + 1},
      [&](const store::Row& row) { roots.emplace_back(std::string(row.text(0)), row.integer(1)); });
  if (!r) return tl::unexpected(r.error());
  ThreadPage page;
  if (static_cast<int>(roots.size()) > limit) {
    roots.resize(limit);
    page.next = roots.back().second;
  }
  for (const auto& [id, latest] : roots) {
    auto q = tx.query(fmt::format("SELECT {} FROM matrix_events e WHERE e.event_id = ? AND e.room_id = ?", kEventColumns),
                      {id, room_id}, [&](const store::Row& row) { page.roots.push_back(read_stored_event(row)); });
    if (!q) return tl::unexpected(q.error());
  }
  return page;
}

namespace {

// The newest valid edit of `original` (by origin_server_ts, then event id, as the spec
// orders them), rendered.
Result<std::optional<std::string>> newest_edit(store::Transaction& tx, const StoredEvent& original,
                                               const JsonValue& original_json, std::string_view user_id,
                                               std::int64_t now_ms) {
  std::vector<StoredEvent> candidates;
  auto r = tx.query(fmt::format("SELECT {} FROM matrix_relations r JOIN matrix_events e ON e.stream = r.stream "
                                "WHERE r.parent_id = ? AND r.rel_type = 'm.replace' AND r.sender = ? AND r.type = ? "
                                "ORDER BY e.ts DESC, e.event_id DESC LIMIT 20",
                                kEventColumns),
                    {original.event_id, original.sender, original.type},
                    [&](const store::Row& row) { candidates.push_back(read_stored_event(row)); });
  if (!r) return tl::unexpected(r.error());
  for (const auto& c : candidates) {
    auto json = parse_client(c);
    if (json && is_valid_edit(original_json, *json)) return std::optional<std::string>(render_event(c, user_id, "", now_ms));
  }
  return std::optional<std::string>();
}

Result<void> bundle_one(store::Transaction& tx, StoredEvent& e, std::string_view user_id, std::int64_t now_ms,
                        bool with_thread) {
  e.bundled.clear();
  if (is_redacted(e)) return ok();
  struct Counts {
    std::int64_t count = 0, latest = 0, mine = 0;
  };
  std::optional<Counts> thread;
  bool has_edits = false, has_refs = false;
  auto r = tx.query(
      "SELECT rel_type, COUNT(*), MAX(stream), SUM(sender = ?) FROM matrix_relations WHERE parent_id = ? AND rel_type IN "
      "('m.thread', 'm.replace', 'm.reference') GROUP BY rel_type",
      {user_id, e.event_id}, [&](const store::Row& row) {
        std::string_view type = row.text(0);
        if (type == "m.thread") thread = Counts{row.integer(1), row.integer(2), row.integer(3)};
        else if (type == "m.replace") has_edits = true;
        else has_refs = true;
      });
  if (!r) return tl::unexpected(r.error());
  if (!thread && !has_edits && !has_refs) return ok();
  Aggregation a;
  if (has_edits) {
    auto json = parse_client(e);
    if (json) {
      auto edit = newest_edit(tx, e, *json, user_id, now_ms);
      if (!edit) return tl::unexpected(edit.error());
      a.replace = std::move(*edit);
    }
  }
  if (has_refs) {
    auto q = tx.query("SELECT event_id FROM matrix_relations WHERE parent_id = ? AND rel_type = 'm.reference' "
                      "ORDER BY stream LIMIT ?",
                      {e.event_id, kMaxBundledReferences},
                      [&](const store::Row& row) { a.references.emplace_back(row.text(0)); });
    if (!q) return tl::unexpected(q.error());
  }
  if (thread && with_thread) {
    std::optional<StoredEvent> latest;
    auto q = tx.query(fmt::format("SELECT {} FROM matrix_events e WHERE e.stream = ?", kEventColumns), {thread->latest},
                      [&](const store::Row& row) { latest = read_stored_event(row); });
    if (!q) return tl::unexpected(q.error());
    if (latest) {
      // The latest reply carries its own aggregations (its edits), not a thread's.
      if (auto b = bundle_one(tx, *latest, user_id, now_ms, false); !b) return b;
      a.thread = Aggregation::Thread{render_event(*latest, user_id, "", now_ms), thread->count,
                                     thread->mine > 0 || e.sender == user_id};
    }
  }
  e.bundled = aggregation_json(a);
  return ok();
}

}  // namespace

Result<void> bundle_aggregations(store::Transaction& tx, StoredEvent& event, std::string_view user_id,
                                 std::int64_t now_ms) {
  return bundle_one(tx, event, user_id, now_ms, true);
}

Result<void> bundle_aggregations(store::Transaction& tx, std::vector<StoredEvent>& events, std::string_view user_id,
                                 std::int64_t now_ms) {
  for (auto& e : events)
    if (auto r = bundle_one(tx, e, user_id, now_ms, true); !r) return r;
  return ok();
}

}  // namespace hearth::matrix
