#include "xmpp/caps.h"

#include <openssl/sha.h>
#include <sodium.h>

#include <algorithm>
#include <tuple>

namespace hearth::xmpp {

std::string caps_ver(std::vector<DiscoIdentity> identities, std::vector<std::string> features,
                     std::vector<SubmittedForm> forms) {
  std::sort(identities.begin(), identities.end(), [](const DiscoIdentity& a, const DiscoIdentity& b) {
    return std::tie(a.category, a.type, a.lang, a.name) < std::tie(b.category, b.type, b.lang, b.name);
  });
  std::sort(features.begin(), features.end());
  features.erase(std::unique(features.begin(), features.end()), features.end());
  std::string s;
  for (const auto& i : identities) s += i.category + "/" + i.type + "/" + i.lang + "/" + i.name + "<";
  for (const auto& f : features) s += f + "<";
  std::erase_if(forms, [](const SubmittedForm& f) { return f.form_type.empty(); });
  std::sort(forms.begin(), forms.end(),
            [](const SubmittedForm& a, const SubmittedForm& b) { return a.form_type < b.form_type; });
  for (auto& form : forms) {
    s += form.form_type + "<";
    std::sort(form.fields.begin(), form.fields.end());
    for (auto& [var, values] : form.fields) {
      s += var + "<";
      std::sort(values.begin(), values.end());
      for (const auto& v : values) s += v + "<";
    }
  }
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  std::string out(sodium_base64_ENCODED_LEN(sizeof digest, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), digest, sizeof digest, sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

}  // namespace hearth::xmpp
