#include "xmpp/xmpp_store.h"

#include <algorithm>
#include <climits>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "rosters and offline messages", R"sql(
CREATE TABLE xmpp_roster_version (
  owner TEXT PRIMARY KEY,
  version INTEGER NOT NULL
);
CREATE TABLE xmpp_roster (
  owner TEXT NOT NULL,
  contact TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  subscription TEXT NOT NULL DEFAULT 'none',
  pending_out INTEGER NOT NULL DEFAULT 0,
  pending_in INTEGER NOT NULL DEFAULT 0,
  groups TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
CREATE TABLE xmpp_offline (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  owner TEXT NOT NULL,
  sender TEXT NOT NULL,
  stanza TEXT NOT NULL,
  stored_ms INTEGER NOT NULL
);
CREATE INDEX xmpp_offline_owner ON xmpp_offline(owner, id);
)sql"},
    {2, "message archive", R"sql(
CREATE TABLE xmpp_archive (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  owner TEXT NOT NULL,
  id TEXT NOT NULL,
  with_jid TEXT NOT NULL,
  stamp_ms INTEGER NOT NULL,
  stanza TEXT NOT NULL
);
CREATE UNIQUE INDEX xmpp_archive_id ON xmpp_archive(owner, id);
CREATE INDEX xmpp_archive_owner ON xmpp_archive(owner, seq);
CREATE INDEX xmpp_archive_with ON xmpp_archive(owner, with_jid, seq);
)sql"},
    {3, "archive retention", R"sql(
CREATE INDEX xmpp_archive_stamp ON xmpp_archive(stamp_ms);
CREATE INDEX xmpp_archive_owner_stamp ON xmpp_archive(owner, stamp_ms);
CREATE TABLE xmpp_archive_policy (
  owner TEXT PRIMARY KEY,
  retention_days INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
    // A group commit writes every index page its rows touch. Indexes led by the owner put
    // each owner's rows on their own pages, so with many owners every commit writes a page
    // per owner per index: two of the four go. Archives are read in (stamp_ms, seq) order
    // (rowid ends every index, so (owner, stamp_ms) serves it), and ids are found through an
    // index on the id alone, where new ids, which begin with their time, land together on
    // its last pages.
    {4, "archive indexes that group commits write cheaply", R"sql(
DROP INDEX xmpp_archive_id;
DROP INDEX xmpp_archive_owner;
DROP INDEX xmpp_archive_with;
CREATE INDEX xmpp_archive_by_id ON xmpp_archive(id);
CREATE INDEX xmpp_archive_with_stamp ON xmpp_archive(owner, with_jid, stamp_ms);
)sql"},
};

// Groups are stored one per line (a group name cannot hold a newline: it is XML text
// that we normalise on the way in).
std::string join_groups(const std::vector<std::string>& groups) {
  std::string out;
  for (const auto& g : groups) {
    if (!out.empty()) out += '\n';
    for (char c : g) out += (c == '\n' || c == '\r') ? ' ' : c;
  }
  return out;
}

std::vector<std::string> split_groups(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    auto nl = s.find('\n');
    out.emplace_back(s.substr(0, nl));
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return out;
}

RosterItem item_from(const store::Row& row) {
  RosterItem item;
  item.jid = std::string(row.text(0));
  item.name = std::string(row.text(1));
  parse_subscription(row.text(2), item.state.subscription);
  item.state.pending_out = row.integer(3) != 0;
  item.state.pending_in = row.integer(4) != 0;
  item.groups = split_groups(row.text(5));
  return item;
}

Result<std::int64_t> bump_version(store::Transaction& tx, std::string_view owner) {
  auto r = tx.exec(
      "INSERT INTO xmpp_roster_version(owner, version) VALUES(?, 1) "
      "ON CONFLICT(owner) DO UPDATE SET version = version + 1",
      {owner});
  if (!r) return tl::unexpected(r.error());
  auto row = tx.query_one("SELECT version FROM xmpp_roster_version WHERE owner = ?", {owner});
  if (!row) return tl::unexpected(row.error());
  return (*row)->integer(0);
}

}  // namespace

std::string new_archive_id(std::int64_t now_ms) {
  static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuv";  // ascending in ASCII
  std::string id(9, '0');
  auto t = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ms, 0));
  for (int i = 8; i >= 0; --i, t >>= 5) id[static_cast<std::size_t>(i)] = kDigits[t & 31];
  return id + random_token(12);
}

XmppStore::XmppStore(store::Store& store, Clock& clock, XmppStoreOptions options)
    : store_(store), clock_(clock), options_(options) {}

Result<void> XmppStore::migrate() {
  if (auto m = store_.migrate("xmpp", kMigrations); !m) return m;
  auto newest = store_.read_sync([](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT max(stamp_ms) FROM xmpp_archive");
    if (!row) return tl::unexpected(row.error());
    return *row ? (*row)->integer(0) : 0;
  });
  if (!newest) return tl::unexpected(newest.error());
  last_stamp_ms_ = *newest;
  return ok();
}

Result<Roster> XmppStore::roster(std::string_view owner) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<Roster> {
    Roster roster;
    auto v = tx.query_one("SELECT version FROM xmpp_roster_version WHERE owner = ?", {owner});
    if (!v) return tl::unexpected(v.error());
    if (*v) roster.version = (*v)->integer(0);
    auto r = tx.query(
        "SELECT contact, name, subscription, pending_out, pending_in, groups FROM xmpp_roster WHERE owner = ? "
        "ORDER BY contact",
        {owner}, [&](const store::Row& row) { roster.items.push_back(item_from(row)); });
    if (!r) return tl::unexpected(r.error());
    return roster;
  });
}

Result<std::optional<RosterItem>> XmppStore::roster_item(std::string_view owner, std::string_view contact) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::optional<RosterItem>> {
    auto row = tx.query_one(
        "SELECT contact, name, subscription, pending_out, pending_in, groups FROM xmpp_roster "
        "WHERE owner = ? AND contact = ?",
        {owner, contact});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<RosterItem>();
    return std::optional<RosterItem>(item_from(**row));
  });
}

Result<std::int64_t> XmppStore::put_roster_item(std::string_view owner, const RosterItem& item) {
  int limit = options_.max_roster_items;
  return store_.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto exists = tx.query_one("SELECT 1 FROM xmpp_roster WHERE owner = ? AND contact = ?", {owner, item.jid});
    if (!exists) return tl::unexpected(exists.error());
    if (!*exists) {
      auto count = tx.query_one("SELECT count(*) FROM xmpp_roster WHERE owner = ?", {owner});
      if (!count) return tl::unexpected(count.error());
      if ((*count)->integer(0) >= limit)
        return fail(Errc::resource_exhausted, fmt::format("roster full ({} items)", limit));
    }
    auto r = tx.exec(
        "INSERT INTO xmpp_roster(owner, contact, name, subscription, pending_out, pending_in, groups) "
        "VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(owner, contact) DO UPDATE SET name = excluded.name, "
        "subscription = excluded.subscription, pending_out = excluded.pending_out, "
        "pending_in = excluded.pending_in, groups = excluded.groups",
        {owner, item.jid, item.name, std::string(subscription_name(item.state.subscription)),
         item.state.pending_out ? 1 : 0, item.state.pending_in ? 1 : 0, join_groups(item.groups)});
    if (!r) return tl::unexpected(r.error());
    return bump_version(tx, owner);
  });
}

Result<std::int64_t> XmppStore::remove_roster_item(std::string_view owner, std::string_view contact) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto r = tx.exec("DELETE FROM xmpp_roster WHERE owner = ? AND contact = ?", {owner, contact});
    if (!r) return tl::unexpected(r.error());
    if (*r == 0) return fail(Errc::not_found, fmt::format("{} is not in the roster", contact));
    return bump_version(tx, owner);
  });
}

Result<void> XmppStore::store_offline(std::string_view owner, std::string_view from, std::string_view stanza) {
  int limit = options_.max_offline_messages;
  std::int64_t now = clock_.now_ms();
  return store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto count = tx.query_one("SELECT count(*) FROM xmpp_offline WHERE owner = ?", {owner});
    if (!count) return tl::unexpected(count.error());
    if ((*count)->integer(0) >= limit)
      return fail(Errc::resource_exhausted, fmt::format("offline queue of {} is full", owner));
    auto r = tx.exec("INSERT INTO xmpp_offline(owner, sender, stanza, stored_ms) VALUES(?, ?, ?, ?)",
                     {owner, from, stanza, now});
    if (!r) return tl::unexpected(r.error());
    return true;
  }).map([](bool) {});
}

Result<std::vector<OfflineMessage>> XmppStore::take_offline(std::string_view owner) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<std::vector<OfflineMessage>> {
    std::vector<OfflineMessage> out;
    auto r = tx.query("SELECT id, sender, stanza, stored_ms FROM xmpp_offline WHERE owner = ? ORDER BY id", {owner},
                      [&](const store::Row& row) {
                        out.push_back({row.integer(0), std::string(row.text(1)), std::string(row.text(2)),
                                       row.integer(3)});
                      });
    if (!r) return tl::unexpected(r.error());
    if (!out.empty()) {
      auto d = tx.exec("DELETE FROM xmpp_offline WHERE owner = ? AND id <= ?", {owner, out.back().id});
      if (!d) return tl::unexpected(d.error());
    }
    return out;
  });
}

Result<std::vector<OfflineMessage>> XmppStore::peek_offline(std::string_view owner) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::vector<OfflineMessage>> {
    std::vector<OfflineMessage> out;
    auto r = tx.query("SELECT id, sender, stanza, stored_ms FROM xmpp_offline WHERE owner = ? ORDER BY id", {owner},
                      [&](const store::Row& row) {
                        out.push_back({row.integer(0), std::string(row.text(1)), std::string(row.text(2)),
                                       row.integer(3)});
                      });
    if (!r) return tl::unexpected(r.error());
    return out;
  });
}

Result<std::int64_t> XmppStore::offline_count(std::string_view owner) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT count(*) FROM xmpp_offline WHERE owner = ?", {owner});
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
}

std::int64_t XmppStore::next_stamp() {
  std::int64_t now = clock_.now_ms();
  std::int64_t last = last_stamp_ms_.load();
  while (now > last && !last_stamp_ms_.compare_exchange_weak(last, now)) {
  }
  return std::max(now, last);
}

Result<void> XmppStore::archive(std::string_view owner, std::string_view id, std::string_view with,
                                std::string_view stanza) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec("INSERT INTO xmpp_archive(owner, id, with_jid, stamp_ms, stanza) VALUES(?, ?, ?, ?, ?)",
                     {owner, id, with, next_stamp(), stanza});
    if (!r) return tl::unexpected(r.error());
    return true;
  }).map([](bool) {});
}

void XmppStore::archive_async(std::vector<ArchiveEntry> entries, std::function<void(Result<void>)> done) {
  store_.write(
      [this, entries = std::move(entries)](store::Transaction& tx) -> Result<void> {
        std::int64_t stamp = next_stamp();
        for (const auto& e : entries) {
          auto r = tx.exec("INSERT INTO xmpp_archive(owner, id, with_jid, stamp_ms, stanza) VALUES(?, ?, ?, ?, ?)",
                           {e.owner, e.id, e.with, stamp, e.stanza});
          if (!r) return tl::unexpected(r.error());
        }
        return ok();
      },
      std::move(done));
}

Result<ArchivePage> XmppStore::query_archive(std::string_view owner, const ArchiveQuery& q) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<ArchivePage> {
    // An item's place in the archive: (stamp_ms, seq).
    auto place_of = [&](const std::string& id) -> Result<std::pair<std::int64_t, std::int64_t>> {
      // "+owner": look the id up in its own index, not the owner's.
      auto row = tx.query_one("SELECT stamp_ms, seq FROM xmpp_archive WHERE id = ? AND +owner = ?", {id, owner});
      if (!row) return tl::unexpected(row.error());
      if (!*row) return fail(Errc::not_found, "no archived message with id " + id);
      return std::pair{(*row)->integer(0), (*row)->integer(1)};
    };
    std::pair<std::int64_t, std::int64_t> after{INT64_MIN, 0}, before{INT64_MAX, 0};
    if (!q.after_id.empty()) {
      auto p = place_of(q.after_id);
      if (!p) return tl::unexpected(p.error());
      after = *p;
    }
    if (!q.before_id.empty()) {
      auto p = place_of(q.before_id);
      if (!p) return tl::unexpected(p.error());
      before = *p;
    }
    // Two statements, with and without a contact, each reading one index in order:
    // (owner, stamp_ms, rowid) or (owner, with_jid, stamp_ms, rowid). (Written out: SQLite
    // 3.40 picks the owner's index instead for the row-value form of the paging bounds.)
    std::string filters = " FROM xmpp_archive WHERE owner = ?1 AND stamp_ms >= ?2 AND stamp_ms <= ?3";
    std::vector<store::Value> params{store::Value(owner), q.start_ms != 0 ? q.start_ms : INT64_MIN,
                                     q.end_ms != 0 ? q.end_ms : INT64_MAX};
    if (!q.with.empty()) {
      filters += " AND with_jid = ?4";
      params.emplace_back(q.with);
    }
    ArchivePage page;
    auto count = tx.query_one("SELECT count(*)" + filters, params);
    if (!count) return tl::unexpected(count.error());
    page.count = (*count)->integer(0);
    bool backwards = q.last_page || !q.before_id.empty();
    std::string sql = "SELECT id, stamp_ms, stanza" + filters +
                      " AND (stamp_ms > ?5 OR (stamp_ms = ?5 AND seq > ?6)) AND (stamp_ms < ?7 OR (stamp_ms = ?7 AND seq < ?8))"
                      " ORDER BY stamp_ms " +
                      (backwards ? "DESC, seq DESC" : "ASC, seq ASC") + " LIMIT ?9";
    int limit = std::max(0, q.max) + 1;  // one more tells whether the page is the last
    params.resize(4);  // ?4 is bound but unused without a contact
    params.insert(params.end(), {after.first, after.second, before.first, before.second, std::int64_t{limit}});
    auto r = tx.query(sql, params, [&](const store::Row& row) {
      page.items.push_back({std::string(row.text(0)), row.integer(1), std::string(row.text(2))});
    });
    if (!r) return tl::unexpected(r.error());
    page.complete = static_cast<int>(page.items.size()) <= q.max;
    if (!page.complete) page.items.pop_back();
    if (backwards) std::reverse(page.items.begin(), page.items.end());
    return page;
  });
}

Result<void> XmppStore::forget_account(std::string_view owner) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (auto sql : {"DELETE FROM xmpp_roster WHERE owner = ?", "DELETE FROM xmpp_roster_version WHERE owner = ?",
                     "DELETE FROM xmpp_offline WHERE owner = ?", "DELETE FROM xmpp_archive WHERE owner = ?",
                     "DELETE FROM xmpp_archive_policy WHERE owner = ?"}) {
      auto r = tx.exec(sql, {owner});
      if (!r) return tl::unexpected(r.error());
    }
    return true;
  }).map([](bool) {});
}

Result<void> XmppStore::set_archive_retention(std::string_view owner, std::optional<int> days) {
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto r = days ? tx.exec("INSERT INTO xmpp_archive_policy(owner, retention_days) VALUES(?, ?) ON CONFLICT(owner) "
                                "DO UPDATE SET retention_days = excluded.retention_days",
                                {owner, std::int64_t{*days}})
                      : tx.exec("DELETE FROM xmpp_archive_policy WHERE owner = ?", {owner});
        if (!r) return tl::unexpected(r.error());
        return true;
      })
      .map([](bool) {});
}

Result<std::optional<int>> XmppStore::archive_retention(std::string_view owner) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::optional<int>> {
    auto row = tx.query_one("SELECT retention_days FROM xmpp_archive_policy WHERE owner = ?", {owner});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<int>();
    return std::optional<int>(static_cast<int>((*row)->integer(0)));
  });
}

Result<std::int64_t> XmppStore::purge_expired_archive(int default_days, std::int64_t now_ms, int batch) {
  constexpr std::int64_t kDayMs = 86'400'000;
  return store_.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    std::int64_t deleted = 0;
    if (default_days > 0) {
      auto r = tx.exec(
          "DELETE FROM xmpp_archive WHERE seq IN (SELECT seq FROM xmpp_archive WHERE stamp_ms < ? AND owner NOT IN "
          "(SELECT owner FROM xmpp_archive_policy) LIMIT ?)",
          {now_ms - default_days * kDayMs, std::int64_t{batch}});
      if (!r) return tl::unexpected(r.error());
      deleted += *r;
    }
    std::vector<std::pair<std::string, std::int64_t>> own;
    auto q = tx.query("SELECT owner, retention_days FROM xmpp_archive_policy WHERE retention_days > 0", {},
                      [&](const store::Row& row) { own.emplace_back(std::string(row.text(0)), row.integer(1)); });
    if (!q) return tl::unexpected(q.error());
    for (const auto& [owner, days] : own) {
      if (deleted >= batch) break;
      auto r = tx.exec(
          "DELETE FROM xmpp_archive WHERE seq IN (SELECT seq FROM xmpp_archive WHERE owner = ? AND stamp_ms < ? LIMIT ?)",
          {owner, now_ms - days * kDayMs, batch - deleted});
      if (!r) return tl::unexpected(r.error());
      deleted += *r;
    }
    return deleted;
  });
}

}  // namespace hearth::xmpp
