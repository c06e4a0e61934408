// Private to xmpp/: XEP-0004 data forms, the parts the modules need (reading a submitted
// form's fields and building fields for a form or a result).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xmpp/xml.h"

namespace hearth::xmpp {

inline constexpr std::string_view kDataFormsNs = "jabber:x:data";

// A submitted form: the FORM_TYPE and each other field's values, in document order.
struct SubmittedForm {
  std::string form_type;  // "" if the form has none
  std::vector<std::pair<std::string, std::vector<std::string>>> fields;

  // The values of `var`, or nullptr when the form does not have it.
  const std::vector<std::string>* find(std::string_view var) const;
  // The first value of `var`, or nullopt.
  std::optional<std::string> first(std::string_view var) const;
};

// Reads <x xmlns='jabber:x:data'/>. A field without 'var' or a var given twice makes the
// form invalid (nullopt); type='cancel' forms read as empty.
std::optional<SubmittedForm> read_form(const Element& x);

// <field var type><value/>...</field>; values may be empty.
Element form_field(std::string var, std::string type, const std::vector<std::string>& values = {});

// <x xmlns='jabber:x:data' type=type> with a hidden FORM_TYPE field when form_type is set.
Element make_form(std::string_view type, std::string_view form_type);

// XEP-0004 booleans: "1"/"true" and "0"/"false"; nullopt for anything else.
std::optional<bool> form_bool(std::string_view value);

}  // namespace hearth::xmpp
