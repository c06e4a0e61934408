// Presence subscription states and their transitions (RFC 6121 §3 and Appendix A).
//
// A roster item's subscription is one of the nine states of RFC 6121 A.1, held as the
// visible `subscription` attribute (none/to/from/both), the outbound pending flag
// (ask='subscribe') and the inbound pending flag (a request waiting for the user's
// answer; not visible in the roster, but re-delivered at login).
//
// The functions are pure: given the current state and a subscription stanza, they return
// the next state and whether the stanza goes on (routed to the contact / delivered to
// the user). Outbound = the roster owner sent it; inbound = the roster owner receives it.
#pragma once

#include <string_view>

namespace hearth::xmpp {

enum class Subscription { none, to, from, both };

struct SubscriptionState {
  Subscription subscription = Subscription::none;
  bool pending_out = false;  // we asked the contact (ask='subscribe')
  bool pending_in = false;   // the contact asked us, no answer yet

  bool operator==(const SubscriptionState&) const = default;
  bool receives_presence() const { return subscription == Subscription::to || subscription == Subscription::both; }
  bool sends_presence() const { return subscription == Subscription::from || subscription == Subscription::both; }
};

enum class SubscriptionStanza { subscribe, subscribed, unsubscribe, unsubscribed };

struct SubscriptionOutcome {
  SubscriptionState next;
  bool changed = false;
  // Outbound: route the stanza to the contact. Inbound: deliver it to the user's clients.
  bool forward = false;
  // Inbound subscribe from a contact that already has a subscription: answer
  // 'subscribed' on the user's behalf instead of asking again (RFC 6121 §3.1.3).
  bool auto_reply_subscribed = false;
};

SubscriptionOutcome apply_outbound(SubscriptionState state, SubscriptionStanza stanza);
SubscriptionOutcome apply_inbound(SubscriptionState state, SubscriptionStanza stanza);

std::string_view subscription_name(Subscription s);  // "none" | "to" | "from" | "both"
bool parse_subscription(std::string_view name, Subscription& out);
bool parse_subscription_stanza(std::string_view type, SubscriptionStanza& out);

}  // namespace hearth::xmpp
