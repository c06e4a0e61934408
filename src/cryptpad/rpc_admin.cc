// ADMIN [CMD, ...args]: the commands CryptPad's admin panel uses (lib/commands/admin-rpc.js),
// for keys that are admins (admin.h). Array results are spread after the cookie, as
// CryptPad's `[cookie].concat(value)` does.
#include <sys/resource.h>

#include <filesystem>

#include "core/clock.h"
#include "core/json.h"
#include "cryptpad/admin.h"
#include "cryptpad/auth.h"
#include "cryptpad/files.h"
#include "cryptpad/rpc_commands.h"
#include "store/store.h"

namespace hearth::cryptpad {
namespace {

using Args = std::vector<RawValue>;

std::int64_t dir_bytes(const std::string& dir) {
  std::error_code ec;
  std::int64_t total = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += static_cast<std::int64_t>(it->file_size(ec));
  }
  return total;
}

// `id` or `{id, reason}` (or `{key, reason}` for blocks).
void id_and_reason(const RawValue& v, const ParseLimits& limits, const char* id_name, std::string& id, std::string& reason) {
  if (v.is_string()) {
    id = v.text;
    return;
  }
  if (v.type != RawValue::Type::object) return;
  if (auto members = parse_object(v.raw, limits))
    for (const auto& [k, m] : *members) {
      if (k == id_name && m.is_string()) id = m.text;
      else if (k == "reason" && m.is_string()) reason = m.text;
    }
}

std::optional<std::string> key_arg(const Args& a) {
  if (a.size() < 2 || !a[1].is_string() || a[1].text.size() != 44) return std::nullopt;
  return a[1].text;
}

tl::expected<RpcValues, std::string> disk_usage(RpcCall& c) {
  auto sums = c.ctx.store.store().read_sync([&](store::Transaction& tx) -> Result<std::vector<std::int64_t>> {
    std::vector<std::int64_t> out;
    for (const char* sql : {"SELECT COALESCE(SUM(LENGTH(CAST(content AS BLOB))), 0) FROM cryptpad_messages",
                            "SELECT COALESCE(SUM(LENGTH(CAST(metadata AS BLOB))), 0) FROM cryptpad_channels",
                            "SELECT COALESCE(SUM(LENGTH(channel) + LENGTH(key)), 0) FROM cryptpad_pins",
                            "SELECT COALESCE(SUM(size), 0) FROM cryptpad_blobs",
                            "SELECT COALESCE(SUM(LENGTH(content)) + SUM(LENGTH(archived)), 0) FROM cryptpad_blocks"}) {
      auto row = tx.query_one(sql, {});
      if (!row) return tl::unexpected(row.error());
      out.push_back((*row)->integer(0));
    }
    return out;
  });
  if (!sums) return rpc_error("E_STORAGE");
  const auto& s = *sums;
  const std::int64_t stage = c.ctx.data_dir.empty() ? 0 : dir_bytes(c.ctx.data_dir + "/blobs/tmp");
  JsonWriter w;
  w.begin_object()
      .key("total")
      .value(c.ctx.data_dir.empty() ? s[0] + s[1] + s[2] + s[3] + s[4] : dir_bytes(c.ctx.data_dir))
      .key("pin").value(s[2])
      .key("blob").value(s[3])
      .key("blobstage").value(stage)
      .key("block").value(s[4])
      .key("datastore").value(s[0] + s[1])
      .end_object();
  return RpcValues{w.take()};
}

tl::expected<RpcValues, std::string> instance_status(RpcCall& c) {
  const auto& o = c.ctx.options;
  JsonWriter w;
  w.begin_object()
      .key("restrictRegistration").value(false)
      .key("enableEmbedding").value(false)
      .key("currentTime").value(c.ctx.clock.now_ms())
      .key("defaultStorageLimit").value(c.ctx.admin->default_limit())
      .key("maxUploadSize").value(o.max_upload_bytes)
      .key("premiumUploadSize").value(o.max_upload_bytes)
      .key("disableIntegratedEviction").value(true)
      .key("blockDailyCheck").value(true)  // hearth never phones home
      .key("removeDonateButton").value(true)
      .key("enforceMFA").value(false);
  w.key("admins").begin_array();
  for (const auto& k : c.ctx.admin->admins()) w.value(k);
  w.end_array().end_object();
  return RpcValues{w.take()};
}

tl::expected<RpcValues, std::string> archive_document(RpcCall& c, const Args& a, bool restore) {
  std::string id, reason;
  if (a.size() >= 2) id_and_reason(a[1], c.ctx.limits, "id", id, reason);
  if (id.size() < 32) return rpc_error("EINVAL");
  if (id.size() == 48) {
    if (!c.ctx.files) return rpc_error("E_NO_STORAGE");
    auto r = c.ctx.files->set_archived(id, restore ? std::nullopt : std::optional<std::string>("MODERATION_PAD:" + reason));
    if (!r) return rpc_error(r.error());
    return RpcValues{};
  }
  if (classify_channel(id) == ChannelKind::invalid) return rpc_error("INVALID_ID_LENGTH");
  if (restore) {
    auto r = c.ctx.store.restore_sync(id);
    if (!r) return rpc_error("E_STORAGE");
    if (!*r) return rpc_error("ENOENT");
    c.ctx.channel_changed(id, "");
    return RpcValues{};
  }
  auto rec = c.ctx.store.load_sync(id);
  if (!rec) return rpc_error("E_STORAGE");
  if (!*rec || (*rec)->deleted) return rpc_error("ENOENT");
  const std::string placeholder = "MODERATION_PAD:" + reason;
  if (auto d = c.ctx.store.mark_deleted_sync(id, placeholder); !d) return rpc_error("E_STORAGE");
  JsonWriter notice;
  notice.begin_object().key("error").value("EDELETED").key("message").value(placeholder).key("channel").value(id).end_object();
  c.ctx.channel_changed(id, notice.str());
  return RpcValues{};
}

tl::expected<RpcValues, std::string> block_command(RpcCall& c, const Args& a, bool restore) {
  std::string key, reason;
  if (a.size() >= 2) id_and_reason(a[1], c.ctx.limits, "key", key, reason);
  if (key.size() != 44) return rpc_error("EINVAL");
  if (!c.ctx.auth) return rpc_error("E_NO_STORAGE");
  auto r = restore ? c.ctx.auth->restore_block(key) : c.ctx.auth->archive_block(key, reason);
  if (!r) return rpc_error(r.error());
  return RpcValues{};
}

tl::expected<RpcValues, std::string> admin(RpcCall& c) {
  if (!c.ctx.admin || !c.ctx.admin->is_admin(c.key)) return rpc_error("FORBIDDEN");
  if (c.arg.type != RawValue::Type::array) return rpc_error("INVALID_ARGS");
  auto a = parse_array(c.arg.raw, c.ctx.limits);
  if (!a || a->empty() || !(*a)[0].is_string()) return rpc_error("INVALID_ARGS");
  const std::string& cmd = (*a)[0].text;
  if (cmd == "ACTIVE_SESSIONS") {
    auto [total, unique] = c.ctx.session_stats ? c.ctx.session_stats() : std::pair<std::int64_t, std::int64_t>{0, 0};
    return RpcValues{std::to_string(total), std::to_string(unique)};
  }
  if (cmd == "ACTIVE_PADS") return RpcValues{std::to_string(c.ctx.active_channels ? c.ctx.active_channels() : 0)};
  if (cmd == "REGISTERED_USERS") {
    auto n = c.ctx.store.store().read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
      auto row = tx.query_one("SELECT COUNT(DISTINCT key) FROM cryptpad_pins", {});
      if (!row) return tl::unexpected(row.error());
      return (*row)->integer(0);
    });
    if (!n) return rpc_error("E_STORAGE");
    return RpcValues{std::to_string(*n)};
  }
  if (cmd == "DISK_USAGE") return disk_usage(c);
  if (cmd == "GET_FILE_DESCRIPTOR_COUNT") {
    std::error_code ec;
    std::int64_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::end(it);
         it.increment(ec))
      ++n;
    return RpcValues{std::to_string(n)};
  }
  if (cmd == "GET_FILE_DESCRIPTOR_LIMIT") {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    return RpcValues{std::to_string(static_cast<std::int64_t>(rl.rlim_cur))};
  }
  if (cmd == "INSTANCE_STATUS") return instance_status(c);
  if (cmd == "GET_LIMITS") return RpcValues{c.ctx.admin->custom_limits_json()};
  if (cmd == "ADMIN_DECREE") {
    if (a->size() < 2 || (*a)[1].type != RawValue::Type::array) return rpc_error("INVALID_DECREE");
    auto decree = parse_array((*a)[1].raw, c.ctx.limits);
    if (!decree || decree->empty() || !(*decree)[0].is_string()) return rpc_error("INVALID_DECREE");
    RawValue args;
    args.type = RawValue::Type::array;
    args.raw = decree->size() > 1 ? (*decree)[1].raw : "[]";
    if (decree->size() > 1 && (*decree)[1].type != RawValue::Type::array) return rpc_error("INVALID_ARGS");
    auto changed = c.ctx.admin->decree((*decree)[0].text, args, c.key);
    if (!changed) return rpc_error(changed.error());
    return RpcValues{};
  }
  if (cmd == "GET_USER_TOTAL_SIZE" || cmd == "GET_USER_QUOTA" || cmd == "GET_PIN_LIST") {
    auto key = key_arg(*a);
    if (!key) return rpc_error("EINVAL");
    if (cmd == "GET_USER_TOTAL_SIZE") {
      auto total = c.ctx.store.pinned_size_sync(*key);
      if (!total) return rpc_error("E_STORAGE");
      return RpcValues{std::to_string(*total)};
    }
    if (cmd == "GET_USER_QUOTA") {
      StorageLimit l = c.ctx.admin->limit_for(*key);
      return RpcValues{std::to_string(l.limit), json_quote(l.plan), json_quote(l.note)};
    }
    auto pins = c.ctx.store.pins_sync(*key);
    if (!pins) return rpc_error("E_STORAGE");
    RpcValues out;
    for (const auto& p : *pins) out.push_back(json_quote(p));
    return out;
  }
  if (cmd == "ARCHIVE_DOCUMENT") return archive_document(c, *a, false);
  if (cmd == "RESTORE_ARCHIVED_DOCUMENT") return archive_document(c, *a, true);
  if (cmd == "ARCHIVE_BLOCK") return block_command(c, *a, false);
  if (cmd == "RESTORE_ARCHIVED_BLOCK") return block_command(c, *a, true);
  return rpc_error("UNHANDLED_ADMIN_COMMAND");
}

}  // namespace

const std::vector<RpcCommand>& admin_commands() {
  static const std::vector<RpcCommand> list = {
      {"ADMIN", true, admin},
  };
  return list;
}

}  // namespace hearth::cryptpad
