// Fuzzes JID parsing and PRECIS/IDNA preparation: must never crash, and a parsed JID's
// full() must parse back to the same JID (the canonical form is a fixed point).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "xmpp/jid.h"

using hearth::xmpp::Jid;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto jid = Jid::parse(text)) {
    auto again = Jid::parse(jid->full());
    if (!again || !(*again == *jid)) __builtin_trap();
    if (jid->domain.empty()) __builtin_trap();
  }
  // Each preparation is idempotent on its own output.
  for (auto prep : {&hearth::xmpp::prep_localpart, &hearth::xmpp::prep_domain, &hearth::xmpp::prep_resource}) {
    if (auto once = prep(text)) {
      auto twice = prep(*once);
      if (!twice || *twice != *once) __builtin_trap();
    }
  }
  return 0;
}
