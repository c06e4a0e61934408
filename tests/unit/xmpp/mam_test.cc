#include "xmpp/mod_mam.h"

#include <gtest/gtest.h>

namespace hearth::xmpp {
namespace {

TEST(XmppDateTime, ParsesXep0082Forms) {
  EXPECT_EQ(parse_xmpp_datetime("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_xmpp_datetime("2010-06-07T00:00:00Z"), 1275868800000);
  EXPECT_EQ(parse_xmpp_datetime("2010-06-07T00:00:00.250Z"), 1275868800250);
  EXPECT_EQ(parse_xmpp_datetime("2010-06-07T02:00:00+02:00"), 1275868800000);
  EXPECT_EQ(parse_xmpp_datetime("2010-06-06T22:30:00-01:30"), 1275868800000);
  for (auto bad : {"", "2010-06-07", "2010-06-07T00:00:00", "2010-13-07T00:00:00Z", "2010-06-07T24:00:00Z",
                   "2010-06-07T00:00:00.Z", "2010-06-07T00:00:00Zjunk", "x010-06-07T00:00:00Z"})
    EXPECT_FALSE(parse_xmpp_datetime(bad)) << bad;
}

TEST(Archivable, ChatAndNormalWithBodyOnly) {
  auto msg = [](std::string type, bool body) {
    Element m("message", std::string(kClientNs));
    if (!type.empty()) m.set_attr("type", type);
    if (body) m.add_child(Element("body", std::string(kClientNs))).add_text("hi");
    return m;
  };
  EXPECT_TRUE(archivable(msg("chat", true)));
  EXPECT_TRUE(archivable(msg("", true)));
  EXPECT_FALSE(archivable(msg("chat", false))) << "chat states without a body";
  EXPECT_FALSE(archivable(msg("headline", true)));
  EXPECT_FALSE(archivable(msg("error", true)));
  Element hinted = msg("chat", true);
  hinted.add_child(Element("no-store", "urn:xmpp:hints"));
  EXPECT_FALSE(archivable(hinted));
}

}  // namespace
}  // namespace hearth::xmpp
