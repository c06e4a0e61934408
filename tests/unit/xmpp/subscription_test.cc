// Every row of RFC 6121 Appendix A (A.2 outbound, A.3 inbound), state by state.
#include "xmpp/subscription.h"

#include <gtest/gtest.h>

namespace hearth::xmpp {
namespace {

using S = Subscription;
using T = SubscriptionStanza;

// The nine states of A.1 by their RFC names.
const SubscriptionState None{S::none, false, false};
const SubscriptionState NoneOut{S::none, true, false};
const SubscriptionState NoneIn{S::none, false, true};
const SubscriptionState NoneOutIn{S::none, true, true};
const SubscriptionState To{S::to, false, false};
const SubscriptionState ToIn{S::to, false, true};
const SubscriptionState From{S::from, false, false};
const SubscriptionState FromOut{S::from, true, false};
const SubscriptionState Both{S::both, false, false};

struct Row {
  SubscriptionState before;
  SubscriptionState after;
};

void expect_table(bool outbound, T stanza, std::initializer_list<Row> rows, bool forward_unchanged) {
  for (const auto& row : rows) {
    auto o = outbound ? apply_outbound(row.before, stanza) : apply_inbound(row.before, stanza);
    EXPECT_EQ(o.next, row.after) << "stanza " << static_cast<int>(stanza) << " from state "
                                 << subscription_name(row.before.subscription) << row.before.pending_out
                                 << row.before.pending_in;
    EXPECT_EQ(o.changed, !(row.before == row.after));
    if (o.changed || forward_unchanged) {
      EXPECT_TRUE(o.forward);
    }
  }
}

TEST(Subscription, A21OutboundSubscribe) {
  expect_table(true, T::subscribe,
               {{None, NoneOut}, {NoneOut, NoneOut}, {NoneIn, NoneOutIn}, {NoneOutIn, NoneOutIn}, {To, To},
                {ToIn, ToIn}, {From, FromOut}, {FromOut, FromOut}, {Both, Both}},
               true);
}

TEST(Subscription, A22OutboundUnsubscribe) {
  expect_table(true, T::unsubscribe,
               {{None, None}, {NoneOut, None}, {NoneIn, NoneIn}, {NoneOutIn, NoneIn}, {To, None}, {ToIn, NoneIn},
                {From, From}, {FromOut, From}, {Both, From}},
               true);
}

TEST(Subscription, A23OutboundSubscribed) {
  expect_table(true, T::subscribed,
               {{None, None}, {NoneOut, NoneOut}, {NoneIn, From}, {NoneOutIn, FromOut}, {To, To}, {ToIn, Both},
                {From, From}, {FromOut, FromOut}, {Both, Both}},
               false);
  EXPECT_FALSE(apply_outbound(None, T::subscribed).forward);  // no pre-approval
}

TEST(Subscription, A24OutboundUnsubscribed) {
  expect_table(true, T::unsubscribed,
               {{None, None}, {NoneOut, NoneOut}, {NoneIn, None}, {NoneOutIn, NoneOut}, {To, To}, {ToIn, To},
                {From, None}, {FromOut, NoneOut}, {Both, To}},
               false);
}

TEST(Subscription, A31InboundSubscribe) {
  expect_table(false, T::subscribe,
               {{None, NoneIn}, {NoneOut, NoneOutIn}, {NoneIn, NoneIn}, {NoneOutIn, NoneOutIn}, {To, ToIn},
                {ToIn, ToIn}, {From, From}, {FromOut, FromOut}, {Both, Both}},
               false);
  for (auto st : {From, FromOut, Both}) {
    auto o = apply_inbound(st, T::subscribe);
    EXPECT_TRUE(o.auto_reply_subscribed);
    EXPECT_FALSE(o.forward);
  }
  EXPECT_TRUE(apply_inbound(None, T::subscribe).forward);
}

TEST(Subscription, A32InboundUnsubscribe) {
  expect_table(false, T::unsubscribe,
               {{None, None}, {NoneOut, NoneOut}, {NoneIn, None}, {NoneOutIn, NoneOut}, {To, To}, {ToIn, To},
                {From, None}, {FromOut, NoneOut}, {Both, To}},
               false);
}

TEST(Subscription, A33InboundSubscribed) {
  expect_table(false, T::subscribed,
               {{None, None}, {NoneOut, To}, {NoneIn, NoneIn}, {NoneOutIn, ToIn}, {To, To}, {ToIn, ToIn},
                {From, From}, {FromOut, Both}, {Both, Both}},
               false);
  EXPECT_FALSE(apply_inbound(None, T::subscribed).forward);  // unsolicited: dropped
}

TEST(Subscription, A34InboundUnsubscribed) {
  expect_table(false, T::unsubscribed,
               {{None, None}, {NoneOut, None}, {NoneIn, NoneIn}, {NoneOutIn, NoneIn}, {To, None}, {ToIn, NoneIn},
                {From, From}, {FromOut, From}, {Both, From}},
               false);
}

TEST(Subscription, NamesRoundTrip) {
  for (auto s : {S::none, S::to, S::from, S::both}) {
    S back;
    ASSERT_TRUE(parse_subscription(subscription_name(s), back));
    EXPECT_EQ(back, s);
  }
  S ignored;
  EXPECT_FALSE(parse_subscription("remove", ignored));
  T t;
  EXPECT_TRUE(parse_subscription_stanza("unsubscribed", t));
  EXPECT_EQ(t, T::unsubscribed);
  EXPECT_FALSE(parse_subscription_stanza("probe", t));
}

}  // namespace
}  // namespace hearth::xmpp
