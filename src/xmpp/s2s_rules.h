// Private to xmpp/: the pure parts of server-to-server federation (RFC 6120 §13.7, XEP-0178,
// XEP-0185, XEP-0220, RFC 2782), kept apart from the connections so they can be tested
// alone. Everything here is stateless or owned by one caller; no locking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "net/net.h"

namespace hearth::xmpp {

// Whether a peer certificate identifies `domain` (RFC 6120 §13.7.1.2, RFC 6125): an
// id-on-xmppAddr equal to the domain, an SRVName "_xmpp-server.<domain>", or a dNSName
// equal to it or a wildcard "*.rest" whose "*" covers exactly the domain's first label.
// Comparison is ASCII case-insensitive (names are A-labels). The chain's validity is a
// separate question (PeerCertificate::chain_valid).
bool certificate_matches_domain(const net::PeerCertificate& cert, std::string_view domain);

// `xmpp.s2s_static_routes` entries: "domain=host:port" (host may be "[v6]").
struct StaticRoute {
  std::string domain, host;
  int port = 5269;
};
Result<StaticRoute> parse_static_route(std::string_view text);

// DNS SRV records (RFC 2782) and the order to try them in: by priority, then within a
// priority weighted-random by `weight` (records of weight 0 first, as the RFC says, with a
// small chance). `random` returns uniform values in [0, bound). A single record "." means
// the service is decidedly not available: the result is empty and `decidedly_absent` set.
struct SrvRecord {
  int priority = 0, weight = 0, port = 0;
  std::string target;
};
struct SrvOrder {
  std::vector<SrvRecord> records;
  bool decidedly_absent = false;
};
SrvOrder order_srv(std::vector<SrvRecord> records, const std::function<std::uint32_t(std::uint32_t)>& random);

// XEP-0185: the dialback key for a stream, hex(HMAC-SHA256(hex(SHA256(secret)),
// "<receiving> <originating> <stream id>")).
std::string dialback_key(std::string_view secret, std::string_view receiving, std::string_view originating,
                         std::string_view stream_id);

// Retry delay after `failures` consecutive failed attempts (1, 2, ...): initial doubled per
// failure, capped at max.
int retry_delay_seconds(int failures, int initial, int max);

// The stanzas waiting for one remote domain, bounded by count and bytes. Not thread-safe
// (its owner locks).
class OutboundQueue {
 public:
  OutboundQueue(std::size_t max_stanzas, std::size_t max_bytes) : max_stanzas_(max_stanzas), max_bytes_(max_bytes) {}
  // False (nothing queued) when it would exceed a bound.
  bool push(std::string stanza);
  std::deque<std::string> take_all();
  std::size_t size() const { return items_.size(); }
  std::size_t bytes() const { return bytes_; }
  bool empty() const { return items_.empty(); }

 private:
  std::size_t max_stanzas_, max_bytes_;
  std::size_t bytes_ = 0;
  std::deque<std::string> items_;
};

}  // namespace hearth::xmpp
