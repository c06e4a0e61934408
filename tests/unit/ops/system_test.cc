#include "ops/system.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

namespace hearth::ops {
namespace {

// Runs `body` in a child process (rlimits are per process) and returns its exit code.
template <typename F>
int in_child(F body) {
  pid_t pid = ::fork();
  if (pid == 0) _exit(body());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

// sd_notify without libsystemd (incident I09): inactive without $NOTIFY_SOCKET, the
// watchdog interval is half of $WATCHDOG_USEC, and a state arrives as one datagram.
TEST(SystemdNotifier, ReadsTheEnvironmentAndSendsDatagrams) {
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  auto off = SystemdNotifier::from_environment();
  EXPECT_FALSE(off.active());
  EXPECT_TRUE(off.notify("READY=1"));

  auto dir = std::filesystem::temp_directory_path() / ("hearth-notify-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "notify").string();
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);

  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "2000000", 1);
  auto on = SystemdNotifier::from_environment();
  EXPECT_TRUE(on.active());
  EXPECT_EQ(on.watchdog_interval().count(), 1000000);
  ASSERT_TRUE(on.notify("WATCHDOG=1"));
  char buf[64] = {};
  auto n = ::recv(fd, buf, sizeof buf, 0);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), "WATCHDOG=1");

  ::setenv("WATCHDOG_PID", "1", 1);  // another process's watchdog
  EXPECT_EQ(SystemdNotifier::from_environment().watchdog_interval().count(), 0);
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  ::close(fd);
  std::filesystem::remove_all(dir);
}

TEST(OpenFilesLimit, RaisesSoftUpToHard) {
  int code = in_child([] {
    struct rlimit rl {256, 4096};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 10;
    auto r = ensure_open_files_limit(2000);
    if (!r || !r->raised || r->soft != 2000) return 11;
    ::getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur == 2000 ? 0 : 12;
  });
  EXPECT_EQ(code, 0);
}

TEST(OpenFilesLimit, RefusesWithTheExactFixWhenHardIsTooLow) {
  int code = in_child([] {
    struct rlimit rl {256, 1024};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 10;
    auto r = ensure_open_files_limit(5000);
    if (r) return 11;
    if (r.error().code != Errc::resource_exhausted) return 12;
    const auto& m = r.error().message;
    bool names_fix = m.find("ulimit -Hn 5000") != std::string::npos && m.find("LimitNOFILE=5000") != std::string::npos &&
                     m.find("limits.max_connections") != std::string::npos;
    return names_fix ? 0 : 13;
  });
  EXPECT_EQ(code, 0);
}

TEST(OpenFilesLimit, EnoughAlreadyChangesNothing) {
  struct rlimit rl {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  auto r = ensure_open_files_limit(16);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->raised);
}

TEST(DataDirLock, ExclusiveWhileHeld) {
  auto dir = (std::filesystem::temp_directory_path() / ("hearth-lock-" + std::to_string(::getpid()))).string();
  ASSERT_TRUE(ensure_private_dir(dir));
  EXPECT_EQ(std::filesystem::status(dir).permissions() & std::filesystem::perms::all, std::filesystem::perms::owner_all);
  {
    auto first = DataDirLock::acquire(dir);
    ASSERT_TRUE(first) << first.error().describe();
    EXPECT_TRUE(DataDirLock::is_held_by_other(dir));
    auto second = DataDirLock::acquire(dir);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code, Errc::unavailable);
  }
  EXPECT_FALSE(DataDirLock::is_held_by_other(dir));
  EXPECT_TRUE(DataDirLock::acquire(dir));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hearth::ops
