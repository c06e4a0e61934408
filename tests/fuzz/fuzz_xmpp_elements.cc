// Fuzzes the parsers that read client-supplied elements after the stream parser: SASL2
// <authenticate/> requests (with HT messages), XEP-0004 forms and PEP publish requests.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "xmpp/forms.h"
#include "xmpp/sasl2.h"
#include "xmpp/xml.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto element = hearth::xmpp::parse_element(text);
  if (!element) return 0;
  if (auto request = hearth::xmpp::parse_sasl2_authenticate(*element); request && request->initial_response)
    (void)hearth::xmpp::split_ht_message(*request->initial_response);
  for (const auto& child : element->children())
    if (child.name() == "x") (void)hearth::xmpp::read_form(child);
  (void)hearth::xmpp::read_form(*element);
  return 0;
}
