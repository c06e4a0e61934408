#include "xmpp/mod_blocking.h"

#include <gtest/gtest.h>

#include "module_test_support.h"
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store.h"
#include "xmpp/im.h"

namespace hearth::xmpp {
namespace {

using namespace hearth::xmpp::testing;

struct Push {
  std::string owner;
  Element iq;
};

struct BlockingTest : StoreFixture {
  std::unique_ptr<IqTable> table;
  std::shared_ptr<BlockList> blocks;
  std::vector<Push> pushes;
  SessionIdentity alice = session("alice");

  void SetUp() override { open({}); }
  void open(BlockingOptions options) {
    blocks.reset();
    table.reset();
    ASSERT_TRUE(reopen_store(2));
    table = std::make_unique<IqTable>();
    auto r = register_blocking(
        *table, *db,
        [this](const std::string& owner, const Element& push) {
          pushes.push_back({owner, push});
        },
        options);
    ASSERT_TRUE(r) << r.error().describe();
    blocks = *r;
  }
  void TearDown() override {
    blocks.reset();
    table.reset();
    StoreFixture::TearDown();
  }

  // `to`: empty for the account itself, else the server's domain.
  FakeReply run(const SessionIdentity& me, std::string type, std::string_view payload_xml, std::string to = {}) {
    return run_iq(*table, me, std::move(type), parse(payload_xml), to.empty() ? me.bare : to,
                  to.empty() ? IqTarget::account : IqTarget::server);
  }
  std::vector<std::string> listed(const SessionIdentity& me) {
    auto r = run(me, "get", "<blocklist xmlns='urn:xmpp:blocking'/>");
    EXPECT_TRUE(r.is_result) << r.condition;
    std::vector<std::string> out;
    if (!r.payload) return out;
    EXPECT_EQ(r.payload->name(), "blocklist");
    EXPECT_EQ(r.payload->ns(), kBlockingNs);
    for (const auto& item : r.payload->children()) out.emplace_back(item.attr("jid"));
    return out;
  }
  bool blocked(std::string_view owner, std::string_view contact) {
    auto r = blocks->is_blocked(owner, contact);
    EXPECT_TRUE(r) << r.error().describe();
    return r && *r;
  }
};

using Jids = std::vector<std::string>;

TEST_F(BlockingTest, EmptyBlocklist) {
  EXPECT_EQ(listed(alice), Jids{});
  EXPECT_FALSE(blocked("alice@localhost", "bob@localhost/x"));
}

TEST_F(BlockingTest, BlockListAndUnblockWithPushes) {
  auto r = run(alice, "set",
               "<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/><item jid='iago@shakespeare.lit'/>"
               "</block>");
  ASSERT_TRUE(r.is_result) << r.condition;
  EXPECT_FALSE(r.payload);
  EXPECT_EQ(listed(alice), (Jids{"iago@shakespeare.lit", "romeo@montague.net"}));
  ASSERT_EQ(pushes.size(), 1u);
  EXPECT_EQ(pushes[0].owner, "alice@localhost");
  const Element& push = pushes[0].iq;
  EXPECT_EQ(push.name(), "iq");
  EXPECT_EQ(push.ns(), kClientNs);
  EXPECT_EQ(push.attr("type"), "set");
  EXPECT_FALSE(push.attr("id").empty());
  EXPECT_FALSE(push.has_attr("to")) << "the router addresses each copy";
  EXPECT_EQ(*push.children().begin(),
            parse("<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/><item jid='iago@shakespeare.lit'/>"
                  "</block>"));

  r = run(alice, "set", "<unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock>");
  ASSERT_TRUE(r.is_result) << r.condition;
  EXPECT_EQ(listed(alice), Jids{"iago@shakespeare.lit"});
  ASSERT_EQ(pushes.size(), 2u);
  EXPECT_EQ(*pushes[1].iq.children().begin(),
            parse("<unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock>"));
  EXPECT_NE(pushes[0].iq.attr("id"), pushes[1].iq.attr("id"));
}

TEST_F(BlockingTest, UnblockWithoutItemsClearsAll) {
  ASSERT_TRUE(
      run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='a@x'/><item jid='b@x'/></block>").is_result);
  ASSERT_TRUE(blocked("alice@localhost", "a@x"));
  auto r = run(alice, "set", "<unblock xmlns='urn:xmpp:blocking'/>");
  ASSERT_TRUE(r.is_result);
  EXPECT_EQ(listed(alice), Jids{});
  EXPECT_FALSE(blocked("alice@localhost", "a@x"));
  ASSERT_EQ(pushes.size(), 2u);
  EXPECT_EQ(*pushes[1].iq.children().begin(), Element("unblock", "urn:xmpp:blocking"));
}

TEST_F(BlockingTest, UnblockingUnknownJidsSucceeds) {
  EXPECT_TRUE(run(alice, "set", "<unblock xmlns='urn:xmpp:blocking'><item jid='nobody@x'/></unblock>").is_result);
}

TEST_F(BlockingTest, JidsAreStoredCanonicalAndOnce) {
  ASSERT_TRUE(run(alice, "set",
                  "<block xmlns='urn:xmpp:blocking'><item jid='Romeo@Montague.NET'/><item jid='romeo@montague.net'/>"
                  "<item jid='Montague.net/Orchard'/></block>")
                  .is_result);
  EXPECT_EQ(listed(alice), (Jids{"montague.net/Orchard", "romeo@montague.net"}));
  EXPECT_EQ(*pushes[0].iq.children().begin(), parse("<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/>"
                                                    "<item jid='montague.net/Orchard'/></block>"));
  // Blocking again what is already blocked is fine.
  EXPECT_TRUE(run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>").is_result);
  EXPECT_EQ(listed(alice).size(), 2u);
}

TEST_F(BlockingTest, BadRequests) {
  struct Case {
    std::string type, xml, condition;
  };
  for (const auto& c : std::vector<Case>{
           {"set", "<block xmlns='urn:xmpp:blocking'/>", "bad-request"},
           {"set", "<block xmlns='urn:xmpp:blocking'><item/></block>", "bad-request"},
           {"set", "<block xmlns='urn:xmpp:blocking'><item jid=''/></block>", "jid-malformed"},
           {"set", "<block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block>", "jid-malformed"},
           {"set", "<block xmlns='urn:xmpp:blocking'><item jid='@x'/></block>", "jid-malformed"},
           {"set", "<block xmlns='urn:xmpp:blocking'><other jid='a@x'/></block>", "bad-request"},
           {"set", "<block xmlns='urn:xmpp:blocking'><item xmlns='urn:other' jid='a@x'/></block>", "bad-request"},
           {"set", "<unblock xmlns='urn:xmpp:blocking'><item/></unblock>", "bad-request"},
           {"set", "<unblock xmlns='urn:xmpp:blocking'><item jid='x/'/></unblock>", "jid-malformed"},
           {"get", "<block xmlns='urn:xmpp:blocking'><item jid='a@x'/></block>", "bad-request"},
           {"get", "<unblock xmlns='urn:xmpp:blocking'/>", "bad-request"},
           {"set", "<blocklist xmlns='urn:xmpp:blocking'/>", "bad-request"},
       }) {
    auto r = run(alice, c.type, c.xml);
    EXPECT_FALSE(r.is_result) << c.xml;
    EXPECT_EQ(r.condition, c.condition) << c.xml;
    EXPECT_EQ(r.type, "modify") << c.xml;
  }
  // A bad item spoils the whole request.
  EXPECT_EQ(
      run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='ok@x'/><item jid='@bad'/></block>").condition,
      "jid-malformed");
  EXPECT_EQ(listed(alice), Jids{});
  EXPECT_TRUE(pushes.empty());
}

TEST_F(BlockingTest, MatchingRules) {
  ASSERT_TRUE(
      blocks->block("alice@localhost", {"full@a.example/res", "bare@b.example", "c.example/phone", "d.example"}));
  struct Case {
    std::string contact;
    bool expected;
  };
  for (const auto& c : std::vector<Case>{
           {"full@a.example/res", true},
           {"full@a.example/other", false},
           {"full@a.example", false},
           {"other@a.example/res", false},
           {"a.example", false},
           {"bare@b.example", true},
           {"bare@b.example/any", true},
           {"bare@b.example/res/with/slashes", true},
           {"other@b.example", false},
           {"b.example", false},
           {"c.example/phone", true},
           {"anyone@c.example/phone", true},
           {"anyone@c.example/desk", false},
           {"anyone@c.example", false},
           {"c.example", false},
           {"d.example", true},
           {"d.example/res", true},
           {"user@d.example", true},
           {"user@d.example/res", true},
           {"user@sub.d.example", false},
           {"d.example.org", false},
       })
    EXPECT_EQ(blocked("alice@localhost", c.contact), c.expected) << c.contact;
  // Another owner's list is its own.
  EXPECT_FALSE(blocked("bob@localhost", "d.example"));
}

TEST_F(BlockingTest, OwnAccountIsNeverBlocked) {
  ASSERT_TRUE(run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='localhost'/></block>").is_result);
  EXPECT_TRUE(blocked("alice@localhost", "bob@localhost/x"));
  EXPECT_FALSE(blocked("alice@localhost", "alice@localhost/other"));
  EXPECT_FALSE(blocked("alice@localhost", "alice@localhost"));
}

TEST_F(BlockingTest, ItemCountIsLimited) {
  open({.max_items = 2});
  ASSERT_TRUE(run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='a@x'/></block>").is_result);
  auto r = run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='b@x'/><item jid='c@x'/></block>");
  EXPECT_EQ(r.condition, "policy-violation");
  EXPECT_EQ(r.type, "modify");
  EXPECT_EQ(listed(alice), Jids{"a@x"}) << "all or nothing";
  r = run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='a@x'/><item jid='b@x'/><item jid='c@x'/></block>");
  EXPECT_EQ(r.condition, "policy-violation");
  EXPECT_TRUE(
      run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='b@x'/><item jid='a@x'/></block>").is_result);
  EXPECT_EQ(listed(alice), (Jids{"a@x", "b@x"}));
  EXPECT_EQ(pushes.size(), 2u);
}

TEST_F(BlockingTest, PushInterestFollowsBlocklistRequests) {
  SessionIdentity phone = session("alice", "phone"), desk = session("alice", "desk");
  phone.id = 7;
  desk.id = 8;
  EXPECT_FALSE(blocks->wants_pushes("alice@localhost", 7));
  listed(phone);
  listed(phone);
  EXPECT_TRUE(blocks->wants_pushes("alice@localhost", 7));
  EXPECT_FALSE(blocks->wants_pushes("alice@localhost", 8));
  EXPECT_FALSE(blocks->wants_pushes("bob@localhost", 7));
  listed(desk);
  EXPECT_TRUE(blocks->wants_pushes("alice@localhost", 8));
  blocks->session_closed("alice@localhost", 7);
  EXPECT_FALSE(blocks->wants_pushes("alice@localhost", 7));
  EXPECT_TRUE(blocks->wants_pushes("alice@localhost", 8));
  blocks->session_closed("alice@localhost", 8);
  blocks->session_closed("alice@localhost", 8);
  EXPECT_FALSE(blocks->wants_pushes("alice@localhost", 8));
}

TEST_F(BlockingTest, CacheServesLookupsAndIsInvalidatedByChanges) {
  EXPECT_FALSE(blocked("alice@localhost", "eve@x"));
  // Written behind the BlockList's back: the cached (empty) list still answers, which
  // shows lookups do not go to the store.
  auto w = db->write_sync([](store::Transaction& tx) {
    return tx.exec("INSERT INTO xmpp_blocklist(owner, jid) VALUES('alice@localhost', 'eve@x')");
  });
  ASSERT_TRUE(w);
  EXPECT_FALSE(blocked("alice@localhost", "eve@x"));
  // A change through the protocol invalidates the entry: both rows are seen now.
  ASSERT_TRUE(run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='mallory@x'/></block>").is_result);
  EXPECT_TRUE(blocked("alice@localhost", "eve@x"));
  EXPECT_TRUE(blocked("alice@localhost", "mallory@x/r"));
  ASSERT_TRUE(run(alice, "set", "<unblock xmlns='urn:xmpp:blocking'><item jid='eve@x'/></unblock>").is_result);
  EXPECT_FALSE(blocked("alice@localhost", "eve@x"));
  EXPECT_TRUE(blocked("alice@localhost", "mallory@x"));
  ASSERT_TRUE(run(alice, "set", "<unblock xmlns='urn:xmpp:blocking'/>").is_result);
  EXPECT_FALSE(blocked("alice@localhost", "mallory@x"));
}

TEST_F(BlockingTest, SmallCacheStaysCorrect) {
  open({.max_items = 10, .max_cached_owners = 1});
  ASSERT_TRUE(blocks->block("alice@localhost", {"eve@x"}));
  ASSERT_TRUE(blocks->block("bob@localhost", {"mallory@x"}));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(blocked("alice@localhost", "eve@x"));
    EXPECT_FALSE(blocked("alice@localhost", "mallory@x"));
    EXPECT_TRUE(blocked("bob@localhost", "mallory@x"));
    EXPECT_FALSE(blocked("bob@localhost", "eve@x"));
    EXPECT_FALSE(blocked("carol@localhost", "eve@x"));
  }
}

TEST_F(BlockingTest, PersistsAcrossReopen) {
  ASSERT_TRUE(run(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>").is_result);
  open({});
  EXPECT_EQ(listed(alice), Jids{"romeo@montague.net"});
  EXPECT_TRUE(blocked("alice@localhost", "romeo@montague.net/orchard"));
}

TEST_F(BlockingTest, ConcurrentLookupsSeeEveryCommittedChange) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      while (!stop) (void)blocks->is_blocked("alice@localhost", "eve@x/r");
    });
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(blocks->block("alice@localhost", {"eve@x"}));
    EXPECT_TRUE(blocked("alice@localhost", "eve@x/r")) << i;
    ASSERT_TRUE(blocks->unblock("alice@localhost", {"eve@x"}));
    EXPECT_FALSE(blocked("alice@localhost", "eve@x/r")) << i;
  }
  stop = true;
  for (auto& t : readers) t.join();
}

TEST_F(BlockingTest, AdvertisedOnTheServerButCommandsThereAreRefused) {
  for (auto target : {IqTarget::account, IqTarget::server}) {
    auto features = table->features(target);
    EXPECT_EQ(std::count(features.begin(), features.end(), "urn:xmpp:blocking"), 1);
  }
  for (auto [type, xml] : std::vector<std::pair<std::string, std::string>>{
           {"get", "<blocklist xmlns='urn:xmpp:blocking'/>"},
           {"set", "<block xmlns='urn:xmpp:blocking'><item jid='a@x'/></block>"},
           {"set", "<unblock xmlns='urn:xmpp:blocking'/>"}}) {
    auto r = run(alice, type, xml, "localhost");
    EXPECT_EQ(r.condition, "service-unavailable") << xml;
  }
  EXPECT_EQ(listed(alice), Jids{});
  EXPECT_TRUE(pushes.empty());
}

TEST(BlockedCondition, IsTheBlockingErrorsElement) {
  EXPECT_EQ(blocked_condition().serialize(), "<blocked xmlns='urn:xmpp:blocking:errors'/>");
}

}  // namespace
}  // namespace hearth::xmpp
