#include "core/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

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

Result<void> read_file_chunks(const std::string& path, std::size_t chunk_bytes,
                              const std::function<Result<void>(std::string_view)>& on_chunk) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(Errc::io, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  std::vector<char> buf(chunk_bytes);
  Result<void> result = ok();
  for (bool end = false; !end && result;) {
    std::size_t got = 0;
    while (got < buf.size()) {
      ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int e = errno;
        ::close(fd);
        return fail(Errc::io, fmt::format("cannot read {}: {}", path, std::strerror(e)));
      }
      if (n == 0) {
        end = true;
        break;
      }
      got += static_cast<std::size_t>(n);
    }
    if (got > 0) result = on_chunk(std::string_view(buf.data(), got));
  }
  ::close(fd);
  return result;
}

}  // namespace hearth
