// Coalescing of identical expensive reads (incident I15: hundreds of clients asking for a
// big room's full state at once). A caller names its request by a key that includes the
// version of the data it reads (e.g. room id + the room's depth), so equal keys mean equal
// answers. The first caller computes; callers arriving while it runs wait for its result;
// callers arriving later are served the finished result from a small LRU until it is
// evicted (bounded by entries and bytes). Errors are handed to the waiters but not kept.
//
// Thread-safe (one mutex; the computation runs outside it). Waiters block their thread:
// use it on the blocking worker pool only, never on an event loop.
#pragma once

#include <cstddef>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/error.h"

namespace hearth::matrix {

class SharedResults {
 public:
  using Value = std::shared_ptr<const std::string>;
  SharedResults(std::size_t max_entries, std::size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // The value for `key`: shared with a concurrent or earlier identical request, else
  // computed now. *computed is set when this call ran `compute`.
  Result<Value> get(const std::string& key, const std::function<Result<std::string>()>& compute,
                    bool* computed = nullptr);
  std::size_t size();

 private:
  struct Entry {
    std::shared_future<Result<Value>> result;
    bool done = false;
    std::size_t bytes = 0;
    std::list<std::string>::iterator lru;
  };
  void evict_locked();

  const std::size_t max_entries_, max_bytes_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // finished entries, most recent first
  std::size_t bytes_ = 0;
};

}  // namespace hearth::matrix
