// Messages from bound clients are archived by group commit (im.h, handle_from_client):
// their rows wait in the store's writer queue, many sessions share one commit, and a
// message is delivered and reported finished (the XEP-0198 ack) only after its commit.
#include <sodium.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "accounts/accounts.h"
#include "module_test_support.h"
#include "xmpp/registry.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {
namespace {

using testing::FakeConnection;

constexpr auto kDeadline = std::chrono::seconds(30);

// Stands in for net's worker pool: one thread running posted jobs in order.
class OneThreadExecutor {
 public:
  OneThreadExecutor() : thread_([this] { run(); }) {}
  ~OneThreadExecutor() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool post(std::function<void()> fn) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      jobs_.push_back(std::move(fn));
    }
    cv_.notify_all();
    return true;
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

// A connection whose sends may come from any thread (deliveries run on the executor).
struct LockedConnection final : net::StreamConnection {
  FakeConnection inner;
  mutable std::mutex mutex;
  void send(std::string bytes) override {
    std::lock_guard lock(mutex);
    inner.send(std::move(bytes));
  }
  void close() override {}
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
    std::lock_guard lock(mutex);
    return inner.stanzas();
  }
};

// Counts finished stanzas; waits for a number of them with a deadline.
class FinishLine {
 public:
  ImRouter::Finished ticket() {
    return [this] {
      // Notified under the lock: the waiting test may end (and destroy this) right after.
      std::lock_guard lock(mutex_);
      ++finished_;
      cv_.notify_all();
    };
  }
  bool wait_for(int n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, kDeadline, [&] { return finished_ >= n; });
  }
  int count() {
    std::lock_guard lock(mutex_);
    return finished_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int finished_ = 0;
};

struct GroupCommitTest : testing::StoreFixture {
  std::unique_ptr<accounts::Accounts> accounts;
  std::unique_ptr<XmppStore> xstore;
  SessionRegistry registry;
  std::unique_ptr<ImRouter> im;
  OneThreadExecutor executor;
  std::map<std::string, std::shared_ptr<LockedConnection>> conns;
  std::map<std::string, SessionIdentity> sessions;
  std::uint64_t next_id = 1;

  void SetUp() override {
    ASSERT_EQ(sodium_init() >= 0, true);
    ASSERT_TRUE(reopen_store(2));
    accounts::AccountsOptions ao;
    ao.password_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    ao.password_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    auto a = accounts::Accounts::open(*db, clock, log, ao);
    ASSERT_TRUE(a) << a.error().describe();
    accounts = std::move(*a);
    ASSERT_TRUE(accounts->ensure_domain("localhost", accounts::RegistrationPolicy::closed));
    xstore = std::make_unique<XmppStore>(*db, clock);
    ASSERT_TRUE(xstore->migrate());
    im = std::make_unique<ImRouter>(std::vector<std::string>{"localhost"}, *accounts, *xstore, registry, clock, log,
                                    metrics);
    im->set_executor([this](std::function<void()> fn) { return executor.post(std::move(fn)); });
  }
  void TearDown() override {
    db->close();  // runs every queued job's `done` before the router goes
    im.reset();
    StoreFixture::TearDown();
  }

  // Creates the account and binds one available session for it.
  const SessionIdentity& online(const std::string& local) {
    EXPECT_TRUE(accounts->create_user("localhost", local, "secret", false));
    auto conn = std::make_shared<LockedConnection>();
    SessionIdentity me = testing::session(local);
    me.id = next_id++;
    me.sink = std::make_shared<SessionSink>(conn);
    auto entry = std::make_shared<SessionEntry>();
    entry->full_jid = me.full;
    entry->resource = me.resource;
    entry->sink = me.sink;
    entry->available = true;
    entry->id = me.id;
    registry.bind(me.bare, entry);
    conns[local] = conn;
    return sessions[local] = me;
  }

  Element chat(const std::string& to_local, const std::string& body) {
    Element m("message", std::string(kClientNs));
    m.set_attr("type", "chat");
    m.set_attr("to", to_local + "@localhost/phone");
    m.add_child(Element("body", std::string(kClientNs))).add_text(body);
    return m;
  }

  // Bodies of the messages a session received, in order.
  std::vector<std::string> bodies_received(const std::string& local) {
    std::vector<std::string> out;
    for (const auto& s : conns[local]->stanzas()) {
      auto e = parse_element(s);
      if (!e || e->name() != "message" || e->attr("type") == "error") continue;
      if (const Element* body = e->child("body", kClientNs)) out.push_back(body->text());
    }
    return out;
  }

  std::vector<std::string> archived_bodies(const std::string& owner_local) {
    ArchiveQuery q;
    q.max = 250;
    auto page = xstore->query_archive(owner_local + "@localhost", q);
    EXPECT_TRUE(page) << page.error().describe();
    std::vector<std::string> out;
    if (!page) return out;
    for (const auto& item : page->items) {
      auto e = parse_element(item.stanza);
      if (e && e->child("body", kClientNs)) out.push_back(e->child("body", kClientNs)->text());
    }
    return out;
  }

  // Occupies the store's writer until the returned promise is set, so that what is
  // submitted meanwhile queues up for the next batch.
  std::promise<void> hold_writer() {
    std::promise<void> release;
    auto released = release.get_future().share();
    auto holding = std::make_shared<std::promise<void>>();
    auto started = holding->get_future();
    db->write(
        [released, holding](store::Transaction&) -> Result<void> {
          holding->set_value();
          released.wait();
          return ok();
        },
        nullptr);
    started.wait();
    return release;
  }

  std::uint64_t commits() {
    return metrics.counter("hearth_store_commits_total", "Group commits (batches of write jobs)").value();
  }
};

TEST_F(GroupCommitTest, MessageIsDeliveredAndFinishedOnlyAfterItsCommit) {
  online("alice");
  online("bob");
  FinishLine line;
  std::promise<void> release = hold_writer();
  im->handle_from_client(sessions["alice"], chat("bob", "hello"), line.ticket());
  // handle_from_client returned while the archive rows wait for the writer: nothing is
  // acknowledged, delivered or stored yet.
  EXPECT_EQ(line.count(), 0);
  EXPECT_TRUE(bodies_received("bob").empty());
  EXPECT_TRUE(archived_bodies("alice").empty());

  release.set_value();
  ASSERT_TRUE(line.wait_for(1));
  EXPECT_EQ(bodies_received("bob"), std::vector<std::string>{"hello"});
  EXPECT_EQ(archived_bodies("alice"), std::vector<std::string>{"hello"});
  EXPECT_EQ(archived_bodies("bob"), std::vector<std::string>{"hello"});
  // The delivered copy carries the stanza-id of bob's archive row.
  auto delivered = parse_element(conns["bob"]->stanzas().back());
  ASSERT_TRUE(delivered);
  const Element* sid = delivered->child("stanza-id", "urn:xmpp:sid:0");
  ASSERT_NE(sid, nullptr);
  EXPECT_EQ(sid->attr("by"), "bob@localhost");
  ArchiveQuery q;
  auto page = xstore->query_archive("bob@localhost", q);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].id, sid->attr("id"));
}

TEST_F(GroupCommitTest, MessagesOfManySessionsShareOneCommit) {
  constexpr int kSenders = 20;
  online("sink");
  for (int i = 0; i < kSenders; ++i) online("s" + std::to_string(i));
  FinishLine line;
  std::promise<void> release = hold_writer();
  std::uint64_t before = commits();
  for (int i = 0; i < kSenders; ++i)
    im->handle_from_client(sessions["s" + std::to_string(i)], chat("sink", "m" + std::to_string(i)), line.ticket());
  release.set_value();
  ASSERT_TRUE(line.wait_for(kSenders));
  // One commit for the held job, one for all twenty messages (max_batch is 64 here).
  EXPECT_EQ(commits() - before, 2u);
  EXPECT_EQ(bodies_received("sink").size(), static_cast<std::size_t>(kSenders));
  EXPECT_EQ(archived_bodies("sink").size(), static_cast<std::size_t>(kSenders));
}

TEST_F(GroupCommitTest, EachConversationKeepsItsOrder) {
  constexpr int kPerSender = 40;
  online("bob");
  online("alice");
  online("carol");
  FinishLine line;
  // Like a session: the next stanza goes in only once the previous one finished.
  std::function<void(std::string, int)> send_from = [&](std::string who, int i) {
    if (i == kPerSender) return;
    auto ticket = line.ticket();
    im->handle_from_client(sessions[who], chat("bob", who + std::to_string(i)), [&, who, i, ticket] {
      send_from(who, i + 1);
      ticket();
    });
  };
  send_from("alice", 0);
  send_from("carol", 0);
  ASSERT_TRUE(line.wait_for(2 * kPerSender));
  auto in_order_from = [](const std::vector<std::string>& bodies, const std::string& who) {
    std::vector<std::string> mine;
    for (const auto& b : bodies)
      if (b.rfind(who, 0) == 0) mine.push_back(b);
    std::vector<std::string> expected;
    for (int i = 0; i < kPerSender; ++i) expected.push_back(who + std::to_string(i));
    return mine == expected;
  };
  for (const std::string who : {"alice", "carol"}) {
    EXPECT_TRUE(in_order_from(bodies_received("bob"), who)) << who;
    EXPECT_TRUE(in_order_from(archived_bodies("bob"), who)) << who;
    EXPECT_TRUE(in_order_from(archived_bodies(who), who)) << who;
  }
}

TEST_F(GroupCommitTest, FailedMessageIsAnsweredAndTheRestOfItsBatchCommits) {
  online("alice");
  online("bob");
  online("carol");
  // Carol's archive refuses what bob sends her (a trigger on the writer's connection).
  auto trig = db->write_sync([](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "CREATE TEMP TRIGGER refuse_carol BEFORE INSERT ON xmpp_archive WHEN NEW.owner = 'carol@localhost' AND NEW.with_jid = 'bob@localhost' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  ASSERT_TRUE(trig) << trig.error().describe();
  FinishLine line;
  std::promise<void> release = hold_writer();
  std::uint64_t before = commits();
  im->handle_from_client(sessions["alice"], chat("bob", "first"), line.ticket());
  im->handle_from_client(sessions["bob"], chat("carol", "lost"), line.ticket());
  im->handle_from_client(sessions["carol"], chat("alice", "third"), line.ticket());
  release.set_value();
  ASSERT_TRUE(line.wait_for(3));
  EXPECT_EQ(commits() - before, 2u);  // all three messages were in one batch
  EXPECT_EQ(bodies_received("bob"), std::vector<std::string>{"first"});
  EXPECT_EQ(bodies_received("alice"), std::vector<std::string>{"third"});
  EXPECT_TRUE(bodies_received("carol").empty());
  EXPECT_EQ(archived_bodies("bob"), std::vector<std::string>{"first"});  // not its copy of "lost"
  EXPECT_EQ(archived_bodies("alice"), (std::vector<std::string>{"first", "third"}));
  // Bob is told that his message was not stored.
  bool told = false;
  for (const auto& s : conns["bob"]->stanzas()) {
    auto e = parse_element(s);
    if (e && e->name() == "message" && e->attr("type") == "error") told = true;
  }
  EXPECT_TRUE(told);
}

}  // namespace
}  // namespace hearth::xmpp
