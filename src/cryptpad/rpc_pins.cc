// Signed RPC of one user key: the session cookie, the pin list and the quota.
#include <algorithm>

#include "core/json.h"
#include "cryptpad/admin.h"
#include "cryptpad/rpc_commands.h"

namespace hearth::cryptpad {
namespace {

tl::expected<std::string, std::string> pins_hash(RpcCall& c) {
  auto pins = c.ctx.store.pins_sync(c.key);
  if (!pins) return rpc_error("E_STORAGE");
  return json_quote(pin_list_hash(*pins));
}

tl::expected<RpcValues, std::string> nothing(RpcCall&) { return RpcValues{}; }

tl::expected<RpcValues, std::string> get_hash(RpcCall& c) {
  auto h = pins_hash(c);
  if (!h) return rpc_error(h.error());
  return RpcValues{*h};
}

tl::expected<RpcValues, std::string> get_pin_list(RpcCall& c) {
  auto pins = c.ctx.store.pins_sync(c.key);
  if (!pins) return rpc_error("E_STORAGE");
  JsonWriter w;
  w.begin_array();
  for (const auto& p : *pins) w.value(p);
  w.end_array();
  return RpcValues{w.take()};
}

tl::expected<RpcValues, std::string> get_total_size(RpcCall& c) {
  auto total = c.ctx.store.pinned_size_sync(c.key);
  if (!total) return rpc_error("E_STORAGE");
  return RpcValues{std::to_string(*total)};
}

tl::expected<RpcValues, std::string> get_limit(RpcCall& c) {
  if (!c.ctx.admin) return RpcValues{std::to_string(c.ctx.options.default_storage_limit), "\"\"", "\"\""};
  StorageLimit l = c.ctx.admin->limit_for(c.key);
  return RpcValues{std::to_string(l.limit), json_quote(l.plan), json_quote(l.note)};
}

// PIN, UNPIN, RESET: change the list, answer its new hash.
tl::expected<RpcValues, std::string> change_pins(RpcCall& c, bool add, bool reset) {
  auto ids = rpc_string_list(c.arg, c.ctx.limits);
  if (!ids) return rpc_error("INVALID_PIN_LIST");
  if (add && !reset) {
    // Usage now plus what the new, not yet pinned documents add.
    auto pins = c.ctx.store.pins_sync(c.key);
    auto total = c.ctx.store.pinned_size_sync(c.key);
    if (!pins || !total) return rpc_error("E_STORAGE");
    std::vector<std::string> targets;
    for (const auto& p : *pins) targets.push_back(p.substr(0, p.find('#')));
    std::sort(targets.begin(), targets.end());
    std::int64_t usage = *total;
    std::vector<std::string> added;
    for (const auto& id : *ids) {
      std::string target = id.substr(0, id.find('#'));
      if (std::binary_search(targets.begin(), targets.end(), target) ||
          std::find(added.begin(), added.end(), target) != added.end())
        continue;
      added.push_back(target);
      usage += rpc_channel_size(c.ctx, target);
    }
    if (usage > c.ctx.limit_for(c.key)) return rpc_error("E_OVER_LIMIT");
  }
  // RESET is allowed over quota (CryptPad means to allow it once and never counts).
  if (auto p = c.ctx.store.pin_sync(c.key, *ids, add, reset); !p) return rpc_error("E_STORAGE");
  return get_hash(c);
}

tl::expected<RpcValues, std::string> pin(RpcCall& c) { return change_pins(c, true, false); }
tl::expected<RpcValues, std::string> unpin(RpcCall& c) { return change_pins(c, false, false); }
tl::expected<RpcValues, std::string> reset(RpcCall& c) { return change_pins(c, true, true); }

tl::expected<RpcValues, std::string> expire_session(RpcCall& c) {
  c.ctx.sessions.expire(c.key);
  return RpcValues{};
}

}  // namespace

const std::vector<RpcCommand>& pin_commands() {
  static const std::vector<RpcCommand> list = {
      {"COOKIE", true, nothing},
      {"GET_HASH", true, get_hash},
      {"GET_PIN_LIST", true, get_pin_list},
      {"GET_TOTAL_SIZE", true, get_total_size},
      {"GET_LIMIT", true, get_limit},
      {"UPDATE_LIMITS", true, get_limit},
      {"PIN", true, pin},
      {"UNPIN", true, unpin},
      {"RESET", true, reset},
      {"EXPIRE_SESSION", true, expire_session, false, true},
      {"DESTROY", true, nothing, true, false},
  };
  return list;
}

}  // namespace hearth::cryptpad
