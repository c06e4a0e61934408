// Fuzzes the XMPP stream parser: a valid stream header, then the input in two feed()
// calls split at data[0] % size. Inputs starting with "<!" or "<?" are fed without the
// header so that the prolog (DOCTYPE, entities, PIs) is reached too. Every delivered
// stanza must serialize and parse back to an equal tree; <success/> and <proceed/>
// exercise stream restarts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "xmpp/xml.h"

namespace {

using namespace hearth::xmpp;

constexpr std::string_view kHeader =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

std::string escape_attr(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '\'': out += "&apos;"; break;
      case '\t': out += "&#9;"; break;
      case '\n': out += "&#10;"; break;
      case '\r': out += "&#13;"; break;
      default: out += c;
    }
  }
  return out;
}

struct Collector : XmlStreamHandler {
  std::vector<Element> stanzas;
  void on_stream_open(const StreamHeader&) override {}
  void on_stanza(Element&& e) override { stanzas.push_back(std::move(e)); }
  void on_stream_close() override {}
};

struct Checker : XmlStreamHandler {
  XmlStreamParser* parser = nullptr;
  std::string content_ns = "jabber:client";

  void on_stream_open(const StreamHeader& h) override { content_ns = h.content_ns; }
  void on_stanza(Element&& e) override {
    if (e.name() == "success") parser->request_restart();
    if (e.name() == "proceed") parser->request_restart(RestartInput::reject_rest);
    std::string text = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'";
    if (!content_ns.empty()) {
      text += " xmlns='";
      text += escape_attr(content_ns);
      text += '\'';
    }
    text += '>';
    e.serialize_to(text, content_ns);
    Collector collector;
    XmlStreamParser again(collector);
    if (!again.feed(text) || collector.stanzas.size() != 1 || !(collector.stanzas[0] == e)) __builtin_trap();
  }
  void on_stream_close() override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::size_t split = size ? data[0] % size : 0;
  Checker checker;
  XmlLimits limits;
  limits.max_stanza_bytes = 64 * 1024;
  limits.max_depth = 16;
  XmlStreamParser parser(checker, limits);
  checker.parser = &parser;
  bool prolog = input.starts_with("<!") || input.starts_with("<?");
  if (!prolog && !parser.feed(kHeader)) __builtin_trap();
  auto first = parser.feed(input.substr(0, split));
  auto second = parser.feed(input.substr(split));
  bool failed = parser.last_error_kind() != XmlErrorKind::none;
  if (failed != (!first || !second)) __builtin_trap();
  if (failed && stream_error_condition(parser.last_error_kind()).empty()) __builtin_trap();
  parser.reset();
  if (!parser.feed(kHeader)) __builtin_trap();
  return 0;
}
