#include "cryptpad/channel_store.h"

#include <memory>

#include "store/store.h"

namespace hearth::cryptpad {

using store::Row;
using store::Transaction;

Result<void> ChannelStore::migrate() {
  return store_.migrate("cryptpad", {{1, "channels and messages", R"sql(
CREATE TABLE cryptpad_channels(
  channel TEXT PRIMARY KEY,
  metadata TEXT NOT NULL,
  created INTEGER NOT NULL,
  expire INTEGER,
  deleted TEXT
) WITHOUT ROWID;
CREATE TABLE cryptpad_messages(
  channel TEXT NOT NULL,
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL,
  sender TEXT,
  content TEXT NOT NULL,
  time INTEGER NOT NULL,
  cp INTEGER NOT NULL,
  cp_id TEXT,
  PRIMARY KEY(channel, seq)
) WITHOUT ROWID;
CREATE INDEX cryptpad_messages_by_hash ON cryptpad_messages(channel, hash);
CREATE TABLE cryptpad_pins(
  key TEXT NOT NULL,
  channel TEXT NOT NULL,   -- as pinned, may carry a "#drive"-style tag
  target TEXT NOT NULL,    -- the channel or blob id without the tag
  PRIMARY KEY(key, channel)
) WITHOUT ROWID;
CREATE INDEX cryptpad_messages_checkpoints ON cryptpad_messages(channel, seq) WHERE cp = 1;
)sql"},
                                         {2, "files, login blocks, TOTP and sessions", R"sql(
CREATE TABLE cryptpad_blobs(
  id TEXT PRIMARY KEY,       -- CryptPad's 48-hex file id
  ref TEXT NOT NULL,         -- the blobs/ reference holding the bytes
  uploader TEXT NOT NULL,
  owners TEXT NOT NULL,      -- JSON array of keys
  size INTEGER NOT NULL,
  created INTEGER NOT NULL,
  archived TEXT              -- reason, while an admin has archived it
) WITHOUT ROWID;
CREATE TABLE cryptpad_blocks(
  key TEXT PRIMARY KEY,      -- the block's public key (safe form)
  content BLOB,              -- NULL once removed or archived
  archived BLOB,             -- the content a removal or archival kept (restorable)
  updated INTEGER NOT NULL,
  removed TEXT               -- the reason given at removal
) WITHOUT ROWID;
CREATE INDEX cryptpad_channels_expiry ON cryptpad_channels(expire) WHERE expire IS NOT NULL AND deleted IS NULL;
CREATE TABLE cryptpad_decrees(
  seq INTEGER PRIMARY KEY,
  command TEXT NOT NULL,
  args TEXT NOT NULL,        -- JSON
  author TEXT NOT NULL,
  time INTEGER NOT NULL
);
CREATE TABLE cryptpad_mfa(
  key TEXT PRIMARY KEY,
  secret TEXT NOT NULL,      -- base32, as the client chose it
  contact TEXT,
  created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE cryptpad_auth_sessions(
  key TEXT NOT NULL,
  id TEXT NOT NULL,
  expires INTEGER NOT NULL,
  PRIMARY KEY(key, id)
) WITHOUT ROWID;
)sql"}});
}

namespace {
ChannelRecord record_from(const Row& r) {
  ChannelRecord rec;
  rec.metadata = std::string(r.text(0));
  rec.created = r.integer(1);
  if (!r.is_null(2)) rec.expire = r.integer(2);
  if (!r.is_null(3)) rec.deleted = std::string(r.text(3));
  return rec;
}
}  // namespace

Result<std::optional<ChannelRecord>> ChannelStore::load_sync(const std::string& channel) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::optional<ChannelRecord>> {
    auto row = tx.query_one("SELECT metadata, created, expire, deleted FROM cryptpad_channels WHERE channel = ?", {channel});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<ChannelRecord>();
    return std::optional<ChannelRecord>(record_from(**row));
  });
}

Result<ChannelRecord> ChannelStore::create_sync(const std::string& channel, const ChannelRecord& record) {
  return store_.write_sync([&](Transaction& tx) -> Result<ChannelRecord> {
    auto ins = tx.exec("INSERT OR IGNORE INTO cryptpad_channels(channel, metadata, created, expire) VALUES (?, ?, ?, ?)",
                       {channel, record.metadata, record.created, record.expire});
    if (!ins) return tl::unexpected(ins.error());
    auto row = tx.query_one("SELECT metadata, created, expire, deleted FROM cryptpad_channels WHERE channel = ?", {channel});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::internal, "channel row vanished");
    return record_from(**row);
  });
}

Result<void> ChannelStore::update_metadata_sync(const std::string& channel, const std::string& metadata) {
  return store_.write_sync([&](Transaction& tx) -> Result<bool> {
    auto r = tx.exec("UPDATE cryptpad_channels SET metadata = ? WHERE channel = ?", {metadata, channel});
    if (!r) return tl::unexpected(r.error());
    return true;
  }).map([](bool) {});
}

Result<HistoryIndex> ChannelStore::index_sync(const std::string& channel) {
  return store_.read_sync([&](Transaction& tx) -> Result<HistoryIndex> {
    HistoryIndex index;
    auto last = tx.query_one("SELECT COALESCE(MAX(seq), 0) FROM cryptpad_messages WHERE channel = ?", {channel});
    if (!last) return tl::unexpected(last.error());
    index.last_seq = (*last)->integer(0);
    // The start rule only looks at the last two checkpoints and those within the last
    // 100 messages: at most 102 rows.
    std::vector<std::int64_t> cps;
    auto q = tx.query("SELECT seq FROM cryptpad_messages WHERE channel = ? AND cp = 1 ORDER BY seq DESC LIMIT 102",
                      {channel}, [&](const Row& r) { cps.push_back(r.integer(0)); });
    if (!q) return tl::unexpected(q.error());
    index.checkpoints.assign(cps.rbegin(), cps.rend());
    return index;
  });
}

Result<std::optional<std::int64_t>> ChannelStore::seq_of_hash_sync(const std::string& channel, const std::string& hash) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::optional<std::int64_t>> {
    auto row = tx.query_one("SELECT MAX(seq) FROM cryptpad_messages WHERE channel = ? AND hash = ?", {channel, hash});
    if (!row) return tl::unexpected(row.error());
    if (!*row || (*row)->is_null(0)) return std::optional<std::int64_t>();
    return std::optional<std::int64_t>((*row)->integer(0));
  });
}

Result<void> ChannelStore::read_range_sync(const std::string& channel, std::int64_t from, std::int64_t to,
                                           const std::function<void(const StoredMessage&)>& each) {
  // Pages of 256 rows so that a long history is never held in memory at once.
  constexpr std::int64_t kPage = 256;
  for (std::int64_t start = from; start <= to;) {
    std::vector<StoredMessage> page;
    auto r = store_.read_sync([&](Transaction& tx) -> Result<bool> {
      auto q = tx.query(
          "SELECT seq, sender, content, time, cp FROM cryptpad_messages WHERE channel = ? AND seq >= ? AND seq <= ? "
          "ORDER BY seq LIMIT ?",
          {channel, start, to, kPage}, [&](const Row& row) {
            StoredMessage m;
            m.seq = row.integer(0);
            if (!row.is_null(1)) m.sender = std::string(row.text(1));
            m.content = std::string(row.text(2));
            m.time = row.integer(3);
            m.checkpoint = row.integer(4) != 0;
            page.push_back(std::move(m));
          });
      if (!q) return tl::unexpected(q.error());
      return true;
    });
    if (!r) return tl::unexpected(r.error());
    for (const auto& m : page) each(m);
    if (static_cast<std::int64_t>(page.size()) < kPage) break;
    start = page.back().seq + 1;
  }
  return ok();
}

Result<std::optional<std::string>> ChannelStore::last_checkpoint_id_sync(const std::string& channel) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT cp_id FROM cryptpad_messages WHERE channel = ? AND cp = 1 ORDER BY seq DESC LIMIT 1",
                            {channel});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
}

Result<std::vector<std::int64_t>> ChannelStore::checkpoints_before_sync(const std::string& channel, std::int64_t seq,
                                                                       std::int64_t n) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::vector<std::int64_t>> {
    std::vector<std::int64_t> out;
    auto q = tx.query("SELECT seq FROM cryptpad_messages WHERE channel = ? AND cp = 1 AND seq <= ? ORDER BY seq DESC LIMIT ?",
                      {channel, seq, n}, [&](const Row& r) { out.push_back(r.integer(0)); });
    if (!q) return tl::unexpected(q.error());
    return out;
  });
}

Result<std::vector<std::string>> ChannelStore::pins_sync(const std::string& key) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::vector<std::string>> {
    std::vector<std::string> out;
    auto q = tx.query("SELECT channel FROM cryptpad_pins WHERE key = ? ORDER BY channel", {key},
                      [&](const Row& r) { out.emplace_back(r.text(0)); });
    if (!q) return tl::unexpected(q.error());
    return out;
  });
}

Result<void> ChannelStore::pin_sync(const std::string& key, const std::vector<std::string>& channels, bool add,
                                    bool reset) {
  return store_.write_sync([&](Transaction& tx) -> Result<bool> {
    if (reset) {
      if (auto r = tx.exec("DELETE FROM cryptpad_pins WHERE key = ?", {key}); !r) return tl::unexpected(r.error());
    }
    for (const auto& c : channels) {
      auto r = add ? tx.exec("INSERT OR IGNORE INTO cryptpad_pins(key, channel, target) VALUES (?, ?, ?)",
                             {key, c, c.substr(0, c.find('#'))})
                   : tx.exec("DELETE FROM cryptpad_pins WHERE key = ? AND channel = ?", {key, c});
      if (!r) return tl::unexpected(r.error());
    }
    return true;
  }).map([](bool) {});
}

Result<void> ChannelStore::mark_deleted_sync(const std::string& channel, const std::string& reason) {
  return store_.write_sync([&](Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "INSERT INTO cryptpad_channels(channel, metadata, created, deleted) VALUES (?, ?, 0, ?) "
        "ON CONFLICT(channel) DO UPDATE SET deleted = excluded.deleted",
        {channel, std::string("{}"), reason});
    if (!r) return tl::unexpected(r.error());
    return true;
  }).map([](bool) {});
}

Result<std::vector<std::string>> ChannelStore::archive_expired_sync(std::int64_t now_ms, int batch) {
  return store_.write_sync([&](Transaction& tx) -> Result<std::vector<std::string>> {
    std::vector<std::string> ids;
    auto q = tx.query(
        "SELECT channel FROM cryptpad_channels WHERE expire IS NOT NULL AND expire <= ? AND deleted IS NULL LIMIT ?",
        {now_ms, std::int64_t{batch}}, [&](const Row& r) { ids.emplace_back(r.text(0)); });
    if (!q) return tl::unexpected(q.error());
    for (const auto& id : ids)
      if (auto u = tx.exec("UPDATE cryptpad_channels SET deleted = 'EXPIRED' WHERE channel = ?", {id}); !u)
        return tl::unexpected(u.error());
    return ids;
  });
}

Result<bool> ChannelStore::restore_sync(const std::string& channel) {
  return store_.write_sync([&](Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT deleted FROM cryptpad_channels WHERE channel = ?", {channel});
    if (!row) return tl::unexpected(row.error());
    if (!*row || (*row)->is_null(0)) return false;
    auto r = tx.exec("UPDATE cryptpad_channels SET deleted = NULL WHERE channel = ?", {channel});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
}

Result<std::int64_t> ChannelStore::remove_messages_sync(const std::string& channel, std::int64_t before_seq) {
  return store_.write_sync([&](Transaction& tx) -> Result<std::int64_t> {
    return tx.exec("DELETE FROM cryptpad_messages WHERE channel = ? AND seq < ?", {channel, before_seq});
  });
}

Result<std::int64_t> ChannelStore::size_sync(const std::string& channel) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::int64_t> {
    auto a = tx.query_one("SELECT COALESCE(SUM(LENGTH(CAST(content AS BLOB))), 0) FROM cryptpad_messages WHERE channel = ?",
                          {channel});
    if (!a) return tl::unexpected(a.error());
    auto b = tx.query_one("SELECT COALESCE(SUM(LENGTH(CAST(metadata AS BLOB))), 0) FROM cryptpad_channels WHERE channel = ?",
                          {channel});
    if (!b) return tl::unexpected(b.error());
    auto f = tx.query_one("SELECT COALESCE(SUM(size), 0) FROM cryptpad_blobs WHERE id = ?", {channel});
    if (!f) return tl::unexpected(f.error());
    return (*a)->integer(0) + (*b)->integer(0) + (*f)->integer(0);
  });
}

Result<std::int64_t> ChannelStore::pinned_size_sync(const std::string& key) {
  return store_.read_sync([&](Transaction& tx) -> Result<std::int64_t> {
    auto a = tx.query_one(
        "SELECT COALESCE(SUM(LENGTH(CAST(m.content AS BLOB))), 0) FROM (SELECT DISTINCT target FROM cryptpad_pins "
        "WHERE key = ?) p JOIN cryptpad_messages m ON m.channel = p.target",
        {key});
    if (!a) return tl::unexpected(a.error());
    auto b = tx.query_one(
        "SELECT COALESCE(SUM(LENGTH(CAST(c.metadata AS BLOB))), 0) FROM (SELECT DISTINCT target FROM cryptpad_pins "
        "WHERE key = ?) p JOIN cryptpad_channels c ON c.channel = p.target",
        {key});
    if (!b) return tl::unexpected(b.error());
    auto f = tx.query_one(
        "SELECT COALESCE(SUM(size), 0) FROM cryptpad_blobs WHERE uploader = ? OR id IN (SELECT target FROM "
        "cryptpad_pins WHERE key = ?)",
        {key, key});
    if (!f) return tl::unexpected(f.error());
    return (*a)->integer(0) + (*b)->integer(0) + (*f)->integer(0);
  });
}

void ChannelStore::append(const std::string& channel, std::optional<std::string> sender, std::string content,
                          std::int64_t time_ms, bool checkpoint, std::string cp_id,
                          std::function<void(Result<std::int64_t>)> done) {
  auto seq = std::make_shared<std::int64_t>(0);
  store_.write(
      [channel, sender = std::move(sender), content = std::move(content), time_ms, checkpoint, cp_id = std::move(cp_id),
       seq](Transaction& tx) -> Result<void> {
        auto last = tx.query_one("SELECT COALESCE(MAX(seq), 0) FROM cryptpad_messages WHERE channel = ?", {channel});
        if (!last) return tl::unexpected(last.error());
        *seq = (*last)->integer(0) + 1;
        auto r = tx.exec(
            "INSERT INTO cryptpad_messages(channel, seq, hash, sender, content, time, cp, cp_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            {channel, *seq, std::string(message_hash(content)), sender, content, time_ms, checkpoint ? 1 : 0,
             checkpoint ? std::optional<std::string>(cp_id) : std::nullopt});
        if (!r) return tl::unexpected(r.error());
        return ok();
      },
      [seq, done = std::move(done)](Result<void> r) {
        if (!r) return done(tl::unexpected(r.error()));
        done(*seq);
      });
}

}  // namespace hearth::cryptpad
