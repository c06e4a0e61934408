// Private to xmpp/: the table of IQ payload handlers, one entry per protocol feature
// (style habit 11: one file per XEP, registered with its metadata).
//
// An entry answers get/set requests whose single payload is <name xmlns=ns/> addressed to
// the account itself (no 'to', or the user's bare JID), to the server's domain, or both.
// Handlers run on the worker pool (they may block on storage) and answer through
// IqReply. Registration happens at start-up, before any session exists; lookups are then
// read-only and need no lock.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "xmpp/xml.h"

namespace hearth::xmpp {

struct SessionIdentity;

// account: the user's own bare JID; server: the domain; peer: another local account's bare
// JID, answered by the server on that account's behalf (PEP, vCards).
enum class IqTarget { account = 1, server = 2, both = 3, peer = 4, account_or_peer = 5, any = 7 };

// What a handler sends back: exactly one of result() or error().
class IqReply {
 public:
  virtual ~IqReply() = default;
  // An iq result carrying `payload` (or nothing).
  virtual void result(std::optional<Element> payload = std::nullopt) = 0;
  virtual void error(std::string_view type, std::string_view condition, std::string_view text = {}) = 0;
  // An error that also carries an application-specific condition element (RFC 6120
  // §8.3.2), such as XEP-0060's <precondition-not-met/>.
  virtual void error_with(std::string_view type, std::string_view condition, Element app_condition,
                          std::string_view text = {}) {
    (void)app_condition;
    error(type, condition, text);
  }
};

// The one mapping from a storage error to an XMPP stanza error (style habit 4): overload,
// a full disk or quota, and read-only mode (store/read_only.h) are <resource-constraint/>
// of type wait, so the client retries later; read-only mode says why in the text.
inline void reply_storage_error(IqReply& reply, const Error& e) {
  if (e.code == Errc::read_only) return reply.error("wait", "resource-constraint", e.message);
  if (e.code == Errc::unavailable || e.code == Errc::resource_exhausted)
    return reply.error("wait", "resource-constraint", {});
  reply.error("wait", "internal-server-error", {});
}
// The same mapping for message and presence errors: {type, condition}.
inline std::pair<std::string_view, std::string_view> storage_error_condition(const Error& e) {
  if (e.code == Errc::read_only || e.code == Errc::unavailable || e.code == Errc::resource_exhausted)
    return {"wait", "resource-constraint"};
  return {"wait", "internal-server-error"};
}

// `to` is the bare JID the request was addressed to (the user's, or the domain).
using IqHandler = std::function<void(const SessionIdentity& me, const std::string& to, const Element& iq,
                                     const Element& payload, IqReply& reply)>;

struct IqEntry {
  std::string ns;
  std::string name;  // payload element, usually "query"
  IqTarget target;
  IqHandler handler;
  // Disco features this entry adds to the server's (and account's) disco#info.
  std::vector<std::string> features;
};

class IqTable {
 public:
  void add(IqEntry entry) { entries_.push_back(std::move(entry)); }
  const IqEntry* find(std::string_view ns, std::string_view name, IqTarget target) const {
    for (const auto& e : entries_)
      if (e.ns == ns && e.name == name && (static_cast<int>(e.target) & static_cast<int>(target))) return &e;
    return nullptr;
  }
  std::vector<std::string> features(IqTarget target) const {
    std::vector<std::string> out;
    for (const auto& e : entries_)
      if (static_cast<int>(e.target) & static_cast<int>(target))
        out.insert(out.end(), e.features.begin(), e.features.end());
    return out;
  }

 private:
  std::vector<IqEntry> entries_;
};

}  // namespace hearth::xmpp
