// Private to xmpp/: XEP-0357 push notifications.
//
// A client registers an app server (a JID and a node, with publish-options such as a
// secret) with <enable xmlns='urn:xmpp:push:0'/>; from then on, when a message for the
// account cannot be handed to a connected client — it went to offline storage, or to a
// session whose connection dropped and waits for its client to resume — hearth publishes a
// summary (urn:xmpp:push:summary: message count and sender, never the body) to each
// registered app server, which wakes the phone. <disable/> removes one registration (or
// every one for that app server).
//
// App servers on this server's own domains get the notification at once; app servers
// elsewhere (the usual case, e.g. push.conversations.im) need server-to-server federation,
// which has not landed: those notifications are counted and logged as undeliverable.
//
// Threads: handlers and notify() run on the worker pool (storage). Schema: module
// "xmpp_push" (table xmpp_push).
#pragma once

#include <functional>
#include <string>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "xmpp/iq_table.h"
#include "xmpp/xml.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

inline constexpr std::string_view kPushNs = "urn:xmpp:push:0";

class PushService {
 public:
  // `send` routes an iq from the account to the app server; false when it cannot reach it.
  using Send = std::function<bool(const Element& iq)>;
  PushService(store::Store& store, Clock& clock, Logger& log, MetricsRegistry& metrics, Send send,
              int max_registrations = 20);

  // Applies the "xmpp_push" migrations and adds the enable/disable entries (accounts).
  Result<void> register_iqs(IqTable& table);
  // A message for `owner` from `sender` could not be delivered to a connected client.
  void notify(const std::string& owner, const std::string& sender);
  Result<void> forget_account(const std::string& owner);

 private:
  store::Store& store_;
  Clock& clock_;
  Logger& log_;
  Counter& sent_;
  Counter& undeliverable_;
  Send send_;
  int max_registrations_;
};

}  // namespace hearth::xmpp
