// Private to store/sqlite: a VFS for the writer connection that joins the write calls
// SQLite makes to a WAL file into one call per run of adjacent bytes.
//
// SQLite writes each WAL frame with two calls (a 24-byte header, then the page), so a
// group commit of 150 pages makes 300 write calls. This VFS keeps adjacent writes to a WAL
// file in a buffer and writes them with one call before anything that could observe them:
// a sync, read, size query, truncation, close, or any shared-memory (wal-index) operation,
// which is how other connections learn of new frames. SQLite never relies on a write
// before the sync that follows it, so durability and crash behaviour are unchanged; the
// bytes, their order and their offsets are the same. Other files pass straight through.
#pragma once

namespace hearth::store::sqlite {

// Registers the VFS (once, not as the default) on top of SQLite's default VFS and returns
// its name for sqlite3_open_v2; nullptr if it could not be registered.
const char* coalescing_vfs_name();

}  // namespace hearth::store::sqlite
