// Fuzzes the SCRAM and PLAIN server mechanisms with arbitrary client messages.
// Input: one selector byte, then the first client message, '\n', the second one.
// Selector bits: 0 SHA-1, 1 -PLUS, 2 channel binding offered, 3 PLAIN, 4 no initial
// response. Credentials: user "user", password "pencil", fixed salt; the server nonce is
// fixed ("SERVER") so seeds can hold complete valid exchanges.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "xmpp/sasl.h"

namespace {

using hearth::Errc;
using hearth::Result;
using hearth::accounts::ScramCredentials;
using hearth::accounts::ScramHash;
using namespace hearth::xmpp;

class StubCredentials : public SaslCredentials {
 public:
  Result<ScramCredentials> scram(std::string_view localpart, ScramHash hash) override {
    if (localpart != "user") return hearth::fail(Errc::not_found, "no such user");
    return hearth::accounts::derive_scram_credentials(hash, "pencil", "0123456789abcdef", 16);
  }
  Result<void> verify_plain(std::string_view localpart, std::string_view password) override {
    if (localpart == "user" && password == "pencil") return hearth::ok();
    return hearth::fail(Errc::unauthenticated, "bad");
  }
};

void check(const SaslMechanism& mechanism, const SaslStep& step) {
  if (step.kind == SaslStep::Kind::success && mechanism.authenticated_localpart() != "user") __builtin_trap();
  if (step.kind != SaslStep::Kind::success && !mechanism.authenticated_localpart().empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const unsigned selector = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t newline = rest.find('\n');
  const std::string_view first = rest.substr(0, newline);
  const std::string_view second = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);

  StubCredentials credentials;
  ChannelBinding cb;
  if (selector & 4) {
    cb.offered_types = {"tls-exporter", "tls-server-end-point"};
    cb.data = [](std::string_view type) -> Result<std::string> { return std::string(32, type.size() > 12 ? 'S' : 'E'); };
  }
  std::unique_ptr<SaslMechanism> mechanism;
  if (selector & 8) {
    mechanism = std::make_unique<PlainServer>(credentials);
  } else {
    mechanism = std::make_unique<ScramServer>((selector & 1) ? ScramHash::sha1 : ScramHash::sha256, (selector & 2) != 0,
                                              cb, credentials, "fuzz-secret", 16, [] { return "SERVER"; });
  }
  const bool has_initial = (selector & 16) == 0;
  SaslStep step = mechanism->start(has_initial ? first : std::string_view(), has_initial);
  check(*mechanism, step);
  if (!has_initial && step.kind == SaslStep::Kind::challenge) {
    step = mechanism->step(first);
    check(*mechanism, step);
  }
  if (step.kind == SaslStep::Kind::challenge) {
    step = mechanism->step(second);
    check(*mechanism, step);
  }
  step = mechanism->step(second);  // always after the end of the exchange
  if (step.kind != SaslStep::Kind::failure) __builtin_trap();
  return 0;
}
