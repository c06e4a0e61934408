// Fuzzes federation's small parsers and matchers: the input's first line is a static
// route ("domain=host:port"), the following lines certificate names and a domain to match.
// A parsed route has a host and a port in range; a certificate name without wildcards
// always matches itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "xmpp/s2s_rules.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace hearth::xmpp;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start <= in.size() && lines.size() < 64) {
    auto nl = in.find('\n', start);
    if (nl == std::string_view::npos) nl = in.size();
    lines.emplace_back(in.substr(start, nl - start));
    start = nl + 1;
  }
  if (auto r = parse_static_route(lines[0])) {
    if (r->host.empty() || r->port < 1 || r->port > 65535) std::abort();
  }
  hearth::net::PeerCertificate cert;
  cert.present = true;
  for (std::size_t i = 1; i + 1 < lines.size(); ++i) cert.dns_names.push_back(lines[i]);
  if (lines.size() >= 2) {
    const std::string& domain = lines.back();
    (void)certificate_matches_domain(cert, domain);
    bool plain = !domain.empty() && domain.find('*') == std::string::npos &&
                 domain.find_first_not_of('.') != std::string::npos;
    hearth::net::PeerCertificate self;
    self.present = true;
    self.dns_names = {domain};
    if (plain && !certificate_matches_domain(self, domain)) std::abort();
  }
  std::vector<SrvRecord> records;
  for (std::size_t i = 0; i < lines.size() && i < 16; ++i)
    records.push_back({static_cast<int>(lines[i].size() % 3), static_cast<int>(lines[i].size() % 7), 5269, lines[i]});
  auto order = order_srv(records, [](std::uint32_t bound) { return bound / 2; });
  if (order.records.size() > records.size()) std::abort();
  return 0;
}
