#include "xmpp/sasl2.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sodium.h>

#include <fmt/format.h>

#include "core/random.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kSmNs = "urn:xmpp:sm:3";
constexpr std::string_view kCarbonsNs = "urn:xmpp:carbons:2";
constexpr std::string_view kCsiNs = "urn:xmpp:csi:0";
constexpr std::size_t kMaxUserAgentField = 256;

bool decode_base64(std::string_view b64, std::string& out) {
  std::string compact;
  for (char c : b64)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') compact.push_back(c);
  out.assign(compact.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), compact.data(), compact.size(),
                        nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0)
    return false;
  out.resize(len);
  return true;
}

std::string hmac_sha256(std::string_view key, std::string_view label, std::string_view data) {
  std::string msg(label);
  msg += data;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), mac, &len);
  return std::string(reinterpret_cast<const char*>(mac), len);
}

}  // namespace

Result<Sasl2Request> parse_sasl2_authenticate(const Element& a) {
  Sasl2Request r;
  r.mechanism = std::string(a.attr("mechanism"));
  if (r.mechanism.empty() || r.mechanism.size() > 64) return fail(Errc::invalid_argument, "a mechanism is required");
  for (const auto& c : a.children()) {
    if (c.ns() == kSasl2Ns && c.name() == "initial-response") {
      std::string raw;
      if (!decode_base64(c.text(), raw)) return fail(Errc::invalid_argument, "the initial response is not base64");
      r.initial_response = std::move(raw);
    } else if (c.ns() == kSasl2Ns && c.name() == "user-agent") {
      r.user_agent_id = std::string(c.attr("id"));
      if (r.user_agent_id.size() > 64) return fail(Errc::invalid_argument, "the user-agent id is too long");
      if (const Element* s = c.child("software", kSasl2Ns)) r.software = s->text().substr(0, kMaxUserAgentField);
      if (const Element* d = c.child("device", kSasl2Ns)) r.device = d->text().substr(0, kMaxUserAgentField);
    } else if (c.ns() == kBind2Ns && c.name() == "bind") {
      Sasl2Request::Bind b;
      for (const auto& f : c.children()) {
        if (f.ns() == kBind2Ns && f.name() == "tag") b.tag = f.text();
        else if (f.ns() == kCarbonsNs && f.name() == "enable") b.enable_carbons = true;
        else if (f.ns() == kSmNs && f.name() == "enable") {
          b.enable_sm = true;
          b.sm_resume = f.attr("resume") == "true" || f.attr("resume") == "1";
        }
        else if (f.ns() == kCsiNs && f.name() == "inactive") b.inactive = true;
      }
      r.bind = std::move(b);
    } else if (c.ns() == kSmNs && c.name() == "resume") {
      Sasl2Request::Resume res;
      res.previd = std::string(c.attr("previd"));
      std::string_view h = c.attr("h");
      std::uint64_t v = 0;
      if (h.empty() || h.size() > 10) return fail(Errc::invalid_argument, "resume needs h");
      for (char ch : h) {
        if (ch < '0' || ch > '9') return fail(Errc::invalid_argument, "resume needs h");
        v = v * 10 + static_cast<unsigned>(ch - '0');
      }
      if (v > 0xffffffffull) return fail(Errc::invalid_argument, "h is out of range");
      res.h = static_cast<std::uint32_t>(v);
      r.resume = std::move(res);
    } else if (c.ns() == kFastNs && c.name() == "request-token") {
      r.request_token = std::string(c.attr("mechanism"));
    } else if (c.ns() == kFastNs && c.name() == "fast") {
      r.fast = true;
      auto inv = c.attr("invalidate");
      r.fast_invalidate = inv == "true" || inv == "1";
    }
  }
  return r;
}

std::optional<std::string> ht_channel_binding(std::string_view mechanism) {
  if (mechanism == "HT-SHA-256-NONE") return std::string();
  if (mechanism == "HT-SHA-256-ENDP") return std::string("tls-server-end-point");
  if (mechanism == "HT-SHA-256-EXPR") return std::string("tls-exporter");
  return std::nullopt;
}

std::string ht_initiator_proof(std::string_view token, std::string_view cb_data) {
  return hmac_sha256(token, "Initiator", cb_data);
}

std::string ht_responder_proof(std::string_view token, std::string_view cb_data) {
  return hmac_sha256(token, "Responder", cb_data);
}

std::optional<std::pair<std::string, std::string>> split_ht_message(std::string_view message) {
  auto nul = message.find('\0');
  if (nul == std::string_view::npos || nul == 0 || message.size() - nul - 1 != 32) return std::nullopt;
  return std::make_pair(std::string(message.substr(0, nul)), std::string(message.substr(nul + 1)));
}

std::string bind2_resource(std::string_view tag, std::string_view bare_jid, std::string_view user_agent_id) {
  std::string id;
  if (user_agent_id.empty()) {
    id = random_hex(6);
  } else {
    std::string seed = fmt::format("{}\n{}\n{}", bare_jid, user_agent_id, tag);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(seed.data()), seed.size(), digest);
    for (int i = 0; i < 6; ++i) id += fmt::format("{:02x}", digest[i]);
  }
  std::string t(tag.substr(0, 32));
  return t.empty() ? id : t + "." + id;
}

}  // namespace hearth::xmpp
