#include "net/https_client.h"

#include <gtest/gtest.h>

namespace hearth::net {
namespace {

TEST(NonPublicAddress, LoopbackPrivateLinkLocalAndSpecialRanges) {
  for (const char* a : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
                        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1",
                        "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"})
    EXPECT_TRUE(is_non_public_address(a)) << a;
}

TEST(NonPublicAddress, PublicAddressesAndNonAddresses) {
  for (const char* a : {"8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1", "192.169.0.1", "1.1.1.1",
                        "2001:4860:4860::8888", "::ffff:8.8.8.8", "example.org", ""})
    EXPECT_FALSE(is_non_public_address(a)) << a;
}

}  // namespace
}  // namespace hearth::net
