#include "matrix/shared_results.h"

namespace hearth::matrix {

Result<SharedResults::Value> SharedResults::get(const std::string& key,
                                                const std::function<Result<std::string>()>& compute, bool* computed) {
  if (computed) *computed = false;
  std::promise<Result<Value>> promise;
  {
    std::unique_lock lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      if (it->second.done) {
        lru_.splice(lru_.begin(), lru_, it->second.lru);  // most recently used
        return it->second.result.get();
      }
      auto waiting = it->second.result;
      lock.unlock();
      return waiting.get();  // a computation is under way: wait for it
    }
    entries_[key].result = promise.get_future().share();
  }
  if (computed) *computed = true;
  Result<Value> result = [&]() -> Result<Value> {
    auto r = compute();
    if (!r) return tl::unexpected(r.error());
    return std::make_shared<const std::string>(std::move(*r));
  }();
  promise.set_value(result);
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (!result || (*result)->size() > max_bytes_) {
    entries_.erase(it);
  } else {
    it->second.done = true;
    it->second.bytes = (*result)->size();
    bytes_ += it->second.bytes;
    lru_.push_front(key);
    it->second.lru = lru_.begin();
    evict_locked();
  }
  return result;
}

void SharedResults::evict_locked() {
  while (!lru_.empty() && (lru_.size() > max_entries_ || bytes_ > max_bytes_)) {
    auto it = entries_.find(lru_.back());
    bytes_ -= it->second.bytes;
    entries_.erase(it);
    lru_.pop_back();
  }
}

std::size_t SharedResults::size() {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace hearth::matrix
