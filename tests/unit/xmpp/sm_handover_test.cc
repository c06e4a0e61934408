#include "xmpp/sm_handover.h"

#include <gtest/gtest.h>

#include "module_test_support.h"
#include "store/store.h"
#include "xmpp/session_sink.h"

namespace hearth::xmpp {
namespace {

using testing::FakeConnection;
using testing::StoreFixture;

// Graceful restart (incident I18): what the old process freezes is what the new one resumes.
TEST(SessionSinkHandover, FrozenStateResumesInTheSuccessorAndLateStanzasStayBehind) {
  auto conn = std::make_shared<FakeConnection>();
  SessionSink old_sink(conn);
  old_sink.enable_acks();
  for (const char* s : {"<message>a</message>", "<message>b</message>", "<message>c</message>"}) old_sink.deliver(s);
  ASSERT_TRUE(old_sink.ack(1));
  auto frozen = old_sink.hand_over();
  EXPECT_EQ(frozen.sent, 3u);
  EXPECT_EQ(frozen.acked, 1u);
  EXPECT_EQ(frozen.unacked, (std::vector<std::string>{"<message>b</message>", "<message>c</message>"}));
  EXPECT_TRUE(old_sink.detached());
  old_sink.deliver("<message>late</message>");  // routed before the session left the registry
  EXPECT_EQ(old_sink.take_unacked(), std::vector<std::string>{"<message>late</message>"})
      << "only what came after the hand-over is left for offline storage";

  auto restored = SessionSink::restore(frozen);
  EXPECT_TRUE(restored->detached());
  restored->deliver("<message>d</message>");  // arrives at the successor before the client
  auto fresh = std::make_shared<FakeConnection>();
  ASSERT_TRUE(restored->attach(fresh, 2));  // the client had also seen "b"
  EXPECT_EQ(fresh->stanzas(), (std::vector<std::string>{"<message>c</message>", "<message>d</message>"}));
  EXPECT_EQ(restored->sent_count(), 4u);
  EXPECT_FALSE(restored->ack(5)) << "counters continue from the old process";
  EXPECT_TRUE(restored->ack(4));
}

struct SmHandoverStoreTest : StoreFixture {
  std::unique_ptr<SmHandoverStore> hs;
  void SetUp() override { open(); }
  void open() {
    hs.reset();
    ASSERT_TRUE(reopen_store(1));
    hs = std::make_unique<SmHandoverStore>(*db);
    ASSERT_TRUE(hs->migrate());
  }
};

TEST_F(SmHandoverStoreTest, SessionsSurviveReopenUntilRemoved) {
  HandedOverSession s;
  s.sm_id = "abc";
  s.localpart = "alice";
  s.domain = "localhost";
  s.resource = "phone";
  s.handled = 7;
  s.sent = 4294967295u;  // counters wrap at 2^32
  s.acked = 4294967290u;
  s.unacked = {"<message>1:2</message>", "", "<message>\n\x01 'x'</message>"};
  s.available = true;
  s.priority = -3;
  s.presence = "<presence/>";
  s.carbons = true;
  ASSERT_TRUE(hs->save(s));
  open();  // a new process
  auto all = hs->load_all();
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_EQ(all->size(), 1u);
  const auto& got = (*all)[0];
  EXPECT_EQ(got.sm_id, "abc");
  EXPECT_EQ(got.resource, "phone");
  EXPECT_EQ(got.handled, 7u);
  EXPECT_EQ(got.sent, 4294967295u);
  EXPECT_EQ(got.acked, 4294967290u);
  EXPECT_EQ(got.unacked, s.unacked);
  EXPECT_TRUE(got.available);
  EXPECT_EQ(got.priority, -3);
  EXPECT_TRUE(got.carbons);
  EXPECT_FALSE(got.roster_pushes);
  ASSERT_TRUE(hs->remove("abc"));
  EXPECT_TRUE(hs->load_all()->empty());
}

TEST_F(SmHandoverStoreTest, CorruptRowsAreRefusedNotTrusted) {
  ASSERT_TRUE(db->write_sync([](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec("INSERT INTO xmpp_sm_handover VALUES('x','a','d','r',0,0,0,'99999:short',0,0,'',0,0,0)", {});
    if (!r) return tl::unexpected(r.error());
    return true;
  }));
  auto all = hs->load_all();
  ASSERT_FALSE(all);
  EXPECT_EQ(all.error().code, Errc::corrupt);
}

}  // namespace
}  // namespace hearth::xmpp
