// Private to xmpp/: XEP-0115 entity capabilities of the server itself.
#pragma once

#include <string>
#include <vector>

#include "xmpp/forms.h"

namespace hearth::xmpp {

struct DiscoIdentity {
  std::string category, type, lang, name;
};

// The verification string (XEP-0115 §5.1): SHA-1 over "category/type/lang/name<"... then
// "feature<"..., then each XEP-0128 extended form (sorted by FORM_TYPE; forms without one
// are skipped) as "FORM_TYPE<" and its fields sorted by var, "var<value<...", values
// sorted; base64-encoded.
std::string caps_ver(std::vector<DiscoIdentity> identities, std::vector<std::string> features,
                     std::vector<SubmittedForm> forms = {});

}  // namespace hearth::xmpp
