// hearthd: wires the modules together. Everything interesting lives in src/.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include "accounts/accounts.h"
#include "blobs/blobs.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/random.h"
#include "cryptpad/cryptpad.h"
#include "matrix/matrix.h"
#include "net/net.h"
#include "ops/account_commands.h"
#include "ops/admin.h"
#include "ops/backup.h"
#include "ops/handover.h"
#include "ops/health.h"
#include "ops/replica.h"
#include "ops/status_page.h"
#include "ops/storage_watch.h"
#include "ops/http_routes.h"
#include "ops/system.h"
#include "store/store.h"
#include "thumbnail/thumbnail.h"
#include "xmpp/xmpp.h"

namespace hearth {
namespace {

constexpr int kExitConfig = 2;
constexpr int kExitStartup = 1;

accounts::RegistrationPolicy policy_from(const std::string& s) {
  if (s == "open") return accounts::RegistrationPolicy::open;
  if (s == "closed") return accounts::RegistrationPolicy::closed;
  return accounts::RegistrationPolicy::invite;
}

// A secret kept in a file (0600), created with random bytes on first use; durable (written
// to a temporary file, fsynced, renamed) before it is used.
Result<std::string> load_or_create_secret(const std::string& path) {
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[128];
    std::size_t n = std::fread(buf, 1, sizeof buf, f);
    std::fclose(f);
    if (n >= 32) return std::string(buf, n);
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  std::string secret = random_token(32);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::io, fmt::format("cannot create {}", tmp));
  bool written = ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("cannot write {}", path));
  }
  return secret;
}

std::string absolute(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::absolute(path, ec);
  return ec ? path : p.lexically_normal().string();
}

std::string url_host(const std::string& address) {
  return address.find(':') != std::string::npos ? "[" + address + "]" : address;
}

// hearthctl as a person can type it: the binary built next to this one if there is one
// (apps/hearthctl/hearthctl in a build tree, or the same directory once installed).
std::string hearthctl_command() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (auto candidate : {self.parent_path().parent_path() / "hearthctl" / "hearthctl", self.parent_path() / "hearthctl"}) {
      if (std::filesystem::exists(candidate, ec)) {
        auto rel = std::filesystem::relative(candidate, std::filesystem::current_path(ec), ec);
        return (!ec && !rel.empty() && rel.native().rfind("..", 0) != 0) ? "./" + rel.string() : candidate.string();
      }
    }
  }
  return "hearthctl";
}

std::string format_time_utc(std::int64_t ms) {
  return fmt::format("{:%Y-%m-%d %H:%M} UTC", fmt::gmtime(static_cast<std::time_t>(ms / 1000)));
}

// The HTTP (and, with a TLS identity, HTTPS) listeners of every configured address.
std::vector<net::ListenerSpec> http_listener_specs(const Config& config, bool with_tls) {
  std::vector<net::ListenerSpec> specs;
  for (const auto& addr : config.http_bind) {
    if (config.http_port >= 0) specs.push_back({addr, config.http_port, false});
    if (config.https_port >= 0 && with_tls) specs.push_back({addr, config.https_port, true});
  }
  return specs;
}

// run() returns this when storage came back during maintenance: main() starts again.
constexpr int kStartAgain = -1;

// Storage unavailable at start (incident I05: a down page was improvised hours later):
// instead of exiting, serve a maintenance page on the HTTP listeners (503 and Retry-After
// for every request, /health critical naming the cause) and try the store again every few
// seconds; once it opens, stop and let main() start the service for real. SIGTERM/SIGINT
// (blocked in main()) end it like a normal stop.
int serve_maintenance(const Config& config, const std::vector<net::TlsIdentity>& identities, Logger& log,
                      MetricsRegistry& metrics, const std::string& reason,
                      const std::function<bool()>& storage_is_back) {
  std::string page = fmt::format(
      "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">"
      "<title>Down for maintenance</title><h1>Down for maintenance</h1>"
      "<p>{} cannot reach its storage right now. Nothing is lost: the service comes back on its own as soon as "
      "the storage does. Please try again in a few minutes.</p>\n",
      config.domains.empty() ? std::string("This server") : ops::html_escape(config.domains.front().name));
  std::string health = fmt::format(
      "{{\"status\":\"critical\",\"checks\":{{\"storage\":{{\"status\":\"critical\",\"message\":{}}}}}}}",
      json_quote("maintenance: " + reason));
  net::Router router;
  router.add_prefix("*", "/", [page, health](net::HttpRequest&& req, net::Respond respond) {
    net::HttpResponse r = req.path == "/health" ? net::HttpResponse::json(503, health)
                                                : net::HttpResponse{503, "text/html; charset=utf-8", {}, page};
    r.headers.push_back({"Retry-After", "60"});
    r.headers.push_back({"Cache-Control", "no-store"});
    respond(std::move(r));
  });
  net::ServerOptions options;
  options.shards = 1;
  options.max_connections = config.max_connections;
  auto server = net::HttpServer::create(options, std::move(router), identities, log, metrics);
  if (!server) {
    fmt::print(stderr, "hearthd: {}\n", server.error().describe());
    return kExitStartup;
  }
  auto bound = (*server)->listen(http_listener_specs(config, !identities.empty()));
  if (!bound) {
    fmt::print(stderr, "hearthd: {}\n", bound.error().message);
    return kExitStartup;
  }
  for (const auto& b : *bound)
    log.error("hearthd.maintenance", {{"reason", reason}, {"addr", b.address}, {"port", b.port}, {"tls", b.tls}});
  std::thread loop([&server] { (*server)->run(); });
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int outcome = 0;
  for (;;) {
    timespec wait{2, 0};
    int sig = sigtimedwait(&set, nullptr, &wait);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (storage_is_back()) {
      log.info("hearthd.maintenance_over", {{"reason", "the store opens again"}});
      outcome = kStartAgain;
      break;
    }
  }
  (*server)->stop();
  loop.join();
  return outcome;
}

int run(const Config& config, bool print_banner, bool takeover) {
  LogLevel level = LogLevel::info;
  parse_log_level(config.log_level, level);
  Logger log(level, config.log_format == "json" ? LogFormat::json : LogFormat::text);
  MetricsRegistry metrics;
  SystemClock clock;

  const std::string data_dir = absolute(config.data_dir);
  if (auto r = ops::ensure_private_dir(data_dir); !r) {
    fmt::print(stderr, "hearthd: {}\n", r.error().message);
    return kExitStartup;
  }
  const std::string socket_path = config.admin_socket.empty() ? data_dir + "/hearthd.sock" : absolute(config.admin_socket);
  // Graceful restart (incident I18): take the running daemon's listening sockets, then wait
  // for it to drain and release the data directory. No daemon running: a plain start.
  std::vector<net::ListeningSocket> inherited;
  auto close_inherited = [&inherited] {
    for (auto& s : inherited) ::close(s.fd);
    inherited.clear();
  };
  if (takeover) {
    auto taken = ops::take_over_listeners(socket_path);
    if (taken) {
      inherited = std::move(*taken);
      log.info("hearthd.taking_over", {{"listeners", static_cast<std::int64_t>(inherited.size())}});
      // Under systemd (NotifyAccess=all) this process is the service's main process from
      // now on, before the old one exits, so that its exit does not stop the service.
      (void)ops::SystemdNotifier::from_environment().notify(fmt::format("MAINPID={}", ::getpid()));
    } else if (taken.error().code == Errc::unavailable) {
      log.info("hearthd.takeover_nothing_running", {{"socket", socket_path}});
    } else {
      fmt::print(stderr, "hearthd: cannot take over: {}\n", taken.error().message);
      return kExitStartup;
    }
  }
  auto lock = inherited.empty() ? ops::DataDirLock::acquire(data_dir)
                                : ops::wait_for_data_dir_lock(data_dir, std::chrono::seconds(config.drain_seconds + 30));
  if (!lock) {
    close_inherited();
    fmt::print(stderr, "hearthd: {}\n", lock.error().message);
    return kExitStartup;
  }
  std::uint64_t fds_needed = static_cast<std::uint64_t>(config.max_connections) + config.fd_reserve;
  auto fd_limit = ops::ensure_open_files_limit(fds_needed);
  if (!fd_limit) {
    fmt::print(stderr, "hearthd: refusing to start: {}\n", fd_limit.error().message);
    return kExitStartup;
  }
  log.info("hearthd.starting", {{"version", "0.1.0"}, {"data_dir", data_dir}, {"open_files_limit", fd_limit->soft},
                                {"raised", fd_limit->raised}});

  // TLS identities: configured files, or a self-signed certificate generated once.
  std::vector<net::TlsIdentity> identities;
  std::vector<std::string> generated;
  for (const auto& d : config.domains) {
    net::TlsIdentity id{d.name, d.tls_cert, d.tls_key};
    if (id.cert_file.empty()) {
      id.cert_file = fmt::format("{}/tls/{}.crt", data_dir, d.name);
      id.key_file = fmt::format("{}/tls/{}.key", data_dir, d.name);
      if (auto r = net::ensure_self_signed_certificate({d.name}, id.cert_file, id.key_file); !r) {
        fmt::print(stderr, "hearthd: {}\n", r.error().message);
        return kExitStartup;
      }
      generated.push_back(id.cert_file);
    }
    identities.push_back(std::move(id));
  }

  store::StoreOptions store_options;
  store_options.path = data_dir + "/hearth.db";
  store_options.readers = config.store_readers;
  store_options.max_batch = config.store_max_batch;
  store_options.queue_limit = config.store_queue_limit;
  store_options.max_database_bytes = std::int64_t{config.database_max_mib} << 20;
  auto store = store::Store::open_sqlite(store_options, log, metrics);
  if (!store) {
    fmt::print(stderr, "hearthd: cannot open the database: {}\n", store.error().describe());
    close_inherited();
    return serve_maintenance(config, identities, log, metrics, store.error().describe(), [&store_options] {
      Logger quiet(LogLevel::error, LogFormat::text);
      MetricsRegistry scratch;
      return static_cast<bool>(store::Store::open_sqlite(store_options, quiet, scratch));
    });
  }
  accounts::AccountsOptions account_options;
  account_options.scram_iterations = config.scram_iterations;
  account_options.invite_ttl_ms = std::int64_t{config.invite_ttl_hours} * 3600 * 1000;
  account_options.token_ttl_ms = std::int64_t{config.token_ttl_days} * 24 * 3600 * 1000;
  auto accounts = accounts::Accounts::open(**store, clock, log, account_options);
  if (!accounts) {
    fmt::print(stderr, "hearthd: cannot prepare accounts: {}\n", accounts.error().describe());
    return kExitStartup;
  }
  for (const auto& d : config.domains) {
    if (auto r = (*accounts)->ensure_domain(d.name, policy_from(d.registration)); !r) {
      fmt::print(stderr, "hearthd: {}\n", r.error().describe());
      return kExitStartup;
    }
  }

  ops::HealthMonitor health(log, metrics, std::chrono::seconds(config.health_interval_seconds));
  ops::StorageWatchOptions watch_options;
  watch_options.data_dir = data_dir;
  watch_options.database_path = store_options.path;
  watch_options.thresholds = {config.disk_warning_percent, config.disk_high_percent, config.disk_critical_percent};
  watch_options.reserve_bytes = static_cast<std::uint64_t>(config.disk_reserve_mib) << 20;
  watch_options.reserve_inodes = static_cast<std::uint64_t>(config.disk_reserve_inodes);
  watch_options.wal_warning_bytes = static_cast<std::uint64_t>(config.wal_warning_mib) << 20;
  watch_options.database_max_bytes = static_cast<std::uint64_t>(config.database_max_mib) << 20;
  watch_options.read_only_at_reserve = config.read_only_at_reserve;
  ops::StorageWatcher storage_watch(watch_options, (*store)->read_only_mode(), log, metrics);
  health.add_check("disk", [&storage_watch] { return storage_watch.check(); });
  health.add_check("read_only", [&storage_watch] { return storage_watch.read_only_check(); });
  health.add_check("data_dir", ops::path_writable_check(data_dir));
  health.add_check("open_files", ops::open_files_check(metrics, config.open_files_warning_percent, config.open_files_critical_percent));
  store::Store* db = store->get();
  health.add_check("database", [db]() -> ops::CheckResult {
    if (auto r = db->ping(); !r) return {ops::HealthStatus::critical, "", r.error().describe(), {}};
    return {ops::HealthStatus::ok, "responding", "", {}};
  });

  // The continuous replica (incident I05): its own thread writes a full backup, then an
  // incremental every interval, into a directory that should be on another disk.
  std::unique_ptr<ops::ReplicaWriter> replica;
  if (!config.replica_dir.empty()) {
    const std::string replica_dir = absolute(config.replica_dir);
    if (replica_dir == data_dir || replica_dir.rfind(data_dir + "/", 0) == 0) {
      fmt::print(stderr, "hearthd: ops.replica_dir ({}) must not be inside the data directory; put it on another disk\n",
                 replica_dir);
      return kExitStartup;
    }
    ops::ReplicaOptions replica_options;
    replica_options.data_dir = data_dir;
    replica_options.replica_dir = replica_dir;
    replica_options.interval = std::chrono::seconds(config.replica_interval_seconds);
    replica_options.max_incrementals = config.replica_max_incrementals;
    replica_options.rebase_percent = config.replica_rebase_percent;
    replica_options.keep_chains = config.replica_keep_chains;
    replica_options.snapshot_database = [db](const std::string& path) { return db->snapshot_to(path); };
    replica = std::make_unique<ops::ReplicaWriter>(std::move(replica_options), clock, log, metrics);
    health.add_check("replica", [r = replica.get()] { return r->check(); });
  }

  // The static status page and Atom feed (incident I14), regenerated from the health
  // checks when the overall state changes and on admin notices.
  std::unique_ptr<ops::StatusPage> status_page;
  if (config.status_page) {
    ops::StatusPageOptions status_options;
    status_options.dir = config.status_dir.empty() ? data_dir + "/status" : absolute(config.status_dir);
    status_options.title = config.status_title;
    status_page = std::make_unique<ops::StatusPage>(status_options, log);
    if (auto r = status_page->start(); !r) {
      fmt::print(stderr, "hearthd: status page: {}\n", r.error().message);
      return kExitStartup;
    }
    health.on_snapshot([page = status_page.get()](const ops::HealthSnapshot& snap) { page->on_health(snap); });
  }

  // The protocol services need the server's worker pool and timers, which exist only once
  // the server is created (after the routes): their callbacks go through this pointer,
  // set below before the server runs.
  net::HttpServer* http_server = nullptr;
  // The file store shared by XMPP uploads, Matrix media and CryptPad blobs.
  blobs::BlobStore blob_store(**store, clock,
                              {data_dir + "/blobs", config.upload_max_file_bytes, config.upload_daily_quota_bytes});
  if (auto r = blob_store.open(); !r) {
    fmt::print(stderr, "hearthd: cannot prepare the file store: {}\n", r.error().describe());
    return kExitStartup;
  }
  matrix::MatrixOptions matrix_options;
  matrix_options.blobs = &blob_store;
  matrix_options.server_name = config.matrix_server_name.empty() ? config.primary_domain().name : config.matrix_server_name;
  matrix_options.signing_key_path = data_dir + "/matrix/signing.key";
  matrix_options.default_room_version = config.matrix_default_room_version;
  matrix_options.max_body_bytes = config.http_max_body_bytes;
  matrix_options.max_sync_timeout_ms = config.matrix_max_sync_timeout_seconds * 1000;
  matrix_options.media_dir = data_dir + "/media";
  matrix_options.max_upload_bytes = config.matrix_max_upload_bytes;
  matrix_options.media_quota_bytes = config.matrix_media_quota_bytes;
  matrix_options.media_retention_days = config.matrix_media_retention_days;
  matrix_options.max_pending_uploads = config.matrix_max_pending_uploads;
  matrix_options.coalesce_requests = config.matrix_coalesce_requests;
  matrix_options.max_pushers_per_user = config.matrix_max_pushers_per_user;
  matrix_options.push_queue_per_pusher = config.matrix_push_queue_per_pusher;
  matrix_options.push_timeout_ms = config.matrix_push_timeout_seconds * 1000;
  matrix_options.push_to_private_addresses = config.matrix_push_to_private_addresses;
  matrix_options.federation = config.matrix_federation;
  matrix_options.federation_destinations = config.matrix_federation_destinations;
  matrix_options.federation_ca_file = config.matrix_federation_ca_file;
  matrix_options.federation_timeout_ms = config.matrix_federation_timeout_seconds * 1000;
  matrix_options.federation_insecure_skip_checks_for_tests = config.matrix_federation_insecure_skip_checks_for_tests;
  auto matrix_service = matrix::MatrixService::create(
      matrix_options, **accounts, **store, clock, log, metrics,
      [&http_server](std::function<void()> job) { return http_server && http_server->offload(std::move(job)); },
      [&http_server](std::chrono::milliseconds delay, std::function<void()> fn) {
        if (http_server) http_server->run_after(delay, std::move(fn));
      });
  if (!matrix_service) {
    fmt::print(stderr, "hearthd: cannot prepare Matrix: {}\n", matrix_service.error().describe());
    return kExitStartup;
  }
  if (auto r = (*matrix_service)->migrate(); !r) {
    fmt::print(stderr, "hearthd: cannot prepare Matrix storage: {}\n", r.error().describe());
    return kExitStartup;
  }

  std::vector<std::string> domain_names;
  for (const auto& d : config.domains) domain_names.push_back(d.name);
  xmpp::XmppOptions xmpp_options;
  xmpp_options.domains = domain_names;
  xmpp_options.max_stanza_bytes = static_cast<std::size_t>(config.xmpp_max_stanza_bytes);
  xmpp_options.read_bytes_per_second = static_cast<std::size_t>(config.xmpp_read_bytes_per_second);
  xmpp_options.read_burst_bytes = static_cast<std::size_t>(config.xmpp_read_bytes_per_second) * 8;
  xmpp_options.max_offline_messages = config.xmpp_max_offline_messages;
  xmpp_options.max_roster_items = config.xmpp_max_roster_items;
  xmpp_options.pep_max_item_bytes = static_cast<std::size_t>(config.xmpp_pep_max_item_bytes);
  xmpp_options.pep_max_nodes = config.xmpp_pep_max_nodes;
  xmpp_options.pep_max_items = config.xmpp_pep_max_items;
  xmpp_options.fast_token_ttl_days = config.xmpp_fast_token_ttl_days;
  xmpp_options.archive_retention_days = config.xmpp_archive_retention_days;
  xmpp_options.archive_purge_interval_seconds = config.xmpp_archive_purge_interval_seconds;
  xmpp_options.muc = config.xmpp_muc;
  xmpp_options.muc_max_users_per_room = config.xmpp_muc_max_users_per_room;
  xmpp_options.contact_addresses = {{"abuse", config.contact_abuse},
                                    {"admin", config.contact_admin},
                                    {"security", config.contact_security},
                                    {"status", config.contact_status},
                                    {"support", config.contact_support}};
  xmpp_options.turn_host = config.turn_host;
  xmpp_options.turn_port = config.turn_port;
  xmpp_options.turn_tls_port = config.turn_tls_port;
  xmpp_options.turn_secret = config.turn_secret;
  xmpp_options.turn_ttl_seconds = config.turn_ttl_seconds;
  xmpp_options.idle_timeout_seconds = config.xmpp_idle_timeout_seconds;
  xmpp_options.channel_binding = config.xmpp_channel_binding;
  xmpp_options.strict_channel_binding = config.xmpp_strict_channel_binding;
  xmpp_options.resume_timeout_seconds = config.xmpp_resume_timeout_seconds;
  xmpp_options.s2s_enabled = config.xmpp_s2s_enabled;
  xmpp_options.s2s_static_routes = config.xmpp_s2s_static_routes;
  xmpp_options.s2s_queue_max_stanzas = static_cast<std::size_t>(config.xmpp_s2s_queue_max_stanzas);
  xmpp_options.s2s_connect_timeout_seconds = config.xmpp_s2s_connect_timeout_seconds;
  xmpp_options.s2s_retry_initial_seconds = config.xmpp_s2s_retry_initial_seconds;
  xmpp_options.s2s_retry_max_seconds = config.xmpp_s2s_retry_max_seconds;
  xmpp_options.s2s_max_attempts = config.xmpp_s2s_max_attempts;
  xmpp_options.s2s_dialback = config.xmpp_s2s_dialback;
  xmpp_options.s2s_bidi = config.xmpp_s2s_bidi;
  xmpp_options.s2s_max_pending_bytes = static_cast<std::size_t>(config.xmpp_s2s_max_pending_bytes);
  if (config.xmpp_s2s_enabled) {
    // XEP-0185: the same secret across restarts, so keys handed out before a restart still verify.
    auto secret = load_or_create_secret(data_dir + "/xmpp/dialback.secret");
    if (!secret) {
      fmt::print(stderr, "hearthd: {}\n", secret.error().message);
      return kExitStartup;
    }
    xmpp_options.s2s_dialback_secret = *secret;
  }
  if (auto r = xmpp::XmppService::check_options(xmpp_options); !r) {
    fmt::print(stderr, "hearthd: xmpp.s2s_static_routes: {}\n", r.error().message);
    return kExitStartup;
  }
  if (config.upload_enabled) xmpp_options.upload_blobs = &blob_store;
  xmpp_options.upload_expiry_days = config.upload_expiry_days;
  xmpp::XmppService xmpp_service(
      xmpp_options, **accounts, **store, clock, log, metrics,
      [&http_server](std::function<void()> job) { return http_server && http_server->offload(std::move(job)); },
      [&http_server](std::chrono::milliseconds delay, std::function<void()> fn) {
        if (http_server) http_server->run_after(delay, std::move(fn));
      });
  if (auto r = xmpp_service.migrate(); !r) {
    fmt::print(stderr, "hearthd: cannot prepare XMPP storage: {}\n", r.error().describe());
    return kExitStartup;
  }

  net::Router router;
  ops::install_health_routes(router, health, metrics);
  xmpp_service.install_http_routes(router);
  (*matrix_service)->install_routes(router);
  ops::install_invite_routes(router, **accounts, log);
  // "/" is CryptPad's front page when its web application is served.
  if (!config.cryptpad_enabled || config.cryptpad_web_root.empty())
    router.add("GET", "/", [](net::HttpRequest&&, net::Respond respond) {
      respond(net::HttpResponse::text(200, "hearth 0.1.0\n"));
    });

  // CryptPad: its websocket route must be on the Router before the server is created; the
  // server it offloads to exists from the moment start() is called.
  std::unique_ptr<cryptpad::CryptpadService> cryptpad_service;
  if (config.cryptpad_enabled) {
    cryptpad::CryptpadOptions cp;
    cp.websocket_path = config.cryptpad_websocket_path;
    cp.max_message_bytes = static_cast<std::size_t>(config.cryptpad_max_message_bytes);
    cp.ping_after_seconds = config.cryptpad_ping_after_seconds;
    cp.idle_timeout_seconds = config.cryptpad_idle_timeout_seconds;
    cp.default_storage_limit = config.cryptpad_storage_limit_bytes;
    cp.max_upload_bytes = config.cryptpad_max_upload_bytes;
    cp.http_unsafe_origin = config.cryptpad_http_unsafe_origin;
    cp.http_safe_origin = config.cryptpad_http_safe_origin;
    cp.instance_name = config.cryptpad_instance_name;
    cp.instance_description = config.cryptpad_instance_description;
    cp.instance_location = config.cryptpad_instance_location;
    cp.instance_notice = config.cryptpad_instance_notice;
    cp.blobs = &blob_store;
    cp.admin_keys = config.cryptpad_admin_keys;
    cp.data_dir = data_dir;
    cp.web_root = config.cryptpad_web_root;
    cryptpad_service = std::make_unique<cryptpad::CryptpadService>(
        cp, **store, clock, log, metrics,
        [&http_server](std::function<void()> job) { return http_server && http_server->offload(std::move(job)); },
        [&http_server](std::chrono::milliseconds delay, std::function<void()> fn) {
          if (http_server) http_server->run_after(delay, std::move(fn));
        });
    if (auto r = cryptpad_service->migrate(); !r) {
      fmt::print(stderr, "hearthd: cannot prepare CryptPad storage: {}\n", r.error().describe());
      return kExitStartup;
    }
    cryptpad_service->install(router);
  }

  net::ServerOptions server_options;
  server_options.shards = config.shards;
  server_options.max_connections = config.max_connections;
  server_options.max_connections_per_ip = config.max_connections_per_ip;
  server_options.requests_per_second_per_ip = config.requests_per_second_per_ip;
  server_options.request_burst_per_ip = config.request_burst_per_ip;
  server_options.max_inflight_requests = config.max_inflight_requests;
  server_options.max_body_bytes = config.http_max_body_bytes;
  server_options.max_header_bytes = config.http_max_header_bytes;
  server_options.idle_timeout_seconds = config.http_idle_timeout_seconds;
  server_options.drain_seconds = config.drain_seconds;
  server_options.stall_warning_ms = config.stall_warning_ms;
  server_options.peer_ca_file = config.xmpp_s2s_ca_file.empty() ? "" : absolute(config.xmpp_s2s_ca_file);
  server_options.peer_ca_dir = config.xmpp_s2s_ca_dir.empty() ? "" : absolute(config.xmpp_s2s_ca_dir);
  auto server = net::HttpServer::create(server_options, std::move(router), identities, log, metrics);
  if (!server) {
    fmt::print(stderr, "hearthd: {}\n", server.error().describe());
    return kExitStartup;
  }
  http_server = server->get();
  (*server)->adopt(std::move(inherited));
  auto bound = (*server)->listen(http_listener_specs(config, true));
  if (!bound) {
    fmt::print(stderr, "hearthd: {}\n", bound.error().message);
    return kExitStartup;
  }

  if (cryptpad_service) cryptpad_service->start();
  std::vector<net::BoundEndpoint> xmpp_bound;
  std::vector<net::BoundEndpoint> s2s_bound;
  for (bool direct_tls : {false, true}) {
    int port = direct_tls ? config.xmpp_c2s_tls_port : config.xmpp_c2s_port;
    if (port < 0) continue;
    std::vector<net::StreamListenerSpec> xmpp_specs;
    for (const auto& addr : config.xmpp_bind)
      xmpp_specs.push_back({addr, port, direct_tls, {"xmpp-client"}, direct_tls ? "xmpp-client-tls" : "xmpp-client"});
    auto r = (*server)->listen_stream(xmpp_specs, xmpp_service.acceptor(direct_tls));
    if (!r) {
      fmt::print(stderr, "hearthd: {}\n", r.error().message);
      return kExitStartup;
    }
    xmpp_bound.insert(xmpp_bound.end(), r->begin(), r->end());
  }
  if (config.xmpp_s2s_enabled) {
    xmpp_service.set_s2s_connector([server = server->get()](net::OutgoingStreamSpec spec, net::StreamConnectHandler h) {
      server->connect_stream(std::move(spec), std::move(h));
    });
    if (config.xmpp_s2s_port >= 0) {
      std::vector<net::StreamListenerSpec> s2s_specs;
      for (const auto& addr : config.xmpp_bind) {
        net::StreamListenerSpec spec{addr, config.xmpp_s2s_port, false, {"xmpp-server"}, "xmpp-server"};
        spec.request_peer_certificate = true;
        s2s_specs.push_back(spec);
      }
      auto r = (*server)->listen_stream(s2s_specs, xmpp_service.s2s_acceptor());
      if (!r) {
        fmt::print(stderr, "hearthd: {}\n", r.error().message);
        return kExitStartup;
      }
      s2s_bound = *r;
    }
  }
  xmpp_service.start_background_tasks();

  std::string public_url = config.public_url;
  if (public_url.empty()) {
    const net::BoundEndpoint* pick = nullptr;
    for (const auto& e : *bound)
      if (!pick || (e.tls && !pick->tls)) pick = &e;
    if (pick) {
      std::string host = config.primary_domain().name;
      public_url = fmt::format("{}://{}:{}", pick->tls ? "https" : "http", host, pick->port);
    }
  }

  (*matrix_service)->set_public_url(public_url);
  (*matrix_service)->start_background();
  xmpp_service.set_public_url(public_url);
  // A Matrix user deactivating their account gets the same cleanup as `hearthctl user del`.
  (*matrix_service)->set_account_deleted_hook([&xmpp_service, &matrix_service](const std::string& bare) -> Result<void> {
    if (auto r = xmpp_service.forget_account(bare); !r) return r;
    return (*matrix_service)->forget_account(bare);
  });

  // Backups (incident I05): hearthctl asks for a consistent database snapshot, made by this
  // process's store on a reader connection (no write lock) off the admin thread, and packs
  // it itself.
  ops::SnapshotRunner snapshots([db](const std::string& path) { return db->snapshot_to(path); });
  ops::AdminServer admin(socket_path, log);
  std::atomic<bool> handed_over{false};
  ops::AdminCommands commands;
  ops::add_account_commands(commands, **accounts,
                            {config.primary_domain().name, public_url,
                             [&xmpp_service, &matrix_service](const std::string& bare) -> Result<void> {
                               if (auto r = xmpp_service.forget_account(bare); !r) return r;
                               return (*matrix_service)->forget_account(bare);
                             }});
  commands["health"] = [&health](const ops::AdminArgs& args) -> Result<std::string> {
    auto snap = args.count("fresh") ? health.run_now() : health.snapshot();
    return fmt::format("{{\"exit_code\":{},\"line\":{},\"snapshot\":{}}}", snap.nagios_exit_code(),
                       json_quote(snap.to_nagios_line()), snap.to_json());
  };
  commands["backup.snapshot"] = [&snapshots](const ops::AdminArgs& args) -> Result<std::string> {
    auto path = args.find("path");
    if (path == args.end() || path->second.empty() || path->second.front() != '/')
      return fail(Errc::invalid_argument, "path (absolute) is required");
    if (auto r = snapshots.start(path->second); !r) return tl::unexpected(r.error());
    return fmt::format("{{\"path\":{},\"state\":\"running\"}}", json_quote(path->second));
  };
  commands["backup.snapshot_status"] = [&snapshots](const ops::AdminArgs& args) -> Result<std::string> {
    auto path = args.find("path");
    if (path == args.end()) return fail(Errc::invalid_argument, "path is required");
    auto done = snapshots.finished(path->second);
    if (!done) return tl::unexpected(done.error());
    return fmt::format("{{\"path\":{},\"state\":\"{}\"}}", json_quote(path->second), *done ? "done" : "running");
  };
  commands["notice"] = [page = status_page.get()](const ops::AdminArgs& args) -> Result<std::string> {
    if (!page) return fail(Errc::unavailable, "the status page is off (ops.status_page = false)");
    auto text = args.find("text");
    if (text == args.end()) return fail(Errc::invalid_argument, "text is required");
    if (auto r = page->add_notice(text->second); !r) return tl::unexpected(r.error());
    return fmt::format("{{\"dir\":{}}}", json_quote(page->dir()));
  };
  commands["user.retention"] = [&xmpp_service, &config](const ops::AdminArgs& args) -> Result<std::string> {
    auto jid = args.find("jid");
    auto days = args.find("days");
    if (jid == args.end() || days == args.end()) return fail(Errc::invalid_argument, "jid and days are required");
    auto parts = ops::split_jid(jid->second, config.primary_domain().name);
    if (!parts) return tl::unexpected(parts.error());
    std::optional<int> value;
    if (days->second != "default") {
      int n = -1;
      auto [end, ec] = std::from_chars(days->second.data(), days->second.data() + days->second.size(), n);
      if (ec != std::errc() || end != days->second.data() + days->second.size() || n < 0 || n > 36500)
        return fail(Errc::invalid_argument, "days is a number from 0 (keep forever) to 36500, or 'default'");
      value = n;
    }
    std::string bare = parts->first + "@" + parts->second;
    if (auto r = xmpp_service.set_archive_retention(bare, value); !r) return tl::unexpected(r.error());
    return fmt::format("{{\"jid\":{},\"days\":{}}}", json_quote(bare), value ? std::to_string(*value) : "null");
  };
  if (config.debug_commands) {
    // Test-only (ops.debug_commands): blocks one shard's loop on purpose (incident I09).
    commands["debug.block_shard"] = [http_server](const ops::AdminArgs& args) -> Result<std::string> {
      auto it = args.find("ms");
      int ms = it == args.end() ? 500 : std::atoi(it->second.c_str());
      if (ms < 1 || ms > 60000) return fail(Errc::invalid_argument, "ms must be between 1 and 60000");
      http_server->run_after(std::chrono::milliseconds(0), [ms] {
        net::HandlerName name("debug.block_shard");
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      });
      return fmt::format("{{\"blocking_ms\":{}}}", ms);
    };
  }
  for (auto& [name, fn] : commands) admin.add_command(name, fn);
  // Graceful restart (incident I18): a successor takes the listening sockets; this process
  // then drains (as on SIGTERM) and exits.
  admin.add_fd_command(ops::kTakeoverCommand,
                       ops::hand_over_listeners_command(**server, [&server, &matrix_service, &xmpp_service, &log, &handed_over] {
                         log.info("hearthd.draining", {{"reason", "takeover"}});
                         handed_over.store(true);
                         xmpp_service.hand_over_on_drain();
                         (*server)->stop();
                         (*matrix_service)->release_waiters();
                       }, log));
  if (auto r = admin.start(); !r) {
    fmt::print(stderr, "hearthd: {}\n", r.error().message);
    return kExitStartup;
  }
  // Event loops (incident I09): critical while a shard has been stuck for 10 stall
  // thresholds (the liveness watchdog), warning when stalls happened since the last check.
  health.add_check("event_loops", [http_server, last = std::uint64_t{0}, threshold = config.stall_warning_ms]() mutable {
    auto loops = http_server->loop_health();
    std::uint64_t fresh = loops.stalls_total - last;
    last = loops.stalls_total;
    std::string value = fmt::format("{} stalls since start", loops.stalls_total);
    if (loops.stalled_ms > 10 * threshold)
      return ops::CheckResult{ops::HealthStatus::critical, value,
                              fmt::format("shard {} has not turned for {} ms (handler {})", loops.last_shard,
                                          loops.stalled_ms, loops.last_handler), {}};
    if (fresh > 0)
      return ops::CheckResult{ops::HealthStatus::warning, value,
                              fmt::format("{} event-loop stall(s) over {} ms since the last check, last in {} on shard {}",
                                          fresh, threshold, loops.last_handler, loops.last_shard), {}};
    return ops::CheckResult{ops::HealthStatus::ok, value, "", {}};
  });
  health.start();
  if (replica) replica->start();

  if (print_banner) {
    std::string out = fmt::format("hearth 0.1.0 is serving {}\n", config.primary_domain().name);
    for (std::size_t i = 1; i < config.domains.size(); ++i) out += fmt::format("  also serving {}\n", config.domains[i].name);
    for (const auto& e : *bound) {
      std::string base = fmt::format("{}://{}:{}", e.tls ? "https" : "http", url_host(e.address), e.port);
      out += fmt::format("  {:<6} {}/   (health {}/health, metrics {}/metrics)\n", e.tls ? "HTTPS" : "HTTP", base, base, base);
    }
    for (const auto& e : xmpp_bound)
      out += fmt::format("  {:<6} {}:{}   ({})\n", e.tls ? "XMPPS" : "XMPP", url_host(e.address), e.port,
                         e.tls ? "client, direct TLS" : "client, STARTTLS");
    for (const auto& e : s2s_bound)
      out += fmt::format("  {:<6} {}:{}   (server-to-server, STARTTLS)\n", "S2S", url_host(e.address), e.port);
    if (cryptpad_service)
      for (const auto& e : *bound)
        out += fmt::format("  {:<6} {}://{}:{}{}   (CryptPad websocket)\n", "CPAD", e.tls ? "wss" : "ws", url_host(e.address),
                           e.port, config.cryptpad_websocket_path);
    out += fmt::format("  Matrix server name {} (signing key {})\n", matrix_options.server_name,
                       (*matrix_service)->signing_key_id());
    for (const auto& cert : generated) out += fmt::format("  self-signed certificate: {}\n", cert);
    out += fmt::format("  data directory: {}\n  admin socket:   {}\n", data_dir, socket_path);
    auto invite = (*accounts)->bootstrap_admin_invite(config.primary_domain().name);
    if (invite) {
      out += fmt::format("\nNo administrator yet. First admin invitation (single use, valid until {}):\n",
                         format_time_utc(invite->expires_ms));
      out += fmt::format("  open   {}\n", ops::invite_url(public_url, invite->token));
      out += fmt::format("  or in an XMPP app (Conversations, Gajim): xmpp:{}?register;preauth={}\n",
                         config.primary_domain().name, invite->token);
      out += fmt::format("  or run {} --data-dir {} user add admin@{} --invite {}\n", hearthctl_command(), data_dir,
                         config.primary_domain().name, invite->token);
    }
    out += "Press Ctrl-C to stop.\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }

  // SIGTERM/SIGINT were blocked in main() before any thread started; one thread waits for
  // them and starts the drain.
  std::thread signal_waiter([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR2);  // internal: wakes this thread when run() returned by itself
    int sig = 0;
    sigwait(&set, &sig);
    if (sig != SIGUSR2) log.info("hearthd.draining", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
    (*server)->stop();
    (*matrix_service)->release_waiters();
  });
  log.info("hearthd.ready", {{"public_url", public_url}});
  // systemd (incident I09): READY=1 now, then WATCHDOG=1 only while every event loop turns,
  // so a stuck loop stops the pings and WatchdogSec= restarts the service.
  auto notifier = ops::SystemdNotifier::from_environment();
  std::mutex watchdog_mutex;
  std::condition_variable watchdog_cv;
  bool watchdog_stop = false;
  std::thread watchdog;
  if (notifier.active()) {
    // After a takeover this process is the service's new main process (NotifyAccess=all).
    (void)notifier.notify(takeover ? fmt::format("MAINPID={}\nREADY=1", ::getpid()) : std::string("READY=1"));
    if (notifier.watchdog_interval().count() > 0) {
      watchdog = std::thread([&] {
        std::unique_lock lk(watchdog_mutex);
        bool stuck_logged = false;
        while (!watchdog_cv.wait_for(lk, notifier.watchdog_interval(), [&] { return watchdog_stop; })) {
          auto loops = http_server->loop_health();
          auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(notifier.watchdog_interval()).count();
          if (loops.stalled_ms < std::max<std::int64_t>(limit, 10 * config.stall_warning_ms)) {
            (void)notifier.notify("WATCHDOG=1");
            stuck_logged = false;
          } else if (!stuck_logged) {
            stuck_logged = true;
            log.error("hearthd.watchdog_withheld", {{"shard", loops.last_shard}, {"handler", loops.last_handler},
                                                    {"stalled_ms", loops.stalled_ms}});
          }
        }
      });
    }
  }
  (*server)->run();
  if (handed_over.load()) xmpp_service.hand_over_detached_sessions();
  else xmpp_service.end_detached_sessions();
  {
    std::lock_guard lk(watchdog_mutex);
    watchdog_stop = true;
  }
  watchdog_cv.notify_all();
  if (watchdog.joinable()) watchdog.join();
  if (!handed_over.load()) (void)notifier.notify("STOPPING=1");  // else the successor is the service now
  pthread_kill(signal_waiter.native_handle(), SIGUSR2);
  signal_waiter.join();
  admin.stop();
  if (replica) replica->stop();
  health.stop();
  server->reset();
  cryptpad_service.reset();
  matrix_service->reset();
  accounts->reset();
  (*store)->close();
  log.info("hearthd.stopped", {});
  return 0;
}

}  // namespace
}  // namespace hearth

int main(int argc, char** argv) {
  // The sandboxed thumbnail worker (src/thumbnail): nothing of the server starts.
  if (argc > 1 && std::string_view(argv[1]) == "--thumbnail-worker") return hearth::thumbnail::run_worker(argc, argv);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CLI::App app{"hearthd: XMPP, Matrix and encrypted documents for a community, in one server"};
  std::string config_path;
  bool check_only = false;
  bool quiet = false;
  bool takeover = false;
  app.add_option("-c,--config", config_path, "TOML configuration file (docs/configuration.md); default: built-in defaults");
  app.add_flag("--check-config", check_only, "Validate the configuration and exit");
  app.add_flag("-q,--quiet", quiet, "Do not print the start-up banner on stdout");
  app.add_flag("--takeover", takeover,
               "Graceful restart: take the listening sockets of the hearthd running on the same data directory, "
               "let it drain, then serve (docs/operations.md)");
  app.set_version_flag("--version", "hearthd 0.1.0");
  CLI11_PARSE(app, argc, argv);

  auto config = config_path.empty() ? hearth::Result<hearth::Config>(hearth::default_config())
                                    : hearth::load_config_file(config_path);
  if (!config) {
    fmt::print(stderr, "hearthd: configuration error: {}\n", config.error().message);
    return hearth::kExitConfig;
  }
  if (check_only) {
    fmt::print("{}: ok\n", config_path.empty() ? "built-in defaults" : config_path);
    return 0;
  }
  for (;;) {
    int rc = hearth::run(*config, !quiet, takeover);
    if (rc != hearth::kStartAgain) return rc;
    takeover = false;
  }
}
