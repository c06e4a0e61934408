// The websocket RPC (requests sent to the history keeper that are not history commands)
// and the HTTP endpoints /api/config and /api/broadcast.
//
// Anonymous requests `[txid, [CMD, arg]]` and signed ones
// `[txid, [sig, edPublic, cookie, CMD, arg]]`, where sig is an ed25519 detached signature
// over the raw JSON text `[cookie,CMD,arg]`. Handlers run on net's worker pool and may
// block on the store. Results are raw JSON values; errors are CryptPad's error codes.
// Commands are registered in a table (rpc_commands.h), one file per command group.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <tl/expected.hpp>

#include "cryptpad/channel_store.h"
#include "cryptpad/cryptpad.h"
#include "cryptpad/metadata.h"
#include "cryptpad/protocol.h"

namespace hearth {
class Clock;
}

namespace hearth::cryptpad {

// RPC sessions keyed by public key: the two newest cookie tokens, expired after five
// minutes without use. Thread-safe.
class RpcSessions {
 public:
  explicit RpcSessions(Clock& clock) : clock_(clock) {}
  // The session's current cookie, creating the session (or a newer token) as needed.
  std::string cookie_for(const std::string& key);
  // True when `cookie` carries this server's pid and one of the session's two tokens.
  bool valid(const std::string& key, const std::string& cookie);
  void expire(const std::string& key);

 private:
  struct Session {
    std::vector<std::pair<std::string, std::int64_t>> tokens;  // (token, created ms), newest last
    std::int64_t last_used = 0;
  };
  void sweep_locked(std::int64_t now);
  Clock& clock_;
  std::mutex mu_;
  std::map<std::string, Session> sessions_;
};

class CryptpadFiles;
class CryptpadAdmin;
class CryptpadAuth;

struct RpcContext {
  ChannelStore& store;
  RpcSessions& sessions;
  Clock& clock;
  const CryptpadOptions& options;
  const ParseLimits& limits;
  std::function<void(const std::string&, const ChannelMeta&)> metadata_changed;
  std::function<ChannelMeta(const std::string&)> meta_of;
  std::function<tl::expected<std::int64_t, std::string>(const std::string&, const std::string&)> write_private_message;
  // The channel's stored state changed under its members (deleted, cleared, trimmed):
  // `notice` (a JSON object, may be empty) goes to every member from the history keeper
  // and the cached metadata is dropped.
  std::function<void(const std::string&, const std::string&)> channel_changed;
  CryptpadFiles* files = nullptr;  // uploads and blobs
  CryptpadAdmin* admin = nullptr;  // admins, limits, decrees
  CryptpadAuth* auth = nullptr;    // login blocks (admin archival)
  std::function<std::pair<std::int64_t, std::int64_t>()> session_stats;  // connections, unique addresses
  std::function<std::int64_t()> active_channels;
  std::string data_dir;                                                   // for DISK_USAGE
  // The storage limit of a key (decrees first, then the configured default).
  std::int64_t limit_for(const std::string& key) const;
};

// A raw JSON value, or an error code.
tl::expected<std::string, std::string> run_anonymous_rpc(RpcContext& ctx, const std::string& command,
                                                         const RawValue& arg);

struct AuthenticatedReply {
  std::string cookie;
  std::vector<std::string> values;  // raw JSON values, spread after the cookie
  bool destroyed = false;           // DESTROY: the connection no longer holds the key
};
tl::expected<AuthenticatedReply, std::string> run_authenticated_rpc(RpcContext& ctx, const RpcRequest& request);

// b64(sha512(JSON of the sorted, unique pin list)) as CryptPad's GET_HASH computes it.
std::string pin_list_hash(std::vector<std::string> channels);

// GET /api/config and GET /api/broadcast (AMD modules as CryptPad serves them).
// `admins` and `default_limit` are asked at each request (decrees change them).
void install_http_routes(net::Router& router, const CryptpadOptions& options, const std::string& history_keeper,
                         std::function<std::vector<std::string>()> admins, std::function<std::int64_t()> default_limit);

}  // namespace hearth::cryptpad
