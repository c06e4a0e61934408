#include "xmpp/sm_handover.h"

#include <charconv>

#include "store/store.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "XEP-0198 sessions handed over by a graceful restart", R"sql(
CREATE TABLE xmpp_sm_handover (
  sm_id TEXT PRIMARY KEY,
  localpart TEXT NOT NULL,
  domain TEXT NOT NULL,
  resource TEXT NOT NULL,
  handled INTEGER NOT NULL,
  sent INTEGER NOT NULL,
  acked INTEGER NOT NULL,
  unacked TEXT NOT NULL,
  available INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  presence TEXT NOT NULL,
  carbons INTEGER NOT NULL,
  roster_pushes INTEGER NOT NULL,
  saved_ms INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
};

// Stanzas as "<length>:<bytes>" one after another (stanzas may hold any character).
std::string pack(const std::vector<std::string>& stanzas) {
  std::string out;
  for (const auto& s : stanzas) {
    out += std::to_string(s.size());
    out += ':';
    out += s;
  }
  return out;
}

Result<std::vector<std::string>> unpack(std::string_view packed) {
  std::vector<std::string> out;
  while (!packed.empty()) {
    if (out.size() >= SmHandoverStore::kMaxStanzas) return fail(Errc::corrupt, "too many handed-over stanzas");
    auto colon = packed.find(':');
    std::size_t len = 0;
    if (colon == std::string_view::npos || colon == 0 || colon > 10) return fail(Errc::corrupt, "bad stanza length");
    auto [end, ec] = std::from_chars(packed.data(), packed.data() + colon, len);
    if (ec != std::errc() || end != packed.data() + colon || len > packed.size() - colon - 1)
      return fail(Errc::corrupt, "bad stanza length");
    out.emplace_back(packed.substr(colon + 1, len));
    packed.remove_prefix(colon + 1 + len);
  }
  return out;
}

}  // namespace

Result<void> SmHandoverStore::migrate() { return store_.migrate("xmpp_sm_handover", kMigrations); }

Result<void> SmHandoverStore::save(const HandedOverSession& s) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "INSERT OR REPLACE INTO xmpp_sm_handover(sm_id, localpart, domain, resource, handled, sent, acked, unacked, "
        "available, priority, presence, carbons, roster_pushes, saved_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        {s.sm_id, s.localpart, s.domain, s.resource, std::int64_t{s.handled}, std::int64_t{s.sent},
         std::int64_t{s.acked}, pack(s.unacked), std::int64_t{s.available}, std::int64_t{s.priority}, s.presence,
         std::int64_t{s.carbons}, std::int64_t{s.roster_pushes}, s.saved_ms});
    if (!r) return tl::unexpected(r.error());
    return true;
  }).map([](bool) {});
}

Result<std::vector<HandedOverSession>> SmHandoverStore::load_all() {
  return store_.read_sync([&](store::Transaction& tx) -> Result<std::vector<HandedOverSession>> {
    std::vector<HandedOverSession> out;
    Result<void> bad = ok();
    auto r = tx.query(
        "SELECT sm_id, localpart, domain, resource, handled, sent, acked, unacked, available, priority, presence, "
        "carbons, roster_pushes, saved_ms FROM xmpp_sm_handover",
        {}, [&](const store::Row& row) {
          HandedOverSession s;
          s.sm_id = std::string(row.text(0));
          s.localpart = std::string(row.text(1));
          s.domain = std::string(row.text(2));
          s.resource = std::string(row.text(3));
          s.handled = static_cast<std::uint32_t>(row.integer(4));
          s.sent = static_cast<std::uint32_t>(row.integer(5));
          s.acked = static_cast<std::uint32_t>(row.integer(6));
          auto unacked = unpack(row.text(7));
          if (!unacked) {
            bad = tl::unexpected(unacked.error());
            return;
          }
          s.unacked = std::move(*unacked);
          s.available = row.integer(8) != 0;
          s.priority = static_cast<int>(row.integer(9));
          s.presence = std::string(row.text(10));
          s.carbons = row.integer(11) != 0;
          s.roster_pushes = row.integer(12) != 0;
          s.saved_ms = row.integer(13);
          out.push_back(std::move(s));
        });
    if (!r) return tl::unexpected(r.error());
    if (!bad) return tl::unexpected(bad.error());
    return out;
  });
}

Result<void> SmHandoverStore::remove(std::string_view sm_id) {
  return store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec("DELETE FROM xmpp_sm_handover WHERE sm_id = ?", {sm_id});
    if (!r) return tl::unexpected(r.error());
    return true;
  }).map([](bool) {});
}

}  // namespace hearth::xmpp
