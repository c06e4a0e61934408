// hearth::blobs — the file store shared by the protocols (XEP-0363 uploads, CryptPad blobs,
// Matrix media).
//
// Files are content-addressed: the bytes of an upload are written to a temporary file,
// fsynced, hashed (SHA-256) and renamed to <dir>/<ab>/<rest of the hash>, then the directory
// is fsynced; only then is the reference row committed and the upload acknowledged. Many
// references (each with its own owner, name, type and expiry) may share one file; the file
// is deleted when its last reference goes. No file per message, no partial file is ever
// visible under its final name.
//
// Limits: a per-file maximum, and a per-owner quota over any 24 hours (I12); both checked
// again inside the transaction that adds the reference, so concurrent uploads cannot pass
// the quota together. Expired references are purged in small batches (purge_expired).
//
// Blocking (disk and store); thread-safe. Schema: module "blobs" (table blobs_ref).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}

namespace hearth::blobs {

struct BlobOptions {
  std::string dir;                                  // e.g. <data_dir>/blobs
  std::int64_t max_file_bytes = 100LL << 20;        // per file
  std::int64_t daily_quota_bytes = 200LL << 20;     // per owner over 24 hours
};

struct Blob {
  std::string id;  // the reference: random, unguessable
  std::string hash;  // SHA-256 hex of the bytes
  std::string owner, name, content_type;
  std::int64_t size = 0, created_ms = 0, expires_ms = 0;  // expires_ms 0: never
};

class BlobStore {
 public:
  BlobStore(store::Store& store, Clock& clock, BlobOptions options);
  // Applies the "blobs" migrations and creates the directory (blocking; at start-up).
  Result<void> open();

  const BlobOptions& options() const { return options_; }

  // Bytes an owner stored over the last 24 hours.
  Result<std::int64_t> used_today(std::string_view owner);
  // Stores `bytes` durably. invalid_argument past max_file_bytes; resource_exhausted when
  // the owner's daily quota would be exceeded (nothing is kept then); read_only / io errors
  // from the disk.
  Result<Blob> put(std::string_view owner, std::string_view name, std::string_view content_type, std::string_view bytes,
                   std::int64_t expires_ms);
  // Where callers stage a file they write piece by piece (CryptPad's chunked uploads)
  // before put_file; on the store's filesystem, emptied at open().
  std::string staging_dir() const { return options_.dir + "/tmp"; }
  // As put(), for a file the caller wrote under staging_dir() (a streamed HTTP body, a
  // chunked upload): it is hashed while read and fsynced, then renamed into place (or
  // dropped when the same bytes are stored already). The staged file is gone afterwards,
  // whatever the outcome.
  Result<Blob> put_file(std::string_view owner, std::string_view name, std::string_view content_type,
                        const std::string& staged_path, std::int64_t expires_ms);
  // As put_file, for bytes an owner stored before elsewhere (a migration into this store):
  // neither limit applies, the reference keeps `created_ms` and takes the caller's `id`.
  // Idempotent: when a reference with that id exists already it is returned as it is (a
  // migration interrupted after this call and run again).
  Result<Blob> import_file(std::string_view id, std::string_view owner, std::string_view name,
                           std::string_view content_type, const std::string& staged_path, std::int64_t created_ms,
                           std::int64_t expires_ms);
  // nullopt when unknown or expired.
  Result<std::optional<Blob>> get(std::string_view id);
  // Removes one reference (and the file when no other reference names it).
  Result<void> remove(std::string_view id);
  // The file's bytes.
  Result<std::string> read(const Blob& blob);
  // Deletes at most `batch` expired references (and the files no reference names any
  // more); returns how many references went.
  Result<std::int64_t> purge_expired(std::int64_t now_ms, int batch);
  // Removes every reference an owner holds (account deleted).
  Result<void> forget_owner(std::string_view owner);

  std::string path_of(std::string_view hash) const;

 private:
  Result<void> drop_unreferenced(const std::string& hash);
  // Hashes, fsyncs and renames a staged file into place; fills b.hash and b.size.
  Result<void> store_staged(Blob& b, const std::string& staged_path, bool metered);
  Result<Blob> add_reference(Blob b, bool metered);

  store::Store& store_;
  Clock& clock_;
  BlobOptions options_;
};

}  // namespace hearth::blobs
