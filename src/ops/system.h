// Process and data-directory facts that start-up and hearthctl need.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth::ops {

// Raises the soft RLIMIT_NOFILE to at least `required` (incident I08). When the hard
// limit is lower, returns Errc::resource_exhausted whose message is the exact fix.
struct OpenFilesLimit {
  std::uint64_t soft = 0;
  std::uint64_t hard = 0;
  bool raised = false;
};
Result<OpenFilesLimit> ensure_open_files_limit(std::uint64_t required);

// An exclusive lock on <data_dir>/hearthd.lock held for the daemon's lifetime, so two
// daemons never share a data directory and hearthctl knows whether one is running.
class DataDirLock {
 public:
  DataDirLock() = default;
  DataDirLock(DataDirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DataDirLock& operator=(DataDirLock&& other) noexcept;
  ~DataDirLock();
  bool held() const { return fd_ >= 0; }

  // Errc::unavailable if another process holds it.
  static Result<DataDirLock> acquire(const std::string& data_dir);
  // True if a running process holds the lock (without taking it).
  static bool is_held_by_other(const std::string& data_dir);

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The systemd notification protocol (sd_notify), without libsystemd: READY=1 once serving
// and WATCHDOG=1 pings for `WatchdogSec=` (incident I09). hearthd pings only while every
// event loop turns, so a stuck loop stops the pings and systemd restarts the service.
// Inactive (every call a no-op) when $NOTIFY_SOCKET is not set. Thread-safe.
class SystemdNotifier {
 public:
  static SystemdNotifier from_environment();
  bool active() const { return !socket_path_.empty(); }
  // How often to ping: half of $WATCHDOG_USEC (0 when no watchdog is configured).
  std::chrono::microseconds watchdog_interval() const { return watchdog_interval_; }
  // Sends one datagram ("READY=1", "WATCHDOG=1", "STOPPING=1"); errors as values.
  Result<void> notify(std::string_view state) const;

 private:
  std::string socket_path_;
  std::chrono::microseconds watchdog_interval_{0};
};

// Creates `dir` (and parents) with mode 0700 if missing.
Result<void> ensure_private_dir(const std::string& dir);

}  // namespace hearth::ops
