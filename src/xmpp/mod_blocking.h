// Private to xmpp/: XEP-0191 blocking command (urn:xmpp:blocking), and the BlockList that
// routing asks for every stanza between an account and a contact.
//
// Protocol (the account's own requests: no 'to', or its own bare JID):
//   get <blocklist/>        the blocked JIDs as <item jid=.../>, sorted; marks the session
//                           as wanting block/unblock pushes (XEP-0191 §3.2). A set is
//                           modify/bad-request.
//   set <block>items</>     adds the JIDs. No item, an item without 'jid', any other
//                           child: modify/bad-request; a 'jid' that is not a JID:
//                           modify/jid-malformed; more than max_items blocked in total:
//                           modify/policy-violation (nothing added).
//   set <unblock>items</>   removes those JIDs (unknown ones are ignored); with no item,
//                           removes all. Errors as for <block/>.
//   Blocking is all or nothing per request. After a successful change the request is
//   answered, then `push` gets the same <block/> or <unblock/> (with canonical JIDs) as an
//   <iq type='set'/> for the owner's sessions that asked for the blocklist.
//   Storage failures: wait/internal-server-error (wait/resource-constraint when the
//   store is overloaded). The entries are also registered for the server's domain, only
//   so that the server's disco#info lists urn:xmpp:blocking (where XEP-0191 §3.1 clients
//   look); commands addressed to the domain are cancel/service-unavailable.
//
// Matching (XEP-0191 §5, as XEP-0016 §2.1): a stored item matches a contact JID
//   user@domain/resource  only that full JID
//   user@domain           that bare JID with any resource
//   domain/resource       any JID at that domain with that resource
//   domain                the domain itself and every JID at it
// The owner's own account (bare JID equal to the owner's) never matches: a user's
// resources always reach each other, even if the owner blocked its own domain.
//
// Threads: BlockList is thread-safe (one mutex over the cache and the push interest).
// Methods that return Result block on the store when the owner's list is not cached, so
// call them from net's worker pool, never from a shard thread. The cache holds the lists
// of at most max_cached_owners accounts (empty lists included); a change invalidates the
// owner's entry after it committed, and a load racing with a change is not cached.
// Schema: migrations of module "xmpp_blocking" (table xmpp_blocklist).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "xmpp/iq_table.h"
#include "xmpp/xml.h"

namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

inline constexpr std::string_view kBlockingNs = "urn:xmpp:blocking";
inline constexpr std::string_view kBlockingErrorsNs = "urn:xmpp:blocking:errors";

struct BlockingOptions {
  int max_items = 1000;                   // blocked JIDs per account
  std::size_t max_cached_owners = 10000;  // accounts whose list is kept in memory
};

// Sends `push` (an <iq type='set' id=.../> in jabber:client, without 'to') to every session
// of `owner_bare` for which BlockList::wants_pushes() is true, each with 'to' set to the
// session's full JID. Called on the worker thread that handled the request, after the
// reply was sent.
using BlockPush = std::function<void(const std::string& owner_bare, const Element& push)>;

class BlockList {
 public:
  // `store` must outlive the BlockList; its "xmpp_blocking" migrations must be applied
  // (register_blocking does it).
  BlockList(store::Store& store, BlockingOptions options = {});
  BlockList(const BlockList&) = delete;
  BlockList& operator=(const BlockList&) = delete;

  // Whether `owner_bare` ("alice@example.org") blocks `contact_jid`, which must be in
  // canonical form (a stamped 'from', or Jid::full() of a parsed 'to'): it is split, not
  // parsed again. Cheap when the owner's list is cached (no allocation).
  Result<bool> is_blocked(std::string_view owner_bare, std::string_view contact_jid);

  // The owner's blocked JIDs (canonical, sorted).
  Result<std::vector<std::string>> items(std::string_view owner_bare);

  // Changes, durable when they return; `jids` are canonical (Jid::full()). block():
  // Errc::resource_exhausted past max_items (only then: a full disk is Errc::unavailable),
  // and nothing is added.
  Result<void> block(std::string_view owner_bare, const std::vector<std::string>& jids);
  Result<void> unblock(std::string_view owner_bare, const std::vector<std::string>& jids);
  Result<void> unblock_all(std::string_view owner_bare);

  // Push interest of sessions (XEP-0191: pushes go to the resources that requested the
  // blocklist). The <blocklist/> get handler calls note_interest(); the router calls
  // session_closed() when a session ends, so the set stays bounded by live sessions.
  void note_interest(std::string_view owner_bare, std::uint64_t session_id);
  bool wants_pushes(std::string_view owner_bare, std::uint64_t session_id) const;
  void session_closed(std::string_view owner_bare, std::uint64_t session_id);

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using JidSet = std::unordered_set<std::string, Hash, std::equal_to<>>;

  Result<std::shared_ptr<const JidSet>> list(std::string_view owner_bare);
  void invalidate(std::string_view owner_bare);

  store::Store& store_;
  BlockingOptions options_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const JidSet>, Hash, std::equal_to<>> cache_;
  std::uint64_t generation_ = 0;  // bumped by every change; a load that saw it move is not cached
  std::unordered_map<std::string, std::vector<std::uint64_t>, Hash, std::equal_to<>> interest_;
};

// Applies the "xmpp_blocking" migrations (blocking; call at start-up), adds the
// {urn:xmpp:blocking}blocklist/block/unblock entries (accounts and server) with feature
// "urn:xmpp:blocking", and returns the BlockList the handlers use (routing uses the same
// one). `store` must outlive the table and the BlockList.
Result<std::shared_ptr<BlockList>> register_blocking(IqTable& table, store::Store& store, BlockPush push,
                                                     BlockingOptions options = {});

// <blocked xmlns='urn:xmpp:blocking:errors'/>: the application condition to add to the
// <error/> of a cancel/not-acceptable reply when the user sends to a JID it blocks
// (XEP-0191 §3.3).
Element blocked_condition();

}  // namespace hearth::xmpp
