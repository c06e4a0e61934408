// Signed RPC of the upload protocol (files.h has the whole flow).
#include "cryptpad/files.h"
#include "cryptpad/rpc_commands.h"

namespace hearth::cryptpad {
namespace {

CryptpadFiles* files_of(RpcCall& c) { return c.ctx.files; }

// `{size}` with a non-negative integer size; nullopt otherwise.
std::optional<std::int64_t> declared_size(RpcCall& c) {
  if (c.arg.type != RawValue::Type::object) return std::nullopt;
  auto members = parse_object(c.arg.raw, c.ctx.limits);
  if (!members) return std::nullopt;
  for (const auto& [k, v] : *members)
    if (k == "size") {
      if (!v.is_integer || v.integer < 0) return std::nullopt;
      return v.integer;
    }
  return std::nullopt;
}

tl::expected<RpcValues, std::string> upload_status(RpcCall& c) {
  if (!files_of(c)) return rpc_error("E_NO_STORAGE");
  auto size = declared_size(c);
  if (!size) return rpc_error("E_INVALID_SIZE");
  auto used = c.ctx.store.pinned_size_sync(c.key);
  if (!used) return rpc_error("E_STORAGE");
  const std::int64_t free = c.ctx.limit_for(c.key) - *used;
  auto pending = files_of(c)->status(c.key, *size, free);
  if (!pending) return rpc_error(pending.error());
  return RpcValues{*pending ? "true" : "false"};
}

tl::expected<RpcValues, std::string> upload_cancel(RpcCall& c) {
  if (!files_of(c)) return rpc_error("E_NO_STORAGE");
  files_of(c)->cancel(c.key);
  return RpcValues{};
}

// The legacy websocket path: `{chunk: base64}` (or the bare string).
tl::expected<RpcValues, std::string> upload(RpcCall& c) {
  if (!files_of(c)) return rpc_error("E_NO_STORAGE");
  std::optional<std::string> chunk;
  if (c.arg.is_string()) {
    chunk = c.arg.text;
  } else if (c.arg.type == RawValue::Type::object) {
    if (auto members = parse_object(c.arg.raw, c.ctx.limits))
      for (const auto& [k, v] : *members)
        if (k == "chunk" && v.is_string()) chunk = v.text;
  }
  if (!chunk) return rpc_error("DECODE_BUFFER");
  auto bytes = base64_decode(*chunk);
  if (!bytes) return rpc_error("DECODE_BUFFER");
  auto n = files_of(c)->append_ws(c.key, *bytes);
  if (!n) return rpc_error(n.error());
  return RpcValues{std::to_string(*n)};
}

tl::expected<RpcValues, std::string> complete(RpcCall& c, bool owned) {
  if (!files_of(c)) return rpc_error("E_NO_STORAGE");
  if (!c.arg.is_string()) return rpc_error(owned ? "EINVAL_ID" : "RENAME_ERR");
  auto id = files_of(c)->complete(c.key, c.arg.text, owned);
  if (!id) return rpc_error(id.error());
  return RpcValues{"\"" + *id + "\""};
}

tl::expected<RpcValues, std::string> upload_complete(RpcCall& c) { return complete(c, false); }
tl::expected<RpcValues, std::string> owned_upload_complete(RpcCall& c) { return complete(c, true); }

}  // namespace

const std::vector<RpcCommand>& upload_commands() {
  static const std::vector<RpcCommand> list = {
      {"UPLOAD_STATUS", true, upload_status},
      {"UPLOAD_CANCEL", true, upload_cancel},
      {"UPLOAD", true, upload, false, false, true},
      {"UPLOAD_COMPLETE", true, upload_complete},
      {"OWNED_UPLOAD_COMPLETE", true, owned_upload_complete},
  };
  return list;
}

}  // namespace hearth::cryptpad
