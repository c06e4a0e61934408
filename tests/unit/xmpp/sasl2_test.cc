#include "xmpp/sasl2.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include "module_test_support.h"
#include "xmpp/fast.h"

namespace hearth::xmpp {
namespace {

using testing::parse;

std::string hex(std::string_view raw) {
  std::string out;
  for (unsigned char c : raw) out += fmt::format("{:02x}", c);
  return out;
}

TEST(Sasl2, ParsesAnAuthenticateWithItsInlineRequests) {
  auto r = parse_sasl2_authenticate(parse(
      "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'><initial-response>bix5LHI9YWJj</initial-response>"
      "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>App</software><device>Phone</device></user-agent>"
      "<bind xmlns='urn:xmpp:bind:0'><tag>App</tag><enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' "
      "resume='true'/><inactive xmlns='urn:xmpp:csi:0'/></bind><resume xmlns='urn:xmpp:sm:3' previd='x' h='42'/>"
      "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->mechanism, "SCRAM-SHA-256");
  EXPECT_EQ(r->initial_response, std::optional<std::string>("n,y,r=abc"));
  EXPECT_EQ(r->user_agent_id, "d4565fa7-4d72-4749-b3d3-740edbf87770");
  EXPECT_EQ(r->device, "Phone");
  ASSERT_TRUE(r->bind);
  EXPECT_EQ(r->bind->tag, "App");
  EXPECT_TRUE(r->bind->enable_carbons && r->bind->enable_sm && r->bind->sm_resume && r->bind->inactive);
  ASSERT_TRUE(r->resume);
  EXPECT_EQ(r->resume->h, 42u);
  EXPECT_EQ(r->request_token, "HT-SHA-256-NONE");
  EXPECT_FALSE(r->fast);
}

TEST(Sasl2, AnEmptyInitialResponseIsNotAMissingOne) {
  auto with = parse_sasl2_authenticate(parse("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X'><initial-response/></authenticate>"));
  auto without = parse_sasl2_authenticate(parse("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X'/>"));
  ASSERT_TRUE(with && without);
  EXPECT_EQ(with->initial_response, std::optional<std::string>(""));
  EXPECT_FALSE(without->initial_response);
}

TEST(Sasl2, MalformedRequestsAreRefused) {
  EXPECT_FALSE(parse_sasl2_authenticate(parse("<authenticate xmlns='urn:xmpp:sasl:2'/>")));
  EXPECT_FALSE(parse_sasl2_authenticate(
      parse("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X'><initial-response>not base64!</initial-response></authenticate>")));
  EXPECT_FALSE(parse_sasl2_authenticate(parse(
      "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X'><resume xmlns='urn:xmpp:sm:3' previd='x' h='99999999999'/></authenticate>")));
}

// Values from Python's hmac module: HMAC-SHA-256(key="tok", "Initiator") and
// HMAC-SHA-256(key="tok", "Responder" || 01 02).
TEST(Sasl2, HtProofsAreHmacsKeyedWithTheToken) {
  EXPECT_EQ(hex(ht_initiator_proof("tok", "")), "c8dce9714aff9293d55ce08e3655d2b217147484f7ae588282ba96a692dc31eb");
  EXPECT_EQ(hex(ht_responder_proof("tok", std::string("\x01\x02", 2))), "6a21078c0cf9d51808f26fa5f155fa0d00611f56b4c1b612a033e74b1331109f");
  EXPECT_EQ(ht_channel_binding("HT-SHA-256-ENDP"), std::optional<std::string>("tls-server-end-point"));
  EXPECT_EQ(ht_channel_binding("HT-SHA-256-NONE"), std::optional<std::string>(""));
  EXPECT_FALSE(ht_channel_binding("HT-SHA-256-UNIQ"));
  auto split = split_ht_message(std::string("alice\0", 6) + std::string(32, 'x'));
  ASSERT_TRUE(split);
  EXPECT_EQ(split->first, "alice");
  EXPECT_FALSE(split_ht_message(std::string("alice\0short", 11)));
}

TEST(Sasl2, Bind2ResourcesAreStablePerInstallationAndHideItsId) {
  auto a = bind2_resource("App", "alice@localhost", "d4565fa7");
  EXPECT_EQ(a, bind2_resource("App", "alice@localhost", "d4565fa7"));
  EXPECT_NE(a, bind2_resource("App", "alice@localhost", "other-install"));
  EXPECT_EQ(a.rfind("App.", 0), 0u);
  EXPECT_EQ(a.find("d4565fa7"), std::string::npos);
  EXPECT_NE(bind2_resource("App", "alice@localhost", ""), bind2_resource("App", "alice@localhost", ""));
}

struct FastTest : testing::StoreFixture {
  std::unique_ptr<FastTokens> fast;
  void SetUp() override {
    ASSERT_TRUE(reopen_store());
    fast = std::make_unique<FastTokens>(*db, clock, FastOptions{10 * 86'400'000LL, 86'400'000LL, 50});
    ASSERT_TRUE(fast->migrate());
  }
  void TearDown() override {
    fast.reset();
    StoreFixture::TearDown();
  }
  Result<FastVerified> use(const std::string& token, const std::string& mech = "HT-SHA-256-NONE") {
    return fast->verify("alice@localhost", "phone", mech, ht_initiator_proof(token, ""), "");
  }
};

TEST_F(FastTest, TokensWorkOnlyForTheirMechanismAndClient) {
  auto t = fast->issue("alice@localhost", "phone", "HT-SHA-256-NONE");
  ASSERT_TRUE(t);
  EXPECT_TRUE(use(t->token));
  EXPECT_EQ(use(t->token, "HT-SHA-256-ENDP").error().code, Errc::unauthenticated);
  EXPECT_FALSE(fast->verify("alice@localhost", "laptop", "HT-SHA-256-NONE", ht_initiator_proof(t->token, ""), ""));
  EXPECT_EQ(use("guess").error().code, Errc::unauthenticated);
}

TEST_F(FastTest, RotationKeepsTheOldTokenUntilTheNewOneIsUsed) {
  auto first = fast->issue("alice@localhost", "phone", "HT-SHA-256-NONE");
  ASSERT_TRUE(use(first->token));  // promoted to current
  clock.advance_ms(2 * 86'400'000LL);
  auto used = use(first->token);
  ASSERT_TRUE(used);
  EXPECT_TRUE(used->rotate) << "older than a day";
  auto second = fast->issue("alice@localhost", "phone", "HT-SHA-256-NONE");
  EXPECT_TRUE(use(first->token)) << "the client may not have received the new token yet";
  EXPECT_TRUE(use(second->token));
  EXPECT_FALSE(use(first->token)) << "using the new token retires the old one";
  clock.advance_ms(11 * 86'400'000LL);
  EXPECT_EQ(use(second->token).error().code, Errc::expired);
}

TEST_F(FastTest, InvalidateAndForget) {
  auto t = fast->issue("alice@localhost", "phone", "HT-SHA-256-NONE");
  ASSERT_TRUE(fast->invalidate("alice@localhost", "phone", t->token));
  EXPECT_FALSE(use(t->token));
  auto u = fast->issue("alice@localhost", "phone", "HT-SHA-256-NONE");
  ASSERT_TRUE(fast->forget_account("alice@localhost"));
  EXPECT_FALSE(use(u->token));
}

}  // namespace
}  // namespace hearth::xmpp
