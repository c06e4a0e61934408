// Private to xmpp/: XEP-0115 entity capabilities of the server itself.
#pragma once

#include <string>
#include <vector>

namespace hearth::xmpp {

struct DiscoIdentity {
  std::string category, type, lang, name;
};

// The verification string (XEP-0115 §5.1): SHA-1 over "category/type/lang/name<"... then
// "feature<"..., each list sorted, base64-encoded. No extended info (data forms).
std::string caps_ver(std::vector<DiscoIdentity> identities, std::vector<std::string> features);

}  // namespace hearth::xmpp
