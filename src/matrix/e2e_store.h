// Storage for end-to-end encryption support (client-server API "End-to-end encryption"
// and "Send-to-Device messaging"): device keys, one-time and fallback keys, cross-signing
// keys, to-device message queues and the device-list change stream. Every function runs
// inside a caller's store transaction (store/), so a claim and its deletion, or a key
// upload and the device-list bump it causes, commit together.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "matrix/canonical_json.h"
#include "store/store.h"

namespace hearth::matrix::e2e {

// Stores the device's signed device keys (canonical JSON). True when they changed.
Result<bool> put_device_keys(store::Transaction& tx, const std::string& user, const std::string& device,
                             const std::string& json);
// The stored device keys of a user (device id -> JSON).
Result<std::map<std::string, std::string>> device_keys(store::Transaction& tx, const std::string& user);

// Adds one-time keys ("<algorithm>:<key id>" -> key). A key id already stored keeps its
// first value (a client retrying an upload sends the same keys).
Result<void> add_one_time_keys(store::Transaction& tx, const std::string& user, const std::string& device,
                               const JsonValue& keys);
// Replaces the fallback key of each algorithm given (unused again).
Result<void> set_fallback_keys(store::Transaction& tx, const std::string& user, const std::string& device,
                               const JsonValue& keys);
Result<std::map<std::string, std::int64_t>> one_time_key_counts(store::Transaction& tx, const std::string& user,
                                                                const std::string& device);
Result<std::vector<std::string>> unused_fallback_key_types(store::Transaction& tx, const std::string& user,
                                                           const std::string& device);

struct ClaimedKey {
  std::string key_id;  // "<algorithm>:<id>"
  std::string json;    // the key (a string or a signed object), as JSON
};
// Takes one one-time key of the algorithm (deleting it), else the fallback key (marked
// used, not deleted: it is handed out again until replaced); nullopt when neither exists.
// Atomic within the caller's write transaction: two claims never get the same one-time key.
Result<std::optional<ClaimedKey>> claim_key(store::Transaction& tx, const std::string& user, const std::string& device,
                                            const std::string& algorithm);

// Removes everything the device had (keys, queued messages) when it is deleted.
Result<void> forget_device(store::Transaction& tx, const std::string& user, const std::string& device);

// Device-list change stream: bump when a user's devices or keys change.
Result<std::int64_t> bump_device_list(store::Transaction& tx, const std::string& user);
Result<std::int64_t> device_list_position(store::Transaction& tx);

struct DeviceListChanges {
  std::set<std::string> changed, left;
};
// For `user` syncing from (since_stream, since_position): users sharing a joined room with
// them now whose devices changed after since_position, users who started sharing a room
// with them after since_stream (they joined one of the user's rooms, or the user joined
// theirs), and users who stopped sharing every room after since_stream ("left"). The
// user's own changes are included in "changed".
Result<DeviceListChanges> device_list_changes(store::Transaction& tx, const std::string& user,
                                              std::int64_t since_stream, std::int64_t since_position);

// To-device messages.
struct ToDevice {
  std::int64_t id = 0;
  std::string sender, type, content;
};
// False when (sender, sender_device, txn_id) was seen before (nothing is queued again).
Result<bool> claim_to_device_txn(store::Transaction& tx, const std::string& sender, const std::string& sender_device,
                                 const std::string& txn_id);
Result<void> enqueue_to_device(store::Transaction& tx, const std::string& user, const std::string& device,
                               const std::string& sender, const std::string& type, const std::string& content);
Result<std::vector<ToDevice>> pending_to_device(store::Transaction& tx, const std::string& user,
                                                const std::string& device, std::int64_t after, int limit);
// Deletes the messages the client acknowledged (id <= upto); the number deleted.
Result<std::int64_t> ack_to_device(store::Transaction& tx, const std::string& user, const std::string& device,
                                   std::int64_t upto);

// Cross-signing keys ("master", "self_signing", "user_signing").
Result<std::optional<std::string>> cross_signing_key(store::Transaction& tx, const std::string& user,
                                                     const std::string& key_type);
Result<void> put_cross_signing_key(store::Transaction& tx, const std::string& user, const std::string& key_type,
                                   const std::string& json);

// Room key backup ("Server-side key backups"): does `candidate` (KeyBackupData: is_verified,
// first_message_index, forwarded_count) replace `existing`? The spec's order: a verified
// key beats an unverified one; then the lower first_message_index; then the lower
// forwarded_count. Equal keys do not replace.
bool backup_key_is_better(const JsonValue& candidate, const JsonValue& existing);

}  // namespace hearth::matrix::e2e
