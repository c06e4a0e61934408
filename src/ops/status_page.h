// A static status page and Atom feed (incident I14: the status page had to live on
// another host so that it stays up when the main server is down).
//
// hearthd writes two plain files into `dir` (default <data_dir>/status):
//   index.html  the current overall state, every check's status, and the latest entries;
//               no script, no external asset (inline CSS only), so it can be copied to
//               any other web server (rsync/scp from cron) and served from there;
//   feed.atom   an Atom 1.0 feed (RFC 4287) of the same entries, newest first.
// An entry is added when the overall health state changes (ok -> warning -> critical ...)
// and for each admin notice (`hearthctl notice "text"`). Entries are kept in
// entries.jsonl beside the files (one JSON object per line, at most max_entries kept) so
// that a restart keeps the history. Every file is written to a temporary name, fsynced,
// renamed into place, and the directory fsynced: a reader never sees half a page.
//
// Threads: on_health() runs on the HealthMonitor's thread, add_notice() on the admin
// thread; a mutex serialises them. start() before either.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "ops/health.h"

namespace hearth::ops {

struct StatusPageOptions {
  std::string dir;
  std::string title = "hearth status";  // the page's and the feed's title
  std::string feed_id;                  // the Atom feed id (a URI); empty: urn:hearth:status:<title>
  std::size_t max_entries = 100;
};

struct StatusEntry {
  std::int64_t time_ms = 0;
  std::string kind;    // "state" or "notice"
  std::string status;  // ok / warning / critical / unknown for "state"; "notice"
  std::string text;
};

class StatusPage {
 public:
  StatusPage(StatusPageOptions options, Logger& log);

  // Creates the directory, loads earlier entries and writes the files once.
  Result<void> start();
  // A new health snapshot: regenerates the files when the overall state changed.
  void on_health(const HealthSnapshot& snapshot);
  // An admin notice: adds an entry and regenerates the files.
  Result<void> add_notice(std::string text);

  const std::string& dir() const { return options_.dir; }

 private:
  Result<void> write_files();  // with mutex_ held
  Result<void> append_entry(const StatusEntry& e);

  StatusPageOptions options_;
  Logger& log_;
  std::mutex mutex_;
  std::vector<StatusEntry> entries_;  // oldest first
  std::optional<HealthSnapshot> last_;
};

}  // namespace hearth::ops
