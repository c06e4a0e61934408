// hearth::store — the storage interface every core service uses.
//
// A Store hands out Transactions on its own threads; callers never touch a database
// connection. Today there is one backend, SQLite (`Store::open_sqlite`); a PostgreSQL
// backend will implement the same interface, so nothing here names SQLite types and all
// SQL goes through `Transaction`.
//
// Threads and lifecycle
//   * Writes run on ONE writer thread with group commit: the writer takes up to
//     `max_batch` queued jobs, opens one transaction (BEGIN IMMEDIATE), runs each job in
//     its own SAVEPOINT (a failing job rolls back only itself), COMMITs, and only after
//     the commit returned — the data is durable (synchronous=FULL) — calls each job's
//     `done`. If the COMMIT fails, every job of the batch gets that error.
//   * Reads run on a pool of `readers` threads, each with its own read-only connection; in
//     WAL mode readers see the last committed state and never block the writer.
//   * `work` and `done` run on the store's threads. They must be short and must never
//     block on the store (no *_sync call from inside them: that would deadlock, and is
//     refused with Errc::internal). `done` may enqueue further work with write()/read().
//   * Both queues are bounded by `queue_limit`: past it, `done` is called at once, on the
//     calling thread, with Errc::unavailable. Nothing is queued without bound.
//   * close() (also run by the destructor) stops accepting work, drains both queues —
//     every job already queued runs and gets its `done` — and joins the threads. Work
//     submitted after close() gets Errc::unavailable at once.
//   * Read-only mode (read_only.h): while read_only_mode() is active, write() refuses
//     every job at once with Errc::read_only. A commit that fails because the disk is
//     full sets it (so later writes fail fast and cleanly); ops clears it.
//   * A Store object is thread-safe: write()/read() may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.h"
#include "store/read_only.h"

namespace hearth {
class Logger;
class MetricsRegistry;
}  // namespace hearth

namespace hearth::store {

namespace detail {
template <typename T>
struct is_function_object : std::false_type {};
template <typename S>
struct is_function_object<std::function<S>> : std::true_type {};
}  // namespace detail

struct StoreOptions {
  // Database file; created if missing. Its directory must exist. ":memory:" is not
  // supported (readers need to share the file).
  std::string path;
  int readers = 4;           // read-only connections, one thread each
  int max_batch = 256;       // jobs per group commit
  int queue_limit = 10000;   // per queue (writes, reads)
  // Hard cap on the database's size (0: none), enforced by SQLite itself (PRAGMA
  // max_page_count): a write that would grow the database past it fails like a write to a
  // full disk and puts the store in read-only mode. ops' StorageWatcher goes read-only
  // earlier (a share of the same cap); this is the backstop between two of its checks.
  std::int64_t max_database_bytes = 0;
};

// Raw bytes (bound as a BLOB, as opposed to std::string which binds as TEXT).
struct Blob {
  std::string bytes;
};

// One SQL parameter or column value. Converts implicitly from the usual C++ types so that
// parameters can be written inline: `tx.exec(sql, {domain, 42, Blob{key}, std::nullopt})`.
class Value {
 public:
  using Variant = std::variant<std::monostate, std::int64_t, double, std::string, Blob>;

  Value() = default;  // NULL
  Value(std::nullptr_t) {}
  Value(std::nullopt_t) {}
  template <typename I>
    requires std::is_integral_v<I>
  Value(I v) : v_(static_cast<std::int64_t>(v)) {}
  Value(double v) : v_(v) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string_view s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(Blob b) : v_(std::move(b)) {}
  template <typename T>
  Value(const std::optional<T>& o) {
    if (o) *this = Value(*o);
  }

  const Variant& get() const { return v_; }
  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }

 private:
  Variant v_;
};

// A result row. Column indexes start at 0. Accessors convert like SQL does (NULL reads as
// 0 / 0.0 / empty). Views returned by text()/blob() stay valid only as long as the Row:
// inside `query`'s callback, until the callback returns.
class Row {
 public:
  virtual ~Row() = default;
  virtual int size() const = 0;
  virtual bool is_null(int i) const = 0;
  virtual std::int64_t integer(int i) const = 0;
  virtual double real(int i) const = 0;
  virtual std::string_view text(int i) const = 0;
  virtual std::string_view blob(int i) const = 0;
  // A copy of column i (TEXT as std::string, BLOB as Blob).
  virtual Value value(int i) const = 0;
};

// A Row that owns its values (what query_one returns); a plain value type.
class OwnedRow final : public Row {
 public:
  OwnedRow() = default;
  explicit OwnedRow(std::vector<Value> values) : values_(std::move(values)) {}
  explicit OwnedRow(const Row& row);

  int size() const override { return static_cast<int>(values_.size()); }
  bool is_null(int i) const override;
  std::int64_t integer(int i) const override;
  double real(int i) const override;
  std::string_view text(int i) const override;
  std::string_view blob(int i) const override;
  Value value(int i) const override;

 private:
  std::vector<Value> values_;
};

// A transaction handed to a job's `work`. It is only valid during that call and only on
// the store thread that made the call; do not keep it. Statements are prepared once per
// connection and cached, so pass constant SQL text with `?` parameters — never format
// values into SQL. Errors map to Errc: a UNIQUE/PRIMARY KEY violation is already_exists,
// other constraint failures invalid_argument, a busy database unavailable, a full or
// failing disk resource_exhausted / io, a damaged file corrupt, bad SQL internal.
class Transaction {
 public:
  virtual ~Transaction() = default;

  // Runs one statement (rows it returns are skipped); returns the number of rows changed.
  virtual Result<std::int64_t> exec(std::string_view sql, std::span<const Value> params) = 0;
  Result<std::int64_t> exec(std::string_view sql, std::initializer_list<Value> params = {}) {
    return exec(sql, std::span<const Value>(params.begin(), params.size()));
  }

  // Runs one query and calls `on_row` for each result row, in order.
  virtual Result<void> query(std::string_view sql, std::span<const Value> params,
                             const std::function<void(const Row&)>& on_row) = 0;
  Result<void> query(std::string_view sql, std::initializer_list<Value> params,
                     const std::function<void(const Row&)>& on_row) {
    return query(sql, std::span<const Value>(params.begin(), params.size()), on_row);
  }

  // The first row of a query, or nullopt when it returns none (further rows are ignored).
  Result<std::optional<OwnedRow>> query_one(std::string_view sql, std::span<const Value> params);
  Result<std::optional<OwnedRow>> query_one(std::string_view sql,
                                            std::initializer_list<Value> params = {}) {
    return query_one(sql, std::span<const Value>(params.begin(), params.size()));
  }

  // Runs several `;`-separated statements without parameters (schema, migrations).
  virtual Result<void> exec_script(std::string_view sql) = 0;

  // Row id of the last INSERT on this transaction's connection.
  virtual std::int64_t last_insert_id() const = 0;

  // True on read transactions; any statement that would write fails there (Errc::internal).
  virtual bool read_only() const = 0;
};

// A numbered schema change of one module. Versions start at 1 and have no gaps.
struct Migration {
  int version;
  std::string_view name;
  // May hold several statements; no transaction control (BEGIN/COMMIT): the store runs
  // each migration inside its own transaction.
  std::string_view sql;
};

class Store {
 public:
  using Work = std::function<Result<void>(Transaction&)>;
  using Done = std::function<void(Result<void>)>;

  // Opens (creating if needed) an SQLite database: WAL journal, synchronous=FULL,
  // foreign keys on, a busy timeout; starts the writer and reader threads. `logger` and
  // `metrics` must outlive the Store.
  static Result<std::unique_ptr<Store>> open_sqlite(StoreOptions options, Logger& logger,
                                                    MetricsRegistry& metrics);

  Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  virtual ~Store() = default;

  // Enqueues a write job (see the header comment for batching and durability). `done`
  // gets the job's own error, the commit's error, or ok once the data is durable.
  virtual void write(Work work, Done done) = 0;
  // Enqueues a read job on the reader pool; `work` runs inside one read transaction (a
  // consistent snapshot).
  virtual void read(Work work, Done done) = 0;

  // Blocking forms for start-up, the CLI and tests, and for the blocking worker pool.
  // NEVER call them from an event-loop shard thread (or from the store's own threads).
  // The returned value is only delivered when the write committed.
  template <typename T>
  Result<T> write_sync(std::function<Result<T>(Transaction&)> fn) {
    return run_sync<T>(true, std::move(fn));
  }
  template <typename T>
  Result<T> read_sync(std::function<Result<T>(Transaction&)> fn) {
    return run_sync<T>(false, std::move(fn));
  }
  // Same, deducing T from a lambda: `store.write_sync([&](Transaction& tx) { ... })`.
  template <typename F>
    requires(std::is_invocable_v<F&, Transaction&> && !detail::is_function_object<std::decay_t<F>>::value)
  auto write_sync(F&& fn) {
    using R = std::invoke_result_t<F&, Transaction&>;
    return run_sync<typename R::value_type>(true, std::forward<F>(fn));
  }
  template <typename F>
    requires(std::is_invocable_v<F&, Transaction&> && !detail::is_function_object<std::decay_t<F>>::value)
  auto read_sync(F&& fn) {
    using R = std::invoke_result_t<F&, Transaction&>;
    return run_sync<typename R::value_type>(false, std::forward<F>(fn));
  }

  // Applies `module`'s pending migrations in order, each in its own transaction, and
  // records them in schema_migrations(module, version, name, applied_at). Errc::corrupt
  // when the list has a gap, or the database has a version the code does not know or a
  // gap in what it recorded (the message names the module and version). Blocking: call it
  // at start-up.
  virtual Result<void> migrate(std::string_view module, const std::vector<Migration>& migrations) = 0;

  // Cheap round trip through a reader (SELECT 1), for health checks. Blocking.
  virtual Result<void> ping() = 0;
  // "ok", or the problems the database reports, one per line. Blocking; may be slow.
  virtual Result<std::string> integrity_check() = 0;

  // Writes a consistent copy of the whole database to a new file at `path` (which must
  // not exist), for backups. Runs on one reader thread inside one read transaction
  // (SQLite's online backup API, all pages in one step): it sees the last committed state
  // and never blocks the writer, which keeps committing to the WAL meanwhile. The copy is
  // scratch for a backup, which reads it back at once: it is written without a journal and
  // NOT fsynced (the backup file made from it is). Blocking; takes one reader for its
  // duration.
  virtual Result<void> snapshot_to(const std::string& path) = 0;

  // Drains both queues and joins the threads; idempotent. Blocking.
  virtual void close() = 0;

  // The server-wide read-only flag (read_only.h). While it is set, write() refuses every
  // job at once with Errc::read_only; reads are unaffected.
  ReadOnlyMode& read_only_mode() { return read_only_; }
  const ReadOnlyMode& read_only_mode() const { return read_only_; }

 protected:
  // True on the store's own writer/reader threads (where blocking on the store deadlocks).
  virtual bool on_store_thread() const = 0;

 private:
  template <typename T, typename F>
  Result<T> run_sync(bool is_write, F&& fn);

  ReadOnlyMode read_only_;
};

template <typename T, typename F>
Result<T> Store::run_sync(bool is_write, F&& fn) {
  if (on_store_thread()) {
    return fail(Errc::internal, "blocking store call from a store thread");
  }
  std::optional<Result<T>> value;
  std::promise<Result<void>> finished;
  auto future = finished.get_future();
  Work work = [&value, &fn](Transaction& tx) -> Result<void> {
    Result<T> r = fn(tx);
    if (!r) return tl::unexpected(r.error());
    value.emplace(std::move(r));
    return ok();
  };
  Done done = [&finished](Result<void> r) { finished.set_value(std::move(r)); };
  if (is_write) {
    write(std::move(work), std::move(done));
  } else {
    read(std::move(work), std::move(done));
  }
  Result<void> r = future.get();
  if (!r) return tl::unexpected(r.error());
  return std::move(*value);
}

}  // namespace hearth::store
