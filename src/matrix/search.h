// Server-side search of room events (POST /search, category room_events) on an SQLite
// FTS5 index, matrix_search: one row per event (rowid = the event's stream position) with
// the searchable keys content.body, content.name and content.topic as columns. Encrypted
// events have none of them, so they are never indexed.
//
// New events are indexed in the transaction that stores them (RoomStore::insert_event);
// a redaction applied to an event removes its row. Events stored before the index existed
// are indexed by backfill_search_batch, a bounded write job repeated by the service until
// it reports done (the matrix position "search_backfill" marks how far down it got).
// All functions run inside a store Transaction on the caller's thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "store/store.h"

namespace hearth::matrix {

inline constexpr std::size_t kMaxSearchTermBytes = 512;
inline constexpr std::size_t kMaxSearchWords = 16;

// A user's search term as an FTS5 query: the words (runs of letters and digits; any
// non-ASCII byte counts as a letter) each as a quoted string, all required, the last one
// also as a prefix when it has at least 3 bytes; restricted to `keys` (a subset of content.body, content.name,
// content.topic; empty = all three). invalid_argument for a term that is too long, has no
// word, or has too many words, or an unknown key. `words` receives the words, lower-cased
// (the answer's "highlights").
Result<std::string> fts_query(std::string_view term, const std::vector<std::string>& keys,
                              std::vector<std::string>* words = nullptr);

// Index maintenance.
Result<void> index_for_search(store::Transaction& tx, std::int64_t stream, std::string_view room_id,
                              const JsonValue& content);
Result<void> unindex_for_search(store::Transaction& tx, std::int64_t stream);
// Indexes up to `batch` of the older events not yet indexed; true when none are left.
Result<bool> backfill_search_batch(store::Transaction& tx, int batch);

// Matching events in the rooms `user_id` is or was joined to (current membership join,
// leave or ban), best first (order "rank": FTS5's bm25, then newest) or newest first
// ("recent"). Returns (stream, rank) pairs from raw position `offset`, at most `limit`;
// the caller filters them by history visibility.
struct SearchHit {
  std::int64_t stream = 0;
  double rank = 0;
  std::string room_id;
};
Result<std::vector<SearchHit>> search_events(store::Transaction& tx, std::string_view user_id, std::string_view query,
                                             bool by_rank, std::int64_t offset, int limit);
Result<std::int64_t> count_search_hits(store::Transaction& tx, std::string_view user_id, std::string_view query);

}  // namespace hearth::matrix
