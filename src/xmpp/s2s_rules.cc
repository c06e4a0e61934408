#include "xmpp/s2s_rules.h"

#include <sodium.h>

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace hearth::xmpp {
namespace {

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string hex(const unsigned char* data, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 15];
  }
  return out;
}

}  // namespace

bool certificate_matches_domain(const net::PeerCertificate& cert, std::string_view domain) {
  if (domain.empty() || !cert.present) return false;
  while (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
  for (const auto& a : cert.xmpp_addrs)
    if (iequal(a, domain)) return true;
  for (const auto& s : cert.srv_names)
    if (s.size() > 13 && iequal(std::string_view(s).substr(0, 13), "_xmpp-server.") && iequal(s.substr(13), domain))
      return true;
  for (std::string_view d : cert.dns_names) {
    while (!d.empty() && d.back() == '.') d.remove_suffix(1);
    if (d.substr(0, 2) == "*.") {
      auto dot = domain.find('.');
      // The wildcard stands for one whole label, never for a public suffix alone.
      if (dot == std::string_view::npos || dot == 0) continue;
      auto rest = d.substr(2);
      if (rest.find('.') == std::string_view::npos) continue;
      if (iequal(rest, domain.substr(dot + 1))) return true;
      continue;
    }
    if (d.find('*') != std::string_view::npos) continue;  // partial wildcards are not honoured
    if (iequal(d, domain)) return true;
  }
  return false;
}

Result<StaticRoute> parse_static_route(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0)
    return fail(Errc::invalid_argument, fmt::format("static route '{}' is not domain=host:port", text));
  StaticRoute r;
  r.domain = std::string(text.substr(0, eq));
  for (auto& c : r.domain) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view target = text.substr(eq + 1);
  std::string_view port_text;
  if (!target.empty() && target.front() == '[') {
    auto close = target.find(']');
    if (close == std::string_view::npos) return fail(Errc::invalid_argument, fmt::format("static route '{}': bad address", text));
    r.host = std::string(target.substr(1, close - 1));
    if (close + 1 < target.size()) {
      if (target[close + 1] != ':') return fail(Errc::invalid_argument, fmt::format("static route '{}': bad port", text));
      port_text = target.substr(close + 2);
    }
  } else {
    auto colon = target.rfind(':');
    r.host = std::string(target.substr(0, colon));
    if (colon != std::string_view::npos) port_text = target.substr(colon + 1);
  }
  if (r.host.empty()) return fail(Errc::invalid_argument, fmt::format("static route '{}' has no host", text));
  if (!port_text.empty()) {
    int port = 0;
    if (port_text.size() > 5) return fail(Errc::invalid_argument, fmt::format("static route '{}': bad port", text));
    for (char c : port_text) {
      if (c < '0' || c > '9') return fail(Errc::invalid_argument, fmt::format("static route '{}': bad port", text));
      port = port * 10 + (c - '0');
    }
    if (port < 1 || port > 65535) return fail(Errc::invalid_argument, fmt::format("static route '{}': bad port", text));
    r.port = port;
  }
  return r;
}

SrvOrder order_srv(std::vector<SrvRecord> records, const std::function<std::uint32_t(std::uint32_t)>& random) {
  SrvOrder out;
  if (records.size() == 1 && (records[0].target == "." || records[0].target.empty())) {
    out.decidedly_absent = true;
    return out;
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const SrvRecord& a, const SrvRecord& b) { return a.priority < b.priority; });
  for (std::size_t i = 0; i < records.size();) {
    std::size_t j = i;
    while (j < records.size() && records[j].priority == records[i].priority) ++j;
    // RFC 2782: zero weights first, then pick by running sum until the group is empty.
    std::vector<SrvRecord> group(records.begin() + static_cast<std::ptrdiff_t>(i),
                                 records.begin() + static_cast<std::ptrdiff_t>(j));
    std::stable_partition(group.begin(), group.end(), [](const SrvRecord& r) { return r.weight == 0; });
    while (!group.empty()) {
      std::uint32_t total = 0;
      for (const auto& r : group) total += static_cast<std::uint32_t>(std::max(0, r.weight));
      std::uint32_t pick = random(total + 1);
      std::uint32_t sum = 0;
      std::size_t chosen = group.size() - 1;
      for (std::size_t k = 0; k < group.size(); ++k) {
        sum += static_cast<std::uint32_t>(std::max(0, group[k].weight));
        if (sum >= pick) {
          chosen = k;
          break;
        }
      }
      out.records.push_back(group[chosen]);
      group.erase(group.begin() + static_cast<std::ptrdiff_t>(chosen));
    }
    i = j;
  }
  // Drop "." targets mixed with real ones; they carry no address.
  std::erase_if(out.records, [](const SrvRecord& r) { return r.target == "." || r.target.empty(); });
  return out;
}

std::string dialback_key(std::string_view secret, std::string_view receiving, std::string_view originating,
                         std::string_view stream_id) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
  std::string key = hex(digest, sizeof digest);
  std::string text = fmt::format("{} {} {}", receiving, originating, stream_id);
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_final(&st, mac);
  return hex(mac, sizeof mac);
}

int retry_delay_seconds(int failures, int initial, int max) {
  initial = std::max(1, initial);
  max = std::max(initial, max);
  long long d = initial;
  for (int i = 1; i < failures && d < max; ++i) d *= 2;
  return static_cast<int>(std::min<long long>(d, max));
}

bool OutboundQueue::push(std::string stanza) {
  if (items_.size() >= max_stanzas_ || bytes_ + stanza.size() > max_bytes_) return false;
  bytes_ += stanza.size();
  items_.push_back(std::move(stanza));
  return true;
}

std::deque<std::string> OutboundQueue::take_all() {
  bytes_ = 0;
  return std::exchange(items_, {});
}

}  // namespace hearth::xmpp
