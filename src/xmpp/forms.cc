#include "xmpp/forms.h"

#include <set>

namespace hearth::xmpp {

const std::vector<std::string>* SubmittedForm::find(std::string_view var) const {
  for (const auto& [name, values] : fields)
    if (name == var) return &values;
  return nullptr;
}

std::optional<std::string> SubmittedForm::first(std::string_view var) const {
  const auto* values = find(var);
  if (!values || values->empty()) return std::nullopt;
  return values->front();
}

std::optional<SubmittedForm> read_form(const Element& x) {
  SubmittedForm form;
  if (x.attr("type") == "cancel") return form;
  std::set<std::string, std::less<>> seen;
  for (const auto& field : x.children()) {
    if (field.name() != "field") continue;
    std::string var(field.attr("var"));
    if (var.empty() || !seen.insert(var).second) return std::nullopt;
    std::vector<std::string> values;
    for (const auto& v : field.children())
      if (v.name() == "value") values.push_back(v.text());
    if (var == "FORM_TYPE") {
      form.form_type = values.empty() ? std::string() : values.front();
      continue;
    }
    form.fields.emplace_back(std::move(var), std::move(values));
  }
  return form;
}

Element form_field(std::string var, std::string type, const std::vector<std::string>& values) {
  Element f("field", std::string(kDataFormsNs));
  f.set_attr("var", std::move(var));
  if (!type.empty()) f.set_attr("type", std::move(type));
  for (const auto& value : values) f.add_child(Element("value", std::string(kDataFormsNs))).add_text(value);
  return f;
}

Element make_form(std::string_view type, std::string_view form_type) {
  Element x("x", std::string(kDataFormsNs));
  x.set_attr("type", std::string(type));
  if (!form_type.empty()) x.add_child(form_field("FORM_TYPE", "hidden", {std::string(form_type)}));
  return x;
}

std::optional<bool> form_bool(std::string_view value) {
  if (value == "1" || value == "true") return true;
  if (value == "0" || value == "false") return false;
  return std::nullopt;
}

}  // namespace hearth::xmpp
