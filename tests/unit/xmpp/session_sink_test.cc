#include "xmpp/session_sink.h"

#include <gtest/gtest.h>

#include "module_test_support.h"

namespace hearth::xmpp {
namespace {

using testing::FakeConnection;


TEST(SessionSink, WithoutAcksStanzasPassStraightThrough) {
  auto conn = std::make_shared<FakeConnection>();
  SessionSink sink(conn);
  sink.deliver("<message>1</message>");
  EXPECT_EQ(conn->stanzas().size(), 1u);
  EXPECT_TRUE(sink.take_unacked().empty());
  EXPECT_EQ(sink.sent_count(), 0u);
}

TEST(SessionSink, AcksReleaseCopiesAndTooHighIsRefused) {
  auto conn = std::make_shared<FakeConnection>();
  SessionSink sink(conn);
  sink.enable_acks();
  for (int i = 0; i < 6; ++i) sink.deliver("<message>" + std::to_string(i) + "</message>");
  EXPECT_EQ(sink.sent_count(), 6u);
  EXPECT_NE(std::find(conn->sent.begin(), conn->sent.end(), "<r xmlns='urn:xmpp:sm:3'/>"), conn->sent.end())
      << "the server asks for acks as unacknowledged stanzas pile up";
  EXPECT_TRUE(sink.ack(4));
  EXPECT_FALSE(sink.ack(7)) << "more than was sent";
  auto left = sink.take_unacked();
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0], "<message>4</message>");
}

TEST(SessionSink, DetachedStanzasQueueAndAreResentOnAttach) {
  auto first = std::make_shared<FakeConnection>();
  SessionSink sink(first);
  sink.enable_acks();
  sink.deliver("<message>a</message>");
  sink.deliver("<message>b</message>");
  sink.detach();
  sink.deliver("<message>c</message>");
  EXPECT_EQ(first->stanzas().size(), 2u);
  auto second = std::make_shared<FakeConnection>();
  ASSERT_TRUE(sink.attach(second, 1));  // the client had seen "a"
  EXPECT_EQ(second->stanzas(), (std::vector<std::string>{"<message>b</message>", "<message>c</message>"}));
  auto third = std::make_shared<FakeConnection>();
  EXPECT_FALSE(sink.attach(third, 9));
}

TEST(SessionSink, UnackedBacklogIsBounded) {
  auto conn = std::make_shared<FakeConnection>();
  SessionSink sink(conn, 3);
  sink.enable_acks();
  for (int i = 0; i < 4; ++i) sink.deliver("<m/>");
  EXPECT_TRUE(conn->closed);
}

}  // namespace
}  // namespace hearth::xmpp

namespace hearth::xmpp {
namespace {

TEST(SessionSink, InactiveClientsGetOnlyTheNewestPresenceOfEachContactLater) {
  auto conn = std::make_shared<FakeConnection>();
  SessionSink sink(conn);
  sink.set_active(false);
  sink.deliver("<presence from='a@x/1'><show>away</show></presence>");
  sink.deliver("<presence from='b@x/1'/>");
  sink.deliver("<presence from='a@x/1'><show>dnd</show></presence>");
  EXPECT_TRUE(conn->stanzas().empty());
  sink.deliver("<message from='c@x/1'><body>hi</body></message>");
  EXPECT_EQ(conn->stanzas(), (std::vector<std::string>{"<presence from='b@x/1'/>",
                                                       "<presence from='a@x/1'><show>dnd</show></presence>",
                                                       "<message from='c@x/1'><body>hi</body></message>"}));
  sink.deliver("<presence from='d@x/1'/>");
  EXPECT_EQ(conn->stanzas().size(), 3u);
  sink.set_active(true);
  EXPECT_EQ(conn->stanzas().size(), 4u);
  sink.deliver("<presence from='e@x/1'/>");
  EXPECT_EQ(conn->stanzas().size(), 5u) << "active clients get presence at once";
}

}  // namespace
}  // namespace hearth::xmpp
