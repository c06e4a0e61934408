// Archival of unreferenced, idle data to cold storage, and its restore (incident I06).
//
// First slice: CryptPad channels. A channel is referenced when any account pins it
// (cryptpad_pins); it is idle when nothing was written to it (its last message, else its
// creation) for longer than the window. Only channels that are both unreferenced and idle
// are archived; the pin and idle checks are repeated inside the transaction that deletes
// each channel, so a pin or a write that lands after the plan keeps the channel live.
//
// Archival is a dry run unless `apply`: the plan is logged item by item either way. Each
// archived channel becomes one file in the cold-storage directory (JSON, written to a
// temporary name, fsynced and renamed) BEFORE its rows are deleted; files older than the
// cold retention are deleted on later runs (logged). Restoring never overwrites: a channel
// that exists again in the live database (recreated or written since) is reported as a
// conflict and its file is kept.
//
// Blocking; run by hearthctl on a stopped daemon's data directory (it holds the data-
// directory lock, so no live process races it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"

namespace hearth::store {
class Store;
}

namespace hearth::ops {

struct ArchivalOptions {
  std::string cold_dir;               // created if missing
  std::int64_t now_ms = 0;
  std::int64_t idle_ms = 0;           // archive only what nothing touched for this long
  std::int64_t cold_retention_ms = 0; // cold files older than this are deleted; 0: keep
  bool apply = false;                 // false: dry run (plan and log only)
};

struct ArchivalItem {
  std::string kind;  // "cryptpad_channel"
  std::string id;
  std::int64_t last_touched_ms = 0;
  std::int64_t messages = 0;
  std::string file;  // the cold-storage file (when applied)
};

struct ArchivalReport {
  std::vector<ArchivalItem> archived;  // or, in a dry run, what would be
  std::int64_t kept_referenced = 0;    // idle but pinned by an account
  std::int64_t kept_recent = 0;        // touched within the window
  std::vector<std::string> cold_deleted;  // cold files past their retention
};

Result<ArchivalReport> archive_unreferenced(store::Store& store, const ArchivalOptions& options, Logger& log);

struct RestoreConflict {
  std::string id;
  std::string reason;
};
struct RestoreArchivedReport {
  std::vector<std::string> restored;
  std::vector<RestoreConflict> conflicts;
};

// Restores the archived items named in `ids` (all when empty) from `cold_dir`.
Result<RestoreArchivedReport> restore_archived(store::Store& store, const std::string& cold_dir,
                                               const std::vector<std::string>& ids, Logger& log);

}  // namespace hearth::ops
