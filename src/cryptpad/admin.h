// CryptPad instance administration (private to the module): who is an admin, storage
// limits per key, and the decree log that changes them at run time.
//
// Admins are the configured keys (`cryptpad.admin_keys`) plus those added by decree.
// Decrees (`ADMIN_DECREE [CMD, args]`, CryptPad's lib/decrees.js) are rows in
// cryptpad_decrees, replayed at start; one that changes nothing is not written, and one
// that changes something is committed before it is applied and answered. Supported:
// ADD_ADMIN_KEY, RM_ADMIN_KEY, SET_QUOTA [key, {limit, plan, note}], RM_QUOTA [key],
// UPDATE_DEFAULT_STORAGE [bytes]; others → E_NOT_IMPLEMENTED.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <tl/expected.hpp>

#include "core/error.h"
#include "cryptpad/protocol.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::cryptpad {

struct StorageLimit {
  std::int64_t limit = 0;
  std::string plan, note;
};

class CryptpadAdmin {
 public:
  CryptpadAdmin(store::Store& store, Clock& clock, std::vector<std::string> configured_admins,
                std::int64_t default_limit);
  // Replays the decree log (blocking; at start, after the migrations).
  Result<void> load();

  bool is_admin(const std::string& key) const;
  std::vector<std::string> admins() const;
  StorageLimit limit_for(const std::string& key) const;
  std::int64_t default_limit() const;
  // {key: {limit, plan, note, origin}} of the keys with their own limit, as JSON.
  std::string custom_limits_json() const;
  // Applies and records one decree; true when it changed something.
  tl::expected<bool, std::string> decree(const std::string& command, const RawValue& args, const std::string& author);

  // "[user@host/KEY]" or "KEY" → KEY (44 characters), as CryptPad's Keys.canonicalize.
  static std::optional<std::string> canonical_key(std::string_view text);

 private:
  tl::expected<bool, std::string> apply_locked(const std::string& command, const std::string& args_json);

  store::Store& store_;
  Clock& clock_;
  std::set<std::string> configured_;
  std::int64_t configured_default_;
  mutable std::mutex mu_;
  std::set<std::string> decreed_admins_;
  std::set<std::string> removed_admins_;  // configured admins removed by decree
  std::map<std::string, StorageLimit> limits_;
  std::int64_t default_limit_;
  ParseLimits parse_limits_;
};

}  // namespace hearth::cryptpad
