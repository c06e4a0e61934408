#include "xmpp/mod_extdisco.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <fmt/format.h>

#include "core/clock.h"
#include "xmpp/forms.h"
#include "xmpp/im.h"
#include "xmpp/jid.h"

namespace hearth::xmpp {
namespace {

struct Service {
  std::string type, transport;
  int port;
  bool restricted;  // needs credentials (TURN)
};

std::vector<Service> services_of(const ExternalServicesOptions& o) {
  std::vector<Service> out = {{"stun", "udp", o.port, false}};
  if (!o.secret.empty()) {
    out.push_back({"turn", "udp", o.port, true});
    out.push_back({"turn", "tcp", o.port, true});
    if (o.tls_port > 0) out.push_back({"turns", "tcp", o.tls_port, true});
  }
  return out;
}

Element service_element(const ExternalServicesOptions& o, const Service& s, const std::string& user,
                        std::int64_t now_ms) {
  Element e("service", std::string(kExtDiscoNs));
  e.set_attr("type", s.type);
  e.set_attr("host", o.host);
  e.set_attr("port", std::to_string(s.port));
  e.set_attr("transport", s.transport);
  if (s.restricted) {
    std::int64_t expires = now_ms / 1000 + o.ttl_seconds;
    auto creds = turn_credentials(o.secret, user, expires);
    e.set_attr("restricted", "1");
    e.set_attr("username", creds.username);
    e.set_attr("password", creds.password);
    e.set_attr("expires", format_delay_stamp(expires * 1000));
  }
  return e;
}

}  // namespace

TurnCredentials turn_credentials(std::string_view secret, std::string_view user, std::int64_t expires_unix) {
  TurnCredentials c;
  c.username = fmt::format("{}:{}", expires_unix, user);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(c.username.data()), c.username.size(), mac, &len);
  c.password.assign(sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(c.password.data(), c.password.size(), mac, len, sodium_base64_VARIANT_ORIGINAL);
  c.password.resize(std::char_traits<char>::length(c.password.c_str()));
  return c;
}

void register_external_services(IqTable& table, Clock& clock, ExternalServicesOptions options) {
  if (options.host.empty()) return;
  Clock* c = &clock;
  table.add({std::string(kExtDiscoNs), "services", IqTarget::server,
             [c, options](const SessionIdentity& me, const std::string&, const Element& iq, const Element& payload,
                          IqReply& reply) {
               if (iq.attr("type") != "get") return reply.error("cancel", "bad-request", "services are fetched with get");
               std::string_view type = payload.attr("type");
               Element out("services", std::string(kExtDiscoNs));
               if (!type.empty()) out.set_attr("type", std::string(type));
               for (const auto& s : services_of(options))
                 if (type.empty() || type == s.type) out.add_child(service_element(options, s, me.bare, c->now_ms()));
               reply.result(std::move(out));
             },
             {std::string(kExtDiscoNs)}});
  table.add({std::string(kExtDiscoNs), "credentials", IqTarget::server,
             [c, options](const SessionIdentity& me, const std::string&, const Element& iq, const Element& payload,
                          IqReply& reply) {
               if (iq.attr("type") != "get") return reply.error("cancel", "bad-request", "credentials are fetched with get");
               const Element* want = payload.child("service", kExtDiscoNs);
               if (!want) return reply.error("modify", "bad-request", "name the service");
               for (const auto& s : services_of(options)) {
                 if (want->attr("host") != options.host || want->attr("type") != s.type || !s.restricted) continue;
                 if (!want->attr("port").empty() && want->attr("port") != std::to_string(s.port)) continue;
                 Element out("credentials", std::string(kExtDiscoNs));
                 out.add_child(service_element(options, s, me.bare, c->now_ms()));
                 return reply.result(std::move(out));
               }
               reply.error("cancel", "item-not-found", "no such service needs credentials");
             },
             {}});
}

std::optional<Element> server_info_form(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& addresses) {
  bool any = false;
  for (const auto& [kind, uris] : addresses) any |= !uris.empty();
  if (!any) return std::nullopt;
  Element x = make_form("result", "http://jabber.org/network/serverinfo");
  for (const auto& [kind, uris] : addresses)
    if (!uris.empty()) x.add_child(form_field(kind + "-addresses", "list-multi", uris));
  return x;
}

}  // namespace hearth::xmpp
