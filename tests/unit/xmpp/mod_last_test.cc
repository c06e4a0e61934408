#include "xmpp/mod_last.h"

#include <gtest/gtest.h>

#include "module_test_support.h"

#include <algorithm>

#include "core/clock.h"
#include "xmpp/im.h"
#include "xmpp/registry.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {
namespace {

using namespace hearth::xmpp::testing;
using hearth::xmpp::testing::StoreFixture;

struct LastTest : StoreFixture {
  IqTable table;
  SessionIdentity alice = session("alice");
  std::unique_ptr<XmppStore> xstore;
  SessionRegistry registry;
  std::unique_ptr<LastActivity> last;
  bool blocking = false;

  void SetUp() override {
    ASSERT_TRUE(reopen_store());
    xstore = std::make_unique<XmppStore>(*db, clock);
    ASSERT_TRUE(xstore->migrate());
    last = std::make_unique<LastActivity>(*db, *xstore, registry, clock,
                                          [this](const std::string&, const std::string&) { return blocking; });
    ASSERT_TRUE(last->register_iqs(table));
  }
  void TearDown() override {
    last.reset();
    xstore.reset();
    StoreFixture::TearDown();
  }

  FakeReply run(std::string type, const std::string& to, IqTarget target) {
    return run_iq(table, alice, std::move(type), Element("query", std::string(kLastNs)), to, target);
  }
};

TEST_F(LastTest, ServerReportsSecondsSinceStart) {
  auto r = run("get", "localhost", IqTarget::server);
  ASSERT_TRUE(r.is_result);
  ASSERT_TRUE(r.payload);
  EXPECT_EQ(r.payload->name(), "query");
  EXPECT_EQ(r.payload->ns(), kLastNs);
  EXPECT_EQ(r.payload->attr("seconds"), "0");
  EXPECT_TRUE(r.payload->nodes().empty()) << "a server's answer carries no text";
  clock.advance_ms(123'456'789);
  EXPECT_EQ(run("get", "localhost", IqTarget::server).payload->attr("seconds"), "123456");
}

TEST_F(LastTest, OwnAccountIsOnlineSoZero) {
  clock.advance_ms(60'000);
  auto r = run("get", "alice@localhost", IqTarget::account);
  ASSERT_TRUE(r.is_result);
  EXPECT_EQ(r.payload->attr("seconds"), "0");
}

TEST_F(LastTest, ContactsSeeTheTimeSinceTheLastLogoutWithItsStatus) {
  // bob's roster lets alice see his presence.
  RosterItem item;
  item.jid = alice.bare;
  item.state.subscription = Subscription::from;
  ASSERT_TRUE(xstore->put_roster_item("bob@localhost", item));
  EXPECT_EQ(run("get", "bob@localhost", IqTarget::peer).condition, "item-not-found") << "never logged out";
  last->note_logout("bob@localhost", "gone fishing");
  clock.advance_ms(90'500);
  auto r = run("get", "bob@localhost", IqTarget::peer);
  ASSERT_TRUE(r.is_result);
  EXPECT_EQ(r.payload->attr("seconds"), "90");
  EXPECT_EQ(r.payload->text(), "gone fishing");

  // Online again: 0.
  auto entry = std::make_shared<SessionEntry>();
  entry->full_jid = "bob@localhost/desk";
  entry->id = 7;
  registry.bind("bob@localhost", entry);
  registry.set_presence("bob@localhost", 7, true, 0, "<presence/>");
  EXPECT_EQ(run("get", "bob@localhost", IqTarget::peer).payload->attr("seconds"), "0");

  blocking = true;
  EXPECT_EQ(run("get", "bob@localhost", IqTarget::peer).condition, "forbidden");
}

TEST_F(LastTest, StrangersAreRefused) {
  last->note_logout("carol@localhost", "");
  EXPECT_EQ(run("get", "carol@localhost", IqTarget::peer).condition, "forbidden");
  ASSERT_TRUE(last->forget_account("carol@localhost"));
}

TEST_F(LastTest, SetIsBadRequest) {
  auto r = run("set", "localhost", IqTarget::server);
  EXPECT_FALSE(r.is_result);
  EXPECT_EQ(r.condition, "bad-request");
}

TEST_F(LastTest, AdvertisedForServerAndAccounts) {
  for (auto target : {IqTarget::server, IqTarget::account}) {
    auto features = table.features(target);
    EXPECT_NE(std::find(features.begin(), features.end(), "jabber:iq:last"), features.end());
  }
}

}  // namespace
}  // namespace hearth::xmpp
