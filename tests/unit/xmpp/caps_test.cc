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

// XEP-0115 §5.3, the complex example: two identities (one with xml:lang) and an
// extended software-information form.
TEST(Caps, VerificationStringWithAnExtendedForm) {
  SubmittedForm info;
  info.form_type = "urn:xmpp:dataforms:softwareinfo";
  info.fields = {{"software_version", {"0.11"}},
                 {"os_version", {"10.5.1"}},
                 {"os", {"Mac"}},
                 {"ip_version", {"ipv6", "ipv4"}},
                 {"software", {"Psi"}}};
  EXPECT_EQ(caps_ver({{"client", "pc", "en", "Psi 0.11"}, {"client", "pc", "el", "\u03a8 0.11"}},
                     {"http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
                      "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"},
                     {info}),
            "q07IKJEyjvHSyhy//CH0CxmKi8w=");
}

TEST(Caps, OrderAndDuplicatesDoNotMatter) {
  EXPECT_EQ(caps_ver({{"server", "im", "", "hearth"}}, {"b", "a", "a"}),
            caps_ver({{"server", "im", "", "hearth"}}, {"a", "b"}));
  EXPECT_NE(caps_ver({{"server", "im", "", "hearth"}}, {"a"}), caps_ver({{"server", "im", "", "hearth"}}, {"b"}));
}

}  // namespace
}  // namespace hearth::xmpp
