#include "core/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace hearth {

namespace {

Error directory_error(std::string_view what, const std::string& dir, int err) {
  Errc code = (err == ENOSPC || err == EDQUOT) ? Errc::resource_exhausted : Errc::io;
  return Error{code, fmt::format("{} directory {}: {}", what, dir, std::strerror(err))};
}

}  // namespace

Result<void> fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return tl::unexpected(directory_error("open", dir, errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return tl::unexpected(directory_error("fsync", dir, err));
  return ok();
}

}  // namespace hearth
