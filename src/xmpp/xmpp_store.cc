#include "xmpp/xmpp_store.h"

#include <fmt/format.h>

#include "core/clock.h"
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

XmppStore::XmppStore(store::Store& store, Clock& clock, XmppStoreOptions options)
    : store_(store), clock_(clock), options_(options) {}

Result<void> XmppStore::migrate() { return store_.migrate("xmpp", kMigrations); }

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

Result<std::int64_t> XmppStore::offline_count(std::string_view owner) {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT count(*) FROM xmpp_offline WHERE owner = ?", {owner});
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
}

Result<void> XmppStore::forget_account(std::string_view owner) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (auto sql : {"DELETE FROM xmpp_roster WHERE owner = ?", "DELETE FROM xmpp_roster_version WHERE owner = ?",
                     "DELETE FROM xmpp_offline WHERE owner = ?"}) {
      auto r = tx.exec(sql, {owner});
      if (!r) return tl::unexpected(r.error());
    }
    return true;
  }).map([](bool) {});
}

}  // namespace hearth::xmpp
