#include <sys/stat.h>

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "net/net.h"

namespace hearth::net {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CertificateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("hearth-net-cert-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(CertificateTest, GeneratesOnceWithSanAndPrivateKeyMode) {
  std::string cert = (dir_ / "tls" / "cert.pem").string();
  std::string key = (dir_ / "private" / "key.pem").string();
  auto r = ensure_self_signed_certificate({"example.test", "chat.example.test"}, cert, key);
  ASSERT_TRUE(r) << r.error().describe();

  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  FILE* f = std::fopen(cert.c_str(), "r");
  ASSERT_NE(f, nullptr);
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(X509_check_host(x, "example.test", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(x, "chat.example.test", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(x, "other.test", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(x, "::1", 0), 1);
  EVP_PKEY* pub = X509_get0_pubkey(x);
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  // Valid for (about) ten years.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
  EXPECT_GE(days, 3650);
  X509_free(x);

  std::string before_cert = slurp(cert), before_key = slurp(key);
  ASSERT_TRUE(ensure_self_signed_certificate({"example.test"}, cert, key));
  EXPECT_EQ(slurp(cert), before_cert);
  EXPECT_EQ(slurp(key), before_key);
}

TEST_F(CertificateTest, RejectsEmptyNameList) {
  auto r = ensure_self_signed_certificate({}, (dir_ / "c.pem").string(), (dir_ / "k.pem").string());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
}

}  // namespace
}  // namespace hearth::net
