#include "xmpp/mod_private.h"

#include <fmt/format.h>

#include <set>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "store/store.h"
#include "xmpp/im.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "private xml storage", R"sql(
CREATE TABLE xmpp_private (
  owner TEXT NOT NULL,
  ns TEXT NOT NULL,
  name TEXT NOT NULL,
  xml TEXT NOT NULL,
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (owner, ns, name)
) WITHOUT ROWID;
)sql"},
};

bool reserved(std::string_view ns) { return ns.empty() || ns == kClientNs || ns == kServerNs || ns == kPrivateNs; }

void handle_get(store::Store& store, const SessionIdentity& me, const Element& query, IqReply& reply) {
  std::vector<const Element*> children;
  for (const auto& c : query.children()) children.push_back(&c);
  if (children.size() != 1)
    return reply.error("modify", "not-acceptable", "a get names exactly one element to retrieve");
  const Element& want = *children.front();
  if (reserved(want.ns()))
    return reply.error("modify", "not-acceptable", "the element needs its own, unreserved namespace");
  auto stored = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT xml FROM xmpp_private WHERE owner = ? AND ns = ? AND name = ?",
                            {me.bare, want.ns(), want.name()});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
  if (!stored) return reply_storage_error(reply, stored.error());
  Element q("query", std::string(kPrivateNs));
  if (!*stored) {
    q.add_child(want);
  } else {
    auto element = parse_element(**stored);
    if (!element) return reply.error("wait", "internal-server-error", "stored data is damaged");
    q.add_child(std::move(*element));
  }
  reply.result(std::move(q));
}

void handle_set(store::Store& store, Clock& clock, const PrivateStorageOptions& options, const SessionIdentity& me,
                const Element& query, IqReply& reply) {
  struct Item {
    std::string ns, name, xml;
  };
  std::vector<Item> items;
  for (const auto& c : query.children()) {
    if (reserved(c.ns()))
      return reply.error("modify", "not-acceptable", "each element needs its own, unreserved namespace");
    std::string xml = c.serialize();
    if (xml.size() > options.max_element_bytes)
      return reply.error("modify", "not-acceptable",
                         fmt::format("a stored element may hold at most {} bytes", options.max_element_bytes));
    items.push_back({c.ns(), c.name(), std::move(xml)});
  }
  if (items.empty()) return reply.error("modify", "not-acceptable", "nothing to store");
  if (items.size() > static_cast<std::size_t>(options.max_elements))
    return reply.error("modify", "policy-violation",
                       fmt::format("at most {} elements are stored", options.max_elements));
  std::int64_t now = clock.now_ms();
  bool over_limit = false;
  auto r = store.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto count = tx.query_one("SELECT count(*) FROM xmpp_private WHERE owner = ?", {me.bare});
    if (!count) return tl::unexpected(count.error());
    std::int64_t keys = (*count)->integer(0);
    std::set<std::pair<std::string, std::string>> added;
    for (const auto& item : items) {
      auto exists = tx.query_one("SELECT 1 FROM xmpp_private WHERE owner = ? AND ns = ? AND name = ?",
                                 {me.bare, item.ns, item.name});
      if (!exists) return tl::unexpected(exists.error());
      if (!*exists && added.insert({item.ns, item.name}).second && ++keys > options.max_elements) {
        over_limit = true;
        return fail(Errc::resource_exhausted, "private storage full");
      }
      auto w = tx.exec(
          "INSERT INTO xmpp_private(owner, ns, name, xml, updated_ms) VALUES(?, ?, ?, ?, ?) "
          "ON CONFLICT(owner, ns, name) DO UPDATE SET xml = excluded.xml, updated_ms = excluded.updated_ms",
          {me.bare, item.ns, item.name, item.xml, now});
      if (!w) return tl::unexpected(w.error());
    }
    return true;
  });
  if (over_limit)
    return reply.error("modify", "policy-violation",
                       fmt::format("at most {} elements are stored", options.max_elements));
  if (!r) return reply_storage_error(reply, r.error());
  reply.result();
}

}  // namespace

Result<void> register_private(IqTable& table, store::Store& store, Clock& clock, PrivateStorageOptions options) {
  if (auto m = store.migrate("xmpp_private", kMigrations); !m) return m;
  store::Store* s = &store;
  Clock* c = &clock;
  // Registered for the server too, so that its disco#info lists jabber:iq:private; data
  // addressed to the server is someone else's (XEP-0049 §2: forbidden).
  table.add({std::string(kPrivateNs),
             "query",
             IqTarget::both,
             [s, c, options](const SessionIdentity& me, const std::string& to, const Element& iq, const Element& query,
                             IqReply& reply) {
               if (to.find('@') == std::string::npos)
                 return reply.error("cancel", "forbidden", "private data is stored on your own account");
               if (iq.attr("type") == "get") return handle_get(*s, me, query, reply);
               handle_set(*s, *c, options, me, query, reply);
             },
             {std::string(kPrivateNs)}});
  return ok();
}

}  // namespace hearth::xmpp
