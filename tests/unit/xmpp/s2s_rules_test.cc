// The pure rules of federation: certificate names, static routes, SRV order, dialback
// keys, retry backoff and the bounded outbound queue.
#include "xmpp/s2s_rules.h"

#include <gtest/gtest.h>

namespace hearth::xmpp {
namespace {

net::PeerCertificate cert(std::vector<std::string> dns, std::vector<std::string> xmpp = {},
                          std::vector<std::string> srv = {}) {
  net::PeerCertificate c;
  c.present = true;
  c.chain_valid = true;
  c.dns_names = std::move(dns);
  c.xmpp_addrs = std::move(xmpp);
  c.srv_names = std::move(srv);
  return c;
}

TEST(CertificateNames, ExactDnsNameMatchesCaseInsensitively) {
  EXPECT_TRUE(certificate_matches_domain(cert({"Example.ORG"}), "example.org"));
  EXPECT_TRUE(certificate_matches_domain(cert({"example.org."}), "example.org"));
  EXPECT_FALSE(certificate_matches_domain(cert({"example.org"}), "example.net"));
  EXPECT_FALSE(certificate_matches_domain(cert({"example.org"}), "chat.example.org"));
}

TEST(CertificateNames, WildcardCoversExactlyOneLeftmostLabel) {
  auto c = cert({"*.example.org"});
  EXPECT_TRUE(certificate_matches_domain(c, "conference.example.org"));
  EXPECT_FALSE(certificate_matches_domain(c, "example.org"));
  EXPECT_FALSE(certificate_matches_domain(c, "a.b.example.org"));
  EXPECT_FALSE(certificate_matches_domain(cert({"*.org"}), "example.org"));      // a bare public suffix
  EXPECT_FALSE(certificate_matches_domain(cert({"chat*.example.org"}), "chat1.example.org"));  // partial
}

TEST(CertificateNames, XmppAddrAndSrvName) {
  EXPECT_TRUE(certificate_matches_domain(cert({}, {"example.org"}), "example.org"));
  EXPECT_FALSE(certificate_matches_domain(cert({}, {"user@example.org"}), "example.org"));
  EXPECT_TRUE(certificate_matches_domain(cert({}, {}, {"_xmpp-server.example.org"}), "example.org"));
  EXPECT_FALSE(certificate_matches_domain(cert({}, {}, {"_xmpp-client.example.org"}), "example.org"));
}

TEST(CertificateNames, NothingWithoutACertificate) {
  net::PeerCertificate none;
  none.dns_names = {"example.org"};
  EXPECT_FALSE(certificate_matches_domain(none, "example.org"));
  EXPECT_FALSE(certificate_matches_domain(cert({"example.org"}), ""));
}

TEST(StaticRoutes, Parse) {
  auto r = parse_static_route("B.test=127.0.0.2:15269");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->domain, "b.test");
  EXPECT_EQ(r->host, "127.0.0.2");
  EXPECT_EQ(r->port, 15269);
  auto v6 = parse_static_route("c.test=[::1]:5270");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 5270);
  auto default_port = parse_static_route("d.test=xmpp.d.test");
  ASSERT_TRUE(default_port);
  EXPECT_EQ(default_port->port, 5269);
  for (const char* bad : {"", "=h:1", "d.test", "d.test=", "d.test=h:0", "d.test=h:70000", "d.test=h:12a",
                          "d.test=[::1", "d.test=[::1]x", "d.test=h:1234567"})
    EXPECT_FALSE(parse_static_route(bad)) << bad;
}

TEST(Srv, OrderedByPriorityThenWeight) {
  std::vector<SrvRecord> records{{20, 0, 5269, "backup.example"}, {10, 60, 5269, "a.example"}, {10, 40, 5270, "b.example"}};
  // A random source that always picks the first candidate of the running sum.
  auto order = order_srv(records, [](std::uint32_t) { return 0u; });
  ASSERT_EQ(order.records.size(), 3u);
  EXPECT_EQ(order.records[0].target, "a.example");
  EXPECT_EQ(order.records[1].target, "b.example");
  EXPECT_EQ(order.records[2].target, "backup.example");
  // Always the last: the heavier record comes second.
  auto last = order_srv(records, [](std::uint32_t bound) { return bound - 1; });
  EXPECT_EQ(last.records[0].target, "b.example");
  EXPECT_EQ(last.records[1].target, "a.example");
  EXPECT_EQ(last.records[2].target, "backup.example");
}

TEST(Srv, DotMeansNoService) {
  auto order = order_srv({{0, 0, 0, "."}}, [](std::uint32_t) { return 0u; });
  EXPECT_TRUE(order.decidedly_absent);
  EXPECT_TRUE(order.records.empty());
  auto empty = order_srv({}, [](std::uint32_t) { return 0u; });
  EXPECT_FALSE(empty.decidedly_absent);
}

TEST(Dialback, KeyFollowsXep0185) {
  // XEP-0185 §3's example: receiving xmpp.example.com, originating example.org.
  EXPECT_EQ(dialback_key("s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org", "D60000229F"),
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643");
  EXPECT_NE(dialback_key("s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org", "other"),
            dialback_key("s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org", "D60000229F"));
}

TEST(Retry, DoublesUpToTheCap) {
  EXPECT_EQ(retry_delay_seconds(1, 2, 300), 2);
  EXPECT_EQ(retry_delay_seconds(2, 2, 300), 4);
  EXPECT_EQ(retry_delay_seconds(5, 2, 300), 32);
  EXPECT_EQ(retry_delay_seconds(20, 2, 300), 300);
  EXPECT_EQ(retry_delay_seconds(1000, 2, 300), 300);
}

TEST(OutboundQueue, BoundedByCountAndBytes) {
  OutboundQueue q(3, 10);
  EXPECT_TRUE(q.push("aaaa"));
  EXPECT_TRUE(q.push("bbbb"));
  EXPECT_FALSE(q.push("ccc"));  // 11 bytes
  EXPECT_TRUE(q.push("cc"));
  EXPECT_FALSE(q.push(""));     // 4 stanzas
  EXPECT_EQ(q.size(), 3u);
  EXPECT_EQ(q.bytes(), 10u);
  auto all = q.take_all();
  EXPECT_EQ(all.size(), 3u);
  EXPECT_EQ(all.front(), "aaaa");
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.push("dddddddd"));
}

}  // namespace
}  // namespace hearth::xmpp
