#include "ops/backup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iterator>
#include <map>
#include <random>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <simdjson.h>
#include <zstd.h>

#include "core/durable_file.h"
#include "core/json.h"

namespace hearth::ops {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kHeader = "HEARTH-BACKUP 2\n";
constexpr std::string_view kHeaderV1 = "HEARTH-BACKUP 1\n";
constexpr std::string_view kDatabase = "hearth.db";
constexpr std::uint64_t kDatabaseChunk = 64 << 10;
constexpr std::size_t kChunk = 1 << 20;
constexpr std::string_view kTmpDir = ".backup-tmp";

tl::unexpected<Error> sys_fail(std::string_view what, const std::string& path, int e = errno) {
  return fail(Errc::io, fmt::format("{} {}: {}", what, path, std::strerror(e)));
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}{:08x}{:08x}", rd(), rd(), rd(), rd());
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    std::string out;
    for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

bool write_fd(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// A relative path that stays inside the directory it is joined to.
bool safe_relative_path(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.find('\n') != std::string_view::npos || p.find('\0') != std::string_view::npos)
    return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    auto end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    auto part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// ---- compressed output -------------------------------------------------------------------

class ZstdWriter {
 public:
  ZstdWriter(int fd, int level, int workers) : fd_(fd), cctx_(ZSTD_createCCtx()), out_(ZSTD_CStreamOutSize()) {
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    if (workers > 0) ZSTD_CCtx_setParameter(cctx_, ZSTD_c_nbWorkers, workers);
  }
  ~ZstdWriter() { ZSTD_freeCCtx(cctx_); }
  ZstdWriter(const ZstdWriter&) = delete;
  ZstdWriter& operator=(const ZstdWriter&) = delete;

  Result<void> write(std::string_view data) { return feed(data, ZSTD_e_continue); }
  Result<void> finish() { return feed({}, ZSTD_e_end); }
  std::uint64_t written() const { return written_; }

 private:
  Result<void> feed(std::string_view data, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    for (;;) {
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      std::size_t left = ZSTD_compressStream2(cctx_, &out, &in, mode);
      if (ZSTD_isError(left)) return fail(Errc::internal, fmt::format("zstd: {}", ZSTD_getErrorName(left)));
      if (out.pos > 0) {
        if (!write_fd(fd_, out_.data(), out.pos)) return fail(Errc::io, fmt::format("writing the backup: {}", std::strerror(errno)));
        written_ += out.pos;
      }
      bool done = mode == ZSTD_e_end ? left == 0 : in.pos == in.size;
      if (done) return ok();
    }
  }

  int fd_;
  ZSTD_CCtx* cctx_;
  std::vector<char> out_;
  std::uint64_t written_ = 0;
};

// ---- compressed input --------------------------------------------------------------------

class ZstdReader {
 public:
  explicit ZstdReader(int fd) : fd_(fd), dctx_(ZSTD_createDCtx()), in_(ZSTD_DStreamInSize()), out_(ZSTD_DStreamOutSize()) {}
  ~ZstdReader() { ZSTD_freeDCtx(dctx_); }
  ZstdReader(const ZstdReader&) = delete;
  ZstdReader& operator=(const ZstdReader&) = delete;

  // Up to n bytes (fewer only at the end of the stream).
  Result<std::size_t> read(char* dst, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      if (out_pos_ < out_len_) {
        std::size_t take = std::min(n - got, out_len_ - out_pos_);
        std::memcpy(dst + got, out_.data() + out_pos_, take);
        out_pos_ += take;
        got += take;
        continue;
      }
      auto more = refill();
      if (!more) return tl::unexpected(more.error());
      if (!*more) break;
    }
    return got;
  }

  Result<std::string> read_line(std::size_t limit = 4096) {
    std::string line;
    char c = 0;
    while (line.size() < limit) {
      auto n = read(&c, 1);
      if (!n) return tl::unexpected(n.error());
      if (*n == 0) return fail(Errc::corrupt, "the backup ends early (truncated: no end record)");
      if (c == '\n') return line;
      line += c;
    }
    return fail(Errc::corrupt, "malformed record (line too long)");
  }

  // True when the stream (and the file) ended exactly at a frame boundary.
  Result<bool> at_clean_end() {
    char c = 0;
    auto n = read(&c, 1);
    if (!n) return tl::unexpected(n.error());
    return *n == 0 && frame_done_;
  }

 private:
  // Decompresses more; false at the end of the input.
  Result<bool> refill() {
    out_pos_ = out_len_ = 0;
    for (;;) {
      if (in_pos_ == in_len_) {
        ssize_t r;
        do r = ::read(fd_, in_.data(), in_.size());
        while (r < 0 && errno == EINTR);
        if (r < 0) return fail(Errc::io, fmt::format("reading the backup: {}", std::strerror(errno)));
        if (r == 0) {
          if (!frame_done_) return fail(Errc::corrupt, "the backup ends early (truncated compressed stream)");
          return false;
        }
        in_len_ = static_cast<std::size_t>(r);
        in_pos_ = 0;
      }
      ZSTD_inBuffer in{in_.data(), in_len_, in_pos_};
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      std::size_t rc = ZSTD_decompressStream(dctx_, &out, &in);
      in_pos_ = in.pos;
      if (ZSTD_isError(rc)) return fail(Errc::corrupt, fmt::format("the compressed stream is damaged ({})", ZSTD_getErrorName(rc)));
      frame_done_ = rc == 0;
      if (out.pos > 0) {
        out_len_ = out.pos;
        return true;
      }
    }
  }

  int fd_;
  ZSTD_DCtx* dctx_;
  std::vector<char> in_;
  std::size_t in_pos_ = 0, in_len_ = 0;
  std::vector<char> out_;
  std::size_t out_pos_ = 0, out_len_ = 0;
  bool frame_done_ = false;
};

// ---- files of a data directory -----------------------------------------------------------

bool excluded(const std::string& rel) {
  static const char* names[] = {"hearth.db", "hearth.db-wal", "hearth.db-shm", "hearth.db-journal",
                                "hearthd.lock", "hearthd.sock", "backup.lock"};
  for (const char* n : names)
    if (rel == n) return true;
  if (rel.rfind(".backup-tmp", 0) == 0 || rel.rfind("status/", 0) == 0 || rel == "status") return true;
  auto base = rel.substr(rel.rfind('/') + 1);
  return base.rfind(".hearth-probe-", 0) == 0;
}

Result<void> list_files(const std::string& root, const std::string& rel, std::vector<std::string>& out) {
  std::string dir = rel.empty() ? root : root + "/" + rel;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return sys_fail("cannot list", dir);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string child = rel.empty() ? name : rel + "/" + name;
    if (excluded(child)) continue;
    struct stat st {};
    if (::lstat((root + "/" + child).c_str(), &st) != 0) continue;  // vanished meanwhile
    if (S_ISDIR(st.st_mode)) {
      if (auto r = list_files(root, child, out); !r) {
        ::closedir(d);
        return r;
      }
    } else if (S_ISREG(st.st_mode)) {
      out.push_back(child);
    }
  }
  ::closedir(d);
  return ok();
}

Result<std::string> hash_file(const std::string& path) {
  Sha256 sha;
  auto r = read_file_chunks(path, kChunk, [&](std::string_view piece) -> Result<void> {
    sha.update(piece.data(), piece.size());
    return ok();
  });
  if (!r) return tl::unexpected(r.error());
  return sha.hex();
}

// Streams one file record; fills `entry` (size, mode, sha256).
Result<std::uint64_t> write_file_record(ZstdWriter& z, const std::string& path, BackupFileEntry& entry) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_fail("cannot open", path);
  struct stat st {};
  ::fstat(fd, &st);
  entry.size = static_cast<std::uint64_t>(st.st_size);
  entry.mode = st.st_mode & 07777;
  auto head = z.write(fmt::format("file {} {:o} {}\n", entry.size, entry.mode, entry.path));
  if (!head) {
    ::close(fd);
    return tl::unexpected(head.error());
  }
  Sha256 sha;
  std::vector<char> buf(kChunk);
  std::uint64_t left = entry.size;
  while (left > 0) {
    ssize_t n = ::read(fd, buf.data(), std::min<std::uint64_t>(left, buf.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : 0;
      ::close(fd);
      if (n == 0) return fail(Errc::io, fmt::format("{} shrank while it was backed up", path));
      return sys_fail("cannot read", path, e);
    }
    sha.update(buf.data(), static_cast<std::size_t>(n));
    if (auto w = z.write({buf.data(), static_cast<std::size_t>(n)}); !w) {
      ::close(fd);
      return tl::unexpected(w.error());
    }
    left -= static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  entry.sha256 = sha.hex();
  if (auto w = z.write(fmt::format("sha256 {}\n", entry.sha256)); !w) return tl::unexpected(w.error());
  return entry.size;
}

// The chunks of a file and their SHA-256s, read and hashed on a thread of its own while
// the caller compresses the previous ones (bench/backup.sh: reading and hashing twice on
// the compressing thread held a backup to a third of a plain copy's speed). At most
// kAhead chunks wait; the destructor stops and joins the thread.
class HashedChunks {
 public:
  struct Chunk {
    std::vector<char> bytes;
    std::string sha256;
  };
  static constexpr std::size_t kAhead = 64;

  HashedChunks(const std::string& path, std::size_t chunk_size)
      : thread_([this, path, chunk_size] { run(path, chunk_size); }) {}
  ~HashedChunks() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  HashedChunks(const HashedChunks&) = delete;
  HashedChunks& operator=(const HashedChunks&) = delete;

  // The next chunk; empty at the end of the file or after a read error (see whole()).
  std::optional<Chunk> next() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return !queue_.empty() || result_; });
    if (queue_.empty()) return std::nullopt;
    Chunk c = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return c;
  }
  // Once next() returned nothing: the SHA-256 of the whole file, or the read's error.
  Result<std::string> whole() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return result_.has_value(); });
    return *result_;
  }

 private:
  void run(const std::string& path, std::size_t chunk_size) {
    Sha256 whole;
    auto r = read_file_chunks(path, chunk_size, [&](std::string_view piece) -> Result<void> {
      whole.update(piece.data(), piece.size());
      Sha256 sha;
      sha.update(piece.data(), piece.size());
      Chunk c{std::vector<char>(piece.begin(), piece.end()), sha.hex()};
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stop_ || queue_.size() < kAhead; });
      if (stop_) return fail(Errc::unavailable, "stopped");
      queue_.push_back(std::move(c));
      cv_.notify_all();
      return ok();
    });
    std::string hex = whole.hex();
    std::lock_guard lock(mutex_);
    result_ = r ? Result<std::string>(std::move(hex)) : Result<std::string>(tl::unexpected(r.error()));
    cv_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;
  bool stop_ = false;
  std::optional<Result<std::string>> result_;  // set when the reading thread is done
  std::thread thread_;                         // last: starts once the members above exist
};

// Writes restored files on a thread of its own, in order, while the caller decompresses
// and hashes the next records (creating thousands of files is most of a restore's time).
// At most kPending bytes wait; the first error is kept, returned by the next push() or by
// drain(), and every later piece is dropped. The destructor stops and joins the thread.
class RestoreWriter {
 public:
  struct Piece {
    std::string path;
    bool open = false;                    // first piece of a record: open (and seek)
    std::optional<std::uint64_t> offset;  // a chunk: where its bytes go (no truncation)
    std::vector<char> bytes;
    bool close = false;                   // last piece of a record: chmod (files), close
    std::uint32_t mode = 0600;
  };
  static constexpr std::size_t kPending = 16 << 20;

  RestoreWriter() : thread_([this] { run(); }) {}
  ~RestoreWriter() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  RestoreWriter(const RestoreWriter&) = delete;
  RestoreWriter& operator=(const RestoreWriter&) = delete;

  Result<void> push(Piece p) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return pending_ < kPending || queue_.empty() || error_.has_value(); });
    if (error_) return tl::unexpected(*error_);
    pending_ += p.bytes.size();
    queue_.push_back(std::move(p));
    cv_.notify_all();
    return ok();
  }
  // Waits until everything pushed is written (and its file closed).
  Result<void> drain() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return (queue_.empty() && !busy_) || error_; });
    if (error_) return tl::unexpected(*error_);
    return ok();
  }

 private:
  void run() {
    int fd = -1;
    std::string path;
    for (;;) {
      Piece p;
      {
        std::unique_lock lock(mutex_);
        busy_ = false;
        cv_.notify_all();
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) break;
        p = std::move(queue_.front());
        queue_.pop_front();
        pending_ -= p.bytes.size();
        busy_ = true;
        if (error_) continue;  // dropped
      }
      cv_.notify_all();
      std::optional<Error> err;
      if (p.open) {
        if (fd >= 0) ::close(fd);
        path = p.path;
        fd = ::open(path.c_str(), O_WRONLY | O_CREAT | (p.offset ? 0 : O_TRUNC) | O_CLOEXEC, 0600);
        if (fd < 0) err = sys_fail("cannot create", path).value();
        else if (p.offset && ::lseek(fd, static_cast<off_t>(*p.offset), SEEK_SET) < 0) err = sys_fail("cannot seek in", path).value();
      }
      if (!err && !write_fd(fd, p.bytes.data(), p.bytes.size())) err = sys_fail("cannot write", path).value();
      if (!err && p.close) {
        if (!p.offset) ::fchmod(fd, p.mode & 0700 ? p.mode : 0600);
        // No fsync per file (thousands of small blobs, incident I08): one syncfs() of the
        // whole tree, before anything is renamed into place.
        int rc = ::close(fd);
        fd = -1;
        if (rc != 0) err = sys_fail("cannot write", path).value();
      }
      if (err) {
        if (fd >= 0) ::close(fd);
        fd = -1;
        std::lock_guard lock(mutex_);
        error_ = std::move(err);
      }
    }
    if (fd >= 0) ::close(fd);
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Piece> queue_;
  std::size_t pending_ = 0;
  bool busy_ = true;  // until the thread first waits
  bool stop_ = false;
  std::optional<Error> error_;
  std::thread thread_;  // last: starts once the members above exist
};

// Streams the chunks of a database snapshot that differ from `previous` (when it has
// chunk hashes of the same chunk size); fills `entry` (size, mode, sha256, chunks).
Result<std::uint64_t> write_chunked_record(ZstdWriter& z, const std::string& path, BackupFileEntry& entry,
                                           const BackupFileEntry* previous, BackupReport& report) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return sys_fail("cannot open", path);
  entry.size = static_cast<std::uint64_t>(st.st_size);
  entry.mode = st.st_mode & 07777;
  entry.chunk_size = previous && previous->chunk_size > 0 ? previous->chunk_size : database_chunk_size(entry.size);
  const std::vector<std::string> none;
  const auto& before = previous && previous->chunk_size == entry.chunk_size ? previous->chunks : none;
  HashedChunks chunks(path, static_cast<std::size_t>(entry.chunk_size));
  std::uint64_t offset = 0, stored = 0;
  entry.included = false;
  while (auto chunk = chunks.next()) {
    const std::size_t size = chunk->bytes.size();
    if (offset + size > entry.size) return fail(Errc::io, fmt::format("{} grew while it was backed up", path));
    const std::size_t index = entry.chunks.size();
    if (index >= before.size() || before[index] != chunk->sha256) {
      if (auto w = z.write(fmt::format("chunk {} {} {}\n", offset, size, entry.path)); !w) return tl::unexpected(w.error());
      if (auto w = z.write({chunk->bytes.data(), size}); !w) return tl::unexpected(w.error());
      if (auto w = z.write(fmt::format("sha256 {}\n", chunk->sha256)); !w) return tl::unexpected(w.error());
      entry.included = true;
      stored += size;
      ++report.database_chunks_included;
    }
    entry.chunks.push_back(std::move(chunk->sha256));
    offset += size;
  }
  auto whole = chunks.whole();
  if (!whole) return tl::unexpected(whole.error());
  if (offset != entry.size) return fail(Errc::io, fmt::format("{} shrank while it was backed up", path));
  report.database_chunks = entry.chunks.size();
  entry.sha256 = std::move(*whole);
  return stored;
}

// The SHA-256 of each chunk of a file.
Result<std::vector<std::string>> hash_chunks(const std::string& path, std::uint64_t chunk_size) {
  std::vector<std::string> out;
  auto r = read_file_chunks(path, chunk_size, [&](std::string_view chunk) -> Result<void> {
    Sha256 sha;
    sha.update(chunk.data(), chunk.size());
    out.push_back(sha.hex());
    return ok();
  });
  if (!r) return tl::unexpected(r.error());
  return out;
}

// syncfs(2) of the filesystem holding `dir`: every file's data and metadata, in one call.
Result<void> syncfs_of(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_fail("open directory", dir);
  int rc = ::syncfs(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) return sys_fail("syncfs", dir, e);
  return ok();
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

}  // namespace

std::uint64_t database_chunk_size(std::uint64_t size) {
  std::uint64_t chunk = kDatabaseChunk;
  while (size / chunk > (1u << 20)) chunk *= 2;
  return chunk;
}

// ---- manifest ----------------------------------------------------------------------------

std::string BackupManifest::to_json() const {
  JsonWriter w;
  w.begin_object()
      .key("format").value(format == 1 ? "hearth-backup/1" : "hearth-backup/2")
      .key("backup_id").value(backup_id)
      .key("parent_id").value(parent_id)
      .key("base_id").value(base_id)
      .key("sequence").value(sequence)
      .key("created_at_ms").value(created_at_ms)
      .key("files").begin_array();
  for (const auto& f : files) {
    w.begin_object().key("path").value(f.path).key("size").value(f.size).key("mode").value(static_cast<std::int64_t>(f.mode))
        .key("sha256").value(f.sha256).key("included").value(f.included);
    if (f.chunk_size > 0) {
      w.key("chunk_size").value(f.chunk_size).key("chunks").begin_array();
      for (const auto& c : f.chunks) w.value(c);
      w.end_array();
    }
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

Result<BackupManifest> BackupManifest::parse(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto bad = [](std::string_view what) { return fail(Errc::corrupt, fmt::format("malformed backup manifest: {}", what)); };
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) return bad("not JSON");
  std::string_view format;
  if (doc["format"].get_string().get(format) != simdjson::SUCCESS) return bad("no format");
  BackupManifest m;
  if (format == "hearth-backup/1") m.format = 1;
  else if (format == "hearth-backup/2") m.format = 2;
  else
    return fail(Errc::corrupt, fmt::format("unsupported backup format {} (this hearthctl reads hearth-backup/1 and "
                                           "hearth-backup/2; restore it with the hearthctl that wrote it)", format));
  std::string_view s;
  if (doc["backup_id"].get_string().get(s) != simdjson::SUCCESS) return bad("no backup_id");
  m.backup_id = s;
  if (doc["parent_id"].get_string().get(s) != simdjson::SUCCESS) return bad("no parent_id");
  m.parent_id = s;
  if (doc["base_id"].get_string().get(s) != simdjson::SUCCESS) return bad("no base_id");
  m.base_id = s;
  std::uint64_t seq = 0;
  std::int64_t created = 0;
  if (doc["sequence"].get_uint64().get(seq) != simdjson::SUCCESS) return bad("no sequence");
  if (doc["created_at_ms"].get_int64().get(created) != simdjson::SUCCESS) return bad("no created_at_ms");
  m.sequence = seq;
  m.created_at_ms = created;
  simdjson::dom::array files;
  if (doc["files"].get_array().get(files) != simdjson::SUCCESS) return bad("no files");
  for (auto f : files) {
    BackupFileEntry e;
    std::int64_t mode = 0;
    if (f["path"].get_string().get(s) != simdjson::SUCCESS) return bad("a file without a path");
    e.path = s;
    if (!safe_relative_path(e.path)) return bad(fmt::format("unsafe path '{}'", e.path));
    if (f["size"].get_uint64().get(e.size) != simdjson::SUCCESS || f["mode"].get_int64().get(mode) != simdjson::SUCCESS ||
        f["sha256"].get_string().get(s) != simdjson::SUCCESS || f["included"].get_bool().get(e.included) != simdjson::SUCCESS)
      return bad(fmt::format("incomplete entry for '{}'", e.path));
    e.sha256 = s;
    e.mode = static_cast<std::uint32_t>(mode) & 07777;
    simdjson::dom::array chunks;
    if (f["chunk_size"].get_uint64().get(e.chunk_size) == simdjson::SUCCESS) {
      if (e.chunk_size < 512 || e.chunk_size > (1u << 30) || (e.chunk_size & (e.chunk_size - 1)) != 0)
        return bad(fmt::format("bad chunk size for '{}'", e.path));
      if (f["chunks"].get_array().get(chunks) != simdjson::SUCCESS) return bad(fmt::format("no chunks for '{}'", e.path));
      for (auto c : chunks) {
        if (c.get_string().get(s) != simdjson::SUCCESS || s.size() != 64) return bad(fmt::format("bad chunk hash for '{}'", e.path));
        e.chunks.emplace_back(s);
      }
      if (e.chunks.size() != (e.size + e.chunk_size - 1) / e.chunk_size)
        return bad(fmt::format("'{}' has {} bytes but {} chunks of {}", e.path, e.size, e.chunks.size(), e.chunk_size));
    }
    m.files.push_back(std::move(e));
  }
  return m;
}

// ---- lock --------------------------------------------------------------------------------

BackupLock& BackupLock::operator=(BackupLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

BackupLock::~BackupLock() {
  if (fd_ >= 0) ::close(fd_);
}

Result<BackupLock> BackupLock::acquire(const std::string& data_dir) {
  std::string path = data_dir + "/backup.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return sys_fail("cannot open the backup lock", path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK)
      return fail(Errc::unavailable, fmt::format("a backup is already running on {} (it holds {}); wait for it to finish",
                                                 data_dir, path));
    return sys_fail("cannot lock", path, e);
  }
  return BackupLock(fd);
}

// ---- snapshots in the daemon -------------------------------------------------------------

SnapshotRunner::~SnapshotRunner() {
  if (thread_.joinable()) thread_.join();
}

Result<void> SnapshotRunner::start(const std::string& path) {
  std::lock_guard lock(mutex_);
  if (running_) return fail(Errc::unavailable, fmt::format("a backup is already running (snapshot to {})", path_));
  if (thread_.joinable()) thread_.join();
  running_ = true;
  path_ = path;
  result_.reset();
  thread_ = std::thread([this, path] {
    Result<void> r = snapshot_(path);
    std::lock_guard lock(mutex_);
    result_ = std::move(r);
    running_ = false;
  });
  return ok();
}

Result<bool> SnapshotRunner::finished(const std::string& path) {
  std::lock_guard lock(mutex_);
  if (path != path_) return fail(Errc::not_found, fmt::format("no snapshot to {} was started", path));
  if (running_) return false;
  if (!*result_) return tl::unexpected(result_->error());
  return true;
}

// ---- backup ------------------------------------------------------------------------------

Result<BackupReport> create_backup(const BackupOptions& o) {
  auto started = std::chrono::steady_clock::now();
  auto lock = BackupLock::acquire(o.data_dir);
  if (!lock) return tl::unexpected(lock.error());
  // Scratch space for the database snapshot; anything in it is left from a killed backup
  // (we hold the lock, so no other backup uses it).
  const std::string tmp = o.scratch_dir.empty() ? o.data_dir + "/" + std::string(kTmpDir) : o.scratch_dir;
  remove_tree(tmp);
  if (::mkdir(tmp.c_str(), 0700) != 0) return sys_fail("cannot create", tmp);
  // hearthd writes the snapshot here as its own user: when root runs the backup, the
  // scratch directory belongs to the data directory's owner.
  struct stat owner {};
  if (::geteuid() == 0 && ::stat(o.data_dir.c_str(), &owner) == 0 && ::chown(tmp.c_str(), owner.st_uid, owner.st_gid) != 0)
    return sys_fail("cannot hand over", tmp);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { remove_tree(dir); }
  } cleanup{tmp};

  // The database snapshot runs on a helper thread (in hearthd when it runs) while the other
  // files go into the stream; the files listed only after the snapshot are added after it,
  // so every file the snapshot refers to (a blob is written before the row naming it) is in
  // the backup. Joined before `cleanup` removes the scratch directory.
  const std::string snapshot = tmp + "/hearth.db";
  Result<void> snapshot_result = ok();
  double snapshot_seconds = 0;
  std::jthread snapshot_thread([&] {
    auto snapshot_started = std::chrono::steady_clock::now();
    snapshot_result = o.snapshot_database(snapshot);
    snapshot_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - snapshot_started).count();
  });

  std::vector<std::string> files;
  if (auto r = list_files(o.data_dir, "", files); !r) return tl::unexpected(r.error());
  std::sort(files.begin(), files.end());

  std::map<std::string, const BackupFileEntry*> previous;  // in the `since` backup
  BackupReport report;
  BackupManifest& m = report.manifest;
  m.backup_id = random_id();
  m.created_at_ms = now_ms();
  if (o.since) {
    m.parent_id = o.since->backup_id;
    m.base_id = o.since->base_id.empty() ? o.since->backup_id : o.since->base_id;
    m.sequence = o.since->sequence + 1;
    for (const auto& f : o.since->files) previous[f.path] = &f;
  } else {
    m.base_id = m.backup_id;
  }

  const bool to_stdout = o.output == "-";
  const std::string partial = o.output + ".partial";
  int fd = to_stdout ? STDOUT_FILENO : ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_fail("cannot create", partial);
  auto fail_out = [&](Error e) -> Result<BackupReport> {
    if (!to_stdout) {
      ::close(fd);
      ::unlink(partial.c_str());
    }
    return tl::unexpected(std::move(e));
  };
  ZstdWriter z(fd, o.zstd_level, o.zstd_workers);
  if (auto w = z.write(kHeader); !w) return fail_out(w.error());

  bool database_resized = false;
  auto add = [&](const std::string& source, const std::string& rel) -> Result<void> {
    BackupFileEntry e;
    e.path = rel;
    auto it = previous.find(rel);
    if (rel == kDatabase) {
      auto n = write_chunked_record(z, source, e, it == previous.end() ? nullptr : it->second, report);
      if (!n) return tl::unexpected(n.error());
      report.bytes_read += *n;
      if (e.included) ++report.files_included;
      else ++report.files_unchanged;
      if (it == previous.end() || it->second->size != e.size) database_resized = true;
      m.files.push_back(std::move(e));
      return ok();
    }
    if (it != previous.end()) {
      auto sha = hash_file(source);
      if (!sha) return tl::unexpected(sha.error());
      if (*sha == it->second->sha256) {
        struct stat st {};
        ::stat(source.c_str(), &st);
        e.size = static_cast<std::uint64_t>(st.st_size);
        e.mode = st.st_mode & 07777;
        e.sha256 = *sha;
        e.included = false;
        ++report.files_unchanged;
        m.files.push_back(std::move(e));
        return ok();
      }
    }
    auto n = write_file_record(z, source, e);
    if (!n) return tl::unexpected(n.error());
    report.bytes_read += *n;
    ++report.files_included;
    m.files.push_back(std::move(e));
    return ok();
  };
  auto add_files = [&](const std::vector<std::string>& rels) -> Result<void> {
    for (const auto& rel : rels) {
      if (!safe_relative_path(rel)) continue;  // a name with a newline: cannot be recorded
      auto r = add(o.data_dir + "/" + rel, rel);
      if (!r && r.error().code == Errc::io && ::access((o.data_dir + "/" + rel).c_str(), F_OK) != 0) continue;  // deleted meanwhile
      if (!r) return r;
    }
    return ok();
  };
  if (auto r = add_files(files); !r) return fail_out(r.error());
  snapshot_thread.join();
  report.snapshot_seconds = snapshot_seconds;
  if (auto& r = snapshot_result; !r)
    return fail_out(Error(r.error().code, fmt::format("database snapshot failed: {}", r.error().message)));
  ::chmod(snapshot.c_str(), 0600);  // restored as the live database: private
  if (auto r = add(snapshot, std::string(kDatabase)); !r) return fail_out(r.error());
  std::vector<std::string> later;  // created while the snapshot ran
  if (auto r = list_files(o.data_dir, "", later); !r) return fail_out(r.error());
  std::sort(later.begin(), later.end());
  std::vector<std::string> added;
  std::set_difference(later.begin(), later.end(), files.begin(), files.end(), std::back_inserter(added));
  if (auto r = add_files(added); !r) return fail_out(r.error());
  std::sort(m.files.begin(), m.files.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  if (o.since && o.discard_if_unchanged && report.files_included == 0 && !database_resized && m.files.size() == o.since->files.size()) {
    report.unchanged = true;
    if (!to_stdout) {
      ::close(fd);
      ::unlink(partial.c_str());
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return report;
  }
  std::string json = m.to_json();
  Sha256 msha;
  msha.update(json.data(), json.size());
  if (auto w = z.write(fmt::format("manifest {}\n{}sha256 {}\nend {}\n", json.size(), json, msha.hex(), m.backup_id)); !w)
    return fail_out(w.error());
  if (auto w = z.finish(); !w) return fail_out(w.error());
  if (!to_stdout) {
    if (::fsync(fd) != 0) return fail_out(Error(Errc::io, fmt::format("fsync {}: {}", partial, std::strerror(errno))));
    ::close(fd);
    if (::rename(partial.c_str(), o.output.c_str()) != 0) {
      int e = errno;
      ::unlink(partial.c_str());
      return sys_fail("cannot rename the backup to", o.output, e);
    }
    std::string dir = fs::path(o.output).parent_path().string();
    if (auto r = fsync_directory(dir.empty() ? "." : dir); !r) return tl::unexpected(r.error());
  } else if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    return fail(Errc::io, fmt::format("fsync of standard output: {}", std::strerror(errno)));
  }
  report.bytes_written = z.written();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

// ---- reading a backup --------------------------------------------------------------------

namespace {

// Reads one backup stream. For each file record calls `on_file(entry, chunk_offset,
// reader)` (chunk_offset: empty for a whole file, else where the chunk's bytes go), which
// must consume exactly entry.size bytes and return their SHA-256; the record's checksum
// line is then compared. Returns the manifest, after checking it against the records.
using FileSink = std::function<Result<std::string>(const BackupFileEntry&, std::optional<std::uint64_t>, ZstdReader&)>;

Result<BackupManifest> read_stream(int fd, const std::string& name, const FileSink& on_file) {
  ZstdReader z(fd);
  auto bad = [&name](std::string_view what) { return fail(Errc::corrupt, fmt::format("{}: {}", name, what)); };
  auto header = z.read_line();
  if (!header) return bad(header.error().message);
  const bool v1 = *header + "\n" == kHeaderV1;
  if (!v1 && *header + "\n" != kHeader) {
    if (header->rfind("HEARTH-BACKUP ", 0) == 0)
      return bad(fmt::format("unsupported backup format version {} (this hearthctl reads versions 1 and 2)",
                             header->substr(14, 16)));
    return bad("not a hearth backup (bad header)");
  }
  std::map<std::string, std::string> seen;  // path -> sha256 of the records
  std::map<std::string, std::map<std::uint64_t, std::pair<std::uint64_t, std::string>>> seen_chunks;  // offset -> size, sha
  std::string current = "(header)";
  for (;;) {
    auto line = z.read_line();
    if (!line) return bad(fmt::format("{} (after {})", line.error().message, current));
    if (line->rfind("file ", 0) == 0) {
      BackupFileEntry e;
      char path_buf[4096] = {};
      unsigned long long size = 0;
      unsigned mode = 0;
      int consumed = 0;
      if (std::sscanf(line->c_str(), "file %llu %o %n", &size, &mode, &consumed) != 2 || consumed <= 0)
        return bad(fmt::format("malformed file record after {}", current));
      (void)path_buf;
      e.path = line->substr(static_cast<std::size_t>(consumed));
      e.size = size;
      e.mode = mode & 07777;
      if (!safe_relative_path(e.path)) return bad(fmt::format("unsafe path '{}'", e.path));
      current = e.path;
      if (seen.count(e.path) || seen_chunks.count(e.path)) return bad(fmt::format("file {} is in the backup twice", e.path));
      auto sha = on_file(e, std::nullopt, z);
      if (!sha) return bad(fmt::format("file {}: {}", e.path, sha.error().message));
      auto sum = z.read_line();
      if (!sum) return bad(fmt::format("file {}: {}", e.path, sum.error().message));
      if (*sum != "sha256 " + *sha)
        return bad(fmt::format("checksum mismatch for file {}: its bytes hash to {}, the backup recorded {}", e.path, *sha,
                               sum->size() > 7 ? sum->substr(7) : *sum));
      seen[e.path] = *sha;
    } else if (!v1 && line->rfind("chunk ", 0) == 0) {
      BackupFileEntry e;
      unsigned long long offset = 0, size = 0;
      int consumed = 0;
      if (std::sscanf(line->c_str(), "chunk %llu %llu %n", &offset, &size, &consumed) != 2 || consumed <= 0 ||
          size > (1u << 30))
        return bad(fmt::format("malformed chunk record after {}", current));
      e.path = line->substr(static_cast<std::size_t>(consumed));
      e.size = size;
      if (!safe_relative_path(e.path)) return bad(fmt::format("unsafe path '{}'", e.path));
      if (seen.count(e.path) || seen_chunks[e.path].count(offset))
        return bad(fmt::format("chunk at {} of {} is in the backup twice", offset, e.path));
      current = fmt::format("chunk at {} of {}", offset, e.path);
      auto sha = on_file(e, offset, z);
      if (!sha) return bad(fmt::format("{}: {}", current, sha.error().message));
      auto sum = z.read_line();
      if (!sum) return bad(fmt::format("{}: {}", current, sum.error().message));
      if (*sum != "sha256 " + *sha)
        return bad(fmt::format("checksum mismatch for the {}: its bytes hash to {}, the backup recorded {}", current, *sha,
                               sum->size() > 7 ? sum->substr(7) : *sum));
      seen_chunks[e.path][offset] = {size, *sha};
    } else if (line->rfind("manifest ", 0) == 0) {
      current = "the manifest";
      std::uint64_t size = std::strtoull(line->c_str() + 9, nullptr, 10);
      if (size > (256u << 20)) return bad("manifest too large");
      std::string json(size, '\0');
      auto n = z.read(json.data(), size);
      if (!n) return bad(n.error().message);
      if (*n != size) return bad("the backup ends early (truncated manifest)");
      Sha256 sha;
      sha.update(json.data(), json.size());
      auto sum = z.read_line();
      if (!sum) return bad(sum.error().message);
      if (*sum != "sha256 " + sha.hex()) return bad("checksum mismatch for the manifest");
      auto m = BackupManifest::parse(json);
      if (!m) return bad(m.error().message);
      auto end = z.read_line();
      if (!end) return bad(end.error().message);
      if (*end != "end " + m->backup_id) return bad("malformed end record");
      auto clean = z.at_clean_end();
      if (!clean) return bad(clean.error().message);
      if (!*clean) return bad("unexpected data after the end record");
      // Every record is in the manifest with the same checksum, and every file the
      // manifest says is included has a record.
      for (const auto& f : m->files) {
        if (f.chunk_size > 0) {
          auto chunks = seen_chunks.find(f.path);
          const bool any = chunks != seen_chunks.end() && !chunks->second.empty();
          if (f.included != any)
            return bad(fmt::format("file {}: the manifest says its chunks are {}in the backup, they are {}", f.path,
                                   f.included ? "" : "not ", any ? "" : "not"));
          if (!any) continue;
          for (const auto& [offset, record] : chunks->second) {
            const std::uint64_t index = offset / f.chunk_size;
            const std::uint64_t want = index < f.chunks.size() ? std::min(f.chunk_size, f.size - index * f.chunk_size) : 0;
            if (offset % f.chunk_size != 0 || index >= f.chunks.size() || record.first != want)
              return bad(fmt::format("the chunk at {} of {} does not fit its manifest ({} bytes in chunks of {})", offset,
                                     f.path, f.size, f.chunk_size));
            if (record.second != f.chunks[index])
              return bad(fmt::format("checksum mismatch for the chunk at {} of {}: the manifest records {}", offset, f.path,
                                     f.chunks[index]));
          }
          seen_chunks.erase(chunks);
          continue;
        }
        auto it = seen.find(f.path);
        if (f.included && it == seen.end()) return bad(fmt::format("file {} is in the manifest but not in the backup", f.path));
        if (it != seen.end() && it->second != f.sha256)
          return bad(fmt::format("checksum mismatch for file {}: the manifest records {}", f.path, f.sha256));
        if (it != seen.end()) seen.erase(it);
      }
      if (!seen.empty()) return bad(fmt::format("file {} is in the backup but not in its manifest", seen.begin()->first));
      for (const auto& [path, chunks] : seen_chunks)
        if (!chunks.empty()) return bad(fmt::format("chunks of {} are in the backup but not in its manifest", path));
      return m;
    } else {
      return bad(fmt::format("malformed record after {}", current));
    }
  }
}

Result<int> open_input(const std::string& path) {
  if (path == "-") return STDIN_FILENO;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_fail("cannot open", path);
  return fd;
}

Result<std::string> skip_bytes(const BackupFileEntry& e, std::optional<std::uint64_t>, ZstdReader& z) {
  Sha256 sha;
  std::vector<char> buf(kChunk);
  std::uint64_t left = e.size;
  while (left > 0) {
    auto n = z.read(buf.data(), std::min<std::uint64_t>(left, buf.size()));
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) return fail(Errc::corrupt, "the backup ends early (truncated file)");
    sha.update(buf.data(), *n);
    left -= *n;
  }
  return sha.hex();
}

}  // namespace

Result<BackupManifest> read_backup_manifest(const std::string& path) {
  auto fd = open_input(path);
  if (!fd) return tl::unexpected(fd.error());
  char first = 0;
  if (path != "-" && ::pread(*fd, &first, 1, 0) == 1 && first == '{') {
    std::string json;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(*fd, buf, sizeof buf)) > 0) json.append(buf, static_cast<std::size_t>(n));
    ::close(*fd);
    return BackupManifest::parse(json);
  }
  auto m = read_stream(*fd, path, skip_bytes);
  if (*fd != STDIN_FILENO) ::close(*fd);
  return m;
}

Result<RestoreReport> restore_backup(const std::vector<std::string>& inputs, const std::string& data_dir_in,
                                     const std::function<void(std::size_t)>& on_verified) {
  auto started = std::chrono::steady_clock::now();
  if (inputs.empty()) return fail(Errc::invalid_argument, "no backup to restore");
  std::string target = fs::absolute(data_dir_in).lexically_normal().string();
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  std::error_code ec;
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target, ec) || !fs::is_empty(target, ec))
      return fail(Errc::already_exists,
                  fmt::format("{} exists and is not empty: restore only builds a new data directory", target));
  }
  std::string parent = fs::path(target).parent_path().string();
  if (!fs::is_directory(parent, ec)) return fail(Errc::not_found, fmt::format("{} does not exist", parent));
  std::string tmpl = parent + "/." + fs::path(target).filename().string() + ".restore-XXXXXX";
  std::vector<char> buf_path(tmpl.begin(), tmpl.end());
  buf_path.push_back('\0');
  if (!::mkdtemp(buf_path.data())) return sys_fail("cannot create a temporary directory like", tmpl);
  const std::string tmp = buf_path.data();
  ::chmod(tmp.c_str(), 0700);
  struct Cleanup {
    std::string dir;
    bool keep = false;
    ~Cleanup() {
      if (!keep) remove_tree(dir);
    }
  } cleanup{tmp};

  Result<void> flushed = ok();
  std::jthread flush;  // the syncfs of the tree; joined before `cleanup` removes it
  RestoreWriter writer;
  RestoreReport report;
  std::map<std::string, std::string> state;  // path -> sha256 now in tmp
  struct ChunkState {
    std::uint64_t chunk_size = 0;
    std::vector<std::string> hashes;  // of the chunks now in tmp
  };
  std::map<std::string, ChunkState> chunk_state;  // chunked files (the database)
  std::optional<BackupManifest> last;
  for (std::size_t input_index = 0; input_index < inputs.size(); ++input_index) {
    const std::string& input = inputs[input_index];
    auto fd = open_input(input);
    if (!fd) return tl::unexpected(fd.error());
    std::map<std::string, std::map<std::uint64_t, std::string>> new_chunks;  // path -> offset -> sha256
    auto sink = [&](const BackupFileEntry& e, std::optional<std::uint64_t> chunk_offset, ZstdReader& z) -> Result<std::string> {
      std::string dest = tmp + "/" + e.path;
      fs::create_directories(fs::path(dest).parent_path(), ec);
      Sha256 sha;
      std::uint64_t left = e.size;
      bool first = true;
      do {
        RestoreWriter::Piece piece{dest, first, chunk_offset, std::vector<char>(std::min<std::uint64_t>(left, kChunk)), false, e.mode};
        if (!piece.bytes.empty()) {
          auto n = z.read(piece.bytes.data(), piece.bytes.size());
          if (!n) return tl::unexpected(n.error());
          if (*n == 0) return fail(Errc::corrupt, "the backup ends early (truncated file)");
          piece.bytes.resize(*n);
          sha.update(piece.bytes.data(), *n);
          left -= *n;
        }
        first = false;
        piece.close = left == 0;
        if (auto w = writer.push(std::move(piece)); !w) return tl::unexpected(w.error());
      } while (left > 0);
      report.bytes_restored += e.size;
      std::string hex = sha.hex();
      if (chunk_offset) {
        new_chunks[e.path][*chunk_offset] = hex;
      } else {
        state[e.path] = hex;
        chunk_state.erase(e.path);  // a whole copy (format 1) replaces the chunks
      }
      return hex;
    };
    auto m = read_stream(*fd, input, sink);
    if (*fd != STDIN_FILENO) ::close(*fd);
    auto written = writer.drain();
    if (!m) return tl::unexpected(m.error());
    if (!written) return tl::unexpected(written.error());
    if (!last && !m->full())
      return fail(Errc::invalid_argument,
                  fmt::format("{} is an incremental backup (sequence {}); restore starts from a full backup", input, m->sequence));
    if (last && m->parent_id != last->backup_id)
      return fail(Errc::invalid_argument,
                  fmt::format("{} does not follow the previous backup (its parent is {}, the previous backup is {}, "
                              "sequence {}); give the backups of one chain in order",
                              input, m->parent_id.empty() ? "none: it is a full backup" : m->parent_id, last->backup_id,
                              last->sequence));
    // Chunked files: this backup's chunks on top of the earlier ones must give exactly the
    // chunks its manifest lists; then the file is cut to its recorded length.
    for (const auto& f : m->files) {
      if (f.chunk_size == 0) continue;
      ChunkState& cs = chunk_state[f.path];
      if (cs.chunk_size != f.chunk_size) {
        if (state.count(f.path)) {  // a whole copy from a format-1 backup: hash it as chunks
          auto hashes = hash_chunks(tmp + "/" + f.path, f.chunk_size);
          if (!hashes) return tl::unexpected(hashes.error());
          cs.hashes = std::move(*hashes);
        } else {
          cs.hashes.clear();
        }
        cs.chunk_size = f.chunk_size;
      }
      cs.hashes.resize(f.chunks.size());
      for (const auto& [offset, sha] : new_chunks[f.path]) cs.hashes[offset / f.chunk_size] = sha;
      for (std::size_t i = 0; i < f.chunks.size(); ++i) {
        if (cs.hashes[i].empty())
          return fail(Errc::corrupt, fmt::format("{}: the chunk at {} of {} is not in this backup nor in the ones before it",
                                                 input, i * f.chunk_size, f.path));
        if (cs.hashes[i] != f.chunks[i])
          return fail(Errc::corrupt, fmt::format("{}: checksum mismatch for the chunk at {} of {} (unchanged since the "
                                                 "previous backup by its manifest, but the restored copy differs)",
                                                 input, i * f.chunk_size, f.path));
      }
      const std::string dest = tmp + "/" + f.path;
      fs::create_directories(fs::path(dest).parent_path(), ec);
      int out = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (out < 0) return sys_fail("cannot create", dest);
      int rc = ::ftruncate(out, static_cast<off_t>(f.size));
      int err = errno;
      ::fchmod(out, f.mode & 0700 ? f.mode : 0600);
      ::close(out);
      if (rc != 0) return sys_fail("cannot truncate", dest, err);
      state[f.path] = f.sha256;  // checked against the whole file once the chain is applied
    }
    // The data directory as of this backup: exactly the files of its manifest.
    std::map<std::string, std::string> wanted;
    for (const auto& f : m->files) wanted[f.path] = f.sha256;
    for (auto it = state.begin(); it != state.end();) {
      if (!wanted.count(it->first)) {
        ::unlink((tmp + "/" + it->first).c_str());
        chunk_state.erase(it->first);
        it = state.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [path, sha] : wanted) {
      auto it = state.find(path);
      if (it == state.end())
        return fail(Errc::corrupt, fmt::format("{}: file {} is not in this backup nor in the ones before it", input, path));
      if (it->second != sha)
        return fail(Errc::corrupt, fmt::format("{}: checksum mismatch for file {} (unchanged since the previous backup "
                                               "by its manifest, but the restored copy differs)", input, path));
    }
    last = std::move(*m);
    // A chunked file is checked whole at the end of the chain (once, not per backup), while
    // a helper thread flushes every restored file's data and metadata (one syncfs).
    if (input_index + 1 == inputs.size()) {
      flush = std::jthread([&tmp, &flushed] { flushed = syncfs_of(tmp); });
      for (const auto& f : last->files) {
        if (f.chunk_size == 0) continue;
        auto sha = hash_file(tmp + "/" + f.path);
        if (!sha) return tl::unexpected(sha.error());
        if (*sha != f.sha256)
          return fail(Errc::corrupt, fmt::format("{}: the rebuilt {} hashes to {}, the manifest records {}", input, f.path,
                                                 *sha, f.sha256));
      }
    }
    if (on_verified) on_verified(input_index);
  }
  report.files = static_cast<int>(state.size());
  if (flush.joinable()) flush.join();
  if (!flushed) return tl::unexpected(flushed.error());
  // Directories: fsync each one holding restored files, then the tree itself.
  std::vector<std::string> dirs{tmp};
  for (auto it = fs::recursive_directory_iterator(tmp, ec); !ec && it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_directory()) {
      ::chmod(it->path().c_str(), 0700);
      dirs.push_back(it->path().string());
    }
  }
  for (auto d = dirs.rbegin(); d != dirs.rend(); ++d)
    if (auto r = fsync_directory(*d); !r) return tl::unexpected(r.error());
  if (fs::exists(target, ec) && ::rmdir(target.c_str()) != 0) return sys_fail("cannot replace the empty directory", target);
  if (::rename(tmp.c_str(), target.c_str()) != 0) return sys_fail("cannot rename the restored directory to", target);
  cleanup.keep = true;
  if (auto r = fsync_directory(parent); !r) return tl::unexpected(r.error());
  report.manifest = std::move(*last);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace hearth::ops
