#include "xmpp/caps.h"

#include <gtest/gtest.h>

namespace hearth::xmpp {
namespace {

// XEP-0115 §5.2, the simple example.
TEST(Caps, VerificationStringOfTheXepExample) {
  EXPECT_EQ(caps_ver({{"client", "pc", "", "Exodus 0.9.1"}},
                     {"http://jabber.org/protocol/muc", "http://jabber.org/protocol/disco#info",
                      "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#items"}),
            "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

TEST(Caps, OrderAndDuplicatesDoNotMatter) {
  EXPECT_EQ(caps_ver({{"server", "im", "", "hearth"}}, {"b", "a", "a"}),
            caps_ver({{"server", "im", "", "hearth"}}, {"a", "b"}));
  EXPECT_NE(caps_ver({{"server", "im", "", "hearth"}}, {"a"}), caps_ver({{"server", "im", "", "hearth"}}, {"b"}));
}

}  // namespace
}  // namespace hearth::xmpp
