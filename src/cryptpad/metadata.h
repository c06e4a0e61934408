// Channel metadata: the initial object a channel is created with (GET_HISTORY of the first
// member), its typed view (validateKey, owners, allow list, expiry) and the SET_METADATA
// commands. The stored form is the current object as JSON text; fields hearth does not
// know are kept as sent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "cryptpad/channel_store.h"
#include "cryptpad/protocol.h"

namespace hearth::cryptpad {

// The metadata object as ordered (key, raw JSON value) pairs.
class MetadataObject {
 public:
  static Result<MetadataObject> parse(std::string_view json, const ParseLimits& limits);
  const std::string* get(std::string_view key) const;
  void set(std::string_view key, std::string raw_json);
  void erase(std::string_view key);
  std::string json() const;

  std::vector<std::string> strings(std::string_view key, const ParseLimits& limits) const;
  void set_strings(std::string_view key, const std::vector<std::string>& values);
  bool boolean(std::string_view key) const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

struct ChannelMeta {
  bool exists = false;      // a metadata row is stored
  bool load_error = false;  // the store failed; treat the channel as unavailable
  std::string json;         // the metadata object sent to clients
  std::string validate_key;
  std::vector<std::string> owners, pending_owners, allowed;
  bool restricted = false;
  bool selfdestruct = false;            // burn-after-reading helper channel
  std::optional<std::int64_t> expire;   // absolute ms
  std::optional<std::string> deleted;   // placeholder reason
  std::string last_cp_id;               // id of the newest stored checkpoint

  bool is_owner(const std::string& key) const;
  bool is_allowed(const std::string& key) const;

  static ChannelMeta from_record(const ChannelRecord& record, const ParseLimits& limits);

  struct Initial {
    ChannelRecord record;
  };
  // The row a new channel is created with from the client's metadata: its fields plus
  // `channel` and `created`; `expire` (seconds) becomes absolute ms. Error when a
  // validateKey is present but not base64 of 32 bytes.
  static Result<Initial> initial(const std::string& channel, std::string_view client_metadata, std::int64_t now_ms,
                                 const ParseLimits& limits);
};

// Applies one SET_METADATA command by `author` (an ed25519 public key, base64).
// Returns true when the metadata changed (no-op commands are not written), or a CryptPad
// error code: "INSUFFICIENT_PERMISSIONS", "EINVAL", "E_NOT_IMPLEMENTED", "UNSUPPORTED".
tl::expected<bool, std::string> apply_metadata_command(MetadataObject& metadata, const std::string& command,
                                                        const RawValue& value, const std::string& author,
                                                        const ParseLimits& limits);

}  // namespace hearth::cryptpad
