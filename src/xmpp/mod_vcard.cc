#include "xmpp/mod_vcard.h"

#include <fmt/format.h>

#include "core/clock.h"
#include "store/store.h"
#include "xmpp/im.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "vcards", R"sql(
CREATE TABLE xmpp_vcard (
  owner TEXT PRIMARY KEY,
  vcard TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
};

bool is_empty(const Element& e) { return e.nodes().empty(); }

void handle_vcard(store::Store& store, Clock& clock, const VcardOptions& options, const SessionIdentity& me,
                  const Element& iq, const Element& vcard, IqReply& reply) {
  if (iq.attr("type") == "get") {
    auto stored = load_vcard_element(store, me.bare);
    if (!stored) return reply_storage_error(reply, stored.error());
    if (!*stored) return reply.result(Element("vCard", std::string(kVcardNs)));
    return reply.result(std::move(**stored));
  }
  if (is_empty(vcard)) {
    auto r = store.write_sync(
        [&](store::Transaction& tx) { return tx.exec("DELETE FROM xmpp_vcard WHERE owner = ?", {me.bare}); });
    if (!r) return reply_storage_error(reply, r.error());
    return reply.result();
  }
  std::string text = vcard.serialize();
  if (text.size() > options.max_bytes)
    return reply.error("modify", "not-acceptable", fmt::format("a vCard may hold at most {} bytes", options.max_bytes));
  std::int64_t now = clock.now_ms();
  auto r = store.write_sync([&](store::Transaction& tx) {
    return tx.exec(
        "INSERT INTO xmpp_vcard(owner, vcard, updated_ms) VALUES(?, ?, ?) "
        "ON CONFLICT(owner) DO UPDATE SET vcard = excluded.vcard, updated_ms = excluded.updated_ms",
        {me.bare, text, now});
  });
  if (!r) return reply_storage_error(reply, r.error());
  reply.result();
}

}  // namespace

Result<void> register_vcard(IqTable& table, store::Store& store, Clock& clock, VcardOptions options) {
  if (auto m = store.migrate("xmpp_vcard", kMigrations); !m) return m;
  store::Store* s = &store;
  Clock* c = &clock;
  // Registered for the server too, so that its disco#info lists vcard-temp (where clients
  // look); the server itself has no vCard.
  table.add({std::string(kVcardNs),
             "vCard",
             IqTarget::both,
             [s, c, options](const SessionIdentity& me, const std::string& to, const Element& iq,
                             const Element& payload, IqReply& reply) {
               if (to.find('@') == std::string::npos) {
                 if (iq.attr("type") == "get") return reply.result(Element("vCard", std::string(kVcardNs)));
                 return reply.error("auth", "forbidden", "only your own vCard can be changed");
               }
               handle_vcard(*s, *c, options, me, iq, payload, reply);
             },
             {std::string(kVcardNs)}});
  return ok();
}

Result<std::optional<std::string>> load_vcard(store::Store& store, std::string_view bare) {
  return store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto row = tx.query_one("SELECT vcard FROM xmpp_vcard WHERE owner = ?", {bare});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<std::string>();
    return std::optional<std::string>(std::string((*row)->text(0)));
  });
}

Result<std::optional<Element>> load_vcard_element(store::Store& store, std::string_view bare) {
  auto text = load_vcard(store, bare);
  if (!text) return tl::unexpected(text.error());
  if (!*text) return std::optional<Element>();
  auto element = parse_element(**text);
  if (!element || element->name() != "vCard" || element->ns() != kVcardNs)
    return fail(Errc::corrupt, fmt::format("stored vCard of {} does not parse", bare));
  return element;
}

}  // namespace hearth::xmpp
