#include "ops/admin.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace hearth::ops {
namespace {

struct AdminTest : ::testing::Test {
  Logger log{LogLevel::error, LogFormat::text};
  std::string dir = (std::filesystem::temp_directory_path() / ("hearth-admin-" + std::to_string(::getpid()))).string();
  std::string path = dir + "/a.sock";
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
};

TEST_F(AdminTest, SocketIsPrivateAndCommandsRun) {
  AdminServer server(path, log);
  server.add_command("echo", [](const AdminArgs& a) -> Result<std::string> {
    return "{\"name\":\"" + a.at("name") + "\",\"admin\":\"" + a.at("admin") + "\"}";
  });
  server.add_command("fails", [](const AdminArgs&) -> Result<std::string> {
    return fail(Errc::already_exists, "user alice@localhost exists");
  });
  ASSERT_TRUE(server.start());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto r = admin_call(path, "echo", {{"name", "bob"}, {"admin", "true"}});
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_TRUE(r->ok);
  EXPECT_EQ(json_field(r->result_json, "name"), "bob");
  EXPECT_EQ(json_field(r->result_json, "admin"), "true");

  auto f = admin_call(path, "fails", {});
  ASSERT_TRUE(f);
  EXPECT_FALSE(f->ok);
  EXPECT_EQ(f->code, Errc::already_exists);
  EXPECT_EQ(f->message, "user alice@localhost exists");

  auto u = admin_call(path, "nope", {});
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->ok);
  EXPECT_EQ(u->code, Errc::not_found);
}

TEST_F(AdminTest, MalformedAndOversizeRequestsGetErrors) {
  AdminServer server(path, log);
  ASSERT_TRUE(server.start());
  auto raw = [&](const std::string& payload) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
    ::close(fd);
    return out;
  };
  EXPECT_NE(raw("not json\n").find("invalid_argument"), std::string::npos);
  EXPECT_NE(raw(std::string(70000, 'x')).find("resource_exhausted"), std::string::npos);
  // The server keeps serving after bad input.
  auto r = admin_call(path, "missing", {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, Errc::not_found);
}

TEST_F(AdminTest, StaleSocketFileIsReplaced) {
  std::ofstream(path) << "stale";
  AdminServer server(path, log);
  ASSERT_TRUE(server.start());
  EXPECT_TRUE(admin_call(path, "x", {}));
  server.stop();
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(AdminTest, NoDaemonIsUnavailable) {
  auto r = admin_call(dir + "/none.sock", "x", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::unavailable);
}

// Graceful restart (incident I18): descriptors travel with the reply, and the command's
// after_reply runs once the reply went out.
TEST_F(AdminTest, FdCommandsSendDescriptorsWithTheReply) {
  AdminServer server(path, log);
  bool after = false;
  server.add_fd_command("give", [&after](const AdminArgs&) -> Result<AdminFdResult> {
    int p[2];
    if (::pipe(p) != 0) return fail(Errc::io, "pipe");
    if (::write(p[1], "hello", 5) != 5) return fail(Errc::io, "write");
    ::close(p[1]);
    AdminFdResult out;
    out.result_json = "{\"n\":1}";
    out.fds = {p[0]};
    out.after_reply = [&after] { after = true; };
    return out;
  });
  ASSERT_TRUE(server.start());
  auto r = admin_call_receiving_fds(path, "give", {});
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_TRUE(r->reply.ok);
  EXPECT_EQ(json_field(r->reply.result_json, "n"), "1");
  ASSERT_EQ(r->fds.size(), 1u);
  char buf[8] = {};
  EXPECT_EQ(::read(r->fds[0], buf, sizeof buf), 5);
  EXPECT_STREQ(buf, "hello");
  ::close(r->fds[0]);
  server.stop();  // joins the admin thread: after_reply has run
  EXPECT_TRUE(after);
}

}  // namespace
}  // namespace hearth::ops
