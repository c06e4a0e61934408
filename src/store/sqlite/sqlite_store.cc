// SQLite backend of store::Store: one writer connection on one thread (group commit),
// a pool of reader connections, each on its own thread. Connections are opened with
// SQLITE_OPEN_NOMUTEX because each one is only ever used by the thread that owns it.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstring>

#include <algorithm>
#include <cstdlib>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "core/log.h"
#include "core/metrics.h"
#include "store/sqlite/coalescing_vfs.h"
#include "store/store.h"

namespace hearth::store {
namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr std::size_t kStatementCacheLimit = 512;

Errc map_sqlite_code(int extended) {
  switch (extended) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return Errc::already_exists;
    default:
      break;
  }
  switch (extended & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return Errc::invalid_argument;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Errc::unavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return Errc::resource_exhausted;
    case SQLITE_READONLY:
      return Errc::read_only;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_NOLFS:
      return Errc::io;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Errc::corrupt;
    default:
      return Errc::internal;
  }
}

Error sqlite_error(sqlite3* db, std::string_view what) {
  int code = sqlite3_extended_errcode(db);
  return Error(map_sqlite_code(code), fmt::format("{}: {} (sqlite {})", what, sqlite3_errmsg(db), code));
}

std::string_view sql_head(std::string_view sql) { return sql.substr(0, std::min<std::size_t>(sql.size(), 80)); }

// The writer runs every job in a savepoint. SQLite keeps a savepoint's journal of changed
// pages in memory only up to 64 KiB and then moves it to a temporary file for the rest of
// the transaction, which costs two write calls per changed page: under message load that
// was as many calls as the WAL's own. 4 MiB keeps a job's journal in memory. The setting is
// process-wide and only takes before SQLite's first use, hence once, before the first open.
void configure_sqlite() {
  static std::once_flag once;
  std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, 4 << 20); });
}

class Connection {
 public:
  static Result<std::unique_ptr<Connection>> open(const std::string& path, bool reader) {
    configure_sqlite();
    sqlite3* db = nullptr;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (reader ? 0 : SQLITE_OPEN_CREATE);
    // The writer's WAL writes are joined into one call per commit (coalescing_vfs.h).
    int rc = sqlite3_open_v2(path.c_str(), &db, flags, reader ? nullptr : sqlite::coalescing_vfs_name());
    auto conn = std::unique_ptr<Connection>(new Connection(db, reader));
    if (rc != SQLITE_OK) {
      if (!db) return fail(Errc::resource_exhausted, "sqlite: out of memory");
      return fail(Errc::io, fmt::format("cannot open database {}: {}", path, sqlite3_errmsg(db)));
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    if (reader) {
      if (auto r = conn->exec_raw("PRAGMA query_only=ON"); !r) return tl::unexpected(r.error());
    } else {
      auto mode = conn->pragma_text("PRAGMA journal_mode=WAL");
      if (!mode) return tl::unexpected(mode.error());
      if (*mode != "wal") {
        return fail(Errc::io, fmt::format("database {}: cannot enable WAL (journal_mode={})", path, *mode));
      }
      // The writer keeps more of the hot index pages in memory (8 MiB instead of 2; the
      // cache counts towards the bounded memory of incident I10) rather than reading them
      // back, and checkpoints every 4,000 pages instead of 1,000:
      // a page rewritten by many group commits is copied into the database once per
      // checkpoint, so fewer checkpoints write less.
      for (const char* p : {"PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON", "PRAGMA cache_size=-8192",
                            "PRAGMA wal_autocheckpoint=4000"}) {
        if (auto r = conn->exec_raw(p); !r) return tl::unexpected(r.error());
      }
    }
    return conn;
  }

  ~Connection() {
    for (auto& [sql, entry] : cache_) sqlite3_finalize(entry.stmt);
    sqlite3_close_v2(db_);
  }

  sqlite3* db() const { return db_; }
  bool reader() const { return reader_; }

  Result<void> exec_raw(std::string_view sql) {
    std::string text(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
    if (rc == SQLITE_OK) return ok();
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return fail(map_sqlite_code(sqlite3_extended_errcode(db_)),
                fmt::format("{}: {}", sql_head(sql), msg));
  }

  // exec_raw for a statement run very often (the writer's per-job savepoints): prepared
  // once and kept in the statement cache.
  Result<void> exec_cached(std::string_view sql) {
    auto st = prepare(sql);
    if (!st) return tl::unexpected(st.error());
    int rc = sqlite3_step(st->get());
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return ok();
    return tl::unexpected(sqlite_error(db_, sql_head(sql)));
  }

  Result<std::string> pragma_text(const char* sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return tl::unexpected(sqlite_error(db_, sql));
    std::string out;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const auto* t = sqlite3_column_text(st, 0);
      out = t ? reinterpret_cast<const char*>(t) : "";
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return tl::unexpected(sqlite_error(db_, sql));
    return out;
  }

  // A prepared statement borrowed from the cache for one exec/query; returning it resets
  // it (which also ends its implicit read of the snapshot) and clears its bindings.
  class Lease {
   public:
    Lease(Connection* c, sqlite3_stmt* s, bool* busy) : conn_(c), stmt_(s), busy_(busy) {}
    Lease(Lease&& o) noexcept : conn_(o.conn_), stmt_(o.stmt_), busy_(o.busy_) { o.stmt_ = nullptr; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (!stmt_) return;
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
      if (busy_) {
        *busy_ = false;
      } else {
        sqlite3_finalize(stmt_);
      }
    }
    sqlite3_stmt* get() const { return stmt_; }

   private:
    Connection* conn_;
    sqlite3_stmt* stmt_;
    bool* busy_;  // the cache entry's flag; null for an uncached statement
  };

  Result<Lease> prepare(std::string_view sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end() && !it->second.busy) {
      it->second.busy = true;
      return Lease(this, it->second.stmt, &it->second.busy);
    }
    sqlite3_stmt* st = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                &st, &tail);
    if (rc != SQLITE_OK) return tl::unexpected(sqlite_error(db_, fmt::format("prepare '{}'", sql_head(sql))));
    if (!st) return fail(Errc::internal, "empty SQL statement");
    std::string_view rest(tail, static_cast<std::size_t>(sql.data() + sql.size() - tail));
    if (rest.find_first_not_of(" \t\r\n;") != std::string_view::npos) {
      sqlite3_finalize(st);
      return fail(Errc::internal, fmt::format("more than one statement in '{}'", sql_head(sql)));
    }
    // A statement already in use (a nested query with the same text) stays uncached.
    if (it != cache_.end()) return Lease(this, st, nullptr);
    if (cache_.size() >= kStatementCacheLimit) evict_idle();
    auto [pos, inserted] = cache_.emplace(std::string(sql), Entry{st, true});
    return Lease(this, st, &pos->second.busy);
  }

 private:
  struct Entry {
    sqlite3_stmt* stmt;
    bool busy;
  };

  Connection(sqlite3* db, bool reader) : db_(db), reader_(reader) {}

  void evict_idle() {
    for (auto it = cache_.begin(); it != cache_.end();) {
      if (it->second.busy) {
        ++it;
      } else {
        sqlite3_finalize(it->second.stmt);
        it = cache_.erase(it);
      }
    }
  }

  sqlite3* db_;
  bool reader_;
  std::map<std::string, Entry, std::less<>> cache_;
};

class SqliteRow final : public Row {
 public:
  explicit SqliteRow(sqlite3_stmt* st) : st_(st), n_(sqlite3_column_count(st)) {}
  int size() const override { return n_; }
  bool is_null(int i) const override { return sqlite3_column_type(st_, i) == SQLITE_NULL; }
  std::int64_t integer(int i) const override { return sqlite3_column_int64(st_, i); }
  double real(int i) const override { return sqlite3_column_double(st_, i); }
  std::string_view text(int i) const override {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, i));
    if (!p) return {};
    return {p, static_cast<std::size_t>(sqlite3_column_bytes(st_, i))};
  }
  std::string_view blob(int i) const override {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(st_, i));
    if (!p) return {};
    return {p, static_cast<std::size_t>(sqlite3_column_bytes(st_, i))};
  }
  Value value(int i) const override {
    switch (sqlite3_column_type(st_, i)) {
      case SQLITE_INTEGER: return Value(integer(i));
      case SQLITE_FLOAT: return Value(real(i));
      case SQLITE_TEXT: return Value(std::string(text(i)));
      case SQLITE_BLOB: return Value(Blob{std::string(blob(i))});
      default: return Value();
    }
  }

 private:
  sqlite3_stmt* st_;
  int n_;
};

struct Binder {
  sqlite3_stmt* st;
  int index;
  int operator()(std::monostate) const { return sqlite3_bind_null(st, index); }
  int operator()(std::int64_t v) const { return sqlite3_bind_int64(st, index, v); }
  int operator()(double v) const { return sqlite3_bind_double(st, index, v); }
  int operator()(const std::string& s) const {
    return sqlite3_bind_text64(st, index, s.data(), s.size(), SQLITE_STATIC, SQLITE_UTF8);
  }
  int operator()(const Blob& b) const {
    return sqlite3_bind_blob64(st, index, b.bytes.data(), b.bytes.size(), SQLITE_STATIC);
  }
};

class SqliteTransaction final : public Transaction {
 public:
  explicit SqliteTransaction(Connection& conn) : conn_(conn) {}

  Result<std::int64_t> exec(std::string_view sql, std::span<const Value> params) override {
    auto st = start(sql, params);
    if (!st) return tl::unexpected(st.error());
    for (;;) {
      int rc = sqlite3_step(st->get());
      if (rc == SQLITE_ROW) continue;
      if (rc == SQLITE_DONE) break;
      return tl::unexpected(sqlite_error(conn_.db(), sql_head(sql)));
    }
    if (sqlite3_stmt_readonly(st->get())) return 0;
    return sqlite3_changes64(conn_.db());
  }

  Result<void> query(std::string_view sql, std::span<const Value> params,
                     const std::function<void(const Row&)>& on_row) override {
    auto st = start(sql, params);
    if (!st) return tl::unexpected(st.error());
    SqliteRow row(st->get());
    for (;;) {
      int rc = sqlite3_step(st->get());
      if (rc == SQLITE_ROW) {
        on_row(row);
        continue;
      }
      if (rc == SQLITE_DONE) return ok();
      return tl::unexpected(sqlite_error(conn_.db(), sql_head(sql)));
    }
  }

  Result<void> exec_script(std::string_view sql) override {
    if (conn_.reader()) return fail(Errc::internal, "exec_script on a read transaction");
    return conn_.exec_raw(sql);
  }

  std::int64_t last_insert_id() const override { return sqlite3_last_insert_rowid(conn_.db()); }
  bool read_only() const override { return conn_.reader(); }
  sqlite3* db() const { return conn_.db(); }

 private:
  Result<Connection::Lease> start(std::string_view sql, std::span<const Value> params) {
    auto st = conn_.prepare(sql);
    if (!st) return st;
    if (conn_.reader() && !sqlite3_stmt_readonly(st->get())) {
      return fail(Errc::internal, fmt::format("write on a read transaction: '{}'", sql_head(sql)));
    }
    int expected = sqlite3_bind_parameter_count(st->get());
    if (expected != static_cast<int>(params.size())) {
      return fail(Errc::internal, fmt::format("'{}' takes {} parameters, got {}", sql_head(sql), expected,
                                              params.size()));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      int rc = std::visit(Binder{st->get(), static_cast<int>(i + 1)}, params[i].get());
      if (rc != SQLITE_OK) return tl::unexpected(sqlite_error(conn_.db(), fmt::format("bind {}", i + 1)));
    }
    return st;
  }

  Connection& conn_;
};

struct Job {
  Store::Work work;
  Store::Done done;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(StoreOptions options, Logger& logger, MetricsRegistry& metrics,
              std::unique_ptr<Connection> writer, std::vector<std::unique_ptr<Connection>> readers)
      : options_(std::move(options)),
        logger_(logger),
        writes_total_(metrics.counter("hearth_store_writes_total", "Write jobs run by the store")),
        reads_total_(metrics.counter("hearth_store_reads_total", "Read jobs run by the store")),
        commits_total_(metrics.counter("hearth_store_commits_total", "Group commits (batches of write jobs)")),
        errors_total_(metrics.counter("hearth_store_errors_total",
                                      "Store jobs that failed or were rejected, and failed commits")),
        commit_seconds_(metrics.histogram("hearth_store_commit_seconds",
                                          "Time to run and commit one batch of write jobs", latency_buckets())),
        write_depth_(metrics.gauge("hearth_store_queue_depth", "Jobs waiting in a store queue",
                                   {{"queue", "write"}})),
        read_depth_(metrics.gauge("hearth_store_queue_depth", "Jobs waiting in a store queue", {{"queue", "read"}})),
        writer_conn_(std::move(writer)),
        reader_conns_(std::move(readers)) {
    writer_ = std::thread([this] { writer_loop(); });
    thread_ids_.push_back(writer_.get_id());
    for (auto& conn : reader_conns_) {
      readers_.emplace_back([this, c = conn.get()] { reader_loop(*c); });
      thread_ids_.push_back(readers_.back().get_id());
    }
  }

  ~SqliteStore() override { close(); }

  void write(Work work, Done done) override {
    if (auto writable = read_only_mode().check_writable(); !writable) {
      errors_total_.inc();
      if (done) done(tl::unexpected(writable.error()));
      return;
    }
    {
      std::lock_guard lock(write_mutex_);
      if (!stopping_ && static_cast<int>(write_queue_.size()) < options_.queue_limit) {
        write_queue_.push_back({std::move(work), std::move(done)});
        write_depth_.set(static_cast<double>(write_queue_.size()));
        write_cv_.notify_one();
        return;
      }
    }
    reject(done, "write");
  }

  void read(Work work, Done done) override {
    {
      std::lock_guard lock(read_mutex_);
      if (!stopping_reads_ && static_cast<int>(read_queue_.size()) < options_.queue_limit) {
        read_queue_.push_back({std::move(work), std::move(done)});
        read_depth_.set(static_cast<double>(read_queue_.size()));
        read_cv_.notify_one();
        return;
      }
    }
    reject(done, "read");
  }

  Result<void> migrate(std::string_view module, const std::vector<Migration>& migrations) override {
    for (std::size_t i = 0; i < migrations.size(); ++i) {
      if (migrations[i].version != static_cast<int>(i) + 1) {
        return fail(Errc::corrupt, fmt::format("migrations of module {}: expected version {} at position {}, got {}",
                                               module, i + 1, i, migrations[i].version));
      }
    }
    const int known = static_cast<int>(migrations.size());
    for (;;) {
      auto applied = write_sync<int>([&](Transaction& tx) -> Result<int> {
        int current = 0;
        std::optional<Error> gap;
        auto r = tx.query("SELECT version FROM schema_migrations WHERE module = ? ORDER BY version", {module},
                          [&](const Row& row) {
                            auto v = row.integer(0);
                            if (!gap && v != current + 1) {
                              gap.emplace(Errc::corrupt,
                                          fmt::format("module {}: database records migration {} without {}",
                                                      module, v, current + 1));
                            }
                            current = static_cast<int>(v);
                          });
        if (!r) return tl::unexpected(r.error());
        if (gap) return tl::unexpected(*gap);
        if (current > known) {
          return fail(Errc::corrupt, fmt::format("module {}: database is at version {}, this build knows up to {}",
                                                 module, current, known));
        }
        if (current == known) return 0;
        const Migration& m = migrations[static_cast<std::size_t>(current)];
        if (auto s = tx.exec_script(m.sql); !s) {
          return fail(s.error().code, fmt::format("module {} migration {} ({}): {}", module, m.version, m.name,
                                                  s.error().message));
        }
        auto ins = tx.exec(
            "INSERT INTO schema_migrations (module, version, name, applied_at) "
            "VALUES (?, ?, ?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
            {module, m.version, m.name});
        if (!ins) return tl::unexpected(ins.error());
        return m.version;
      });
      if (!applied) return tl::unexpected(applied.error());
      if (*applied == 0) return ok();
      logger_.info("store.migration_applied",
                   {{"module", module}, {"version", *applied},
                    {"name", migrations[static_cast<std::size_t>(*applied - 1)].name}});
    }
  }

  Result<void> ping() override {
    return read_sync<void>([](Transaction& tx) -> Result<void> {
      auto r = tx.query_one("SELECT 1");
      if (!r) return tl::unexpected(r.error());
      return ok();
    });
  }

  Result<std::string> integrity_check() override {
    return read_sync<std::string>([](Transaction& tx) -> Result<std::string> {
      std::string out;
      auto r = tx.query("PRAGMA integrity_check", {}, [&out](const Row& row) {
        if (!out.empty()) out += '\n';
        out += row.text(0);
      });
      if (!r) return tl::unexpected(r.error());
      return out;
    });
  }

  Result<void> snapshot_to(const std::string& path) override {
    if (::access(path.c_str(), F_OK) == 0)
      return fail(Errc::already_exists, fmt::format("snapshot target {} already exists", path));
    return read_sync<void>([&path](Transaction& tx) -> Result<void> {
      sqlite3* src = static_cast<SqliteTransaction&>(tx).db();
      // Start the read transaction now: every page below comes from this one snapshot.
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(src, "SELECT count(*) FROM sqlite_master", -1, &st, nullptr) != SQLITE_OK)
        return tl::unexpected(sqlite_error(src, "snapshot: read"));
      int rc = sqlite3_step(st);
      sqlite3_finalize(st);
      if (rc != SQLITE_ROW) return tl::unexpected(sqlite_error(src, "snapshot: read"));
      sqlite3* dst = nullptr;
      rc = sqlite3_open_v2(path.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
      auto close_dst = [&dst] { sqlite3_close_v2(dst); };
      if (rc != SQLITE_OK) {
        Error e(Errc::io, fmt::format("snapshot: cannot create {}: {}", path, dst ? sqlite3_errmsg(dst) : "out of memory"));
        close_dst();
        return tl::unexpected(e);
      }
      // A scratch copy, read back at once by the backup and then deleted: no journal and no
      // syncs (the backup file is what gets fsynced). Writing it through to the disk cost a
      // quarter of a backup's time (bench/backup.sh).
      sqlite3_exec(dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", nullptr, nullptr, nullptr);
      sqlite3_backup* b = sqlite3_backup_init(dst, "main", src, "main");
      if (!b) {
        Error e = sqlite_error(dst, "snapshot: backup_init");
        close_dst();
        return tl::unexpected(e);
      }
      rc = sqlite3_backup_step(b, -1);
      sqlite3_backup_finish(b);
      if (rc != SQLITE_DONE) {
        Error e(map_sqlite_code(rc), fmt::format("snapshot to {}: {}", path, sqlite3_errstr(rc)));
        close_dst();
        ::unlink(path.c_str());
        return tl::unexpected(e);
      }
      close_dst();
      return ok();
    });
  }

  void close() override {
    {
      std::lock_guard lock(write_mutex_);
      if (closed_) return;
      closed_ = true;
      stopping_ = true;
      write_cv_.notify_all();
    }
    // Writes first: a write's `done` may still enqueue reads.
    if (writer_.joinable()) writer_.join();
    {
      std::lock_guard lock(read_mutex_);
      stopping_reads_ = true;
      read_cv_.notify_all();
    }
    for (auto& t : readers_) {
      if (t.joinable()) t.join();
    }
    reader_conns_.clear();
    writer_conn_.reset();
    logger_.info("store.closed", {{"path", options_.path}});
  }

 protected:
  bool on_store_thread() const override {
    auto self = std::this_thread::get_id();
    return std::find(thread_ids_.begin(), thread_ids_.end(), self) != thread_ids_.end();
  }

 private:
  void reject(const Done& done, std::string_view queue) {
    errors_total_.inc();
    if (done) done(fail(Errc::unavailable, fmt::format("store {} queue full or closed", queue)));
  }

  template <typename F>
  Result<void> run_guarded(F&& f) {
    try {
      return f();
    } catch (const std::exception& e) {
      logger_.error("store.job_threw", {{"what", e.what()}});
      return fail(Errc::internal, fmt::format("store job threw: {}", e.what()));
    } catch (...) {
      logger_.error("store.job_threw", {});
      return fail(Errc::internal, "store job threw");
    }
  }

  void finish(const Done& done, Result<void> r) {
    if (!r) errors_total_.inc();
    if (!done) return;
    auto cb = run_guarded([&]() -> Result<void> {
      done(std::move(r));
      return ok();
    });
    (void)cb;
  }

  void writer_loop() {
    std::vector<Job> batch;
    for (;;) {
      batch.clear();
      {
        std::unique_lock lock(write_mutex_);
        write_cv_.wait(lock, [this] { return stopping_ || !write_queue_.empty(); });
        if (write_queue_.empty()) return;
        std::size_t n = std::min<std::size_t>(write_queue_.size(), static_cast<std::size_t>(options_.max_batch));
        for (std::size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(write_queue_.front()));
          write_queue_.pop_front();
        }
        write_depth_.set(static_cast<double>(write_queue_.size()));
      }
      run_batch(batch);
    }
  }

  void run_batch(std::vector<Job>& batch) {
    auto started = std::chrono::steady_clock::now();
    Connection& conn = *writer_conn_;
    writes_total_.inc(batch.size());
    if (auto begin = conn.exec_raw("BEGIN IMMEDIATE"); !begin) {
      logger_.error("store.begin_failed", {{"error", begin.error().describe()}});
      for (auto& job : batch) finish(job.done, begin);
      return;
    }
    SqliteTransaction tx(conn);
    std::vector<Result<void>> results;
    results.reserve(batch.size());
    for (auto& job : batch) {
      if (auto sp = conn.exec_cached("SAVEPOINT job"); !sp) {
        abort_batch(batch, sp.error());
        return;
      }
      Result<void> r = run_guarded([&] { return job.work(tx); });
      if (!r && r.error().code == Errc::resource_exhausted) note_disk_full(conn);
      Result<void> end = r ? conn.exec_cached("RELEASE job") : conn.exec_cached("ROLLBACK TO job");
      if (!r && end) end = conn.exec_cached("RELEASE job");
      // SQLite ends the whole transaction on some errors (disk full, I/O); then, or when a
      // savepoint cannot be undone, no job of the batch may be acknowledged.
      if (!end || sqlite3_get_autocommit(conn.db())) {
        abort_batch(batch, end ? (r ? Error(Errc::internal, "transaction ended inside a job") : r.error())
                               : end.error());
        return;
      }
      results.push_back(std::move(r));
    }
    Result<void> commit = conn.exec_raw("COMMIT");
    if (!commit) {
      logger_.error("store.commit_failed", {{"error", commit.error().describe()}, {"jobs", batch.size()}});
      note_disk_full(conn);
      (void)conn.exec_raw("ROLLBACK");
      for (auto& job : batch) finish(job.done, commit);
      return;
    }
    commits_total_.inc();
    commit_seconds_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    for (std::size_t i = 0; i < batch.size(); ++i) finish(batch[i].done, std::move(results[i]));
  }

  void abort_batch(std::vector<Job>& batch, const Error& error) {
    logger_.error("store.batch_aborted", {{"error", error.describe()}, {"jobs", batch.size()}});
    note_disk_full(*writer_conn_);
    if (!sqlite3_get_autocommit(writer_conn_->db())) (void)writer_conn_->exec_raw("ROLLBACK");
    for (auto& job : batch) finish(job.done, tl::unexpected(error));
  }

  // A write that failed because the disk (or the database's size limit) is full puts the
  // server in read-only mode at once, so later writes fail fast and cleanly instead of
  // each one hitting the full disk (incident I02); ops leaves it once space is back.
  void note_disk_full(Connection& conn) {
    int code = sqlite3_extended_errcode(conn.db());
    bool full = (code & 0xff) == SQLITE_FULL || sqlite3_system_errno(conn.db()) == ENOSPC ||
                sqlite3_system_errno(conn.db()) == EDQUOT;
    if (!full) return;
    if (read_only_mode().enter(fmt::format("a write to {} failed: the disk is full{}", options_.path,
                                           options_.max_database_bytes > 0 ? " or the database reached its size limit" : "")))
      logger_.error("store.read_only_entered", {{"reason", "disk full"}, {"path", options_.path}});
  }

  void reader_loop(Connection& conn) {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(read_mutex_);
        read_cv_.wait(lock, [this] { return stopping_reads_ || !read_queue_.empty(); });
        if (read_queue_.empty()) return;
        job = std::move(read_queue_.front());
        read_queue_.pop_front();
        read_depth_.set(static_cast<double>(read_queue_.size()));
      }
      reads_total_.inc();
      Result<void> r = conn.exec_raw("BEGIN");
      if (r) {
        SqliteTransaction tx(conn);
        r = run_guarded([&] { return job.work(tx); });
        auto end = conn.exec_raw(r ? "COMMIT" : "ROLLBACK");
        if (r && !end) r = end;
      }
      finish(job.done, std::move(r));
    }
  }

  StoreOptions options_;
  Logger& logger_;
  Counter& writes_total_;
  Counter& reads_total_;
  Counter& commits_total_;
  Counter& errors_total_;
  Histogram& commit_seconds_;
  Gauge& write_depth_;
  Gauge& read_depth_;

  std::unique_ptr<Connection> writer_conn_;  // used only on writer_
  std::vector<std::unique_ptr<Connection>> reader_conns_;  // one per reader thread

  std::mutex write_mutex_;
  std::condition_variable write_cv_;
  std::deque<Job> write_queue_;
  bool stopping_ = false;
  bool closed_ = false;

  std::mutex read_mutex_;
  std::condition_variable read_cv_;
  std::deque<Job> read_queue_;
  bool stopping_reads_ = false;

  std::thread writer_;
  std::vector<std::thread> readers_;
  std::vector<std::thread::id> thread_ids_;  // fixed once the constructor returns
};

}  // namespace

Result<std::unique_ptr<Store>> Store::open_sqlite(StoreOptions options, Logger& logger, MetricsRegistry& metrics) {
  if (options.path.empty() || options.path == ":memory:") {
    return fail(Errc::invalid_argument, "store path must name a database file");
  }
  if (options.readers < 1 || options.max_batch < 1 || options.queue_limit < 1) {
    return fail(Errc::invalid_argument, "store readers, max_batch and queue_limit must be at least 1");
  }
  auto writer = Connection::open(options.path, false);
  if (!writer) return tl::unexpected(writer.error());
  if (auto r = (*writer)->exec_raw("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   " module TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
                                   " applied_at INTEGER NOT NULL, PRIMARY KEY (module, version))");
      !r) {
    return fail(r.error().code, fmt::format("database {}: {}", options.path, r.error().message));
  }
  if (options.max_database_bytes > 0) {
    // SQLite keeps the larger of this and the current page count, so an existing database
    // over the cap stays readable (and further growth fails).
    auto page_size = (*writer)->pragma_text("PRAGMA page_size");
    if (!page_size) return tl::unexpected(page_size.error());
    const std::int64_t page = std::max<std::int64_t>(512, std::atoll(page_size->c_str()));
    const std::string pragma = fmt::format("PRAGMA max_page_count={}", std::max<std::int64_t>(1, options.max_database_bytes / page));
    if (auto r = (*writer)->pragma_text(pragma.c_str()); !r) return tl::unexpected(r.error());
  }
  std::vector<std::unique_ptr<Connection>> readers;
  for (int i = 0; i < options.readers; ++i) {
    auto c = Connection::open(options.path, true);
    if (!c) return tl::unexpected(c.error());
    readers.push_back(std::move(*c));
  }
  logger.info("store.opened", {{"path", options.path}, {"readers", options.readers}, {"backend", "sqlite"}});
  return std::unique_ptr<Store>(
      new SqliteStore(std::move(options), logger, metrics, std::move(*writer), std::move(readers)));
}

}  // namespace hearth::store
