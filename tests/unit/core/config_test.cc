#include "core/config.h"

#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

namespace hearth {
namespace {

TEST(Config, EmptyTextGivesDefaults) {
  auto c = parse_config("", "hearth.toml");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->data_dir, "./data");
  ASSERT_EQ(c->domains.size(), 1u);
  EXPECT_EQ(c->primary_domain().name, "localhost");
  EXPECT_EQ(c->primary_domain().registration, "invite");
  EXPECT_EQ(c->http_port, 8008);
}

TEST(Config, ParsesSectionsAndDomains) {
  auto c = parse_config(R"(
[server]
data_dir = "/srv/hearth"
[[domain]]
name = "a.example"
registration = "open"
[[domain]]
name = "b.example"
[http]
bind = ["0.0.0.0", "::"]
port = 0
[limits]
requests_per_second_per_ip = 2.5
max_connections = 20
)",
                        "x.toml");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->data_dir, "/srv/hearth");
  ASSERT_EQ(c->domains.size(), 2u);
  EXPECT_EQ(c->domains[0].registration, "open");
  EXPECT_EQ(c->domains[1].registration, "invite");
  EXPECT_EQ(c->http_bind.size(), 2u);
  EXPECT_EQ(c->http_port, 0);
  EXPECT_DOUBLE_EQ(c->requests_per_second_per_ip, 2.5);
  EXPECT_EQ(c->max_connections_per_ip, 20);  // clamped to max_connections
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  auto c = parse_config("[http]\nport = = 3\n", "bad.toml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::invalid_argument);
  EXPECT_NE(c.error().message.find("bad.toml:2:"), std::string::npos) << c.error().message;
}

TEST(Config, UnknownKeyNamesFileLineAndKey) {
  auto c = parse_config("[http]\nport = 1\nprot = 2\n", "typo.toml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("typo.toml:3:"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("'http.prot'"), std::string::npos) << c.error().message;
}

TEST(Config, WrongTypeAndRangeAreErrors) {
  auto t = parse_config("[http]\nport = \"8008\"\n", "t.toml");
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("'http.port'"), std::string::npos);
  EXPECT_NE(t.error().message.find("integer"), std::string::npos);
  auto r = parse_config("[http]\nport = 70000\n", "r.toml");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("between"), std::string::npos);
  auto e = parse_config("[log]\nlevel = \"loud\"\n", "e.toml");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("one of"), std::string::npos);
}

TEST(Config, DomainErrors) {
  auto missing = parse_config("[[domain]]\nregistration = \"open\"\n", "d.toml");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("domain[0].name"), std::string::npos);
  auto policy = parse_config("[[domain]]\nname = \"x\"\nregistration = \"maybe\"\n", "d.toml");
  ASSERT_FALSE(policy);
  EXPECT_NE(policy.error().message.find("d.toml:3:"), std::string::npos) << policy.error().message;
  auto dup = parse_config("[[domain]]\nname = \"x\"\n[[domain]]\nname = \"x\"\n", "d.toml");
  ASSERT_FALSE(dup);
  auto half = parse_config("[[domain]]\nname = \"x\"\ntls_cert = \"/c\"\n", "d.toml");
  ASSERT_FALSE(half);
}

TEST(Config, MissingFileIsNotFound) {
  auto c = load_config_file("/nonexistent/hearth.toml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::not_found);
}

// Extracts `| `key` | `default` | ...` rows from the configuration reference.
std::map<std::string, std::string> documented_keys() {
  std::ifstream in(std::string(HEARTH_SOURCE_DIR) + "/docs/configuration.md");
  std::map<std::string, std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    auto k1 = line.find('`') + 1;
    auto k2 = line.find('`', k1);
    auto d1 = line.find('`', k2 + 1) + 1;
    auto d2 = line.find("` |", d1);
    out[line.substr(k1, k2 - k1)] = line.substr(d1, d2 - d1);
  }
  return out;
}

TEST(ConfigDoc, DocumentsEveryKey) {
  auto doc = documented_keys();
  ASSERT_FALSE(doc.empty()) << "docs/configuration.md has no key table";
  std::map<std::string, std::string> code;
  for (const auto& k : config_keys()) code[std::string(k.key)] = std::string(k.default_value);
  for (const auto& [key, def] : code) {
    auto it = doc.find(key);
    ASSERT_NE(it, doc.end()) << "key '" << key << "' is not documented";
    EXPECT_EQ(it->second, def) << "default of '" << key << "' differs";
  }
  for (const auto& [key, def] : doc) EXPECT_TRUE(code.count(key)) << "documented key '" << key << "' is not in the code";
}

// Every documented scalar key's default, written back as TOML, parses to the same config
// as no key at all: the documented defaults are the real ones.
TEST(ConfigDoc, DocumentedDefaultsAreTheRealDefaults) {
  std::string baseline_text;
  std::string section_text;
  std::map<std::string, std::string> by_section;
  for (const auto& k : config_keys()) {
    std::string key(k.key);
    if (key.rfind("domain[]", 0) == 0) continue;
    auto dot = key.find('.');
    by_section[key.substr(0, dot)] += key.substr(dot + 1) + " = " + std::string(k.default_value) + "\n";
  }
  for (const auto& [s, body] : by_section) section_text += "[" + s + "]\n" + body;
  auto explicit_defaults = parse_config(section_text, "defaults.toml");
  ASSERT_TRUE(explicit_defaults) << explicit_defaults.error().describe();
  auto implicit = parse_config("", "empty.toml");
  ASSERT_TRUE(implicit);
  EXPECT_EQ(explicit_defaults->data_dir, implicit->data_dir);
  EXPECT_EQ(explicit_defaults->http_port, implicit->http_port);
  EXPECT_EQ(explicit_defaults->https_port, implicit->https_port);
  EXPECT_EQ(explicit_defaults->http_bind, implicit->http_bind);
  EXPECT_EQ(explicit_defaults->max_connections, implicit->max_connections);
  EXPECT_EQ(explicit_defaults->max_connections_per_ip, implicit->max_connections_per_ip);
  EXPECT_EQ(explicit_defaults->max_inflight_requests, implicit->max_inflight_requests);
  EXPECT_EQ(explicit_defaults->http_max_body_bytes, implicit->http_max_body_bytes);
  EXPECT_EQ(explicit_defaults->store_readers, implicit->store_readers);
  EXPECT_EQ(explicit_defaults->scram_iterations, implicit->scram_iterations);
  EXPECT_EQ(explicit_defaults->invite_ttl_hours, implicit->invite_ttl_hours);
  EXPECT_EQ(explicit_defaults->disk_critical_percent, implicit->disk_critical_percent);
  EXPECT_EQ(explicit_defaults->log_level, implicit->log_level);
  EXPECT_EQ(explicit_defaults->fd_reserve, implicit->fd_reserve);
}

}  // namespace
}  // namespace hearth
