#include "ops/system.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
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

SystemdNotifier SystemdNotifier::from_environment() {
  SystemdNotifier n;
  if (const char* path = std::getenv("NOTIFY_SOCKET"); path && *path) n.socket_path_ = path;
  if (const char* usec = std::getenv("WATCHDOG_USEC"); usec && *usec) {
    long long v = std::atoll(usec);
    const char* pid = std::getenv("WATCHDOG_PID");
    bool for_us = !pid || !*pid || std::atoll(pid) == static_cast<long long>(::getpid());
    if (v > 0 && for_us) n.watchdog_interval_ = std::chrono::microseconds(v / 2);
  }
  return n;
}

Result<void> SystemdNotifier::notify(std::string_view state) const {
  if (!active()) return ok();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) return fail(Errc::invalid_argument, "NOTIFY_SOCKET path too long");
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(Errc::io, fmt::format("sd_notify socket: {}", std::strerror(errno)));
  ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), len);
  int e = errno;
  ::close(fd);
  if (n < 0) return fail(Errc::io, fmt::format("sd_notify {}: {}", socket_path_, std::strerror(e)));
  return ok();
}

}  // namespace hearth::ops
