// Helpers shared by the IQ module tests: a reply recorder, XML from text, a session.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/store.h"
#include "xmpp/im.h"
#include "xmpp/iq_table.h"
#include "net/net.h"
#include "xmpp/xml.h"

namespace hearth::xmpp::testing {

// A stream connection that records what is sent and runs posted work at once.
struct FakeConnection final : net::StreamConnection {
  std::vector<std::string> sent;
  bool closed = false;
  void send(std::string bytes) override { sent.push_back(std::move(bytes)); }
  void close() override { closed = true; }
  void start_tls(std::function<void(Result<void>)>, std::string) override {}
  bool is_tls() const override { return true; }
  std::string remote_ip() const override { return "127.0.0.1"; }
  std::string server_name() const override { return {}; }
  std::string alpn() const override { return {}; }
  std::string tls_version() const override { return "TLSv1.3"; }
  Result<std::string> channel_binding(std::string_view) const override { return fail(Errc::unavailable, "fake"); }
  void set_read_rate(std::size_t, std::size_t) override {}
  void set_idle_timeout(int) override {}
  void post(std::function<void()> fn) override { fn(); }
  void post_after(std::chrono::milliseconds, std::function<void()> fn) override { fn(); }
  std::vector<std::string> stanzas() const {
    std::vector<std::string> out;
    for (const auto& s : sent)
      if (s.rfind("<r ", 0) != 0) out.push_back(s);
    return out;
  }
};

// Records what a handler answered.
struct FakeReply final : IqReply {
  int calls = 0;
  bool is_result = false;
  std::optional<Element> payload;
  std::string type, condition, text;
  std::optional<Element> app_condition;
  void error_with(std::string_view t, std::string_view c, Element app, std::string_view x) override {
    error(t, c, x);
    app_condition = std::move(app);
  }
  void result(std::optional<Element> p) override {
    ++calls;
    is_result = true;
    payload = std::move(p);
  }
  void error(std::string_view t, std::string_view c, std::string_view x) override {
    ++calls;
    type = t;
    condition = c;
    text = x;
  }
};

inline Element parse(std::string_view xml) {
  auto e = parse_element(xml);
  EXPECT_TRUE(e) << xml;
  return e ? std::move(*e) : Element("invalid");
}

// Runs the entry `target` selects for an <iq type=type/> carrying `payload`, addressed to
// `to`, as routing would; the test fails unless an entry answers exactly once.
inline FakeReply run_iq(const IqTable& table, const SessionIdentity& me, std::string type, Element payload,
                        const std::string& to, IqTarget target) {
  Element iq("iq", std::string(kClientNs));
  iq.set_attr("type", std::move(type));
  iq.set_attr("id", "t1");
  const Element& p = iq.add_child(std::move(payload));
  FakeReply reply;
  const IqEntry* entry = table.find(p.ns(), p.name(), target);
  EXPECT_NE(entry, nullptr) << p.serialize();
  if (entry) entry->handler(me, to, iq, p, reply);
  EXPECT_EQ(reply.calls, 1);
  return reply;
}

inline SessionIdentity session(std::string local, std::string resource = "phone") {
  SessionIdentity me;
  me.localpart = local;
  me.domain = "localhost";
  me.resource = resource;
  me.bare = local + "@localhost";
  me.full = me.bare + "/" + resource;
  me.id = 1;
  return me;
}

// A fixture with a fresh SQLite store in a per-test temporary directory. reopen_store()
// closes and opens it again, for persistence tests; derived fixtures drop whatever uses
// the store before calling it, and before this fixture's TearDown.
struct StoreFixture : ::testing::Test {
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("hearth-" + std::to_string(::getpid()) + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                        .string();
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  ManualClock clock;
  std::unique_ptr<store::Store> db;

  StoreFixture() {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override {
    db.reset();
    std::filesystem::remove_all(dir);
  }
  // False (with a test failure recorded) if the store cannot be opened.
  bool reopen_store(int readers = 1) {
    if (db) db->close();
    db.reset();
    auto s = store::Store::open_sqlite({dir + "/db.sqlite", readers, 64, 1000}, log, metrics);
    EXPECT_TRUE(s) << s.error().describe();
    if (!s) return false;
    db = std::move(*s);
    return true;
  }
};

}  // namespace hearth::xmpp::testing
