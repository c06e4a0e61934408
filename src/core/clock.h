// Time through an interface, so tests can jump the clock (expiry, rate limits, retention).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace hearth {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time in milliseconds since the Unix epoch (stored timestamps).
  virtual std::int64_t now_ms() const = 0;
  // Monotonic time in nanoseconds (durations, rate limits).
  virtual std::int64_t monotonic_ns() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
  std::int64_t monotonic_ns() const override {
    using namespace std::chrono;
    return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
  }
};

// A clock that only moves when told to; thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  std::int64_t now_ms() const override { return now_ms_.load(); }
  std::int64_t monotonic_ns() const override { return mono_ns_.load(); }
  void advance_ms(std::int64_t ms) {
    now_ms_ += ms;
    mono_ns_ += ms * 1'000'000;
  }

 private:
  std::atomic<std::int64_t> now_ms_;
  std::atomic<std::int64_t> mono_ns_{1'000'000'000};
};

}  // namespace hearth
