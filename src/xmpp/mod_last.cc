#include "xmpp/mod_last.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"
#include "store/store.h"
#include "xmpp/im.h"
#include "xmpp/registry.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {
namespace {

const std::vector<store::Migration> kMigrations = {
    {1, "last logout per account", R"sql(
CREATE TABLE xmpp_last_activity (
  owner TEXT PRIMARY KEY,
  logout_ms INTEGER NOT NULL,
  status TEXT NOT NULL
) WITHOUT ROWID;
)sql"},
};

constexpr std::size_t kMaxStatusBytes = 1024;

}  // namespace

LastActivity::LastActivity(store::Store& store, XmppStore& roster, SessionRegistry& registry, Clock& clock,
                           std::function<bool(const std::string&, const std::string&)> blocked)
    : store_(store),
      roster_(roster),
      registry_(registry),
      clock_(clock),
      blocked_(std::move(blocked)),
      started_ns_(clock.monotonic_ns()) {}

Result<void> LastActivity::register_iqs(IqTable& table) {
  if (auto m = store_.migrate("xmpp_last", kMigrations); !m) return m;
  table.add({std::string(kLastNs),
             "query",
             IqTarget::any,
             [this](const SessionIdentity& me, const std::string& to, const Element& iq, const Element&,
                    IqReply& reply) { answer(me, to, iq, reply); },
             {std::string(kLastNs)}});
  return ok();
}

void LastActivity::answer(const SessionIdentity& me, const std::string& to, const Element& iq, IqReply& reply) {
  if (iq.attr("type") != "get") return reply.error("cancel", "bad-request", "only get is defined");
  Element q("query", std::string(kLastNs));
  bool server = to.find('@') == std::string::npos;
  if (server) {
    q.set_attr("seconds", std::to_string(std::max<std::int64_t>(0, (clock_.monotonic_ns() - started_ns_) / 1'000'000'000)));
    return reply.result(std::move(q));
  }
  if (to == me.bare) {
    q.set_attr("seconds", "0");
    return reply.result(std::move(q));
  }
  auto item = roster_.roster_item(to, me.bare);
  if (!item) return reply_storage_error(reply, item.error());
  if (!*item || !(*item)->state.sends_presence() || blocked_(to, me.bare) || blocked_(me.bare, to))
    return reply.error("auth", "forbidden", "only contacts who see this account's presence may ask");
  for (const auto& s : registry_.sessions(to))
    if (s.available) {
      q.set_attr("seconds", "0");
      return reply.result(std::move(q));
    }
  auto row = store_.read_sync([&](store::Transaction& tx) {
    return tx.query_one("SELECT logout_ms, status FROM xmpp_last_activity WHERE owner = ?", {to});
  });
  if (!row) return reply_storage_error(reply, row.error());
  if (!*row) return reply.error("cancel", "item-not-found", "no logout recorded");
  std::int64_t seconds = std::max<std::int64_t>(0, (clock_.now_ms() - (*row)->integer(0)) / 1000);
  q.set_attr("seconds", std::to_string(seconds));
  if (auto status = (*row)->text(1); !status.empty()) q.add_text(status);
  reply.result(std::move(q));
}

void LastActivity::note_logout(const std::string& bare, const std::string& status) {
  std::string text = status.substr(0, kMaxStatusBytes);
  std::int64_t now = clock_.now_ms();
  // Best effort: a lost logout time only makes the answer older.
  (void)store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "INSERT INTO xmpp_last_activity(owner, logout_ms, status) VALUES(?, ?, ?) ON CONFLICT(owner) DO UPDATE SET "
        "logout_ms = excluded.logout_ms, status = excluded.status",
        {bare, now, text});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
}

Result<void> LastActivity::forget_account(const std::string& bare) {
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto r = tx.exec("DELETE FROM xmpp_last_activity WHERE owner = ?", {bare});
        if (!r) return tl::unexpected(r.error());
        return true;
      })
      .map([](bool) {});
}

}  // namespace hearth::xmpp
