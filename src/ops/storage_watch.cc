#include "ops/storage_watch.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "store/read_only.h"

namespace hearth::ops {
namespace {

constexpr std::int64_t kGrowthWindowMs = 3600 * 1000;
constexpr double kMiB = 1024.0 * 1024.0;

double file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<double>(st.st_size) : 0.0;
}

std::int64_t wall_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

StorageWatcher::StorageWatcher(StorageWatchOptions options, store::ReadOnlyMode& mode, Logger& log,
                               MetricsRegistry& metrics)
    : options_(std::move(options)),
      mode_(mode),
      log_(log),
      bytes_total_(metrics.gauge("hearth_disk_bytes", "Bytes of the data directory's filesystem.", {{"kind", "total"}})),
      bytes_free_(metrics.gauge("hearth_disk_bytes", "Bytes of the data directory's filesystem.", {{"kind", "free"}})),
      inodes_total_(metrics.gauge("hearth_disk_inodes", "Inodes of the data directory's filesystem.", {{"kind", "total"}})),
      inodes_free_(metrics.gauge("hearth_disk_inodes", "Inodes of the data directory's filesystem.", {{"kind", "free"}})),
      bytes_used_ratio_(metrics.gauge("hearth_disk_used_ratio", "Used share (0..1) of the data directory's filesystem.",
                                      {{"resource", "bytes"}})),
      inodes_used_ratio_(metrics.gauge("hearth_disk_used_ratio", "Used share (0..1) of the data directory's filesystem.",
                                       {{"resource", "inodes"}})),
      database_bytes_(metrics.gauge("hearth_database_bytes", "Size of the database files.", {{"file", "database"}})),
      wal_bytes_(metrics.gauge("hearth_database_bytes", "Size of the database files.", {{"file", "wal"}})),
      database_max_(metrics.gauge("hearth_database_max_bytes", "The database's size cap (ops.database_max_mib); 0: none.")),
      database_used_ratio_(metrics.gauge("hearth_disk_used_ratio", "Used share (0..1) of the data directory's filesystem.",
                                         {{"resource", "database"}})),
      growth_gauge_(metrics.gauge("hearth_disk_growth_bytes_per_second",
                                  "Growth of used bytes on the data directory's filesystem over the last hour.")),
      days_until_full_(metrics.gauge("hearth_disk_days_until_full",
                                     "Days until the data directory's filesystem is full at the observed growth rate; "
                                     "-1 when it is not growing.")) {
  days_until_full_.set(-1);
  metrics.callback_gauge("hearth_read_only", "1 while the server is in read-only mode (storage space ran low).",
                         [&mode] { return mode.active() ? 1.0 : 0.0; });
  metrics.callback_gauge("hearth_read_only_entered", "Times read-only mode was entered since start.",
                         [&mode] { return static_cast<double>(mode.times_entered()); });
}

CheckResult StorageWatcher::check() {
  struct statvfs st {};
  if (::statvfs(options_.data_dir.c_str(), &st) != 0)
    return {HealthStatus::critical, "",
            fmt::format("cannot stat the filesystem of {}: {}", options_.data_dir, std::strerror(errno)), {}};
  StorageSample s;
  s.total_bytes = static_cast<double>(st.f_blocks) * static_cast<double>(st.f_frsize);
  // Blocks reserved for root are not ours to use: count them as used.
  s.avail_bytes = static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
  s.total_inodes = static_cast<double>(st.f_files);
  s.avail_inodes = static_cast<double>(st.f_favail);
  if (!options_.database_path.empty()) {
    s.database_bytes = file_size(options_.database_path);
    s.wal_bytes = file_size(options_.database_path + "-wal");
  }
  return evaluate(s, wall_now_ms());
}

CheckResult StorageWatcher::evaluate(const StorageSample& s, std::int64_t now_ms) {
  const auto& t = options_.thresholds;
  double used_bytes = s.total_bytes - s.avail_bytes;
  double bytes_pct = s.total_bytes > 0 ? 100.0 * used_bytes / s.total_bytes : 0.0;
  double inode_pct = s.total_inodes > 0 ? 100.0 * (s.total_inodes - s.avail_inodes) / s.total_inodes : 0.0;

  // Growth over the window: oldest sample to this one.
  used_history_.emplace_back(now_ms, used_bytes);
  while (used_history_.size() > 2 && used_history_.front().first < now_ms - kGrowthWindowMs) used_history_.pop_front();
  growth_ = 0;
  if (used_history_.size() >= 2) {
    double dt = static_cast<double>(used_history_.back().first - used_history_.front().first) / 1000.0;
    if (dt > 0) growth_ = (used_history_.back().second - used_history_.front().second) / dt;
  }
  double days = growth_ > 0 ? s.avail_bytes / growth_ / 86400.0 : -1.0;

  bytes_total_.set(s.total_bytes);
  bytes_free_.set(s.avail_bytes);
  inodes_total_.set(s.total_inodes);
  inodes_free_.set(s.avail_inodes);
  bytes_used_ratio_.set(bytes_pct / 100.0);
  inodes_used_ratio_.set(inode_pct / 100.0);
  database_bytes_.set(s.database_bytes);
  wal_bytes_.set(s.wal_bytes);
  growth_gauge_.set(growth_);
  days_until_full_.set(days);

  // Read-only mode at the reserve floor; leave it with a quarter of the floor to spare.
  bool bytes_low = s.avail_bytes < static_cast<double>(options_.reserve_bytes);
  bool inodes_low = s.total_inodes > 0 && s.avail_inodes < static_cast<double>(options_.reserve_inodes);
  // Back: 1.25 times the floor and at least 8 MiB above it (read-only mode set by the store
  // on a full disk must not be left while the disk is still nearly full).
  double reserve = static_cast<double>(options_.reserve_bytes);
  bool bytes_back = s.avail_bytes >= std::max(1.25 * reserve, reserve + 8 * kMiB);
  bool inodes_back = s.total_inodes == 0 || s.avail_inodes >= 1.25 * static_cast<double>(options_.reserve_inodes);
  // The database against its cap: file plus WAL (an overestimate while the WAL holds pages
  // that a checkpoint will fold into the file, which errs on the safe side).
  const double db_max = static_cast<double>(options_.database_max_bytes);
  const double db_total = s.database_bytes + s.wal_bytes;
  const double db_pct = db_max > 0 ? 100.0 * db_total / db_max : 0.0;
  database_max_.set(db_max);
  database_used_ratio_.set(db_pct / 100.0);
  bool db_low = db_max > 0 && db_pct >= t.critical_percent;
  bool db_back = db_max <= 0 || db_pct < t.high_percent;
  if (options_.read_only_at_reserve && (bytes_low || inodes_low || db_low)) {
    std::string reason =
        bytes_low    ? fmt::format("{:.1f} MiB free on {} (reserve floor {:.1f} MiB)", s.avail_bytes / kMiB,
                                   options_.data_dir, static_cast<double>(options_.reserve_bytes) / kMiB)
        : inodes_low ? fmt::format("{:.0f} inodes free on {} (reserve floor {})", s.avail_inodes, options_.data_dir,
                                   options_.reserve_inodes)
                     : fmt::format("the database is {:.1f} MiB, {:.1f}% of its {:.1f} MiB limit (ops.database_max_mib)",
                                   db_total / kMiB, db_pct, db_max / kMiB);
    if (mode_.enter(reason)) log_.error("storage.read_only_entered", {{"reason", reason}});
  } else if (mode_.active() && bytes_back && inodes_back && db_back) {
    std::string was = mode_.reason();
    if (mode_.leave())
      log_.info("storage.read_only_left", {{"free_mib", fmt::format("{:.1f}", s.avail_bytes / kMiB)},
                                           {"free_inodes", s.avail_inodes}, {"was", was}});
  }

  CheckResult r;
  std::string growth_text =
      days >= 0 ? fmt::format(", growing {:.1f} MiB/day, full in {:.1f} days", growth_ * 86400.0 / kMiB, days) : "";
  r.value = fmt::format("{:.1f}% of {:.1f} GiB used ({:.1f} MiB free), {:.1f}% of inodes used, database {:.1f} MiB + "
                        "WAL {:.1f} MiB{} ({})",
                        bytes_pct, s.total_bytes / (kMiB * 1024), s.avail_bytes / kMiB, inode_pct,
                        s.database_bytes / kMiB, s.wal_bytes / kMiB, growth_text, options_.data_dir);
  r.perf = {{"disk_bytes_used", bytes_pct, "%", double(t.warning_percent), double(t.critical_percent)},
            {"disk_inodes_used", inode_pct, "%", double(t.warning_percent), double(t.critical_percent)},
            {"disk_bytes_free", s.avail_bytes, "B", -1, -1},
            {"database_bytes", s.database_bytes, "B", -1, -1},
            {"wal_bytes", s.wal_bytes, "B", double(options_.wal_warning_bytes), -1}};
  r.perf.push_back({"database_used", db_pct, "%", db_max > 0 ? double(t.warning_percent) : -1,
                    db_max > 0 ? double(t.critical_percent) : -1});
  // Each resource on its own; the worst decides the status, every one past a threshold is
  // named in the message (critical ones first).
  std::vector<std::string> critical, warning;
  auto judge = [&](double pct, bool floor_reached, const std::string& what, const std::string& critical_text) {
    if (pct >= t.critical_percent || floor_reached) {
      critical.push_back(critical_text);
    } else if (pct >= t.warning_percent) {
      const bool high = pct >= t.high_percent;
      warning.push_back(fmt::format("{} is {:.1f}% used ({} at {}%)", what, pct, high ? "high" : "warning",
                                    high ? t.high_percent : t.warning_percent));
    }
  };
  const double reserve_mib = static_cast<double>(options_.reserve_bytes) / kMiB;
  judge(bytes_pct, bytes_low, fmt::format("space on {}", options_.data_dir),
        fmt::format("space on {} is {:.1f}% used (critical at {}%, read-only below {:.0f} MiB free): free space now",
                    options_.data_dir, bytes_pct, t.critical_percent, reserve_mib));
  judge(inode_pct, inodes_low, fmt::format("inodes on {}", options_.data_dir),
        fmt::format("inodes on {} are {:.1f}% used (critical at {}%, read-only below {} inodes free): remove files now",
                    options_.data_dir, inode_pct, t.critical_percent, options_.reserve_inodes));
  if (db_max > 0)
    judge(db_pct, false, fmt::format("the database ({:.1f} of {:.1f} MiB, ops.database_max_mib)", db_total / kMiB, db_max / kMiB),
          fmt::format("the database is {:.1f} MiB, {:.1f}% of its {:.1f} MiB limit (critical and read-only at {}%): "
                      "purge history or raise ops.database_max_mib",
                      db_total / kMiB, db_pct, db_max / kMiB, t.critical_percent));
  if (s.wal_bytes > static_cast<double>(options_.wal_warning_bytes))
    warning.push_back(fmt::format("the database's WAL is {:.1f} MiB (warning at {:.1f} MiB): checkpoints are not keeping "
                                  "up, is a long-running reader or backup holding it?",
                                  s.wal_bytes / kMiB, static_cast<double>(options_.wal_warning_bytes) / kMiB));
  std::vector<std::string> all = critical;
  all.insert(all.end(), warning.begin(), warning.end());
  r.status = !critical.empty() ? HealthStatus::critical : !warning.empty() ? HealthStatus::warning : HealthStatus::ok;
  r.message = fmt::format("{}", fmt::join(all, "; "));
  if (!growth_text.empty() && r.status == HealthStatus::warning) r.message += growth_text;
  // Past the high threshold the admin log says so at every check, not only on change.
  if (r.status != HealthStatus::ok && (std::max({bytes_pct, inode_pct, db_pct}) >= t.high_percent))
    log_.warn("storage.space_high", {{"msg", r.message}});
  return r;
}

CheckResult StorageWatcher::read_only_check() const {
  if (!mode_.active()) return {HealthStatus::ok, "read-write", "", {}};
  return {HealthStatus::critical, "read-only",
          fmt::format("read-only mode: {}; reads and logins work, writes are refused until space is freed",
                      mode_.reason()),
          {}};
}

}  // namespace hearth::ops
