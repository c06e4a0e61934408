#include "xmpp/sasl.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <map>
#include <string>

namespace hearth::xmpp {
namespace {

using accounts::ScramCredentials;
using accounts::ScramHash;
using Kind = SaslStep::Kind;

std::string b64(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.pop_back();
  return out;
}

std::string unb64(std::string_view text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  EXPECT_EQ(sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(),
                              nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL),
            0);
  out.resize(len);
  return out;
}

const EVP_MD* md(ScramHash hash) { return hash == ScramHash::sha1 ? EVP_sha1() : EVP_sha256(); }

std::string hmac(ScramHash hash, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md(hash), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string digest(ScramHash hash, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md(hash), nullptr);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// "r=<nonce>,s=<base64 salt>,i=<iterations>"; iterations is 0 when the shape is wrong.
struct ServerFirst {
  std::string nonce;
  std::string salt_b64;
  int iterations = 0;
};

ServerFirst parse_server_first(const std::string& message) {
  ServerFirst out;
  const auto s = message.find(",s=");
  const auto i = message.find(",i=");
  if (message.rfind("r=", 0) != 0 || s == std::string::npos || i == std::string::npos || i < s) return out;
  out.nonce = message.substr(2, s - 2);
  out.salt_b64 = message.substr(s + 3, i - s - 3);
  // Optional attributes (XEP-0474's h=) may follow the iteration count.
  const auto after = message.find(',', i + 3);
  const std::string count = message.substr(i + 3, after == std::string::npos ? std::string::npos : after - i - 3);
  if (count.empty() || count.find_first_not_of("0123456789") != std::string::npos || count.size() > 9) return out;
  out.iterations = std::stoi(count);
  return out;
}

// The test's own SCRAM client (RFC 5802 §3), independent of the server code.
struct ScramClient {
  ScramHash hash = ScramHash::sha256;
  std::string user = "user";
  std::string password = "pencil";
  std::string gs2 = "n,,";
  std::string cnonce = "clientNONCEabc123";
  std::string cb_data;
  std::string bare;
  std::string expected_server_final;

  std::string first() {
    bare = "n=" + user + ",r=" + cnonce;
    return gs2 + bare;
  }

  std::string final(const std::string& server_first) {
    const ServerFirst parsed = parse_server_first(server_first);
    EXPECT_GT(parsed.iterations, 0) << server_first;
    const std::string nonce = parsed.nonce;
    const std::string salt = unb64(parsed.salt_b64);
    const int iterations = parsed.iterations;
    std::string salted(hash == ScramHash::sha1 ? 20 : 32, '\0');
    PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                      reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()), iterations,
                      md(hash), static_cast<int>(salted.size()), reinterpret_cast<unsigned char*>(salted.data()));
    const std::string client_key = hmac(hash, salted, "Client Key");
    const std::string without_proof = "c=" + b64(gs2 + cb_data) + ",r=" + nonce;
    const std::string auth_message = bare + "," + server_first + "," + without_proof;
    const std::string signature = hmac(hash, digest(hash, client_key), auth_message);
    std::string proof = client_key;
    for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = static_cast<char>(proof[i] ^ signature[i]);
    expected_server_final = "v=" + b64(hmac(hash, hmac(hash, salted, "Server Key"), auth_message));
    return without_proof + ",p=" + b64(proof);
  }
};

class FakeCredentials : public SaslCredentials {
 public:
  std::map<std::string, std::string, std::less<>> passwords{{"user", "pencil"}, {"juliet", "r0m30"}};
  std::map<std::string, std::string, std::less<>> salts{{"user", "salt-for-user-16"}};
  Errc lookup_error = Errc::not_found;  // for unknown users
  bool unavailable = false;
  std::string last_localpart;

  Result<ScramCredentials> scram(std::string_view localpart, ScramHash hash) override {
    last_localpart = std::string(localpart);
    if (unavailable) return fail(Errc::unavailable, "store down");
    auto it = passwords.find(localpart);
    if (it == passwords.end()) return fail(lookup_error, "no such user");
    auto salt = salts.find(localpart);
    return accounts::derive_scram_credentials(hash, it->second, salt == salts.end() ? "default-salt" : salt->second,
                                              4096);
  }

  Result<void> verify_plain(std::string_view localpart, std::string_view password) override {
    last_localpart = std::string(localpart);
    if (unavailable) return fail(Errc::unavailable, "store down");
    if (localpart == "disabled") return fail(Errc::permission_denied, "disabled");
    auto it = passwords.find(localpart);
    if (it == passwords.end() || it->second != password) return fail(Errc::unauthenticated, "bad");
    return ok();
  }
};

ChannelBinding tls_binding(std::string exporter = std::string(32, 'E')) {
  ChannelBinding cb;
  cb.offered_types = {"tls-exporter", "tls-server-end-point"};
  cb.data = [exporter](std::string_view type) -> Result<std::string> {
    if (type == "tls-exporter") return exporter;
    if (type == "tls-server-end-point") return std::string(32, 'S');
    return fail(Errc::invalid_argument, "unknown type");
  };
  return cb;
}

struct Outcome {
  SaslStep first;
  SaslStep last;
};

// Runs a whole exchange with the test client.
Outcome run(ScramServer& server, ScramClient& client) {
  Outcome out{server.start(client.first(), true), {}};
  if (out.first.kind != Kind::challenge) return out;
  out.last = server.step(client.final(out.first.data));
  return out;
}

TEST(ScramTest, Rfc5802Sha1Example) {
  FakeCredentials creds;
  creds.salts["user"] = unb64("QSXCR+Q6sek8bf92");
  ScramServer server(ScramHash::sha1, false, {}, creds, "secret", 4096, [] { return "3rfcNHYJY1ZVvWVs7j"; });
  EXPECT_EQ(server.mechanism_name(), "SCRAM-SHA-1");
  auto first = server.start("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", true);
  ASSERT_EQ(first.kind, Kind::challenge) << first.text;
  EXPECT_EQ(first.data, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
  auto last = server.step("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
  ASSERT_EQ(last.kind, Kind::success) << last.text;
  EXPECT_EQ(last.data, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
  EXPECT_EQ(server.authenticated_localpart(), "user");
  EXPECT_EQ(server.authzid(), "");
}

TEST(ScramTest, Rfc7677Sha256Example) {
  FakeCredentials creds;
  creds.salts["user"] = unb64("W22ZaJ0SNY7soEsUEjb6gQ==");
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret", 4096,
                     [] { return "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"; });
  auto first = server.start("n,,n=user,r=rOprNGfwEbeRWgbNEkqO", true);
  ASSERT_EQ(first.kind, Kind::challenge) << first.text;
  EXPECT_EQ(first.data, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  auto last = server.step(
      "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
      "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  ASSERT_EQ(last.kind, Kind::success) << last.text;
  EXPECT_EQ(last.data, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

// XEP-0474 version 0.5.0, §"Full Example", taken byte for byte: SCRAM-SHA-1-PLUS with
// tls-exporter, password "pencil". The h= value is base64(SHA-1("SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS
// \x1ftls-exporter\x1etls-server-end-point")) and the proof covers it; both were recomputed
// independently with Python's hashlib/hmac:
//   hashlib.pbkdf2_hmac("sha1", b"pencil", b64decode("QSXCR+Q6sek8bf92"), 4096) -> salted;
//   proof = ClientKey XOR HMAC(SHA1(ClientKey), bare + "," + server_first + "," + final_without_proof)
//   == "M/SIDjT+dfcxUh89jZEypRvFxB4=", server signature "MQrMPvv7yv4x4Cq4W4Ih25EqS2c=".
TEST(ScramDowngradeProtection, Xep0474FullExample) {
  FakeCredentials creds;
  creds.salts["user"] = unb64("QSXCR+Q6sek8bf92");
  ChannelBinding cb;
  cb.offered_types = {"tls-server-end-point", "tls-exporter"};
  cb.data = [](std::string_view type) -> Result<std::string> {
    if (type == "tls-exporter") return std::string("THIS IS FAKE CB DATA");
    return fail(Errc::invalid_argument, "unknown type");
  };
  ScramServer server(ScramHash::sha1, true, cb, creds, "secret", 4096,
                     [] { return "a09117a6-ac50-4f2f-93f1-93799c2bddf6"; });
  server.set_advertised({{"SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"}, {"tls-server-end-point", "tls-exporter"}});
  auto first = server.start("p=tls-exporter,,n=user,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6", true);
  ASSERT_EQ(first.kind, Kind::challenge) << first.text;
  EXPECT_EQ(first.data,
            "r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,s=QSXCR+Q6sek8bf92,i=4096,"
            "h=G6k/rBLDqgOhRRaCuuatSDFkJ08=");
  auto last = server.step(
      "c=cD10bHMtZXhwb3J0ZXIsLFRISVMgSVMgRkFLRSBDQiBEQVRB,"
      "r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,"
      "x=19C6532F-1CF4-4A27-A18D-DC9CEA41BBB3,p=M/SIDjT+dfcxUh89jZEypRvFxB4=");
  ASSERT_EQ(last.kind, Kind::success) << last.text;
  EXPECT_EQ(last.data, "v=MQrMPvv7yv4x4Cq4W4Ih25EqS2c=");
}

// hearth's own lists over TLS, recomputed with Python:
//   S = "\x1e".join(sorted(mechanisms)) + "\x1f" + "\x1e".join(sorted(types))
//   base64(sha256(S)) / base64(sha1(S)); without types, no "\x1f" part.
TEST(ScramDowngradeProtection, HashOfHearthsAdvertisedLists) {
  const AdvertisedSasl tls{{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"},
                           {"tls-exporter", "tls-server-end-point"}};
  EXPECT_EQ(scram_downgrade_protection_hash(ScramHash::sha256, tls), "HsVT3zgfiif56i/w96g+XTr+Rx/Yfkw1VkxOAdVb9Wk=");
  EXPECT_EQ(scram_downgrade_protection_hash(ScramHash::sha1, tls), "nAaaESufDLNmGNNHipta8+ZS38I=");
  const AdvertisedSasl no_binding{{"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"}, {}};
  EXPECT_EQ(scram_downgrade_protection_hash(ScramHash::sha256, no_binding),
            "J++Diu+JubnE6dLVvZjjI5KHnheOLsUSQWiw/prdbAA=");
  // A list a man in the middle trimmed (no -PLUS, no binding types) hashes differently.
  const AdvertisedSasl trimmed{{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}, {}};
  EXPECT_NE(scram_downgrade_protection_hash(ScramHash::sha256, trimmed),
            scram_downgrade_protection_hash(ScramHash::sha256, tls));
  // The order the lists were sent in does not matter.
  const AdvertisedSasl reordered{{"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"},
                                 {"tls-server-end-point", "tls-exporter"}};
  EXPECT_EQ(scram_downgrade_protection_hash(ScramHash::sha256, reordered),
            scram_downgrade_protection_hash(ScramHash::sha256, tls));
}

TEST(ScramDowngradeProtection, AttributeOnlyWhenAdvertisedAndCoveredByTheProof) {
  FakeCredentials creds;
  ScramServer plain(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient c1;
  auto out = run(plain, c1);
  EXPECT_EQ(out.first.data.find(",h="), std::string::npos) << out.first.data;
  EXPECT_EQ(out.last.kind, Kind::success);

  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  server.set_advertised({{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}, {}});
  ScramClient c2;
  out = run(server, c2);
  EXPECT_NE(out.first.data.find(",h=J++Diu+JubnE6dLVvZjjI5KHnheOLsUSQWiw/prdbAA="), std::string::npos) << out.first.data;
  ASSERT_EQ(out.last.kind, Kind::success) << out.last.text;
  EXPECT_EQ(out.last.data, c2.expected_server_final);

  // A client whose AuthMessage lacks h= (a man in the middle stripped it) fails the proof.
  ScramServer stripped(ScramHash::sha256, false, {}, creds, "secret");
  stripped.set_advertised({{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}, {}});
  ScramClient c3;
  auto first = stripped.start(c3.first(), true);
  ASSERT_EQ(first.kind, Kind::challenge);
  const std::string without_h = first.data.substr(0, first.data.find(",h="));
  EXPECT_EQ(stripped.step(c3.final(without_h)).kind, Kind::failure);
}

TEST(ScramTest, ClientRoundTripBothHashesWithRandomNonce) {
  for (auto hash : {ScramHash::sha1, ScramHash::sha256}) {
    FakeCredentials creds;
    ScramServer server(hash, false, {}, creds, "secret");
    ScramClient client;
    client.hash = hash;
    auto out = run(server, client);
    ASSERT_EQ(out.last.kind, Kind::success) << out.last.text;
    EXPECT_EQ(out.last.data, client.expected_server_final);
    // 24 random bytes → 32 base64 characters after the client nonce.
    const std::string nonce = parse_server_first(out.first.data).nonce;
    EXPECT_EQ(nonce.size(), std::string("clientNONCEabc123").size() + 32) << nonce;
    EXPECT_EQ(nonce.rfind("clientNONCEabc123", 0), 0u);
  }
}

TEST(ScramTest, WrongPasswordIsNotAuthorized) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client;
  client.password = "pencil2";
  auto out = run(server, client);
  ASSERT_EQ(out.first.kind, Kind::challenge);
  EXPECT_EQ(out.last.kind, Kind::failure);
  EXPECT_EQ(out.last.failure, SaslFailure::not_authorized);
  EXPECT_EQ(server.authenticated_localpart(), "");
}

TEST(ScramTest, UnknownUserLooksLikeWrongPassword) {
  FakeCredentials creds;
  auto attempt = [&](std::string user, std::string password) {
    ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
    ScramClient client;
    client.user = std::move(user);
    client.password = std::move(password);
    return run(server, client);
  };
  auto same_shape = [](const std::string& server_first) {
    const ServerFirst parsed = parse_server_first(server_first);
    return parsed.nonce.size() == 17 + 32 && parsed.nonce.rfind("clientNONCEabc123", 0) == 0 &&
           parsed.salt_b64.size() == 24 && parsed.salt_b64.ends_with("==") &&
           parsed.salt_b64.find_first_of("=") == 22 && parsed.iterations == 4096;
  };
  auto known = attempt("user", "wrong");
  auto unknown1 = attempt("nobody", "pencil");
  auto unknown2 = attempt("nobody", "other");
  auto unknown3 = attempt("somebody", "pencil");
  for (const auto* out : {&known, &unknown1, &unknown2, &unknown3}) {
    ASSERT_EQ(out->first.kind, Kind::challenge);
    EXPECT_TRUE(same_shape(out->first.data)) << out->first.data;
    EXPECT_EQ(out->last.kind, Kind::failure);
    EXPECT_EQ(out->last.failure, SaslFailure::not_authorized);
    EXPECT_EQ(out->last.text, known.last.text);
  }
  auto salt_of = [](const std::string& server_first) { return server_first.substr(server_first.find(",s=")); };
  EXPECT_EQ(salt_of(unknown1.first.data), salt_of(unknown2.first.data));
  EXPECT_NE(salt_of(unknown1.first.data), salt_of(unknown3.first.data));
  // Another server secret gives other fake salts.
  ScramServer other(ScramHash::sha256, false, {}, creds, "other-secret");
  ScramClient client;
  client.user = "nobody";
  EXPECT_NE(salt_of(other.start(client.first(), true).data), salt_of(unknown1.first.data));
}

TEST(ScramTest, StoreOutageIsTemporaryFailure) {
  FakeCredentials creds;
  creds.unavailable = true;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client;
  auto out = run(server, client);
  EXPECT_EQ(out.first.kind, Kind::failure);
  EXPECT_EQ(out.first.failure, SaslFailure::temporary_auth_failure);
}

TEST(ScramTest, PlusWithMatchingTlsExporter) {
  for (auto hash : {ScramHash::sha1, ScramHash::sha256}) {
    FakeCredentials creds;
    ScramServer server(hash, true, tls_binding(), creds, "secret");
    EXPECT_EQ(server.mechanism_name(), hash == ScramHash::sha1 ? "SCRAM-SHA-1-PLUS" : "SCRAM-SHA-256-PLUS");
    ScramClient client;
    client.hash = hash;
    client.gs2 = "p=tls-exporter,,";
    client.cb_data = std::string(32, 'E');
    auto out = run(server, client);
    ASSERT_EQ(out.last.kind, Kind::success) << out.first.text << out.last.text;
    EXPECT_EQ(out.last.data, client.expected_server_final);
  }
}

TEST(ScramTest, PlusWithTlsServerEndPoint) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, true, tls_binding(), creds, "secret");
  ScramClient client;
  client.gs2 = "p=tls-server-end-point,,";
  client.cb_data = std::string(32, 'S');
  EXPECT_EQ(run(server, client).last.kind, Kind::success);
}

TEST(ScramTest, PlusWithMismatchedBindingFails) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, true, tls_binding(), creds, "secret");
  ScramClient client;
  client.gs2 = "p=tls-exporter,,";
  client.cb_data = std::string(32, 'X');  // e.g. a MITM's different TLS session
  auto out = run(server, client);
  ASSERT_EQ(out.first.kind, Kind::challenge);
  EXPECT_EQ(out.last.kind, Kind::failure);
  EXPECT_EQ(out.last.failure, SaslFailure::not_authorized);
}

TEST(ScramTest, PlusWithUnsupportedTypeFails) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, true, tls_binding(), creds, "secret");
  auto step = server.start("p=tls-unique,,n=user,r=abc", true);
  EXPECT_EQ(step.kind, Kind::failure);
  EXPECT_EQ(step.failure, SaslFailure::not_authorized);
}

TEST(ScramTest, PlusWithoutBindingFlagIsRejected) {
  for (const char* first : {"n,,n=user,r=abc", "y,,n=user,r=abc"}) {
    FakeCredentials creds;
    ScramServer server(ScramHash::sha256, true, tls_binding(), creds, "secret");
    auto step = server.start(first, true);
    EXPECT_EQ(step.kind, Kind::failure) << first;
    EXPECT_EQ(step.failure, SaslFailure::malformed_request) << first;
  }
}

TEST(ScramTest, BindingFlagOnNonPlusIsRejected) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, tls_binding(), creds, "secret");
  auto step = server.start("p=tls-exporter,,n=user,r=abc", true);
  EXPECT_EQ(step.kind, Kind::failure);
  EXPECT_EQ(step.failure, SaslFailure::malformed_request);
}

TEST(ScramTest, YFlagIsDowngradeWhenPlusIsOffered) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, tls_binding(), creds, "secret");
  auto step = server.start("y,,n=user,r=abc", true);
  EXPECT_EQ(step.kind, Kind::failure);
  EXPECT_EQ(step.failure, SaslFailure::not_authorized);

  // Without -PLUS on offer "y" is fine and c= covers "y,,".
  ScramServer plain_tcp(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client;
  client.gs2 = "y,,";
  auto out = run(plain_tcp, client);
  EXPECT_EQ(out.last.kind, Kind::success) << out.last.text;

  // "n" is allowed with -PLUS on offer: the client just does not support binding.
  ScramServer over_tls(ScramHash::sha256, false, tls_binding(), creds, "secret");
  ScramClient n_client;
  EXPECT_EQ(run(over_tls, n_client).last.kind, Kind::success);
}

TEST(ScramTest, AuthzidIsDecoded) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client;
  client.gs2 = "n,a=juliet=2Cx=3Dy@example.com,";
  auto out = run(server, client);
  ASSERT_EQ(out.last.kind, Kind::success) << out.last.text;
  EXPECT_EQ(server.authzid(), "juliet,x=y@example.com");
}

TEST(ScramTest, UsernameEscapesAndPreparation) {
  FakeCredentials creds;
  creds.passwords["us,er=x"] = "pencil";
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client;
  client.user = "US=2Cer=3Dx";
  auto out = run(server, client);
  EXPECT_EQ(creds.last_localpart, "us,er=x");
  ASSERT_EQ(out.last.kind, Kind::success) << out.last.text;
  EXPECT_EQ(server.authenticated_localpart(), "us,er=x");

  // SASLprep drops the soft hyphen, then PRECIS lowercases.
  ScramServer server2(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client2;
  client2.user = "U\u00ADser";
  EXPECT_EQ(run(server2, client2).last.kind, Kind::success);
  EXPECT_EQ(creds.last_localpart, "user");
}

TEST(ScramTest, ProhibitedUsernameFails) {
  for (const char* user : {"us\u0007er", "us\u0221er", "a@b", "us\xC3\x28"}) {
    FakeCredentials creds;
    ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
    auto step = server.start(std::string("n,,n=") + user + ",r=abc", true);
    EXPECT_EQ(step.kind, Kind::failure) << user;
  }
}

TEST(ScramTest, MalformedClientFirst) {
  for (const std::string& first : std::vector<std::string>{
           "", "n", "n,", "x,,n=user,r=abc", "p=,,n=user,r=abc", "n,,r=abc", "n,,n=user", "n,,n=user,r=",
        "n,,r=abc,n=user", "n,,n=us=2Der,r=abc", "n,,n=us=er,r=abc", "n,,n=user=,r=abc", "n,,n=,r=abc",
        "n,,n=user,r=a b", "n,,n=user,r=abc,x", "n,,m=ext,n=user,r=abc", "n,x,n=user,r=abc",
        "n,a=,n=user,r=abc", "n,a=b=2X,n=user,r=abc", std::string("n,,n=us\0er,r=abc", 15),
        "n,,n=user,r=abc," + std::string(9000, 'a')}) {
    FakeCredentials creds;
    ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
    auto step = server.start(first, true);
    EXPECT_EQ(step.kind, Kind::failure) << first;
    EXPECT_EQ(step.failure, SaslFailure::malformed_request) << first;
    // Nothing more is accepted after a failure.
    EXPECT_EQ(server.step("c=biws,r=abc,p=AAAA").kind, Kind::failure);
  }
}

TEST(ScramTest, UnknownExtensionsAreIgnored) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  auto step = server.start("n,,n=user,r=abc,x=ext", true);
  EXPECT_EQ(step.kind, Kind::challenge);
}

TEST(ScramTest, MalformedClientFinal) {
  auto attempt = [](auto mutate) {
    FakeCredentials creds;
    ScramServer server(ScramHash::sha256, false, {}, creds, "secret", 4096, [] { return "SERVER"; });
    ScramClient client;
    auto first = server.start(client.first(), true);
    EXPECT_EQ(first.kind, Kind::challenge);
    std::string final = client.final(first.data);
    return server.step(mutate(final));
  };
  const std::string nonce = "r=clientNONCEabc123SERVER";
  struct Case {
    std::function<std::string(std::string)> mutate;
    SaslFailure expected;
  };
  std::vector<Case> cases = {
      {[](std::string f) { return f.substr(0, f.find(",p=")); }, SaslFailure::malformed_request},  // no proof
      {[](std::string f) { return f.substr(f.find(",r=") + 1); }, SaslFailure::malformed_request},  // no c=
      {[&](std::string f) { return f.replace(f.find(nonce), nonce.size(), nonce + "x"); },
       SaslFailure::malformed_request},  // wrong nonce
      {[&](std::string f) { return f.replace(f.find(nonce), nonce.size(), "r=clientNONCEabc123"); },
       SaslFailure::malformed_request},  // client nonce only
      {[](std::string f) { return f.replace(0, 6, "c=eSws"); }, SaslFailure::not_authorized},  // c= of "y,,"
      {[](std::string f) { return f.replace(0, 6, "c=biws=="); }, SaslFailure::not_authorized},  // not canonical
      {[](std::string f) { return f.substr(0, f.find(",p=")) + ",p=!!!!"; }, SaslFailure::malformed_request},
      {[](std::string f) { return f.substr(0, f.find(",p=")) + ",p=AAAA"; }, SaslFailure::malformed_request},
      {[](std::string f) { return f + ",x=1"; }, SaslFailure::malformed_request},  // p= not last
      {[](std::string f) { return f + ","; }, SaslFailure::malformed_request},
      {[](std::string) { return std::string(); }, SaslFailure::malformed_request},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto step = attempt(cases[i].mutate);
    EXPECT_EQ(step.kind, Kind::failure) << i;
    EXPECT_EQ(step.failure, cases[i].expected) << i << " " << step.text;
  }
  // An extension before the proof is part of AuthMessage and ignored otherwise.
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  ScramClient client;
  auto first = server.start(client.first(), true);
  std::string final = client.final(first.data);
  EXPECT_EQ(server.step(final.insert(final.find(",p="), ",x=1")).kind, Kind::failure);  // proof covers it
}

TEST(ScramTest, ExchangeWithoutInitialResponse) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  auto empty = server.start("", false);
  ASSERT_EQ(empty.kind, Kind::challenge);
  EXPECT_EQ(empty.data, "");
  ScramClient client;
  auto first = server.step(client.first());
  ASSERT_EQ(first.kind, Kind::challenge);
  auto last = server.step(client.final(first.data));
  EXPECT_EQ(last.kind, Kind::success);
  auto after = server.step("anything");
  EXPECT_EQ(after.kind, Kind::failure);
  EXPECT_EQ(after.failure, SaslFailure::malformed_request);
  EXPECT_EQ(server.authenticated_localpart(), "user");
}

TEST(ScramTest, StepBeforeStartAndDoubleStart) {
  FakeCredentials creds;
  ScramServer server(ScramHash::sha256, false, {}, creds, "secret");
  EXPECT_EQ(server.step("n,,n=user,r=abc").kind, Kind::failure);
  ScramServer twice(ScramHash::sha256, false, {}, creds, "secret");
  EXPECT_EQ(twice.start("", false).kind, Kind::challenge);
  EXPECT_EQ(twice.start("", false).kind, Kind::failure);
}

TEST(SaslPrepTest, Rfc4013Examples) {
  EXPECT_EQ(*sasl_prep("I\u00ADX"), "IX");          // soft hyphen mapped to nothing
  EXPECT_EQ(*sasl_prep("user"), "user");
  EXPECT_EQ(*sasl_prep("USER"), "USER");            // no case folding
  EXPECT_EQ(*sasl_prep("\u00AA"), "a");             // NFKC
  EXPECT_EQ(*sasl_prep("\u2168"), "IX");            // NFKC
  EXPECT_EQ(*sasl_prep("a\u00A0b"), "a b");         // non-ASCII space → SPACE
  EXPECT_FALSE(sasl_prep("\u0007"));                // prohibited control
  EXPECT_FALSE(sasl_prep("\u0627\u0031"));          // bidi violation
  EXPECT_FALSE(sasl_prep("a\u0221"));               // unassigned in Unicode 3.2
  EXPECT_FALSE(sasl_prep("\u00AD"));                // maps to empty
  EXPECT_FALSE(sasl_prep(""));
  EXPECT_FALSE(sasl_prep("\xC3\x28"));              // invalid UTF-8
}

TEST(PlainTest, GoodCredentials) {
  FakeCredentials creds;
  PlainServer server(creds);
  auto step = server.start(std::string("\0Juliet\0r0m30", 13), true);
  ASSERT_EQ(step.kind, Kind::success) << step.text;
  EXPECT_EQ(step.data, "");
  EXPECT_EQ(server.authenticated_localpart(), "juliet");
  EXPECT_EQ(server.authzid(), "");
  EXPECT_EQ(server.mechanism_name(), "PLAIN");
}

TEST(PlainTest, AuthzidAndSaslPreppedPassword) {
  FakeCredentials creds;
  PlainServer server(creds);
  using namespace std::string_literals;
  auto step = server.start("juliet@example.com\0juliet\0r0\xC2\xAD" "m30"s, true);
  ASSERT_EQ(step.kind, Kind::success) << step.text;
  EXPECT_EQ(server.authzid(), "juliet@example.com");
}

TEST(PlainTest, WithoutInitialResponse) {
  FakeCredentials creds;
  PlainServer server(creds);
  auto empty = server.start("", false);
  ASSERT_EQ(empty.kind, Kind::challenge);
  EXPECT_EQ(empty.data, "");
  EXPECT_EQ(server.step(std::string("\0juliet\0r0m30", 13)).kind, Kind::success);
  EXPECT_EQ(server.step(std::string("\0juliet\0r0m30", 13)).kind, Kind::failure);
}

TEST(PlainTest, Failures) {
  auto attempt = [](std::string message, FakeCredentials creds = {}) {
    PlainServer server(creds);
    auto step = server.start(message, true);
    EXPECT_EQ(server.authenticated_localpart(), "");
    return step;
  };
  using namespace std::string_literals;
  EXPECT_EQ(attempt("\0juliet\0wrong"s).failure, SaslFailure::not_authorized);
  EXPECT_EQ(attempt("\0nobody\0r0m30"s).failure, SaslFailure::not_authorized);
  EXPECT_EQ(attempt("\0disabled\0x"s).failure, SaslFailure::account_disabled);
  EXPECT_EQ(attempt("\0jul iet\0r0m30"s).failure, SaslFailure::not_authorized);  // bad localpart
  EXPECT_EQ(attempt("\0juliet\0a\x07"s).failure, SaslFailure::not_authorized);  // prohibited in password
  FakeCredentials down;
  down.unavailable = true;
  EXPECT_EQ(attempt("\0juliet\0r0m30"s, down).failure, SaslFailure::temporary_auth_failure);
  for (std::string bad : {""s, "juliet"s, "\0juliet"s, "\0juliet\0"s, "\0\0r0m30"s, "\0juliet\0r0m30\0"s,
                          "a\0b\0c\0d"s, "\0juliet\0"s + std::string(256, 'p'), std::string(256, 'z') + "\0juliet\0r0m30"s,
                          "\0jul\xC3\x28\0r0m30"s}) {
    auto step = attempt(bad);
    EXPECT_EQ(step.kind, Kind::failure);
    EXPECT_EQ(step.failure, SaslFailure::malformed_request);
  }
  EXPECT_EQ(attempt("\0juliet\0"s + std::string(255, 'p')).failure, SaslFailure::not_authorized);
}

TEST(SaslTest, FailureConditionNames) {
  EXPECT_EQ(sasl_failure_condition(SaslFailure::aborted), "aborted");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::account_disabled), "account-disabled");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::credentials_expired), "credentials-expired");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::encryption_required), "encryption-required");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::incorrect_encoding), "incorrect-encoding");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::invalid_authzid), "invalid-authzid");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::invalid_mechanism), "invalid-mechanism");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::malformed_request), "malformed-request");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::mechanism_too_weak), "mechanism-too-weak");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::not_authorized), "not-authorized");
  EXPECT_EQ(sasl_failure_condition(SaslFailure::temporary_auth_failure), "temporary-auth-failure");
}

TEST(SaslTest, OfferedMechanismsAndFactory) {
  FakeCredentials creds;
  const ChannelBinding none;
  const ChannelBinding tls = tls_binding();
  EXPECT_EQ(offered_sasl_mechanisms(false, none), (std::vector<std::string>{"SCRAM-SHA-256", "SCRAM-SHA-1"}));
  EXPECT_EQ(offered_sasl_mechanisms(true, tls),
            (std::vector<std::string>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
                                      "PLAIN"}));
  for (const auto& name : offered_sasl_mechanisms(true, tls)) {
    auto mechanism = make_sasl_mechanism(name, true, tls, creds, "secret");
    ASSERT_NE(mechanism, nullptr) << name;
    EXPECT_EQ(mechanism->mechanism_name(), name);
  }
  EXPECT_EQ(make_sasl_mechanism("PLAIN", false, none, creds, "secret"), nullptr);
  EXPECT_EQ(make_sasl_mechanism("SCRAM-SHA-256-PLUS", true, none, creds, "secret"), nullptr);
  EXPECT_EQ(make_sasl_mechanism("DIGEST-MD5", true, tls, creds, "secret"), nullptr);
  EXPECT_EQ(make_sasl_mechanism("scram-sha-256", true, tls, creds, "secret"), nullptr);

  // A factory-made -PLUS mechanism does the full exchange.
  auto plus = make_sasl_mechanism("SCRAM-SHA-1-PLUS", true, tls, creds, "secret");
  ScramClient client;
  client.hash = ScramHash::sha1;
  client.gs2 = "p=tls-exporter,,";
  client.cb_data = std::string(32, 'E');
  auto first = plus->start(client.first(), true);
  ASSERT_EQ(first.kind, Kind::challenge);
  EXPECT_EQ(plus->step(client.final(first.data)).kind, Kind::success);
}

}  // namespace
}  // namespace hearth::xmpp
