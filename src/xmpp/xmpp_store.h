// What XMPP keeps per account: rosters (with versions and subscription states), pending
// inbound subscription requests, and the offline message queue.
//
// A blocking API over store::Store (like accounts::Accounts): c2s sessions call it from
// net's worker pool, never from a shard thread. Thread-safe; its only state is the newest
// archive stamp (an atomic; see archive()).
// Its schema is the "xmpp" migrations.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "xmpp/subscription.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

struct RosterItem {
  std::string jid;   // bare JID of the contact
  std::string name;  // may be empty
  SubscriptionState state;
  std::vector<std::string> groups;
};

struct Roster {
  std::int64_t version = 0;  // grows with every change; "ver" on the wire
  std::vector<RosterItem> items;
};

struct OfflineMessage {
  std::int64_t id = 0;
  std::string from;
  std::string stanza;  // serialised <message/>
  std::int64_t stored_ms = 0;
};

// One archived message (XEP-0313).
struct ArchivedMessage {
  std::string id;  // the archive id, also the XEP-0359 stanza-id
  std::int64_t stamp_ms = 0;
  std::string stanza;  // serialised <message/>
};

// One row to add to an archive, for archive_async.
// The store stamps it when the row is written (see XmppStore::archive).
struct ArchiveEntry {
  std::string owner;  // bare JID whose archive keeps it
  std::string id;     // the archive id (new_archive_id), also the XEP-0359 stanza-id
  std::string with;   // bare JID of the other party
  std::string stanza;  // serialised <message/>
};

// A new archive id (also the XEP-0359 stanza-id): the time in 9 characters that sort like
// it, then 16 random ones (96 bits). Ids made at about the same time sort together, so the
// archive's id index takes a commit's new ids on its last pages.
std::string new_archive_id(std::int64_t now_ms);

struct ArchiveQuery {
  std::string with;  // bare JID of the other party; empty: everyone
  std::int64_t start_ms = 0;  // inclusive; 0: no bound
  std::int64_t end_ms = 0;    // inclusive; 0: no bound
  std::string after_id;       // RSM <after/>: items strictly after this id
  std::string before_id;      // RSM <before>id</before>: items strictly before this id
  bool last_page = false;     // RSM <before/> (empty): the newest page
  int max = 50;
};

struct ArchivePage {
  std::vector<ArchivedMessage> items;  // oldest first
  bool complete = false;  // no more items in the direction of paging
  std::int64_t count = 0;  // items matching the filters (ignoring paging)
};

struct XmppStoreOptions {
  int max_roster_items = 1000;
  int max_offline_messages = 500;  // per account; past it the sender gets an error
};

class XmppStore {
 public:
  XmppStore(store::Store& store, Clock& clock, XmppStoreOptions options = {});
  Result<void> migrate();

  // `owner` is the account's bare JID ("alice@example.org").
  Result<Roster> roster(std::string_view owner);
  Result<std::optional<RosterItem>> roster_item(std::string_view owner, std::string_view contact);
  // Inserts or replaces the item (name, groups and state as given); returns the new
  // roster version. resource_exhausted past max_roster_items.
  Result<std::int64_t> put_roster_item(std::string_view owner, const RosterItem& item);
  // Returns the new version, or not_found.
  Result<std::int64_t> remove_roster_item(std::string_view owner, std::string_view contact);

  // Offline queue: resource_exhausted when full.
  Result<void> store_offline(std::string_view owner, std::string_view from, std::string_view stanza);
  // Returns and removes every queued message, oldest first.
  Result<std::vector<OfflineMessage>> take_offline(std::string_view owner);
  // Returns them without removing them (read-only mode).
  Result<std::vector<OfflineMessage>> peek_offline(std::string_view owner);
  Result<std::int64_t> offline_count(std::string_view owner);

  // Message archive (XEP-0313). `id` is chosen by the caller (new_archive_id). The row is
  // stamped with the clock's time when it is written, and never earlier than the row
  // written before it: an archive is read in (stamp, seq) order, which is then the order
  // in which rows became visible, so paging after an id never skips a later commit.
  Result<void> archive(std::string_view owner, std::string_view id, std::string_view with, std::string_view stanza);
  // The same for several rows at once, without blocking: they go to the store's writer
  // queue as one job (all or none), so that rows from many sessions share one commit
  // (group commit). `done` runs on a store thread once the rows are durable, or with the
  // error; it must not block on the store.
  void archive_async(std::vector<ArchiveEntry> entries, std::function<void(Result<void>)> done);
  // not_found when after_id/before_id name no item of this archive.
  Result<ArchivePage> query_archive(std::string_view owner, const ArchiveQuery& query);

  // The store underneath, for modules that keep their own tables.
  store::Store& backing_store() { return store_; }

  // Removes everything of an account (called when the account is deleted).
  Result<void> forget_account(std::string_view owner);

  // Archive retention: an account's own number of days (0: keep forever), or nullopt to
  // follow the server's default.
  Result<void> set_archive_retention(std::string_view owner, std::optional<int> days);
  Result<std::optional<int>> archive_retention(std::string_view owner);
  // Deletes at most `batch` archived messages older than their owner's retention (the
  // default `default_days` unless the owner has its own; 0 keeps forever), in one short
  // transaction; returns how many went. Callers repeat while it returns `batch`.
  Result<std::int64_t> purge_expired_archive(int default_days, std::int64_t now_ms, int batch);

 private:
  // The stamp for a row written now (on the store's writer).
  std::int64_t next_stamp();

  store::Store& store_;
  Clock& clock_;
  XmppStoreOptions options_;
  std::atomic<std::int64_t> last_stamp_ms_{0};
};

}  // namespace hearth::xmpp
