// hearthctl: administers hearthd. Talks to the running daemon over its admin socket;
// when no daemon runs on the data directory, runs the same commands on it directly.
#include <fcntl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include "accounts/accounts.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net.h"
#include "ops/account_commands.h"
#include "ops/admin.h"
#include "ops/archival.h"
#include "ops/backup.h"
#include "ops/replica.h"
#include "ops/status_page.h"
#include "ops/system.h"
#include "store/store.h"

namespace hearth {
namespace {

// Nagios plugin exit codes, also used for every other command: 0 ok, 2 failed.
constexpr int kOk = 0;
constexpr int kWarning = 1;
constexpr int kCritical = 2;
constexpr int kUnknown = 3;

struct Target {
  Config config;
  std::string data_dir;
  std::string socket;
};

// Reads a password: from stdin when it is not a terminal (scripts), otherwise prompted
// twice without echo.
Result<std::string> read_password(bool confirm) {
  std::string pw;
  if (!::isatty(STDIN_FILENO)) {
    if (!std::getline(std::cin, pw) || pw.empty()) return fail(Errc::invalid_argument, "no password on standard input");
    return pw;
  }
  auto prompt = [](const char* text, std::string& out) {
    fmt::print(stderr, "{}", text);
    termios old{};
    ::tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::getline(std::cin, out);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    fmt::print(stderr, "\n");
  };
  prompt("Password: ", pw);
  if (pw.empty()) return fail(Errc::invalid_argument, "empty password");
  if (confirm) {
    std::string again;
    prompt("Again: ", again);
    if (again != pw) return fail(Errc::invalid_argument, "the passwords differ");
  }
  return pw;
}

// hearthd built or installed next to this hearthctl, else "hearthd" (found on PATH).
std::string sibling_hearthd() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (auto candidate : {self.parent_path().parent_path() / "hearthd" / "hearthd", self.parent_path() / "hearthd"})
      if (std::filesystem::exists(candidate, ec)) return candidate.string();
  return "hearthd";
}

// The pid written in <data_dir>/hearthd.lock by the daemon holding it (0 if none).
long lock_pid(const std::string& data_dir) {
  std::FILE* f = std::fopen((data_dir + "/hearthd.lock").c_str(), "r");
  if (!f) return 0;
  long pid = 0;
  if (std::fscanf(f, "%ld", &pid) != 1) pid = 0;
  std::fclose(f);
  return pid;
}

// Incident I18: starts `hearthd --takeover` in its own session (it outlives hearthctl and,
// under systemd's ExecReload, becomes the service's main process) and waits until it holds
// the data directory and answers on the admin socket.
int graceful_restart(const Target& t, const std::string& hearthd, const std::string& config_path,
                     std::chrono::seconds timeout) {
  if (!ops::DataDirLock::is_held_by_other(t.data_dir)) {
    fmt::print(stderr, "hearthctl: no hearthd is running on {}; start it instead\n", t.data_dir);
    return kCritical;
  }
  long old_pid = lock_pid(t.data_dir);
  std::vector<std::string> args = {hearthd};
  if (!config_path.empty()) args.insert(args.end(), {"--config", std::filesystem::absolute(config_path).string()});
  args.insert(args.end(), {"--takeover", "--quiet"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) {
    fmt::print(stderr, "hearthctl: fork: {}\n", std::strerror(errno));
    return kCritical;
  }
  if (child == 0) {
    ::setsid();
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);  // the banner; logs stay on stderr
    }
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "hearthctl: cannot run %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(child, &status, WNOHANG) == child) {
      fmt::print(stderr, "hearthctl: the new hearthd exited ({}) before serving; the old one ({}) {}\n",
                 WIFEXITED(status) ? fmt::format("status {}", WEXITSTATUS(status)) : std::string("killed"), old_pid,
                 ops::DataDirLock::is_held_by_other(t.data_dir) ? "still runs" : "has stopped");
      return kCritical;
    }
    if (lock_pid(t.data_dir) == child) {
      auto reply = ops::admin_call(t.socket, "health", {}, 1000);
      if (reply && reply->ok) {
        fmt::print("hearthd {} took over from {}\n", child, old_pid);
        return kOk;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a process we do not own
  }
  fmt::print(stderr, "hearthctl: the new hearthd ({}) is not serving after {} s\n", child, timeout.count());
  return kCritical;
}

// Runs one admin command: over the socket if the daemon runs, else in-process.
Result<ops::AdminReply> call(const Target& t, const std::string& command, const ops::AdminArgs& args, bool daemon_only) {
  auto reply = ops::admin_call(t.socket, command, args);
  if (reply || reply.error().code != Errc::unavailable) return reply;
  if (daemon_only) return reply;
  if (ops::DataDirLock::is_held_by_other(t.data_dir))
    return fail(Errc::unavailable, fmt::format("hearthd holds {} but does not answer on {}", t.data_dir, t.socket));
  // No daemon: work on the data directory directly, holding its lock meanwhile.
  if (!std::filesystem::exists(t.data_dir))
    return fail(Errc::not_found, fmt::format("no data directory at {} (start hearthd once, or pass --data-dir)", t.data_dir));
  auto lock = ops::DataDirLock::acquire(t.data_dir);
  if (!lock) return tl::unexpected(lock.error());
  Logger log(LogLevel::warn, LogFormat::text);
  MetricsRegistry metrics;
  SystemClock clock;
  store::StoreOptions so;
  so.path = t.data_dir + "/hearth.db";
  so.readers = 1;
  auto store = store::Store::open_sqlite(so, log, metrics);
  if (!store) return tl::unexpected(store.error());
  accounts::AccountsOptions ao;
  ao.scram_iterations = t.config.scram_iterations;
  ao.invite_ttl_ms = std::int64_t{t.config.invite_ttl_hours} * 3600 * 1000;
  ao.token_ttl_ms = std::int64_t{t.config.token_ttl_days} * 24 * 3600 * 1000;
  auto accounts = accounts::Accounts::open(**store, clock, log, ao);
  if (!accounts) return tl::unexpected(accounts.error());
  for (const auto& d : t.config.domains) {
    auto policy = d.registration == "open" ? accounts::RegistrationPolicy::open
                  : d.registration == "closed" ? accounts::RegistrationPolicy::closed
                                               : accounts::RegistrationPolicy::invite;
    if (auto r = (*accounts)->ensure_domain(d.name, policy); !r) return tl::unexpected(r.error());
  }
  ops::AdminCommands commands;
  ops::add_account_commands(commands, **accounts, {t.config.primary_domain().name, t.config.public_url});
  auto it = commands.find(command);
  if (it == commands.end()) return fail(Errc::unavailable, fmt::format("'{}' needs a running hearthd", command));
  auto result = it->second(args);
  ops::AdminReply out;
  out.ok = static_cast<bool>(result);
  if (result) out.result_json = *result;
  else {
    out.code = result.error().code;
    out.message = result.error().message;
  }
  accounts->reset();
  (*store)->close();
  return out;
}

// A consistent snapshot of the database at `path`: made by the running daemon's store (an
// online backup: a read transaction, no write lock), or, when no daemon runs, by opening
// the stopped data directory here while holding its lock.
Result<void> snapshot_database(const Target& t, const std::string& path) {
  auto reply = ops::admin_call(t.socket, "backup.snapshot", {{"path", path}});
  if (reply) {
    if (!reply->ok) return fail(reply->code, reply->message);
    // The daemon copies on its own thread (its admin socket keeps answering); ask until
    // it is done, for at most six hours; every 25 ms at most, as the backup waits for it
    // (a 200 ms poll added up to a tenth of a second to a 450 MiB backup).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::hours(6);
    for (auto pause = std::chrono::milliseconds(5);; pause = std::min(pause * 2, std::chrono::milliseconds(25))) {
      auto status = ops::admin_call(t.socket, "backup.snapshot_status", {{"path", path}});
      if (!status) return fail(status.error().code, fmt::format("lost hearthd during the snapshot: {}", status.error().message));
      if (!status->ok) return fail(status->code, status->message);
      if (ops::json_field(status->result_json, "state") == "done") return ok();
      if (std::chrono::steady_clock::now() > deadline) return fail(Errc::unavailable, "the database snapshot did not finish in 6 hours");
      std::this_thread::sleep_for(pause);
    }
  }
  if (reply.error().code != Errc::unavailable) return tl::unexpected(reply.error());
  if (ops::DataDirLock::is_held_by_other(t.data_dir))
    return fail(Errc::unavailable, fmt::format("hearthd holds {} but does not answer on {}", t.data_dir, t.socket));
  if (!std::filesystem::exists(t.data_dir + "/hearth.db"))
    return fail(Errc::not_found, fmt::format("no database at {}/hearth.db", t.data_dir));
  auto lock = ops::DataDirLock::acquire(t.data_dir);
  if (!lock) return tl::unexpected(lock.error());
  Logger log(LogLevel::warn, LogFormat::text);
  MetricsRegistry metrics;
  store::StoreOptions so;
  so.path = t.data_dir + "/hearth.db";
  so.readers = 1;
  auto store = store::Store::open_sqlite(so, log, metrics);
  if (!store) return tl::unexpected(store.error());
  auto r = (*store)->snapshot_to(path);
  (*store)->close();
  return r;
}

std::string mib_per_s(std::uint64_t bytes, double seconds) {
  return fmt::format("{:.1f} MiB/s", seconds > 0 ? static_cast<double>(bytes) / (1 << 20) / seconds : 0.0);
}

int report(const Result<ops::AdminReply>& reply, const std::function<void(const std::string&)>& on_ok) {
  if (!reply) {
    fmt::print(stderr, "hearthctl: {}\n", reply.error().message);
    return kCritical;
  }
  if (!reply->ok) {
    fmt::print(stderr, "hearthctl: {}: {}\n", errc_name(reply->code), reply->message);
    return kCritical;
  }
  on_ok(reply->result_json);
  return kOk;
}

}  // namespace
}  // namespace hearth

int main(int argc, char** argv) {
  using namespace hearth;
  CLI::App app{"hearthctl: administer a hearth server"};
  app.require_subcommand(1);
  std::string config_path, data_dir, socket;
  app.add_option("-c,--config", config_path, "hearthd's configuration file (to find the data directory and socket)");
  app.add_option("-d,--data-dir", data_dir, "Data directory (default: the configuration's, else ./data)");
  app.add_option("-s,--socket", socket, "Admin socket (default: <data-dir>/hearthd.sock)");

  auto* check = app.add_subcommand("check", "Health as one Nagios/Icinga plugin line; exit 0 ok, 1 warning, 2 critical, 3 unknown");
  bool fresh = false;
  check->add_flag("--fresh", fresh, "Run every check now instead of reading the last result");

  auto* user = app.add_subcommand("user", "Manage accounts");
  user->require_subcommand(1);
  std::string jid, invite, domain;
  bool admin = false;
  auto* user_add = user->add_subcommand("add", "Create an account (password from stdin, or prompted)");
  user_add->add_option("jid", jid, "name@domain, or a name on the primary domain")->required();
  user_add->add_flag("--admin", admin, "Make the account an administrator");
  user_add->add_option("--invite", invite, "Redeem this invitation (applies the domain's registration policy)");
  std::string many_prefix;
  int many_count = 0;
  auto* user_add_many = user->add_subcommand(
      "add-many",
      "Create <prefix>1..<prefix>N sharing one password (from stdin), with a device and access token each; prints "
      "'localpart device_id access_token' per line (bulk provisioning for benchmarks: one argon2id for all)");
  user_add_many->add_option("--prefix", many_prefix, "Localpart prefix")->required();
  user_add_many->add_option("--count", many_count, "How many accounts (1-100000)")->required();
  user_add_many->add_option("--domain", domain, "Domain (default: the primary domain)");
  auto* user_passwd = user->add_subcommand("passwd", "Set an account's password (from stdin, or prompted)");
  user_passwd->add_option("jid", jid, "name@domain")->required();
  auto* user_del = user->add_subcommand("del", "Delete an account with its devices and tokens");
  user_del->add_option("jid", jid, "name@domain")->required();
  auto* user_list = user->add_subcommand("list", "List accounts");
  user_list->add_option("domain", domain, "Only this domain");
  std::string retention_days;
  auto* user_retention = user->add_subcommand(
      "retention", "Set how many days an account's message archive keeps messages (0: forever; 'default': the server's)");
  user_retention->add_option("jid", jid, "Account, e.g. alice@example.org")->required();
  user_retention->add_option("days", retention_days, "Days, 0 or 'default'")->required();

  auto* inv = app.add_subcommand("invite", "Manage invitations");
  inv->require_subcommand(1);
  auto* inv_create = inv->add_subcommand("create", "Create a single-use invitation and print its token and link");
  int ttl_hours = 0;
  inv_create->add_option("--domain", domain, "Domain (default: the primary domain)");
  inv_create->add_flag("--admin", admin, "The account created with it is an administrator");
  inv_create->add_option("--ttl-hours", ttl_hours, "Lifetime in hours (default: accounts.invite_ttl_hours)");

  auto* backup = app.add_subcommand("backup", "Write an online, consistent backup of the data directory: one zstd stream with a manifest of SHA-256 checksums");
  std::string backup_out, backup_since;
  int backup_level = 1, backup_threads = 2;
  backup->add_option("output", backup_out, "Backup file, or - for standard output")->required();
  backup->add_option("--since", backup_since, "Incremental on top of this earlier backup (or its manifest): files unchanged since are left out, and of the database only the 64 KiB chunks that changed");
  backup->add_option("--level", backup_level, "zstd compression level (1-19; default 1: level 3 makes the database ~18 % smaller for twice the CPU)")->check(CLI::Range(1, 19));
  backup->add_option("--threads", backup_threads, "zstd worker threads (0: compress on the thread that writes the stream; default 2: compression on two cores, overlapped with reading and hashing)")->check(CLI::Range(0, 64));

  auto* restore = app.add_subcommand("restore", "Rebuild a new data directory from a full backup and the incrementals on top of it, or from a continuous replica, verifying every checksum");
  std::vector<std::string> restore_inputs;
  std::string restore_dir, replica_dir, replica_chain;
  std::uint64_t restore_up_to = 0;
  auto* restore_backups = restore->add_option("backups", restore_inputs, "The full backup, then its incrementals in order (- for standard input)");
  auto* from_replica = restore->add_option("--from-replica", replica_dir, "Restore the newest complete chain of this replica directory (ops.replica_dir)")->excludes(restore_backups);
  restore->add_option("--chain", replica_chain, "With --from-replica: this chain (a chain-... directory) instead of the newest")->needs(from_replica);
  auto* up_to = restore->add_option("--up-to", restore_up_to, "With --from-replica: apply the chain only up to this sequence number")->needs(from_replica);
  restore->add_option("--data-dir,--into", restore_dir, "The data directory to create (must be missing or empty)")->required();

  auto* verify = app.add_subcommand("verify", "Read a backup and check every checksum, without restoring it");
  std::string verify_in;
  verify->add_option("backup", verify_in, "Backup file, or - for standard input")->required();

  auto* restart = app.add_subcommand(
      "restart", "Graceful restart: start `hearthd --takeover` detached, which takes the running daemon's sockets while "
                 "it drains; returns once the new daemon serves (docs/operations.md)");
  std::string hearthd_path;
  int restart_timeout = 0;
  restart->add_option("--hearthd", hearthd_path, "The hearthd binary to start (default: next to hearthctl, else from PATH)");
  restart->add_option("--timeout", restart_timeout, "Seconds to wait for the new daemon (default: drain_seconds + 60)");

  auto* archive = app.add_subcommand(
      "archive", "Move CryptPad channels that no account pins and nothing wrote to for --idle-days to cold storage, "
                 "item by item (a dry run unless --apply; hearthd must be stopped; docs/operations.md)");
  bool archive_apply = false;
  int idle_days = 180, cold_days = 90;
  std::string cold_dir;
  archive->add_flag("--apply", archive_apply, "Archive for real (default: only list what would be archived)");
  archive->add_option("--idle-days", idle_days, "Archive only what nothing touched for this many days")->check(CLI::Range(1, 36500));
  archive->add_option("--cold-retention-days", cold_days, "Delete cold-storage files older than this (0: keep)")->check(CLI::Range(0, 36500));
  archive->add_option("--cold", cold_dir, "Cold-storage directory (default: <data-dir>/cold)");
  auto* restore_arch = app.add_subcommand(
      "restore-archived", "Bring archived items back from cold storage; never overwrites data that exists again, "
                          "reports each conflict (exit 1 if any)");
  std::vector<std::string> restore_ids;
  restore_arch->add_option("ids", restore_ids, "Archived item ids (default: all in cold storage)");
  restore_arch->add_option("--cold", cold_dir, "Cold-storage directory (default: <data-dir>/cold)");

  auto* notice = app.add_subcommand("notice", "Add an admin notice to the status page and its Atom feed");
  std::string notice_text;
  notice->add_option("text", notice_text, "The notice, as readers will see it")->required();

  auto* tls_records = app.add_subcommand(
      "tls-records", "Print the DNS records that pin this server's TLS key and CAs (incident I13): DANE/TLSA \"3 1 1\" for "
                     "each XMPP port and CAA examples, in zone-file syntax (docs/operations.md)");
  std::string tls_host, caa_issuer = "letsencrypt.org";
  tls_records->add_option("--domain", domain, "Domain whose certificate to read (default: every configured domain)");
  tls_records->add_option("--host", tls_host, "The SRV target the ports live on (default: the domain itself)");
  tls_records->add_option("--caa-issuer", caa_issuer, "The CA allowed to issue, for the CAA example");

  CLI11_PARSE(app, argc, argv);

  Target t;
  if (!config_path.empty()) {
    auto c = load_config_file(config_path);
    if (!c) {
      fmt::print(stderr, "hearthctl: configuration error: {}\n", c.error().message);
      return kUnknown;
    }
    t.config = *c;
  } else {
    t.config = default_config();
  }
  t.data_dir = std::filesystem::absolute(data_dir.empty() ? t.config.data_dir : data_dir).lexically_normal().string();
  t.socket = !socket.empty() ? socket : !t.config.admin_socket.empty() ? t.config.admin_socket : t.data_dir + "/hearthd.sock";

  if (archive->parsed() || restore_arch->parsed()) {
    // Incident I06. On a stopped daemon's data directory, holding its lock: nothing races.
    if (ops::DataDirLock::is_held_by_other(t.data_dir)) {
      fmt::print(stderr, "hearthctl: hearthd is running on {}; stop it first (archival works on a stopped data directory)\n",
                 t.data_dir);
      return kCritical;
    }
    auto lock = ops::DataDirLock::acquire(t.data_dir);
    if (!lock) {
      fmt::print(stderr, "hearthctl: {}\n", lock.error().message);
      return kCritical;
    }
    Logger log(LogLevel::info, LogFormat::text);
    MetricsRegistry metrics;
    store::StoreOptions so;
    so.path = t.data_dir + "/hearth.db";
    so.readers = 1;
    auto store = store::Store::open_sqlite(so, log, metrics);
    if (!store) {
      fmt::print(stderr, "hearthctl: {}\n", store.error().describe());
      return kCritical;
    }
    std::string cold = cold_dir.empty() ? t.data_dir + "/cold" : cold_dir;
    if (restore_arch->parsed()) {
      auto r = ops::restore_archived(**store, cold, restore_ids, log);
      (*store)->close();
      if (!r) {
        fmt::print(stderr, "hearthctl: {}\n", r.error().describe());
        return kCritical;
      }
      for (const auto& id : r->restored) fmt::print("restored {}\n", id);
      for (const auto& c : r->conflicts) fmt::print("CONFLICT {}: {}\n", c.id, c.reason);
      fmt::print("{} restored, {} conflicts\n", r->restored.size(), r->conflicts.size());
      return r->conflicts.empty() ? kOk : kWarning;
    }
    ops::ArchivalOptions o;
    o.cold_dir = cold;
    o.now_ms = SystemClock().now_ms();
    o.idle_ms = std::int64_t{idle_days} * 86'400'000;
    o.cold_retention_ms = std::int64_t{cold_days} * 86'400'000;
    o.apply = archive_apply;
    auto r = ops::archive_unreferenced(**store, o, log);
    (*store)->close();
    if (!r) {
      fmt::print(stderr, "hearthctl: archival stopped: {}\n", r.error().describe());
      return kCritical;
    }
    for (const auto& item : r->archived)
      fmt::print("{} {} {} (last touched {:%Y-%m-%d}, {} messages){}\n", archive_apply ? "archived" : "would archive",
                 item.kind, item.id, fmt::gmtime(static_cast<std::time_t>(item.last_touched_ms / 1000)), item.messages,
                 item.file.empty() ? "" : " -> " + item.file);
    for (const auto& f : r->cold_deleted) fmt::print("{} {}\n", archive_apply ? "deleted cold file" : "would delete cold file", f);
    fmt::print("{}: {} items; kept {} pinned by an account, {} touched within {} days{}\n",
               archive_apply ? "archived" : "dry run", r->archived.size(), r->kept_referenced, r->kept_recent, idle_days,
               archive_apply ? "" : " (run again with --apply)");
    return kOk;
  }
  if (restart->parsed()) {
    if (hearthd_path.empty()) hearthd_path = sibling_hearthd();
    int timeout = restart_timeout > 0 ? restart_timeout : t.config.drain_seconds + 60;
    return graceful_restart(t, hearthd_path, config_path, std::chrono::seconds(timeout));
  }
  if (backup->parsed()) {
    ops::BackupOptions o;
    o.data_dir = t.data_dir;
    o.output = backup_out;
    o.zstd_level = backup_level;
    o.zstd_workers = backup_threads;
    if (!backup_since.empty()) {
      auto m = ops::read_backup_manifest(backup_since);
      if (!m) {
        fmt::print(stderr, "hearthctl: --since: {}\n", m.error().message);
        return kCritical;
      }
      o.since = std::move(*m);
    }
    o.snapshot_database = [&t](const std::string& path) { return snapshot_database(t, path); };
    auto r = ops::create_backup(o);
    if (!r) {
      fmt::print(stderr, "hearthctl: backup failed: {}\n", r.error().message);
      return kCritical;
    }
    fmt::print(stderr, "backup {} ({} #{}): {} files ({} unchanged, left out), {} bytes in, {} bytes out, {:.2f} s (database snapshot {:.2f} s), {}\n",
               r->manifest.backup_id, r->manifest.full() ? "full" : "incremental", r->manifest.sequence,
               r->files_included, r->files_unchanged, r->bytes_read, r->bytes_written, r->seconds, r->snapshot_seconds,
               mib_per_s(r->bytes_read, r->seconds));
    return kOk;
  }
  if (restore->parsed() && !replica_dir.empty()) {
    ops::ReplicaRestoreOptions ro;
    ro.replica_dir = replica_dir;
    ro.data_dir = restore_dir;
    ro.chain = replica_chain;
    if (up_to->count() > 0) ro.up_to = restore_up_to;
    auto r = ops::restore_from_replica(ro);
    if (!r) {
      fmt::print(stderr, "hearthctl: restore failed, nothing was written: {}\n", r.error().message);
      return kCritical;
    }
    const auto& m = r->restore.manifest;
    fmt::print("restored {} files ({} bytes) into {} from replica {} ({}, {} backups up to sequence {}, made {:%Y-%m-%d %H:%M:%S} UTC), "
               "every checksum verified, {:.2f} s, {}\n",
               r->restore.files, r->restore.bytes_restored, restore_dir, replica_dir, r->chain, r->backups, m.sequence,
               fmt::gmtime(static_cast<std::time_t>(m.created_at_ms / 1000)), r->restore.seconds,
               mib_per_s(r->restore.bytes_restored, r->restore.seconds));
    return kOk;
  }
  if (restore->parsed()) {
    if (restore_inputs.empty()) {
      fmt::print(stderr, "hearthctl: restore needs backup files or --from-replica DIR\n");
      return kCritical;
    }
    auto r = ops::restore_backup(restore_inputs, restore_dir);
    if (!r) {
      fmt::print(stderr, "hearthctl: restore failed, nothing was written: {}\n", r.error().message);
      return kCritical;
    }
    fmt::print("restored {} files ({} bytes) into {} from backup {} (sequence {}), every checksum verified, "
               "{:.2f} s, {}\n",
               r->files, r->bytes_restored, restore_dir, r->manifest.backup_id, r->manifest.sequence, r->seconds,
               mib_per_s(r->bytes_restored, r->seconds));
    return kOk;
  }
  if (verify->parsed()) {
    auto m = ops::read_backup_manifest(verify_in);
    if (!m) {
      fmt::print(stderr, "hearthctl: {}\n", m.error().message);
      return kCritical;
    }
    int included = 0;
    for (const auto& f : m->files) included += f.included;
    fmt::print("{}: backup {} ({} #{}), {} files listed, {} in this file, every checksum ok\n", verify_in, m->backup_id,
               m->full() ? "full" : "incremental", m->sequence, m->files.size(), included);
    return kOk;
  }
  if (notice->parsed()) {
    auto reply = ops::admin_call(t.socket, "notice", {{"text", notice_text}});
    if (!reply && reply.error().code == Errc::unavailable && !ops::DataDirLock::is_held_by_other(t.data_dir)) {
      // hearthd is down: write the notice into the page ourselves; that is when it matters.
      Logger log(LogLevel::warn, LogFormat::text);
      ops::StatusPageOptions so;
      so.dir = t.config.status_dir.empty() ? t.data_dir + "/status"
                                          : std::filesystem::absolute(t.config.status_dir).lexically_normal().string();
      so.title = t.config.status_title;
      ops::StatusPage page(so, log);
      auto r = page.start();
      if (r) r = page.add_notice(notice_text);
      if (!r) {
        fmt::print(stderr, "hearthctl: {}\n", r.error().message);
        return kCritical;
      }
      fmt::print("notice added to {} (hearthd is not running)\n", so.dir);
      return kOk;
    }
    return report(reply, [](const std::string& r) { fmt::print("notice added to {}\n", ops::json_field(r, "dir")); });
  }
  if (tls_records->parsed()) {
    // Offline: only the configuration and the certificate files are read.
    int status = kOk;
    bool found = false;
    for (const auto& d : t.config.domains) {
      if (!domain.empty() && d.name != domain) continue;
      found = true;
      const std::string cert = d.tls_cert.empty() ? fmt::format("{}/tls/{}.crt", t.data_dir, d.name) : d.tls_cert;
      auto digest = net::certificate_spki_sha256_hex(cert);
      if (!digest) {
        fmt::print(stderr, "hearthctl: {}: {}{}\n", d.name, digest.error().message,
                   digest.error().code == Errc::not_found ? " (start hearthd once to generate it, or set tls_cert)" : "");
        status = kCritical;
        continue;
      }
      const std::string host = tls_host.empty() ? d.name : tls_host;
      fmt::print("; {}: DANE/TLSA (RFC 6698, RFC 7673) for the key of {}; publish in a DNSSEC-signed zone\n", d.name, cert);
      const std::pair<int, int> ports[] = {{t.config.xmpp_c2s_port, 5222}, {t.config.xmpp_c2s_tls_port, 5223},
                                           {t.config.xmpp_s2s_enabled ? t.config.xmpp_s2s_port : -1, 5269}};
      for (auto [configured, standard] : ports) {
        if (configured < 0) continue;
        const int port = configured == 0 ? standard : configured;
        fmt::print("_{}._tcp.{}. IN TLSA 3 1 1 {}{}\n", port, host, digest.value(),
                   configured == 0 ? "  ; port 0 is picked at start-up: the standard port is shown" : "");
      }
      fmt::print("; {}: CAA (RFC 8659): only this CA may issue for the domain and its services\n", d.name);
      for (const std::string& name : {d.name, "conference." + d.name, "upload." + d.name})
        fmt::print("{}. IN CAA 0 issue \"{}\"\n", name, caa_issuer);
      fmt::print("{}. IN CAA 0 iodef \"mailto:hostmaster@{}\"\n", d.name, d.name);
    }
    if (!found) {
      fmt::print(stderr, "hearthctl: no configured domain {}\n", domain);
      return kCritical;
    }
    return status;
  }
  if (check->parsed()) {
    ops::AdminArgs args;
    if (fresh) args["fresh"] = "true";
    auto reply = call(t, "health", args, /*daemon_only=*/true);
    if (!reply && reply.error().code == Errc::unavailable) {
      // Nothing listens on the socket: the service is down, the most critical state of
      // all (incident I17: a real outage must page).
      fmt::print("HEARTH CRITICAL - {}\n", reply.error().message);
      return kCritical;
    }
    if (!reply) {
      // Something listens but the state cannot be known (no answer within the timeout,
      // permission denied, a garbled reply): UNKNOWN, as the plugin guidelines say.
      fmt::print("HEARTH UNKNOWN - cannot read hearthd's health: {}\n", reply.error().message);
      return kUnknown;
    }
    if (!reply->ok) {
      fmt::print("HEARTH UNKNOWN - {}\n", reply->message);
      return kUnknown;
    }
    fmt::print("{}\n", ops::json_field(reply->result_json, "line"));
    auto code = ops::json_field(reply->result_json, "exit_code");
    return code.empty() ? kUnknown : std::atoi(code.c_str());
  }

  if (user_add->parsed() || user_passwd->parsed()) {
    auto pw = read_password(::isatty(STDIN_FILENO));
    if (!pw) {
      fmt::print(stderr, "hearthctl: {}\n", pw.error().message);
      return kCritical;
    }
    ops::AdminArgs args{{"jid", jid}, {"password", *pw}};
    if (user_add->parsed()) {
      if (admin) args["admin"] = "true";
      if (!invite.empty()) args["invite"] = invite;
    }
    bool adding = user_add->parsed();
    return report(call(t, adding ? "user.add" : "user.passwd", args, false), [&](const std::string& r) {
      fmt::print("{} {}{}\n", adding ? "created" : "password changed for", ops::json_field(r, "jid"),
                 ops::json_field(r, "admin") == "true" && adding ? " (admin)" : "");
    });
  }
  if (user_add_many->parsed()) {
    auto pw = read_password(::isatty(STDIN_FILENO));
    if (!pw) {
      fmt::print(stderr, "hearthctl: {}\n", pw.error().message);
      return kCritical;
    }
    ops::AdminArgs args{{"prefix", many_prefix}, {"count", std::to_string(many_count)}, {"password", *pw}};
    if (!domain.empty()) args["domain"] = domain;
    return report(call(t, "user.add_many", args, false), [](const std::string& r) {
      // {"domain":..,"users":[{"localpart":..,"device_id":..,"access_token":..},...]}
      std::string users = ops::json_field(r, "users");
      std::size_t pos = 0;
      while ((pos = users.find('{', pos)) != std::string::npos) {
        auto end = users.find('}', pos);
        std::string obj = users.substr(pos, end - pos + 1);
        fmt::print("{} {} {}\n", ops::json_field(obj, "localpart"), ops::json_field(obj, "device_id"),
                   ops::json_field(obj, "access_token"));
        pos = end;
      }
    });
  }
  if (user_del->parsed()) {
    return report(call(t, "user.del", {{"jid", jid}}, false),
                  [](const std::string& r) { fmt::print("deleted {}\n", ops::json_field(r, "jid")); });
  }
  if (user_retention->parsed()) {
    return report(call(t, "user.retention", {{"jid", jid}, {"days", retention_days}}, true),
                  [](const std::string& r) {
                    std::string days = ops::json_field(r, "days");
                    fmt::print("{}: {}\n", ops::json_field(r, "jid"),
                               days == "null" ? "server default" : days == "0" ? "kept forever" : days + " days");
                  });
  }
  if (user_list->parsed()) {
    ops::AdminArgs args;
    if (!domain.empty()) args["domain"] = domain;
    return report(call(t, "user.list", args, false), [](const std::string& r) {
      // {"users":[{"jid":..,"admin":..},...]}: print one per line
      std::string users = ops::json_field(r, "users");
      std::size_t pos = 0;
      while ((pos = users.find('{', pos)) != std::string::npos) {
        auto end = users.find('}', pos);
        std::string obj = users.substr(pos, end - pos + 1);
        fmt::print("{}{}\n", ops::json_field(obj, "jid"), ops::json_field(obj, "admin") == "true" ? " admin" : "");
        pos = end;
      }
    });
  }
  if (inv_create->parsed()) {
    ops::AdminArgs args;
    if (!domain.empty()) args["domain"] = domain;
    if (admin) args["admin"] = "true";
    if (ttl_hours > 0) args["ttl_hours"] = std::to_string(ttl_hours);
    return report(call(t, "invite.create", args, false), [](const std::string& r) {
      fmt::print("token: {}\n", ops::json_field(r, "token"));
      auto url = ops::json_field(r, "url");
      if (!url.empty()) fmt::print("link:  {}\n", url);
      auto ms = std::atoll(ops::json_field(r, "expires_ms").c_str());
      fmt::print("valid until {:%Y-%m-%d %H:%M} UTC, single use{}\n", fmt::gmtime(static_cast<std::time_t>(ms / 1000)),
                 ops::json_field(r, "admin") == "true" ? ", grants admin" : "");
    });
  }
  return kUnknown;
}
