// hearth::accounts — users, domains, passwords, SCRAM keys, devices and access tokens,
// invitations and registration policy.
//
// Threads: Accounts is a BLOCKING API. Every call waits on the store (write_sync /
// read_sync) and password hashing (argon2id) costs tens of milliseconds, so protocol
// modules call it from net/'s blocking worker pool, NEVER from an event-loop shard thread
// (nor from inside a store job). An Accounts object holds no mutable state of its own
// besides a lazily built dummy hash; it is safe to use from many threads at once. It keeps
// references to the Store, Clock and Logger, which must outlive it.
//
// Lifecycle: construct, then call migrate() once at start-up (Accounts::open does both).
//
// Secrets: plain passwords are never stored; the database holds an argon2id hash
// (libsodium crypto_pwhash_str) and the SCRAM-SHA-1 / SCRAM-SHA-256 StoredKey/ServerKey
// (RFC 5802) with a fresh 16-byte salt each. Access tokens and invitation tokens are
// stored as SHA-256 hashes, except the bootstrap admin invitation (see
// bootstrap_admin_invite). Error messages never contain secrets.
//
// Input: domains and localparts are ASCII-lowercased and validated here (no PRECIS yet:
// xmpp/ applies PRECIS UsernameCaseMapped before calling). Passwords are taken as bytes;
// the protocol layer applies SASLprep / OpaqueString normalisation before calling.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hearth {
class Clock;
class Logger;
}  // namespace hearth

namespace hearth::store {
class Store;
}  // namespace hearth::store

namespace hearth::accounts {

// RFC 4013 SASLprep (unassigned code points refused); invalid UTF-8, prohibited output, a
// Bidi violation or an empty result are Errc::invalid_argument. Accounts applies it to
// every password it stores or verifies, so that SCRAM (where the client prepares the
// password), PLAIN, the web and hearthctl all agree on what a password is.
Result<std::string> sasl_prep(std::string_view text);

enum class RegistrationPolicy { closed, invite, open };

// "closed" | "invite" | "open"; anything else is Errc::invalid_argument.
Result<RegistrationPolicy> parse_registration_policy(std::string_view name);
std::string_view format_registration_policy(RegistrationPolicy policy);

struct AccountsOptions {
  int scram_iterations = 4096;
  std::int64_t invite_ttl_ms = 7LL * 24 * 3600 * 1000;
  std::int64_t token_ttl_ms = 0;  // 0: access tokens do not expire
  // argon2id cost; 0 means libsodium's *_INTERACTIVE limits (2 passes, 64 MiB). Tests use
  // crypto_pwhash_OPSLIMIT_MIN / MEMLIMIT_MIN (1, 8192) to stay fast.
  std::uint64_t password_opslimit = 0;
  std::size_t password_memlimit = 0;
};

struct DomainInfo {
  std::string name;
  RegistrationPolicy registration = RegistrationPolicy::closed;
  std::int64_t created_ms = 0;
};

struct UserInfo {
  std::string domain;
  std::string localpart;
  bool admin = false;
  std::int64_t created_ms = 0;

  std::string jid() const { return localpart + "@" + domain; }
};

enum class ScramHash { sha1, sha256 };

// SCRAM verifier material (RFC 5802 §3). All byte strings are raw (not base64).
struct ScramCredentials {
  std::string salt;
  int iterations = 0;
  std::string stored_key;  // H(HMAC(SaltedPassword, "Client Key"))
  std::string server_key;  // HMAC(SaltedPassword, "Server Key")
};

// SaltedPassword = PBKDF2-HMAC-H(password, salt, iterations); pure, no I/O. The password
// must already be normalised (SASLprep) by the caller. iterations < 1 counts as 1.
ScramCredentials derive_scram_credentials(ScramHash hash, std::string_view password, std::string_view salt,
                                          int iterations);

struct Session {
  std::string device_id;
  std::string access_token;  // only returned here; the database keeps its SHA-256
};

struct TokenOwner {
  std::string domain;
  std::string localpart;
  std::string device_id;
};

struct DeviceInfo {
  std::string device_id;
  std::string display_name;
  std::int64_t created_ms = 0;
};

struct Invite {
  std::string token;  // set by create_invite / bootstrap_admin_invite only; empty in listings
  std::string domain;
  bool grants_admin = false;
  std::int64_t expires_ms = 0;
  std::string purpose;
  std::string created_by;
  std::int64_t created_ms = 0;
  bool used = false;
};

class Accounts {
 public:
  Accounts(store::Store& store, Clock& clock, Logger& logger, AccountsOptions options = {});
  ~Accounts();
  Accounts(const Accounts&) = delete;
  Accounts& operator=(const Accounts&) = delete;

  // Constructs and applies the "accounts" migrations.
  static Result<std::unique_ptr<Accounts>> open(store::Store& store, Clock& clock, Logger& logger,
                                                AccountsOptions options = {});
  // Applies the "accounts" schema migrations (idempotent).
  Result<void> migrate();

  // --- domains
  // Inserts the domain or updates its policy.
  Result<void> ensure_domain(std::string_view domain, RegistrationPolicy policy);
  Result<std::vector<DomainInfo>> list_domains();
  // not_found for an unknown domain.
  Result<RegistrationPolicy> registration_policy(std::string_view domain);

  // --- users
  // Admin path: ignores the registration policy. not_found (unknown domain),
  // already_exists (duplicate), invalid_argument (bad localpart).
  Result<UserInfo> create_user(std::string_view domain, std::string_view localpart, std::string_view password,
                               bool admin);
  // Provisioning in bulk (`hearthctl user add-many`, used by bench/bigroom to make 10,000
  // Matrix users): creates every localpart in one transaction with one device and access
  // token each. The password is derived ONCE and the accounts share its argon2id hash and
  // SCRAM salts: N accounts cost one argon2id instead of N (seconds instead of ~15 minutes
  // for 10,000). Sharing salts only tells a reader of the database that these accounts
  // share a password, which the caller chose. All or nothing: any duplicate or bad
  // localpart fails the whole batch (already_exists / invalid_argument).
  Result<std::vector<Session>> create_users_with_sessions(std::string_view domain,
                                                          const std::vector<std::string>& localparts,
                                                          std::string_view password);
  // Self-service registration under the domain's policy: closed → permission_denied;
  // invite → needs a valid invitation for this domain (else permission_denied, or the
  // check_invite errors); open → no invitation needed. A given invitation is consumed in
  // the same transaction as the user insert (so two concurrent redemptions create one
  // user) and makes the user admin if it grants admin.
  Result<UserInfo> register_user(std::string_view domain, std::string_view localpart, std::string_view password,
                                 std::optional<std::string_view> invite_token);
  // Replaces the argon2id hash and both SCRAM keys. Existing access tokens stay valid.
  Result<void> set_password(std::string_view domain, std::string_view localpart, std::string_view new_password);
  // Removes the user with its devices, tokens and SCRAM keys.
  Result<void> delete_user(std::string_view domain, std::string_view localpart);
  // All users of `domain`, or of every domain if it is empty; ordered by domain, localpart.
  Result<std::vector<UserInfo>> list_users(std::string_view domain);
  Result<UserInfo> get_user(std::string_view domain, std::string_view localpart);
  Result<std::int64_t> count_admins();

  // unauthenticated for a wrong password AND for an unknown user (same error; an unknown
  // user still costs one argon2id verification so timing does not reveal which).
  Result<UserInfo> verify_password(std::string_view domain, std::string_view localpart, std::string_view password);

  // The stored SCRAM verifier; not_found for an unknown user (the SASL layer then
  // continues with made-up credentials so as not to reveal which users exist).
  Result<ScramCredentials> scram_credentials(std::string_view domain, std::string_view localpart, ScramHash hash);

  // --- devices and access tokens
  // Creates (or, for an existing device_id, reuses — renaming it if display_name is not
  // empty, and revoking its previous tokens) a device and issues a new access token.
  // An empty device_id generates one.
  Result<Session> create_session(std::string_view domain, std::string_view localpart, std::string_view device_id,
                                 std::string_view display_name);
  // unauthenticated for an unknown (or revoked) token, expired for an expired one.
  Result<TokenOwner> lookup_token(std::string_view token);
  // not_found if the token is unknown.
  Result<void> revoke_token(std::string_view token);
  Result<std::vector<DeviceInfo>> list_devices(std::string_view domain, std::string_view localpart);
  // Removes the device and its tokens; not_found if there is no such device.
  Result<void> delete_device(std::string_view domain, std::string_view localpart, std::string_view device_id);
  // Sets a device's display name (at most 256 bytes); not_found if there is no such device.
  Result<void> rename_device(std::string_view domain, std::string_view localpart, std::string_view device_id,
                             std::string_view display_name);

  // --- invitations
  // ttl_ms: nullopt uses options.invite_ttl_ms. The returned token is the only copy.
  Result<Invite> create_invite(std::string_view domain, bool grants_admin, std::optional<std::int64_t> ttl_ms,
                               std::string_view created_by, std::string_view purpose = "");
  // While no admin exists anywhere: an unused, unexpired admin-granting invitation for
  // `domain` with purpose "bootstrap", the same one across restarts (a new one once the
  // old expired). Once any admin exists: already_exists, and creating an admin deletes
  // the unused bootstrap invitations.
  Result<Invite> bootstrap_admin_invite(std::string_view domain);
  // The invitation if it can be redeemed. not_found (unknown token), expired, or
  // permission_denied (already used).
  Result<Invite> check_invite(std::string_view token);
  // Invitations of `domain` (every domain if empty), tokens blank, newest first.
  Result<std::vector<Invite>> list_invites(std::string_view domain);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::accounts
