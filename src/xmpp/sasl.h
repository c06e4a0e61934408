// Server side of SASL for XMPP (RFC 6120 §6): SCRAM-SHA-1/-256 with and without channel
// binding (RFC 5802, RFC 7677, RFC 5929, RFC 9266), SCRAM downgrade protection
// (XEP-0474) and PLAIN (RFC 4616).
//
// Protocol-agnostic: a mechanism takes and returns raw bytes; the session does the base64
// of <auth/>, <response/>, <challenge/> and <success/> payloads, maps a SaslStep to those
// elements, and decides what an authzid may be (invalid-authzid is the session's call).
//
// Lifecycle: the session picks a name from offered_sasl_mechanisms(), builds the mechanism
// with make_sasl_mechanism() (or a constructor), calls start() once with the <auth/>
// payload, then step() once per <response/> until a step returns success or failure.
// After that any further step() fails with malformed-request. authenticated_localpart()
// is meaningful only after success. An <abort/> is the session's business: it just drops
// the mechanism.
//
// Threads: a mechanism instance belongs to one connection and is NOT thread-safe. start()
// and step() may call SaslCredentials, which BLOCKS (store reads, argon2id for PLAIN), so
// the session runs them on net/'s worker pool, never on a shard's event loop. The free
// functions here are thread-safe.
//
// Usernames: the SCRAM `n=` name and the PLAIN authcid are the XMPP localpart. They are
// prepared with SASLprep (RFC 4013, unassigned code points refused) and then PRECIS
// UsernameCaseMapped (prep_localpart), so "Juliet" authenticates as "juliet". A name that
// fails preparation fails authentication with not-authorized. PLAIN passwords get
// SASLprep too; SCRAM passwords are prepared by the client, so passwords given to
// accounts::create_user / set_password must already have gone through sasl_prep() for
// SCRAM and PLAIN to agree.
//
// Unknown users: ScramServer answers an unknown user with a server-first message of the
// same shape, a salt that is stable per (secret, hash, username) and the configured fake
// iteration count, then fails with not-authorized at the proof, exactly like a wrong
// password, so the exchange does not reveal which accounts exist.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "accounts/accounts.h"
#include "core/error.h"

namespace hearth::xmpp {

// RFC 6120 §6.5 failure conditions.
enum class SaslFailure {
  aborted,
  account_disabled,
  credentials_expired,
  encryption_required,
  incorrect_encoding,
  invalid_authzid,
  invalid_mechanism,
  malformed_request,
  mechanism_too_weak,
  not_authorized,
  temporary_auth_failure,
};

// The element name of the condition, e.g. "not-authorized".
std::string_view sasl_failure_condition(SaslFailure failure);

// One answer of a mechanism to the client.
struct SaslStep {
  enum class Kind { challenge, success, failure };

  Kind kind = Kind::failure;
  // challenge / success: raw bytes (the session base64-encodes; empty success data is
  // sent as an empty <success/>).
  std::string data;
  // failure only.
  SaslFailure failure = SaslFailure::not_authorized;
  // failure only: optional human-readable <text/>; never reveals whether a user exists.
  std::string text;

  static SaslStep challenge(std::string data);
  static SaslStep success(std::string data = {});
  static SaslStep fail(SaslFailure failure, std::string text = {});
};

// Implemented by the session on top of accounts::Accounts for the connection's domain.
// Both calls BLOCK.
class SaslCredentials {
 public:
  virtual ~SaslCredentials() = default;
  // The stored SCRAM verifier for `localpart` (already prepared). Errc::not_found (or
  // unauthenticated, permission_denied, expired, invalid_argument) makes ScramServer run
  // the unknown-user path; any other error is a temporary-auth-failure.
  virtual Result<accounts::ScramCredentials> scram(std::string_view localpart, accounts::ScramHash hash) = 0;
  // ok() when `password` (SASLprep'd) is right for `localpart`. unauthenticated or
  // not_found → not-authorized, permission_denied → account-disabled, expired →
  // credentials-expired, other errors → temporary-auth-failure.
  virtual Result<void> verify_plain(std::string_view localpart, std::string_view password) = 0;
};

// TLS channel-binding data, supplied by net/ for the connection.
struct ChannelBinding {
  // Types the server offers, in preference order, e.g. {"tls-exporter",
  // "tls-server-end-point"}; empty when the connection is not TLS (or no type is
  // available), in which case no -PLUS mechanism is offered.
  std::vector<std::string> offered_types;
  // The raw channel-binding data for one of offered_types (RFC 5929 / RFC 9266).
  std::function<Result<std::string>(std::string_view type)> data;
};

// Base64 (RFC 4648, padded) of SASL payloads and SCRAM attributes; decoding skips
// whitespace and answers false for anything else that is not base64.
std::string sasl_base64_encode(std::string_view bytes);
bool sasl_base64_decode(std::string_view text, std::string& out);

// What the server advertised on this stream before the client picked a mechanism: the
// mechanism list of the SASL profile in use (RFC 6120 <mechanisms/> or XEP-0388
// <authentication/>) and the XEP-0440 channel-binding types (empty when <sasl-channel-binding/>
// was not sent).
struct AdvertisedSasl {
  std::vector<std::string> mechanisms;
  std::vector<std::string> channel_binding_types;
};

// XEP-0474 (SASL SCRAM Downgrade Protection, version 0.5.0) §"Server Sends Downgrade
// Protection Hash": S is the advertised mechanisms sorted by octets and joined by 0x1E;
// when channel-binding types were advertised, 0x1F and the types sorted and joined by
// 0x1E follow. The result is base64(H(S)), H being the SCRAM mechanism's hash. The client
// recomputes it from what it saw: a list a man in the middle trimmed gives another value,
// and since the attribute is part of the AuthMessage the client proof covers it.
std::string scram_downgrade_protection_hash(accounts::ScramHash hash, const AdvertisedSasl& advertised);

class SaslMechanism {
 public:
  virtual ~SaslMechanism() = default;

  // Tells the mechanism what was advertised (XEP-0474); call before start(). Mechanisms
  // without such an attribute ignore it.
  virtual void set_advertised(const AdvertisedSasl& advertised) { (void)advertised; }

  // The IANA name, e.g. "SCRAM-SHA-256-PLUS".
  virtual std::string_view mechanism_name() const = 0;
  // The <auth/> payload. has_initial is false when <auth/> carried no initial response
  // (the mechanism then answers with an empty challenge); an initial response of "="
  // is has_initial with empty bytes.
  virtual SaslStep start(std::string_view initial_response, bool has_initial) = 0;
  // The payload of one <response/>.
  virtual SaslStep step(std::string_view response) = 0;
  // The prepared localpart; empty until success.
  virtual std::string authenticated_localpart() const = 0;
  // The authorization identity the client asked for (decoded, unvalidated); empty if none.
  virtual std::string authzid() const { return {}; }
};

// RFC 5802 / RFC 7677 server. Iteration count and salt come from the stored credentials.
class ScramServer final : public SaslMechanism {
 public:
  // Returns the server part of the nonce; tests inject the RFC example nonces. The default
  // is 24 random bytes in base64.
  using NonceSource = std::function<std::string()>;

  // plus: this is the -PLUS variant (channel binding required, one of cb.offered_types).
  // For a non-PLUS variant, a non-empty cb.offered_types means the server advertises
  // -PLUS, so a client flag "y" is a downgrade and fails. fake_salt_secret keys the
  // unknown-user salts (a per-server secret; not the salts of real users).
  ScramServer(accounts::ScramHash hash, bool plus, ChannelBinding cb, SaslCredentials& credentials,
              std::string_view fake_salt_secret, int fake_iterations = 4096, NonceSource server_nonce = {});

  std::string_view mechanism_name() const override;
  SaslStep start(std::string_view initial_response, bool has_initial) override;
  SaslStep step(std::string_view response) override;
  std::string authenticated_localpart() const override;
  std::string authzid() const override { return authzid_; }
  // Adds the XEP-0474 attribute "h" to the server-first-message (the RFC 5802 extension
  // slot after i=). Without this call no "h" is sent.
  void set_advertised(const AdvertisedSasl& advertised) override;

 private:
  enum class Stage { not_started, client_first, client_final, done };

  SaslStep client_first(std::string_view message);
  SaslStep client_final(std::string_view message);
  SaslStep finish(SaslFailure failure, std::string text);

  accounts::ScramHash hash_;
  bool plus_;
  ChannelBinding cb_;
  SaslCredentials& credentials_;
  std::string fake_salt_secret_;
  int fake_iterations_;
  NonceSource server_nonce_;

  Stage stage_ = Stage::not_started;
  std::string gs2_header_;         // as sent, e.g. "p=tls-exporter,,"
  std::string cb_data_;            // raw channel-binding data for p=
  std::string client_first_bare_;  // for AuthMessage
  std::string server_first_;
  std::string downgrade_hash_;     // XEP-0474 "h" value; empty: not sent
  std::string nonce_;              // client nonce + server nonce
  std::string localpart_;          // prepared
  std::string authzid_;
  accounts::ScramCredentials stored_;
  bool unknown_user_ = false;
  bool authenticated_ = false;
};

// RFC 4616 PLAIN: "[authzid] NUL authcid NUL passwd", each part at most 255 bytes of
// UTF-8. Offer it only over TLS.
class PlainServer final : public SaslMechanism {
 public:
  explicit PlainServer(SaslCredentials& credentials) : credentials_(credentials) {}

  std::string_view mechanism_name() const override { return "PLAIN"; }
  SaslStep start(std::string_view initial_response, bool has_initial) override;
  SaslStep step(std::string_view response) override;
  std::string authenticated_localpart() const override { return localpart_; }
  std::string authzid() const override { return authzid_; }

 private:
  SaslStep authenticate(std::string_view message);

  SaslCredentials& credentials_;
  bool started_ = false;
  bool done_ = false;
  std::string localpart_;  // set on success only
  std::string authzid_;
};

// The mechanisms to advertise, strongest first: SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS
// when cb offers a type, then SCRAM-SHA-256, SCRAM-SHA-1, and PLAIN when tls.
std::vector<std::string> offered_sasl_mechanisms(bool tls, const ChannelBinding& cb);

// The mechanism for a name the client picked, or nullptr if `name` is not among
// offered_sasl_mechanisms(tls, cb) (the session answers invalid-mechanism, or
// encryption-required for PLAIN without TLS). `credentials` must outlive the mechanism.
std::unique_ptr<SaslMechanism> make_sasl_mechanism(std::string_view name, bool tls, const ChannelBinding& cb,
                                                   SaslCredentials& credentials, std::string_view fake_salt_secret,
                                                   int fake_iterations = 4096);

// RFC 4013 SASLprep (accounts/ applies it to every password it stores or checks).
using accounts::sasl_prep;

}  // namespace hearth::xmpp
