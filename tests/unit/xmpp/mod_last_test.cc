#include "xmpp/mod_last.h"

#include <gtest/gtest.h>

#include "module_test_support.h"

#include <algorithm>

#include "core/clock.h"
#include "xmpp/im.h"

namespace hearth::xmpp {
namespace {

using namespace hearth::xmpp::testing;

struct LastTest : ::testing::Test {
  ManualClock clock;
  IqTable table;
  SessionIdentity alice = session("alice");

  void SetUp() override { register_last(table, clock); }

  FakeReply run(std::string type, const std::string& to, IqTarget target) {
    Element iq("iq", std::string(kClientNs));
    iq.set_attr("type", type);
    iq.set_attr("id", "l1");
    const Element& payload = iq.add_child(Element("query", std::string(kLastNs)));
    FakeReply reply;
    const IqEntry* entry = table.find(payload.ns(), payload.name(), target);
    EXPECT_NE(entry, nullptr);
    if (entry) entry->handler(alice, to, iq, payload, reply);
    EXPECT_EQ(reply.calls, 1);
    return reply;
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
