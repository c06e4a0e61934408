#include "xmpp/mod_private.h"

#include <gtest/gtest.h>

#include "module_test_support.h"
#include <unistd.h>

#include <filesystem>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store.h"
#include "xmpp/im.h"

namespace hearth::xmpp {
namespace {

using namespace hearth::xmpp::testing;

struct PrivateTest : StoreFixture {
  std::unique_ptr<IqTable> table;
  SessionIdentity alice = session("alice");

  void SetUp() override { open({}); }
  void open(PrivateStorageOptions options) {
    table.reset();
    ASSERT_TRUE(reopen_store(1));
    table = std::make_unique<IqTable>();
    auto r = register_private(*table, *db, clock, options);
    ASSERT_TRUE(r) << r.error().describe();
  }
  void TearDown() override {
    table.reset();
    StoreFixture::TearDown();
  }

  // `children` go inside <query xmlns='jabber:iq:private'>; `to`: empty for the account
  // itself, else the server's domain.
  FakeReply run(const SessionIdentity& me, std::string type, std::string_view children, std::string to = {}) {
    return run_iq(*table, me, std::move(type),
                  parse("<query xmlns='jabber:iq:private'>" + std::string(children) + "</query>"),
                  to.empty() ? me.bare : to, to.empty() ? IqTarget::account : IqTarget::server);
  }
  // The single element of a get's result.
  Element get(const SessionIdentity& me, std::string_view request) {
    auto r = run(me, "get", request);
    EXPECT_TRUE(r.is_result) << r.condition;
    if (!r.payload) return Element("missing");
    EXPECT_EQ(r.payload->name(), "query");
    EXPECT_EQ(r.payload->ns(), kPrivateNs);
    auto children = r.payload->children();
    if (children.empty()) return Element("missing");
    auto it = children.begin();
    Element first = *it;
    EXPECT_EQ(++it, children.end()) << "exactly one element comes back";
    return first;
  }
};

constexpr std::string_view kPrefs =
    "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick><colour v='&apos;red&apos;'/></exodus>";

TEST_F(PrivateTest, GetOfNothingStoredEchoesTheRequest) {
  EXPECT_EQ(get(alice, "<exodus xmlns='exodus:prefs'/>"), parse("<exodus xmlns='exodus:prefs'/>"));
  EXPECT_EQ(get(alice, "<storage xmlns='storage:bookmarks' extra='kept'/>"),
            parse("<storage xmlns='storage:bookmarks' extra='kept'/>"));
}

TEST_F(PrivateTest, SetThenGetRoundTrips) {
  auto set = run(alice, "set", kPrefs);
  ASSERT_TRUE(set.is_result) << set.condition;
  EXPECT_FALSE(set.payload);
  EXPECT_EQ(get(alice, "<exodus xmlns='exodus:prefs'/>"), parse(kPrefs));
}

TEST_F(PrivateTest, KeyedByNameAndNamespace) {
  ASSERT_TRUE(run(alice, "set", "<a xmlns='urn:one'>1</a>").is_result);
  ASSERT_TRUE(run(alice, "set", "<b xmlns='urn:one'>2</b>").is_result);
  ASSERT_TRUE(run(alice, "set", "<a xmlns='urn:two'>3</a>").is_result);
  EXPECT_EQ(get(alice, "<a xmlns='urn:one'/>").text(), "1");
  EXPECT_EQ(get(alice, "<b xmlns='urn:one'/>").text(), "2");
  EXPECT_EQ(get(alice, "<a xmlns='urn:two'/>").text(), "3");
  ASSERT_TRUE(run(alice, "set", "<a xmlns='urn:one'>replaced</a>").is_result);
  EXPECT_EQ(get(alice, "<a xmlns='urn:one'/>").text(), "replaced");
  EXPECT_EQ(get(alice, "<a xmlns='urn:two'/>").text(), "3");
}

TEST_F(PrivateTest, SetWithSeveralElementsStoresEach) {
  ASSERT_TRUE(run(alice, "set", "<a xmlns='urn:one'>1</a><b xmlns='urn:one'>2</b>").is_result);
  EXPECT_EQ(get(alice, "<a xmlns='urn:one'/>").text(), "1");
  EXPECT_EQ(get(alice, "<b xmlns='urn:one'/>").text(), "2");
}

TEST_F(PrivateTest, ReservedNamespacesAreNotAcceptable) {
  for (std::string_view child : {"<nons>x</nons>", "<a xmlns='jabber:iq:private'/>", "<message xmlns='jabber:client'/>",
                                 "<message xmlns='jabber:server'/>"}) {
    auto set = run(alice, "set", child);
    EXPECT_FALSE(set.is_result) << child;
    EXPECT_EQ(set.condition, "not-acceptable") << child;
    EXPECT_EQ(set.type, "modify") << child;
    auto g = run(alice, "get", child);
    EXPECT_EQ(g.condition, "not-acceptable") << child;
  }
  // One reserved element spoils the whole set: nothing is stored.
  auto mixed = run(alice, "set", "<a xmlns='urn:one'>1</a><b>2</b>");
  EXPECT_EQ(mixed.condition, "not-acceptable");
  EXPECT_EQ(get(alice, "<a xmlns='urn:one'/>"), parse("<a xmlns='urn:one'/>"));
}

TEST_F(PrivateTest, EmptyQueriesAndMultiElementGetsAreNotAcceptable) {
  EXPECT_EQ(run(alice, "get", "").condition, "not-acceptable");
  EXPECT_EQ(run(alice, "set", "").condition, "not-acceptable");
  EXPECT_EQ(run(alice, "get", "<a xmlns='urn:one'/><b xmlns='urn:one'/>").condition, "not-acceptable");
}

TEST_F(PrivateTest, ElementSizeIsLimited) {
  open({.max_element_bytes = 100, .max_elements = 10});
  ASSERT_TRUE(run(alice, "set", "<a xmlns='urn:one'>small</a>").is_result);
  auto big = run(alice, "set", "<a xmlns='urn:one'>" + std::string(200, 'x') + "</a>");
  EXPECT_EQ(big.type, "modify");
  EXPECT_EQ(big.condition, "not-acceptable");
  EXPECT_EQ(get(alice, "<a xmlns='urn:one'/>").text(), "small");
}

TEST_F(PrivateTest, ElementCountIsLimitedPerAccount) {
  open({.max_element_bytes = 1000, .max_elements = 2});
  ASSERT_TRUE(run(alice, "set", "<a xmlns='urn:one'/>").is_result);
  ASSERT_TRUE(run(alice, "set", "<b xmlns='urn:one'/>").is_result);
  auto third = run(alice, "set", "<c xmlns='urn:one'/>");
  EXPECT_EQ(third.condition, "policy-violation");
  // Replacing an existing key is always possible.
  EXPECT_TRUE(run(alice, "set", "<a xmlns='urn:one'>new</a>").is_result);
  // A set that would pass the limit stores nothing, not even its first element.
  auto mixed = run(alice, "set", "<b xmlns='urn:one'>changed</b><c xmlns='urn:one'/>");
  EXPECT_EQ(mixed.condition, "policy-violation");
  EXPECT_EQ(get(alice, "<b xmlns='urn:one'/>").text(), "");
  // Other accounts have their own allowance.
  EXPECT_TRUE(run(session("bob"), "set", "<c xmlns='urn:one'/>").is_result);
}

TEST_F(PrivateTest, PersistsAcrossReopen) {
  ASSERT_TRUE(run(alice, "set", kPrefs).is_result);
  open({});
  EXPECT_EQ(get(alice, "<exodus xmlns='exodus:prefs'/>"), parse(kPrefs));
}

TEST_F(PrivateTest, AccountsAreSeparate) {
  ASSERT_TRUE(run(alice, "set", kPrefs).is_result);
  EXPECT_EQ(get(session("bob"), "<exodus xmlns='exodus:prefs'/>"), parse("<exodus xmlns='exodus:prefs'/>"));
}

TEST_F(PrivateTest, AdvertisedOnTheServerButDataAddressedThereIsForbidden) {
  for (auto target : {IqTarget::account, IqTarget::server}) {
    auto features = table->features(target);
    EXPECT_NE(std::find(features.begin(), features.end(), "jabber:iq:private"), features.end());
  }
  for (const char* type : {"get", "set"}) {
    auto r = run(alice, type, kPrefs, "localhost");
    EXPECT_EQ(r.type, "cancel") << type;
    EXPECT_EQ(r.condition, "forbidden") << type;
  }
  EXPECT_EQ(get(alice, "<exodus xmlns='exodus:prefs'/>"), parse("<exodus xmlns='exodus:prefs'/>"));
}

}  // namespace
}  // namespace hearth::xmpp
