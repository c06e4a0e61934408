// Process and data-directory facts that start-up and hearthctl need.
#pragma once

#include <cstdint>
#include <string>

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

// Creates `dir` (and parents) with mode 0700 if missing.
Result<void> ensure_private_dir(const std::string& dir);

}  // namespace hearth::ops
