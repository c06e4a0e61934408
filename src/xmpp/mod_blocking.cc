#include "xmpp/mod_blocking.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <set>

#include "store/store.h"
#include "xmpp/im.h"
#include "xmpp/jid.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "blocklists", R"sql(
CREATE TABLE xmpp_blocklist (
  owner TEXT NOT NULL,
  jid TEXT NOT NULL,
  PRIMARY KEY (owner, jid)
) WITHOUT ROWID;
)sql"},
};

void storage_error(IqReply& reply, const Error& e) { reply_storage_error(reply, e); }

// The canonical JIDs of a <block/> or <unblock/>, deduplicated in request order; false
// after answering the request with an error.
bool parse_items(const Element& command, std::vector<std::string>& out, IqReply& reply) {
  std::set<std::string> seen;
  for (const auto& item : command.children()) {
    if (item.name() != "item" || item.ns() != kBlockingNs) {
      reply.error("modify", "bad-request", "only <item/> elements are allowed here");
      return false;
    }
    if (!item.has_attr("jid")) {
      reply.error("modify", "bad-request", "an <item/> needs a 'jid'");
      return false;
    }
    auto jid = Jid::parse(item.attr("jid"));
    if (!jid) {
      reply.error("modify", "jid-malformed", jid.error().message);
      return false;
    }
    std::string full = jid->full();
    if (seen.insert(full).second) out.push_back(std::move(full));
  }
  return true;
}

Element command_element(std::string_view name, const std::vector<std::string>& jids) {
  Element e{std::string(name), std::string(kBlockingNs)};
  for (const auto& j : jids) e.add_child(Element("item", std::string(kBlockingNs))).set_attr("jid", j);
  return e;
}

// Entries are registered for the server too, only so that the server's disco#info lists
// urn:xmpp:blocking (XEP-0191 §3.1); the commands themselves are sent without 'to'.
bool to_server(const std::string& to) { return to.find('@') == std::string::npos; }

Element push_iq(Element command) {
  static std::atomic<std::uint64_t> counter{0};
  Element iq("iq", std::string(kClientNs));
  iq.set_attr("type", "set");
  iq.set_attr("id", fmt::format("block-push-{}", ++counter));
  iq.add_child(std::move(command));
  return iq;
}

}  // namespace

BlockList::BlockList(store::Store& store, BlockingOptions options) : store_(store), options_(options) {}

Result<std::shared_ptr<const BlockList::JidSet>> BlockList::list(std::string_view owner_bare) {
  std::uint64_t generation;
  {
    std::lock_guard lock(mutex_);
    if (auto it = cache_.find(owner_bare); it != cache_.end()) return it->second;
    generation = generation_;
  }
  auto loaded = store_.read_sync([&](store::Transaction& tx) -> Result<std::shared_ptr<JidSet>> {
    auto set = std::make_shared<JidSet>();
    auto r = tx.query("SELECT jid FROM xmpp_blocklist WHERE owner = ?", {owner_bare},
                      [&](const store::Row& row) { set->emplace(row.text(0)); });
    if (!r) return tl::unexpected(r.error());
    return set;
  });
  if (!loaded) return tl::unexpected(loaded.error());
  std::shared_ptr<const JidSet> set = std::move(*loaded);
  std::lock_guard lock(mutex_);
  if (generation == generation_ && options_.max_cached_owners > 0) {
    // Past the bound, drop some other owner's entry: it is reloaded when next needed.
    if (cache_.size() >= options_.max_cached_owners) cache_.erase(cache_.begin());
    cache_.emplace(std::string(owner_bare), set);
  }
  return set;
}

void BlockList::invalidate(std::string_view owner_bare) {
  std::lock_guard lock(mutex_);
  ++generation_;
  if (auto it = cache_.find(owner_bare); it != cache_.end()) cache_.erase(it);
}

Result<bool> BlockList::is_blocked(std::string_view owner_bare, std::string_view contact) {
  std::size_t slash = contact.find('/');
  std::string_view head = contact.substr(0, slash);
  if (head == owner_bare || contact.empty()) return false;
  auto set = list(owner_bare);
  if (!set) return tl::unexpected(set.error());
  const JidSet& s = **set;
  if (s.empty()) return false;
  std::size_t at = head.find('@');
  std::string_view domain = at == std::string_view::npos ? head : head.substr(at + 1);
  bool has_resource = slash != std::string_view::npos;
  if (has_resource && s.contains(contact)) return true;  // user@domain/resource
  if (s.contains(head)) return true;                     // user@domain (or domain)
  if (has_resource && at != std::string_view::npos && s.contains(contact.substr(at + 1)))
    return true;              // domain/resource
  return s.contains(domain);  // domain
}

Result<std::vector<std::string>> BlockList::items(std::string_view owner_bare) {
  auto set = list(owner_bare);
  if (!set) return tl::unexpected(set.error());
  std::vector<std::string> out((*set)->begin(), (*set)->end());
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> BlockList::block(std::string_view owner_bare, const std::vector<std::string>& jids) {
  int limit = options_.max_items;
  bool over_limit = false;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (const auto& j : jids) {
      auto w = tx.exec("INSERT INTO xmpp_blocklist(owner, jid) VALUES(?, ?) ON CONFLICT(owner, jid) DO NOTHING",
                       {owner_bare, j});
      if (!w) return tl::unexpected(w.error());
    }
    auto count = tx.query_one("SELECT count(*) FROM xmpp_blocklist WHERE owner = ?", {owner_bare});
    if (!count) return tl::unexpected(count.error());
    if ((*count)->integer(0) > limit) {
      over_limit = true;
      return fail(Errc::resource_exhausted, fmt::format("a blocklist holds at most {} JIDs", limit));
    }
    return true;
  });
  // resource_exhausted means the limit only; a full disk becomes "try later".
  if (!r && !over_limit && r.error().code == Errc::resource_exhausted)
    return fail(Errc::unavailable, r.error().message);
  if (!r) return tl::unexpected(r.error());
  invalidate(owner_bare);
  return ok();
}

Result<void> BlockList::unblock(std::string_view owner_bare, const std::vector<std::string>& jids) {
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    for (const auto& j : jids) {
      auto w = tx.exec("DELETE FROM xmpp_blocklist WHERE owner = ? AND jid = ?", {owner_bare, j});
      if (!w) return tl::unexpected(w.error());
    }
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  invalidate(owner_bare);
  return ok();
}

Result<void> BlockList::unblock_all(std::string_view owner_bare) {
  auto r = store_.write_sync(
      [&](store::Transaction& tx) { return tx.exec("DELETE FROM xmpp_blocklist WHERE owner = ?", {owner_bare}); });
  if (!r) return tl::unexpected(r.error());
  invalidate(owner_bare);
  return ok();
}

void BlockList::note_interest(std::string_view owner_bare, std::uint64_t session_id) {
  std::lock_guard lock(mutex_);
  auto it = interest_.find(owner_bare);
  if (it == interest_.end()) it = interest_.emplace(std::string(owner_bare), std::vector<std::uint64_t>()).first;
  if (std::find(it->second.begin(), it->second.end(), session_id) == it->second.end()) it->second.push_back(session_id);
}

bool BlockList::wants_pushes(std::string_view owner_bare, std::uint64_t session_id) const {
  std::lock_guard lock(mutex_);
  auto it = interest_.find(owner_bare);
  return it != interest_.end() && std::find(it->second.begin(), it->second.end(), session_id) != it->second.end();
}

void BlockList::session_closed(std::string_view owner_bare, std::uint64_t session_id) {
  std::lock_guard lock(mutex_);
  auto it = interest_.find(owner_bare);
  if (it == interest_.end()) return;
  std::erase(it->second, session_id);
  if (it->second.empty()) interest_.erase(it);
}

Result<std::shared_ptr<BlockList>> register_blocking(IqTable& table, store::Store& store, BlockPush push,
                                                     BlockingOptions options) {
  if (auto m = store.migrate("xmpp_blocking", kMigrations); !m) return tl::unexpected(m.error());
  auto blocks = std::make_shared<BlockList>(store, options);
  table.add(
      {std::string(kBlockingNs),
       "blocklist",
       IqTarget::both,
       [blocks](const SessionIdentity& me, const std::string& to, const Element& iq, const Element&, IqReply& reply) {
         if (to_server(to)) return reply.error("cancel", "service-unavailable");
         if (iq.attr("type") != "get") return reply.error("modify", "bad-request", "the blocklist is read with get");
         blocks->note_interest(me.bare, me.id);
         auto items = blocks->items(me.bare);
         if (!items) return storage_error(reply, items.error());
         reply.result(command_element("blocklist", *items));
       },
       {std::string(kBlockingNs)}});
  int max_items = options.max_items;
  table.add({std::string(kBlockingNs),
             "block",
             IqTarget::both,
             [blocks, push, max_items](const SessionIdentity& me, const std::string& to, const Element& iq,
                                       const Element& command, IqReply& reply) {
               if (to_server(to)) return reply.error("cancel", "service-unavailable");
               if (iq.attr("type") != "set") return reply.error("modify", "bad-request", "<block/> is sent with set");
               std::vector<std::string> jids;
               if (!parse_items(command, jids, reply)) return;
               if (jids.empty()) return reply.error("modify", "bad-request", "<block/> needs at least one <item/>");
               if (jids.size() > static_cast<std::size_t>(max_items))
                 return reply.error("modify", "policy-violation",
                                    fmt::format("a blocklist holds at most {} JIDs", max_items));
               auto r = blocks->block(me.bare, jids);
               if (!r && r.error().code == Errc::resource_exhausted)
                 return reply.error("modify", "policy-violation", r.error().message);
               if (!r) return storage_error(reply, r.error());
               reply.result();
               if (push) push(me.bare, push_iq(command_element("block", jids)));
             },
             {}});
  table.add({std::string(kBlockingNs),
             "unblock",
             IqTarget::both,
             [blocks, push](const SessionIdentity& me, const std::string& to, const Element& iq, const Element& command,
                            IqReply& reply) {
               if (to_server(to)) return reply.error("cancel", "service-unavailable");
               if (iq.attr("type") != "set") return reply.error("modify", "bad-request", "<unblock/> is sent with set");
               std::vector<std::string> jids;
               if (!parse_items(command, jids, reply)) return;
               auto r = jids.empty() ? blocks->unblock_all(me.bare) : blocks->unblock(me.bare, jids);
               if (!r) return storage_error(reply, r.error());
               reply.result();
               if (push) push(me.bare, push_iq(command_element("unblock", jids)));
             },
             {}});
  return blocks;
}

Element blocked_condition() { return Element("blocked", std::string(kBlockingErrorsNs)); }

}  // namespace hearth::xmpp
