// File helpers for code that reads and writes files itself (blobs, backups, the replica).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth {

// fsync of a directory, so that a rename or a new entry in it survives a power cut.
// resource_exhausted when the disk or quota is full, io otherwise.
Result<void> fsync_directory(const std::string& dir);

// Reads a file from the start in pieces of `chunk_bytes` (only the last one may be
// shorter) and hands each to `on_chunk`, stopping at its first error. io errors name the
// file ("cannot open <path>: ...", "cannot read <path>: ...").
Result<void> read_file_chunks(const std::string& path, std::size_t chunk_bytes,
                              const std::function<Result<void>(std::string_view)>& on_chunk);

}  // namespace hearth
