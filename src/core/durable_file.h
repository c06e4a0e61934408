// Durability helpers for code that writes files itself (blobs, backups, the replica).
#pragma once

#include <string>

#include "core/error.h"

namespace hearth {

// fsync of a directory, so that a rename or a new entry in it survives a power cut.
// resource_exhausted when the disk or quota is full, io otherwise.
Result<void> fsync_directory(const std::string& dir);

}  // namespace hearth
