#include "xmpp/caps.h"

#include <openssl/sha.h>
#include <sodium.h>

#include <algorithm>
#include <tuple>

namespace hearth::xmpp {

std::string caps_ver(std::vector<DiscoIdentity> identities, std::vector<std::string> features) {
  std::sort(identities.begin(), identities.end(), [](const DiscoIdentity& a, const DiscoIdentity& b) {
    return std::tie(a.category, a.type, a.lang, a.name) < std::tie(b.category, b.type, b.lang, b.name);
  });
  std::sort(features.begin(), features.end());
  features.erase(std::unique(features.begin(), features.end()), features.end());
  std::string s;
  for (const auto& i : identities) s += i.category + "/" + i.type + "/" + i.lang + "/" + i.name + "<";
  for (const auto& f : features) s += f + "<";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  std::string out(sodium_base64_ENCODED_LEN(sizeof digest, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), digest, sizeof digest, sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

}  // namespace hearth::xmpp
