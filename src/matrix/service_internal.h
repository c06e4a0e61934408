// Private to src/matrix: the state MatrixService's handlers share, and the request
// context each handler gets. Handlers run on net's blocking worker pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "accounts/accounts.h"
#include "blobs/blobs.h"
#include "core/clock.h"
#include "matrix/canonical_json.h"
#include "matrix/events.h"
#include "matrix/matrix.h"
#include "matrix/push_rules.h"
#include "matrix/shared_results.h"
#include "matrix/room_store.h"
#include "matrix/sync_filter.h"
#include "net/net.h"
#include "store/store.h"

namespace hearth::net {
struct ClientResponse;
}

namespace hearth::matrix {

// A handler's failure as the client sees it: HTTP status, errcode, message.
struct ApiError {
  int status;
  std::string errcode;
  std::string error;
  std::int64_t retry_after_ms = 0;  // M_LIMIT_EXCEEDED
};
template <typename T>
using ApiResult = tl::expected<T, ApiError>;

inline tl::unexpected<ApiError> api_error(int status, std::string errcode, std::string error) {
  return tl::unexpected(ApiError{status, std::move(errcode), std::move(error)});
}
// The one mapping from core errors to Matrix errcodes.
ApiError to_api_error(const Error& e);
net::HttpResponse error_response(const ApiError& e);
// Stores account data (global when room is "") at the next account-data position (profile_api.cc).
Result<void> upsert_account_data(store::Transaction& tx, const std::string& user_id, const std::string& room,
                                 std::string_view type, const std::string& content);
net::HttpResponse json_response(int status, std::string body);

struct Ctx {
  net::HttpRequest http;
  net::Respond respond;
  std::vector<std::string> params;  // path placeholders, percent-decoded
  std::string user_id, localpart, device_id;  // set when the route needs auth
  std::string query_param(std::string_view key) const;
  // The body as a JSON object ("" counts as {}); M_NOT_JSON / M_BAD_JSON otherwise.
  ApiResult<JsonValue> body(std::int64_t max_bytes) const;
};

struct SyncParams;
// Parses "s<events>[_<account data>[_<receipts>[_<typing>[_<to-device>[_<device lists>[_<presence>]]]]]]"
// into p (since and the since_* fields); false when malformed. "" leaves p unchanged.
bool parse_since(const std::string& token, SyncParams& p);

struct SyncParams {
  std::optional<std::int64_t> since;  // events stream position ("s<N>_<M>": N)
  std::int64_t since_account_data = 0;  // account data position (M)
  std::int64_t since_receipts = 0;      // receipts position (third part, if any)
  std::int64_t since_typing = 0;        // typing serial (fourth part, if any)
  std::int64_t since_to_device = 0;     // last to-device message delivered (fifth part)
  std::int64_t since_device_lists = 0;  // device-list change position (sixth part)
  std::int64_t since_presence = 0;      // presence serial (seventh part)
  SyncFilter filter;
  int timeout_ms = 0;
  int limit = 10;
  bool full_state = false;
};

// Long-poll waiters for /sync (see matrix.h). Thread-safe.
class SyncHub {
 public:
  struct Waiter {
    std::uint64_t id = 0;
    std::string user_id, device_id;
    SyncParams params;
    net::Respond respond;
    std::vector<std::string> keys;  // rooms it is in, and its own user id
  };
  // A counter bumped by every wake(); read it before a sync takes its snapshot.
  std::uint64_t generation();
  // Parks the waiter unless something was committed since `seen` (then false).
  bool park(std::shared_ptr<Waiter> w, std::uint64_t seen);
  std::shared_ptr<Waiter> take(std::uint64_t id);
  // Bumps the generation and removes the waiters of `keys`.
  std::vector<std::shared_ptr<Waiter>> wake(const std::vector<std::string>& keys);
  std::size_t size();
  // Removes and returns every waiter (server stop).
  std::vector<std::shared_ptr<Waiter>> take_all();
  std::uint64_t next_id() { return ++next_id_; }

 private:
  std::mutex mu_;
  std::uint64_t generation_ = 0;
  std::atomic<std::uint64_t> next_id_{0};
  std::unordered_map<std::uint64_t, std::shared_ptr<Waiter>> waiters_;
  std::unordered_multimap<std::string, std::uint64_t> by_key_;
};

// Who is typing where (in memory only, as the spec intends), and the serial that orders
// typing changes. Serials are max(previous + 1, wall clock ms), so they keep growing
// across restarts and an old token never hides a new change. Thread-safe.
class TypingRooms {
 public:
  explicit TypingRooms(Clock& clock) : clock_(clock) {}
  std::int64_t serial();
  // Sets or clears; returns the change's serial (0 if nothing changed).
  std::int64_t set(const std::string& room_id, const std::string& user_id, bool typing, std::int64_t expires_ms);
  // Drops typers whose time passed; the rooms that changed.
  std::vector<std::string> expire(std::int64_t now_ms);
  // The room's typers if it changed after `since` (always when since < 0).
  std::optional<std::vector<std::string>> changed(const std::string& room_id, std::int64_t since);

 private:
  struct Room {
    std::map<std::string, std::int64_t> typers;  // user -> expiry (ms)
    std::int64_t serial = 0;
  };
  Clock& clock_;
  std::mutex mu_;
  std::int64_t serial_ = 0;
  std::unordered_map<std::string, Room> rooms_;
};

// Failed password logins per user and per IP in a sliding window; past the limit a login
// is refused with M_LIMIT_EXCEEDED before the password is even checked (no argon2 work).
// Thread-safe.
class LoginThrottle {
 public:
  static constexpr int kPerUser = 5;
  static constexpr int kPerIp = 20;
  static constexpr std::int64_t kWindowMs = 60'000;
  // 0 if allowed, else how long to wait.
  std::int64_t retry_after_ms(const std::string& user, const std::string& ip, std::int64_t now_ms);
  void failed(const std::string& user, const std::string& ip, std::int64_t now_ms);
  void succeeded(const std::string& user);

 private:
  struct Window {
    std::int64_t start_ms = 0;
    int failures = 0;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Window> windows_;
};

struct Federation;    // federation_api.cc
struct PushDelivery;  // push_delivery.cc

// A stored media file as downloads serve it (media_api.cc).
struct MediaFile {
  blobs::Blob blob;
  std::string content_type, filename;
};
// The federation tables (component "matrix_federation"), migrated with the matrix ones.
const std::vector<store::Migration>& federation_migrations();

struct MatrixService::Impl : std::enable_shared_from_this<MatrixService::Impl> {
  Impl(MatrixOptions o, accounts::Accounts& a, store::Store& s, Clock& c, Logger& l, MetricsRegistry& m, Offload off,
       RunAfter ra, SigningKey k)
      : options(std::move(o)), accounts(a), store(s), clock(c), log(l), metrics(m), offload(std::move(off)),
        run_after(std::move(ra)), key(std::move(k)), rooms(options.server_name, key, options.federation) {}

  MatrixOptions options;
  accounts::Accounts& accounts;
  store::Store& store;
  Clock& clock;
  Logger& log;
  MetricsRegistry& metrics;
  Offload offload;
  RunAfter run_after;
  SigningKey key;
  RoomStore rooms;

  std::mutex mu;  // public_url
  std::string public_url;
  SyncHub hub;
  LoginThrottle login_throttle;
  TypingRooms typing{clock};
  // Full room state (GET /rooms/{id}/state) keyed by room and room depth: one computation
  // serves every request at that version (incident I15). At most 64 rooms or 64 MiB.
  SharedResults full_state{64, std::size_t{64} << 20};
  SharedResults thumbnails{512, std::size_t{32} << 20};  // "<content type>\n<bytes>" by sha/size/method
  Counter& full_state_computed = metrics.counter(
      "hearth_matrix_full_state_computed_total", "Full room states rendered for GET /rooms/{id}/state");
  Counter& full_state_shared = metrics.counter(
      "hearth_matrix_full_state_shared_total", "GET /rooms/{id}/state answers served from a shared computation");
  // The same for the room state of initial (or full_state) syncs without state filters.
  Counter& sync_state_computed = metrics.counter(
      "hearth_matrix_sync_state_computed_total", "Room states rendered for /sync (rooms new to the sync)");
  Counter& sync_state_shared = metrics.counter(
      "hearth_matrix_sync_state_shared_total", "Room states in /sync served from a shared computation");

  // skip_auth: the legacy unauthenticated media download runs a client route without a token.
  void dispatch(net::HttpRequest&& req, net::Respond respond, bool skip_auth = false);
  std::string user_id(std::string_view localpart) const { return "@" + std::string(localpart) + ":" + options.server_name; }

  // After a commit: wake the syncs that care (keys: room ids, user ids).
  void notify(std::int64_t stream, std::vector<std::string> keys);

  // Account endpoints (account_api.cc).
  net::HttpResponse versions();
  net::HttpResponse well_known();
  ApiResult<std::string> login_flows(Ctx&);
  ApiResult<std::string> login(Ctx&);
  ApiResult<std::string> login_with_token(Ctx&, const JsonValue& body);
  ApiResult<std::string> get_login_token(Ctx&);
  ApiResult<std::string> do_register(Ctx&);
  ApiResult<std::string> register_available(Ctx&);
  ApiResult<std::string> token_validity(Ctx&);
  ApiResult<std::string> whoami(Ctx&);
  ApiResult<std::string> logout(Ctx&);
  ApiResult<std::string> logout_all(Ctx&);
  ApiResult<std::string> capabilities(Ctx&);
  // Push rules and pushers (push_api.cc).
  ApiResult<std::string> pushrules(Ctx&);
  ApiResult<std::string> pushrule_get(Ctx&);
  ApiResult<std::string> pushrule_change(Ctx&);
  ApiResult<std::string> pushers_get(Ctx&);
  ApiResult<std::string> pushers_set(Ctx&);
  Result<PushRuleSet> load_push_rules(store::Transaction& tx, const std::string& user_id);
  // What evaluating an event of `sender` in the room for the user needs (member count,
  // the user's display name, the sender's notification power). The result refers to
  // `sender`, which must outlive it (callers may change it between evaluations).
  Result<PushContext> push_context(store::Transaction& tx, const std::string& room_id, const std::string& user_id,
                                   const std::string& sender);
  // Push notifications to push gateways (push_delivery.cc): created by create(), the
  // "matrix_push" migrations after the "matrix" ones.
  std::shared_ptr<PushDelivery> push;
  Result<void> init_push();
  Result<void> migrate_push();
  // Queues notifications for the events stored since the last pass and delivers what is
  // queued (on the worker pool; one pass at a time; per pusher back-off after failures).
  // Called after every commit and at start.
  void push_pump();
  // A read receipt of the user: the next pump pass sends a badge update if its unread
  // count went down.
  void push_receipt(const std::string& user_id);
  Result<void> push_queue_events();
  void push_queue_badges();
  void push_deliver();
  // The user's notification count over all joined rooms, as of stream position `upto`.
  Result<std::int64_t> total_unread(store::Transaction& tx, const std::string& user_id, std::int64_t upto,
                                    std::optional<PushRuleSet>& rules);
  ApiResult<std::string> filter_upload(Ctx&);
  ApiResult<std::string> filter_get(Ctx&);

  // Rooms (rooms_api.cc).
  ApiResult<std::string> create_room(Ctx&);
  // A room id as given, or the room an alias (#...) names: 404 for an unknown alias, 400 otherwise.
  ApiResult<std::string> resolve_room_id(const std::string& room_or_alias);
  ApiResult<std::string> join(Ctx&, const std::string& room_or_alias);
  Result<std::vector<StoredEvent>> state_for(store::Transaction& tx, const std::string& room_id, const std::string& user_id);
  ApiResult<void> check_canonical_alias(const std::string& room_id, const JsonValue& content);
  ApiResult<std::string> membership_change(Ctx&, const std::string& room_id, std::string membership, bool target_in_body);
  ApiResult<std::string> send_event(Ctx&);
  ApiResult<std::string> put_state(Ctx&);
  ApiResult<std::string> redact(Ctx&);
  ApiResult<std::string> get_state(Ctx&);
  ApiResult<std::string> get_state_event(Ctx&);
  ApiResult<std::string> messages(Ctx&);
  ApiResult<std::string> members(Ctx&);
  ApiResult<std::string> joined_members(Ctx&);
  ApiResult<std::string> joined_rooms(Ctx&);
  ApiResult<std::string> get_event(Ctx&);
  ApiResult<std::string> alias_get(Ctx&);
  ApiResult<std::string> alias_put(Ctx&);
  // Directory and context (directory_api.cc).
  ApiResult<std::string> alias_delete(Ctx&);
  ApiResult<std::string> room_aliases(Ctx&);
  ApiResult<std::string> context(Ctx&);
  ApiResult<std::string> visibility_get(Ctx&);
  ApiResult<std::string> visibility_put(Ctx&);
  ApiResult<std::string> public_rooms(Ctx&);
  // Relations and threads (relations_api.cc).
  ApiResult<std::string> relations(Ctx&);
  ApiResult<std::string> threads(Ctx&);
  // Server-side search (search_api.cc). search_backfill indexes older events one write job
  // at a time, paced by run_after, until none are left.
  ApiResult<std::string> search(Ctx&);
  void search_backfill();
  // Room upgrades (upgrade_api.cc).
  ApiResult<std::string> upgrade_room(Ctx&);
  // Knocking (knock_api.cc).
  ApiResult<std::string> knock(Ctx&);
  std::atomic<bool> search_backfill_done{false};
  // Appends one event as `ctx.user_id` in its own write job.
  ApiResult<AppendedEvent> append_one(const std::string& room_id, NewEvent ev);
  // Checks that the user is (or was) in the room; returns the membership. With
  // world_readable_ok, anyone may read a room whose history is world_readable (spec:
  // history visibility); such a reader's membership is returned as "".
  ApiResult<std::string> require_member(store::Transaction& tx, const std::string& room_id, const std::string& user,
                                        bool must_be_joined, bool world_readable_ok = false);

  // Sync (sync_api.cc). Returns nullopt when the request was parked.
  std::optional<ApiResult<std::string>> sync(Ctx&);
  ApiResult<std::string> run_sync(const std::string& user_id, const std::string& device_id, const SyncParams& p,
                                  bool* empty, std::vector<std::string>* keys);
  // Lazy-loading members: keeps the member events of the timeline's senders (and the
  // user's own) in `state`, adding those it lacks as of stream position `first`.
  Result<void> lazy_members(store::Transaction& tx, const std::string& room_id, const std::string& user_id,
                            const std::vector<StoredEvent>& timeline, std::int64_t first, std::vector<StoredEvent>& state);
  // {"highlight_count":H,"notification_count":N}: the events after the user's read receipt
  // that the user's push rules make notify (the last 500 at most).
  Result<std::string> unread_counts(store::Transaction& tx, const std::string& room_id, const std::string& user_id,
                                    std::int64_t joined_at, std::int64_t upto, std::optional<PushRuleSet>& rules);
  // The room summary: m.heroes (up to 5), m.joined_member_count, m.invited_member_count.
  Result<std::string> room_summary(store::Transaction& tx, const std::string& room_id, const std::string& user_id);

  // Profiles, account data, devices (profile_api.cc).
  ApiResult<std::string> profile_get(Ctx&);
  ApiResult<std::string> profile_field_get(Ctx&);
  ApiResult<std::string> profile_field_put(Ctx&);
  ApiResult<std::string> account_data_get(Ctx&);
  ApiResult<std::string> account_data_put(Ctx&);
  ApiResult<std::string> tags_get(Ctx&);
  ApiResult<std::string> tag_change(Ctx&, bool remove);
  ApiResult<std::string> devices(Ctx&);
  // Typing and receipts (ephemeral_api.cc).
  ApiResult<std::string> typing_put(Ctx&);
  ApiResult<std::string> receipt(Ctx&);
  ApiResult<std::string> read_markers(Ctx&);
  // thread_id: "" (unthreaded), "main" or a thread root's event id (checked by receipt()).
  // federate: a public receipt of a local user is also sent to the room's other servers.
  ApiResult<void> store_receipt(const std::string& room_id, const std::string& user_id, const std::string& type,
                                const std::string& event_id, const std::string& thread_id = "", bool federate = true);
  void expire_typing();
  ApiResult<std::string> device(Ctx&);
  ApiResult<std::string> device_put(Ctx&);  // rename (display_name)
  ApiResult<std::string> user_directory_search(Ctx&);
  // The member event content for joining/updating: membership plus profile fields.
  Result<JsonValue> member_content(store::Transaction& tx, const std::string& user_id, std::string_view membership);
  void finish_waiter(std::shared_ptr<SyncHub::Waiter> w);

  // End-to-end encryption and devices (e2e_api.cc).
  ApiResult<std::string> keys_upload(Ctx&);
  ApiResult<std::string> keys_query(Ctx&);
  ApiResult<std::string> keys_claim(Ctx&);
  ApiResult<std::string> keys_changes(Ctx&);
  ApiResult<std::string> send_to_device(Ctx&);
  ApiResult<std::string> device_signing_upload(Ctx&);
  ApiResult<std::string> signatures_upload(Ctx&);
  ApiResult<std::string> device_delete(Ctx&);
  ApiResult<std::string> delete_devices(Ctx&);
  // User-interactive authentication with the account password (single stage, so no
  // server-side session). On failure the 401 UIA answer was already sent (status 0).
  ApiResult<void> require_password(Ctx& ctx, const JsonValue& body);
  ApiResult<void> delete_devices_of(const std::string& user, const std::string& localpart,
                                    const std::vector<std::string>& device_ids);
  // The user's joined rooms and the user itself: the sync waiter keys a device-list change wakes.
  std::vector<std::string> joined_rooms_and_self(store::Transaction& tx, const std::string& user);
  // The /sync members to_device, device_lists, device_one_time_keys_count and
  // device_unused_fallback_key_types (with a leading comma).
  Result<std::string> e2e_sync_sections(store::Transaction& tx, const std::string& user_id, const std::string& device_id,
                                        const SyncParams& p, bool initial, std::int64_t* next_td, std::int64_t* next_dl,
                                        bool* nonempty);
  // Presence (ephemeral_api.cc): in memory, like typing; delivered in /sync `presence`.
  struct Presence {
    std::string state = "offline", status_msg;
    std::int64_t last_active_ms = 0;
    std::int64_t serial = 0;  // orders presence changes for /sync tokens
  };
  std::mutex presence_mu;
  std::unordered_map<std::string, Presence> presence;
  std::int64_t presence_serial = 0;  // under presence_mu; max(previous + 1, wall clock ms)
  ApiResult<std::string> presence_get(Ctx&);
  ApiResult<std::string> presence_put(Ctx&);
  // Sets the user's presence (status_msg: nullopt keeps it, and then an unchanged state is
  // no change) and wakes the syncs sharing a room; false past the in-memory bound.
  bool set_presence(const std::string& user_id, std::string_view state, std::optional<std::string> status_msg);
  // The /sync presence events (comma-separated) of the user and of users sharing a joined
  // room with it, changed after serial `since` (-1: all); *next: the serial to resume from.
  Result<std::string> presence_section(store::Transaction& tx, const std::string& user_id, std::int64_t since,
                                       const EventFilter& filter, std::int64_t* next);
  // Password change and deactivation (account_api.cc).
  ApiResult<std::string> password_change(Ctx&);
  ApiResult<std::string> deactivate(Ctx&);
  std::function<Result<void>(const std::string&)> account_deleted;  // under mu
  // Media repository (media_api.cc).
  ApiResult<std::string> media_config(Ctx&);
  ApiResult<std::string> media_upload(Ctx&);
  ApiResult<std::string> media_download(Ctx&);
  ApiResult<std::string> media_thumbnail(Ctx&);
  ApiResult<std::string> media_create(Ctx&);
  ApiResult<std::string> media_upload_to(Ctx&);
  void legacy_media(net::HttpRequest&& req, net::Respond respond);
  // The route check of streamed uploads: token, declared size, quotas, before the body.
  net::BodyAdmission admit_upload(const net::HttpRequest& head);
  ApiResult<void> check_media_quota(const std::string& user_id, std::string_view localpart, std::int64_t size);
  ApiResult<blobs::Blob> store_upload(Ctx& ctx, const std::string& content_type, const std::string& filename);
  // The blobs owner of a local user: "<localpart>@<server name>", as XMPP names it.
  std::string media_owner(std::string_view localpart) const;
  std::int64_t media_expiry(std::int64_t created_ms) const;  // 0: kept
  Result<void> migrate_media();
  Result<void> migrate_legacy_media();
  // Expired pending uploads, media past matrix.media_retention_days, expired blobs.
  Result<std::int64_t> purge_media(int batch);
  void media_housekeeping();
  Result<void> forget_media(const std::string& user_id);
  // Downloads of a pending asynchronous upload parked until its PUT (or their timeout_ms,
  // at most 20 s): keyed by media id; whoever takes a waiter out of the map answers it.
  struct MediaWaiter {
    Ctx ctx;
  };
  std::mutex media_waiters_mu;
  std::multimap<std::string, std::shared_ptr<MediaWaiter>> media_waiters;  // guarded by media_waiters_mu
  std::size_t media_waiting();
  bool park_media_download(Ctx& ctx, const std::string& media_id);
  void wake_media_downloads(const std::string& media_id);
  void release_media_downloads();  // stopping: every parked download answered 504 now
  // Remote media (matrix.federation on): GET /_matrix/federation/v1/media/download/{id}
  // served for our media, fetched (and cached as a blob) for other servers' media.
  void install_media_federation_routes(net::Router& router);
  ApiResult<MediaFile> find_media(Ctx& ctx, const std::string& server, const std::string& media_id);
  Result<std::optional<MediaFile>> load_remote_media(const std::string& server, const std::string& media_id);
  void federation_media_download(net::HttpRequest&& req, net::Respond respond);
  ApiResult<std::string> fetch_remote_media(const std::string& server, const std::string& media_id);
  // federation_api.cc: the X-Matrix origin of a request; a signed GET to another server.
  ApiResult<std::string> federation_origin(const net::HttpRequest& req);
  Result<net::ClientResponse> federation_get(const std::string& destination, const std::string& target,
                                             std::size_t max_response_bytes);
  // The access token of a request (header or query), or the client error.
  ApiResult<accounts::TokenOwner> authenticate(const Ctx& ctx);
  // Room key backup (backup_api.cc).
  ApiResult<std::string> backup_version_create(Ctx&);
  ApiResult<std::string> backup_version_get(Ctx&);
  ApiResult<std::string> backup_version_put(Ctx&);
  ApiResult<std::string> backup_version_delete(Ctx&);
  ApiResult<std::string> backup_keys(Ctx&);
  // Federation (federation_api.cc): created by install_federation_routes when enabled.
  std::shared_ptr<Federation> federation;
  Result<void> init_federation();
  void install_federation_routes(net::Router& router);
  // Sends what the outbox holds (on the worker pool; one pass at a time, per destination
  // with exponential back-off after a failure). Called after every commit and at start.
  void federation_pump();
  // Sends one destination's queued PDUs and EDUs (at most one transaction in flight per
  // destination; see federation_api.cc).
  void federation_deliver(const std::string& destination);
  // Queues an EDU for every other server with a joined member in the room and sends it.
  void federation_edu(const std::string& room_id, std::string_view type, const JsonValue& content);
  void federation_edu_to(const std::set<std::string>& servers, std::string_view type, const JsonValue& content);
  // E2E for users of other servers: their servers' /user/keys/query or /user/keys/claim for
  // the remote users of `wanted` (a client request's device_keys / one_time_keys), as
  // comma-separated "user":{...} members to splice into our answer; failures per server.
  struct RemoteKeys {
    std::string device_keys, master_keys, self_signing_keys, one_time_keys, failures;
  };
  RemoteKeys remote_keys(const JsonValue& wanted, bool claim);
  // sendToDevice messages for users of other servers, as m.direct_to_device EDUs.
  void remote_to_device(const std::string& sender, const std::string& type, const std::string& txn,
                        const JsonValue& messages);
  // A local user joins a room of another server (make_join / send_join there); the room's
  // state and auth chain from the answer are checked (signatures, hashes, auth rules) and
  // stored, then the join. Returns the /join answer.
  ApiResult<std::string> join_remote(Ctx& ctx, const std::string& room_id);
  // /messages reached the start of our copy of a remote room: fetches up to `limit` older
  // events with backfill from a server in the room, checks them and stores them before the
  // room's history. Returns how many were stored (0 when the room has no older history).
  Result<int> backfill_room(const std::string& room_id, int limit);
  // A local user invites a user of another server: the invite goes to that server
  // (PUT /v2/invite), which signs it; then it is appended here. Returns the /invite answer.
  ApiResult<std::string> invite_remote(Ctx& ctx, const std::string& room_id, const std::string& target,
                                       const std::string& reason);
  // A local user rejects an invite from another server: make_leave / send_leave at the
  // inviting server, then the invite is forgotten (also when that server cannot be reached).
  ApiResult<std::string> reject_remote_invite(Ctx& ctx, const std::string& room_id);
  // Invites of the user to rooms of other servers received after account-data position
  // `since_position` (-1: all): (room id, the invite_state events, comma-separated).
  Result<std::vector<std::pair<std::string, std::string>>> remote_invites(store::Transaction& tx,
                                                                          const std::string& user_id,
                                                                          std::int64_t since_position);

  // Deletes the to-device messages a sync token acknowledged (one write, only if any).
  Result<void> ack_to_device(const std::string& user_id, const std::string& device_id, std::int64_t upto);
};

}  // namespace hearth::matrix
