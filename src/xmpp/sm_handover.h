// Private to xmpp/: XEP-0198 sessions handed from one hearthd process to its successor
// during a graceful restart (incident I18).
//
// Why through the store and not over the admin socket: the old process can only freeze a
// session once its stream has stopped (during its drain, after the successor already took
// the listening sockets), and the successor opens the store only after the old process
// exited. The table is the one channel both see, and it is durable: if the successor
// crashes before the client resumes, the rows are still there for the next start, and
// their unacknowledged stanzas reach offline storage when the resumption window ends.
//
// Blocking (worker pool or start-up). Thread-safe; holds no state of its own.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hearth::store {
class Store;
}

namespace hearth::xmpp {

struct HandedOverSession {
  std::string sm_id;
  std::string localpart, domain, resource;
  std::uint32_t handled = 0;  // client stanzas the server handled (<a h/> to the client)
  std::uint32_t sent = 0;     // stanzas numbered to the client
  std::uint32_t acked = 0;    // the client's last h
  std::vector<std::string> unacked;  // oldest first; the client has not acknowledged them
  bool available = false;
  int priority = 0;
  std::string presence;  // the last available presence broadcast (serialised)
  bool carbons = false;
  bool roster_pushes = false;
  std::int64_t saved_ms = 0;
};

class SmHandoverStore {
 public:
  explicit SmHandoverStore(store::Store& store) : store_(store) {}
  Result<void> migrate();
  // Durable when it returns.
  Result<void> save(const HandedOverSession& s);
  Result<std::vector<HandedOverSession>> load_all();
  Result<void> remove(std::string_view sm_id);

  // Limits when loading (a corrupt or hostile row must not blow up start-up).
  static constexpr std::size_t kMaxStanzas = 10000;

 private:
  store::Store& store_;
};

}  // namespace hearth::xmpp
