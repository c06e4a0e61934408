#include "ops/replica.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "core/durable_file.h"

namespace hearth::ops {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kChainPrefix = "chain-";

tl::unexpected<Error> sys_fail(std::string_view what, const std::string& path, int e = errno) {
  return fail(Errc::io, fmt::format("{} {}: {}", what, path, std::strerror(e)));
}

// `content` at `path`, durably: <path>.partial, fsync, rename, fsync of the directory.
Result<void> write_file_durably(const std::string& path, const std::string& content) {
  const std::string partial = path + ".partial";
  int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_fail("cannot create", partial);
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(partial.c_str());
      return sys_fail("cannot write", partial, e);
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(partial.c_str());
    return sys_fail("fsync", partial, e);
  }
  ::close(fd);
  if (::rename(partial.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(partial.c_str());
    return sys_fail("cannot rename to", path, e);
  }
  return fsync_directory(fs::path(path).parent_path().string());
}

Result<std::string> read_small_file(const std::string& path, std::size_t limit) {
  std::string out;
  auto r = read_file_chunks(path, 65536, [&](std::string_view piece) -> Result<void> {
    out.append(piece);
    if (out.size() > limit) return fail(Errc::corrupt, fmt::format("{} is larger than {} bytes", path, limit));
    return ok();
  });
  if (!r) return tl::unexpected(r.error());
  return out;
}

std::string link_name(std::uint64_t sequence) { return fmt::format("{:06}", sequence); }

std::string utc_time(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

std::string chain_name(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  return fmt::format("{}{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z", kChainPrefix, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

// The links of one chain directory, as far as they are complete and linked.
ReplicaChain read_chain(const std::string& dir, const std::string& name) {
  ReplicaChain chain;
  chain.dir = dir;
  chain.name = name;
  for (std::uint64_t seq = 0;; ++seq) {
    const std::string base = dir + "/" + link_name(seq);
    struct stat st {};
    const bool have_json = ::stat((base + ".json").c_str(), &st) == 0;
    if (!have_json) {
      if (::stat((base + ".bak").c_str(), &st) == 0) chain.problem = fmt::format("{}.bak has no manifest (an unfinished round)", base);
      break;
    }
    auto json = read_small_file(base + ".json", 512u << 20);
    if (!json) {
      chain.problem = json.error().message;
      break;
    }
    auto m = BackupManifest::parse(*json);
    if (!m) {
      chain.problem = fmt::format("{}.json: {}", base, m.error().message);
      break;
    }
    if (m->sequence != seq || (seq == 0 ? !m->full() : m->parent_id != chain.links.back().manifest.backup_id)) {
      chain.problem = fmt::format("{}.json does not follow the backup before it", base);
      break;
    }
    if (::stat((base + ".bak").c_str(), &st) != 0) {
      chain.problem = fmt::format("{}.bak is missing", base);
      break;
    }
    chain.links.push_back({base + ".bak", static_cast<std::uint64_t>(st.st_size), std::move(*m)});
  }
  return chain;
}

Result<std::vector<ReplicaChain>> list_all_chains(const std::string& replica_dir, std::vector<std::string>* broken) {
  DIR* d = ::opendir(replica_dir.c_str());
  if (!d) return sys_fail("cannot list", replica_dir);
  std::vector<ReplicaChain> chains;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(kChainPrefix, 0) != 0) continue;
    const std::string dir = replica_dir + "/" + name;
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    auto chain = read_chain(dir, name);
    if (chain.links.empty()) {
      if (broken) broken->push_back(dir);
      continue;
    }
    chains.push_back(std::move(chain));
  }
  ::closedir(d);
  std::sort(chains.begin(), chains.end(), [](const ReplicaChain& a, const ReplicaChain& b) {
    auto at = a.links.front().manifest.created_at_ms, bt = b.links.front().manifest.created_at_ms;
    return at != bt ? at > bt : a.name > b.name;
  });
  return chains;
}

}  // namespace

// ---- the writer --------------------------------------------------------------------------

ReplicaWriter::ReplicaWriter(ReplicaOptions options, const Clock& clock, Logger& log, MetricsRegistry& metrics)
    : options_(std::move(options)),
      clock_(clock),
      log_(log),
      started_ms_(clock.now_ms()),
      last_success_gauge_(metrics.gauge("hearth_replica_last_success_timestamp_seconds",
                                        "When the last successful replica round began: the replica holds every write acknowledged before it (0: none yet)")),
      failing_gauge_(metrics.gauge("hearth_replica_failing", "1 while the last replica round failed")),
      round_seconds_(metrics.gauge("hearth_replica_last_round_seconds", "Duration of the last replica round")),
      bytes_total_(metrics.counter("hearth_replica_bytes_total", "Compressed bytes written to the replica")),
      rounds_full_(metrics.counter("hearth_replica_rounds_total", "Replica rounds by result", {{"result", "full"}})),
      rounds_incremental_(metrics.counter("hearth_replica_rounds_total", "Replica rounds by result", {{"result", "incremental"}})),
      rounds_unchanged_(metrics.counter("hearth_replica_rounds_total", "Replica rounds by result", {{"result", "unchanged"}})),
      rounds_skipped_(metrics.counter("hearth_replica_rounds_total", "Replica rounds by result", {{"result", "skipped"}})),
      rounds_failed_(metrics.counter("hearth_replica_rounds_total", "Replica rounds by result", {{"result", "failed"}})) {
  metrics.callback_gauge("hearth_replica_lag_seconds",
                         "Seconds since the last successful replica round began (since start-up when none yet): what a "
                         "restore from the replica would lose at most",
                         [this] {
                           std::lock_guard lock(mutex_);
                           auto since = last_success_ms_ > 0 ? last_success_ms_ : started_ms_;
                           return static_cast<double>(clock_.now_ms() - since) / 1000.0;
                         });
}

ReplicaWriter::~ReplicaWriter() { stop(); }

void ReplicaWriter::start() {
  thread_ = std::thread([this] { loop(); });
}

void ReplicaWriter::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ReplicaWriter::loop() {
  for (;;) {
    auto began = std::chrono::steady_clock::now();
    (void)run_round();
    std::unique_lock lock(mutex_);
    if (wake_.wait_until(lock, began + options_.interval, [this] { return stopping_; })) return;
  }
}

Result<ReplicaRound> ReplicaWriter::run_round() {
  const std::int64_t started = clock_.now_ms();
  auto t0 = std::chrono::steady_clock::now();
  auto r = write_round(started);
  round_seconds_.set(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::lock_guard lock(mutex_);
  if (!r) {
    rounds_failed_.inc();
    failing_gauge_.set(1);
    last_error_ = r.error().message;
    log_.warn("replica.round_failed", {{"replica_dir", options_.replica_dir}, {"error", last_error_}});
    return r;
  }
  switch (*r) {
    case ReplicaRound::skipped:
      rounds_skipped_.inc();
      return r;  // neither a success nor a failure: the replica is as old as it was
    case ReplicaRound::full: rounds_full_.inc(); break;
    case ReplicaRound::incremental: rounds_incremental_.inc(); break;
    case ReplicaRound::unchanged: rounds_unchanged_.inc(); break;
  }
  last_success_ms_ = started;
  last_error_.clear();
  failing_gauge_.set(0);
  last_success_gauge_.set(static_cast<double>(started) / 1000.0);
  return r;
}

Result<ReplicaRound> ReplicaWriter::write_round(std::int64_t started_ms) {
  struct stat st {};
  if (::stat(options_.replica_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail(Errc::not_found, fmt::format("the replica directory {} is missing ({}); create it, on another disk",
                                             options_.replica_dir, std::strerror(errno ? errno : ENOTDIR)));
  if (!loaded_) {
    // Continue the newest complete chain a previous run left, if any.
    auto chains = list_all_chains(options_.replica_dir, nullptr);
    if (!chains) return tl::unexpected(chains.error());
    if (!chains->empty()) {
      const auto& c = chains->front();
      chain_dir_ = c.dir;
      last_ = c.links.back().manifest;
      full_bytes_ = c.links.front().bytes;
      incremental_bytes_ = 0;
      for (std::size_t i = 1; i < c.links.size(); ++i) incremental_bytes_ += c.links[i].bytes;
      incrementals_ = static_cast<int>(c.links.size()) - 1;
      // A round that died after its .bak but before its .json: that name is reused.
      std::error_code ec;
      fs::remove(c.dir + "/" + link_name(last_->sequence + 1) + ".bak", ec);
    }
    loaded_ = true;
  }
  const bool full = !last_ || incrementals_ >= options_.max_incrementals ||
                    incremental_bytes_ * 100 > full_bytes_ * static_cast<std::uint64_t>(options_.rebase_percent);
  std::string dir = chain_dir_;
  if (full) {
    dir = options_.replica_dir + "/" + chain_name(started_ms);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_fail("cannot create", dir);
    if (auto r = fsync_directory(options_.replica_dir); !r) return tl::unexpected(r.error());
  }
  const std::uint64_t sequence = full ? 0 : last_->sequence + 1;
  const std::string base = dir + "/" + link_name(sequence);

  BackupOptions o;
  o.data_dir = options_.data_dir;
  o.output = base + ".bak";
  o.zstd_level = options_.zstd_level;
  if (!full) o.since = last_;
  o.discard_if_unchanged = true;
  o.scratch_dir = options_.replica_dir + "/.scratch";
  o.snapshot_database = options_.snapshot_database;
  auto r = create_backup(o);
  auto abandon_new_chain = [&] {
    if (!full) return;
    std::error_code ec;
    fs::remove_all(dir, ec);
  };
  if (!r) {
    abandon_new_chain();
    if (r.error().code == Errc::unavailable && r.error().message.find("already running") != std::string::npos) {
      log_.info("replica.round_skipped", {{"reason", r.error().message}});
      return ReplicaRound::skipped;
    }
    return tl::unexpected(r.error());
  }
  if (r->unchanged) return ReplicaRound::unchanged;
  if (auto w = write_file_durably(base + ".json", r->manifest.to_json()); !w) {
    std::error_code ec;
    fs::remove(o.output, ec);
    abandon_new_chain();
    return tl::unexpected(w.error());
  }
  bytes_total_.inc(r->bytes_written);
  log_.info("replica.written", {{"file", o.output},
                                {"kind", full ? "full" : "incremental"},
                                {"sequence", static_cast<std::int64_t>(sequence)},
                                {"bytes", static_cast<std::int64_t>(r->bytes_written)},
                                {"database_chunks", static_cast<std::int64_t>(r->database_chunks_included)},
                                {"seconds", r->seconds}});
  last_ = r->manifest;
  if (full) {
    chain_dir_ = dir;
    full_bytes_ = r->bytes_written;
    incremental_bytes_ = 0;
    incrementals_ = 0;
    prune_chains();
    return ReplicaRound::full;
  }
  incremental_bytes_ += r->bytes_written;
  ++incrementals_;
  return ReplicaRound::incremental;
}

// After a new full backup: the newest keep_chains complete chains stay; older chains and
// directories without a complete full backup go.
void ReplicaWriter::prune_chains() {
  std::vector<std::string> broken;
  auto chains = list_all_chains(options_.replica_dir, &broken);
  if (!chains) return;
  std::error_code ec;
  for (std::size_t i = static_cast<std::size_t>(std::max(1, options_.keep_chains)); i < chains->size(); ++i) {
    if ((*chains)[i].dir == chain_dir_) continue;
    fs::remove_all((*chains)[i].dir, ec);
    log_.info("replica.chain_removed", {{"dir", (*chains)[i].dir}});
  }
  for (const auto& dir : broken) fs::remove_all(dir, ec);
  (void)fsync_directory(options_.replica_dir);
}

CheckResult ReplicaWriter::check() const {
  std::lock_guard lock(mutex_);
  const std::int64_t now = clock_.now_ms();
  const std::int64_t since = last_success_ms_ > 0 ? last_success_ms_ : started_ms_;
  const std::int64_t lag_s = std::max<std::int64_t>(0, (now - since) / 1000);
  const std::int64_t limit_s = 3 * static_cast<std::int64_t>(options_.interval.count());
  std::string value = last_success_ms_ > 0 ? fmt::format("last copy {} s ago in {}", lag_s, options_.replica_dir)
                                           : fmt::format("no copy yet in {}", options_.replica_dir);
  std::vector<PerfData> perf{{"replica_lag", static_cast<double>(lag_s), "s", static_cast<double>(limit_s), -1}};
  if (!last_error_.empty())
    return {HealthStatus::warning, value,
            fmt::format("the last replica round failed: {}; a restore from the replica would lose the last {} s", last_error_,
                        lag_s),
            perf};
  if (lag_s > limit_s)
    return {HealthStatus::warning, value,
            fmt::format("the replica is stale: no successful round for {} s (interval {} s)", lag_s,
                        options_.interval.count()),
            perf};
  return {HealthStatus::ok, value, "", perf};
}

// ---- reading and restoring ---------------------------------------------------------------

Result<std::vector<ReplicaChain>> list_replica_chains(const std::string& replica_dir) {
  return list_all_chains(replica_dir, nullptr);
}

Result<ReplicaRestoreReport> restore_from_replica(const ReplicaRestoreOptions& o) {
  auto chains = list_replica_chains(o.replica_dir);
  if (!chains) return tl::unexpected(chains.error());
  if (chains->empty())
    return fail(Errc::not_found, fmt::format("{} holds no complete replica chain (no chain-*/000000.json with its .bak)",
                                             o.replica_dir));
  std::size_t pick = 0;
  if (!o.chain.empty()) {
    auto it = std::find_if(chains->begin(), chains->end(), [&](const ReplicaChain& c) { return c.name == o.chain; });
    if (it == chains->end()) return fail(Errc::not_found, fmt::format("no complete chain {} in {}", o.chain, o.replica_dir));
    pick = static_cast<std::size_t>(it - chains->begin());
  }
  const ReplicaChain& chain = (*chains)[pick];
  std::size_t count = chain.links.size();
  if (o.up_to) {
    if (*o.up_to >= chain.links.size())
      return fail(Errc::invalid_argument, fmt::format("{} ends at sequence {}; --up-to {} is past it", chain.name,
                                                      chain.links.size() - 1, *o.up_to));
    count = static_cast<std::size_t>(*o.up_to) + 1;
  }
  std::vector<std::string> inputs;
  for (std::size_t i = 0; i < count; ++i) inputs.push_back(chain.links[i].file);
  std::optional<std::size_t> verified;
  auto r = restore_backup(inputs, o.data_dir, [&verified](std::size_t i) { verified = i; });
  if (!r) {
    std::string advice;
    if (verified) {
      const auto& ok_link = chain.links[*verified];
      advice = fmt::format("; the chain reads correctly up to sequence {} (made {}): run again with --up-to {} to "
                           "restore that point",
                           *verified, utc_time(ok_link.manifest.created_at_ms), *verified);
    } else if (pick + 1 < chains->size()) {
      const auto& older = (*chains)[pick + 1];
      advice = fmt::format("; the full backup of {} is damaged: run again with --chain {} to restore the older chain "
                           "(up to {})",
                           chain.name, older.name, utc_time(older.links.back().manifest.created_at_ms));
    } else {
      advice = "; no older chain to fall back on";
    }
    return fail(r.error().code, r.error().message + advice);
  }
  ReplicaRestoreReport report;
  report.restore = std::move(*r);
  report.chain = chain.name;
  report.backups = count;
  return report;
}

}  // namespace hearth::ops
