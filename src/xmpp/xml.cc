#include "xmpp/xml.h"

#include "core/random.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <new>
#include <utility>

#include <expat.h>

namespace hearth::xmpp {
namespace {

// Byte 0xFF never occurs in UTF-8, so it cannot be part of a namespace URI or a name.
constexpr char kNsSeparator = '\xFF';
constexpr std::size_t kSliceBytes = 16 * 1024;

void escape_text(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\r': out += "&#13;"; break;  // a literal CR would be normalized away
      default: out += c;
    }
  }
}

void escape_attr(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      // Attribute-value normalization would turn these into spaces.
      case '\t': out += "&#9;"; break;
      case '\n': out += "&#10;"; break;
      case '\r': out += "&#13;"; break;
      default: out += c;
    }
  }
}

void inherit_ns(Element& e, const std::string& ns) {
  if (ns.empty() || !e.ns().empty()) return;
  e.set_ns(ns);
  for (Element& c : e.children()) inherit_ns(c, ns);
}

// A name as expat reports it with namespace triplets: "uri\xFFlocal\xFFprefix",
// "uri\xFFlocal" (default namespace) or "local" (no namespace).
struct ExpandedName {
  std::string_view uri;
  std::string_view local;
  std::string_view prefix;
};

ExpandedName split_name(const XML_Char* raw) {
  std::string_view s(raw);
  auto first = s.find(kNsSeparator);
  if (first == std::string_view::npos) return {{}, s, {}};
  auto second = s.find(kNsSeparator, first + 1);
  if (second == std::string_view::npos) return {s.substr(0, first), s.substr(first + 1), {}};
  return {s.substr(0, first), s.substr(first + 1, second - first - 1), s.substr(second + 1)};
}

bool is_xml_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

}  // namespace

std::optional<Element> parse_element(std::string_view serialized) {
  struct Collector final : XmlStreamHandler {
    std::optional<Element> element;
    void on_stream_open(const StreamHeader&) override {}
    void on_stanza(Element&& e) override { element = std::move(e); }
    void on_stream_close() override {}
  } collector;
  XmlStreamParser parser(collector);
  std::string doc = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
  doc += serialized;
  if (!parser.feed(doc)) return std::nullopt;
  return std::move(collector.element);
}

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  escape_attr(out, s);
  return out;
}

// ---------------------------------------------------------------------------------------
// Element

Element::Element(std::string name, std::string ns) : name_(std::move(name)), ns_(std::move(ns)) {}

std::string_view Element::attr(std::string_view name) const {
  for (const auto& a : attrs_)
    if (a.name == name) return a.value;
  return {};
}

bool Element::has_attr(std::string_view name) const {
  return std::any_of(attrs_.begin(), attrs_.end(), [&](const Attribute& a) { return a.name == name; });
}

Element& Element::set_attr(std::string name, std::string value) {
  for (auto& a : attrs_) {
    if (a.name == name) {
      a.value = std::move(value);
      return *this;
    }
  }
  attrs_.push_back({std::move(name), std::move(value)});
  return *this;
}

bool Element::remove_attr(std::string_view name) {
  auto it = std::find_if(attrs_.begin(), attrs_.end(), [&](const Attribute& a) { return a.name == name; });
  if (it == attrs_.end()) return false;
  attrs_.erase(it);
  return true;
}

Element& Element::add_child(Element child) {
  inherit_ns(child, ns_);
  nodes_.emplace_back(std::move(child));
  return nodes_.back().element();
}

void Element::replace_ns(std::string_view from, std::string_view to) {
  if (ns_ == from) ns_ = to;
  for (Element& c : children()) c.replace_ns(from, to);
}

void Element::add_text(std::string_view text) {
  if (text.empty()) return;
  if (!nodes_.empty() && nodes_.back().is_text())
    nodes_.back().text().append(text);
  else
    nodes_.emplace_back(std::string(text));
}

const Element* Element::child(std::string_view name, std::string_view ns) const {
  for (const Element& c : children())
    if (c.name_ == name && (ns.empty() || c.ns_ == ns)) return &c;
  return nullptr;
}

Element* Element::child(std::string_view name, std::string_view ns) {
  return const_cast<Element*>(std::as_const(*this).child(name, ns));
}

std::string Element::text() const {
  std::string out;
  for (const Node& n : nodes_)
    if (n.is_text()) out += n.text();
  return out;
}

std::string Element::serialize() const {
  std::string out;
  serialize_to(out, {});
  return out;
}

void Element::serialize_to(std::string& out, std::string_view parent_ns) const {
  out += '<';
  out += name_;
  if (!ns_.empty() && ns_ != parent_ns) {
    out += " xmlns='";
    escape_attr(out, ns_);
    out += '\'';
  }
  for (const auto& a : attrs_) {
    if (a.name == "xmlns") continue;
    out += ' ';
    out += a.name;
    out += "='";
    escape_attr(out, a.value);
    out += '\'';
  }
  if (nodes_.empty()) {
    out += "/>";
    return;
  }
  out += '>';
  std::string_view inner_ns = ns_.empty() ? parent_ns : std::string_view(ns_);
  for (const Node& n : nodes_) {
    if (n.is_element())
      n.element().serialize_to(out, inner_ns);
    else
      escape_text(out, n.text());
  }
  out += "</";
  out += name_;
  out += '>';
}

bool operator==(const Element& a, const Element& b) {
  return a.name_ == b.name_ && a.ns_ == b.ns_ && a.attrs_ == b.attrs_ && a.nodes_ == b.nodes_;
}

std::string_view stream_error_condition(XmlErrorKind kind) {
  switch (kind) {
    case XmlErrorKind::none: return "";
    case XmlErrorKind::not_well_formed: return "not-well-formed";
    case XmlErrorKind::restricted_xml: return "restricted-xml";
    case XmlErrorKind::policy_violation: return "policy-violation";
    case XmlErrorKind::invalid_namespace: return "invalid-namespace";
    case XmlErrorKind::bad_namespace_prefix: return "bad-namespace-prefix";
    case XmlErrorKind::bad_format: return "bad-format";
  }
  return "";
}

// ---------------------------------------------------------------------------------------
// XmlStreamParser

class XmlStreamParser::Impl {
 public:
  Impl(XmlStreamHandler& handler, XmlLimits limits) : handler_(handler), limits_(limits) { start(); }
  ~Impl() { XML_ParserFree(parser_); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  Result<void> feed(std::string_view bytes);

  void reset() {
    assert(!in_feed_ && "reset() called from a handler; use request_restart()");
    start();
  }

  void request_restart(RestartInput input) {
    if (!in_stanza_callback_) return;
    restart_requested_ = true;
    restart_input_ = input;
  }

  XmlErrorKind error_kind() const { return error_kind_; }
  bool stream_open() const { return stream_open_; }

 private:
  void start();
  void set_error(XmlErrorKind kind, std::string message);
  void set_error_from_expat();
  Result<void> error_result() const;
  bool halted() const { return error_kind_ != XmlErrorKind::none || restart_pending_; }
  std::uint64_t event_end() const;
  bool check_stanza_size(std::uint64_t end);
  bool check_name(std::string_view part, const char* what);
  bool add_attribute(Element& e, const XML_Char* name, const XML_Char* value);

  void start_element(const XML_Char* name, const XML_Char** atts);
  void end_element();
  void character_data(std::string_view text);
  void namespace_decl(const XML_Char* prefix, const XML_Char* uri);

  static void XMLCALL on_start(void* self, const XML_Char* name, const XML_Char** atts) {
    static_cast<Impl*>(self)->start_element(name, atts);
  }
  static void XMLCALL on_end(void* self, const XML_Char*) { static_cast<Impl*>(self)->end_element(); }
  static void XMLCALL on_text(void* self, const XML_Char* s, int len) {
    static_cast<Impl*>(self)->character_data(std::string_view(s, static_cast<std::size_t>(len)));
  }
  static void XMLCALL on_ns_decl(void* self, const XML_Char* prefix, const XML_Char* uri) {
    static_cast<Impl*>(self)->namespace_decl(prefix, uri);
  }
  static void XMLCALL on_doctype(void* self, const XML_Char*, const XML_Char*, const XML_Char*, int) {
    static_cast<Impl*>(self)->set_error(XmlErrorKind::restricted_xml, "DOCTYPE is not allowed");
  }
  static void XMLCALL on_entity_decl(void* self, const XML_Char*, int, const XML_Char*, int, const XML_Char*,
                                     const XML_Char*, const XML_Char*, const XML_Char*) {
    static_cast<Impl*>(self)->set_error(XmlErrorKind::restricted_xml, "entity declarations are not allowed");
  }
  static void XMLCALL on_pi(void* self, const XML_Char*, const XML_Char*) {
    static_cast<Impl*>(self)->set_error(XmlErrorKind::restricted_xml, "processing instructions are not allowed");
  }
  static void XMLCALL on_comment(void* self, const XML_Char*) {
    static_cast<Impl*>(self)->set_error(XmlErrorKind::restricted_xml, "comments are not allowed");
  }

  XmlStreamHandler& handler_;
  XmlLimits limits_;
  XML_Parser parser_ = nullptr;

  XmlErrorKind error_kind_ = XmlErrorKind::none;
  std::string error_message_;

  bool in_feed_ = false;
  bool parsing_ = false;  // inside XML_Parse, where XML_StopParser may be called
  bool in_stanza_callback_ = false;
  bool restart_requested_ = false;
  bool restart_pending_ = false;  // expat stopped at restart_offset_
  RestartInput restart_input_ = RestartInput::parse_rest;
  std::uint64_t restart_offset_ = 0;

  // Byte offsets are in this expat parser's input, counted from its creation.
  std::uint64_t fed_ = 0;
  std::uint64_t boundary_ = 0;  // end of the stream header, last stanza or whitespace
  std::uint64_t tag_end_ = 0;   // end of the last start tag

  int depth_ = 0;  // open elements, the stream element included
  bool stream_open_ = false;
  std::size_t pending_ns_decls_ = 0;  // declared on the element about to start
  std::string root_default_ns_;  // the stream's content namespace once it is open
  std::vector<Element> open_;  // the stanza being built and its open descendants

  // Idle connections keep no expat parser (its buffers and tables are ~8 KiB): when a
  // feed ends between stanzas, the parser is freed; the next feed makes a new one and
  // replays the stream header into it (its bytes are kept, `header_` up to kMaxHeader),
  // which restores the same namespace bindings without calling the handler again.
  void create_parser();
  void capture_header(std::string_view slice);
  void maybe_hibernate();
  bool wake();
  std::string header_;            // this parser's input up to the end of the stream's start tag
  std::uint64_t header_end_ = 0;  // its length, once the stream is open
  bool capture_ = true;           // false: the header was too long to keep (never hibernate)
  bool replaying_ = false;
  unsigned long hash_salt_ = 0;   // one per connection, so a new parser needs no getrandom()
};

namespace {
constexpr std::size_t kMaxHeader = 2048;
}  // namespace

void XmlStreamParser::Impl::create_parser() {
  if (parser_) XML_ParserFree(parser_);
  parser_ = XML_ParserCreateNS("UTF-8", kNsSeparator);
  if (!parser_) throw std::bad_alloc();
  if (hash_salt_ == 0) {
    std::string r = random_hex(sizeof(unsigned long));
    hash_salt_ = std::stoul(r.substr(0, 2 * sizeof(unsigned long) - 1), nullptr, 16) | 1;
  }
  XML_SetHashSalt(parser_, hash_salt_);
  XML_SetUserData(parser_, this);
  XML_SetReturnNSTriplet(parser_, 1);
  XML_SetElementHandler(parser_, on_start, on_end);
  XML_SetCharacterDataHandler(parser_, on_text);
  XML_SetStartNamespaceDeclHandler(parser_, on_ns_decl);
  XML_SetStartDoctypeDeclHandler(parser_, on_doctype);
  XML_SetEntityDeclHandler(parser_, on_entity_decl);
  XML_SetProcessingInstructionHandler(parser_, on_pi);
  XML_SetCommentHandler(parser_, on_comment);
  XML_SetParamEntityParsing(parser_, XML_PARAM_ENTITY_PARSING_NEVER);
  // Without this, expat may hold back a complete stanza until more bytes arrive.
  XML_SetReparseDeferralEnabled(parser_, XML_FALSE);
}

void XmlStreamParser::Impl::start() {
  create_parser();
  std::string().swap(header_);
  header_end_ = 0;
  capture_ = true;
  replaying_ = false;

  error_kind_ = XmlErrorKind::none;
  error_message_.clear();
  in_stanza_callback_ = false;
  restart_requested_ = false;
  restart_pending_ = false;
  fed_ = boundary_ = tag_end_ = restart_offset_ = 0;
  depth_ = 0;
  stream_open_ = false;
  pending_ns_decls_ = 0;
  root_default_ns_.clear();
  open_.clear();
}

Result<void> XmlStreamParser::Impl::feed(std::string_view bytes) {
  if (error_kind_ != XmlErrorKind::none) return error_result();
  assert(!in_feed_ && "feed() called from a handler");
  if (!parser_ && !wake()) return error_result();
  in_feed_ = true;
  std::size_t pos = 0;
  while (pos < bytes.size() && error_kind_ == XmlErrorKind::none) {
    std::size_t n = std::min(kSliceBytes, bytes.size() - pos);
    std::uint64_t slice_start = fed_;
    if (!stream_open_) capture_header(bytes.substr(pos, n));
    fed_ += n;
    parsing_ = true;
    XML_Status status = XML_Parse(parser_, bytes.data() + pos, static_cast<int>(n), XML_FALSE);
    parsing_ = false;
    if (restart_pending_) {
      pos += static_cast<std::size_t>(restart_offset_ - slice_start);
      RestartInput input = restart_input_;
      start();
      if (input == RestartInput::reject_rest && pos < bytes.size())
        set_error(XmlErrorKind::policy_violation, "bytes pipelined after a stanza that ends the plaintext stream");
      continue;
    }
    if (status != XML_STATUS_OK) {
      if (error_kind_ == XmlErrorKind::none) set_error_from_expat();
      break;
    }
    if (stream_open_ && header_.size() > header_end_) {
      header_.resize(header_end_);  // what followed the start tag is not header
      header_.shrink_to_fit();
    }
    pos += n;
    // Catches what expat buffers without events, e.g. an unterminated start tag.
    if (fed_ - boundary_ > limits_.max_stanza_bytes)
      set_error(XmlErrorKind::policy_violation,
                "stanza exceeds max_stanza_bytes (" + std::to_string(limits_.max_stanza_bytes) + ")");
  }
  in_feed_ = false;
  if (error_kind_ != XmlErrorKind::none) return error_result();
  maybe_hibernate();
  return ok();
}

void XmlStreamParser::Impl::capture_header(std::string_view slice) {
  if (!capture_) return;
  if (header_.size() + slice.size() > kMaxHeader + kSliceBytes) {
    capture_ = false;
    std::string().swap(header_);
    return;
  }
  header_.append(slice);
}

void XmlStreamParser::Impl::maybe_hibernate() {
  if (!parser_ || !capture_ || !stream_open_ || depth_ != 1 || !open_.empty() || halted() || fed_ != boundary_ ||
      header_end_ == 0 || header_end_ > kMaxHeader || header_.size() != header_end_)
    return;
  XML_ParserFree(parser_);
  parser_ = nullptr;
}

// A new parser in the state the freed one had between stanzas: the stream's start tag
// replayed (no handler call), offsets counted from its end.
bool XmlStreamParser::Impl::wake() {
  create_parser();
  int depth = depth_;
  std::string root_ns = root_default_ns_;
  depth_ = 0;
  stream_open_ = false;
  fed_ = boundary_ = tag_end_ = 0;
  replaying_ = true;
  parsing_ = true;
  XML_Status status = XML_Parse(parser_, header_.data(), static_cast<int>(header_.size()), XML_FALSE);
  parsing_ = false;
  replaying_ = false;
  if (status != XML_STATUS_OK || error_kind_ != XmlErrorKind::none || !stream_open_ || depth_ != depth ||
      root_default_ns_ != root_ns) {
    set_error(XmlErrorKind::policy_violation, "the stream could not be resumed");
    return false;
  }
  fed_ = header_end_;
  return true;
}

void XmlStreamParser::Impl::set_error(XmlErrorKind kind, std::string message) {
  if (error_kind_ != XmlErrorKind::none) return;
  error_kind_ = kind;
  error_message_ = std::string(stream_error_condition(kind)) + ": " + message;
  if (parsing_) XML_StopParser(parser_, XML_FALSE);
}

void XmlStreamParser::Impl::set_error_from_expat() {
  XML_Error code = XML_GetErrorCode(parser_);
  XmlErrorKind kind = XmlErrorKind::not_well_formed;
  switch (code) {
    case XML_ERROR_UNBOUND_PREFIX:
    case XML_ERROR_UNDECLARING_PREFIX:
    case XML_ERROR_RESERVED_PREFIX_XML:
    case XML_ERROR_RESERVED_PREFIX_XMLNS:
    case XML_ERROR_RESERVED_NAMESPACE_URI:
      kind = XmlErrorKind::bad_namespace_prefix;
      break;
    case XML_ERROR_UNDEFINED_ENTITY:
    case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
      kind = XmlErrorKind::restricted_xml;
      break;
    case XML_ERROR_NO_MEMORY:
      kind = XmlErrorKind::policy_violation;
      break;
    default:
      break;
  }
  set_error(kind, std::string(XML_ErrorString(code)) + " at line " +
                      std::to_string(XML_GetCurrentLineNumber(parser_)) + " column " +
                      std::to_string(XML_GetCurrentColumnNumber(parser_)));
}

Result<void> XmlStreamParser::Impl::error_result() const {
  return fail(error_kind_ == XmlErrorKind::policy_violation ? Errc::resource_exhausted : Errc::invalid_argument,
              error_message_);
}

std::uint64_t XmlStreamParser::Impl::event_end() const {
  XML_Index index = XML_GetCurrentByteIndex(parser_);
  int count = XML_GetCurrentByteCount(parser_);
  return static_cast<std::uint64_t>(std::max<XML_Index>(index, 0)) + static_cast<std::uint64_t>(count);
}

bool XmlStreamParser::Impl::check_stanza_size(std::uint64_t end) {
  if (end - boundary_ <= limits_.max_stanza_bytes) return true;
  set_error(XmlErrorKind::policy_violation,
            "stanza exceeds max_stanza_bytes (" + std::to_string(limits_.max_stanza_bytes) + ")");
  return false;
}

bool XmlStreamParser::Impl::check_name(std::string_view part, const char* what) {
  if (part.size() <= limits_.max_name_bytes) return true;
  set_error(XmlErrorKind::policy_violation, std::string(what) + " exceeds max_name_bytes (" +
                                                std::to_string(limits_.max_name_bytes) + ")");
  return false;
}

bool XmlStreamParser::Impl::add_attribute(Element& e, const XML_Char* raw_name, const XML_Char* value) {
  ExpandedName n = split_name(raw_name);
  if (!check_name(n.local, "attribute name") || !check_name(n.prefix, "attribute prefix") ||
      !check_name(n.uri, "attribute namespace"))
    return false;
  if (n.uri.empty()) {
    e.set_attr(std::string(n.local), value);
  } else if (n.uri == kXmlNs) {
    e.set_attr("xml:" + std::string(n.local), value);
  } else {
    std::string decl = "xmlns:" + std::string(n.prefix);
    if (!e.has_attr(decl)) e.set_attr(decl, std::string(n.uri));
    e.set_attr(std::string(n.prefix) + ":" + std::string(n.local), value);
  }
  return true;
}

void XmlStreamParser::Impl::namespace_decl(const XML_Char* prefix, const XML_Char* uri) {
  if (halted()) return;
  ++pending_ns_decls_;
  if (prefix && !check_name(prefix, "namespace prefix")) return;
  if (uri && !check_name(uri, "namespace name")) return;
  if (depth_ == 0 && !prefix) root_default_ns_ = uri ? uri : "";
}

void XmlStreamParser::Impl::start_element(const XML_Char* raw_name, const XML_Char** atts) {
  if (halted()) return;
  tag_end_ = event_end();
  if (!check_stanza_size(tag_end_)) return;
  std::size_t count = std::exchange(pending_ns_decls_, 0);
  for (const XML_Char** a = atts; *a; a += 2) ++count;
  if (count > limits_.max_attributes) {
    set_error(XmlErrorKind::policy_violation,
              "element exceeds max_attributes (" + std::to_string(limits_.max_attributes) + ")");
    return;
  }
  ExpandedName name = split_name(raw_name);
  if (!check_name(name.local, "element name") || !check_name(name.prefix, "element prefix") ||
      !check_name(name.uri, "element namespace"))
    return;

  if (depth_ == 0) {
    if (name.uri != kStreamsNs || name.local != "stream") {
      set_error(XmlErrorKind::invalid_namespace, "the root element must be {http://etherx.jabber.org/streams}stream");
      return;
    }
    StreamHeader header;
    header.content_ns = root_default_ns_;
    for (const XML_Char** a = atts; *a; a += 2) {
      ExpandedName n = split_name(a[0]);
      if (n.uri == kXmlNs && n.local == "lang") header.lang = a[1];
      if (!n.uri.empty()) continue;
      if (n.local == "to") header.to = a[1];
      else if (n.local == "from") header.from = a[1];
      else if (n.local == "version") header.version = a[1];
      else if (n.local == "id") header.id = a[1];
    }
    depth_ = 1;
    stream_open_ = true;
    boundary_ = tag_end_;
    header_end_ = tag_end_;
    if (!replaying_) handler_.on_stream_open(header);
    return;
  }

  const std::string& parent_ns = open_.empty() ? root_default_ns_ : open_.back().ns();
  if (name.uri.empty() && !parent_ns.empty()) {
    // Element cannot represent it: an empty ns() means "inherit the parent's".
    set_error(XmlErrorKind::invalid_namespace, "element in no namespace (xmlns='') inside a namespace");
    return;
  }
  if (name.uri == kXmlNs) {
    // It could not be re-serialized: the XML namespace cannot be a default namespace.
    set_error(XmlErrorKind::bad_namespace_prefix, "elements in the xml: namespace are not allowed");
    return;
  }
  if (depth_ > limits_.max_depth) {
    set_error(XmlErrorKind::policy_violation, "element exceeds max_depth (" + std::to_string(limits_.max_depth) + ")");
    return;
  }
  Element e{std::string(name.local), std::string(name.uri)};
  for (const XML_Char** a = atts; *a; a += 2)
    if (!add_attribute(e, a[0], a[1])) return;
  open_.push_back(std::move(e));
  ++depth_;
}

void XmlStreamParser::Impl::end_element() {
  if (halted()) return;
  if (depth_ == 1) {
    depth_ = 0;
    boundary_ = event_end();
    handler_.on_stream_close();
    return;
  }
  // An empty-element tag reports its end with a byte count of 0.
  std::uint64_t end = XML_GetCurrentByteCount(parser_) > 0 ? event_end() : tag_end_;
  if (!check_stanza_size(end)) return;
  --depth_;
  Element done = std::move(open_.back());
  open_.pop_back();
  if (!open_.empty()) {
    open_.back().nodes().emplace_back(std::move(done));
    return;
  }
  std::vector<Element>().swap(open_);  // an idle connection keeps no stanza-sized buffer
  boundary_ = end;
  in_stanza_callback_ = true;
  handler_.on_stanza(std::move(done));
  in_stanza_callback_ = false;
  if (restart_requested_) {
    restart_requested_ = false;
    restart_pending_ = true;
    restart_offset_ = end;
    XML_StopParser(parser_, XML_FALSE);
  }
}

void XmlStreamParser::Impl::character_data(std::string_view text) {
  if (halted()) return;
  if (!open_.empty()) {
    if (!check_stanza_size(event_end())) return;
    open_.back().add_text(text);
    return;
  }
  if (!is_xml_space(text)) {
    set_error(XmlErrorKind::bad_format, "text outside a stanza");
    return;
  }
  boundary_ = event_end();
}

// ---------------------------------------------------------------------------------------

XmlStreamParser::XmlStreamParser(XmlStreamHandler& handler, XmlLimits limits)
    : impl_(std::make_unique<Impl>(handler, limits)) {}
XmlStreamParser::~XmlStreamParser() = default;
XmlStreamParser::XmlStreamParser(XmlStreamParser&&) noexcept = default;
XmlStreamParser& XmlStreamParser::operator=(XmlStreamParser&&) noexcept = default;

Result<void> XmlStreamParser::feed(std::string_view bytes) { return impl_->feed(bytes); }
void XmlStreamParser::reset() { impl_->reset(); }
void XmlStreamParser::request_restart(RestartInput input) { impl_->request_restart(input); }
XmlErrorKind XmlStreamParser::last_error_kind() const { return impl_->error_kind(); }
bool XmlStreamParser::stream_open() const { return impl_->stream_open(); }

}  // namespace hearth::xmpp
