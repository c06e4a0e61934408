// The pure bookkeeping behind net's limits, without I/O so it can be tested with a
// ManualClock. None of these classes locks: HttpServer wraps each in its own mutex (or,
// for InflightGate, uses its atomic directly).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/clock.h"

namespace hearth::net {

// Token buckets keyed by client IP: each key may spend `burst` requests at once and earns
// `rate` tokens per second. A key whose bucket has refilled completely is indistinguishable
// from a new one, so such entries are pruned (every prune_interval) to keep the table
// bounded by the set of recently active IPs.
class RateLimiter {
 public:
  struct Decision {
    bool allowed = true;
    int retry_after_seconds = 0;  // >= 1 when !allowed
  };

  // rate <= 0 disables limiting.
  RateLimiter(double rate_per_second, double burst, const Clock& clock,
              std::int64_t prune_interval_ms = 10'000);

  Decision acquire(std::string_view key);
  // Drops entries whose buckets are full.
  void prune();
  std::size_t size() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens;
    std::int64_t last_ns;
  };
  double refilled(const Bucket& b, std::int64_t now_ns) const;

  double rate_;
  double burst_;
  const Clock& clock_;
  std::int64_t prune_interval_ns_;
  std::int64_t last_prune_ns_;
  std::unordered_map<std::string, Bucket> buckets_;
};

// Open connections, in total and per IP.
class ConnectionTable {
 public:
  enum class Admit { ok, global_cap, ip_cap };

  // A cap <= 0 is unlimited.
  ConnectionTable(int max_total, int max_per_ip) : max_total_(max_total), max_per_ip_(max_per_ip) {}

  // On ok the connection is counted; every ok must be paired with one close().
  Admit try_open(std::string_view ip);
  void close(std::string_view ip);
  int total() const { return total_; }
  int count(std::string_view ip) const;

 private:
  int max_total_;
  int max_per_ip_;
  int total_ = 0;
  std::unordered_map<std::string, int> per_ip_;
};

// Requests dispatched to a handler and not yet answered. Thread-safe.
class InflightGate {
 public:
  explicit InflightGate(int max) : max_(max) {}
  bool try_enter() {
    int prev = inflight_.fetch_add(1, std::memory_order_acq_rel);
    if (max_ > 0 && prev >= max_) {
      inflight_.fetch_sub(1, std::memory_order_acq_rel);
      return false;
    }
    return true;
  }
  void leave() { inflight_.fetch_sub(1, std::memory_order_acq_rel); }
  int inflight() const { return inflight_.load(std::memory_order_acquire); }

 private:
  int max_;
  std::atomic<int> inflight_{0};
};

// A Range header (RFC 9110 §14.1.2) naming one byte range of a file of `size` bytes:
// "bytes=a-b", "bytes=a-" or "bytes=-n" (the last n). Returns the first and last byte
// offsets (inclusive); {-1, -1} when the range starts past the end (416); nullopt when the
// header is not a single byte range (then the whole file is served).
std::optional<std::pair<std::int64_t, std::int64_t>> parse_byte_range(std::string_view header, std::int64_t size);

}  // namespace hearth::net
