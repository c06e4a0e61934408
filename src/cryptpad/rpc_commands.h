// The RPC command table (private to the module): one entry per command with whether it
// needs a signed session, registered by the command-group files rpc_files.cc,
// rpc_pins.cc and rpc_channels.cc. run_anonymous_rpc / run_authenticated_rpc (rpc.cc)
// dispatch through it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cryptpad/rpc.h"

namespace hearth::cryptpad {

using RpcError = tl::unexpected<std::string>;
inline RpcError rpc_error(std::string code) { return RpcError(std::move(code)); }

// What a command handler sees. `key` is empty for anonymous calls.
struct RpcCall {
  RpcContext& ctx;
  const std::string& key;
  const RawValue& arg;
};

// Anonymous result: one raw JSON value. Signed result: raw JSON values spread after the
// cookie in the reply.
using RpcValues = std::vector<std::string>;
using RpcHandler = tl::expected<RpcValues, std::string> (*)(RpcCall&);

struct RpcCommand {
  std::string_view name;
  bool authenticated;      // needs [sig, key, cookie, ...]; else [CMD, arg]
  RpcHandler handler;
  bool drops_key = false;  // DESTROY: the connection no longer holds the key
  bool ends_session = false;  // EXPIRE_SESSION: no new cookie
  bool unsigned_ok = false;   // UPLOAD: cookie checked, signature not (as CryptPad)
};

// One list per command group.
const std::vector<RpcCommand>& file_commands();     // sizes, IS_NEW_CHANNEL, metadata reads, private messages
const std::vector<RpcCommand>& pin_commands();      // cookie, pins, quota
const std::vector<RpcCommand>& channel_commands();  // SET_METADATA and owner commands
const std::vector<RpcCommand>& upload_commands();   // UPLOAD_STATUS, UPLOAD, UPLOAD_COMPLETE…
const std::vector<RpcCommand>& admin_commands();    // ADMIN [CMD, ...]

// Shared helpers.
std::optional<std::vector<std::string>> rpc_string_list(const RawValue& v, const ParseLimits& limits);
std::int64_t rpc_channel_size(RpcContext& ctx, const std::string& id);

}  // namespace hearth::cryptpad
