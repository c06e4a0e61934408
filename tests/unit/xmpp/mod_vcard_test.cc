#include "xmpp/mod_vcard.h"

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

struct VcardTest : StoreFixture {
  std::unique_ptr<IqTable> table;
  SessionIdentity alice = session("alice");

  void SetUp() override { open({}); }
  void open(VcardOptions options) {
    table.reset();
    ASSERT_TRUE(reopen_store(1));
    table = std::make_unique<IqTable>();
    auto r = register_vcard(*table, *db, clock, options);
    ASSERT_TRUE(r) << r.error().describe();
  }
  void TearDown() override {
    table.reset();
    StoreFixture::TearDown();
  }

  // `to`: empty for the account itself, else the server's domain.
  FakeReply run(const SessionIdentity& me, std::string type, std::string_view payload_xml, std::string to = {}) {
    return run_iq(*table, me, std::move(type), parse(payload_xml), to.empty() ? me.bare : to,
                  to.empty() ? IqTarget::account : IqTarget::server);
  }
};

constexpr std::string_view kAliceVcard =
    "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN><MIDDLE/></N>"
    "<NICKNAME>alice</NICKNAME><PHOTO><TYPE>image/png</"
    "TYPE><BINVAL>iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
    "nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==</BINVAL></PHOTO><DESC>Down the &lt;rabbit&gt; hole &amp; back</DESC>"
    "<x xmlns='urn:example:ext' a='1'/></vCard>";

TEST_F(VcardTest, GetWithoutVcardReturnsEmptyVcard) {
  auto r = run(alice, "get", "<vCard xmlns='vcard-temp'/>");
  ASSERT_TRUE(r.is_result);
  ASSERT_TRUE(r.payload);
  EXPECT_EQ(*r.payload, Element("vCard", "vcard-temp"));
}

TEST_F(VcardTest, SetThenGetRoundTripsWithPhoto) {
  auto set = run(alice, "set", kAliceVcard);
  ASSERT_TRUE(set.is_result) << set.condition;
  EXPECT_FALSE(set.payload);
  auto get = run(alice, "get", "<vCard xmlns='vcard-temp'/>");
  ASSERT_TRUE(get.is_result);
  ASSERT_TRUE(get.payload);
  EXPECT_EQ(*get.payload, parse(kAliceVcard));
  const Element* photo = get.payload->child("PHOTO", kVcardNs);
  ASSERT_NE(photo, nullptr);
  EXPECT_EQ(photo->child("TYPE")->text(), "image/png");
  EXPECT_EQ(get.payload->child("x", "urn:example:ext")->attr("a"), "1");
}

TEST_F(VcardTest, SetReplacesTheWholeVcard) {
  ASSERT_TRUE(run(alice, "set", kAliceVcard).is_result);
  ASSERT_TRUE(run(alice, "set", "<vCard xmlns='vcard-temp'><FN>Only a name</FN></vCard>").is_result);
  auto get = run(alice, "get", "<vCard xmlns='vcard-temp'/>");
  ASSERT_TRUE(get.payload);
  EXPECT_EQ(*get.payload, parse("<vCard xmlns='vcard-temp'><FN>Only a name</FN></vCard>"));
  EXPECT_EQ(get.payload->child("PHOTO"), nullptr);
}

TEST_F(VcardTest, EmptySetDeletesTheVcard) {
  ASSERT_TRUE(run(alice, "set", kAliceVcard).is_result);
  ASSERT_TRUE(run(alice, "set", "<vCard xmlns='vcard-temp'/>").is_result);
  auto stored = load_vcard(*db, "alice@localhost");
  ASSERT_TRUE(stored);
  EXPECT_FALSE(*stored);
  auto get = run(alice, "get", "<vCard xmlns='vcard-temp'/>");
  EXPECT_EQ(*get.payload, Element("vCard", "vcard-temp"));
}

TEST_F(VcardTest, TooLargeIsRefusedAndTheOldVcardKept) {
  open({.max_bytes = 200});
  ASSERT_TRUE(run(alice, "set", "<vCard xmlns='vcard-temp'><FN>Small</FN></vCard>").is_result);
  std::string big = "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>" + std::string(300, 'A') + "</BINVAL></PHOTO></vCard>";
  auto r = run(alice, "set", big);
  EXPECT_FALSE(r.is_result);
  EXPECT_EQ(r.type, "modify");
  EXPECT_EQ(r.condition, "not-acceptable");
  auto get = run(alice, "get", "<vCard xmlns='vcard-temp'/>");
  EXPECT_EQ(get.payload->child("FN")->text(), "Small");
}

TEST_F(VcardTest, PersistsAcrossReopen) {
  ASSERT_TRUE(run(alice, "set", kAliceVcard).is_result);
  open({});
  auto get = run(alice, "get", "<vCard xmlns='vcard-temp'/>");
  ASSERT_TRUE(get.payload);
  EXPECT_EQ(*get.payload, parse(kAliceVcard));
}

TEST_F(VcardTest, AccountsAreSeparate) {
  ASSERT_TRUE(run(alice, "set", kAliceVcard).is_result);
  auto bob = run(session("bob"), "get", "<vCard xmlns='vcard-temp'/>");
  EXPECT_EQ(*bob.payload, Element("vCard", "vcard-temp"));
}

TEST_F(VcardTest, LoadForOtherAccounts) {
  ASSERT_TRUE(run(alice, "set", kAliceVcard).is_result);
  auto text = load_vcard(*db, "alice@localhost");
  ASSERT_TRUE(text);
  ASSERT_TRUE(*text);
  EXPECT_EQ(parse(**text), parse(kAliceVcard));
  auto element = load_vcard_element(*db, "alice@localhost");
  ASSERT_TRUE(element);
  ASSERT_TRUE(*element);
  EXPECT_EQ(**element, parse(kAliceVcard));
  auto none = load_vcard_element(*db, "nobody@localhost");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST_F(VcardTest, AdvertisedOnTheServerWhichHasNoVcardOfItsOwn) {
  for (auto target : {IqTarget::account, IqTarget::server}) {
    auto features = table->features(target);
    EXPECT_NE(std::find(features.begin(), features.end(), "vcard-temp"), features.end());
  }
  ASSERT_TRUE(run(alice, "set", kAliceVcard).is_result);
  auto get = run(alice, "get", "<vCard xmlns='vcard-temp'/>", "localhost");
  ASSERT_TRUE(get.is_result);
  EXPECT_EQ(*get.payload, Element("vCard", "vcard-temp"));
  auto set = run(alice, "set", kAliceVcard, "localhost");
  EXPECT_EQ(set.type, "auth");
  EXPECT_EQ(set.condition, "forbidden");
}

}  // namespace
}  // namespace hearth::xmpp
