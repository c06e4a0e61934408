#include "matrix/search.h"

#include <algorithm>

#include <fmt/format.h>

namespace hearth::matrix {

namespace {

constexpr std::size_t kMinPrefixBytes = 3;

bool word_byte(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80; }

std::string column_of(std::string_view key) {
  if (key == "content.body") return "body";
  if (key == "content.name") return "name";
  if (key == "content.topic") return "topic";
  return {};
}

// Rooms whose events a user may search (history visibility is checked per event later).
constexpr std::string_view kSearchableRooms =
    "SELECT room_id FROM matrix_members WHERE user_id = ? AND membership IN ('join', 'leave', 'ban')";

std::string text_at(const JsonValue& content, std::string_view key) {
  const JsonValue* v = content.get(key);
  return v && v->is_string() ? v->as_string() : std::string();
}

}  // namespace

Result<std::string> fts_query(std::string_view term, const std::vector<std::string>& keys,
                              std::vector<std::string>* words_out) {
  if (term.size() > kMaxSearchTermBytes)
    return fail(Errc::invalid_argument, fmt::format("search_term is limited to {} bytes", kMaxSearchTermBytes));
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < term.size()) {
    while (i < term.size() && !word_byte(term[i])) ++i;
    std::size_t start = i;
    while (i < term.size() && word_byte(term[i])) ++i;
    if (i > start) words.emplace_back(term.substr(start, i - start));
  }
  if (words.empty()) return fail(Errc::invalid_argument, "search_term has no words to search for");
  if (words.size() > kMaxSearchWords)
    return fail(Errc::invalid_argument, fmt::format("search_term is limited to {} words", kMaxSearchWords));
  std::vector<std::string> columns;
  for (const auto& k : keys) {
    std::string c = column_of(k);
    if (c.empty()) return fail(Errc::invalid_argument, "keys may only be content.body, content.name, content.topic");
    if (std::find(columns.begin(), columns.end(), c) == columns.end()) columns.push_back(c);
  }
  // Words contain no '"' (they are letters and digits), so quoting them needs no escape.
  std::string expr;
  for (std::size_t w = 0; w < words.size(); ++w) {
    if (w) expr += ' ';
    expr += '"' + words[w] + '"';
    // A prefix of one or two letters matches most of the index: such a word must match whole.
    if (w + 1 == words.size() && words[w].size() >= kMinPrefixBytes) expr += '*';
  }
  std::string query = expr;
  if (!columns.empty()) {
    std::string spec;
    for (const auto& c : columns) spec += (spec.empty() ? "" : " ") + c;
    query = "{" + spec + "} : (" + expr + ")";
  }
  if (words_out) {
    words_out->clear();
    for (auto& w : words) {
      for (auto& ch : w)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      if (std::find(words_out->begin(), words_out->end(), w) == words_out->end()) words_out->push_back(w);
    }
  }
  return query;
}

Result<void> index_for_search(store::Transaction& tx, std::int64_t stream, std::string_view room_id,
                              const JsonValue& content) {
  std::string body = text_at(content, "body"), name = text_at(content, "name"), topic = text_at(content, "topic");
  if (body.empty() && name.empty() && topic.empty()) return ok();
  auto r = tx.exec("INSERT OR REPLACE INTO matrix_search(rowid, body, name, topic, room_id) VALUES (?,?,?,?,?)",
                   {stream, body, name, topic, room_id});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<void> unindex_for_search(store::Transaction& tx, std::int64_t stream) {
  auto r = tx.exec("DELETE FROM matrix_search WHERE rowid = ?", {stream});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<bool> backfill_search_batch(store::Transaction& tx, int batch) {
  auto mark = tx.query_one("SELECT value FROM matrix_positions WHERE name = 'search_backfill'");
  if (!mark) return tl::unexpected(mark.error());
  if (!*mark || (*mark)->integer(0) <= 1) return true;
  std::int64_t below = (*mark)->integer(0);
  struct Row {
    std::int64_t stream;
    std::string room_id, client;
  };
  std::vector<Row> rows;
  auto q = tx.query("SELECT stream, room_id, client FROM matrix_events WHERE stream < ? ORDER BY stream DESC LIMIT ?",
                    {below, batch}, [&](const store::Row& r) {
                      rows.push_back({r.integer(0), std::string(r.text(1)), std::string(r.text(2))});
                    });
  if (!q) return tl::unexpected(q.error());
  for (const auto& row : rows) {
    auto v = parse_json(row.client, {std::size_t{1} << 24, 128});
    const JsonValue* content = v ? v->get("content") : nullptr;
    if (content)
      if (auto r = index_for_search(tx, row.stream, row.room_id, *content); !r) return tl::unexpected(r.error());
  }
  std::int64_t next = rows.empty() || static_cast<int>(rows.size()) < batch ? 0 : rows.back().stream;
  auto u = tx.exec("UPDATE matrix_positions SET value = ? WHERE name = 'search_backfill'", {next});
  if (!u) return tl::unexpected(u.error());
  return next <= 1;
}

Result<std::vector<SearchHit>> search_events(store::Transaction& tx, std::string_view user_id, std::string_view query,
                                             bool by_rank, std::int64_t offset, int limit) {
  std::vector<SearchHit> out;
  std::string sql = fmt::format(
      "SELECT rowid, bm25(matrix_search), room_id FROM matrix_search WHERE matrix_search MATCH ? AND room_id IN ({}) "
      "ORDER BY {} LIMIT ? OFFSET ?",
      kSearchableRooms, by_rank ? "bm25(matrix_search), rowid DESC" : "rowid DESC");
  auto r = tx.query(sql, {query, user_id, limit, offset}, [&](const store::Row& row) {
    // bm25 is "lower is better"; clients expect a higher rank to be better.
    out.push_back({row.integer(0), -row.real(1), std::string(row.text(2))});
  });
  if (!r) {
    // A query FTS5 cannot parse is the user's input, not our failure (fts_query should
    // make that impossible; this keeps it a 400 if it ever is not).
    if (r.error().code == Errc::internal) return fail(Errc::invalid_argument, "search_term cannot be searched for");
    return tl::unexpected(r.error());
  }
  return out;
}

Result<std::int64_t> count_search_hits(store::Transaction& tx, std::string_view user_id, std::string_view query) {
  auto row = tx.query_one(
      fmt::format("SELECT COUNT(*) FROM matrix_search WHERE matrix_search MATCH ? AND room_id IN ({})", kSearchableRooms),
      {query, user_id});
  if (!row) {
    if (row.error().code == Errc::internal) return fail(Errc::invalid_argument, "search_term cannot be searched for");
    return tl::unexpected(row.error());
  }
  return (*row)->integer(0);
}

}  // namespace hearth::matrix
