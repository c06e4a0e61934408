#include "xmpp/subscription.h"

namespace hearth::xmpp {
namespace {

using S = Subscription;

bool has_to(S s) { return s == S::to || s == S::both; }
bool has_from(S s) { return s == S::from || s == S::both; }
S make(bool to, bool from) { return to ? (from ? S::both : S::to) : (from ? S::from : S::none); }

SubscriptionOutcome outcome(SubscriptionState before, SubscriptionState after, bool forward_always) {
  SubscriptionOutcome o;
  o.next = after;
  o.changed = !(before == after);
  o.forward = forward_always || o.changed;
  return o;
}

}  // namespace

SubscriptionOutcome apply_outbound(SubscriptionState st, SubscriptionStanza stanza) {
  SubscriptionState next = st;
  switch (stanza) {
    case SubscriptionStanza::subscribe:
      // A.2.1: ask unless we already receive presence; always routed (the contact may
      // have lost our earlier request).
      if (!has_to(st.subscription)) next.pending_out = true;
      return outcome(st, next, true);
    case SubscriptionStanza::unsubscribe:
      // A.2.2: give up our subscription to the contact and any pending request.
      next.pending_out = false;
      next.subscription = make(false, has_from(st.subscription));
      return outcome(st, next, true);
    case SubscriptionStanza::subscribed:
      // A.2.3: approve a pending request from the contact; routed only on a change.
      if (st.pending_in) {
        next.pending_in = false;
        next.subscription = make(has_to(st.subscription), true);
      }
      return outcome(st, next, false);
    case SubscriptionStanza::unsubscribed:
      // A.2.4: deny a pending request or cancel the contact's subscription.
      next.pending_in = false;
      next.subscription = make(has_to(st.subscription), false);
      return outcome(st, next, false);
  }
  return outcome(st, st, false);
}

SubscriptionOutcome apply_inbound(SubscriptionState st, SubscriptionStanza stanza) {
  SubscriptionState next = st;
  switch (stanza) {
    case SubscriptionStanza::subscribe: {
      // A.3.1: a contact already subscribed is answered for the user.
      if (has_from(st.subscription)) {
        SubscriptionOutcome o = outcome(st, st, false);
        o.auto_reply_subscribed = true;
        return o;
      }
      next.pending_in = true;
      return outcome(st, next, false);
    }
    case SubscriptionStanza::unsubscribe:
      // A.3.2: the contact no longer wants our presence.
      next.pending_in = false;
      next.subscription = make(has_to(st.subscription), false);
      return outcome(st, next, false);
    case SubscriptionStanza::subscribed:
      // A.3.3: honoured only if we asked.
      if (st.pending_out) {
        next.pending_out = false;
        next.subscription = make(true, has_from(st.subscription));
      }
      return outcome(st, next, false);
    case SubscriptionStanza::unsubscribed:
      // A.3.4: the contact denied our request or cancelled our subscription.
      next.pending_out = false;
      next.subscription = make(false, has_from(st.subscription));
      return outcome(st, next, false);
  }
  return outcome(st, st, false);
}

std::string_view subscription_name(Subscription s) {
  switch (s) {
    case S::none: return "none";
    case S::to: return "to";
    case S::from: return "from";
    case S::both: return "both";
  }
  return "none";
}

bool parse_subscription(std::string_view name, Subscription& out) {
  if (name == "none") out = S::none;
  else if (name == "to") out = S::to;
  else if (name == "from") out = S::from;
  else if (name == "both") out = S::both;
  else return false;
  return true;
}

bool parse_subscription_stanza(std::string_view type, SubscriptionStanza& out) {
  if (type == "subscribe") out = SubscriptionStanza::subscribe;
  else if (type == "subscribed") out = SubscriptionStanza::subscribed;
  else if (type == "unsubscribe") out = SubscriptionStanza::unsubscribe;
  else if (type == "unsubscribed") out = SubscriptionStanza::unsubscribed;
  else return false;
  return true;
}

}  // namespace hearth::xmpp
