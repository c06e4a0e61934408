// Signed RPC on channels: SET_METADATA and the owner commands (remove, clear, trim).
#include <limits>
#include <mutex>

#include "core/json.h"
#include "cryptpad/files.h"
#include "cryptpad/rpc_commands.h"

namespace hearth::cryptpad {
namespace {

std::mutex metadata_mutex;  // SET_METADATA is read-modify-write

tl::expected<RpcValues, std::string> set_metadata(RpcCall& c) {
  if (c.arg.type != RawValue::Type::object) return rpc_error("INVALID_ARGUMENTS");
  auto obj = parse_object(c.arg.raw, c.ctx.limits);
  if (!obj) return rpc_error("INVALID_ARGUMENTS");
  std::string channel, command;
  std::optional<RawValue> value;
  for (auto& [k, v] : *obj) {
    if (k == "channel" && v.is_string()) channel = v.text;
    else if (k == "command" && v.is_string()) command = v.text;
    else if (k == "value") value = v;
  }
  if (channel.empty() || command.empty() || !value) return rpc_error("INVALID_ARGUMENTS");
  std::lock_guard lock(metadata_mutex);
  auto rec = c.ctx.store.load_sync(channel);
  if (!rec) return rpc_error("E_STORAGE");
  if (!*rec || (*rec)->deleted) return rpc_error("ENOENT");
  auto md = MetadataObject::parse((*rec)->metadata, c.ctx.limits);
  if (!md) return rpc_error("E_STORAGE");
  auto changed = apply_metadata_command(*md, command, *value, c.key, c.ctx.limits);
  if (!changed) return rpc_error(changed.error());
  ChannelRecord next = **rec;
  if (*changed) {
    next.metadata = md->json();
    if (auto u = c.ctx.store.update_metadata_sync(channel, next.metadata); !u) return rpc_error("E_STORAGE");
    ChannelMeta meta = ChannelMeta::from_record(next, c.ctx.limits);
    if (auto cp = c.ctx.store.last_checkpoint_id_sync(channel); cp && *cp) meta.last_cp_id = **cp;
    c.ctx.metadata_changed(channel, meta);
  }
  return RpcValues{next.metadata};
}

enum class OwnerAction { remove, clear, trim };

// REMOVE_OWNED_CHANNEL: "chan" or {channel, reason}; CLEAR_OWNED_CHANNEL: "chan";
// TRIM_HISTORY: {channel, hash}. Owners only.
tl::expected<RpcValues, std::string> owner_action(RpcCall& c, OwnerAction action) {
  std::string channel, reason, hash;
  if (c.arg.is_string()) {
    channel = c.arg.text;
  } else if (c.arg.type == RawValue::Type::object) {
    auto obj = parse_object(c.arg.raw, c.ctx.limits);
    if (!obj) return rpc_error("INVALID_ARGUMENTS");
    for (auto& [k, v] : *obj) {
      if (k == "channel" && v.is_string()) channel = v.text;
      else if (k == "reason" && v.is_string()) reason = v.text;
      else if (k == "hash" && v.is_string()) hash = v.text;
    }
  }
  if (channel.empty() || classify_channel(channel) == ChannelKind::invalid) return rpc_error("INVALID_CHAN");
  if (action == OwnerAction::trim && hash.empty()) return rpc_error("INVALID_ARGUMENTS");
  // A file: its owners are in its row (OWNED_UPLOAD_COMPLETE).
  if (action == OwnerAction::remove && c.ctx.files && CryptpadFiles::is_file_id(channel)) {
    auto r = c.ctx.files->remove_owned(c.key, channel);
    if (!r) return rpc_error(r.error());
    return RpcValues{};
  }
  auto rec = c.ctx.store.load_sync(channel);
  if (!rec) return rpc_error("E_STORAGE");
  if (!*rec || (*rec)->deleted) return rpc_error("ENOENT");
  if (!ChannelMeta::from_record(**rec, c.ctx.limits).is_owner(c.key)) return rpc_error("INSUFFICIENT_PERMISSIONS");
  JsonWriter notice;
  switch (action) {
    case OwnerAction::remove:
      if (reason.empty()) reason = "OWNER_DELETED";
      if (!c.ctx.store.mark_deleted_sync(channel, reason)) return rpc_error("E_STORAGE");
      notice.begin_object().key("error").value("EDELETED").key("message").value(reason).key("channel").value(channel).end_object();
      break;
    case OwnerAction::clear:
      if (!c.ctx.store.remove_messages_sync(channel, std::numeric_limits<std::int64_t>::max())) return rpc_error("E_STORAGE");
      notice.begin_object().key("error").value("ECLEARED").key("channel").value(channel).end_object();
      break;
    case OwnerAction::trim: {
      auto seq = c.ctx.store.seq_of_hash_sync(channel, hash);
      if (!seq) return rpc_error("E_STORAGE");
      if (!*seq) return rpc_error("ENOENT");
      if (!c.ctx.store.remove_messages_sync(channel, **seq)) return rpc_error("E_STORAGE");
      break;
    }
  }
  c.ctx.channel_changed(channel, notice.str());
  return RpcValues{};
}

tl::expected<RpcValues, std::string> remove_owned(RpcCall& c) { return owner_action(c, OwnerAction::remove); }
tl::expected<RpcValues, std::string> clear_owned(RpcCall& c) { return owner_action(c, OwnerAction::clear); }
tl::expected<RpcValues, std::string> trim_history(RpcCall& c) { return owner_action(c, OwnerAction::trim); }

}  // namespace

const std::vector<RpcCommand>& channel_commands() {
  static const std::vector<RpcCommand> list = {
      {"SET_METADATA", true, set_metadata},
      {"REMOVE_OWNED_CHANNEL", true, remove_owned},
      {"CLEAR_OWNED_CHANNEL", true, clear_owned},
      {"TRIM_HISTORY", true, trim_history},
  };
  return list;
}

}  // namespace hearth::cryptpad
