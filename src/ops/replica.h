// The continuous replica (incident I05): the daemon keeps a restorable copy of its data
// directory in another directory (another disk, a network mount), at most one interval
// behind, and a fresh machine rebuilds a data directory from it with one command.
//
// Layout of a replica directory (every file immutable once it has its final name, so
// rsync or any copy tool can mirror it incrementally):
//
//   <replica_dir>/chain-<UTC time of its full backup>/     one chain per full backup
//       000000.bak   000000.json                         the full backup, its manifest
//       000001.bak   000001.json                         incrementals on top, in order
//       ...
//   <replica_dir>/.scratch/                              the database snapshot of a round
//
// Each NNNNNN.bak is a backup (backup.h) written as .partial, fsynced, renamed and the
// directory fsynced; its NNNNNN.json (the backup's manifest, written the same way after
// it) is what makes it part of the chain: a .bak without its .json is a round that died
// and is ignored. A chain is "complete" up to the last link whose .json parent_id names
// the previous link; the restorer reads only those .json files to plan.
//
// ReplicaWriter: a thread that writes a full backup, then every interval an incremental
// on top of the newest complete chain's last link (none when nothing changed). A new
// chain (a full backup) starts when the chain has `max_incrementals` incrementals or when
// its incrementals add up to more than `rebase_percent` of its full backup; after a new
// full backup, only the newest `keep_chains` complete chains are kept. Rounds take the
// data directory's backup.lock like `hearthctl backup`; when a manual backup holds it,
// the round is skipped and the next one tries again. A failed round (replica disk full,
// directory gone) is logged and shown by check() and the metrics; it never touches the
// live service, whose only part in a round is a database snapshot on a reader connection.
//
// Threads: the writer's own thread runs the rounds; check() and the metrics read its
// status under a mutex and may be called from any thread. list_replica_chains and
// restore_from_replica are blocking functions for hearthctl.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "ops/backup.h"
#include "ops/health.h"

namespace hearth::ops {

struct ReplicaOptions {
  std::string data_dir;
  std::string replica_dir;
  std::chrono::seconds interval{60};
  int max_incrementals = 1000;   // then a new chain
  int rebase_percent = 50;       // incrementals' bytes over this share of the full: a new chain
  int keep_chains = 2;           // complete chains kept after a new full backup
  int zstd_level = 3;
  // Writes a consistent snapshot of the database to the given (new) file.
  std::function<Result<void>(const std::string& path)> snapshot_database;
};

enum class ReplicaRound { full, incremental, unchanged, skipped };

class ReplicaWriter {
 public:
  ReplicaWriter(ReplicaOptions options, const Clock& clock, Logger& log, MetricsRegistry& metrics);
  ~ReplicaWriter();
  ReplicaWriter(const ReplicaWriter&) = delete;
  ReplicaWriter& operator=(const ReplicaWriter&) = delete;

  // Starts the thread: a round at once, then one every interval after the previous
  // round began (at once when a round took longer than the interval).
  void start();
  // Wakes the thread and joins it; a round under way finishes first.
  void stop();

  // One round on the calling thread (the thread's body; for tests without start()).
  Result<ReplicaRound> run_round();

  // The "replica" health check: warning when the last round failed or the newest copy is
  // older than three intervals; never critical (the live service is unaffected).
  CheckResult check() const;

 private:
  void loop();
  Result<ReplicaRound> write_round(std::int64_t started_ms);
  void prune_chains();

  ReplicaOptions options_;
  const Clock& clock_;
  Logger& log_;

  // Owned by the round (the writer thread, or run_round's caller).
  bool loaded_ = false;
  std::string chain_dir_;
  std::optional<BackupManifest> last_;
  std::uint64_t full_bytes_ = 0, incremental_bytes_ = 0;
  int incrementals_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::int64_t started_ms_ = 0;        // when the writer was created
  std::int64_t last_success_ms_ = 0;   // when the last successful round began
  std::string last_error_;             // of the last round; empty when it succeeded
  std::thread thread_;

  Gauge& last_success_gauge_;
  Gauge& failing_gauge_;
  Gauge& round_seconds_;
  Counter& bytes_total_;
  Counter& rounds_full_;
  Counter& rounds_incremental_;
  Counter& rounds_unchanged_;
  Counter& rounds_skipped_;
  Counter& rounds_failed_;
};

struct ReplicaLink {
  std::string file;            // the .bak, absolute
  std::uint64_t bytes = 0;     // its size
  BackupManifest manifest;     // from its .json
};

struct ReplicaChain {
  std::string dir;                  // absolute
  std::string name;                 // chain-...
  std::vector<ReplicaLink> links;   // sequence 0, 1, ... each the parent of the next
  std::string problem;              // why the chain stops where it does, if not at its end
};

// The chains of a replica directory with at least a complete full backup, newest first.
Result<std::vector<ReplicaChain>> list_replica_chains(const std::string& replica_dir);

struct ReplicaRestoreOptions {
  std::string replica_dir;
  std::string data_dir;                 // missing or empty, as for restore_backup
  std::string chain;                    // a chain's name; empty: the newest
  std::optional<std::uint64_t> up_to;   // the last sequence to apply; empty: the chain's end
};

struct ReplicaRestoreReport {
  RestoreReport restore;
  std::string chain;
  std::size_t backups = 0;   // applied: the full and its incrementals
};

// Restores the newest complete chain (or the one asked for, up to the sequence asked for)
// with restore_backup, so every checksum is verified and nothing is left on failure. A
// damaged backup is refused naming its file, with the newest point that would restore
// (`--up-to`) or an older chain (`--chain`) when the full backup itself is damaged.
Result<ReplicaRestoreReport> restore_from_replica(const ReplicaRestoreOptions& options);

}  // namespace hearth::ops
