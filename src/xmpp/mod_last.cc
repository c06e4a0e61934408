#include "xmpp/mod_last.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/clock.h"
#include "xmpp/im.h"

namespace hearth::xmpp {

void register_last(IqTable& table, Clock& clock) {
  Clock* c = &clock;
  std::int64_t started_ns = clock.monotonic_ns();
  table.add({std::string(kLastNs),
             "query",
             IqTarget::both,
             [c, started_ns](const SessionIdentity&, const std::string& to, const Element& iq, const Element&,
                             IqReply& reply) {
               if (iq.attr("type") != "get") return reply.error("cancel", "bad-request", "only get is defined");
               std::int64_t seconds = 0;
               bool server = to.find('@') == std::string::npos;
               if (server) seconds = std::max<std::int64_t>(0, (c->monotonic_ns() - started_ns) / 1'000'000'000);
               Element q("query", std::string(kLastNs));
               q.set_attr("seconds", std::to_string(seconds));
               reply.result(std::move(q));
             },
             {std::string(kLastNs)}});
}

}  // namespace hearth::xmpp
