#include "xmpp/mod_pep.h"

#include <gtest/gtest.h>

#include "module_test_support.h"
#include "xmpp/caps.h"
#include "xmpp/registry.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {
namespace {

using testing::FakeConnection;
using testing::FakeReply;
using testing::parse;

constexpr const char* kOmemoDevices = "eu.siacs.conversations.axolotl.devicelist";

// A bound, available session whose connection records what it is sent.
struct LiveSession {
  SessionIdentity me;
  std::shared_ptr<FakeConnection> conn = std::make_shared<FakeConnection>();
};

struct PepTest : testing::StoreFixture {
  std::unique_ptr<XmppStore> xstore;
  SessionRegistry registry;
  std::unique_ptr<Pep> pep;
  IqTable table;
  std::set<std::pair<std::string, std::string>> blocks;
  std::uint64_t next_id = 1;

  void SetUp() override {
    ASSERT_TRUE(reopen_store());
    xstore = std::make_unique<XmppStore>(*db, clock);
    ASSERT_TRUE(xstore->migrate());
    pep = std::make_unique<Pep>(
        *db, *xstore, registry, clock,
        [this](const std::string& owner, const std::string& contact) { return blocks.count({owner, contact}) > 0; },
        PepOptions{4096, 5, 10});
    ASSERT_TRUE(pep->register_iqs(table));
  }
  void TearDown() override {
    pep.reset();
    xstore.reset();
    StoreFixture::TearDown();
  }

  LiveSession connect(const std::string& local, const std::string& resource = "phone") {
    LiveSession s;
    s.me = testing::session(local, resource);
    s.me.id = next_id++;
    s.me.sink = std::make_shared<SessionSink>(s.conn);
    auto entry = std::make_shared<SessionEntry>();
    entry->full_jid = s.me.full;
    entry->resource = resource;
    entry->sink = s.me.sink;
    entry->id = s.me.id;
    registry.bind(s.me.bare, entry);
    registry.set_presence(s.me.bare, s.me.id, true, 0, "<presence/>");
    return s;
  }

  // The session announces caps whose features include `notify` nodes, and answers the
  // server's disco#info query.
  void announce_interest(LiveSession& s, const std::vector<std::string>& notify) {
    std::vector<std::string> features = {"http://jabber.org/protocol/disco#info"};
    for (const auto& n : notify) features.push_back(n + "+notify");
    std::string ver = caps_ver({{"client", "phone", "", "test"}}, features);
    std::size_t before = s.conn->sent.size();
    pep->on_presence(s.me, parse("<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' "
                                 "hash='sha-1' node='urn:test' ver='" + ver + "'/></presence>"));
    if (s.conn->sent.size() == before) return;  // known caps: no query
    auto query = parse(s.conn->sent.back());
    ASSERT_EQ(query.name(), "iq");
    ASSERT_EQ(query.attr("to"), s.me.full);
    std::string answer = "<iq xmlns='jabber:client' type='result' id='" + std::string(query.attr("id")) +
                         "'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' "
                         "type='phone' name='test'/>";
    for (const auto& f : features) answer += "<feature var='" + f + "'/>";
    answer += "</query></iq>";
    s.conn->sent.clear();
    EXPECT_TRUE(pep->on_iq_response(s.me, parse(answer)));
  }

  FakeReply request(const SessionIdentity& me, const std::string& to, const std::string& iq_xml) {
    FakeReply reply;
    auto iq = parse(iq_xml);
    const Element& payload = *iq.children().begin();
    if (payload.ns() == kPubsubOwnerNs) pep->handle_owner(me, to, iq, payload, reply);
    else pep->handle_pubsub(me, to, iq, payload, reply);
    EXPECT_EQ(reply.calls, 1) << iq_xml;
    return reply;
  }

  FakeReply publish(const SessionIdentity& me, const std::string& node, const std::string& id,
                    const std::string& payload, const std::string& options = {}) {
    std::string po;
    if (!options.empty())
      po = "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>"
           "http://jabber.org/protocol/pubsub#publish-options</value></field>" + options + "</x></publish-options>";
    return request(me, me.bare,
                   "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='" + node +
                       "'><item" + (id.empty() ? std::string() : " id='" + id + "'") + ">" + payload +
                       "</item></publish>" + po + "</pubsub></iq>");
  }

  // Item ids returned by an items request, in order; empty with the error in `reply`.
  std::vector<std::string> item_ids(const SessionIdentity& me, const std::string& owner, const std::string& node,
                                    FakeReply* out = nullptr, const std::string& extra = {}) {
    auto reply = request(me, owner,
                         "<iq type='get' id='i'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='" +
                             node + "'" + extra + "/></pubsub></iq>");
    std::vector<std::string> ids;
    if (reply.is_result && reply.payload)
      if (const Element* items = reply.payload->child("items"))
        for (const auto& item : items->children()) ids.emplace_back(item.attr("id"));
    if (out) *out = reply;
    return ids;
  }

  void befriend(const std::string& owner, const std::string& contact, Subscription sub) {
    RosterItem item;
    item.jid = contact;
    item.state.subscription = sub;
    ASSERT_TRUE(xstore->put_roster_item(owner, item));
  }

  static std::vector<Element> events(FakeConnection& conn) {
    std::vector<Element> out;
    for (const auto& s : conn.sent)
      if (auto e = parse_element(s); e && e->name() == "message") out.push_back(std::move(*e));
    return out;
  }
};

std::string field(const std::string& var, const std::string& value) {
  return "<field var='" + var + "'><value>" + value + "</value></field>";
}

TEST_F(PepTest, PublishCreatesTheNodeAndTheOwnerReadsTheItemBack) {
  auto alice = testing::session("alice");
  auto reply = publish(alice, "urn:xmpp:avatar:metadata", "abc", "<metadata xmlns='urn:xmpp:avatar:metadata'/>");
  ASSERT_TRUE(reply.is_result) << reply.condition;
  EXPECT_EQ(reply.payload->child("publish")->child("item")->attr("id"), "abc");
  EXPECT_EQ(item_ids(alice, alice.bare, "urn:xmpp:avatar:metadata"), std::vector<std::string>{"abc"});
  // A publish without an item id gets one from the service.
  reply = publish(alice, "urn:test:node", "", "<x xmlns='urn:test'/>");
  ASSERT_TRUE(reply.is_result);
  EXPECT_FALSE(reply.payload->child("publish")->child("item")->attr("id").empty());
}

TEST_F(PepTest, OnlyTheOwnerPublishes) {
  auto mallory = testing::session("mallory");
  FakeReply reply = request(mallory, "alice@localhost",
                            "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish "
                            "node='n'><item><x xmlns='urn:test'/></item></publish></pubsub></iq>");
  EXPECT_EQ(reply.condition, "forbidden");
}

TEST_F(PepTest, DefaultNodesKeepOneItemAndMaxItemsKeepsTheNewest) {
  auto alice = testing::session("alice");
  ASSERT_TRUE(publish(alice, "single", "1", "<x xmlns='urn:test'/>").is_result);
  ASSERT_TRUE(publish(alice, "single", "2", "<x xmlns='urn:test'/>").is_result);
  EXPECT_EQ(item_ids(alice, alice.bare, "single"), std::vector<std::string>{"2"});

  std::string opts = field("pubsub#max_items", "3");
  for (auto id : {"a", "b", "c", "d"}) ASSERT_TRUE(publish(alice, "multi", id, "<x xmlns='urn:test'/>", opts).is_result);
  EXPECT_EQ(item_ids(alice, alice.bare, "multi"), (std::vector<std::string>{"b", "c", "d"}));
  // Re-publishing an id replaces it and makes it the newest.
  ASSERT_TRUE(publish(alice, "multi", "b", "<x xmlns='urn:test'/>", opts).is_result);
  EXPECT_EQ(item_ids(alice, alice.bare, "multi"), (std::vector<std::string>{"c", "d", "b"}));
  EXPECT_EQ(item_ids(alice, alice.bare, "multi", nullptr, " max_items='1'"), std::vector<std::string>{"b"});
  // "max" means the configured ceiling (10 here).
  for (int i = 0; i < 12; ++i)
    ASSERT_TRUE(publish(alice, "bookmarks", std::to_string(i), "<x xmlns='urn:test'/>", field("pubsub#max_items", "max"))
                    .is_result);
  EXPECT_EQ(item_ids(alice, alice.bare, "bookmarks").size(), 10u);
}

TEST_F(PepTest, PublishOptionsArePreconditionsOnAnExistingNode) {
  auto alice = testing::session("alice");
  std::string whitelist = field("pubsub#access_model", "whitelist") + field("pubsub#persist_items", "true");
  ASSERT_TRUE(publish(alice, "urn:xmpp:bookmarks:1", "room@conference.localhost", "<conference xmlns='urn:xmpp:bookmarks:1'/>",
                      whitelist).is_result);
  ASSERT_TRUE(publish(alice, "urn:xmpp:bookmarks:1", "other@conference.localhost",
                      "<conference xmlns='urn:xmpp:bookmarks:1'/>", whitelist).is_result)
      << "the same options are satisfied";
  auto reply = publish(alice, "urn:xmpp:bookmarks:1", "x", "<conference xmlns='urn:xmpp:bookmarks:1'/>",
                       field("pubsub#access_model", "open"));
  EXPECT_EQ(reply.type, "cancel");
  EXPECT_EQ(reply.condition, "conflict");
  ASSERT_TRUE(reply.app_condition);
  EXPECT_EQ(reply.app_condition->name(), "precondition-not-met");
  EXPECT_EQ(reply.app_condition->ns(), kPubsubErrorsNs);
  reply = publish(alice, "fresh", "x", "<x xmlns='urn:test'/>", field("pubsub#unknown_option", "1"));
  EXPECT_EQ(reply.app_condition ? reply.app_condition->name() : "", "precondition-not-met");

  // The owner reconfigures the node (what Conversations does after precondition-not-met),
  // then the publish goes through.
  auto configured = request(alice, alice.bare,
                            "<iq type='set' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure "
                            "node='urn:xmpp:bookmarks:1'><x xmlns='jabber:x:data' type='submit'>" +
                                field("FORM_TYPE", "http://jabber.org/protocol/pubsub#node_config") +
                                field("pubsub#access_model", "open") + "</x></configure></pubsub></iq>");
  ASSERT_TRUE(configured.is_result) << configured.condition << " " << configured.text;
  EXPECT_TRUE(publish(alice, "urn:xmpp:bookmarks:1", "x", "<conference xmlns='urn:xmpp:bookmarks:1'/>",
                      field("pubsub#access_model", "open")).is_result);
  auto form = request(alice, alice.bare,
                      "<iq type='get' id='g'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure "
                      "node='urn:xmpp:bookmarks:1'/></pubsub></iq>");
  ASSERT_TRUE(form.is_result);
  EXPECT_NE(form.payload->serialize().find("<value>open</value>"), std::string::npos) << form.payload->serialize();
}

TEST_F(PepTest, AccessModelsDecideWhoReadsItems) {
  auto alice = testing::session("alice");
  auto bob = testing::session("bob");
  auto eve = testing::session("eve");
  befriend(alice.bare, bob.bare, Subscription::from);  // alice sends presence to bob
  ASSERT_TRUE(publish(alice, "presence-node", "1", "<x xmlns='urn:test'/>").is_result);
  ASSERT_TRUE(publish(alice, kOmemoDevices, "current", "<list xmlns='eu.siacs.conversations.axolotl'/>",
                      field("pubsub#access_model", "open")).is_result);
  ASSERT_TRUE(publish(alice, "secret", "1", "<x xmlns='urn:test'/>", field("pubsub#access_model", "whitelist")).is_result);

  EXPECT_EQ(item_ids(bob, alice.bare, "presence-node"), std::vector<std::string>{"1"});
  FakeReply denied;
  EXPECT_TRUE(item_ids(eve, alice.bare, "presence-node", &denied).empty());
  EXPECT_EQ(denied.condition, "not-authorized");
  EXPECT_EQ(denied.app_condition ? denied.app_condition->name() : "", "presence-subscription-required");

  EXPECT_EQ(item_ids(eve, alice.bare, kOmemoDevices), std::vector<std::string>{"current"}) << "open: anyone";
  EXPECT_TRUE(item_ids(bob, alice.bare, "secret", &denied).empty());
  EXPECT_EQ(denied.condition, "not-allowed");
  EXPECT_EQ(denied.app_condition ? denied.app_condition->name() : "", "closed-node");
  EXPECT_EQ(item_ids(alice, alice.bare, "secret"), std::vector<std::string>{"1"});

  item_ids(bob, alice.bare, "missing", &denied);
  EXPECT_EQ(denied.condition, "item-not-found");

  blocks.insert({alice.bare, bob.bare});
  EXPECT_TRUE(item_ids(bob, alice.bare, "presence-node", &denied).empty()) << "a blocked contact reads nothing";
  EXPECT_EQ(pep->visible_nodes(alice.bare, eve.bare), std::vector<std::string>{kOmemoDevices});
  EXPECT_EQ(pep->visible_nodes(alice.bare, alice.bare).size(), 3u);
}

TEST_F(PepTest, NotificationsFollowNotifyInterestAndPresenceSubscriptions) {
  auto alice_phone = connect("alice", "phone");
  auto alice_laptop = connect("alice", "laptop");
  auto bob = connect("bob");
  auto eve = connect("eve");
  befriend(alice_phone.me.bare, bob.me.bare, Subscription::both);
  befriend(bob.me.bare, alice_phone.me.bare, Subscription::both);
  announce_interest(alice_laptop, {kOmemoDevices});
  announce_interest(bob, {kOmemoDevices});
  announce_interest(eve, {kOmemoDevices});
  EXPECT_EQ(pep->interest_of(bob.me.id), std::set<std::string>{kOmemoDevices});
  for (auto* s : {&alice_phone, &alice_laptop, &bob, &eve}) s->conn->sent.clear();

  ASSERT_TRUE(publish(alice_phone.me, kOmemoDevices, "current", "<list xmlns='eu.siacs.conversations.axolotl'/>",
                      field("pubsub#access_model", "open")).is_result);
  auto to_bob = events(*bob.conn);
  ASSERT_EQ(to_bob.size(), 1u);
  EXPECT_EQ(to_bob[0].attr("from"), "alice@localhost");
  EXPECT_EQ(to_bob[0].attr("type"), "headline");
  const Element* items = to_bob[0].child("event", kPubsubEventNs)->child("items");
  ASSERT_NE(items, nullptr);
  EXPECT_EQ(items->attr("node"), kOmemoDevices);
  EXPECT_EQ(items->child("item")->attr("id"), "current");
  EXPECT_NE(items->child("item")->child("list", "eu.siacs.conversations.axolotl"), nullptr);
  EXPECT_EQ(events(*alice_laptop.conn).size(), 1u) << "the owner's other device";
  EXPECT_TRUE(events(*alice_phone.conn).empty()) << "no +notify from the publishing session";
  EXPECT_TRUE(events(*eve.conn).empty()) << "not a contact: open access allows fetching, not notifications";

  // Retract with notify.
  bob.conn->sent.clear();
  auto retracted = request(alice_phone.me, alice_phone.me.bare,
                           std::string("<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract "
                                       "node='") + kOmemoDevices + "' notify='true'><item id='current'/></retract></pubsub></iq>");
  ASSERT_TRUE(retracted.is_result);
  auto retract_events = events(*bob.conn);
  ASSERT_EQ(retract_events.size(), 1u);
  EXPECT_NE(retract_events[0].child("event", kPubsubEventNs)->child("items")->child("retract"), nullptr);
  auto again = request(alice_phone.me, alice_phone.me.bare,
                       std::string("<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract "
                                   "node='") + kOmemoDevices + "'><item id='current'/></retract></pubsub></iq>");
  EXPECT_EQ(again.condition, "item-not-found");
}

TEST_F(PepTest, ANewSessionGetsTheLastItemsItWants) {
  auto alice = testing::session("alice");
  befriend(alice.bare, "bob@localhost", Subscription::from);
  befriend("bob@localhost", alice.bare, Subscription::to);
  ASSERT_TRUE(publish(alice, "urn:xmpp:avatar:metadata", "old", "<metadata xmlns='urn:xmpp:avatar:metadata'/>").is_result);
  ASSERT_TRUE(publish(alice, "urn:xmpp:avatar:metadata", "new", "<metadata xmlns='urn:xmpp:avatar:metadata'/>").is_result);
  ASSERT_TRUE(publish(alice, "secret", "1", "<x xmlns='urn:test'/>", field("pubsub#access_model", "whitelist")).is_result);
  auto bob = connect("bob");
  announce_interest(bob, {"urn:xmpp:avatar:metadata", "secret"});
  auto got = events(*bob.conn);
  ASSERT_EQ(got.size(), 1u) << "only what bob may see";
  EXPECT_EQ(got[0].child("event", kPubsubEventNs)->child("items")->child("item")->attr("id"), "new");
  EXPECT_NE(got[0].child("delay", "urn:xmpp:delay"), nullptr);

  // A second session with the same verified caps needs no query.
  auto bob2 = connect("bob", "laptop");
  std::vector<std::string> features = {"http://jabber.org/protocol/disco#info", "urn:xmpp:avatar:metadata+notify",
                                       "secret+notify"};
  std::string ver = caps_ver({{"client", "phone", "", "test"}}, features);
  pep->on_presence(bob2.me, parse("<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' "
                                  "hash='sha-1' node='urn:test' ver='" + ver + "'/></presence>"));
  auto sent = events(*bob2.conn);
  ASSERT_EQ(sent.size(), 1u) << "the last item, and no disco#info query";
  EXPECT_EQ(bob2.conn->sent.size(), 1u);
}

TEST_F(PepTest, ForgedCapsAreNotSharedWithOtherSessions) {
  auto mallory = connect("mallory");
  std::string honest_ver = caps_ver({{"client", "phone", "", "test"}}, {"urn:a+notify"});
  mallory.conn->sent.clear();
  pep->on_presence(mallory.me, parse("<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' "
                                     "hash='sha-1' node='n' ver='" + honest_ver + "'/></presence>"));
  auto query = parse(mallory.conn->sent.back());
  EXPECT_TRUE(pep->on_iq_response(mallory.me, parse("<iq type='result' id='" + std::string(query.attr("id")) +
                                                    "'><query xmlns='http://jabber.org/protocol/disco#info'><feature "
                                                    "var='urn:evil+notify'/></query></iq>")));
  EXPECT_EQ(pep->interest_of(mallory.me.id), std::set<std::string>{"urn:evil"});
  auto victim = connect("victim");
  victim.conn->sent.clear();
  pep->on_presence(victim.me, parse("<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' "
                                    "hash='sha-1' node='n' ver='" + honest_ver + "'/></presence>"));
  ASSERT_EQ(victim.conn->sent.size(), 1u) << "the unverified answer was not cached: the victim is asked";
  EXPECT_TRUE(pep->interest_of(victim.me.id).empty());
  EXPECT_FALSE(pep->on_iq_response(victim.me, parse("<iq type='result' id='someone-elses'/>")));
}

TEST_F(PepTest, DeleteAndPurgeNotifyAndRemove) {
  auto alice = connect("alice", "phone");
  auto laptop = connect("alice", "laptop");
  announce_interest(laptop, {"n"});
  ASSERT_TRUE(publish(alice.me, "n", "1", "<x xmlns='urn:test'/>", field("pubsub#max_items", "5")).is_result);
  ASSERT_TRUE(publish(alice.me, "n", "2", "<x xmlns='urn:test'/>", field("pubsub#max_items", "5")).is_result);
  laptop.conn->sent.clear();
  auto purged = request(alice.me, alice.me.bare,
                        "<iq type='set' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><purge "
                        "node='n'/></pubsub></iq>");
  ASSERT_TRUE(purged.is_result);
  EXPECT_TRUE(item_ids(alice.me, alice.me.bare, "n").empty());
  auto got = events(*laptop.conn);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].child("event", kPubsubEventNs)->child("purge"), nullptr);
  auto deleted = request(alice.me, alice.me.bare,
                         "<iq type='set' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete "
                         "node='n'/></pubsub></iq>");
  ASSERT_TRUE(deleted.is_result);
  FakeReply missing;
  item_ids(alice.me, alice.me.bare, "n", &missing);
  EXPECT_EQ(missing.condition, "item-not-found");
  auto bob = testing::session("bob");
  auto foreign = request(bob, alice.me.bare,
                         "<iq type='set' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete "
                         "node='n'/></pubsub></iq>");
  EXPECT_EQ(foreign.condition, "forbidden");
}

TEST_F(PepTest, LimitsOnPayloadsNodesAndCreation) {
  auto alice = testing::session("alice");
  auto big = publish(alice, "n", "1", "<x xmlns='urn:test'>" + std::string(5000, 'a') + "</x>");
  EXPECT_EQ(big.condition, "not-acceptable");
  EXPECT_EQ(big.app_condition ? big.app_condition->name() : "", "payload-too-big");
  auto empty = request(alice, alice.bare,
                       "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'>"
                       "<item id='1'/></publish></pubsub></iq>");
  EXPECT_EQ(empty.app_condition ? empty.app_condition->name() : "", "payload-required");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(publish(alice, "node" + std::to_string(i), "1", "<x xmlns='urn:test'/>").is_result);
  auto sixth = publish(alice, "node5", "1", "<x xmlns='urn:test'/>");
  EXPECT_EQ(sixth.condition, "policy-violation") << "at most 5 nodes in this test";
  auto exists = request(alice, alice.bare,
                        "<iq type='set' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create "
                        "node='node1'/></pubsub></iq>");
  EXPECT_EQ(exists.condition, "conflict");
  auto subscribe = request(alice, "bob@localhost",
                           "<iq type='set' id='s'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe "
                           "node='n' jid='alice@localhost'/></pubsub></iq>");
  EXPECT_EQ(subscribe.condition, "feature-not-implemented");
  EXPECT_EQ(subscribe.app_condition ? subscribe.app_condition->attr("feature") : "", "subscribe");
}

TEST_F(PepTest, ForgettingAnAccountRemovesItsNodes) {
  auto alice = testing::session("alice");
  ASSERT_TRUE(publish(alice, "n", "1", "<x xmlns='urn:test'/>").is_result);
  ASSERT_TRUE(pep->forget_account(alice.bare));
  EXPECT_TRUE(pep->visible_nodes(alice.bare, alice.bare).empty());
}

}  // namespace
}  // namespace hearth::xmpp
