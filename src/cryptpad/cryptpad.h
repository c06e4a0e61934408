// hearth::cryptpad — a CryptPad-compatible backend: the netflux websocket relay, the
// history keeper (channel logs stored as rows in store/), channel metadata and the
// websocket RPC, as CryptPad 2026.2.2's clients expect them (docs/cryptpad.md lists what
// is supported and which server quirks are kept for wire compatibility).
//
// Threads and lifecycle
//   * Construct after the store is open, call migrate() (blocking), then install() the
//     websocket route (and /api/config, /api/broadcast) on the Router before
//     HttpServer::create, and start() once the server exists (Offload and RunAfter are
//     only called from then on). Destroy after the HttpServer stopped.
//   * A connection's frames are handled one at a time, in order, on net's bounded worker
//     pool (`Offload`); the handlers may block on the store there. The channel table and
//     the user table are behind one mutex; sends go through each connection's
//     thread-safe WebSocketConnection handle.
//   * A channel message is validated, appended to the store and only relayed and ACKed
//     from the store's completion (after the COMMIT): relay order is store order.
//   * Idle connections are pinged and closed from a timer scheduled with `RunAfter`.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}
namespace hearth::blobs {
class BlobStore;
}

namespace hearth::cryptpad {

struct CryptpadOptions {
  std::string websocket_path = "/cryptpad_websocket";
  std::size_t max_message_bytes = 1 << 20;   // one websocket frame
  std::size_t max_json_depth = 32;
  int ping_after_seconds = 15;               // server PING to a connection idle this long
  int idle_timeout_seconds = 60;             // then closed
  std::size_t max_queued_frames = 1000;      // frames waiting per connection; past it: close
  std::int64_t default_storage_limit = 50 << 20;  // bytes per key (GET_LIMIT)
  std::int64_t max_upload_bytes = 20 << 20;  // advertised in /api/config
  std::string http_unsafe_origin;            // advertised in /api/config; "" = unset
  std::string http_safe_origin;
  std::string history_keeper_id;             // 16 hex; "" = random per start (as CryptPad)
  int selfdestruct_delay_seconds = 30;       // a selfdestruct channel is removed this long after its last member left
  // GET /api/instance (shown on the front page); "" = unset.
  std::string instance_name, instance_description, instance_location, instance_notice;
  // Uploads (UPLOAD_STATUS, /upload-blob, /blob) store files here; null: uploads fail
  // with E_NO_STORAGE. Not owned; must outlive the service.
  blobs::BlobStore* blobs = nullptr;
  std::vector<std::string> admin_keys;       // CryptPad admins (more by decree)
  std::string data_dir;                      // measured by the admin panel's DISK_USAGE; "" = not measured
  std::string web_root;                      // a CryptPad checkout whose web application is served; "" = none
};

using Offload = std::function<bool(std::function<void()>)>;
using RunAfter = std::function<void(std::chrono::milliseconds, std::function<void()>)>;

class CryptpadService {
 public:
  CryptpadService(CryptpadOptions options, store::Store& store, Clock& clock, Logger& log, MetricsRegistry& metrics,
                  Offload offload, RunAfter run_after);
  ~CryptpadService();
  CryptpadService(const CryptpadService&) = delete;
  CryptpadService& operator=(const CryptpadService&) = delete;

  Result<void> migrate();
  // Registers the websocket path, GET /api/config, /api/broadcast and /api/instance,
  // POST /api/auth, GET /block/…, POST /upload-blob, GET/HEAD /blob/….
  void install(net::Router& router);
  // Starts the idle-connection timer (through RunAfter); call once the server exists.
  void start();

  // The history keeper's netflux id (16 hex characters).
  const std::string& history_keeper_id() const;
  std::size_t connection_count() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace hearth::cryptpad
