// Content-addressed file storage for the Matrix media repository: a file's name is the
// hex SHA-256 of its bytes, under <dir>/<first two hex digits>/. Writes go to a temporary
// file in <dir>/tmp, are fsynced, renamed into place and the directory fsynced, so a file
// that exists is complete and durable. Blocking (file I/O): call from worker threads.
//
// Deliberately small (put/get/size): when the shared src/blobs/ module lands, MediaStore
// becomes a thin adapter over it and the media tables keep their sha256 references.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth::matrix {

class MediaStore {
 public:
  explicit MediaStore(std::string dir) : dir_(std::move(dir)) {}
  // Stores the bytes (a no-op when the same content is stored already); the hex SHA-256.
  Result<std::string> put(std::string_view bytes);
  // Where a streamed upload body is staged (net/ writes it there), on the same filesystem.
  std::string staging_dir() const { return dir_ + "/tmp"; }
  // As put(), for a file written under staging_dir(): hashed while read, fsynced, renamed
  // into place (or dropped when the same content is stored already). The staged file is
  // gone afterwards, whatever the outcome.
  Result<std::string> put_file(const std::string& staged_path);
  // The bytes of a stored file; not_found when absent.
  Result<std::string> get(std::string_view sha256_hex) const;

 private:
  std::string path_of(std::string_view sha256_hex) const;
  std::string dir_;
};

}  // namespace hearth::matrix
