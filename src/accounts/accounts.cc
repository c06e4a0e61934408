#include "accounts/accounts.h"

#include <sodium.h>

#include <cctype>
#include <cstdlib>
#include <mutex>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/random.h"
#include "store/store.h"

// Propagates the error of a Result-returning expression.
#define ACCOUNTS_TRY(expr)                                           \
  do {                                                               \
    if (auto try_result_ = (expr); !try_result_) {                   \
      return tl::unexpected(std::move(try_result_.error()));         \
    }                                                                \
  } while (0)

namespace hearth::accounts {

using store::Blob;
using store::OwnedRow;
using store::Row;
using store::Transaction;

namespace {

constexpr std::size_t kMaxNameBytes = 255;
constexpr std::size_t kMaxPasswordBytes = 4096;
constexpr std::size_t kSaltBytes = 16;
constexpr std::string_view kBootstrapPurpose = "bootstrap";

// Schema history of this module; append only.
constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE accounts_domains (
  name TEXT PRIMARY KEY,
  registration TEXT NOT NULL CHECK (registration IN ('closed', 'invite', 'open')),
  created_ms INTEGER NOT NULL
);
CREATE TABLE accounts_users (
  id INTEGER PRIMARY KEY,
  domain TEXT NOT NULL REFERENCES accounts_domains(name),
  localpart TEXT NOT NULL,
  admin INTEGER NOT NULL DEFAULT 0,
  password_hash TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  UNIQUE (domain, localpart)
);
CREATE INDEX accounts_users_admin ON accounts_users(admin) WHERE admin = 1;
CREATE TABLE accounts_scram (
  user_id INTEGER NOT NULL REFERENCES accounts_users(id) ON DELETE CASCADE,
  hash TEXT NOT NULL,
  salt BLOB NOT NULL,
  iterations INTEGER NOT NULL,
  stored_key BLOB NOT NULL,
  server_key BLOB NOT NULL,
  PRIMARY KEY (user_id, hash)
);
CREATE TABLE accounts_devices (
  user_id INTEGER NOT NULL REFERENCES accounts_users(id) ON DELETE CASCADE,
  device_id TEXT NOT NULL,
  display_name TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (user_id, device_id)
);
CREATE TABLE accounts_tokens (
  token_hash BLOB PRIMARY KEY,
  user_id INTEGER NOT NULL,
  device_id TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER,
  FOREIGN KEY (user_id, device_id) REFERENCES accounts_devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX accounts_tokens_device ON accounts_tokens(user_id, device_id);
CREATE TABLE accounts_invites (
  token_hash BLOB PRIMARY KEY,
  bootstrap_token TEXT,
  domain TEXT NOT NULL REFERENCES accounts_domains(name) ON DELETE CASCADE,
  grants_admin INTEGER NOT NULL,
  purpose TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  used_ms INTEGER,
  used_by TEXT
);
CREATE INDEX accounts_invites_domain ON accounts_invites(domain);
)sql";

const std::vector<store::Migration>& migrations() {
  static const std::vector<store::Migration> list = {{1, "initial", kSchemaV1}};
  return list;
}

std::string_view hash_name(ScramHash h) { return h == ScramHash::sha1 ? "sha1" : "sha256"; }

std::string sha256(std::string_view data) {
  std::string out(crypto_hash_sha256_BYTES, '\0');
  crypto_hash_sha256(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size());
  return out;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  randombytes_buf(out.data(), n);
  return out;
}

// Domains and localparts share the rules; `what` names the field in the message.
Result<std::string> normalize_name(std::string_view what, std::string_view in) {
  if (in.empty()) return fail(Errc::invalid_argument, fmt::format("{} is empty", what));
  if (in.size() > kMaxNameBytes) {
    return fail(Errc::invalid_argument, fmt::format("{} is longer than {} bytes", what, kMaxNameBytes));
  }
  std::string out;
  out.reserve(in.size());
  for (char ch : in) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || c == ' ') {
      return fail(Errc::invalid_argument, fmt::format("{} contains whitespace or a control character", what));
    }
    if (c == '@' || c == '/' || c == ':') {
      return fail(Errc::invalid_argument, fmt::format("{} contains '{}'", what, ch));
    }
    out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : ch);
  }
  return out;
}

Result<void> check_password(std::string_view password) {
  if (password.empty()) return fail(Errc::invalid_argument, "password is empty");
  if (password.size() > kMaxPasswordBytes) {
    return fail(Errc::invalid_argument, fmt::format("password is longer than {} bytes", kMaxPasswordBytes));
  }
  return ok();
}

Result<void> check_device_id(std::string_view id) {
  if (id.size() > kMaxNameBytes) {
    return fail(Errc::invalid_argument, fmt::format("device id is longer than {} bytes", kMaxNameBytes));
  }
  for (char ch : id) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return fail(Errc::invalid_argument, "device id contains a control character");
  }
  return ok();
}

struct UserKey {
  std::string domain;
  std::string localpart;
};

Result<UserKey> user_key(std::string_view domain, std::string_view localpart) {
  auto d = normalize_name("domain", domain);
  if (!d) return tl::unexpected(d.error());
  auto l = normalize_name("localpart", localpart);
  if (!l) return tl::unexpected(l.error());
  return UserKey{std::move(*d), std::move(*l)};
}

std::string jid_of(const UserKey& k) { return k.localpart + "@" + k.domain; }

// Everything derived from a password; computed before the transaction because argon2id
// and PBKDF2 are slow and must not hold up the writer thread.
struct PasswordSecrets {
  std::string pwhash;
  ScramCredentials sha1;
  ScramCredentials sha256;
};

UserInfo user_from_row(const Row& row, int first) {
  UserInfo u;
  u.domain = std::string(row.text(first));
  u.localpart = std::string(row.text(first + 1));
  u.admin = row.integer(first + 2) != 0;
  u.created_ms = row.integer(first + 3);
  return u;
}

constexpr std::string_view kUserColumns = "domain, localpart, admin, created_ms";

Invite invite_from_row(const Row& row) {
  // Columns: domain, grants_admin, expires_ms, purpose, created_by, created_ms, used_ms
  Invite inv;
  inv.domain = std::string(row.text(0));
  inv.grants_admin = row.integer(1) != 0;
  inv.expires_ms = row.integer(2);
  inv.purpose = std::string(row.text(3));
  inv.created_by = std::string(row.text(4));
  inv.created_ms = row.integer(5);
  inv.used = !row.is_null(6);
  return inv;
}

constexpr std::string_view kInviteColumns =
    "domain, grants_admin, expires_ms, purpose, created_by, created_ms, used_ms";

Result<void> require_domain(Transaction& tx, const std::string& domain) {
  auto row = tx.query_one("SELECT 1 FROM accounts_domains WHERE name = ?", {domain});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail(Errc::not_found, fmt::format("unknown domain {}", domain));
  return ok();
}

Result<std::int64_t> user_id(Transaction& tx, const UserKey& k) {
  auto row = tx.query_one("SELECT id FROM accounts_users WHERE domain = ? AND localpart = ?", {k.domain, k.localpart});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail(Errc::not_found, fmt::format("unknown user {}", jid_of(k)));
  return (*row)->integer(0);
}

Result<void> store_scram(Transaction& tx, std::int64_t id, ScramHash h, const ScramCredentials& c) {
  auto r = tx.exec(
      "INSERT INTO accounts_scram (user_id, hash, salt, iterations, stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?) "
      "ON CONFLICT (user_id, hash) DO UPDATE SET salt = excluded.salt, iterations = excluded.iterations, "
      "stored_key = excluded.stored_key, server_key = excluded.server_key",
      {id, hash_name(h), Blob{c.salt}, c.iterations, Blob{c.stored_key}, Blob{c.server_key}});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

// A redeemable invitation (not_found / expired / permission_denied otherwise).
Result<Invite> find_invite(Transaction& tx, std::string_view token, std::int64_t now) {
  auto row = tx.query_one(fmt::format("SELECT {} FROM accounts_invites WHERE token_hash = ?", kInviteColumns),
                          {Blob{sha256(token)}});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return fail(Errc::not_found, "unknown invitation");
  Invite inv = invite_from_row(**row);
  if (inv.used) return fail(Errc::permission_denied, "invitation already used");
  if (now >= inv.expires_ms) return fail(Errc::expired, "invitation expired");
  return inv;
}

}  // namespace

Result<RegistrationPolicy> parse_registration_policy(std::string_view name) {
  if (name == "closed") return RegistrationPolicy::closed;
  if (name == "invite") return RegistrationPolicy::invite;
  if (name == "open") return RegistrationPolicy::open;
  return fail(Errc::invalid_argument,
              fmt::format("registration policy must be closed, invite or open, not '{}'", name));
}

std::string_view format_registration_policy(RegistrationPolicy policy) {
  switch (policy) {
    case RegistrationPolicy::closed: return "closed";
    case RegistrationPolicy::invite: return "invite";
    case RegistrationPolicy::open: return "open";
  }
  return "closed";
}

struct Accounts::Impl {
  store::Store& store;
  Clock& clock;
  Logger& logger;
  AccountsOptions options;
  std::once_flag dummy_once;
  std::string dummy_hash;  // verified against for unknown users, so they cost the same

  Result<PasswordSecrets> derive(std::string_view raw_password) {
    ACCOUNTS_TRY(check_password(raw_password));
    auto prepared = sasl_prep(raw_password);
    if (!prepared) return fail(Errc::invalid_argument, "the password has characters that cannot be used (RFC 4013)");
    const std::string& password = *prepared;
    PasswordSecrets s;
    s.pwhash.assign(crypto_pwhash_STRBYTES, '\0');
    if (crypto_pwhash_str(s.pwhash.data(), password.data(), password.size(), options.password_opslimit,
                          options.password_memlimit) != 0) {
      return fail(Errc::resource_exhausted, "not enough memory to hash the password");
    }
    s.pwhash.resize(std::char_traits<char>::length(s.pwhash.c_str()));
    s.sha1 = derive_scram_credentials(ScramHash::sha1, password, random_bytes(kSaltBytes), options.scram_iterations);
    s.sha256 =
        derive_scram_credentials(ScramHash::sha256, password, random_bytes(kSaltBytes), options.scram_iterations);
    return s;
  }

  const std::string& dummy() {
    std::call_once(dummy_once, [this] {
      auto s = derive(random_token(16));
      if (s) dummy_hash = s->pwhash;
    });
    return dummy_hash;
  }

  // Inserts a user with its SCRAM keys; the domain must exist. An admin voids the unused
  // bootstrap invitations.
  Result<UserInfo> insert_user(Transaction& tx, const UserKey& k, bool admin, const PasswordSecrets& s) {
    ACCOUNTS_TRY(require_domain(tx, k.domain));
    const std::int64_t now = clock.now_ms();
    auto ins = tx.exec(
        "INSERT INTO accounts_users (domain, localpart, admin, password_hash, created_ms) VALUES (?, ?, ?, ?, ?)",
        {k.domain, k.localpart, admin, s.pwhash, now});
    if (!ins) {
      if (ins.error().code == Errc::already_exists) {
        return fail(Errc::already_exists, fmt::format("user {} already exists", jid_of(k)));
      }
      return tl::unexpected(ins.error());
    }
    const std::int64_t id = tx.last_insert_id();
    ACCOUNTS_TRY(store_scram(tx, id, ScramHash::sha1, s.sha1));
    ACCOUNTS_TRY(store_scram(tx, id, ScramHash::sha256, s.sha256));
    if (admin) {
      ACCOUNTS_TRY(tx.exec("DELETE FROM accounts_invites WHERE purpose = ? AND used_ms IS NULL", {kBootstrapPurpose}));
    }
    return UserInfo{k.domain, k.localpart, admin, now};
  }

  void log_created(const UserInfo& u, std::string_view how) {
    logger.info("accounts.user_created", {{"jid", u.jid()}, {"admin", u.admin}, {"via", how}});
  }
};

Accounts::Accounts(store::Store& store, Clock& clock, Logger& logger, AccountsOptions options)
    : impl_(new Impl{store, clock, logger, options, {}, {}}) {
  if (sodium_init() < 0) std::abort();  // no entropy source: nothing here can be safe
  auto& o = impl_->options;
  if (o.scram_iterations < 1) o.scram_iterations = 4096;
  if (o.password_opslimit == 0) o.password_opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
  if (o.password_memlimit == 0) o.password_memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
  if (o.invite_ttl_ms <= 0) o.invite_ttl_ms = AccountsOptions{}.invite_ttl_ms;
}

Accounts::~Accounts() = default;

Result<std::unique_ptr<Accounts>> Accounts::open(store::Store& store, Clock& clock, Logger& logger,
                                                 AccountsOptions options) {
  auto a = std::make_unique<Accounts>(store, clock, logger, options);
  ACCOUNTS_TRY(a->migrate());
  return a;
}

Result<void> Accounts::migrate() { return impl_->store.migrate("accounts", migrations()); }

// --- domains

Result<void> Accounts::ensure_domain(std::string_view domain, RegistrationPolicy policy) {
  auto d = normalize_name("domain", domain);
  if (!d) return tl::unexpected(d.error());
  const std::int64_t now = impl_->clock.now_ms();
  return impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    ACCOUNTS_TRY(tx.exec(
        "INSERT INTO accounts_domains (name, registration, created_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET registration = excluded.registration",
        {*d, format_registration_policy(policy), now}));
    return ok();
  });
}

Result<std::vector<DomainInfo>> Accounts::list_domains() {
  return impl_->store.read_sync<std::vector<DomainInfo>>([](Transaction& tx) -> Result<std::vector<DomainInfo>> {
    std::vector<DomainInfo> out;
    ACCOUNTS_TRY(tx.query("SELECT name, registration, created_ms FROM accounts_domains ORDER BY name", {},
                          [&](const Row& row) {
                            DomainInfo d;
                            d.name = std::string(row.text(0));
                            d.registration = parse_registration_policy(row.text(1)).value_or(RegistrationPolicy::closed);
                            d.created_ms = row.integer(2);
                            out.push_back(std::move(d));
                          }));
    return out;
  });
}

Result<RegistrationPolicy> Accounts::registration_policy(std::string_view domain) {
  auto d = normalize_name("domain", domain);
  if (!d) return tl::unexpected(d.error());
  return impl_->store.read_sync<RegistrationPolicy>([&](Transaction& tx) -> Result<RegistrationPolicy> {
    auto row = tx.query_one("SELECT registration FROM accounts_domains WHERE name = ?", {*d});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, fmt::format("unknown domain {}", *d));
    return parse_registration_policy((*row)->text(0));
  });
}

// --- users

Result<UserInfo> Accounts::create_user(std::string_view domain, std::string_view localpart, std::string_view password,
                                       bool admin) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  auto secrets = impl_->derive(password);
  if (!secrets) return tl::unexpected(secrets.error());
  auto user = impl_->store.write_sync<UserInfo>(
      [&](Transaction& tx) { return impl_->insert_user(tx, *k, admin, *secrets); });
  if (user) impl_->log_created(*user, "admin");
  return user;
}

Result<std::vector<Session>> Accounts::create_users_with_sessions(std::string_view domain,
                                                                  const std::vector<std::string>& localparts,
                                                                  std::string_view password) {
  std::vector<UserKey> keys;
  keys.reserve(localparts.size());
  for (const auto& l : localparts) {
    auto k = user_key(domain, l);
    if (!k) return tl::unexpected(k.error());
    keys.push_back(std::move(*k));
  }
  auto secrets = impl_->derive(password);
  if (!secrets) return tl::unexpected(secrets.error());
  std::vector<Session> sessions(keys.size());
  for (auto& s : sessions) {
    s.device_id = random_hex(5);
    for (auto& c : s.device_id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    s.access_token = random_token(32);
  }
  const std::int64_t now = impl_->clock.now_ms();
  const std::optional<std::int64_t> expires =
      impl_->options.token_ttl_ms > 0 ? std::optional<std::int64_t>(now + impl_->options.token_ttl_ms) : std::nullopt;
  auto r = impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      ACCOUNTS_TRY(impl_->insert_user(tx, keys[i], false, *secrets));
      // insert_user's last insert is a SCRAM row: look the user's id up.
      auto uid = user_id(tx, keys[i]);
      if (!uid) return tl::unexpected(uid.error());
      ACCOUNTS_TRY(tx.exec("INSERT INTO accounts_devices (user_id, device_id, display_name, created_ms) VALUES (?, ?, ?, ?)",
                           {*uid, sessions[i].device_id, std::string_view("bulk"), now}));
      ACCOUNTS_TRY(tx.exec(
          "INSERT INTO accounts_tokens (token_hash, user_id, device_id, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
          {Blob{sha256(sessions[i].access_token)}, *uid, sessions[i].device_id, now, expires}));
    }
    return ok();
  });
  if (!r) return tl::unexpected(r.error());
  impl_->logger.info("accounts.users_created", {{"count", static_cast<std::int64_t>(keys.size())}, {"via", "bulk"}});
  return sessions;
}

Result<UserInfo> Accounts::register_user(std::string_view domain, std::string_view localpart,
                                         std::string_view password, std::optional<std::string_view> invite_token) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  // Fail fast before the expensive hashing; the transaction below checks again.
  auto policy = registration_policy(k->domain);
  if (!policy) return tl::unexpected(policy.error());
  if (*policy == RegistrationPolicy::closed) {
    return fail(Errc::permission_denied, fmt::format("registration on {} is closed", k->domain));
  }
  if (*policy == RegistrationPolicy::invite && !invite_token) {
    return fail(Errc::permission_denied, fmt::format("registration on {} requires an invitation", k->domain));
  }
  auto secrets = impl_->derive(password);
  if (!secrets) return tl::unexpected(secrets.error());
  const std::int64_t now = impl_->clock.now_ms();
  auto user = impl_->store.write_sync<UserInfo>([&](Transaction& tx) -> Result<UserInfo> {
    auto row = tx.query_one("SELECT registration FROM accounts_domains WHERE name = ?", {k->domain});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, fmt::format("unknown domain {}", k->domain));
    auto current = parse_registration_policy((*row)->text(0));
    if (!current) return tl::unexpected(current.error());
    if (*current == RegistrationPolicy::closed) {
      return fail(Errc::permission_denied, fmt::format("registration on {} is closed", k->domain));
    }
    bool admin = false;
    if (invite_token) {
      auto inv = find_invite(tx, *invite_token, now);
      if (!inv) return tl::unexpected(inv.error());
      if (inv->domain != k->domain) return fail(Errc::permission_denied, "invitation is for another domain");
      auto used = tx.exec(
          "UPDATE accounts_invites SET used_ms = ?, used_by = ?, bootstrap_token = NULL "
          "WHERE token_hash = ? AND used_ms IS NULL",
          {now, jid_of(*k), Blob{sha256(*invite_token)}});
      if (!used) return tl::unexpected(used.error());
      if (*used != 1) return fail(Errc::permission_denied, "invitation already used");
      admin = inv->grants_admin;
    } else if (*current == RegistrationPolicy::invite) {
      return fail(Errc::permission_denied, fmt::format("registration on {} requires an invitation", k->domain));
    }
    return impl_->insert_user(tx, *k, admin, *secrets);
  });
  if (user) impl_->log_created(*user, invite_token ? "invite" : "open");
  return user;
}

Result<void> Accounts::set_password(std::string_view domain, std::string_view localpart,
                                    std::string_view new_password) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  auto secrets = impl_->derive(new_password);
  if (!secrets) return tl::unexpected(secrets.error());
  return impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    auto id = user_id(tx, *k);
    if (!id) return tl::unexpected(id.error());
    ACCOUNTS_TRY(tx.exec("UPDATE accounts_users SET password_hash = ? WHERE id = ?", {secrets->pwhash, *id}));
    ACCOUNTS_TRY(store_scram(tx, *id, ScramHash::sha1, secrets->sha1));
    ACCOUNTS_TRY(store_scram(tx, *id, ScramHash::sha256, secrets->sha256));
    return ok();
  });
}

Result<void> Accounts::delete_user(std::string_view domain, std::string_view localpart) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  auto r = impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    auto n = tx.exec("DELETE FROM accounts_users WHERE domain = ? AND localpart = ?", {k->domain, k->localpart});
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return fail(Errc::not_found, fmt::format("unknown user {}", jid_of(*k)));
    return ok();
  });
  if (r) impl_->logger.info("accounts.user_deleted", {{"jid", jid_of(*k)}});
  return r;
}

Result<std::vector<UserInfo>> Accounts::list_users(std::string_view domain) {
  std::string d;
  if (!domain.empty()) {
    auto n = normalize_name("domain", domain);
    if (!n) return tl::unexpected(n.error());
    d = std::move(*n);
  }
  return impl_->store.read_sync<std::vector<UserInfo>>([&](Transaction& tx) -> Result<std::vector<UserInfo>> {
    std::vector<UserInfo> out;
    auto add = [&](const Row& row) { out.push_back(user_from_row(row, 0)); };
    if (d.empty()) {
      ACCOUNTS_TRY(tx.query(fmt::format("SELECT {} FROM accounts_users ORDER BY domain, localpart", kUserColumns),
                            {}, add));
    } else {
      ACCOUNTS_TRY(require_domain(tx, d));
      ACCOUNTS_TRY(tx.query(
          fmt::format("SELECT {} FROM accounts_users WHERE domain = ? ORDER BY localpart", kUserColumns), {d}, add));
    }
    return out;
  });
}

Result<UserInfo> Accounts::get_user(std::string_view domain, std::string_view localpart) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  return impl_->store.read_sync<UserInfo>([&](Transaction& tx) -> Result<UserInfo> {
    auto row = tx.query_one(
        fmt::format("SELECT {} FROM accounts_users WHERE domain = ? AND localpart = ?", kUserColumns),
        {k->domain, k->localpart});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, fmt::format("unknown user {}", jid_of(*k)));
    return user_from_row(**row, 0);
  });
}

Result<std::int64_t> Accounts::count_admins() {
  return impl_->store.read_sync<std::int64_t>([](Transaction& tx) -> Result<std::int64_t> {
    auto row = tx.query_one("SELECT count(*) FROM accounts_users WHERE admin = 1");
    if (!row) return tl::unexpected(row.error());
    return (*row)->integer(0);
  });
}

Result<UserInfo> Accounts::verify_password(std::string_view domain, std::string_view localpart,
                                           std::string_view password) {
  auto k = user_key(domain, localpart);
  if (!k) return fail(Errc::unauthenticated, "bad credentials");
  struct Found {
    UserInfo user;
    std::string pwhash;
  };
  auto found = impl_->store.read_sync<std::optional<Found>>([&](Transaction& tx) -> Result<std::optional<Found>> {
    auto row = tx.query_one(
        fmt::format("SELECT {}, password_hash FROM accounts_users WHERE domain = ? AND localpart = ?", kUserColumns),
        {k->domain, k->localpart});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<Found>();
    return std::optional<Found>(Found{user_from_row(**row, 0), std::string((*row)->text(4))});
  });
  if (!found) return tl::unexpected(found.error());
  const std::string& hash = *found ? (*found)->pwhash : impl_->dummy();
  auto prepared = sasl_prep(password);
  const std::string candidate = prepared ? *prepared : std::string(password);
  const bool match = prepared && !hash.empty() && candidate.size() <= kMaxPasswordBytes &&
                     crypto_pwhash_str_verify(hash.c_str(), candidate.data(), candidate.size()) == 0;
  if (!*found || !match) return fail(Errc::unauthenticated, "bad credentials");
  return (*found)->user;
}

Result<ScramCredentials> Accounts::scram_credentials(std::string_view domain, std::string_view localpart,
                                                     ScramHash hash) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  return impl_->store.read_sync<ScramCredentials>([&](Transaction& tx) -> Result<ScramCredentials> {
    auto row = tx.query_one(
        "SELECT s.salt, s.iterations, s.stored_key, s.server_key FROM accounts_scram s "
        "JOIN accounts_users u ON u.id = s.user_id WHERE u.domain = ? AND u.localpart = ? AND s.hash = ?",
        {k->domain, k->localpart, hash_name(hash)});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, fmt::format("unknown user {}", jid_of(*k)));
    const OwnedRow& r = **row;
    return ScramCredentials{std::string(r.blob(0)), static_cast<int>(r.integer(1)), std::string(r.blob(2)),
                            std::string(r.blob(3))};
  });
}

// --- devices and access tokens

Result<Session> Accounts::create_session(std::string_view domain, std::string_view localpart,
                                         std::string_view device_id, std::string_view display_name) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  ACCOUNTS_TRY(check_device_id(device_id));
  if (display_name.size() > kMaxNameBytes) {
    return fail(Errc::invalid_argument, fmt::format("device name is longer than {} bytes", kMaxNameBytes));
  }
  Session session;
  if (device_id.empty()) {
    session.device_id = random_hex(5);
    for (auto& c : session.device_id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  } else {
    session.device_id = std::string(device_id);
  }
  session.access_token = random_token(32);
  const std::int64_t now = impl_->clock.now_ms();
  const std::optional<std::int64_t> expires =
      impl_->options.token_ttl_ms > 0 ? std::optional<std::int64_t>(now + impl_->options.token_ttl_ms) : std::nullopt;
  auto r = impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    auto id = user_id(tx, *k);
    if (!id) return tl::unexpected(id.error());
    ACCOUNTS_TRY(tx.exec(
        "INSERT INTO accounts_devices (user_id, device_id, display_name, created_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = "
        "CASE WHEN excluded.display_name != '' THEN excluded.display_name ELSE display_name END",
        {*id, session.device_id, display_name, now}));
    ACCOUNTS_TRY(tx.exec("DELETE FROM accounts_tokens WHERE user_id = ? AND device_id = ?", {*id, session.device_id}));
    ACCOUNTS_TRY(tx.exec(
        "INSERT INTO accounts_tokens (token_hash, user_id, device_id, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
        {Blob{sha256(session.access_token)}, *id, session.device_id, now, expires}));
    return ok();
  });
  if (!r) return tl::unexpected(r.error());
  return session;
}

Result<TokenOwner> Accounts::lookup_token(std::string_view token) {
  const std::int64_t now = impl_->clock.now_ms();
  return impl_->store.read_sync<TokenOwner>([&](Transaction& tx) -> Result<TokenOwner> {
    auto row = tx.query_one(
        "SELECT u.domain, u.localpart, t.device_id, t.expires_ms FROM accounts_tokens t "
        "JOIN accounts_users u ON u.id = t.user_id WHERE t.token_hash = ?",
        {Blob{sha256(token)}});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::unauthenticated, "unknown access token");
    const OwnedRow& r = **row;
    if (!r.is_null(3) && now >= r.integer(3)) return fail(Errc::expired, "access token expired");
    return TokenOwner{std::string(r.text(0)), std::string(r.text(1)), std::string(r.text(2))};
  });
}

Result<void> Accounts::revoke_token(std::string_view token) {
  return impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    auto n = tx.exec("DELETE FROM accounts_tokens WHERE token_hash = ?", {Blob{sha256(token)}});
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return fail(Errc::not_found, "unknown access token");
    return ok();
  });
}

Result<std::vector<DeviceInfo>> Accounts::list_devices(std::string_view domain, std::string_view localpart) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  return impl_->store.read_sync<std::vector<DeviceInfo>>([&](Transaction& tx) -> Result<std::vector<DeviceInfo>> {
    auto id = user_id(tx, *k);
    if (!id) return tl::unexpected(id.error());
    std::vector<DeviceInfo> out;
    ACCOUNTS_TRY(tx.query(
        "SELECT device_id, display_name, created_ms FROM accounts_devices WHERE user_id = ? ORDER BY device_id", {*id},
        [&](const Row& row) {
          out.push_back(DeviceInfo{std::string(row.text(0)), std::string(row.text(1)), row.integer(2)});
        }));
    return out;
  });
}

Result<void> Accounts::delete_device(std::string_view domain, std::string_view localpart,
                                     std::string_view device_id) {
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  return impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    auto id = user_id(tx, *k);
    if (!id) return tl::unexpected(id.error());
    auto n = tx.exec("DELETE FROM accounts_devices WHERE user_id = ? AND device_id = ?", {*id, device_id});
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return fail(Errc::not_found, fmt::format("user {} has no device {}", jid_of(*k), device_id));
    return ok();
  });
}

Result<void> Accounts::rename_device(std::string_view domain, std::string_view localpart, std::string_view device_id,
                                     std::string_view display_name) {
  if (display_name.size() > 256) return fail(Errc::invalid_argument, "device display name too long");
  auto k = user_key(domain, localpart);
  if (!k) return tl::unexpected(k.error());
  return impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    auto id = user_id(tx, *k);
    if (!id) return tl::unexpected(id.error());
    auto n = tx.exec("UPDATE accounts_devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                     {display_name, *id, device_id});
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return fail(Errc::not_found, fmt::format("user {} has no device {}", jid_of(*k), device_id));
    return ok();
  });
}

// --- invitations

Result<Invite> Accounts::create_invite(std::string_view domain, bool grants_admin, std::optional<std::int64_t> ttl_ms,
                                       std::string_view created_by, std::string_view purpose) {
  auto d = normalize_name("domain", domain);
  if (!d) return tl::unexpected(d.error());
  const std::int64_t ttl = ttl_ms.value_or(impl_->options.invite_ttl_ms);
  if (ttl <= 0) return fail(Errc::invalid_argument, "invitation lifetime must be positive");
  if (created_by.size() > 2 * kMaxNameBytes || purpose.size() > 1024) {
    return fail(Errc::invalid_argument, "invitation creator or purpose too long");
  }
  Invite inv;
  inv.token = random_token(32);
  inv.domain = *d;
  inv.grants_admin = grants_admin;
  inv.created_ms = impl_->clock.now_ms();
  inv.expires_ms = inv.created_ms + ttl;
  inv.purpose = std::string(purpose);
  inv.created_by = std::string(created_by);
  auto r = impl_->store.write_sync<void>([&](Transaction& tx) -> Result<void> {
    ACCOUNTS_TRY(require_domain(tx, inv.domain));
    ACCOUNTS_TRY(tx.exec(
        "INSERT INTO accounts_invites (token_hash, domain, grants_admin, purpose, created_by, created_ms, expires_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        {Blob{sha256(inv.token)}, inv.domain, grants_admin, inv.purpose, inv.created_by, inv.created_ms,
         inv.expires_ms}));
    return ok();
  });
  if (!r) return tl::unexpected(r.error());
  impl_->logger.info("accounts.invite_created",
                     {{"domain", inv.domain}, {"grants_admin", grants_admin}, {"purpose", inv.purpose}});
  return inv;
}

Result<Invite> Accounts::bootstrap_admin_invite(std::string_view domain) {
  auto d = normalize_name("domain", domain);
  if (!d) return tl::unexpected(d.error());
  const std::int64_t now = impl_->clock.now_ms();
  bool created = false;
  auto inv = impl_->store.write_sync<Invite>([&](Transaction& tx) -> Result<Invite> {
    created = false;
    auto admins = tx.query_one("SELECT count(*) FROM accounts_users WHERE admin = 1");
    if (!admins) return tl::unexpected(admins.error());
    if ((*admins)->integer(0) > 0) return fail(Errc::already_exists, "an administrator already exists");
    ACCOUNTS_TRY(require_domain(tx, *d));
    auto row = tx.query_one(
        fmt::format("SELECT {}, bootstrap_token FROM accounts_invites WHERE domain = ? AND purpose = ? "
                    "AND bootstrap_token IS NOT NULL AND used_ms IS NULL AND expires_ms > ? "
                    "ORDER BY expires_ms DESC",
                    kInviteColumns),
        {*d, kBootstrapPurpose, now});
    if (!row) return tl::unexpected(row.error());
    if (*row) {
      Invite existing = invite_from_row(**row);
      existing.token = std::string((*row)->text(7));
      return existing;
    }
    ACCOUNTS_TRY(tx.exec("DELETE FROM accounts_invites WHERE domain = ? AND purpose = ? AND used_ms IS NULL",
                         {*d, kBootstrapPurpose}));
    Invite fresh;
    fresh.token = random_token(32);
    fresh.domain = *d;
    fresh.grants_admin = true;
    fresh.created_ms = now;
    fresh.expires_ms = now + impl_->options.invite_ttl_ms;
    fresh.purpose = std::string(kBootstrapPurpose);
    fresh.created_by = "hearthd";
    ACCOUNTS_TRY(tx.exec(
        "INSERT INTO accounts_invites (token_hash, bootstrap_token, domain, grants_admin, purpose, created_by, "
        "created_ms, expires_ms) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
        {Blob{sha256(fresh.token)}, fresh.token, fresh.domain, fresh.purpose, fresh.created_by, now,
         fresh.expires_ms}));
    created = true;
    return fresh;
  });
  if (inv && created) impl_->logger.info("accounts.bootstrap_invite_created", {{"domain", inv->domain}});
  return inv;
}

Result<Invite> Accounts::check_invite(std::string_view token) {
  const std::int64_t now = impl_->clock.now_ms();
  return impl_->store.read_sync<Invite>([&](Transaction& tx) { return find_invite(tx, token, now); });
}

Result<std::vector<Invite>> Accounts::list_invites(std::string_view domain) {
  std::string d;
  if (!domain.empty()) {
    auto n = normalize_name("domain", domain);
    if (!n) return tl::unexpected(n.error());
    d = std::move(*n);
  }
  return impl_->store.read_sync<std::vector<Invite>>([&](Transaction& tx) -> Result<std::vector<Invite>> {
    std::vector<Invite> out;
    auto add = [&](const Row& row) { out.push_back(invite_from_row(row)); };
    if (d.empty()) {
      ACCOUNTS_TRY(tx.query(
          fmt::format("SELECT {} FROM accounts_invites ORDER BY created_ms DESC, rowid DESC", kInviteColumns), {}, add));
    } else {
      ACCOUNTS_TRY(tx.query(fmt::format("SELECT {} FROM accounts_invites WHERE domain = ? "
                                        "ORDER BY created_ms DESC, rowid DESC",
                                        kInviteColumns),
                            {d}, add));
    }
    return out;
  });
}

}  // namespace hearth::accounts
