// Event relations (spec: "Forming relationships between events", threads, edits,
// references): an index of every accepted event whose content has `m.relates_to`, the
// reads the /relations and /threads endpoints page through, and the bundled aggregations
// (`unsigned["m.relations"]`) served events carry.
//
// The index, matrix_relations, is written in the same transaction as the event itself
// (RoomStore::insert_event, so local and federated events alike) and loses an event's row
// when a redaction is applied to it (the redacted content has no `m.relates_to`). All
// functions run inside a store Transaction on the caller's thread; nothing is cached.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "matrix/room_store.h"
#include "store/store.h"

namespace hearth::matrix {

// `content["m.relates_to"]` when it names a relation: rel_type and event_id both non-empty
// strings of at most 255 bytes. Replies (`m.in_reply_to` alone) are not relations.
struct RelationRef {
  std::string rel_type;
  std::string parent_id;
};
std::optional<RelationRef> relation_of(const JsonValue& content);

// Spec "Validity of replacement events": same room, same sender, same type, neither a
// state event, the original not itself an edit, and (unencrypted) `m.new_content` an
// object. Both arguments are client-format events.
bool is_valid_edit(const JsonValue& original, const JsonValue& replacement);

// What a served event's unsigned["m.relations"] is built from.
struct Aggregation {
  struct Thread {
    std::string latest_event;  // rendered client event
    std::int64_t count = 0;
    bool current_user_participated = false;
  };
  std::optional<Thread> thread;
  std::optional<std::string> replace;  // the newest valid edit, rendered
  std::vector<std::string> references;  // event ids, oldest first
};
// The `m.relations` object, or "" when there is nothing to bundle.
std::string aggregation_json(const Aggregation& a);

// One page of related events. Tokens are "r<stream>" (exclusive bounds).
struct RelationPage {
  std::vector<StoredEvent> chunk;
  std::optional<std::int64_t> next;  // stream to continue from, when more may follow
};
struct RelationQuery {
  std::string parent_id;
  std::string rel_type, event_type;  // "" = any
  std::optional<std::int64_t> from, to;
  bool backwards = true;
  int limit = 50;
  int depth = 1;  // 1: direct children; >1 (recurse): children of children too
};
Result<RelationPage> related_events(store::Transaction& tx, const RelationQuery& q);

// Thread roots of a room by latest activity, newest first; `before`: only threads whose
// latest reply is older than this stream position. With participant, only threads it
// started or replied in.
struct ThreadPage {
  std::vector<StoredEvent> roots;
  std::optional<std::int64_t> next;
};
Result<ThreadPage> thread_roots(store::Transaction& tx, std::string_view room_id,
                                std::optional<std::string_view> participant, std::optional<std::int64_t> before,
                                int limit);

// Index maintenance (called by RoomStore; the schema is matrix migration 12).
Result<void> index_relation(store::Transaction& tx, const StoredEvent& e, const JsonValue& content);
Result<void> unindex_relation(store::Transaction& tx, std::string_view event_id);

// Fills StoredEvent::bundled for each event, as `user_id` sees them.
Result<void> bundle_aggregations(store::Transaction& tx, std::vector<StoredEvent>& events, std::string_view user_id,
                                 std::int64_t now_ms);
Result<void> bundle_aggregations(store::Transaction& tx, StoredEvent& event, std::string_view user_id,
                                 std::int64_t now_ms);

}  // namespace hearth::matrix
