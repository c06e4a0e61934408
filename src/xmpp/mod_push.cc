#include "xmpp/mod_push.h"

#include <fmt/format.h>

#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"
#include "xmpp/forms.h"
#include "xmpp/im.h"
#include "xmpp/jid.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kPubsubNs = "http://jabber.org/protocol/pubsub";
constexpr std::string_view kSummaryForm = "urn:xmpp:push:summary";
constexpr std::string_view kPublishOptionsForm = "http://jabber.org/protocol/pubsub#publish-options";

const std::vector<store::Migration> kMigrations = {
    {1, "push registrations", R"sql(
CREATE TABLE xmpp_push (
  owner TEXT NOT NULL,
  jid TEXT NOT NULL,
  node TEXT NOT NULL,
  options TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (owner, jid, node)
) WITHOUT ROWID;
)sql"},
};

}  // namespace

PushService::PushService(store::Store& store, Clock& clock, Logger& log, MetricsRegistry& metrics, Send send,
                         int max_registrations)
    : store_(store),
      clock_(clock),
      log_(log),
      sent_(metrics.counter("hearth_xmpp_push_total", "XEP-0357 notifications sent to app servers.",
                            {{"result", "sent"}})),
      undeliverable_(metrics.counter("hearth_xmpp_push_total", "XEP-0357 notifications sent to app servers.",
                                     {{"result", "undeliverable"}})),
      send_(std::move(send)),
      max_registrations_(max_registrations) {}

Result<void> PushService::register_iqs(IqTable& table) {
  if (auto m = store_.migrate("xmpp_push", kMigrations); !m) return m;
  table.add({std::string(kPushNs), "enable", IqTarget::account,
             [this](const SessionIdentity& me, const std::string&, const Element& iq, const Element& enable,
                    IqReply& reply) {
               if (iq.attr("type") != "set") return reply.error("cancel", "bad-request", "enable is a set");
               auto jid = Jid::parse(enable.attr("jid"));
               std::string node(enable.attr("node"));
               if (!jid || node.empty() || node.size() > 1024)
                 return reply.error("modify", "bad-request", "an app server jid and a node are needed");
               std::string options;
               if (const Element* x = enable.child("x", kDataFormsNs)) {
                 auto form = read_form(*x);
                 if (!form || (!form->form_type.empty() && form->form_type != kPublishOptionsForm))
                   return reply.error("modify", "bad-request", "the publish-options form is malformed");
                 options = x->serialize();
                 if (options.size() > 8192) return reply.error("modify", "not-acceptable", "publish-options are too large");
               }
               bool too_many = false;
               auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
                 auto count = tx.query_one("SELECT count(*) FROM xmpp_push WHERE owner = ?", {me.bare});
                 if (!count) return tl::unexpected(count.error());
                 auto exists = tx.query_one("SELECT 1 FROM xmpp_push WHERE owner = ? AND jid = ? AND node = ?",
                                            {me.bare, jid->full(), node});
                 if (!exists) return tl::unexpected(exists.error());
                 if (!*exists && (*count)->integer(0) >= max_registrations_) {
                   too_many = true;
                   return false;
                 }
                 auto w = tx.exec(
                     "INSERT INTO xmpp_push(owner, jid, node, options, created_ms) VALUES(?, ?, ?, ?, ?) ON CONFLICT(owner, "
                     "jid, node) DO UPDATE SET options = excluded.options",
                     {me.bare, jid->full(), node, options, clock_.now_ms()});
                 if (!w) return tl::unexpected(w.error());
                 return true;
               });
               if (too_many) return reply.error("cancel", "policy-violation", "too many push registrations");
               if (!r) return reply_storage_error(reply, r.error());
               reply.result();
             },
             {std::string(kPushNs)}});
  table.add({std::string(kPushNs), "disable", IqTarget::account,
             [this](const SessionIdentity& me, const std::string&, const Element& iq, const Element& disable,
                    IqReply& reply) {
               if (iq.attr("type") != "set") return reply.error("cancel", "bad-request", "disable is a set");
               auto jid = Jid::parse(disable.attr("jid"));
               if (!jid) return reply.error("modify", "bad-request", "an app server jid is needed");
               std::string node(disable.attr("node"));
               auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
                 auto d = node.empty()
                              ? tx.exec("DELETE FROM xmpp_push WHERE owner = ? AND jid = ?", {me.bare, jid->full()})
                              : tx.exec("DELETE FROM xmpp_push WHERE owner = ? AND jid = ? AND node = ?",
                                        {me.bare, jid->full(), node});
                 if (!d) return tl::unexpected(d.error());
                 return true;
               });
               if (!r) return reply_storage_error(reply, r.error());
               reply.result();
             },
             {}});
  return ok();
}

void PushService::notify(const std::string& owner, const std::string& sender) {
  struct Registration {
    std::string jid, node, options;
  };
  std::vector<Registration> regs;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    return tx
        .query("SELECT jid, node, options FROM xmpp_push WHERE owner = ?", {owner},
               [&](const store::Row& row) {
                 regs.push_back({std::string(row.text(0)), std::string(row.text(1)), std::string(row.text(2))});
               })
        .map([] { return true; });
  });
  if (!r || regs.empty()) return;
  auto from = Jid::parse(sender);
  for (const auto& reg : regs) {
    Element iq("iq", std::string(kClientNs));
    iq.set_attr("type", "set");
    iq.set_attr("id", "push-" + random_hex(8));
    iq.set_attr("from", owner);
    iq.set_attr("to", reg.jid);
    Element& pubsub = iq.add_child(Element("pubsub", std::string(kPubsubNs)));
    Element& publish = pubsub.add_child(Element("publish", std::string(kPubsubNs)));
    publish.set_attr("node", reg.node);
    Element& notification = publish.add_child(Element("item", std::string(kPubsubNs)))
                                .add_child(Element("notification", std::string(kPushNs)));
    Element summary = make_form("submit", kSummaryForm);
    summary.add_child(form_field("message-count", "", {"1"}));
    if (from) summary.add_child(form_field("last-message-sender", "", {from->bare()}));
    notification.add_child(std::move(summary));
    if (!reg.options.empty())
      if (auto options = parse_element(reg.options))
        pubsub.add_child(Element("publish-options", std::string(kPubsubNs))).add_child(std::move(*options));
    if (send_(iq)) {
      sent_.inc();
    } else {
      undeliverable_.inc();
      log_.info("xmpp.push_undeliverable", {{"jid", owner}, {"app_server", reg.jid}});
    }
  }
}

Result<void> PushService::forget_account(const std::string& owner) {
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        auto d = tx.exec("DELETE FROM xmpp_push WHERE owner = ?", {owner});
        if (!d) return tl::unexpected(d.error());
        return true;
      })
      .map([](bool) {});
}

}  // namespace hearth::xmpp
