// The XML layer of XMPP: a small owned element tree for stanzas (Element) and an
// incremental, restricted-XML stream parser built on expat (XmlStreamParser).
//
// Threads: nothing here is thread-safe. An XmlStreamParser belongs to one connection and
// is used only on that connection's shard thread. Elements are plain values; they may be
// moved to another shard (e.g. inside a delivery message) but not shared without copying.
//
// Restricted XML (RFC 6120 §11.1): DOCTYPE, entity declarations, processing instructions
// and comments are rejected; the only entity references are the five predefined ones and
// character references; input must be UTF-8 and contain only XML 1.0 characters.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/error.h"

namespace hearth::xmpp {

inline constexpr std::string_view kStreamsNs = "http://etherx.jabber.org/streams";
inline constexpr std::string_view kClientNs = "jabber:client";
inline constexpr std::string_view kServerNs = "jabber:server";
inline constexpr std::string_view kXmlNs = "http://www.w3.org/XML/1998/namespace";

class Node;
template <bool Const>
class ChildRange;

struct Attribute {
  std::string name;  // unprefixed, or a qualified name such as "xml:lang"
  std::string value;

  friend bool operator==(const Attribute&, const Attribute&) = default;
};

// One XML element with its namespace resolved: no prefixes are stored for element
// names. Cheap to move (a few vectors and strings); copies are deep.
//
// Namespaces: ns() is the namespace URI. An empty ns() means "inherit the parent's
// namespace": serialization then emits no xmlns, and add_child() fills it in from the
// parent, so `Element("body")` added to a jabber:client <message/> becomes
// {jabber:client}body. Elements produced by XmlStreamParser always carry their resolved
// namespace (the parser rejects xmlns='' inside a namespace, which this model cannot
// represent).
//
// Attributes keep their qualified name. "xml:lang" is stored as is. An attribute in any
// other namespace (rare in XMPP) is stored as "p:local" together with an "xmlns:p"
// attribute on the same element, so that the element re-serializes well-formed. An
// attribute named "xmlns" is never serialized (ns() decides the default namespace).
//
// Names passed in are not validated: callers pass valid XML names (parsed names are
// valid by construction). Values and text may contain any string; they are escaped on
// output. Strings must be UTF-8 with only XML 1.0 characters, or the output will be
// rejected by the peer.
class Element {
 public:
  explicit Element(std::string name, std::string ns = {});

  const std::string& name() const { return name_; }
  const std::string& ns() const { return ns_; }
  void set_ns(std::string ns) { ns_ = std::move(ns); }
  // Changes namespace `from` to `to` in this element and all its descendants: a stanza
  // routed from c2s to s2s moves from jabber:client to jabber:server, its <body/> too.
  void replace_ns(std::string_view from, std::string_view to);

  // "" if absent; use has_attr() to tell an absent attribute from an empty one.
  std::string_view attr(std::string_view name) const;
  bool has_attr(std::string_view name) const;
  // Replaces the value if the attribute exists, appends it otherwise.
  Element& set_attr(std::string name, std::string value);
  // Returns whether an attribute was removed.
  bool remove_attr(std::string_view name);
  const std::vector<Attribute>& attributes() const { return attrs_; }

  // Appends `child` (filling in its empty namespaces from this element's ns()) and
  // returns a reference to it, valid until the next change to this element's nodes.
  Element& add_child(Element child);
  // Appends text, merged into the last node if that is text. Empty text is ignored.
  void add_text(std::string_view text);

  // The first child element with this local name, and with namespace `ns` unless `ns`
  // is empty (then any namespace matches). nullptr if none.
  const Element* child(std::string_view name, std::string_view ns = {}) const;
  Element* child(std::string_view name, std::string_view ns = {});

  // Child elements only, in document order (text nodes skipped).
  ChildRange<true> children() const;
  ChildRange<false> children();
  // All nodes (elements and text) in document order.
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }

  // The concatenation of the direct text children (not of descendants).
  std::string text() const;

  // The element as XML, with xmlns emitted if ns() is non-empty.
  std::string serialize() const;
  // Appends the element to `out`. xmlns='...' is emitted only where an element's
  // namespace differs from its parent's; `parent_ns` is the namespace in scope at the
  // insertion point (for a stanza: the stream's content namespace, jabber:client or
  // jabber:server). Never emits prefixes except those of stored qualified attribute
  // names (xml:lang). Text escapes & < > (and \r as a character reference); attribute
  // values are single-quoted and escape & < > ' " and \t \n \r.
  void serialize_to(std::string& out, std::string_view parent_ns) const;

  // Structural equality: name, ns, attributes in order, nodes in order.
  friend bool operator==(const Element& a, const Element& b);

 private:
  std::string name_;
  std::string ns_;
  std::vector<Attribute> attrs_;
  std::vector<Node> nodes_;
};

// A child of an Element: either an element or a text node.
class Node {
 public:
  explicit Node(Element element) : value_(std::move(element)) {}
  explicit Node(std::string text) : value_(std::move(text)) {}

  bool is_element() const { return value_.index() == 0; }
  bool is_text() const { return value_.index() == 1; }
  // Preconditions: is_element() / is_text() respectively.
  const Element& element() const { return std::get<0>(value_); }
  Element& element() { return std::get<0>(value_); }
  const std::string& text() const { return std::get<1>(value_); }
  std::string& text() { return std::get<1>(value_); }

  friend bool operator==(const Node& a, const Node& b) { return a.value_ == b.value_; }

 private:
  std::variant<Element, std::string> value_;
};

// A forward range over the element children of an Element (text nodes skipped).
template <bool Const>
class ChildRange {
  using Nodes = std::conditional_t<Const, const std::vector<Node>, std::vector<Node>>;
  using NodeIt = decltype(std::declval<Nodes&>().begin());
  using Ref = std::conditional_t<Const, const Element&, Element&>;

 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Element;
    using difference_type = std::ptrdiff_t;
    using reference = Ref;
    using pointer = std::remove_reference_t<Ref>*;

    iterator() = default;
    iterator(NodeIt it, NodeIt end) : it_(it), end_(end) { skip_text(); }
    Ref operator*() const { return it_->element(); }
    pointer operator->() const { return &it_->element(); }
    iterator& operator++() {
      ++it_;
      skip_text();
      return *this;
    }
    iterator operator++(int) {
      iterator old = *this;
      ++*this;
      return old;
    }
    friend bool operator==(const iterator& a, const iterator& b) { return a.it_ == b.it_; }

   private:
    void skip_text() {
      while (it_ != end_ && !it_->is_element()) ++it_;
    }
    NodeIt it_{};
    NodeIt end_{};
  };

  explicit ChildRange(Nodes& nodes) : nodes_(&nodes) {}
  iterator begin() const { return iterator(nodes_->begin(), nodes_->end()); }
  iterator end() const { return iterator(nodes_->end(), nodes_->end()); }
  bool empty() const { return begin() == end(); }

 private:
  Nodes* nodes_;
};

inline ChildRange<true> Element::children() const { return ChildRange<true>(nodes_); }
inline ChildRange<false> Element::children() { return ChildRange<false>(nodes_); }

// Escapes text for use in an attribute value (single- or double-quoted) or element
// content: & < > ' " and \t \n \r. For the few places that write XML by hand (stream
// headers, errors, archive results); everything else goes through Element.
std::string xml_escape(std::string_view s);

// Parses one element serialised by Element::serialize() (stored stanzas, vCards),
// under the same restricted-XML rules and limits as a stream; nullopt if it is not one.
std::optional<Element> parse_element(std::string_view serialized);

// Why a stream failed; each maps to the RFC 6120 §4.9.3 stream error condition that the
// session sends before closing (see stream_error_condition()).
enum class XmlErrorKind {
  none,
  not_well_formed,       // expat syntax error, invalid UTF-8, non-XML 1.0 character
  restricted_xml,        // DOCTYPE, entity declaration or reference, PI, comment
  policy_violation,      // an XmlLimits limit; bytes pipelined after a STARTTLS restart
  invalid_namespace,     // root element is not {http://etherx.jabber.org/streams}stream;
                         // an element in no namespace (xmlns='') inside a namespace
  bad_namespace_prefix,  // an undeclared or illegally (re)declared prefix, or an xml: element
  bad_format,            // non-whitespace text directly inside the stream element
};

// "not-well-formed", "restricted-xml", "policy-violation", "invalid-namespace",
// "bad-namespace-prefix", "bad-format"; "" for none.
std::string_view stream_error_condition(XmlErrorKind kind);

struct XmlLimits {
  // Bytes from the start of a first-level element (a stanza) to the end of its end tag,
  // also applied to the stream header; whitespace between stanzas is not counted.
  std::size_t max_stanza_bytes = 256 * 1024;
  // Element nesting: a stanza is depth 1, its children depth 2, and so on.
  int max_depth = 32;
  // Attributes plus namespace declarations on one element.
  std::size_t max_attributes = 64;
  // Each of: a local name, a prefix, a namespace URI.
  std::size_t max_name_bytes = 1024;
};

// The opening <stream:stream> tag. Only delivered for a root element named "stream" in
// the http://etherx.jabber.org/streams namespace (any prefix); anything else fails the
// stream with invalid_namespace. The session validates the rest (content_ns against
// c2s/s2s, to, version).
struct StreamHeader {
  std::string content_ns;  // the default namespace declared on the stream element
  std::string to;
  std::string from;
  std::string version;
  std::string id;
  std::string lang;  // xml:lang
};

// Receives the events of one stream direction. Callbacks run synchronously inside
// XmlStreamParser::feed(), on the connection's shard thread, and must not call feed(),
// reset() or destroy the parser; to restart the stream they call request_restart().
class XmlStreamHandler {
 public:
  virtual ~XmlStreamHandler() = default;
  virtual void on_stream_open(const StreamHeader& header) = 0;
  // A complete first-level child of the stream (a stanza, <stream:features/>,
  // <stream:error/>, a SASL or STARTTLS element, ...), delivered by the feed() call that
  // received its last byte.
  virtual void on_stanza(Element&& stanza) = 0;
  // </stream:stream> was received. Only whitespace may follow.
  virtual void on_stream_close() = 0;
};

// What happens to bytes that follow a restart point in the same feed() chunk.
enum class RestartInput {
  // Parsed by the new parser (after SASL success a client may send the new stream
  // header at once).
  parse_rest,
  // Must be none: feed() fails with policy_violation otherwise. For <starttls/>, where
  // plaintext pipelined before the TLS handshake must never be read as part of the
  // encrypted stream.
  reject_rest,
};

// An incremental parser for one direction of an XMPP stream.
//
// Lifecycle: construct with a handler (which must outlive the parser) and limits; call
// feed() with bytes as they arrive, in chunks of any size and split anywhere; every
// complete stanza is delivered before feed() returns (expat's reparse deferral is off).
// For a stream restart (after STARTTLS and after SASL success) either call reset()
// between feed() calls, or call request_restart() from on_stanza(): the parser then
// stops after that stanza's end tag and continues with a fresh parser, which expects a
// new stream header.
//
// Errors: feed() returns an Error (Errc::resource_exhausted for policy_violation,
// Errc::invalid_argument otherwise) whose message names the problem (and the limit,
// for limits); last_error_kind() says which stream error to send. After an error the
// parser stays failed (feed() returns the same error, no more callbacks) until reset().
//
// Moving a parser between feed() calls is allowed (the handler stays the same); a
// moved-from parser may only be destroyed or assigned to.
//
// Memory: feed() hands expat at most 16 KiB at a time and checks the stanza size limit
// after each piece, so buffered input stays within max_stanza_bytes plus 16 KiB whatever
// the chunk size.
class XmlStreamParser {
 public:
  explicit XmlStreamParser(XmlStreamHandler& handler, XmlLimits limits = {});
  ~XmlStreamParser();
  XmlStreamParser(XmlStreamParser&&) noexcept;
  XmlStreamParser& operator=(XmlStreamParser&&) noexcept;
  XmlStreamParser(const XmlStreamParser&) = delete;
  XmlStreamParser& operator=(const XmlStreamParser&) = delete;

  Result<void> feed(std::string_view bytes);

  // Discards all state (including a failure) and expects a new stream header. Not to
  // be called from inside a handler callback (use request_restart()).
  void reset();

  // Only meaningful inside on_stanza(): after that stanza, restart the stream as
  // reset() would, treating the rest of the current feed() chunk as `input` says.
  // Ignored when called elsewhere.
  void request_restart(RestartInput input = RestartInput::parse_rest);

  // XmlErrorKind::none unless the parser has failed.
  XmlErrorKind last_error_kind() const;
  // Whether on_stream_open() has been delivered since construction or the last restart.
  bool stream_open() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::xmpp
