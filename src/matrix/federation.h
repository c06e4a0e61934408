// Server-server building blocks (spec: server-server API, "Authentication", "Retrieving
// server keys", "Resolving server names", "Checks performed on receipt of a PDU"): the
// X-Matrix request signature, remote server keys and their cache, and the checks that need
// no storage (signature, content hash). No I/O here: fetching is injected, so all of it is
// unit-tested; federation_api.cc wires it to the HTTPS client and the room store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "matrix/events.h"

namespace hearth::matrix {

// Authorization: X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="..."
struct XMatrixAuth {
  std::string origin, destination, key_id, sig;
};
// Parses the header value (params in any order, quoted or bare, comma-separated; at most
// 2 KiB). invalid_argument when origin, key or sig is missing.
Result<XMatrixAuth> parse_x_matrix(std::string_view header);
// The JSON object the request signature covers.
JsonValue x_matrix_request_json(std::string_view method, std::string_view uri, std::string_view origin,
                                std::string_view destination, const JsonValue* content);
// The header value for a request we sign.
std::string x_matrix_header(std::string_view method, std::string_view uri, std::string_view origin,
                            std::string_view destination, const JsonValue* content, const SigningKey& key);

// One verify key of a remote server, valid until valid_until_ms.
struct RemoteKey {
  std::string public_key;  // raw 32 bytes
  std::int64_t valid_until_ms = 0;
};
// Checks a /_matrix/key/v2/server answer for `server`: server_name matches, it is signed
// by (each of) its own verify keys, and it is still valid at `now_ms`. Returns its keys.
Result<std::map<std::string, RemoteKey>> verify_server_keys(const JsonValue& response, std::string_view server,
                                                            std::int64_t now_ms);

// Remote servers' keys, fetched on first use and cached until their valid_until_ts (at
// most max_cache_ms). A failed fetch is remembered for retry_after_ms so a peer cannot make
// us fetch on every request. Thread-safe (one mutex; the fetch runs outside it).
class ServerKeyCache {
 public:
  // Returns the parsed /_matrix/key/v2/server body of a server (errors as values).
  using Fetch = std::function<Result<JsonValue>(const std::string& server)>;
  ServerKeyCache(Fetch fetch, std::int64_t max_cache_ms = 24LL * 3600 * 1000, std::int64_t retry_after_ms = 10000)
      : fetch_(std::move(fetch)), max_cache_ms_(max_cache_ms), retry_after_ms_(retry_after_ms) {}

  // The key `key_id` of `server`, fetching when unknown or expired.
  Result<std::string> key(const std::string& server, const std::string& key_id, std::int64_t now_ms);

 private:
  Fetch fetch_;
  std::int64_t max_cache_ms_, retry_after_ms_;
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, RemoteKey> keys_;  // guarded by mu_
  std::map<std::string, std::int64_t> failed_until_;                // guarded by mu_
};

// Verifies that `object` carries a valid signature of `server` (any of its key ids the
// cache can provide). permission_denied otherwise.
Result<void> verify_server_signature(const JsonValue& object, const std::string& server, ServerKeyCache& keys,
                                     std::int64_t now_ms);

// What the receipt checks decided about a PDU's own integrity.
struct PduIntegrity {
  std::string event_id;
  JsonValue pdu;             // as received, or redacted when the content hash did not match
  bool redacted = false;     // content hash mismatch (spec: the event is redacted, then processed)
};
// Size (65,536 bytes), shape (room_id, sender, type, content, auth/prev events arrays of at
// most 10/20 ids), the sender's server's signature over the redacted event, then the
// content hash. invalid_argument / permission_denied when the event must be dropped.
Result<PduIntegrity> check_pdu_integrity(const JsonValue& pdu, RoomVersion version, ServerKeyCache& keys,
                                         std::int64_t now_ms);

// "host:port" of a static destination ("server=host:port" entries), or nullopt.
struct Destination {
  std::string host;
  int port = 8448;
  std::string tls_name;  // the name the certificate must carry
};
Result<std::map<std::string, Destination>> parse_destinations(const std::vector<std::string>& entries);

}  // namespace hearth::matrix
