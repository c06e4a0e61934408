// Read-only mode: ONE server-wide flag that says "storage must not grow now".
//
// design.md lists read-only mode among the core services every protocol shares. It lives
// here, next to the Store that enforces it, so that every protocol module (XMPP today,
// Matrix and CryptPad later) consults the same flag:
//   * The Store refuses every write job at once with Errc::read_only while the flag is
//     set (nothing is queued, nothing is half-written, nothing is acknowledged).
//   * A protocol maps Errc::read_only to its own clear "try later" error (XMPP
//     <resource-constraint/> of type wait, Matrix M_RESOURCE_LIMIT_EXCEEDED, the CryptPad
//     error frame). A module may also test active() up front, e.g. to refuse an upload
//     before reading its body.
//   * Reads, logins and history never depend on it.
//
// Who sets it: ops' StorageWatcher (free bytes or inodes under the reserve floor; it also
// clears it once space is back) and the SQLite backend itself when a commit fails because
// the disk is full (incident I02). Either may set it; the watcher clears it.
//
// Thread-safe: active() is one atomic load (cheap enough for every write); enter()/leave()
// may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/error.h"

namespace hearth::store {

class ReadOnlyMode {
 public:
  bool active() const noexcept { return active_.load(std::memory_order_acquire); }
  // Why the server is read-only ("" when it is not).
  std::string reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
  }
  // Sets the flag; true when this call changed the state (the caller logs it). A second
  // enter() while active keeps the first reason.
  bool enter(std::string reason) {
    std::lock_guard lock(mutex_);
    if (active_.load(std::memory_order_relaxed)) return false;
    reason_ = std::move(reason);
    ++entered_;
    active_.store(true, std::memory_order_release);
    return true;
  }
  // Clears the flag; true when this call changed the state.
  bool leave() {
    std::lock_guard lock(mutex_);
    if (!active_.load(std::memory_order_relaxed)) return false;
    reason_.clear();
    active_.store(false, std::memory_order_release);
    return true;
  }
  // ok(), or Errc::read_only whose message says why and what brings writes back.
  Result<void> check_writable() const {
    if (!active()) return ok();
    return fail(Errc::read_only, "the server is read-only until storage space is freed: " + reason());
  }
  // How many times the flag was set since start (for /metrics).
  std::uint64_t times_entered() const {
    std::lock_guard lock(mutex_);
    return entered_;
  }

 private:
  std::atomic<bool> active_{false};
  mutable std::mutex mutex_;
  std::string reason_;
  std::uint64_t entered_ = 0;
};

}  // namespace hearth::store
