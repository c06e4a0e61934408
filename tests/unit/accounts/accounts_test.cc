#include "accounts/accounts.h"

#include <sodium.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store.h"

namespace hearth::accounts {
namespace {

struct NullSink : LogSink {
  void write_line(std::string_view) override {}
};

class AccountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "hearth-accounts-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    reopen();
    ASSERT_TRUE(accounts().ensure_domain("example.org", RegistrationPolicy::invite));
  }
  void TearDown() override {
    accounts_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Re-creates the Store and the Accounts object on the same files (a restart).
  void reopen() {
    accounts_.reset();
    store_.reset();
    store::StoreOptions so;
    so.path = (dir_ / "hearth.db").string();
    so.readers = 2;
    auto s = store::Store::open_sqlite(so, logger_, metrics_);
    ASSERT_TRUE(s) << s.error().describe();
    store_ = std::move(*s);
    auto a = Accounts::open(*store_, clock_, logger_, options());
    ASSERT_TRUE(a) << a.error().describe();
    accounts_ = std::move(*a);
  }

  AccountsOptions options() {
    AccountsOptions o;
    o.password_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    o.password_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    o.token_ttl_ms = token_ttl_ms_;
    return o;
  }

  Accounts& accounts() { return *accounts_; }

  std::int64_t count_rows(std::string_view table) {
    std::string sql = "SELECT count(*) FROM " + std::string(table);
    auto n = store_->read_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
      auto row = tx.query_one(sql);
      if (!row) return tl::unexpected(row.error());
      return (*row)->integer(0);
    });
    EXPECT_TRUE(n);
    return n ? *n : -1;
  }

  std::filesystem::path dir_;
  Logger logger_{std::make_shared<NullSink>(), LogLevel::error, LogFormat::text};
  MetricsRegistry metrics_;
  ManualClock clock_;
  std::int64_t token_ttl_ms_ = 0;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Accounts> accounts_;
};

TEST(RegistrationPolicyNames, ParseAndFormatRoundTrip) {
  for (auto p : {RegistrationPolicy::closed, RegistrationPolicy::invite, RegistrationPolicy::open}) {
    auto back = parse_registration_policy(format_registration_policy(p));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, p);
  }
  auto bad = parse_registration_policy("Open");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::invalid_argument);
}

TEST_F(AccountsTest, DomainsAreUpsertedAndListed) {
  ASSERT_TRUE(accounts().ensure_domain("Other.NET", RegistrationPolicy::open));
  ASSERT_TRUE(accounts().ensure_domain("other.net", RegistrationPolicy::closed));
  auto domains = accounts().list_domains();
  ASSERT_TRUE(domains);
  ASSERT_EQ(domains->size(), 2u);
  EXPECT_EQ((*domains)[0].name, "example.org");
  EXPECT_EQ((*domains)[1].name, "other.net");
  EXPECT_EQ((*domains)[1].registration, RegistrationPolicy::closed);
  auto unknown = accounts().registration_policy("nowhere.example");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
}

TEST_F(AccountsTest, ReopeningRunsNoMigrationTwice) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  reopen();
  ASSERT_TRUE(accounts().migrate());
  EXPECT_TRUE(accounts().get_user("example.org", "alice"));
  EXPECT_EQ(count_rows("schema_migrations WHERE module = 'accounts'"), 1);
}

TEST_F(AccountsTest, CreateUserValidatesAndFoldsCase) {
  auto u = accounts().create_user("Example.ORG", "Alice", "secret", true);
  ASSERT_TRUE(u) << u.error().describe();
  EXPECT_EQ(u->jid(), "alice@example.org");
  EXPECT_TRUE(u->admin);
  EXPECT_EQ(u->created_ms, clock_.now_ms());

  auto dup = accounts().create_user("example.org", "ALICE", "other", false);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::already_exists);

  for (std::string bad : {std::string(), std::string("a@b"), std::string("a/b"), std::string("a b"),
                          std::string("a:b"), std::string("a\tb"), std::string("a\x01"), std::string(256, 'x')}) {
    auto r = accounts().create_user("example.org", bad, "pw", false);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_argument) << bad;
  }
  EXPECT_TRUE(accounts().create_user("example.org", std::string(255, 'x'), "pw", false));
  auto nodomain = accounts().create_user("nowhere.example", "bob", "pw", false);
  ASSERT_FALSE(nodomain);
  EXPECT_EQ(nodomain.error().code, Errc::not_found);
}

TEST_F(AccountsTest, ClosedPolicyRejectsRegistration) {
  ASSERT_TRUE(accounts().ensure_domain("example.org", RegistrationPolicy::closed));
  auto inv = accounts().create_invite("example.org", false, std::nullopt, "admin@example.org");
  ASSERT_TRUE(inv);
  auto r = accounts().register_user("example.org", "bob", "pw", std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permission_denied);
  auto with_invite = accounts().register_user("example.org", "bob", "pw", inv->token);
  ASSERT_FALSE(with_invite);
  EXPECT_EQ(with_invite.error().code, Errc::permission_denied);
  EXPECT_TRUE(accounts().check_invite(inv->token));  // not consumed
}

TEST_F(AccountsTest, InvitePolicyNeedsAValidSingleUseInvite) {
  auto none = accounts().register_user("example.org", "bob", "pw", std::nullopt);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::permission_denied);
  auto unknown = accounts().register_user("example.org", "bob", "pw", std::string_view("no-such-invite"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);

  auto inv = accounts().create_invite("example.org", false, std::nullopt, "admin@example.org", "for bob");
  ASSERT_TRUE(inv);
  EXPECT_EQ(inv->expires_ms, clock_.now_ms() + AccountsOptions{}.invite_ttl_ms);
  auto bob = accounts().register_user("example.org", "bob", "pw", inv->token);
  ASSERT_TRUE(bob) << bob.error().describe();
  EXPECT_FALSE(bob->admin);

  auto again = accounts().register_user("example.org", "carol", "pw", inv->token);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::permission_denied);
  auto checked = accounts().check_invite(inv->token);
  ASSERT_FALSE(checked);
  EXPECT_EQ(checked.error().code, Errc::permission_denied);

  auto listed = accounts().list_invites("example.org");
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_TRUE((*listed)[0].used);
  EXPECT_TRUE((*listed)[0].token.empty());
  EXPECT_EQ((*listed)[0].purpose, "for bob");
}

TEST_F(AccountsTest, FailedRegistrationDoesNotConsumeTheInvite) {
  ASSERT_TRUE(accounts().create_user("example.org", "bob", "pw", false));
  auto inv = accounts().create_invite("example.org", false, std::nullopt, "admin");
  ASSERT_TRUE(inv);
  auto dup = accounts().register_user("example.org", "bob", "pw", inv->token);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::already_exists);
  EXPECT_TRUE(accounts().check_invite(inv->token));
}

TEST_F(AccountsTest, AdminGrantingInviteMakesAnAdmin) {
  auto inv = accounts().create_invite("example.org", true, std::nullopt, "admin");
  ASSERT_TRUE(inv);
  auto u = accounts().register_user("example.org", "root", "pw", inv->token);
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->admin);
  auto n = accounts().count_admins();
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1);
}

TEST_F(AccountsTest, InviteExpires) {
  auto inv = accounts().create_invite("example.org", false, 60'000, "admin");
  ASSERT_TRUE(inv);
  clock_.advance_ms(59'999);
  EXPECT_TRUE(accounts().check_invite(inv->token));
  clock_.advance_ms(1);
  auto checked = accounts().check_invite(inv->token);
  ASSERT_FALSE(checked);
  EXPECT_EQ(checked.error().code, Errc::expired);
  auto r = accounts().register_user("example.org", "late", "pw", inv->token);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::expired);
  auto bad_ttl = accounts().create_invite("example.org", false, 0, "admin");
  ASSERT_FALSE(bad_ttl);
  EXPECT_EQ(bad_ttl.error().code, Errc::invalid_argument);
}

TEST_F(AccountsTest, InviteForAnotherDomainIsRejected) {
  ASSERT_TRUE(accounts().ensure_domain("other.net", RegistrationPolicy::invite));
  auto inv = accounts().create_invite("other.net", true, std::nullopt, "admin");
  ASSERT_TRUE(inv);
  auto r = accounts().register_user("example.org", "bob", "pw", inv->token);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permission_denied);
  EXPECT_TRUE(accounts().check_invite(inv->token));
}

TEST_F(AccountsTest, OpenPolicyNeedsNoInviteButConsumesAGivenOne) {
  ASSERT_TRUE(accounts().ensure_domain("example.org", RegistrationPolicy::open));
  auto plain = accounts().register_user("example.org", "anyone", "pw", std::nullopt);
  ASSERT_TRUE(plain) << plain.error().describe();
  EXPECT_FALSE(plain->admin);
  auto inv = accounts().create_invite("example.org", true, std::nullopt, "admin");
  ASSERT_TRUE(inv);
  auto admin = accounts().register_user("example.org", "boss", "pw", inv->token);
  ASSERT_TRUE(admin);
  EXPECT_TRUE(admin->admin);
  auto checked = accounts().check_invite(inv->token);
  ASSERT_FALSE(checked);
  EXPECT_EQ(checked.error().code, Errc::permission_denied);
}

TEST_F(AccountsTest, ConcurrentRedemptionCreatesExactlyOneUser) {
  auto inv = accounts().create_invite("example.org", false, std::nullopt, "admin");
  ASSERT_TRUE(inv);
  constexpr int kThreads = 2;
  std::atomic<int> ready{0};
  std::vector<Result<UserInfo>> results(kThreads, fail(Errc::internal, "not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ready++;
      while (ready.load() < kThreads) std::this_thread::yield();
      results[i] = accounts().register_user("example.org", "racer" + std::to_string(i), "pw", inv->token);
    });
  }
  for (auto& t : threads) t.join();
  int created = 0;
  for (auto& r : results) {
    if (r) {
      ++created;
    } else {
      EXPECT_EQ(r.error().code, Errc::permission_denied) << r.error().describe();
    }
  }
  EXPECT_EQ(created, 1);
  auto users = accounts().list_users("example.org");
  ASSERT_TRUE(users);
  EXPECT_EQ(users->size(), 1u);
}

TEST_F(AccountsTest, VerifyPasswordTreatsUnknownUsersLikeWrongPasswords) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "correct horse", false));
  auto good = accounts().verify_password("example.org", "Alice", "correct horse");
  ASSERT_TRUE(good) << good.error().describe();
  EXPECT_EQ(good->jid(), "alice@example.org");
  auto wrong = accounts().verify_password("example.org", "alice", "correct horse!");
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, Errc::unauthenticated);
  auto unknown = accounts().verify_password("example.org", "mallory", "correct horse");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::unauthenticated);
  EXPECT_EQ(unknown.error().message, wrong.error().message);
}

// RFC 4013: a soft hyphen maps to nothing and a no-break space to a space, so the password
// set from hearthctl or the web is the one a SCRAM client (which prepares it) proves.
TEST_F(AccountsTest, PasswordsAreSaslPrepared) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "I\xC2\xADX\xC2\xA0y", false));
  EXPECT_TRUE(accounts().verify_password("example.org", "alice", "IX y"));
  EXPECT_TRUE(accounts().verify_password("example.org", "alice", "I\xC2\xADX\xC2\xA0y"));
  auto c = accounts().scram_credentials("example.org", "alice", ScramHash::sha256);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->stored_key, derive_scram_credentials(ScramHash::sha256, "IX y", c->salt, c->iterations).stored_key);
  auto bad = accounts().create_user("example.org", "bob", "bell\x07", false);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::invalid_argument);
  EXPECT_FALSE(accounts().set_password("example.org", "alice", "\xFF\xFE"));
}

TEST_F(AccountsTest, ScramCredentialsMatchThePassword) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pencil", false));
  for (auto h : {ScramHash::sha1, ScramHash::sha256}) {
    auto c = accounts().scram_credentials("example.org", "alice", h);
    ASSERT_TRUE(c) << c.error().describe();
    EXPECT_EQ(c->salt.size(), 16u);
    EXPECT_EQ(c->iterations, 4096);
    auto expected = derive_scram_credentials(h, "pencil", c->salt, c->iterations);
    EXPECT_EQ(c->stored_key, expected.stored_key);
    EXPECT_EQ(c->server_key, expected.server_key);
  }
  auto s1 = accounts().scram_credentials("example.org", "alice", ScramHash::sha1);
  auto s256 = accounts().scram_credentials("example.org", "alice", ScramHash::sha256);
  EXPECT_NE(s1->salt, s256->salt);
  auto unknown = accounts().scram_credentials("example.org", "nobody", ScramHash::sha256);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::not_found);
}

TEST_F(AccountsTest, PasswordChangeInvalidatesOldPasswordAndScramKeys) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "old password", false));
  auto before = accounts().scram_credentials("example.org", "alice", ScramHash::sha256);
  ASSERT_TRUE(before);
  ASSERT_TRUE(accounts().set_password("example.org", "alice", "new password"));
  EXPECT_FALSE(accounts().verify_password("example.org", "alice", "old password"));
  EXPECT_TRUE(accounts().verify_password("example.org", "alice", "new password"));
  auto after = accounts().scram_credentials("example.org", "alice", ScramHash::sha256);
  ASSERT_TRUE(after);
  EXPECT_NE(after->stored_key, before->stored_key);
  EXPECT_NE(after->server_key, before->server_key);
  EXPECT_EQ(after->stored_key, derive_scram_credentials(ScramHash::sha256, "new password", after->salt,
                                                        after->iterations).stored_key);
  auto missing = accounts().set_password("example.org", "nobody", "x");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

TEST_F(AccountsTest, PlainPasswordIsNeverStored) {
  const std::string first = "Plaintext-Sentinel-1-qwertyuiop";
  const std::string second = "Plaintext-Sentinel-2-asdfghjkl";
  const std::string third = "Plaintext-Sentinel-3-zxcvbnm";
  ASSERT_TRUE(accounts().create_user("example.org", "alice", first, false));
  ASSERT_TRUE(accounts().set_password("example.org", "alice", second));
  ASSERT_TRUE(accounts().ensure_domain("example.org", RegistrationPolicy::open));
  ASSERT_TRUE(accounts().register_user("example.org", "bob", third, std::nullopt));
  std::string bytes;
  auto slurp = [&] {
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      std::ifstream in(entry.path(), std::ios::binary);
      bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  };
  slurp();  // while open: main file + WAL
  accounts_.reset();
  store_->close();
  slurp();  // after the checkpoint on close
  ASSERT_FALSE(bytes.empty());
  EXPECT_NE(bytes.find("alice"), std::string::npos);  // the check can see stored text
  for (const auto& pw : {first, second, third}) EXPECT_EQ(bytes.find(pw), std::string::npos) << pw;
}

TEST_F(AccountsTest, UsersWithSessionsInBulkShareOnePasswordAndGetATokenEach) {
  auto made = accounts().create_users_with_sessions("example.org", {"b1", "b2", "b3"}, "bulkpw");
  ASSERT_TRUE(made) << made.error().describe();
  ASSERT_EQ(made->size(), 3u);
  EXPECT_NE((*made)[0].access_token, (*made)[1].access_token);
  for (int i = 0; i < 3; ++i) {
    auto owner = accounts().lookup_token((*made)[i].access_token);
    ASSERT_TRUE(owner);
    EXPECT_EQ(owner->localpart, "b" + std::to_string(i + 1));
    EXPECT_EQ(owner->device_id, (*made)[i].device_id);
    EXPECT_TRUE(accounts().verify_password("example.org", owner->localpart, "bulkpw"));
  }
  EXPECT_FALSE(accounts().verify_password("example.org", "b2", "other"));
  // All or nothing: one existing name fails the batch and creates none of it.
  auto dup = accounts().create_users_with_sessions("example.org", {"c1", "b2"}, "bulkpw");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::already_exists);
  EXPECT_FALSE(accounts().get_user("example.org", "c1"));
  auto bad = accounts().create_users_with_sessions("example.org", {"ok", "a b"}, "bulkpw");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::invalid_argument);
}

TEST_F(AccountsTest, SessionTokensLookUpAndRevoke) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  auto s = accounts().create_session("example.org", "alice", "", "Phone");
  ASSERT_TRUE(s) << s.error().describe();
  EXPECT_FALSE(s->device_id.empty());
  EXPECT_GE(s->access_token.size(), 32u);
  auto owner = accounts().lookup_token(s->access_token);
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->domain, "example.org");
  EXPECT_EQ(owner->localpart, "alice");
  EXPECT_EQ(owner->device_id, s->device_id);

  auto devices = accounts().list_devices("example.org", "alice");
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].display_name, "Phone");

  ASSERT_TRUE(accounts().revoke_token(s->access_token));
  auto gone = accounts().lookup_token(s->access_token);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::unauthenticated);
  auto twice = accounts().revoke_token(s->access_token);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, Errc::not_found);

  auto nouser = accounts().create_session("example.org", "nobody", "", "");
  ASSERT_FALSE(nouser);
  EXPECT_EQ(nouser.error().code, Errc::not_found);
}

TEST_F(AccountsTest, NewSessionOnSameDeviceReplacesItsToken) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  auto a = accounts().create_session("example.org", "alice", "LAPTOP", "Laptop");
  auto b = accounts().create_session("example.org", "alice", "LAPTOP", "");
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_FALSE(accounts().lookup_token(a->access_token));
  EXPECT_TRUE(accounts().lookup_token(b->access_token));
  auto devices = accounts().list_devices("example.org", "alice");
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].display_name, "Laptop");  // an empty name keeps the old one
}

TEST_F(AccountsTest, TokensExpire) {
  token_ttl_ms_ = 1000;
  reopen();
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  auto s = accounts().create_session("example.org", "alice", "D1", "");
  ASSERT_TRUE(s);
  clock_.advance_ms(999);
  EXPECT_TRUE(accounts().lookup_token(s->access_token));
  clock_.advance_ms(1);
  auto r = accounts().lookup_token(s->access_token);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::expired);
}

TEST_F(AccountsTest, DeleteDeviceRemovesItsTokens) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  auto keep = accounts().create_session("example.org", "alice", "KEEP", "");
  auto drop = accounts().create_session("example.org", "alice", "DROP", "");
  ASSERT_TRUE(keep);
  ASSERT_TRUE(drop);
  ASSERT_TRUE(accounts().delete_device("example.org", "alice", "DROP"));
  EXPECT_FALSE(accounts().lookup_token(drop->access_token));
  EXPECT_TRUE(accounts().lookup_token(keep->access_token));
  auto again = accounts().delete_device("example.org", "alice", "DROP");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::not_found);
}

TEST_F(AccountsTest, RenameDeviceKeepsItsTokens) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  auto s = accounts().create_session("example.org", "alice", "PHONE", "old name");
  ASSERT_TRUE(s);
  ASSERT_TRUE(accounts().rename_device("example.org", "alice", "PHONE", "new name"));
  auto devices = accounts().list_devices("example.org", "alice");
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].display_name, "new name");
  EXPECT_TRUE(accounts().lookup_token(s->access_token));
  EXPECT_EQ(accounts().rename_device("example.org", "alice", "NOPE", "x").error().code, Errc::not_found);
  EXPECT_EQ(accounts().rename_device("example.org", "alice", "PHONE", std::string(257, 'x')).error().code,
            Errc::invalid_argument);
}

TEST_F(AccountsTest, DeleteUserRemovesDevicesTokensAndKeys) {
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", false));
  ASSERT_TRUE(accounts().create_user("example.org", "bob", "pw", false));
  auto s = accounts().create_session("example.org", "alice", "", "");
  auto other = accounts().create_session("example.org", "bob", "", "");
  ASSERT_TRUE(s);
  ASSERT_TRUE(other);
  ASSERT_TRUE(accounts().delete_user("example.org", "alice"));
  EXPECT_EQ(accounts().get_user("example.org", "alice").error().code, Errc::not_found);
  EXPECT_EQ(accounts().lookup_token(s->access_token).error().code, Errc::unauthenticated);
  EXPECT_TRUE(accounts().lookup_token(other->access_token));
  EXPECT_EQ(count_rows("accounts_devices"), 1);
  EXPECT_EQ(count_rows("accounts_tokens"), 1);
  EXPECT_EQ(count_rows("accounts_scram"), 2);  // bob's two
  EXPECT_EQ(accounts().delete_user("example.org", "alice").error().code, Errc::not_found);
}

TEST_F(AccountsTest, ListUsersAndCountAdmins) {
  ASSERT_TRUE(accounts().ensure_domain("other.net", RegistrationPolicy::closed));
  ASSERT_TRUE(accounts().create_user("example.org", "bob", "pw", false));
  ASSERT_TRUE(accounts().create_user("example.org", "alice", "pw", true));
  ASSERT_TRUE(accounts().create_user("other.net", "carol", "pw", true));
  auto all = accounts().list_users("");
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].jid(), "alice@example.org");
  EXPECT_EQ((*all)[1].jid(), "bob@example.org");
  EXPECT_EQ((*all)[2].jid(), "carol@other.net");
  auto one = accounts().list_users("other.net");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1u);
  EXPECT_EQ(accounts().list_users("nowhere.example").error().code, Errc::not_found);
  EXPECT_EQ(*accounts().count_admins(), 2);
}

TEST_F(AccountsTest, BootstrapInviteIsStableAcrossRestartsUntilAnAdminExists) {
  auto first = accounts().bootstrap_admin_invite("example.org");
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ(first->purpose, "bootstrap");
  EXPECT_TRUE(first->grants_admin);
  EXPECT_FALSE(first->token.empty());
  reopen();
  auto second = accounts().bootstrap_admin_invite("example.org");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->token, first->token);
  EXPECT_EQ(second->expires_ms, first->expires_ms);

  auto admin = accounts().register_user("example.org", "root", "pw", second->token);
  ASSERT_TRUE(admin) << admin.error().describe();
  EXPECT_TRUE(admin->admin);
  auto after = accounts().bootstrap_admin_invite("example.org");
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::already_exists);
  EXPECT_EQ(accounts().check_invite(first->token).error().code, Errc::permission_denied);
}

TEST_F(AccountsTest, BootstrapInviteIsRenewedAfterExpiryAndVoidedByAnAdmin) {
  auto first = accounts().bootstrap_admin_invite("example.org");
  ASSERT_TRUE(first);
  clock_.advance_ms(AccountsOptions{}.invite_ttl_ms);
  auto renewed = accounts().bootstrap_admin_invite("example.org");
  ASSERT_TRUE(renewed);
  EXPECT_NE(renewed->token, first->token);
  ASSERT_TRUE(accounts().create_user("example.org", "root", "pw", true));
  EXPECT_EQ(accounts().check_invite(renewed->token).error().code, Errc::not_found);
  EXPECT_EQ(accounts().bootstrap_admin_invite("example.org").error().code, Errc::already_exists);
}

}  // namespace
}  // namespace hearth::accounts
