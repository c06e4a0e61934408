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

std::optional<std::pair<std::int64_t, std::int64_t>> parse_byte_range(std::string_view header, std::int64_t size) {
  constexpr std::string_view kUnit = "bytes=";
  if (header.substr(0, kUnit.size()) != kUnit) return std::nullopt;
  std::string_view spec = header.substr(kUnit.size());
  auto dash = spec.find('-');
  if (dash == std::string_view::npos || spec.find(',') != std::string_view::npos) return std::nullopt;
  auto number = [](std::string_view digits) -> std::optional<std::int64_t> {
    if (digits.empty() || digits.size() > 18) return std::nullopt;
    std::int64_t v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + (c - '0');
    }
    return v;
  };
  std::string_view a = spec.substr(0, dash), b = spec.substr(dash + 1);
  if (a.empty()) {  // suffix: the last n bytes
    auto n = number(b);
    if (!n) return std::nullopt;
    if (*n == 0 || size == 0) return std::make_pair(std::int64_t{-1}, std::int64_t{-1});
    return std::make_pair(size - std::min(*n, size), size - 1);
  }
  auto first = number(a);
  if (!first) return std::nullopt;
  std::int64_t last = size - 1;
  if (!b.empty()) {
    auto l = number(b);
    if (!l || *l < *first) return std::nullopt;
    last = std::min(*l, size - 1);
  }
  if (*first >= size) return std::make_pair(std::int64_t{-1}, std::int64_t{-1});
  return std::make_pair(*first, last);
}

}  // namespace hearth::net
