// Self-signed certificate generation for first runs (OpenSSL 3, no Asio).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <memory>
#include <string>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/net.h"

namespace hearth::net {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(FILE* p) const { std::fclose(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

std::string openssl_error(std::string_view what) {
  std::string out(what);
  unsigned long e = ERR_get_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += ": ";
    out += buf;
  }
  ERR_clear_error();
  return out;
}

bool add_extension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  Owned<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

// Writes through a temporary file in the same directory, then renames over `path`.
Result<void> write_pem(const std::string& path, mode_t mode, const std::function<bool(FILE*)>& write) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return fail(Errc::io, "cannot create " + tmp + ": " + std::strerror(errno));
  Owned<FILE> f(::fdopen(fd, "w"));
  if (!f) {
    ::close(fd);
    return fail(Errc::io, "fdopen " + tmp);
  }
  bool written = write(f.get());
  written = std::fflush(f.get()) == 0 && written;
  written = ::fsync(::fileno(f.get())) == 0 && written;
  f.reset();
  if (!written) {
    ::unlink(tmp.c_str());
    return fail(Errc::io, openssl_error("cannot write " + path));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return fail(Errc::io, "cannot rename " + tmp + ": " + std::strerror(errno));
  }
  return hearth::ok();
}

}  // namespace

Result<void> ensure_self_signed_certificate(const std::vector<std::string>& dns_names,
                                            const std::string& cert_file,
                                            const std::string& key_file) {
  std::error_code ec;
  if (std::filesystem::exists(cert_file, ec) && std::filesystem::exists(key_file, ec))
    return hearth::ok();
  if (dns_names.empty()) return fail(Errc::invalid_argument, "self-signed certificate needs a name");
  for (const auto& name : dns_names)
    if (name.empty() || name.find_first_of(",\r\n\0 ", 0, 5) != std::string::npos)
      return fail(Errc::invalid_argument, "bad certificate name '" + name + "'");

  for (const std::string* file : {&cert_file, &key_file}) {
    auto parent = std::filesystem::path(*file).parent_path();
    if (!parent.empty() && !std::filesystem::create_directories(parent, ec) && ec)
      return fail(Errc::io, "cannot create " + parent.string() + ": " + ec.message());
  }

  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return fail(Errc::internal, openssl_error("EC key generation failed"));

  Owned<X509> cert(X509_new());
  if (!cert) return fail(Errc::internal, openssl_error("X509_new"));
  X509_set_version(cert.get(), 2);  // v3

  Owned<BIGNUM> serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())))
    return fail(Errc::internal, openssl_error("serial number"));

  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60 * 60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 60 * 60);
  X509_set_pubkey(cert.get(), key.get());

  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("hearth self-signed"), -1, -1, 0);
  std::string cn = dns_names.front().substr(0, 64);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);

  std::string san;
  for (const auto& n : dns_names) san += "DNS:" + n + ",";
  san += "IP:127.0.0.1,IP:::1";
  if (!add_extension(cert.get(), NID_subject_alt_name, san) ||
      !add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !add_extension(cert.get(), NID_key_usage, "critical,digitalSignature") ||
      !add_extension(cert.get(), NID_ext_key_usage, "serverAuth") ||
      !add_extension(cert.get(), NID_subject_key_identifier, "hash"))
    return fail(Errc::internal, openssl_error("certificate extensions"));

  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0)
    return fail(Errc::internal, openssl_error("certificate signing"));

  auto key_written = write_pem(key_file, 0600, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  if (!key_written) return key_written;
  ::chmod(key_file.c_str(), 0600);
  return write_pem(cert_file, 0644, [&](FILE* f) { return PEM_write_X509(f, cert.get()) == 1; });
}

Result<std::string> certificate_spki_sha256_hex(const std::string& cert_file) {
  Owned<FILE> f(std::fopen(cert_file.c_str(), "r"));
  if (!f) return fail(errno == ENOENT ? Errc::not_found : Errc::io, "cannot open " + cert_file + ": " + std::strerror(errno));
  Owned<X509> cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
  if (!cert) return fail(Errc::invalid_argument, openssl_error("no PEM certificate in " + cert_file));
  unsigned char* der = nullptr;
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
  if (len <= 0) return fail(Errc::internal, openssl_error("SubjectPublicKeyInfo"));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  const bool hashed = EVP_Digest(der, static_cast<std::size_t>(len), digest, &digest_len, EVP_sha256(), nullptr) == 1;
  OPENSSL_free(der);
  if (!hashed) return fail(Errc::internal, openssl_error("SHA-256"));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < digest_len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

}  // namespace hearth::net
