// hearth::matrix — the Matrix client-server API (spec v1.x, room versions 10 and 11).
//
// MatrixService installs its HTTP routes (/_matrix/client/{r0,v3,v1}/..., and
// /.well-known/matrix/client) on net's Router. Every client route runs on net's blocking
// worker pool (RouteOptions::blocking): handlers use accounts/ and the store's *_sync
// calls there, never on a shard thread. Every event is built as a federation PDU (canonical
// JSON, content hash, reference-hash event id, ed25519 signature with the server key kept
// in <data>/matrix/signing.key), checked against the room version's auth rules, and its id
// is returned only after the write job that stored it committed.
//
// /sync long-polls without polling loops: a request with nothing new parks a waiter
// (holding its Respond) keyed by the rooms it is in and by its user; appending an event
// wakes the waiters of that room (and of a member event's target), whose sync then runs
// again on the worker pool. A timer (RunAfter) answers waiters whose timeout passed.
//
// Lifecycle: create() after accounts/ and the store are open, migrate(), install_routes()
// before the Router is handed to the HttpServer, set_public_url() once the listeners are
// bound; on stop, release_waiters() right after HttpServer::stop() so parked syncs are
// answered within the drain; destroy after the server stopped.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

namespace hearth {
class Clock;
}
namespace hearth::accounts {
class Accounts;
}
namespace hearth::store {
class Store;
}
namespace hearth::net {
class Router;
}
namespace hearth::blobs {
class BlobStore;
}

namespace hearth::matrix {

struct MatrixOptions {
  std::string server_name = "localhost";  // the part after ':' in @user:server
  std::string signing_key_path;           // "<data>/matrix/signing.key"
  std::string default_room_version = "11";
  std::int64_t max_body_bytes = 1 << 20;  // client request bodies (also M_TOO_LARGE)
  std::int64_t max_event_bytes = 65536;   // a PDU, as the spec limits it
  int max_sync_timeout_ms = 30000;        // longer client timeouts are shortened to this
  int default_timeline_limit = 10;
  int max_timeline_limit = 100;
  // Media live in the shared file store (required; it outlives the service): one reference
  // per upload, owned by "<localpart>@<server_name>" like the account's XMPP uploads, so
  // its per-file limit and daily quota apply too.
  blobs::BlobStore* blobs = nullptr;
  std::string media_dir;                              // "<data>/media": the old store, migrated at start
  std::int64_t max_upload_bytes = 50 << 20;           // one upload (M_TOO_LARGE beyond)
  std::int64_t media_quota_bytes = std::int64_t{1} << 30;  // all uploads of one user
  int media_retention_days = 0;                       // media deleted this long after upload; 0: kept
  int max_pending_uploads = 10;                       // asynchronous uploads created, not yet sent
  // Identical full-state reads at the same room version share one computation (I15).
  bool coalesce_requests = true;
  // Push notifications to push gateways (docs/matrix.md, "Push notifications").
  int max_pushers_per_user = 20;
  int push_queue_per_pusher = 100;  // queued notifications per pusher; oldest dropped past it
  int push_timeout_ms = 10000;      // one request to a gateway
  bool push_to_private_addresses = false;  // gateways resolving to non-public addresses
  // Federation (server-server API, first slice: incoming joins and PDUs; see docs/matrix.md).
  bool federation = false;                          // serve /_matrix/federation/...
  std::vector<std::string> federation_destinations;  // "server=host:port", before .well-known
  std::string federation_ca_file;                    // trust anchors for peers; "": system store
  int federation_timeout_ms = 10000;                 // one outgoing request (key fetch, well-known)
  // TEST ONLY (incident I19's defence switch): incoming PDUs skip signature, hash and auth
  // checks and overwrite the state. Never set on a real server.
  bool federation_insecure_skip_checks_for_tests = false;
};

// Runs a blocking job on the worker pool; false when the pool is saturated.
using Offload = std::function<bool(std::function<void()>)>;
// Runs a (non-blocking) function on some event loop after a delay.
using RunAfter = std::function<void(std::chrono::milliseconds, std::function<void()>)>;

class MatrixService {
 public:
  // Loads or creates the signing key (errors as values from create()).
  static Result<std::unique_ptr<MatrixService>> create(MatrixOptions options, accounts::Accounts& accounts,
                                                       store::Store& store, Clock& clock, Logger& log,
                                                       MetricsRegistry& metrics, Offload offload, RunAfter run_after);
  ~MatrixService();
  MatrixService(const MatrixService&) = delete;
  MatrixService& operator=(const MatrixService&) = delete;

  // Applies the "matrix" schema migrations; blocking, at start-up.
  Result<void> migrate();
  void install_routes(net::Router& router);
  // An account was deleted ("local@domain"): the Matrix user leaves every room it is in
  // or invited to (leave events, so the rooms see it go), and its profile, account data,
  // receipts and filters are removed. The room history it wrote stays, as in any Matrix
  // room. Blocking (storage); call it off the event loops. migrate() also sweeps accounts
  // deleted while the daemon was stopped.
  Result<void> forget_account(const std::string& bare);
  // Called with "local@domain" after a user deactivated their account over Matrix (the
  // account is already deleted in accounts/): the daemon's account-deletion cleanup (XMPP
  // and Matrix). Without it, only forget_account() runs. Thread-safe; set before serving.
  void set_account_deleted_hook(std::function<Result<void>(const std::string&)> hook);
  // Starts background work that needs the running server's offload/run_after: the
  // federation outbox and the push notification queue left from before a restart are sent, and events stored before the
  // search index existed are indexed (a write job of 500 every 20 ms). Call once after the HttpServer
  // exists (e.g. with set_public_url).
  void start_background();
  // The base URL clients are told in /.well-known/matrix/client. Thread-safe.
  void set_public_url(std::string url);
  // Answers every parked /sync now (with what it would get at its timeout), so that a
  // server stop need not wait for long-polls to time out. Blocking (storage reads): call
  // it from a thread that is not a shard, e.g. right after HttpServer::stop().
  void release_waiters();
  // "ed25519:a_1b2c" and its public key (unpadded base64), for the banner and tests.
  std::string signing_key_id() const;
  std::string signing_public_key() const;

  struct Impl;

 private:
  explicit MatrixService(std::unique_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace hearth::matrix
