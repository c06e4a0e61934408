// Channel logs and channel metadata as rows in the shared store (no file per message).
//
// Tables (migration module "cryptpad"):
//   cryptpad_channels(channel, metadata, created, expire, deleted)  one row per channel
//     that has metadata; `metadata` is the current metadata object as JSON text, `deleted`
//     the placeholder reason once an owner/admin/expiry removed the channel (NULL: live).
//   cryptpad_messages(channel, seq, hash, sender, content, time, cp, cp_id)  one row per
//     stored message; seq is dense and 1-based per channel and defines the history order.
//   cryptpad_pins(key, channel)  the pin list of each user key (PIN/UNPIN/RESET).
//
// Threads: the blocking methods (*_sync) run on net's worker pool (never on a shard
// thread); append() is asynchronous: its `done` runs on the store's writer thread after
// the COMMIT, in the order append() was called — the service relays a message from there,
// so relay order equals store order.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "cryptpad/protocol.h"

namespace hearth::store {
class Store;
}

namespace hearth::cryptpad {

struct ChannelRecord {
  std::string metadata;  // JSON object text
  std::int64_t created = 0;
  std::optional<std::int64_t> expire;  // absolute ms
  std::optional<std::string> deleted;  // placeholder reason
};

struct StoredMessage {
  std::int64_t seq = 0;
  std::optional<std::string> sender;
  std::string content;
  std::int64_t time = 0;
  bool checkpoint = false;
};

class ChannelStore {
 public:
  explicit ChannelStore(store::Store& store) : store_(store) {}

  Result<void> migrate();

  Result<std::optional<ChannelRecord>> load_sync(const std::string& channel);
  // Creates the metadata row unless one exists; returns the row that is stored afterwards.
  Result<ChannelRecord> create_sync(const std::string& channel, const ChannelRecord& record);
  Result<void> update_metadata_sync(const std::string& channel, const std::string& metadata);
  // The checkpoint index of a channel (last seq and the checkpoints the start rule needs).
  Result<HistoryIndex> index_sync(const std::string& channel);
  // Seq of the newest message whose hash is `hash`.
  Result<std::optional<std::int64_t>> seq_of_hash_sync(const std::string& channel, const std::string& hash);
  // Messages with from <= seq <= to, in order, handed to `each` in batches of `batch`.
  Result<void> read_range_sync(const std::string& channel, std::int64_t from, std::int64_t to,
                               const std::function<void(const StoredMessage&)>& each);
  // Id of the newest stored checkpoint ("" if none or no id).
  Result<std::optional<std::string>> last_checkpoint_id_sync(const std::string& channel);
  // Seqs of the newest `n` checkpoints at or before `seq`, newest first.
  Result<std::vector<std::int64_t>> checkpoints_before_sync(const std::string& channel, std::int64_t seq,
                                                            std::int64_t n);
  // Pins of a user key (ed25519 public key, base64).
  Result<std::vector<std::string>> pins_sync(const std::string& key);
  // Adds / removes pins, or (reset) replaces the whole list.
  Result<void> pin_sync(const std::string& key, const std::vector<std::string>& channels, bool add, bool reset);
  // Owner removal: the channel answers EDELETED with `reason` from now on. Its rows stay
  // (archived in place) until retention purges them.
  Result<void> mark_deleted_sync(const std::string& channel, const std::string& reason);
  // Marks up to `batch` channels whose expiry is at or before `now_ms` as deleted with the
  // placeholder EXPIRED; returns their ids.
  Result<std::vector<std::string>> archive_expired_sync(std::int64_t now_ms, int batch);
  // Clears the placeholder of a removed or archived channel (its rows were kept); false
  // when the channel was not removed.
  Result<bool> restore_sync(const std::string& channel);
  // Removes every message of a channel (CLEAR_OWNED_CHANNEL) or those before `seq`
  // (TRIM_HISTORY); returns the number removed.
  Result<std::int64_t> remove_messages_sync(const std::string& channel, std::int64_t before_seq);
  // Bytes stored for every document pinned by `key` plus every file it uploaded and
  // every file it pinned (its quota usage).
  Result<std::int64_t> pinned_size_sync(const std::string& key);
  // Bytes stored for a channel (content of its messages plus its metadata) or a file.
  Result<std::int64_t> size_sync(const std::string& channel);

  // Appends one message; `done` gets its time-stamped seq once durable.
  void append(const std::string& channel, std::optional<std::string> sender, std::string content,
              std::int64_t time_ms, bool checkpoint, std::string cp_id,
              std::function<void(Result<std::int64_t>)> done);

  store::Store& store() { return store_; }

 private:
  store::Store& store_;
};

}  // namespace hearth::cryptpad
