// Anonymous RPC: file sizes, channel state, metadata reads, WRITE_PRIVATE_MESSAGE.
#include "core/json.h"
#include "cryptpad/rpc_commands.h"

namespace hearth::cryptpad {
namespace {

tl::expected<RpcValues, std::string> get_file_size(RpcCall& c) {
  if (!c.arg.is_string()) return rpc_error("INVALID_FILE_ID");
  return RpcValues{std::to_string(rpc_channel_size(c.ctx, c.arg.text))};
}

tl::expected<RpcValues, std::string> get_multiple_file_size(RpcCall& c) {
  auto ids = rpc_string_list(c.arg, c.ctx.limits);
  if (!ids) return rpc_error("INVALID_FILE_ID");
  JsonWriter w;
  w.begin_object();
  for (const auto& id : *ids) w.key(id).value(rpc_channel_size(c.ctx, id));
  w.end_object();
  return RpcValues{w.take()};
}

tl::expected<RpcValues, std::string> get_deleted_pads(RpcCall& c) {
  auto ids = rpc_string_list(c.arg, c.ctx.limits);
  if (!ids) return rpc_error("INVALID_ARGUMENTS");
  JsonWriter w;
  w.begin_array();
  for (const auto& id : *ids) {
    auto rec = c.ctx.store.load_sync(id);
    if (rec && *rec && (*rec)->deleted) w.value(id);
  }
  w.end_array();
  return RpcValues{w.take()};
}

tl::expected<RpcValues, std::string> always_true(RpcCall&) { return RpcValues{"true"}; }
tl::expected<RpcValues, std::string> always_false(RpcCall&) { return RpcValues{"false"}; }

tl::expected<RpcValues, std::string> is_new_channel(RpcCall& c) {
  if (!c.arg.is_string()) return rpc_error("INVALID_CHAN");
  auto rec = c.ctx.store.load_sync(c.arg.text);
  auto idx = c.ctx.store.index_sync(c.arg.text);
  if (!rec || !idx) return rpc_error("E_STORAGE");
  JsonWriter w;
  w.begin_object();
  if (*rec && (*rec)->deleted) {
    w.key("isNew").value(false).key("reason").value(*(*rec)->deleted);
  } else {
    w.key("isNew").value(!*rec && idx->last_seq == 0);
  }
  w.end_object();
  return RpcValues{w.take()};
}

tl::expected<RpcValues, std::string> get_metadata(RpcCall& c) {
  if (!c.arg.is_string()) return rpc_error("INVALID_CHAN");
  auto rec = c.ctx.store.load_sync(c.arg.text);
  if (!rec) return rpc_error("E_STORAGE");
  if (!*rec) return RpcValues{"{}"};
  return RpcValues{(*rec)->metadata};
}

tl::expected<RpcValues, std::string> write_private_message(RpcCall& c) {
  if (c.arg.type != RawValue::Type::array) return rpc_error("INVALID_ARGUMENTS");
  auto args = parse_array(c.arg.raw, c.ctx.limits);
  if (!args || args->size() < 2 || !(*args)[0].is_string() || !(*args)[1].is_string())
    return rpc_error("INVALID_ARGUMENTS");
  auto t = c.ctx.write_private_message((*args)[0].text, (*args)[1].text);
  if (!t) return rpc_error(t.error());
  return RpcValues{std::to_string(*t)};
}

}  // namespace

const std::vector<RpcCommand>& file_commands() {
  static const std::vector<RpcCommand> list = {
      {"GET_FILE_SIZE", false, get_file_size},
      {"GET_MULTIPLE_FILE_SIZE", false, get_multiple_file_size},
      {"GET_DELETED_PADS", false, get_deleted_pads},
      {"IS_CHANNEL_PINNED", false, always_true},  // as CryptPad: always true
      {"IS_PREMIUM", false, always_false},
      {"IS_NEW_CHANNEL", false, is_new_channel},
      {"GET_METADATA", false, get_metadata},
      {"WRITE_PRIVATE_MESSAGE", false, write_private_message},
  };
  return list;
}

}  // namespace hearth::cryptpad
