// What XMPP keeps per account: rosters (with versions and subscription states), pending
// inbound subscription requests, and the offline message queue.
//
// A blocking API over store::Store (like accounts::Accounts): c2s sessions call it from
// net's worker pool, never from a shard thread. Thread-safe; holds no state of its own.
// Its schema is the "xmpp" migrations.
#pragma once

#include <cstdint>
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
  Result<std::int64_t> offline_count(std::string_view owner);

  // Removes everything of an account (called when the account is deleted).
  Result<void> forget_account(std::string_view owner);

 private:
  store::Store& store_;
  Clock& clock_;
  XmppStoreOptions options_;
};

}  // namespace hearth::xmpp
