#include "xmpp/fast.h"

#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"
#include "xmpp/sasl2.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "fast tokens", R"sql(
CREATE TABLE xmpp_fast_token (
  owner TEXT NOT NULL,
  client_id TEXT NOT NULL,
  slot TEXT NOT NULL,
  mechanism TEXT NOT NULL,
  token TEXT NOT NULL,
  issued_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY (owner, client_id, slot)
) WITHOUT ROWID;
)sql"},
};

struct Row {
  std::string slot, mechanism, token;
  std::int64_t issued_ms, expires_ms;
};

}  // namespace

FastTokens::FastTokens(store::Store& store, Clock& clock, FastOptions options)
    : store_(store), clock_(clock), options_(options) {}

Result<void> FastTokens::migrate() { return store_.migrate("xmpp_fast", kMigrations); }

Result<FastToken> FastTokens::issue(std::string_view owner, std::string_view client_id, std::string_view mechanism) {
  FastToken t{random_token(32), clock_.now_ms() + options_.ttl_ms};
  std::int64_t now = clock_.now_ms();
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto w = tx.exec(
        "INSERT INTO xmpp_fast_token(owner, client_id, slot, mechanism, token, issued_ms, expires_ms) "
        "VALUES(?, ?, 'new', ?, ?, ?, ?) ON CONFLICT(owner, client_id, slot) DO UPDATE SET mechanism = "
        "excluded.mechanism, token = excluded.token, issued_ms = excluded.issued_ms, expires_ms = excluded.expires_ms",
        {std::string(owner), std::string(client_id), std::string(mechanism), t.token, now, t.expires_ms});
    if (!w) return tl::unexpected(w.error());
    // Expired tokens go, and past max_clients the installations seen longest ago.
    if (auto d = tx.exec("DELETE FROM xmpp_fast_token WHERE owner = ? AND expires_ms < ?", {std::string(owner), now}); !d)
      return tl::unexpected(d.error());
    auto d = tx.exec(
        "DELETE FROM xmpp_fast_token WHERE owner = ? AND client_id IN (SELECT client_id FROM xmpp_fast_token WHERE "
        "owner = ? GROUP BY client_id ORDER BY max(issued_ms) DESC LIMIT -1 OFFSET ?)",
        {std::string(owner), std::string(owner), std::int64_t{options_.max_clients}});
    if (!d) return tl::unexpected(d.error());
    return true;
  });
  if (!r) return tl::unexpected(r.error());
  return t;
}

Result<FastVerified> FastTokens::verify(std::string_view owner, std::string_view client_id, std::string_view mechanism,
                                        std::string_view proof, std::string_view cb_data) {
  std::vector<Row> rows;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    return tx
        .query("SELECT slot, mechanism, token, issued_ms, expires_ms FROM xmpp_fast_token WHERE owner = ? AND "
               "client_id = ?",
               {std::string(owner), std::string(client_id)},
               [&](const store::Row& row) {
                 rows.push_back({std::string(row.text(0)), std::string(row.text(1)), std::string(row.text(2)),
                                 row.integer(3), row.integer(4)});
               })
        .map([] { return true; });
  });
  if (!r) return tl::unexpected(r.error());
  std::int64_t now = clock_.now_ms();
  for (const auto& row : rows) {
    // XEP-0484 §4: a token works only with the mechanism it was issued for.
    if (row.mechanism != mechanism) continue;
    if (!secrets_equal(ht_initiator_proof(row.token, cb_data), proof)) continue;
    if (row.expires_ms <= now) return fail(Errc::expired, "the token has expired");
    if (row.slot == "new") {
      auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto d = tx.exec("DELETE FROM xmpp_fast_token WHERE owner = ? AND client_id = ? AND slot = 'current'",
                         {std::string(owner), std::string(client_id)});
        if (!d) return tl::unexpected(d.error());
        auto u = tx.exec("UPDATE xmpp_fast_token SET slot = 'current' WHERE owner = ? AND client_id = ? AND slot = 'new' "
                         "AND token = ?",
                         {std::string(owner), std::string(client_id), row.token});
        if (!u) return tl::unexpected(u.error());
        return true;
      });
      if (!w) return tl::unexpected(w.error());
    }
    return FastVerified{row.token, row.issued_ms + options_.rotate_after_ms <= now};
  }
  return fail(Errc::unauthenticated, "no matching token");
}

Result<void> FastTokens::invalidate(std::string_view owner, std::string_view client_id, std::string_view token) {
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto d = tx.exec("DELETE FROM xmpp_fast_token WHERE owner = ? AND client_id = ? AND token = ?",
                         {std::string(owner), std::string(client_id), std::string(token)});
        if (!d) return tl::unexpected(d.error());
        return true;
      })
      .map([](bool) {});
}

Result<void> FastTokens::forget_account(std::string_view owner) {
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto d = tx.exec("DELETE FROM xmpp_fast_token WHERE owner = ?", {std::string(owner)});
        if (!d) return tl::unexpected(d.error());
        return true;
      })
      .map([](bool) {});
}

}  // namespace hearth::xmpp
