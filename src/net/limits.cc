#include "net/limits.h"

#include <algorithm>
#include <cmath>

namespace hearth::net {

RateLimiter::RateLimiter(double rate_per_second, double burst, const Clock& clock,
                         std::int64_t prune_interval_ms)
    : rate_(rate_per_second),
      burst_(std::max(1.0, burst)),
      clock_(clock),
      prune_interval_ns_(prune_interval_ms * 1'000'000),
      last_prune_ns_(clock.monotonic_ns()) {}

double RateLimiter::refilled(const Bucket& b, std::int64_t now_ns) const {
  double elapsed = static_cast<double>(std::max<std::int64_t>(0, now_ns - b.last_ns)) / 1e9;
  return std::min(burst_, b.tokens + elapsed * rate_);
}

RateLimiter::Decision RateLimiter::acquire(std::string_view key) {
  if (rate_ <= 0) return {};
  std::int64_t now = clock_.monotonic_ns();
  if (now - last_prune_ns_ >= prune_interval_ns_) prune();

  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) it = buckets_.emplace(std::string(key), Bucket{burst_, now}).first;
  Bucket& b = it->second;
  b.tokens = refilled(b, now);
  b.last_ns = now;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return {};
  }
  double wait = std::ceil((1.0 - b.tokens) / rate_);
  return {false, static_cast<int>(std::clamp(wait, 1.0, 3600.0))};
}

void RateLimiter::prune() {
  std::int64_t now = clock_.monotonic_ns();
  last_prune_ns_ = now;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    if (refilled(it->second, now) >= burst_) it = buckets_.erase(it);
    else ++it;
  }
}

ConnectionTable::Admit ConnectionTable::try_open(std::string_view ip) {
  if (max_total_ > 0 && total_ >= max_total_) return Admit::global_cap;
  auto it = per_ip_.find(std::string(ip));
  int current = it == per_ip_.end() ? 0 : it->second;
  if (max_per_ip_ > 0 && current >= max_per_ip_) return Admit::ip_cap;
  if (it == per_ip_.end()) it = per_ip_.emplace(std::string(ip), 0).first;
  ++it->second;
  ++total_;
  return Admit::ok;
}

void ConnectionTable::close(std::string_view ip) {
  auto it = per_ip_.find(std::string(ip));
  if (it == per_ip_.end()) return;
  if (--it->second <= 0) per_ip_.erase(it);
  --total_;
}

int ConnectionTable::count(std::string_view ip) const {
  auto it = per_ip_.find(std::string(ip));
  return it == per_ip_.end() ? 0 : it->second;
}

}  // namespace hearth::net
