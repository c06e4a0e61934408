#include "ops/archival.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <simdjson.h>

#include "core/json.h"
#include "store/store.h"

namespace hearth::ops {
namespace {

constexpr const char* kChannelPrefix = "cryptpad_channel-";
constexpr std::size_t kMaxColdFile = 1u << 30;  // a cold file larger than this is not read back

bool safe_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

Result<void> write_durably(const std::string& dir, const std::string& name, const std::string& data) {
  std::string tmp = dir + "/." + name + ".tmp", path = dir + "/" + name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::io, fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return fail(Errc::io, fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
    }
    off += static_cast<std::size_t>(n);
  }
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("cannot store {}: {}", path, std::strerror(errno)));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return ok();
}

struct Candidate {
  std::string id;
  std::int64_t last = 0;
  std::int64_t messages = 0;
  bool pinned = false;
};

// The channel's rows as one JSON document; nullopt if it vanished.
Result<std::optional<std::string>> export_channel(store::Store& store, const std::string& id, std::int64_t now_ms,
                                                  std::int64_t last) {
  return store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT metadata, created, expire FROM cryptpad_channels WHERE channel = ?", {id});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    JsonWriter w;
    w.begin_object().key("kind").value("cryptpad_channel").key("id").value(id).key("archived_ms").value(now_ms)
        .key("last_touched_ms").value(last).key("channel").begin_object()
        .key("metadata").value((*row)->text(0)).key("created").value((*row)->integer(1)).key("expire");
    if ((*row)->is_null(2)) w.null();
    else w.value((*row)->integer(2));
    w.end_object().key("messages").begin_array();
    auto r = tx.query("SELECT seq, hash, sender, content, time, cp, cp_id FROM cryptpad_messages WHERE channel = ? "
                      "ORDER BY seq", {id}, [&](const store::Row& m) {
      w.begin_object().key("seq").value(m.integer(0)).key("hash").value(m.text(1)).key("sender");
      if (m.is_null(2)) w.null();
      else w.value(m.text(2));
      w.key("content").value(m.text(3)).key("time").value(m.integer(4)).key("cp").value(m.integer(5)).key("cp_id");
      if (m.is_null(6)) w.null();
      else w.value(m.text(6));
      w.end_object();
    });
    if (!r) return tl::unexpected(r.error());
    w.end_array().end_object();
    return std::optional<std::string>(w.take());
  });
}

}  // namespace

Result<ArchivalReport> archive_unreferenced(store::Store& store, const ArchivalOptions& o, Logger& log) {
  ArchivalReport report;
  std::error_code ec;
  std::filesystem::create_directories(o.cold_dir, ec);
  if (ec) return fail(Errc::io, fmt::format("cannot create {}: {}", o.cold_dir, ec.message()));
  const std::int64_t cutoff = o.now_ms - o.idle_ms;
  std::vector<Candidate> all;
  auto q = store.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.query(
        "SELECT c.channel, coalesce((SELECT max(time) FROM cryptpad_messages m WHERE m.channel = c.channel), c.created), "
        "(SELECT count(*) FROM cryptpad_messages m WHERE m.channel = c.channel), "
        "EXISTS(SELECT 1 FROM cryptpad_pins p WHERE p.target = c.channel) "
        "FROM cryptpad_channels c WHERE c.deleted IS NULL ORDER BY c.channel",
        {}, [&](const store::Row& row) {
          all.push_back({std::string(row.text(0)), row.integer(1), row.integer(2), row.integer(3) != 0});
        });
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!q) return tl::unexpected(q.error());

  for (const auto& c : all) {
    if (c.last >= cutoff) {
      ++report.kept_recent;
      continue;
    }
    if (c.pinned) {
      ++report.kept_referenced;
      log.info("archival.kept", {{"kind", "cryptpad_channel"}, {"id", c.id}, {"reason", "pinned by an account"}});
      continue;
    }
    if (!safe_id(c.id)) {
      log.warn("archival.skipped", {{"kind", "cryptpad_channel"}, {"id", c.id}, {"reason", "unexpected characters in the id"}});
      continue;
    }
    ArchivalItem item{"cryptpad_channel", c.id, c.last, c.messages, {}};
    if (!o.apply) {
      log.info("archival.would_archive", {{"kind", item.kind}, {"id", item.id}, {"last_touched_ms", item.last_touched_ms},
                                          {"messages", item.messages}});
      report.archived.push_back(std::move(item));
      continue;
    }
    auto doc = export_channel(store, c.id, o.now_ms, c.last);
    if (!doc) return tl::unexpected(doc.error());
    if (!*doc) continue;
    std::string name = kChannelPrefix + c.id + ".json";
    if (auto r = write_durably(o.cold_dir, name, **doc); !r) return tl::unexpected(r.error());
    // Race-free: the same checks again, in the transaction that deletes.
    auto deleted = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto row = tx.query_one(
          "SELECT coalesce((SELECT max(time) FROM cryptpad_messages WHERE channel = ?1), "
          "(SELECT created FROM cryptpad_channels WHERE channel = ?1)), "
          "EXISTS(SELECT 1 FROM cryptpad_pins WHERE target = ?1)",
          {c.id});
      if (!row) return tl::unexpected(row.error());
      if (!*row || (*row)->is_null(0) || (*row)->integer(0) >= cutoff || (*row)->integer(1) != 0) return false;
      if (auto r = tx.exec("DELETE FROM cryptpad_messages WHERE channel = ?", {c.id}); !r) return tl::unexpected(r.error());
      if (auto r = tx.exec("DELETE FROM cryptpad_channels WHERE channel = ?", {c.id}); !r) return tl::unexpected(r.error());
      return true;
    });
    if (!deleted) return tl::unexpected(deleted.error());
    if (!*deleted) {
      std::filesystem::remove(o.cold_dir + "/" + name, ec);
      log.info("archival.kept", {{"kind", item.kind}, {"id", item.id}, {"reason", "pinned or written meanwhile"}});
      continue;
    }
    item.file = o.cold_dir + "/" + name;
    log.info("archival.archived", {{"kind", item.kind}, {"id", item.id}, {"messages", item.messages}, {"file", item.file}});
    report.archived.push_back(std::move(item));
  }

  // Cold files past their retention.
  if (o.cold_retention_ms > 0) {
    for (const auto& entry : std::filesystem::directory_iterator(o.cold_dir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.rfind(kChannelPrefix, 0) != 0 || entry.path().extension() != ".json") continue;
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      std::int64_t archived_ms = 0;
      if (parser.load(entry.path().string()).get(doc) != simdjson::SUCCESS ||
          doc["archived_ms"].get_int64().get(archived_ms) != simdjson::SUCCESS)
        continue;
      if (archived_ms >= o.now_ms - o.cold_retention_ms) continue;
      if (!o.apply) {
        log.info("archival.would_delete_cold", {{"file", entry.path().string()}});
      } else {
        std::filesystem::remove(entry.path(), ec);
        log.info("archival.cold_deleted", {{"file", entry.path().string()}});
      }
      report.cold_deleted.push_back(entry.path().string());
    }
  }
  return report;
}

Result<RestoreArchivedReport> restore_archived(store::Store& store, const std::string& cold_dir,
                                               const std::vector<std::string>& ids, Logger& log) {
  RestoreArchivedReport report;
  std::vector<std::string> wanted = ids;
  std::error_code ec;
  if (wanted.empty()) {
    for (const auto& entry : std::filesystem::directory_iterator(cold_dir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.rfind(kChannelPrefix, 0) == 0 && entry.path().extension() == ".json")
        wanted.push_back(name.substr(std::strlen(kChannelPrefix), name.size() - std::strlen(kChannelPrefix) - 5));
    }
    if (ec) return fail(Errc::io, fmt::format("cannot list {}: {}", cold_dir, ec.message()));
    std::sort(wanted.begin(), wanted.end());
  }
  for (const auto& id : wanted) {
    if (!safe_id(id)) {
      report.conflicts.push_back({id, "not an archived item id"});
      continue;
    }
    std::string path = cold_dir + "/" + kChannelPrefix + id + ".json";
    if (std::filesystem::file_size(path, ec) > kMaxColdFile || ec) {
      report.conflicts.push_back({id, ec ? "not in cold storage" : "cold file too large"});
      continue;
    }
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    simdjson::dom::object channel;
    simdjson::dom::array messages;
    if (parser.load(path).get(doc) != simdjson::SUCCESS || doc["channel"].get_object().get(channel) != simdjson::SUCCESS ||
        doc["messages"].get_array().get(messages) != simdjson::SUCCESS) {
      report.conflicts.push_back({id, "unreadable cold file"});
      continue;
    }
    std::optional<std::string> conflict;
    bool already_live = false;
    auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto live = tx.query_one(
          "SELECT (SELECT count(*) FROM cryptpad_channels WHERE channel = ?1) + "
          "(SELECT count(*) FROM cryptpad_messages WHERE channel = ?1)", {id});
      if (!live) return tl::unexpected(live.error());
      if ((*live)->integer(0) > 0) {
        // An archival killed between writing the cold file and deleting the rows leaves
        // both: the live rows equal to the cold copy are not a conflict.
        std::vector<std::pair<std::int64_t, std::string>> rows;
        auto q = tx.query("SELECT seq, hash FROM cryptpad_messages WHERE channel = ? ORDER BY seq", {id},
                          [&](const store::Row& row) { rows.emplace_back(row.integer(0), std::string(row.text(1))); });
        if (!q) return tl::unexpected(q.error());
        std::size_t i = 0;
        bool same = messages.size() == rows.size();
        for (auto m : messages) {
          if (!same) break;
          std::int64_t seq = 0;
          std::string_view hash;
          same = m["seq"].get_int64().get(seq) == simdjson::SUCCESS && m["hash"].get_string().get(hash) == simdjson::SUCCESS &&
                 rows[i].first == seq && rows[i].second == hash;
          ++i;
        }
        if (same) {
          already_live = true;
          return false;
        }
        conflict = "the channel exists again in the live data (recreated or written since it was archived); "
                   "nothing was overwritten, the archived copy stays in cold storage";
        return false;
      }
      std::string_view metadata;
      std::int64_t created = 0, expire = 0;
      if (channel["metadata"].get_string().get(metadata) != simdjson::SUCCESS ||
          channel["created"].get_int64().get(created) != simdjson::SUCCESS)
        return fail(Errc::corrupt, "bad channel record");
      store::Value expire_value;
      if (channel["expire"].get_int64().get(expire) == simdjson::SUCCESS) expire_value = expire;
      if (auto e = tx.exec("INSERT INTO cryptpad_channels(channel, metadata, created, expire) VALUES(?, ?, ?, ?)",
                           {id, metadata, created, expire_value}); !e)
        return tl::unexpected(e.error());
      for (auto m : messages) {
        std::int64_t seq = 0, time = 0, cp = 0;
        std::string_view hash, content, sender, cp_id;
        if (m["seq"].get_int64().get(seq) != simdjson::SUCCESS || m["hash"].get_string().get(hash) != simdjson::SUCCESS ||
            m["content"].get_string().get(content) != simdjson::SUCCESS ||
            m["time"].get_int64().get(time) != simdjson::SUCCESS || m["cp"].get_int64().get(cp) != simdjson::SUCCESS)
          return fail(Errc::corrupt, "bad message record");
        store::Value sender_value, cp_id_value;
        if (m["sender"].get_string().get(sender) == simdjson::SUCCESS) sender_value = sender;
        if (m["cp_id"].get_string().get(cp_id) == simdjson::SUCCESS) cp_id_value = cp_id;
        if (auto e = tx.exec("INSERT INTO cryptpad_messages(channel, seq, hash, sender, content, time, cp, cp_id) "
                             "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                             {id, seq, hash, sender_value, content, time, cp, cp_id_value}); !e)
          return tl::unexpected(e.error());
      }
      return true;
    });
    if (!r) {
      report.conflicts.push_back({id, r.error().describe()});
      continue;
    }
    if (already_live) {
      std::filesystem::remove(path, ec);
      log.info("archival.restore_already_live", {{"kind", "cryptpad_channel"}, {"id", id}});
      report.restored.push_back(id);
      continue;
    }
    if (!*r) {
      log.warn("archival.restore_conflict", {{"kind", "cryptpad_channel"}, {"id", id}, {"reason", *conflict}});
      report.conflicts.push_back({id, *conflict});
      continue;
    }
    std::filesystem::remove(path, ec);  // restored and durable: the cold copy has done its job
    log.info("archival.restored", {{"kind", "cryptpad_channel"}, {"id", id}});
    report.restored.push_back(id);
  }
  return report;
}

}  // namespace hearth::ops
