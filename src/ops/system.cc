#include "ops/system.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace hearth::ops {

Result<OpenFilesLimit> ensure_open_files_limit(std::uint64_t required) {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return fail(Errc::io, fmt::format("getrlimit(RLIMIT_NOFILE) failed: {}", std::strerror(errno)));
  OpenFilesLimit out{rl.rlim_cur, rl.rlim_max, false};
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= required) return out;
  if (rl.rlim_cur == RLIM_INFINITY) return out;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < required) {
    return fail(Errc::resource_exhausted,
                fmt::format("hearthd needs {} open files (limits.max_connections + limits.fd_reserve) but the hard "
                            "limit is {}. Fix one of: run `ulimit -Hn {} && ulimit -n {}` in the shell that starts "
                            "hearthd (as root); for systemd set `LimitNOFILE={}` in the [Service] section and run "
                            "`systemctl daemon-reload`; or lower limits.max_connections to {} or less.",
                            required, rl.rlim_max, required, required, required,
                            rl.rlim_max > 256 ? rl.rlim_max - 256 : 0));
  }
  struct rlimit raised = rl;
  raised.rlim_cur = required;
  if (::setrlimit(RLIMIT_NOFILE, &raised) != 0)
    return fail(Errc::resource_exhausted,
                fmt::format("cannot raise the open-files limit from {} to {}: {}; set `ulimit -n {}` or systemd "
                            "`LimitNOFILE={}`",
                            rl.rlim_cur, required, std::strerror(errno), required, required));
  out.soft = required;
  out.raised = true;
  return out;
}

DataDirLock& DataDirLock::operator=(DataDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

Result<DataDirLock> DataDirLock::acquire(const std::string& data_dir) {
  std::string path = data_dir + "/hearthd.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::io, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK)
      return fail(Errc::unavailable, fmt::format("another hearthd is running on {} (it holds {})", data_dir, path));
    return fail(Errc::io, fmt::format("cannot lock {}: {}", path, std::strerror(e)));
  }
  std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The pid is informational; the lock is what counts.
  }
  return DataDirLock(fd);
}

bool DataDirLock::is_held_by_other(const std::string& data_dir) {
  std::string path = data_dir + "/hearthd.lock";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return held;
}

Result<void> ensure_private_dir(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return ok();
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(Errc::io, fmt::format("cannot create directory {}: {}", dir, ec.message()));
  ::chmod(dir.c_str(), 0700);
  return ok();
}

}  // namespace hearth::ops
