#include "ops/system.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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
