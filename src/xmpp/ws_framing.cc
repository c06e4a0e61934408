#include "xmpp/ws_framing.h"

#include <fmt/format.h>

#include "xmpp/xml.h"

namespace hearth::xmpp {
namespace {

// The value of attribute `name` in a start tag's text, "" if absent.
std::string attribute(std::string_view tag, std::string_view name) {
  for (char quote : {'\'', '"'}) {
    std::string key = fmt::format(" {}={}", name, quote);
    auto pos = tag.find(key);
    if (pos == std::string_view::npos) continue;
    pos += key.size();
    auto end = tag.find(quote, pos);
    if (end == std::string_view::npos) return {};
    return std::string(tag.substr(pos, end - pos));
  }
  return {};
}

// Index just past the '>' closing the tag that starts at `lt`, honouring quoted values;
// npos when the tag is incomplete.
std::size_t tag_end(std::string_view s, std::size_t lt) {
  char quote = 0;
  for (std::size_t i = lt + 1; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '>') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Adds the namespace declaration a top-level element needs on its own.
std::string qualify(std::string element) {
  auto name_end = element.find_first_of(" />", 1);
  std::string name = element.substr(1, name_end - 1);
  std::string start = element.substr(0, tag_end(element, 0));
  if (name.rfind("stream:", 0) == 0) {
    if (start.find("xmlns:stream=") == std::string::npos)
      element.insert(name_end, " xmlns:stream='http://etherx.jabber.org/streams'");
  } else if (start.find(" xmlns=") == std::string::npos) {
    element.insert(name_end, " xmlns='jabber:client'");
  }
  return element;
}

}  // namespace

std::vector<std::string> frame_outgoing(std::string& pending, std::string_view bytes) {
  pending.append(bytes);
  std::vector<std::string> out;
  std::string_view s = pending;
  std::size_t pos = 0;
  for (;;) {
    auto lt = s.find('<', pos);
    if (lt == std::string_view::npos) {
      pos = s.size();  // whitespace between elements (keepalives) is dropped
      break;
    }
    auto end = tag_end(s, lt);
    if (end == std::string_view::npos) {
      pos = lt;
      break;
    }
    std::string_view tag = s.substr(lt, end - lt);
    if (tag.substr(0, 2) == "<?") {  // the XML declaration
      pos = end;
      continue;
    }
    if (tag.substr(0, 14) == "<stream:stream") {
      std::string open = fmt::format("<open xmlns='{}'", kFramingNs);
      for (auto a : {"id", "from", "to", "version", "xml:lang"}) {
        std::string v = attribute(tag, a);
        if (!v.empty()) open += fmt::format(" {}='{}'", a, v);
      }
      out.push_back(open + "/>");
      pos = end;
      continue;
    }
    if (tag == "</stream:stream>") {
      out.push_back(fmt::format("<close xmlns='{}'/>", kFramingNs));
      pos = end;
      continue;
    }
    // A top-level element: find where it ends.
    std::size_t depth = 0;
    std::size_t cursor = lt;
    bool complete = false;
    while (cursor < s.size()) {
      auto open = s.find('<', cursor);
      if (open == std::string_view::npos) break;
      auto close = tag_end(s, open);
      if (close == std::string_view::npos) break;
      std::string_view t = s.substr(open, close - open);
      if (t.substr(0, 2) == "</") {
        --depth;
      } else if (t.size() >= 2 && t[t.size() - 2] == '/') {
        // self-closing: depth unchanged
      } else {
        ++depth;
      }
      cursor = close;
      if (depth == 0) {
        complete = true;
        break;
      }
    }
    if (!complete) {
      pos = lt;
      break;
    }
    out.push_back(qualify(std::string(s.substr(lt, cursor - lt))));
    pos = cursor;
  }
  pending.erase(0, pos);
  return out;
}

std::optional<std::string> unframe_incoming(std::string_view message) {
  std::size_t start = message.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos) return std::string();
  std::string_view m = message.substr(start);
  bool open = m.substr(0, 5) == "<open" && (m.size() == 5 || m[5] == ' ' || m[5] == '/' || m[5] == '>');
  bool close = m.substr(0, 6) == "<close" && (m.size() == 6 || m[6] == ' ' || m[6] == '/' || m[6] == '>');
  if (!open && !close) return std::string(message);
  auto e = parse_element(m);
  if (!e || e->ns() != kFramingNs) return std::nullopt;
  if (close) return std::string("</stream:stream>");
  std::string header = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'";
  for (auto a : {"to", "from", "version"}) {
    std::string_view v = e->attr(a);
    if (!v.empty()) header += fmt::format(" {}='{}'", a, xml_escape(v));
  }
  if (e->attr("version").empty()) header += " version='1.0'";
  return header + ">";
}

}  // namespace hearth::xmpp
