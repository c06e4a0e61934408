// Backups and restores of a data directory (incidents I05, I08; design.md "Storage rules").
//
// A backup is ONE zstd-compressed stream (one zstd frame, content checksum on). Inside it,
// a simple container format, version 2:
//
//   HEARTH-BACKUP 2\n                               the header line
//   file <size> <mode, octal> <path>\n              one record per file: its bytes,
//   <size bytes>                                    then their SHA-256
//   sha256 <64 hex>\n
//   chunk <offset> <size> <path>\n                  one record per stored chunk of a
//   <size bytes>                                    chunked file (the database): the bytes
//   sha256 <64 hex>\n                               at <offset>, then their SHA-256
//   ...
//   manifest <size>\n<size bytes of JSON>           the manifest (BackupManifest::to_json)
//   sha256 <64 hex>\n
//   end <backup id>\n                               nothing may follow
//
// Paths are relative to the data directory, '/'-separated, never absolute, never with a
// ".." component or a newline. The manifest lists EVERY file of the data directory at the
// time of the backup with its size, mode and SHA-256, and whether the file's bytes are in
// this backup ("included") or in an earlier one of the chain. A stream that ends before
// the `end` record (a killed backup, a truncated copy) is not a backup: restore refuses it.
//
// What is backed up: a consistent snapshot of the database (Store::snapshot_to, made by
// the running daemon through the admin socket, or by hearthctl on a stopped data
// directory) stored as `hearth.db`, plus every other regular file under the data
// directory (TLS keys and certificates in tls/, the Matrix signing key in matrix/, blobs/
// and whatever other modules keep there), except the live database files (hearth.db,
// -wal, -shm), the lock files, the admin socket, the status page and backup scratch space.
//
// The database is "chunked": SQLite's online backup copies page by page, so the snapshot
// has the live database's page layout, and a write changes only the pages it touches. The
// snapshot is cut into chunks of `chunk_size` bytes (64 KiB, a multiple of every SQLite
// page size; larger for databases over 64 GiB so a manifest stays under ~70 MB), and the
// manifest records every chunk's SHA-256, in full backups too.
//
// Incremental backups (`since`): every other file is included only when its SHA-256
// differs from the previous backup's manifest, and of the database only the chunks whose
// SHA-256 differs from the parent's chunk at the same offset (plus the new length). Each
// manifest carries `sequence` (0 for a full backup, parent's + 1 after), `parent_id` and
// `base_id`, so restore checks that a chain is complete and in order; restore applies the
// chunks of the chain in order, truncates to the recorded length, and checks the rebuilt
// database's SHA-256 against the last manifest.
//
// Format versions: version 1 (hearthd before the chunked database: the database stored
// whole as a `file` record, manifest "hearth-backup/1") is still read and restored, alone
// or as the start of a chain continued in version 2. A newer version is refused naming it.
//
// Threads: every function here is blocking and runs on the caller's thread (hearthctl);
// create_backup runs `snapshot_database` on a helper thread, reads and hashes the snapshot
// on another, and zstd compresses on `zstd_workers` threads of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/error.h"

namespace hearth::ops {

struct BackupFileEntry {
  std::string path;         // relative to the data directory
  std::uint64_t size = 0;
  std::uint32_t mode = 0600;
  std::string sha256;       // lowercase hex
  bool included = true;     // false: unchanged, its bytes are in an earlier backup
  // Chunked files (the database): chunk_size > 0, and the SHA-256 of every chunk in
  // order; `included` is true when at least one chunk is in this backup.
  std::uint64_t chunk_size = 0;
  std::vector<std::string> chunks;
};

// The chunk size for a database of `size` bytes in a new chain: 64 KiB, doubled until the
// database has at most 2^20 chunks.
std::uint64_t database_chunk_size(std::uint64_t size);


struct BackupManifest {
  std::string backup_id;    // random, 32 hex digits
  std::string parent_id;    // empty for a full backup
  std::string base_id;      // the full backup the chain starts from (own id when full)
  std::uint64_t sequence = 0;
  std::int64_t created_at_ms = 0;
  int format = 2;           // 1: written before the chunked database (read only)
  std::vector<BackupFileEntry> files;  // sorted by path

  bool full() const { return parent_id.empty(); }
  std::string to_json() const;
  static Result<BackupManifest> parse(std::string_view json);
};

// An exclusive lock on <data_dir>/backup.lock held while a backup runs, so two backups of
// one data directory never run at once (incident I02: racing backup jobs filled the
// disk). flock(2): released by the kernel when the holder dies, even by SIGKILL.
class BackupLock {
 public:
  BackupLock() = default;
  BackupLock(BackupLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  BackupLock& operator=(BackupLock&& o) noexcept;
  ~BackupLock();
  // Errc::unavailable, "a backup is already running ...", when another process holds it.
  static Result<BackupLock> acquire(const std::string& data_dir);

 private:
  explicit BackupLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The daemon's side of an online backup: runs one database snapshot at a time on its own
// thread, so the admin socket (which serves one command at a time) keeps answering —
// `hearthctl check` included — while a large database is copied. hearthctl starts a
// snapshot with the admin command `backup.snapshot` and polls `backup.snapshot_status`.
// Thread-safe; the destructor waits for a running snapshot.
class SnapshotRunner {
 public:
  using Snapshot = std::function<Result<void>(const std::string& path)>;
  explicit SnapshotRunner(Snapshot snapshot) : snapshot_(std::move(snapshot)) {}
  ~SnapshotRunner();
  SnapshotRunner(const SnapshotRunner&) = delete;
  SnapshotRunner& operator=(const SnapshotRunner&) = delete;

  // Errc::unavailable while another snapshot runs.
  Result<void> start(const std::string& path);
  // "running", "done", or the snapshot's error (Errc::not_found: no snapshot of `path`).
  Result<bool> finished(const std::string& path);

 private:
  Snapshot snapshot_;
  std::mutex mutex_;
  std::thread thread_;
  std::string path_;
  bool running_ = false;
  std::optional<Result<void>> result_;
};

struct BackupOptions {
  std::string data_dir;
  // A file path, or "-" for standard output. A file is written as <output>.partial,
  // fsynced and renamed into place (then its directory fsynced): a killed backup never
  // leaves a file under the final name.
  std::string output;
  int zstd_level = 3;
  int zstd_workers = 0;     // 0: compress on the calling thread
  // When set, an incremental backup on top of the backup this manifest describes.
  std::optional<BackupManifest> since;
  // Writes a consistent snapshot of the database to the given (new) file.
  std::function<Result<void>(const std::string& path)> snapshot_database;
  // Where the snapshot is written while the backup runs; empty: <data_dir>/.backup-tmp.
  // The continuous replica puts it on the replica's disk, not the live one.
  std::string scratch_dir;
  // With `since`: when nothing changed (no file, no chunk, no file removed), write no
  // backup at all and report `unchanged`.
  bool discard_if_unchanged = false;
};

struct BackupReport {
  BackupManifest manifest;
  std::uint64_t bytes_read = 0;     // file bytes put into the stream
  std::uint64_t bytes_written = 0;  // compressed bytes written
  int files_included = 0;
  int files_unchanged = 0;
  std::uint64_t database_chunks = 0;           // chunks of the database snapshot
  std::uint64_t database_chunks_included = 0;  // of which stored in this backup
  bool unchanged = false;   // discard_if_unchanged: nothing changed, nothing written
  double seconds = 0;
  double snapshot_seconds = 0;      // of which: the database snapshot
};

// Takes the BackupLock, snapshots the database into <data_dir>/.backup-tmp/ (on a helper
// thread, while the other files are streamed; files listed only after the snapshot are
// added after it, so every file the snapshot refers to is in), writes the database's
// chunks, and removes the snapshot. Errors name the file or step that failed.
Result<BackupReport> create_backup(const BackupOptions& options);

// Reads a whole backup ("-": standard input), verifying every checksum, and returns its
// manifest; a JSON manifest file is accepted as it is. For --since and `backup verify`.
Result<BackupManifest> read_backup_manifest(const std::string& path);

struct RestoreReport {
  BackupManifest manifest;          // of the last backup applied
  std::uint64_t bytes_restored = 0;
  int files = 0;
  double seconds = 0;
};

// Rebuilds a data directory at `data_dir` (missing or empty; refused otherwise) from a
// full backup followed by the incrementals on top of it, in order. Everything is written
// into a temporary directory beside the target, every file's SHA-256 is checked against
// its record and against the manifest, and only a complete, verified result is renamed
// into place (fsynced, directory included). On any error nothing is left behind and the
// message names the file and the backup it came from. `on_verified(i)` (optional) is
// called once inputs[i] has been read and checked whole, so a caller can tell which input
// a failure came from and which earlier point would restore.
Result<RestoreReport> restore_backup(const std::vector<std::string>& inputs, const std::string& data_dir,
                                     const std::function<void(std::size_t)>& on_verified = {});

}  // namespace hearth::ops
