#include "xmpp/jid.h"

#include <gtest/gtest.h>

#include <string>

namespace hearth::xmpp {
namespace {

std::string full_of(std::string_view text) {
  auto jid = Jid::parse(text);
  EXPECT_TRUE(jid) << text << ": " << (jid ? "" : jid.error().describe());
  return jid ? jid->full() : std::string();
}

void expect_invalid(std::string_view text, std::string_view part) {
  auto jid = Jid::parse(text);
  ASSERT_FALSE(jid) << text << " parsed as " << jid->full();
  EXPECT_EQ(jid.error().code, Errc::invalid_argument);
  EXPECT_EQ(jid.error().message.rfind(part, 0), 0u) << text << ": " << jid.error().message;
}

// RFC 7622 §3.5.1.
TEST(JidTest, Rfc7622ValidExamples) {
  EXPECT_EQ(full_of("juliet@example.com"), "juliet@example.com");
  EXPECT_EQ(full_of("juliet@example.com/foo"), "juliet@example.com/foo");
  EXPECT_EQ(full_of("juliet@example.com/foo bar"), "juliet@example.com/foo bar");
  EXPECT_EQ(full_of("juliet@example.com/foo@bar"), "juliet@example.com/foo@bar");
  EXPECT_EQ(full_of("foo\\20bar@example.com"), "foo\\20bar@example.com");
  EXPECT_EQ(full_of("fussball@example.com"), "fussball@example.com");
  EXPECT_EQ(full_of("fu\u00DFball@example.com"), "fu\u00DFball@example.com");
  EXPECT_EQ(full_of("\u03C0@example.com"), "\u03C0@example.com");
  EXPECT_EQ(full_of("\u03A3@example.com/foo"), "\u03C3@example.com/foo");
  EXPECT_EQ(full_of("\u03C3@example.com/foo"), "\u03C3@example.com/foo");
  EXPECT_EQ(full_of("\u03C2@example.com/foo"), "\u03C2@example.com/foo");
  EXPECT_EQ(full_of("king@example.com/\u265A"), "king@example.com/\u265A");
  EXPECT_EQ(full_of("example.com"), "example.com");
  EXPECT_EQ(full_of("example.com/foobar"), "example.com/foobar");
  EXPECT_EQ(full_of("a.example.com/b@example.net"), "a.example.com/b@example.net");
}

// RFC 7622 §3.5.2.
TEST(JidTest, Rfc7622InvalidExamples) {
  expect_invalid("\"juliet\"@example.com", "localpart");
  expect_invalid("foo bar@example.com", "localpart");
  expect_invalid("juliet@example.com/", "resourcepart");
  expect_invalid("@example.com/", "resourcepart");
  expect_invalid("@example.com", "localpart");
  expect_invalid("henry\u2163@example.com", "localpart");
  expect_invalid("\u265A@example.com", "localpart");
  expect_invalid("juliet@", "domainpart");
  expect_invalid("/foobar", "domainpart");
  expect_invalid("", "domainpart");
}

TEST(JidTest, CaseFoldsLocalAndDomainButNotResource) {
  auto jid = Jid::parse("Juliet@Example.COM/Balcony");
  ASSERT_TRUE(jid);
  EXPECT_EQ(jid->local, "juliet");
  EXPECT_EQ(jid->domain, "example.com");
  EXPECT_EQ(jid->resource, "Balcony");
  EXPECT_EQ(jid->full(), "juliet@example.com/Balcony");
  EXPECT_EQ(jid->bare(), "juliet@example.com");
  EXPECT_FALSE(jid->is_bare());
  EXPECT_TRUE(jid->to_bare().is_bare());
  EXPECT_EQ(*jid, *Jid::parse("juliet@example.com/Balcony"));
  EXPECT_NE(*jid, *Jid::parse("juliet@example.com/balcony"));
}

TEST(JidTest, FullwidthLettersMapToAscii) {
  // "ＪＵＬＩＥＴ" in fullwidth forms.
  EXPECT_EQ(*prep_localpart("\uFF2A\uFF35\uFF2C\uFF29\uFF25\uFF34"), "juliet");
  EXPECT_EQ(*prep_domain("\uFF25\uFF38\uFF21\uFF2D\uFF30\uFF2C\uFF25.com"), "example.com");
  // The resource keeps fullwidth characters (OpaqueString does no width mapping).
  EXPECT_EQ(*prep_resource("\uFF21"), "\uFF21");
}

TEST(JidTest, LocalpartRejectsExcludedAsciiAndControls) {
  for (const char* bad : {"a\"b", "a&b", "a'b", "a/b", "a:b", "a<b", "a>b", "a@b", "a b", "a\tb", "a\x7f"}) {
    EXPECT_FALSE(prep_localpart(bad)) << bad;
  }
  EXPECT_FALSE(prep_localpart(std::string("a\0b", 3)));
  EXPECT_FALSE(prep_localpart("a\u00ADb"));  // soft hyphen: default-ignorable
  EXPECT_FALSE(prep_localpart("\xC3\x28"));  // invalid UTF-8
  EXPECT_FALSE(prep_localpart("\xED\xA0\x80"));  // encoded surrogate
  EXPECT_TRUE(prep_localpart("a.b-c_d+e!#$%*=?^`{|}~"));
}

TEST(JidTest, NormalizesToNfc) {
  // e + COMBINING ACUTE ACCENT composes to é.
  EXPECT_EQ(*prep_localpart("caf\x65\xCC\x81"), "caf\u00E9");
  EXPECT_EQ(*prep_resource("caf\x65\xCC\x81"), "caf\u00E9");
}

TEST(JidTest, ContextualRules) {
  EXPECT_TRUE(prep_localpart("l\u00B7l"));    // middle dot between two l
  EXPECT_FALSE(prep_localpart("a\u00B7b"));
  EXPECT_FALSE(prep_localpart("a\u200Db"));   // ZWJ not after a virama
  EXPECT_TRUE(prep_localpart("\u0915\u094D\u200D\u0937"));  // Devanagari virama + ZWJ
  EXPECT_FALSE(prep_localpart("\u0661\u06F1"));  // mixed Arabic-Indic digit sets
}

TEST(JidTest, BidiRule) {
  EXPECT_TRUE(prep_localpart("\u05D0\u05D1"));   // Hebrew
  EXPECT_FALSE(prep_localpart("a\u05D0"));      // LTR label with an R character
  EXPECT_FALSE(prep_localpart("1\u05D0"));      // RTL label starting with a digit
}

TEST(JidTest, ResourcepartIsOpaque) {
  EXPECT_EQ(*prep_resource("Home/Office @ Work"), "Home/Office @ Work");
  EXPECT_EQ(*prep_resource("a\u00A0b"), "a b");  // non-ASCII space → SPACE
  EXPECT_FALSE(prep_resource("a\nb"));
  EXPECT_FALSE(prep_resource("a\u200Bb"));  // zero width space: default-ignorable
  EXPECT_FALSE(prep_resource("\xF4\x8F\xBF\xBF"));  // U+10FFFF noncharacter
  EXPECT_FALSE(prep_resource("\xCD\xB8"));  // U+0378: unassigned
  EXPECT_FALSE(prep_resource("x\xF3\xA0\x80\x81"));  // U+E0001 LANGUAGE TAG: ignorable
}

TEST(JidTest, DomainForms) {
  EXPECT_EQ(*prep_domain("example.com."), "example.com");
  EXPECT_FALSE(prep_domain("example.com.."));
  EXPECT_FALSE(prep_domain("."));
  EXPECT_EQ(*prep_domain("EXAMPLE\u3002com"), "example.com");
  EXPECT_EQ(*prep_domain("xn--mnchen-3ya.de"), "m\u00FCnchen.de");
  EXPECT_EQ(*prep_domain("M\u00DCnchen.DE"), "m\u00FCnchen.de");
  EXPECT_EQ(*prep_domain("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(*prep_domain("[2001:DB8:0:0::1]"), "[2001:db8::1]");
  EXPECT_EQ(*prep_domain("[::1]"), "[::1]");
  EXPECT_FALSE(prep_domain("[not-an-ip]"));
  EXPECT_FALSE(prep_domain("[::1"));
  EXPECT_FALSE(prep_domain("1.2.3.999"));  // numeric TLD that is no IPv4 address
  EXPECT_FALSE(prep_domain("exa mple.com"));
  EXPECT_FALSE(prep_domain("exa_mple.com"));
  EXPECT_FALSE(prep_domain("-example.com"));
  EXPECT_FALSE(prep_domain("ab--cd.com"));
  EXPECT_FALSE(prep_domain("xn--zz.com"));  // invalid punycode
  EXPECT_FALSE(prep_domain("xn--abc-.com"));  // decodes to ASCII: not a valid A-label
  EXPECT_FALSE(prep_domain("a@b"));
  EXPECT_FALSE(prep_domain(std::string(64, 'a') + ".com"));  // label over 63 bytes
  EXPECT_TRUE(prep_domain(std::string(63, 'a') + ".com"));
  EXPECT_TRUE(prep_domain("localhost"));
}

TEST(JidTest, PartLengths) {
  const std::string max(1023, 'a');
  EXPECT_TRUE(prep_localpart(max));
  EXPECT_TRUE(prep_resource(max));
  EXPECT_FALSE(prep_localpart(max + "a"));
  EXPECT_FALSE(prep_resource(max + "a"));
  auto jid = Jid::parse(max + "@example.com/" + max);
  ASSERT_TRUE(jid);
  EXPECT_EQ(jid->local.size(), 1023u);
  expect_invalid(max + "a@example.com", "localpart");
  expect_invalid("a@example.com/" + max + "a", "resourcepart");
  expect_invalid(std::string(1024, 'a'), "domainpart");
  // 400 fullwidth letters are 1200 bytes raw but map to 400 ASCII bytes.
  std::string wide;
  for (int i = 0; i < 400; ++i) wide += "\uFF41";
  EXPECT_EQ(prep_localpart(wide)->size(), 400u);
}

TEST(JidTest, SplitsAtFirstSlashThenAt) {
  auto jid = Jid::parse("a@b.example/c/d@e");
  ASSERT_TRUE(jid);
  EXPECT_EQ(jid->local, "a");
  EXPECT_EQ(jid->domain, "b.example");
  EXPECT_EQ(jid->resource, "c/d@e");
  expect_invalid("a@b@example.com", "domainpart");
}

TEST(JidTest, RoundTripsThroughFull) {
  for (const char* text : {"Juliet@Example.COM/Balcony", "\u03A3@xn--mnchen-3ya.de/x y", "[::1]/r",
                           "\uFF2A@example.com", "l\u00B7l@example.com/\u265A"}) {
    auto jid = Jid::parse(text);
    ASSERT_TRUE(jid) << text;
    auto again = Jid::parse(jid->full());
    ASSERT_TRUE(again) << jid->full();
    EXPECT_EQ(*again, *jid);
  }
}

}  // namespace
}  // namespace hearth::xmpp
