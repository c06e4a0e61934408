// CryptPad files (private to the module): the upload protocol and the encrypted blobs it
// stores, kept in the core file store (blobs/) under CryptPad's client-chosen 48-hex ids.
//
// An upload belongs to one user key at a time:
//   UPLOAD_STATUS {size}  declares the size (checked against the per-file limit and the
//                         key's free quota); `true` while an earlier upload is unfinished;
//   UPLOAD_COOKIE         (POST /api/auth) a one-use cookie, valid 5 minutes;
//   POST /upload-blob     each chunk, signed over the cookie; appended to a staging file
//                         under blobs' staging dir and fsynced before the new cookie is
//                         answered; a chunk that would pass the declared size fails
//                         (E_OVER_LIMIT) and drops the upload;
//   UPLOAD_COMPLETE id /  the staged bytes must be exactly the declared size; then the
//   OWNED_UPLOAD_COMPLETE file goes into blobs/ (owner "cryptpad:<key>") and the id row
//                         is committed; any failure removes the staged file;
//   UPLOAD_CANCEL         drops the staged file.
// Upload states live in memory (an upload cut by a restart is started again by the
// client); the staged files of such uploads are removed by blobs' open(). States without
// a staged file and a live cookie are forgotten, and uploads idle for an hour are dropped
// with their staged file, so the table stays bounded by the uploads in progress.
//
// Thread-safe; blocking (disk and store), called on net's worker pool.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <tl/expected.hpp>

#include "core/error.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}
namespace hearth::blobs {
class BlobStore;
}

namespace hearth::cryptpad {

struct StoredFile {
  std::string id;     // 48 hex
  std::string ref;    // the blobs/ reference
  std::string uploader;
  std::vector<std::string> owners;
  std::int64_t size = 0;
  std::int64_t created = 0;
  std::optional<std::string> archived;  // reason while archived by an admin (not served)
};

class CryptpadFiles {
 public:
  // `blobs` may be null: uploads then fail with E_NO_STORAGE and no file exists.
  CryptpadFiles(store::Store& store, Clock& clock, blobs::BlobStore* blobs, std::int64_t max_upload_bytes);

  // True for 48 lowercase hex characters.
  static bool is_file_id(std::string_view id);

  // UPLOAD_STATUS: `free` is the key's quota minus its usage. true = an upload is pending.
  tl::expected<bool, std::string> status(const std::string& key, std::int64_t size, std::int64_t free);
  void cancel(const std::string& key);
  std::string new_cookie(const std::string& key);
  // One chunk of the key's upload; answers the next cookie.
  tl::expected<std::string, std::string> append_chunk(const std::string& key, const std::string& cookie,
                                                      std::string_view bytes);
  // The legacy websocket UPLOAD (cookie-checked by the RPC layer); answers the chunk size.
  tl::expected<std::int64_t, std::string> append_ws(const std::string& key, std::string_view bytes);
  tl::expected<std::string, std::string> complete(const std::string& key, const std::string& id, bool owned);

  Result<std::optional<StoredFile>> find(const std::string& id);
  Result<std::string> read(const StoredFile& f);
  // Where the file's bytes are (for serving them from disk in chunks); as read() otherwise.
  Result<std::string> path_of(const StoredFile& f);
  // Admin archival (reason) or restoration (nullopt); the bytes stay in blobs/ meanwhile.
  tl::expected<void, std::string> set_archived(const std::string& id, std::optional<std::string> reason);
  // Removes a blob its owner (or, for an unowned blob, nobody) asked to remove.
  tl::expected<void, std::string> remove_owned(const std::string& key, const std::string& id);

 private:
  struct Upload {
    std::mutex mu;               // held across the disk work of one step
    std::int64_t declared = -1;  // from UPLOAD_STATUS; -1: none
    std::int64_t received = 0;
    std::string stage;           // staging file path, "" before the first chunk
    std::string cookie;
    std::int64_t cookie_ms = 0;
    std::int64_t last_ms = 0;    // last step; an upload idle for an hour is dropped
  };
  tl::expected<std::int64_t, std::string> append_locked(Upload& u, std::string_view bytes);
  void drop_locked(Upload& u);

  store::Store& store_;
  Clock& clock_;
  blobs::BlobStore* blobs_;
  std::int64_t max_upload_bytes_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Upload>> uploads_;  // by key
  std::shared_ptr<Upload> upload_of(const std::string& key);
};

}  // namespace hearth::cryptpad
