#include "xmpp/xml.h"

#include <chrono>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

namespace hearth::xmpp {
namespace {

constexpr std::string_view kHeader =
    "<?xml version='1.0'?>"
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    "to='example.com' from='juliet@example.com' version='1.0' id='s1' xml:lang='en'>";

// Fits the small limits used by the limit tests (which apply to the stream header too).
constexpr std::string_view kShortHeader =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

struct Recorder : XmlStreamHandler {
  std::vector<StreamHeader> headers;
  std::vector<Element> stanzas;
  int closes = 0;
  XmlStreamParser* parser = nullptr;
  std::string restart_on;  // request a restart after a stanza with this name
  RestartInput restart_input = RestartInput::parse_rest;

  void on_stream_open(const StreamHeader& h) override { headers.push_back(h); }
  void on_stanza(Element&& e) override {
    if (parser && e.name() == restart_on) parser->request_restart(restart_input);
    stanzas.push_back(std::move(e));
  }
  void on_stream_close() override { ++closes; }
};

struct Fixture {
  explicit Fixture(XmlLimits limits = {}) : parser(rec, limits) { rec.parser = &parser; }
  Recorder rec;
  XmlStreamParser parser;
};

// Feeds the header, then `body`; returns the kind of the first error.
XmlErrorKind feed_stream(Fixture& f, std::string_view body, std::string_view header = kHeader) {
  if (auto r = f.parser.feed(header); !r) return f.parser.last_error_kind();
  if (auto r = f.parser.feed(body); !r) {
    EXPECT_NE(f.parser.last_error_kind(), XmlErrorKind::none);
    return f.parser.last_error_kind();
  }
  return XmlErrorKind::none;
}

XmlErrorKind error_of(std::string_view body, XmlLimits limits = {}) {
  Fixture f(limits);
  return feed_stream(f, body, kShortHeader);
}

// ----- Element -----------------------------------------------------------------------

TEST(ElementTest, AttributesSetGetRemove) {
  Element e("message", "jabber:client");
  e.set_attr("to", "romeo@example.net").set_attr("type", "chat");
  EXPECT_EQ(e.attr("to"), "romeo@example.net");
  EXPECT_TRUE(e.has_attr("type"));
  EXPECT_EQ(e.attr("id"), "");
  EXPECT_FALSE(e.has_attr("id"));
  e.set_attr("to", "juliet@example.com");
  EXPECT_EQ(e.attr("to"), "juliet@example.com");
  EXPECT_EQ(e.attributes().size(), 2u);
  EXPECT_TRUE(e.remove_attr("to"));
  EXPECT_FALSE(e.remove_attr("to"));
  EXPECT_FALSE(e.has_attr("to"));
}

TEST(ElementTest, ChildLookupByNameAndNamespace) {
  Element iq("iq", "jabber:client");
  iq.add_child(Element("query", "jabber:iq:roster"));
  iq.add_child(Element("query", "jabber:iq:version")).add_text("1.0");
  ASSERT_NE(iq.child("query"), nullptr);
  EXPECT_EQ(iq.child("query")->ns(), "jabber:iq:roster");
  ASSERT_NE(iq.child("query", "jabber:iq:version"), nullptr);
  EXPECT_EQ(iq.child("query", "jabber:iq:version")->text(), "1.0");
  EXPECT_EQ(iq.child("query", "urn:other"), nullptr);
  EXPECT_EQ(iq.child("missing"), nullptr);
  iq.child("query")->set_attr("ver", "1");
  EXPECT_EQ(std::as_const(iq).child("query")->attr("ver"), "1");
}

TEST(ElementTest, ChildrenSkipTextAndTextConcatenatesDirectText) {
  Element body("p", "x");
  body.add_text("a");
  body.add_child(Element("b")).add_text("inner");
  body.add_text("c");
  body.add_text("d");  // merged into the previous text node
  body.add_text("");
  EXPECT_EQ(body.nodes().size(), 3u);
  EXPECT_EQ(body.text(), "acd");
  int n = 0;
  for (const Element& c : std::as_const(body).children()) {
    EXPECT_EQ(c.name(), "b");
    ++n;
  }
  EXPECT_EQ(n, 1);
  for (Element& c : body.children()) c.set_attr("k", "v");
  EXPECT_EQ(body.child("b")->attr("k"), "v");
  EXPECT_TRUE(Element("empty").children().empty());
}

TEST(ElementTest, AddChildInheritsEmptyNamespace) {
  Element query("query", "jabber:iq:roster");
  Element item("item");
  item.add_child(Element("group")).add_text("Friends");
  Element& added = query.add_child(std::move(item));
  EXPECT_EQ(added.ns(), "jabber:iq:roster");
  EXPECT_EQ(added.child("group")->ns(), "jabber:iq:roster");
  Element& other = query.add_child(Element("x", "jabber:x:data"));
  EXPECT_EQ(other.ns(), "jabber:x:data");
}

TEST(ElementTest, ReplaceNsMovesStanzaBetweenContentNamespaces) {
  Element m("message", "jabber:client");
  m.add_child(Element("body")).add_text("hi");
  m.add_child(Element("active", "http://jabber.org/protocol/chatstates"));
  m.replace_ns("jabber:client", "jabber:server");
  std::string out;
  m.serialize_to(out, "jabber:server");
  EXPECT_EQ(out, "<message><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
}

TEST(ElementTest, IsCheapToMove) {
  static_assert(std::is_nothrow_move_constructible_v<Element>);
  static_assert(std::is_nothrow_move_assignable_v<Element>);
  Element a("message", "jabber:client");
  a.add_child(Element("body")).add_text(std::string(1000, 'x'));
  const Element* body = a.child("body");
  Element b = std::move(a);
  EXPECT_EQ(b.child("body"), body);  // nodes moved, not copied
}

TEST(ElementTest, SerializeEmitsXmlnsOnlyWhenNamespaceChanges) {
  Element iq("iq", "jabber:client");
  iq.set_attr("type", "get").set_attr("id", "1");
  Element& query = iq.add_child(Element("query", "jabber:iq:roster"));
  query.add_child(Element("item")).set_attr("jid", "a@b");
  EXPECT_EQ(iq.serialize(),
            "<iq xmlns='jabber:client' type='get' id='1'>"
            "<query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>");
  std::string out;
  iq.serialize_to(out, "jabber:client");
  EXPECT_EQ(out, "<iq type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>");
  out.clear();
  Element("presence").serialize_to(out, "jabber:server");
  EXPECT_EQ(out, "<presence/>");
}

TEST(ElementTest, SerializeEscapesTextAndAttributes) {
  Element m("message", "jabber:client");
  m.set_attr("id", "a&b<c>d'e\"f\tg\nh\ri");
  m.add_child(Element("body")).add_text("1 < 2 && 3 > 2 ]]> 'q' \"d\"\r\n");
  m.set_attr("xml:lang", "en");
  EXPECT_EQ(m.serialize(),
            "<message xmlns='jabber:client' id='a&amp;b&lt;c&gt;d&apos;e&quot;f&#9;g&#10;h&#13;i' xml:lang='en'>"
            "<body>1 &lt; 2 &amp;&amp; 3 &gt; 2 ]]&gt; 'q' \"d\"&#13;\n</body></message>");
}

// ----- XmlStreamParser: headers and stanzas ------------------------------------------

TEST(XmlStreamParserTest, StreamHeaderWithStreamPrefix) {
  Fixture f;
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_EQ(f.rec.headers.size(), 1u);
  const StreamHeader& h = f.rec.headers[0];
  EXPECT_EQ(h.content_ns, "jabber:client");
  EXPECT_EQ(h.to, "example.com");
  EXPECT_EQ(h.from, "juliet@example.com");
  EXPECT_EQ(h.version, "1.0");
  EXPECT_EQ(h.id, "s1");
  EXPECT_EQ(h.lang, "en");
  EXPECT_TRUE(f.parser.stream_open());
}

TEST(XmlStreamParserTest, StreamHeaderWithOtherPrefixForStreamsNamespace) {
  Fixture f;
  ASSERT_TRUE(f.parser.feed(
      "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server' to='b.example' "
      "version='1.0'><s:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></s:features>"));
  ASSERT_EQ(f.rec.headers.size(), 1u);
  EXPECT_EQ(f.rec.headers[0].content_ns, "jabber:server");
  EXPECT_EQ(f.rec.headers[0].to, "b.example");
  ASSERT_EQ(f.rec.stanzas.size(), 1u);
  EXPECT_EQ(f.rec.stanzas[0].name(), "features");
  EXPECT_EQ(f.rec.stanzas[0].ns(), kStreamsNs);
  ASSERT_NE(f.rec.stanzas[0].child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"), nullptr);
}

// Between stanzas the parser frees expat and replays the stream header into a new one on
// the next feed: prefixes declared on the header still resolve, the header is reported
// once, offsets (stanza size limits) start again from the header's end, and a stanza
// split across feeds (no hibernation in the middle) still arrives whole.
TEST(XmlStreamParserTest, IdleParserIsFreedAndTheStreamResumesTransparently) {
  Fixture f(XmlLimits{300});
  const std::string header =
      "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
      "xmlns:db='jabber:server:dialback' to='b.example' version='1.0'>";
  ASSERT_TRUE(f.parser.feed(header));
  for (int i = 0; i < 5; ++i) {
    std::string stanza = "<db:result to='b.example' from='a.example'>" + std::string(200, 'k') + "</db:result>";
    ASSERT_TRUE(f.parser.feed(stanza)) << i;
    ASSERT_TRUE(f.parser.feed("  ")) << i;  // whitespace keepalive between stanzas
  }
  ASSERT_TRUE(f.parser.feed("<message to='x@b.example'><body>sp"));
  ASSERT_TRUE(f.parser.feed("lit</body></message>"));
  ASSERT_EQ(f.rec.headers.size(), 1u);
  ASSERT_EQ(f.rec.stanzas.size(), 6u);
  EXPECT_EQ(f.rec.stanzas[4].ns(), "jabber:server:dialback");
  EXPECT_EQ(f.rec.stanzas[4].text().size(), 200u);
  EXPECT_EQ(f.rec.stanzas[5].ns(), "jabber:server");
  EXPECT_EQ(f.rec.stanzas[5].child("body")->text(), "split");
  // The limit still applies after resuming, and the stream still closes.
  EXPECT_FALSE(f.parser.feed("<message>" + std::string(400, 'z') + "</message>"));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::policy_violation);
  Fixture g;
  ASSERT_TRUE(g.parser.feed(kHeader));
  ASSERT_TRUE(g.parser.feed("<presence/>"));
  ASSERT_TRUE(g.parser.feed("</stream:stream>"));
  EXPECT_EQ(g.rec.closes, 1);
  EXPECT_EQ(g.rec.stanzas.size(), 1u);
  // After a restart (STARTTLS, SASL) the new stream's header is the one replayed.
  Fixture h;
  h.rec.restart_on = "proceed";
  ASSERT_TRUE(h.parser.feed(kShortHeader));
  ASSERT_TRUE(h.parser.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
  h.parser.reset();
  ASSERT_TRUE(h.parser.feed("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                            "xmlns:x='urn:x'>"));
  ASSERT_TRUE(h.parser.feed("<iq/>"));
  ASSERT_TRUE(h.parser.feed("<x:y/>"));
  ASSERT_EQ(h.rec.headers.size(), 2u);
  ASSERT_EQ(h.rec.stanzas.size(), 3u);
  EXPECT_EQ(h.rec.stanzas[2].ns(), "urn:x");
}

TEST(XmlStreamParserTest, StreamErrorIsDeliveredAsStanza) {
  Fixture f;
  EXPECT_EQ(feed_stream(f, "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                           "</stream:error>"),
            XmlErrorKind::none);
  ASSERT_EQ(f.rec.stanzas.size(), 1u);
  EXPECT_EQ(f.rec.stanzas[0].name(), "error");
  EXPECT_EQ(f.rec.stanzas[0].ns(), kStreamsNs);
}

TEST(XmlStreamParserTest, NestedNamespacesRoundTrip) {
  const std::string stanza =
      "<iq type='result' id='r1' xmlns:x='urn:unused'>"
      "<query xmlns='jabber:iq:roster' ver='v1'>"
      "<item jid='romeo@example.net' name='Romeo &amp; co'><group>Friends</group></item>"
      "<x:ext xmlns:y='urn:attr' y:flag='1' xml:lang='fr'>text<![CDATA[ <raw> ]]>more</x:ext>"
      "</query></iq>"
      "<message to='a@b'><body>hi\r\nthere &lt;3</body>"
      "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>"
      "<p style='x'>hi</p></body></html></message>";
  Fixture f;
  ASSERT_EQ(feed_stream(f, stanza), XmlErrorKind::none);
  ASSERT_EQ(f.rec.stanzas.size(), 2u);

  const Element& iq = f.rec.stanzas[0];
  EXPECT_EQ(iq.ns(), "jabber:client");
  const Element* query = iq.child("query", "jabber:iq:roster");
  ASSERT_NE(query, nullptr);
  EXPECT_EQ(query->child("item")->ns(), "jabber:iq:roster");
  EXPECT_EQ(query->child("item")->attr("name"), "Romeo & co");
  const Element* ext = query->child("ext", "urn:unused");
  ASSERT_NE(ext, nullptr);
  EXPECT_EQ(ext->attr("y:flag"), "1");
  EXPECT_EQ(ext->attr("xmlns:y"), "urn:attr");
  EXPECT_EQ(ext->attr("xml:lang"), "fr");
  EXPECT_EQ(ext->text(), "text <raw> more");
  EXPECT_EQ(f.rec.stanzas[1].child("body")->text(), "hi\nthere <3");

  std::string again;
  for (const Element& e : f.rec.stanzas) e.serialize_to(again, "jabber:client");
  EXPECT_EQ(again.find("xmlns='jabber:client'"), std::string::npos);
  EXPECT_EQ(again.find("x:ext"), std::string::npos);  // element prefixes are never emitted

  Fixture g;
  ASSERT_EQ(feed_stream(g, again), XmlErrorKind::none);
  EXPECT_EQ(g.rec.stanzas, f.rec.stanzas);
}

TEST(XmlStreamParserTest, StanzaFedOneByteAtATimeIsDeliveredByItsLastByte) {
  const std::string stanza = "<message to='a@b' id='1'><body>hello &amp; bye</body></message>";
  Fixture f;
  ASSERT_TRUE(f.parser.feed(kHeader));
  for (int round = 0; round < 2; ++round) {
    for (std::size_t i = 0; i < stanza.size(); ++i) {
      ASSERT_TRUE(f.parser.feed(stanza.substr(i, 1)));
      std::size_t expected = static_cast<std::size_t>(round) + (i + 1 == stanza.size() ? 1 : 0);
      ASSERT_EQ(f.rec.stanzas.size(), expected) << "after byte " << i;
    }
  }
  EXPECT_EQ(f.rec.stanzas[0].child("body")->text(), "hello & bye");
  EXPECT_EQ(f.rec.stanzas[0], f.rec.stanzas[1]);
}

TEST(XmlStreamParserTest, HeaderFedOneByteAtATimeOpensOnItsLastByte) {
  Fixture f;
  for (std::size_t i = 0; i < kHeader.size(); ++i) {
    ASSERT_TRUE(f.parser.feed(kHeader.substr(i, 1)));
    ASSERT_EQ(f.rec.headers.size(), i + 1 == kHeader.size() ? 1u : 0u) << "after byte " << i;
  }
}

TEST(XmlStreamParserTest, StanzaInOnePieceIsDeliveredAtOnce) {
  Fixture f;
  ASSERT_TRUE(f.parser.feed(std::string(kHeader) + "<presence/>"));
  EXPECT_EQ(f.rec.headers.size(), 1u);
  ASSERT_EQ(f.rec.stanzas.size(), 1u);
  EXPECT_EQ(f.rec.stanzas[0].name(), "presence");
}

TEST(XmlStreamParserTest, StanzaFollowedByPartialStanza) {
  Fixture f;
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_TRUE(f.parser.feed("<presence/><message><body>par"));
  ASSERT_EQ(f.rec.stanzas.size(), 1u);
  ASSERT_TRUE(f.parser.feed("tial</body></message"));
  ASSERT_EQ(f.rec.stanzas.size(), 1u);
  ASSERT_TRUE(f.parser.feed(">"));
  ASSERT_EQ(f.rec.stanzas.size(), 2u);
  EXPECT_EQ(f.rec.stanzas[1].child("body")->text(), "partial");
}

TEST(XmlStreamParserTest, WhitespaceKeepalivesAreIgnoredAndNotCounted) {
  XmlLimits limits;
  limits.max_stanza_bytes = 256;  // more than the header, less than all the keepalives
  Fixture f(limits);
  ASSERT_TRUE(f.parser.feed(kHeader));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(f.parser.feed(" \n\t\r\n"));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(f.parser.feed("<presence/> "));
  EXPECT_EQ(f.rec.stanzas.size(), 100u);
}

TEST(XmlStreamParserTest, StreamCloseIsDelivered) {
  Fixture f;
  ASSERT_EQ(feed_stream(f, "<presence/>\n</stream:stream>\n"), XmlErrorKind::none);
  EXPECT_EQ(f.rec.stanzas.size(), 1u);
  EXPECT_EQ(f.rec.closes, 1);
  // Nothing but whitespace may follow the end of the stream.
  EXPECT_FALSE(f.parser.feed("<presence/>"));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::not_well_formed);
}

// ----- restarts ------------------------------------------------------------------------

TEST(XmlStreamParserTest, RestartAfterStanzaParsesRestOfChunkWithNewParser) {
  Fixture f;
  f.rec.restart_on = "auth";
  ASSERT_TRUE(f.parser.feed(kHeader));
  // After <auth/>, the rest of the chunk is a new stream (a new XML declaration and a
  // second root element would be fatal to the old parser).
  ASSERT_TRUE(f.parser.feed(
      "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>"
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' id='s2'>"
      "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"));
  ASSERT_EQ(f.rec.headers.size(), 2u);
  EXPECT_EQ(f.rec.headers[1].id, "s2");
  ASSERT_EQ(f.rec.stanzas.size(), 2u);
  EXPECT_EQ(f.rec.stanzas[0].text(), "AGp1bGlldABy");
  EXPECT_EQ(f.rec.stanzas[1].name(), "iq");
}

TEST(XmlStreamParserTest, RestartAfterEmptyElementStanzaInSameChunk) {
  Fixture f;
  f.rec.restart_on = "success";
  ASSERT_TRUE(f.parser.feed(std::string(kHeader) + "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" +
                            std::string(kHeader) + "<presence/>"));
  EXPECT_EQ(f.rec.headers.size(), 2u);
  ASSERT_EQ(f.rec.stanzas.size(), 2u);
  EXPECT_EQ(f.rec.stanzas[1].name(), "presence");
}

TEST(XmlStreamParserTest, RestartAtEndOfChunkThenHeaderInNextChunk) {
  Fixture f;
  f.rec.restart_on = "auth";
  ASSERT_TRUE(f.parser.feed(std::string(kHeader) + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"));
  EXPECT_FALSE(f.parser.stream_open());
  ASSERT_TRUE(f.parser.feed(kHeader));
  EXPECT_EQ(f.rec.headers.size(), 2u);
}

TEST(XmlStreamParserTest, RestartRejectRestFailsOnPipelinedPlaintext) {
  Fixture f;
  f.rec.restart_on = "starttls";
  f.rec.restart_input = RestartInput::reject_rest;
  ASSERT_TRUE(f.parser.feed(kHeader));
  auto r = f.parser.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message/>");
  ASSERT_FALSE(r);
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::policy_violation);
  EXPECT_EQ(r.error().code, Errc::resource_exhausted);
  EXPECT_EQ(f.rec.stanzas.size(), 1u);
}

TEST(XmlStreamParserTest, RestartRejectRestAcceptsNothingPipelined) {
  Fixture f;
  f.rec.restart_on = "starttls";
  f.rec.restart_input = RestartInput::reject_rest;
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_TRUE(f.parser.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
  ASSERT_TRUE(f.parser.feed(kHeader));
  EXPECT_EQ(f.rec.headers.size(), 2u);
}

TEST(XmlStreamParserTest, RequestRestartOutsideOnStanzaIsIgnored) {
  Fixture f;
  ASSERT_TRUE(f.parser.feed(kHeader));
  f.parser.request_restart();
  ASSERT_TRUE(f.parser.feed("<presence/><presence/>"));
  EXPECT_EQ(f.rec.stanzas.size(), 2u);
  EXPECT_EQ(f.rec.headers.size(), 1u);
}

TEST(XmlStreamParserTest, StaysFailedUntilReset) {
  Fixture f;
  EXPECT_EQ(feed_stream(f, "<a><b></a>"), XmlErrorKind::not_well_formed);
  auto again = f.parser.feed("<presence/>");
  ASSERT_FALSE(again);
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::not_well_formed);
  EXPECT_TRUE(f.rec.stanzas.empty());
  f.parser.reset();
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::none);
  EXPECT_EQ(feed_stream(f, "<presence/>"), XmlErrorKind::none);
  EXPECT_EQ(f.rec.stanzas.size(), 1u);
}

// ----- limits --------------------------------------------------------------------------

TEST(XmlStreamParserTest, StanzaSizeLimitOnHugeTextNode) {
  XmlLimits limits;
  limits.max_stanza_bytes = 1024;
  Fixture f(limits);
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_TRUE(f.parser.feed("<message><body>"));
  Result<void> r;
  for (int i = 0; i < 100 && r; ++i) r = f.parser.feed(std::string(100, 'x'));
  ASSERT_FALSE(r);
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::policy_violation);
  EXPECT_NE(r.error().message.find("max_stanza_bytes"), std::string::npos);
  EXPECT_TRUE(f.rec.stanzas.empty());
}

TEST(XmlStreamParserTest, StanzaSizeLimitInsideOneLargeChunk) {
  XmlLimits limits;
  limits.max_stanza_bytes = 1024;
  EXPECT_EQ(error_of("<message><body>" + std::string(100000, 'x') + "</body></message>", limits),
            XmlErrorKind::policy_violation);
}

TEST(XmlStreamParserTest, StanzaSizeLimitOnUnterminatedStartTag) {
  // Expat buffers a start tag until its '>' arrives, without events.
  XmlLimits limits;
  limits.max_stanza_bytes = 4096;
  Fixture f(limits);
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_TRUE(f.parser.feed("<message to='"));
  Result<void> r;
  for (int i = 0; i < 10 && r; ++i) r = f.parser.feed(std::string(1000, 'a'));
  ASSERT_FALSE(r);
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::policy_violation);
}

TEST(XmlStreamParserTest, StanzaExactlyAtSizeLimitIsAccepted) {
  const std::string stanza = "<message><body>" + std::string(100, 'x') + "</body></message>";
  XmlLimits limits;
  limits.max_stanza_bytes = stanza.size();
  EXPECT_EQ(error_of(stanza + stanza, limits), XmlErrorKind::none);
  limits.max_stanza_bytes = stanza.size() - 1;
  EXPECT_EQ(error_of(stanza, limits), XmlErrorKind::policy_violation);
}

TEST(XmlStreamParserTest, ManySmallStanzasNeverHitTheSizeLimit) {
  XmlLimits limits;
  limits.max_stanza_bytes = 100;
  std::string many;
  for (int i = 0; i < 10000; ++i) many += "<presence/>";
  Fixture f(limits);
  EXPECT_EQ(feed_stream(f, many, kShortHeader), XmlErrorKind::none);
  EXPECT_EQ(f.rec.stanzas.size(), 10000u);
}

TEST(XmlStreamParserTest, DepthLimit) {
  auto nested = [](int depth) {
    std::string open, close;
    for (int i = 0; i < depth; ++i) {
      open += "<a>";
      close = "</a>" + close;
    }
    return open + close;
  };
  XmlLimits limits;
  limits.max_depth = 5;
  EXPECT_EQ(error_of(nested(5), limits), XmlErrorKind::none);
  EXPECT_EQ(error_of(nested(6), limits), XmlErrorKind::policy_violation);
  Fixture f(limits);
  ASSERT_TRUE(f.parser.feed(kHeader));
  auto r = f.parser.feed(nested(100));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("max_depth"), std::string::npos);
}

TEST(XmlStreamParserTest, AttributeLimitCountsNamespaceDeclarations) {
  XmlLimits limits;
  limits.max_attributes = 3;
  EXPECT_EQ(error_of("<a x='1' y='2' z='3'/>", limits), XmlErrorKind::none);
  EXPECT_EQ(error_of("<a x='1' y='2' z='3' w='4'/>", limits), XmlErrorKind::policy_violation);
  EXPECT_EQ(error_of("<a xmlns='u' xmlns:p='v' y='2' z='3'/>", limits), XmlErrorKind::policy_violation);
  Fixture f(limits);
  ASSERT_TRUE(f.parser.feed(kShortHeader));
  auto r = f.parser.feed("<a a='1' b='2' c='3' d='4'/>");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("max_attributes"), std::string::npos);
}

TEST(XmlStreamParserTest, NameLengthLimit) {
  XmlLimits limits;
  limits.max_name_bytes = 40;  // the streams namespace has 32 bytes
  const std::string longname(41, 'n');
  EXPECT_EQ(error_of("<" + std::string(40, 'n') + "/>", limits), XmlErrorKind::none);
  EXPECT_EQ(error_of("<" + longname + "/>", limits), XmlErrorKind::policy_violation);
  EXPECT_EQ(error_of("<a " + longname + "='1'/>", limits), XmlErrorKind::policy_violation);
  EXPECT_EQ(error_of("<a xmlns='urn:" + longname + "'/>", limits), XmlErrorKind::policy_violation);
  Fixture f(limits);
  ASSERT_TRUE(f.parser.feed(kShortHeader));
  auto r = f.parser.feed("<" + longname + "/>");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("max_name_bytes"), std::string::npos);
}

TEST(XmlStreamParserTest, HugeAttributeValueHitsStanzaLimit) {
  EXPECT_EQ(error_of("<message id='" + std::string(300 * 1024, 'a') + "'/>"), XmlErrorKind::policy_violation);
}

// ----- restricted XML and malformed input ----------------------------------------------

TEST(XmlStreamParserTest, DoctypeIsRestricted) {
  Fixture f;
  ASSERT_FALSE(f.parser.feed("<?xml version='1.0'?><!DOCTYPE stream SYSTEM 'http://evil/x.dtd'>"));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::restricted_xml);
  EXPECT_TRUE(f.rec.headers.empty());
}

TEST(XmlStreamParserTest, BillionLaughsIsRejectedFast) {
  std::string doc = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>";
  doc += "<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>";
  for (int i = 2; i < 10; ++i) {
    doc += "<!ENTITY lol" + std::to_string(i) + " '";
    for (int j = 0; j < 10; ++j) doc += "&lol" + std::to_string(i - 1) + ";";
    doc += "'>";
  }
  doc += "]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol9;";
  Fixture f;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_FALSE(f.parser.feed(doc));
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::restricted_xml);
  EXPECT_LT(elapsed, std::chrono::milliseconds(100));
  EXPECT_TRUE(f.rec.headers.empty());
}

TEST(XmlStreamParserTest, InternalEntityDeclarationInsideStreamIsRejected) {
  // A DOCTYPE cannot appear after the root start tag; expat reports it as malformed.
  EXPECT_NE(error_of("<!DOCTYPE x [<!ENTITY a 'b'>]>"), XmlErrorKind::none);
}

TEST(XmlStreamParserTest, UndefinedEntityReferenceIsRestricted) {
  EXPECT_EQ(error_of("<message><body>&nbsp;</body></message>"), XmlErrorKind::restricted_xml);
}

TEST(XmlStreamParserTest, PredefinedAndCharacterReferencesAreAllowed) {
  Fixture f;
  ASSERT_EQ(feed_stream(f, "<m a='&quot;&apos;'>&lt;&gt;&amp;&#65;&#x263A;</m>"), XmlErrorKind::none);
  EXPECT_EQ(f.rec.stanzas[0].text(), "<>&A\xE2\x98\xBA");
  EXPECT_EQ(f.rec.stanzas[0].attr("a"), "\"'");
}

TEST(XmlStreamParserTest, ProcessingInstructionIsRestricted) {
  EXPECT_EQ(error_of("<?php echo 1; ?>"), XmlErrorKind::restricted_xml);
  EXPECT_EQ(error_of("<message><?pi x?></message>"), XmlErrorKind::restricted_xml);
  Fixture f;
  ASSERT_FALSE(f.parser.feed("<?xml-stylesheet href='x'?>" + std::string(kHeader)));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::restricted_xml);
}

TEST(XmlStreamParserTest, CommentIsRestricted) {
  EXPECT_EQ(error_of("<!-- hi -->"), XmlErrorKind::restricted_xml);
  EXPECT_EQ(error_of("<message><!-- hi --></message>"), XmlErrorKind::restricted_xml);
  Fixture f;
  ASSERT_FALSE(f.parser.feed("<!-- before -->" + std::string(kHeader)));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::restricted_xml);
}

TEST(XmlStreamParserTest, UndeclaredPrefixIsBadNamespacePrefix) {
  EXPECT_EQ(error_of("<foo:bar/>"), XmlErrorKind::bad_namespace_prefix);
  EXPECT_EQ(error_of("<message foo:attr='1'/>"), XmlErrorKind::bad_namespace_prefix);
  EXPECT_EQ(error_of("<xml:message/>"), XmlErrorKind::bad_namespace_prefix);
  EXPECT_EQ(error_of("<m xmlns:xmlns='urn:x'/>"), XmlErrorKind::bad_namespace_prefix);
  Fixture f;
  ASSERT_FALSE(f.parser.feed("<stream:stream xmlns='jabber:client'>"));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::bad_namespace_prefix);
}

TEST(XmlStreamParserTest, WrongStreamNamespaceIsInvalidNamespace) {
  Fixture f;
  ASSERT_FALSE(f.parser.feed("<stream:stream xmlns='jabber:client' xmlns:stream='http://wrong.example/streams'>"));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::invalid_namespace);
  EXPECT_TRUE(f.rec.headers.empty());
  Fixture g;
  ASSERT_FALSE(g.parser.feed("<stream xmlns='jabber:client'>"));
  EXPECT_EQ(g.parser.last_error_kind(), XmlErrorKind::invalid_namespace);
  Fixture h;
  ASSERT_FALSE(h.parser.feed("<stream:flow xmlns:stream='http://etherx.jabber.org/streams'>"));
  EXPECT_EQ(h.parser.last_error_kind(), XmlErrorKind::invalid_namespace);
}

TEST(XmlStreamParserTest, ElementInNoNamespaceInsideNamespaceIsInvalidNamespace) {
  EXPECT_EQ(error_of("<message><x xmlns=''/></message>"), XmlErrorKind::invalid_namespace);
  EXPECT_EQ(error_of("<message xmlns=''/>"), XmlErrorKind::invalid_namespace);
  // Without a content namespace nothing is inherited; the session rejects such a header.
  Fixture f;
  ASSERT_EQ(feed_stream(f, "<message><x/></message>",
                        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
            XmlErrorKind::none);
  EXPECT_EQ(f.rec.headers[0].content_ns, "");
  EXPECT_EQ(f.rec.stanzas[0].ns(), "");
}

TEST(XmlStreamParserTest, TextDirectlyInStreamIsBadFormat) {
  EXPECT_EQ(error_of("hello<presence/>"), XmlErrorKind::bad_format);
}

TEST(XmlStreamParserTest, InvalidUtf8IsNotWellFormed) {
  EXPECT_EQ(error_of("<message><body>\xC3\x28</body></message>"), XmlErrorKind::not_well_formed);
  EXPECT_EQ(error_of("<message><body>\xC0\xAF</body></message>"), XmlErrorKind::not_well_formed);  // overlong
  EXPECT_EQ(error_of("<message><body>\xED\xA0\x80</body></message>"), XmlErrorKind::not_well_formed);  // surrogate
  EXPECT_EQ(error_of("<message><body>\xFF</body></message>"), XmlErrorKind::not_well_formed);
  EXPECT_EQ(error_of("<message a='\x80'/>"), XmlErrorKind::not_well_formed);
  // Split across feeds.
  Fixture f;
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_TRUE(f.parser.feed("<m>\xE2\x98"));
  EXPECT_FALSE(f.parser.feed("A</m>"));
  EXPECT_EQ(f.parser.last_error_kind(), XmlErrorKind::not_well_formed);
}

TEST(XmlStreamParserTest, NonXmlCharactersAreNotWellFormed) {
  EXPECT_EQ(error_of(std::string("<m>\x01</m>")), XmlErrorKind::not_well_formed);
  EXPECT_EQ(error_of("<m>&#0;</m>"), XmlErrorKind::not_well_formed);
  EXPECT_EQ(error_of("<m>&#x1;</m>"), XmlErrorKind::not_well_formed);
  EXPECT_EQ(error_of("<m>\xEF\xBF\xBE</m>"), XmlErrorKind::not_well_formed);  // U+FFFE
}

TEST(XmlStreamParserTest, MultibyteUtf8SplitAcrossFeedsIsFine) {
  Fixture f;
  ASSERT_TRUE(f.parser.feed(kHeader));
  ASSERT_TRUE(f.parser.feed("<m>\xF0\x9F"));
  ASSERT_TRUE(f.parser.feed("\x98\x80</m>"));
  ASSERT_EQ(f.rec.stanzas.size(), 1u);
  EXPECT_EQ(f.rec.stanzas[0].text(), "\xF0\x9F\x98\x80");
}

TEST(XmlStreamParserTest, ErrorConditionNames) {
  EXPECT_EQ(stream_error_condition(XmlErrorKind::not_well_formed), "not-well-formed");
  EXPECT_EQ(stream_error_condition(XmlErrorKind::restricted_xml), "restricted-xml");
  EXPECT_EQ(stream_error_condition(XmlErrorKind::policy_violation), "policy-violation");
  EXPECT_EQ(stream_error_condition(XmlErrorKind::invalid_namespace), "invalid-namespace");
  EXPECT_EQ(stream_error_condition(XmlErrorKind::bad_namespace_prefix), "bad-namespace-prefix");
  EXPECT_EQ(stream_error_condition(XmlErrorKind::bad_format), "bad-format");
  EXPECT_EQ(stream_error_condition(XmlErrorKind::none), "");
}

}  // namespace
}  // namespace hearth::xmpp
