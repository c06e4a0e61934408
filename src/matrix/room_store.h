// Room storage: events as rows ordered by one global stream position, the current state
// as a table keyed by (room, type, state_key), memberships as their own table so that
// "rooms of a user" and "members of a room" are index lookups (no per-event copies of the
// state, so a room with 10,000 members and 100,000 events costs rows, not copies).
//
// Everything here runs inside a store Transaction: appends on the writer thread (one
// write job per client request, so createRoom's events commit together), reads on a
// reader. Nothing is cached across transactions; the class holds no mutable state.
//
// Stream tokens: "s<N>" means "after the event at stream position N"; N survives restarts
// because it is the events table's AUTOINCREMENT key.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "matrix/events.h"
#include "matrix/state_resolution.h"
#include "store/store.h"

namespace hearth::matrix {

const std::vector<store::Migration>& matrix_migrations();

// A PDU is at most 65,536 bytes of canonical JSON (spec: "Size limits"); append refuses
// larger ones with Errc::resource_exhausted and this message.
inline constexpr std::size_t kMaxPduBytes = 65536;
inline constexpr std::string_view kEventTooLarge = "event too large";

// One event as clients see it, with what the renderer needs.
struct StoredEvent {
  std::int64_t stream = 0;
  std::string event_id;
  std::string room_id;
  std::string type;
  std::optional<std::string> state_key;
  std::string sender;
  std::int64_t ts = 0;
  std::string client_json;     // client format without "unsigned"
  std::string unsigned_extra;  // members of "unsigned" ("" if none), e.g. "prev_content":{...}
  std::string txn_device, txn_id;
  std::string bundled;  // unsigned["m.relations"] when set (relations.h fills it), else ""
};

// The matrix_events columns read_stored_event expects, in its order; `alias` prefixes each
// ("e" gives "e.stream, e.event_id, ...").
std::string stored_event_columns(std::string_view alias = "");
// A StoredEvent from a row selected with stored_event_columns().
StoredEvent read_stored_event(const store::Row& r);

// The event's content (an empty object when it cannot be read).
JsonValue stored_event_content(const StoredEvent& e);

// Renders a StoredEvent for a requesting device (adds unsigned.transaction_id for the
// sender's own device, unsigned.age from `now_ms`).
std::string render_event(const StoredEvent& e, std::string_view user_id, std::string_view device_id,
                         std::int64_t now_ms);

// The per-transaction view of one room used while appending events.
struct RoomAppender {
  struct StateEntry {
    std::string event_id;
    JsonValue pdu;
  };
  std::string room_id;
  RoomVersion version = RoomVersion::v11;
  std::string last_event_id;
  std::int64_t depth = 0;
  std::map<std::pair<std::string, std::string>, StateEntry, std::less<>> state;
  bool exists = false;

  const JsonValue* lookup(std::string_view type, std::string_view key) const;
};

// Which events of a room a user may see (spec: "History visibility"), from the room's
// m.room.history_visibility events and the user's own member events (both few per room,
// loaded once per request). An event is visible when the visibility in force before it was
// world_readable; or the user's membership at it (their latest member event at or before
// it) was join; or it is the user's own member event; or it was `shared` and the user is joined now or joined later; or it was
// `invited` and the user's membership at it was invite. Rooms without the state event
// count as `shared`.
class VisibilityFilter {
 public:
  static Result<VisibilityFilter> load(store::Transaction& tx, std::string_view room_id, std::string_view user_id);
  // `own_member_event`: the user's own membership events are always visible to them.
  bool visible(std::int64_t stream, bool own_member_event = false) const;
  bool visible(const StoredEvent& e) const {
    return visible(e.stream, e.type == "m.room.member" && e.state_key && *e.state_key == user_id_);
  }
  template <typename Events>
  void apply(Events& events) const {
    std::erase_if(events, [this](const StoredEvent& e) { return !visible(e); });
  }

 private:
  std::string user_id_;
  std::vector<std::pair<std::int64_t, std::string>> visibility_;  // stream, value (ascending)
  std::vector<std::pair<std::int64_t, std::string>> membership_;  // the user's, ascending
};

struct AppendedEvent {
  std::string event_id;
  std::int64_t stream = 0;
};

struct NewEvent {
  std::string type;
  std::optional<std::string> state_key;
  std::string sender;
  JsonValue content;
  std::string txn_device, txn_id;  // idempotency (send/redact), empty if none
  std::optional<std::string> redacts;
};

class RoomStore {
 public:
  // federation_outbox: every local event appended to a room with members on other servers
  // is also queued for them (matrix_federation_outbox, in the same transaction).
  RoomStore(std::string server_name, const SigningKey& key, bool federation_outbox = false)
      : server_name_(std::move(server_name)), key_(key), outbox_(federation_outbox) {}

  // Loads a room's version, head and current state (not_found for an unknown room).
  Result<RoomAppender> load_room(store::Transaction& tx, std::string_view room_id) const;
  // A new room row (the create event is then appended like any other).
  RoomAppender new_room(std::string room_id, RoomVersion version) const;
  // Builds, authorises (auth rules), hashes, signs and stores one event; updates state,
  // memberships and the room head. permission_denied when the auth rules refuse it.
  Result<AppendedEvent> append(store::Transaction& tx, RoomAppender& room, NewEvent ev, std::int64_t now_ms) const;
  // append() in two steps: an event built, authorised, hashed and signed but not stored
  // (an invite of a remote user first goes to the invitee's server, which signs it too),
  // then stored (authorised again against the state then) and queued for other servers.
  struct BuiltEvent {
    std::string event_id;
    JsonValue pdu;
  };
  Result<BuiltEvent> build(store::Transaction& tx, RoomAppender& room, const NewEvent& ev, std::int64_t now_ms) const;
  Result<AppendedEvent> append_built(store::Transaction& tx, RoomAppender& room, const BuiltEvent& ev,
                                     const std::string& txn_device, const std::string& txn_id,
                                     std::int64_t now_ms) const;

  // Applies a committed redaction to the stored target: its PDU and client content are
  // replaced by the room version's redacted form (hashes and signatures stay valid) and
  // unsigned.redacted_because names the redaction event. not_found if unknown.
  Result<void> apply_redaction(store::Transaction& tx, const RoomAppender& room, std::string_view target_event_id,
                               std::string_view redaction_event_id) const;
  // Stores a PDU built and checked elsewhere (a remote event that passed signature, hash
  // and auth checks) as the room's newest event. With update_state, a state event also
  // replaces its (type, state_key) in the current state; without, the caller sets the
  // state (after state resolution) with set_state_row.
  Result<AppendedEvent> insert_event(store::Transaction& tx, RoomAppender& room, const std::string& event_id,
                                     const JsonValue& pdu, const std::string& pdu_json, const std::string& txn_device,
                                     const std::string& txn_id, bool update_state, std::int64_t now_ms,
                                     std::optional<std::int64_t> history_stream = std::nullopt) const;
  // (With history_stream, for backfill: the event is stored at that stream position, below
  // every other, so before the room's history; neither state nor head change.)

  // Points the current state of (type, state_key) at the stored event at `stream`
  // (memberships too, for m.room.member).
  Result<void> set_state_row(store::Transaction& tx, const std::string& room_id, const std::string& type,
                             const std::string& state_key, std::int64_t stream, std::string_view membership) const;
  // A remote event that was not accepted (incident I19): `status` "rejected" (fails the
  // auth rules against its auth events or the state before it) or "soft_failed" (fails
  // against the current state). Kept apart from matrix_events, so it is never in a
  // timeline, in the state or a prev/auth event of ours.
  Result<void> record_unaccepted(store::Transaction& tx, const std::string& room_id, const std::string& event_id,
                                 const std::string& pdu_json, std::string_view status, std::string_view reason,
                                 std::int64_t now_ms) const;
  // "rejected" / "soft_failed" for such an event, nullopt otherwise.
  Result<std::optional<std::string>> unaccepted_status(store::Transaction& tx, std::string_view event_id) const;
  // The current state as (type, state_key) -> event id, and the state just after the
  // stored event at `stream` (from the events in stream order).
  Result<StateMap> current_state_map(store::Transaction& tx, std::string_view room_id) const;
  Result<StateMap> state_map_at(store::Transaction& tx, std::string_view room_id, std::int64_t stream) const;
  // The stream position of a stored (accepted) event.
  Result<std::optional<std::int64_t>> stream_of(store::Transaction& tx, std::string_view event_id) const;

  // Outgoing federation queue: up to `limit` (id, PDU JSON) rows for a destination, oldest
  // first; the destinations with queued rows; removal once a transaction was accepted.
  struct Outgoing {
    std::int64_t id = 0;
    std::string pdu_json;
  };
  Result<std::vector<Outgoing>> outbox(store::Transaction& tx, std::string_view destination, int limit) const;
  Result<std::vector<std::string>> outbox_destinations(store::Transaction& tx) const;
  Result<void> outbox_remove(store::Transaction& tx, std::string_view destination, std::int64_t upto_id) const;
  // Catch-up after an outage: keeps only the newest queued PDU of each room for the
  // destination (the remote fetches the rest with get_missing_events). Rows dropped.
  Result<std::int64_t> outbox_keep_newest_per_room(store::Transaction& tx, std::string_view destination) const;

  // The PDU of a stored event, parsed; not_found if unknown.
  Result<JsonValue> pdu(store::Transaction& tx, std::string_view event_id) const;

  // The event id earlier stored for (room, sender, device, txn), if any. Transaction ids
  // are scoped like the request path they came with (per room), and per device.
  Result<std::optional<std::string>> find_txn(store::Transaction& tx, std::string_view room_id,
                                              std::string_view sender, std::string_view device,
                                              std::string_view txn_id) const;

  // --- reads
  Result<std::int64_t> max_stream(store::Transaction& tx) const;
  // (room_id, membership, stream of the member event) for every room the user has a
  // member event in.
  struct Membership {
    std::string room_id, membership;
    std::int64_t stream = 0;
  };
  Result<std::vector<Membership>> memberships_of(store::Transaction& tx, std::string_view user_id) const;
  Result<std::optional<std::string>> membership(store::Transaction& tx, std::string_view room_id,
                                                std::string_view user_id) const;
  // Events of a room with after < stream <= upto, the last `limit` of them, oldest first;
  // `more` is set when older ones in the range were left out.
  Result<std::vector<StoredEvent>> timeline(store::Transaction& tx, std::string_view room_id, std::int64_t after,
                                            std::int64_t upto, int limit, bool* more) const;
  // Pagination: backwards (stream <= from, newest first) or forwards (stream > from).
  Result<std::vector<StoredEvent>> paginate(store::Transaction& tx, std::string_view room_id, std::int64_t from,
                                            bool backwards, int limit, std::int64_t upto) const;
  // Current state events (client format); `changed_after`: only those whose stream lies
  // in (changed_after, before). `without_members`: leaves out m.room.member events (a
  // lazy-loading /sync adds the few it needs itself instead of reading every member).
  Result<std::vector<StoredEvent>> current_state(store::Transaction& tx, std::string_view room_id,
                                                 std::int64_t changed_after = -1,
                                                 std::int64_t before = INT64_MAX,
                                                 bool without_members = false) const;
  Result<std::optional<StoredEvent>> state_event(store::Transaction& tx, std::string_view room_id,
                                                 std::string_view type, std::string_view state_key) const;
  // The room's state just after the event at `stream` (events are appended in order, each
  // state event replacing its (type, state_key)): what a member who left then still sees.
  Result<std::vector<StoredEvent>> state_at(store::Transaction& tx, std::string_view room_id,
                                            std::int64_t stream) const;
  Result<std::optional<StoredEvent>> event(store::Transaction& tx, std::string_view event_id) const;
  Result<std::vector<StoredEvent>> members(store::Transaction& tx, std::string_view room_id) const;

  const std::string& server_name() const { return server_name_; }

 private:
  std::string server_name_;
  const SigningKey& key_;
  bool outbox_ = false;
};

}  // namespace hearth::matrix
