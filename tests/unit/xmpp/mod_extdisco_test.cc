#include "xmpp/mod_extdisco.h"

#include <gtest/gtest.h>

#include "module_test_support.h"
#include "xmpp/forms.h"

namespace hearth::xmpp {
namespace {

using testing::FakeReply;
using testing::parse;

// The value coturn computes for the same secret and username (checked with Python's
// hmac/hashlib: base64(HMAC-SHA1(secret, "1700000000:alice@localhost"))).
TEST(ExternalServices, TurnCredentialsFollowCoturnsSharedSecretScheme) {
  auto c = turn_credentials("north-secret", "alice@localhost", 1700000000);
  EXPECT_EQ(c.username, "1700000000:alice@localhost");
  EXPECT_EQ(c.password, "j9Fj9s1RLMfTNRlAU54oxIMHCgs=");
}

struct ExtDiscoTest : ::testing::Test {
  ManualClock clock;
  IqTable table;
  SessionIdentity me = testing::session("alice");

  FakeReply ask(const std::string& xml) {
    auto iq = parse(xml);
    return testing::run_iq(table, me, std::string(iq.attr("type")), *iq.children().begin(), "localhost",
                           IqTarget::server);
  }
};

TEST_F(ExtDiscoTest, NothingIsOfferedWithoutAHost) {
  register_external_services(table, clock, {});
  EXPECT_EQ(table.find(kExtDiscoNs, "services", IqTarget::server), nullptr);
}

TEST_F(ExtDiscoTest, ServicesCarryFreshCredentialsForTurnOnly) {
  register_external_services(table, clock, {"turn.example.org", 3478, 5349, "north-secret", 3600});
  auto reply = ask("<iq type='get' id='1'><services xmlns='urn:xmpp:extdisco:2'/></iq>");
  ASSERT_TRUE(reply.is_result);
  std::vector<std::string> seen;
  for (const auto& s : reply.payload->children()) {
    seen.push_back(std::string(s.attr("type")) + "/" + std::string(s.attr("transport")) + ":" + std::string(s.attr("port")));
    EXPECT_EQ(s.attr("host"), "turn.example.org");
    if (s.attr("type") == "stun") {
      EXPECT_FALSE(s.has_attr("password"));
      continue;
    }
    EXPECT_EQ(s.attr("restricted"), "1");
    EXPECT_EQ(s.attr("username"), "1700003600:alice@localhost");
    EXPECT_EQ(s.attr("password"), turn_credentials("north-secret", "alice@localhost", 1700003600).password);
    EXPECT_EQ(s.attr("expires"), "2023-11-14T23:13:20.000Z");
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"stun/udp:3478", "turn/udp:3478", "turn/tcp:3478", "turns/tcp:5349"}));

  auto only_stun = ask("<iq type='get' id='1'><services xmlns='urn:xmpp:extdisco:2' type='stun'/></iq>");
  ASSERT_TRUE(only_stun.is_result);
  EXPECT_EQ(std::distance(only_stun.payload->children().begin(), only_stun.payload->children().end()), 1);

  auto creds = ask("<iq type='get' id='2'><credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.example.org' "
                   "type='turns'/></credentials></iq>");
  ASSERT_TRUE(creds.is_result);
  EXPECT_EQ(creds.payload->child("service")->attr("port"), "5349");
  auto unknown = ask("<iq type='get' id='3'><credentials xmlns='urn:xmpp:extdisco:2'><service host='elsewhere' "
                     "type='turn'/></credentials></iq>");
  EXPECT_EQ(unknown.condition, "item-not-found");
}

TEST_F(ExtDiscoTest, StunOnlyWithoutASecret) {
  register_external_services(table, clock, {"stun.example.org", 3478, 0, "", 3600});
  auto reply = ask("<iq type='get' id='1'><services xmlns='urn:xmpp:extdisco:2'/></iq>");
  ASSERT_TRUE(reply.is_result);
  ASSERT_EQ(std::distance(reply.payload->children().begin(), reply.payload->children().end()), 1);
  EXPECT_EQ(reply.payload->child("service")->attr("type"), "stun");
}

TEST(ServerInfo, ContactAddressesFormOnlyWhenConfigured) {
  EXPECT_FALSE(server_info_form({{"abuse", {}}, {"admin", {}}}));
  auto form = server_info_form({{"abuse", {"mailto:abuse@example.org"}}, {"admin", {}},
                                {"support", {"xmpp:help@example.org", "https://example.org/help"}}});
  ASSERT_TRUE(form);
  auto read = read_form(*form);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->form_type, "http://jabber.org/network/serverinfo");
  ASSERT_NE(read->find("abuse-addresses"), nullptr);
  EXPECT_EQ(read->find("admin-addresses"), nullptr);
  EXPECT_EQ(read->find("support-addresses")->size(), 2u);
}

}  // namespace
}  // namespace hearth::xmpp
