// In-process tests of the CryptPad service: fake websocket connections, a real store in a
// temporary directory, the offload run inline. Replies to channel messages come from the
// store's writer thread, so tests wait for them (with a deadline) instead of sleeping.
#include "cryptpad/cryptpad.h"

#include <gtest/gtest.h>
#include <sodium.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>

#include "core/clock.h"
#include "core/json.h"
#include "cryptpad/channel_store.h"
#include "cryptpad/protocol.h"
#include "store/store.h"

namespace hearth::cryptpad {
namespace {

class FakeConnection final : public net::WebSocketConnection {
 public:
  void send(std::string message, bool) override {
    std::lock_guard lock(mu_);
    sent_.push_back(std::move(message));
    cv_.notify_all();
  }
  void close(int code, std::string) override {
    std::lock_guard lock(mu_);
    close_code_ = code;
    cv_.notify_all();
  }
  const std::string& remote_ip() const override { return ip_; }

  // Waits until a sent frame equals `frame`; returns false after the deadline.
  bool wait_for(const std::string& frame) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return std::find(sent_.begin(), sent_.end(), frame) != sent_.end();
    });
  }
  bool wait_closed() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return close_code_ != 0; });
  }
  std::vector<std::string> sent() {
    std::lock_guard lock(mu_);
    return sent_;
  }
  std::string first() { return sent().at(0); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> sent_;
  int close_code_ = 0;
  std::string ip_ = "127.0.0.1";
};

struct Peer {
  std::shared_ptr<FakeConnection> conn = std::make_shared<FakeConnection>();
  net::WebSocketCallbacks cb;
  std::string id;
  void say(const std::string& frame) { cb.on_message(frame, false); }
};

struct CryptpadServiceTest : ::testing::Test {
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("hearth-cp-" + std::to_string(::getpid()) + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                        .string();
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  ManualClock clock;
  std::unique_ptr<store::Store> db;
  std::unique_ptr<CryptpadService> service;
  net::Router router;
  const std::string hk = "0123456789abcdef";

  void SetUp() override {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto s = store::Store::open_sqlite({dir + "/db.sqlite", 2, 64, 1000}, log, metrics);
    ASSERT_TRUE(s) << s.error().describe();
    db = std::move(*s);
    start_service();
  }

  // A fresh service on the same store (as after a restart); timers are collected, not run.
  void start_service() {
    service.reset();
    router = net::Router();
    timers.clear();
    CryptpadOptions o;
    o.history_keeper_id = hk;
    service = std::make_unique<CryptpadService>(
        o, *db, clock, log, metrics, [](std::function<void()> job) { job(); return true; },
        [this](std::chrono::milliseconds, std::function<void()> fn) { timers.push_back(std::move(fn)); });
    ASSERT_TRUE(service->migrate());
    service->install(router);
  }

  void fire_timers() {
    auto due = std::move(timers);
    timers.clear();
    for (auto& fn : due) fn();
  }

  std::string hk_frame(const Peer& p, const std::string& content) {
    return R"([0,")" + hk + R"(","MSG",")" + p.id + R"(",)" + json_quote(content) + "]";
  }

  // JOIN + GET_HISTORY that creates the channel with `metadata`; waits for the end marker.
  void create(Peer& p, const std::string& chan, const std::string& metadata) {
    p.say(R"([1,"JOIN",")" + chan + R"("])");
    std::string get = R"(["GET_HISTORY",")" + chan + R"(",{"txid":"t","metadata":)" + metadata + "}]";
    p.say(R"([2,"MSG",")" + hk + R"(",)" + json_quote(get) + "]");
    ASSERT_TRUE(p.conn->wait_for(hk_frame(p, R"({"state":1,"channel":")" + chan + R"(","txid":"t"})")));
  }

  std::vector<std::function<void()>> timers;
  void TearDown() override {
    service.reset();
    db->close();
    db.reset();
    std::filesystem::remove_all(dir);
  }

  Peer connect() {
    Peer p;
    net::HttpRequest req;
    p.cb = router.find_websocket("/cryptpad_websocket")->acceptor(p.conn, req);
    auto ident = parse_frame(p.conn->first(), ParseLimits{});
    EXPECT_TRUE(ident);
    p.id = ident->args.at(1).text;
    return p;
  }

  std::vector<std::string> stored(const std::string& chan) {
    ChannelStore cs(*db);
    std::vector<std::string> out;
    auto index = cs.index_sync(chan);
    EXPECT_TRUE(index);
    EXPECT_TRUE(cs.read_range_sync(chan, 1, index->last_seq, [&](const StoredMessage& m) { out.push_back(m.content); }));
    return out;
  }
};

TEST_F(CryptpadServiceTest, JoinListsTheHistoryKeeperAndMembers) {
  Peer a = connect(), b = connect();
  const std::string chan(32, 'a');
  a.say(R"([1,"JOIN",")" + chan + R"("])");
  EXPECT_EQ(a.conn->sent().at(1), R"([1,"JACK",")" + chan + R"("])");
  EXPECT_EQ(a.conn->sent().at(2), R"([0,")" + hk + R"(","JOIN",")" + chan + R"("])");
  EXPECT_EQ(a.conn->sent().at(3), R"([0,")" + a.id + R"(","JOIN",")" + chan + R"("])");
  b.say(R"([1,"JOIN",")" + chan + R"("])");
  EXPECT_EQ(b.conn->sent().at(3), R"([0,")" + a.id + R"(","JOIN",")" + chan + R"("])");
  EXPECT_TRUE(a.conn->wait_for(R"([0,")" + b.id + R"(","JOIN",")" + chan + R"("])"));
}

TEST_F(CryptpadServiceTest, MessageIsDurableBeforeItIsAcknowledgedAndRelayed) {
  Peer a = connect(), b = connect();
  const std::string chan(32, 'b');
  a.say(R"([1,"JOIN",")" + chan + R"("])");
  b.say(R"([1,"JOIN",")" + chan + R"("])");
  a.say(R"([2,"MSG",")" + chan + R"(","hello"])");
  ASSERT_TRUE(a.conn->wait_for(R"([2,"ACK"])"));
  EXPECT_EQ(stored(chan), std::vector<std::string>{"hello"});
  EXPECT_TRUE(b.conn->wait_for(R"([0,")" + a.id + R"(","MSG",")" + chan + R"(","hello"])"));
  // Not echoed to the sender.
  for (const auto& f : a.conn->sent()) EXPECT_EQ(f.find("\"hello\"]"), std::string::npos) << f;
}

TEST_F(CryptpadServiceTest, EphemeralChannelsAreNeverStored) {
  Peer a = connect(), b = connect();
  const std::string chan(34, 'c');
  a.say(R"([1,"JOIN",")" + chan + R"("])");
  b.say(R"([1,"JOIN",")" + chan + R"("])");
  a.say(R"([2,"MSG",")" + chan + R"(","cursor"])");
  ASSERT_TRUE(a.conn->wait_for(R"([2,"ACK"])"));
  EXPECT_TRUE(b.conn->wait_for(R"([0,")" + a.id + R"(","MSG",")" + chan + R"(","cursor"])"));
  EXPECT_TRUE(stored(chan).empty());
}

TEST_F(CryptpadServiceTest, SignedChannelRefusesBadSignatures) {
  ASSERT_GE(sodium_init(), 0);
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  const std::string key = base64_encode(std::string_view(reinterpret_cast<char*>(pk), sizeof pk));
  auto sign = [&](const std::string& payload) {
    std::string out(payload.size() + crypto_sign_BYTES, '\0');
    crypto_sign(reinterpret_cast<unsigned char*>(out.data()), nullptr,
                reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), sk);
    return base64_encode(out);
  };
  Peer a = connect();
  const std::string chan(32, 'd');
  a.say(R"([1,"JOIN",")" + chan + R"("])");
  // Create the channel with its validateKey (GET_HISTORY of the first member).
  std::string get = R"(["GET_HISTORY",")" + chan + R"(",{"txid":"t","metadata":{"validateKey":")" + key + R"("}}])";
  a.say(R"([2,"MSG",")" + hk + R"(",)" + json_quote(get) + "]");
  ASSERT_TRUE(a.conn->wait_for(R"([2,"ACK"])"));
  const std::string good = sign("payload one");
  a.say(R"([3,"MSG",")" + chan + R"(",")" + good + R"("])");
  ASSERT_TRUE(a.conn->wait_for(R"([3,"ACK"])"));
  std::string bad = sign("payload two");
  bad[10] = bad[10] == 'A' ? 'B' : 'A';
  a.say(R"([4,"MSG",")" + chan + R"(",")" + bad + R"("])");
  ASSERT_TRUE(a.conn->wait_for(R"([4,"ERROR"])"));
  EXPECT_EQ(stored(chan), std::vector<std::string>{good});
}

TEST_F(CryptpadServiceTest, SelfdestructChannelIsRemovedAfterTheLastMemberLeft) {
  const std::string chan(32, '5');
  Peer a = connect();
  create(a, chan, R"({"selfdestruct":true})");
  a.say(R"([3,"LEAVE",")" + chan + R"(",""])");
  ASSERT_EQ(timers.size(), 1u);
  // Someone rejoins before the delay: the pending removal is cancelled...
  Peer b = connect();
  b.say(R"([1,"JOIN",")" + chan + R"("])");
  EXPECT_TRUE(b.conn->wait_for(R"([1,"JACK",")" + chan + R"("])"));
  b.say(R"([2,"LEAVE",")" + chan + R"(",""])");
  ASSERT_EQ(timers.size(), 2u);
  // ...and only the newest timer removes it.
  fire_timers();
  Peer c = connect();
  c.say(R"([1,"JOIN",")" + chan + R"("])");
  c.say(R"([2,"MSG",")" + hk + R"(",)" + json_quote(R"(["GET_HISTORY",")" + chan + R"(",{"txid":"u"}])") + "]");
  EXPECT_TRUE(c.conn->wait_for(hk_frame(
      c, R"({"error":"EDELETED","message":"SELFDESTRUCT","channel":")" + chan + R"(","txid":"u"})")));
}

TEST_F(CryptpadServiceTest, SelfdestructChannelReopenedAfterARestartIsRemoved) {
  const std::string chan(32, '6');
  {
    Peer a = connect();
    create(a, chan, R"({"selfdestruct":true})");
  }
  start_service();  // the member never left: the server went away
  Peer b = connect();
  b.say(R"([1,"JOIN",")" + chan + R"("])");
  EXPECT_TRUE(b.conn->wait_for(R"([1,"ERROR","ESELFDESTRUCT",")" + chan + R"("])"));
}

TEST_F(CryptpadServiceTest, MalformedJsonClosesTheConnection) {
  Peer a = connect();
  a.say("{{{");
  EXPECT_TRUE(a.conn->wait_closed());
}

TEST(CryptpadChannelStore, HistorySurvivesReopeningTheStore) {
  std::string dir = (std::filesystem::temp_directory_path() / ("hearth-cps-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  const std::string chan(32, 'e');
  for (int round = 0; round < 2; ++round) {
    auto db = store::Store::open_sqlite({dir + "/db.sqlite", 1, 64, 1000}, log, metrics);
    ASSERT_TRUE(db);
    ChannelStore cs(**db);
    ASSERT_TRUE(cs.migrate());
    if (round == 0) {
      std::promise<Result<std::int64_t>> p1, p2;
      cs.append(chan, "u", "m1", 1, false, "", [&](Result<std::int64_t> r) { p1.set_value(r); });
      cs.append(chan, "u", "cp|x|m2", 2, true, "x", [&](Result<std::int64_t> r) { p2.set_value(r); });
      EXPECT_EQ(*p1.get_future().get(), 1);
      EXPECT_EQ(*p2.get_future().get(), 2);
    } else {
      auto index = cs.index_sync(chan);
      ASSERT_TRUE(index);
      EXPECT_EQ(index->last_seq, 2);
      EXPECT_EQ(index->checkpoints, std::vector<std::int64_t>{2});
      EXPECT_EQ(**cs.seq_of_hash_sync(chan, "m1"), 1);
      EXPECT_EQ(**cs.last_checkpoint_id_sync(chan), "x");
    }
    (*db)->close();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hearth::cryptpad
