#include "store/sqlite/coalescing_vfs.h"

#include <sqlite3.h>

#include <cstddef>
#include <mutex>
#include <new>
#include <vector>

namespace hearth::store::sqlite {
namespace {

// The longest run written with one call: SQLite's unix VFS writes at most 128 KiB per
// call (it masks larger sizes), and a run is handed to it in one piece.
constexpr std::size_t kMaxRun = 120 << 10;

struct Pending {
  std::vector<char> bytes;
  sqlite3_int64 offset = 0;
};

// SQLite allocates szOsFile bytes per open file: this struct, then the real file's.
struct File {
  sqlite3_file base;
  sqlite3_file* real;
  Pending* pending;  // null: writes pass straight through
};

constexpr std::size_t kRealOffset = (sizeof(File) + 7) & ~std::size_t{7};

sqlite3_vfs* real_vfs(sqlite3_vfs* vfs) { return static_cast<sqlite3_vfs*>(vfs->pAppData); }
File* as_file(sqlite3_file* f) { return reinterpret_cast<File*>(f); }
const sqlite3_io_methods& real_io(File* f) { return *f->real->pMethods; }

int flush(File* f) {
  if (!f->pending || f->pending->bytes.empty()) return SQLITE_OK;
  auto& p = *f->pending;
  int rc = real_io(f).xWrite(f->real, p.bytes.data(), static_cast<int>(p.bytes.size()), p.offset);
  p.bytes.clear();
  return rc;
}

int file_close(sqlite3_file* file) {
  File* f = as_file(file);
  int flushed = flush(f);
  int rc = real_io(f).xClose(f->real);
  delete f->pending;
  f->pending = nullptr;
  return flushed != SQLITE_OK ? flushed : rc;
}

int file_read(sqlite3_file* file, void* out, int n, sqlite3_int64 offset) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xRead(f->real, out, n, offset);
}

int file_write(sqlite3_file* file, const void* data, int n, sqlite3_int64 offset) {
  File* f = as_file(file);
  if (!f->pending) return real_io(f).xWrite(f->real, data, n, offset);
  auto& p = *f->pending;
  auto size = static_cast<std::size_t>(n);
  if (!p.bytes.empty() &&
      (offset != p.offset + static_cast<sqlite3_int64>(p.bytes.size()) || p.bytes.size() + size > kMaxRun)) {
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  if (size > kMaxRun) return real_io(f).xWrite(f->real, data, n, offset);
  if (p.bytes.empty()) p.offset = offset;
  const char* bytes = static_cast<const char*>(data);
  try {
    p.bytes.insert(p.bytes.end(), bytes, bytes + n);
  } catch (const std::bad_alloc&) {
    p.bytes.clear();  // nothing of this write was kept; the caller sees the error
    return SQLITE_NOMEM;
  }
  return SQLITE_OK;
}

int file_truncate(sqlite3_file* file, sqlite3_int64 size) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xTruncate(f->real, size);
}

int file_sync(sqlite3_file* file, int flags) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xSync(f->real, flags);
}

int file_size(sqlite3_file* file, sqlite3_int64* size) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xFileSize(f->real, size);
}

int file_lock(sqlite3_file* file, int level) { return real_io(as_file(file)).xLock(as_file(file)->real, level); }

int file_unlock(sqlite3_file* file, int level) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xUnlock(f->real, level);
}

int file_check_reserved(sqlite3_file* file, int* out) {
  return real_io(as_file(file)).xCheckReservedLock(as_file(file)->real, out);
}

int file_control(sqlite3_file* file, int op, void* arg) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xFileControl(f->real, op, arg);
}

int file_sector_size(sqlite3_file* file) { return real_io(as_file(file)).xSectorSize(as_file(file)->real); }

int file_device(sqlite3_file* file) {
  return real_io(as_file(file)).xDeviceCharacteristics(as_file(file)->real);
}

// The wal-index (shared memory) is how other connections learn of frames: everything
// buffered is written before any of it is touched.
int file_shm_map(sqlite3_file* file, int page, int size, int extend, void volatile** out) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xShmMap(f->real, page, size, extend, out);
}

int file_shm_lock(sqlite3_file* file, int offset, int n, int flags) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xShmLock(f->real, offset, n, flags);
}

void file_shm_barrier(sqlite3_file* file) {
  File* f = as_file(file);
  (void)flush(f);  // a failure shows at the next sync, which the commit needs
  real_io(f).xShmBarrier(f->real);
}

int file_shm_unmap(sqlite3_file* file, int remove) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xShmUnmap(f->real, remove);
}

int file_fetch(sqlite3_file* file, sqlite3_int64 offset, int n, void** out) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f).xFetch(f->real, offset, n, out);
}

int file_unfetch(sqlite3_file* file, sqlite3_int64 offset, void* p) {
  return real_io(as_file(file)).xUnfetch(as_file(file)->real, offset, p);
}

const sqlite3_io_methods kMethods = {
    3,           file_close,     file_read,      file_write,       file_truncate,    file_sync,
    file_size,   file_lock,      file_unlock,    file_check_reserved, file_control,  file_sector_size,
    file_device, file_shm_map,   file_shm_lock,  file_shm_barrier, file_shm_unmap,   file_fetch,
    file_unfetch,
};

int vfs_open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  File* f = as_file(file);
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kRealOffset);
  f->pending = nullptr;
  sqlite3_vfs* real = real_vfs(vfs);
  int rc = real->xOpen(real, name, f->real, flags, out_flags);
  if (!f->real->pMethods) {
    f->base.pMethods = nullptr;
    return rc;
  }
  // Our methods delegate up to version 3; a smaller real version would lack some of them.
  if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL) && f->real->pMethods->iVersion >= 3) {
    f->pending = new (std::nothrow) Pending;
  }
  if (rc == SQLITE_OK && !f->pending && f->real->pMethods->iVersion < 3) {
    // Not ours to wrap: close it again and let the caller see why.
    f->real->pMethods->xClose(f->real);
    f->base.pMethods = nullptr;
    return SQLITE_CANTOPEN;
  }
  f->base.pMethods = &kMethods;
  return rc;
}

int vfs_delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  return real_vfs(vfs)->xDelete(real_vfs(vfs), name, sync_dir);
}
int vfs_access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return real_vfs(vfs)->xAccess(real_vfs(vfs), name, flags, out);
}
int vfs_full_pathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return real_vfs(vfs)->xFullPathname(real_vfs(vfs), name, n, out);
}
void* vfs_dl_open(sqlite3_vfs* vfs, const char* name) { return real_vfs(vfs)->xDlOpen(real_vfs(vfs), name); }
void vfs_dl_error(sqlite3_vfs* vfs, int n, char* out) { real_vfs(vfs)->xDlError(real_vfs(vfs), n, out); }
void (*vfs_dl_sym(sqlite3_vfs* vfs, void* handle, const char* sym))(void) {
  return real_vfs(vfs)->xDlSym(real_vfs(vfs), handle, sym);
}
void vfs_dl_close(sqlite3_vfs* vfs, void* handle) { real_vfs(vfs)->xDlClose(real_vfs(vfs), handle); }
int vfs_randomness(sqlite3_vfs* vfs, int n, char* out) { return real_vfs(vfs)->xRandomness(real_vfs(vfs), n, out); }
int vfs_sleep(sqlite3_vfs* vfs, int us) { return real_vfs(vfs)->xSleep(real_vfs(vfs), us); }
int vfs_current_time(sqlite3_vfs* vfs, double* out) { return real_vfs(vfs)->xCurrentTime(real_vfs(vfs), out); }
int vfs_last_error(sqlite3_vfs* vfs, int n, char* out) {
  return real_vfs(vfs)->xGetLastError(real_vfs(vfs), n, out);
}
int vfs_current_time64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return real_vfs(vfs)->xCurrentTimeInt64(real_vfs(vfs), out);
}

}  // namespace

const char* coalescing_vfs_name() {
  static constexpr const char* kName = "hearth-coalescing";
  static sqlite3_vfs vfs{};
  static bool registered = false;
  static std::once_flag once;
  std::call_once(once, [] {
    sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
    if (!real || real->iVersion < 2 || !real->xCurrentTimeInt64) return;
    vfs.iVersion = 2;
    vfs.szOsFile = static_cast<int>(kRealOffset) + real->szOsFile;
    vfs.mxPathname = real->mxPathname;
    vfs.zName = kName;
    vfs.pAppData = real;
    vfs.xOpen = vfs_open;
    vfs.xDelete = vfs_delete;
    vfs.xAccess = vfs_access;
    vfs.xFullPathname = vfs_full_pathname;
    vfs.xDlOpen = vfs_dl_open;
    vfs.xDlError = vfs_dl_error;
    vfs.xDlSym = vfs_dl_sym;
    vfs.xDlClose = vfs_dl_close;
    vfs.xRandomness = vfs_randomness;
    vfs.xSleep = vfs_sleep;
    vfs.xCurrentTime = vfs_current_time;
    vfs.xGetLastError = vfs_last_error;
    vfs.xCurrentTimeInt64 = vfs_current_time64;
    registered = sqlite3_vfs_register(&vfs, 0) == SQLITE_OK;
  });
  return registered ? kName : nullptr;
}

}  // namespace hearth::store::sqlite
