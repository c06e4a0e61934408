#include "ops/health.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/json.h"

namespace hearth::ops {

std::string_view health_status_name(HealthStatus s) {
  switch (s) {
    case HealthStatus::ok: return "ok";
    case HealthStatus::warning: return "warning";
    case HealthStatus::critical: return "critical";
    case HealthStatus::unknown: return "unknown";
  }
  return "unknown";
}

namespace {
std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

HealthStatus worse(HealthStatus a, HealthStatus b) {
  return static_cast<int>(a) >= static_cast<int>(b) ? a : b;
}

std::string perf_number(double v) {
  if (v == static_cast<double>(static_cast<std::int64_t>(v))) return fmt::format("{}", static_cast<std::int64_t>(v));
  return fmt::format("{:.2f}", v);
}
}  // namespace

std::string HealthSnapshot::to_json() const {
  JsonWriter w;
  w.begin_object().key("status").value(health_status_name(overall)).key("checked_at_ms").value(checked_at_ms);
  w.key("checks").begin_object();
  for (const auto& c : checks) {
    w.key(c.name).begin_object();
    w.key("status").value(health_status_name(c.result.status));
    w.key("value").value(c.result.value);
    if (!c.result.message.empty()) w.key("message").value(c.result.message);
    w.end_object();
  }
  w.end_object().end_object();
  return w.take();
}

std::string HealthSnapshot::to_nagios_line() const {
  static constexpr const char* words[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
  std::string text;
  int ok_count = 0;
  for (const auto& c : checks) {
    if (c.result.status == HealthStatus::ok) {
      ++ok_count;
      continue;
    }
    if (!text.empty()) text += "; ";
    text += fmt::format("{} {}: {}", c.name, health_status_name(c.result.status),
                        c.result.message.empty() ? c.result.value : c.result.message);
  }
  if (text.empty()) text = fmt::format("{} checks ok", ok_count);
  std::string perf;
  for (const auto& c : checks)
    for (const auto& p : c.result.perf) {
      perf += fmt::format(" {}={}{};{};{}", p.label, perf_number(p.value), p.unit,
                          p.warn >= 0 ? perf_number(p.warn) : "", p.crit >= 0 ? perf_number(p.crit) : "");
    }
  // '|' separates text from performance data in the plugin format.
  for (char& ch : text)
    if (ch == '|' || ch == '\n') ch = ' ';
  return fmt::format("HEARTH {} - {}{}{}", words[static_cast<int>(overall)], text, perf.empty() ? "" : " |", perf);
}

int HealthSnapshot::nagios_exit_code() const { return static_cast<int>(overall); }

HealthMonitor::HealthMonitor(Logger& log, MetricsRegistry& metrics, std::chrono::milliseconds interval)
    : log_(log), metrics_(metrics), interval_(interval) {}

HealthMonitor::~HealthMonitor() { stop(); }

void HealthMonitor::add_check(std::string name, HealthCheck check) {
  status_gauges_.push_back(&metrics_.gauge("hearth_health_status",
                                           "Health check status: 0 ok, 1 warning, 2 critical, 3 unknown.",
                                           {{"check", name}}));
  checks_.emplace_back(std::move(name), std::move(check));
}

void HealthMonitor::start() {
  run_now();
  thread_ = std::thread([this] { loop(); });
}

void HealthMonitor::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HealthSnapshot HealthMonitor::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

HealthSnapshot HealthMonitor::run_now() {
  std::lock_guard run_lock(run_mutex_);
  HealthSnapshot snap;
  snap.overall = HealthStatus::ok;
  for (std::size_t i = 0; i < checks_.size(); ++i) {
    CheckResult r;
    try {
      r = checks_[i].second();
    } catch (const std::exception& e) {
      r = {HealthStatus::unknown, "", fmt::format("check failed to run: {}", e.what()), {}};
    }
    status_gauges_[i]->set(static_cast<double>(r.status));
    snap.overall = worse(snap.overall, r.status);
    snap.checks.push_back({checks_[i].first, std::move(r)});
  }
  snap.checked_at_ms = wall_ms();
  HealthSnapshot previous;
  {
    std::lock_guard lock(mutex_);
    previous = std::move(snapshot_);
    snapshot_ = snap;
  }
  for (std::size_t i = 0; i < snap.checks.size(); ++i) {
    const auto& now = snap.checks[i];
    bool changed = i >= previous.checks.size() || previous.checks[i].result.status != now.result.status;
    if (changed && (now.result.status != HealthStatus::ok || i < previous.checks.size())) {
      auto level = now.result.status == HealthStatus::ok ? LogLevel::info
                   : now.result.status == HealthStatus::warning ? LogLevel::warn : LogLevel::error;
      log_.log(level, "health.changed", {{"check", now.name}, {"status", health_status_name(now.result.status)},
                                         {"value", now.result.value}, {"msg", now.result.message}});
    }
  }
  if (listener_) listener_(snap);
  return snap;
}

void HealthMonitor::loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, interval_, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    run_now();
    lock.lock();
  }
}

HealthCheck disk_space_check(std::string path, DiskThresholds t) {
  return [path = std::move(path), t]() -> CheckResult {
    struct statvfs st {};
    if (::statvfs(path.c_str(), &st) != 0)
      return {HealthStatus::critical, "", fmt::format("cannot stat filesystem of {}: {}", path, std::strerror(errno)), {}};
    auto pct = [](double used, double total) { return total > 0 ? 100.0 * used / total : 0.0; };
    // Blocks reserved for root are not available to us: count them as used.
    double total_bytes = static_cast<double>(st.f_blocks) * st.f_frsize;
    double avail_bytes = static_cast<double>(st.f_bavail) * st.f_frsize;
    double used_bytes = total_bytes - avail_bytes;
    double bytes_pct = pct(used_bytes, total_bytes);
    double inode_pct = st.f_files > 0 ? pct(static_cast<double>(st.f_files - st.f_favail), static_cast<double>(st.f_files)) : 0.0;
    double worst = std::max(bytes_pct, inode_pct);
    CheckResult r;
    r.value = fmt::format("{:.1f}% of {:.1f} GiB used, {:.1f}% of inodes used ({})", bytes_pct,
                          total_bytes / (1024.0 * 1024 * 1024), inode_pct, path);
    r.perf = {{"disk_bytes_used", bytes_pct, "%", double(t.warning_percent), double(t.critical_percent)},
              {"disk_inodes_used", inode_pct, "%", double(t.warning_percent), double(t.critical_percent)},
              {"disk_bytes_free", avail_bytes, "B", -1, -1}};
    const char* what = inode_pct > bytes_pct ? "inodes" : "space";
    if (worst >= t.critical_percent) {
      r.status = HealthStatus::critical;
      r.message = fmt::format("{} on {} is {:.1f}% used (critical at {}%): free space now", what, path, worst, t.critical_percent);
    } else if (worst >= t.warning_percent) {
      r.status = HealthStatus::warning;
      r.message = fmt::format("{} on {} is {:.1f}% used ({} at {}%)", what, path, worst,
                              worst >= t.high_percent ? "high" : "warning",
                              worst >= t.high_percent ? t.high_percent : t.warning_percent);
    } else {
      r.status = HealthStatus::ok;
    }
    return r;
  };
}

HealthCheck path_writable_check(std::string dir) {
  return [dir = std::move(dir)]() -> CheckResult {
    std::string probe = fmt::format("{}/.hearth-probe-{}", dir, ::getpid());
    auto failed = [&](const char* step) {
      int e = errno;
      ::unlink(probe.c_str());
      return CheckResult{HealthStatus::critical, dir,
                         fmt::format("{} is not usable by uid {}: {} failed: {}", dir, ::getuid(), step, std::strerror(e)), {}};
    };
    int fd = ::open(probe.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return failed("create");
    static constexpr char payload[] = "hearth";
    bool ok = ::write(fd, payload, sizeof payload) == static_cast<ssize_t>(sizeof payload);
    if (!ok) {
      ::close(fd);
      return failed("write");
    }
    if (::fsync(fd) != 0) {
      ::close(fd);
      return failed("fsync");
    }
    char back[sizeof payload] = {};
    if (::pread(fd, back, sizeof back, 0) != static_cast<ssize_t>(sizeof back) || std::memcmp(back, payload, sizeof back) != 0) {
      ::close(fd);
      return failed("read back");
    }
    ::close(fd);
    if (::unlink(probe.c_str()) != 0) return failed("unlink");
    if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0) return failed("access");
    return CheckResult{HealthStatus::ok, dir, "", {}};
  };
}

HealthCheck open_files_check(MetricsRegistry& metrics, int warning_percent, int critical_percent) {
  Gauge& open_gauge = metrics.gauge("hearth_open_files", "File descriptors open in hearthd.");
  Gauge& limit_gauge = metrics.gauge("hearth_open_files_limit", "hearthd's open-files limit (soft RLIMIT_NOFILE).");
  return [&open_gauge, &limit_gauge, warning_percent, critical_percent]() -> CheckResult {
    struct rlimit rl {};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    const double limit = static_cast<double>(rl.rlim_cur);
    const double warn_at = limit * warning_percent / 100.0, crit_at = limit * critical_percent / 100.0;
    limit_gauge.set(limit);
    std::uint64_t open = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
      while (struct dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++open;
      ::closedir(d);
      if (open > 0) --open;  // the directory stream itself
    } else if (errno == EMFILE || errno == ENFILE) {
      // Not even one more descriptor: that is the answer (incident I16).
      open_gauge.set(limit);
      return CheckResult{HealthStatus::critical, fmt::format("all {} descriptors open", rl.rlim_cur),
                         fmt::format("file descriptors exhausted: {} of {} in use", rl.rlim_cur, rl.rlim_cur),
                         {{"open_files", limit, "", warn_at, crit_at}}};
    }
    open_gauge.set(static_cast<double>(open));
    const double pct = limit > 0 ? 100.0 * static_cast<double>(open) / limit : 0;
    CheckResult r;
    r.value = fmt::format("{} of {} descriptors open", open, rl.rlim_cur);
    r.perf = {{"open_files", static_cast<double>(open), "", warn_at, crit_at}};
    if (pct >= critical_percent) {
      r.status = HealthStatus::critical;
      r.message = fmt::format("{} of {} file descriptors in use ({:.0f}%, critical at {}%)", open, rl.rlim_cur, pct,
                              critical_percent);
    } else if (pct >= warning_percent) {
      r.status = HealthStatus::warning;
      r.message = fmt::format("{} of {} file descriptors in use ({:.0f}%, warning at {}%)", open, rl.rlim_cur, pct,
                              warning_percent);
    } else {
      r.status = HealthStatus::ok;
    }
    return r;
  };
}

}  // namespace hearth::ops
