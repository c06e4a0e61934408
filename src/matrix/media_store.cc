#include "matrix/media_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/random.h"
#include "matrix/events.h"

namespace hearth::matrix {

namespace {

std::string to_hex(std::string_view raw) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

Result<void> fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return fail(Errc::io, fmt::format("open {}: {}", path, std::strerror(errno)));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return fail(Errc::io, fmt::format("fsync {}: {}", path, std::strerror(errno)));
  return ok();
}

}  // namespace

std::string MediaStore::path_of(std::string_view hex) const {
  return fmt::format("{}/{}/{}", dir_, hex.substr(0, 2), hex);
}

Result<std::string> MediaStore::put(std::string_view bytes) {
  std::string hex = to_hex(sha256(bytes));
  std::string final_path = path_of(hex);
  std::error_code ec;
  if (std::filesystem::exists(final_path, ec)) return hex;
  std::string tmp_dir = dir_ + "/tmp", sub = dir_ + "/" + hex.substr(0, 2);
  std::filesystem::create_directories(tmp_dir, ec);
  std::filesystem::create_directories(sub, ec);
  if (ec) return fail(Errc::io, fmt::format("create {}: {}", sub, ec.message()));
  std::string tmp = tmp_dir + "/" + random_hex(12);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::io, fmt::format("open {}: {}", tmp, std::strerror(errno)));
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return fail(err == ENOSPC ? Errc::resource_exhausted : Errc::io, fmt::format("write {}: {}", tmp, std::strerror(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("fsync {}: {}", tmp, std::strerror(err)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("rename {}: {}", final_path, std::strerror(err)));
  }
  if (auto r = fsync_path(sub, O_RDONLY | O_DIRECTORY); !r) return tl::unexpected(r.error());
  return hex;
}

Result<std::string> MediaStore::put_file(const std::string& staged_path) {
  struct Unlink {
    const std::string& path;
    ~Unlink() { ::unlink(path.c_str()); }
  } unlink_staged{staged_path};
  int fd = ::open(staged_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(Errc::io, fmt::format("open {}: {}", staged_path, std::strerror(errno)));
  crypto_hash_sha256_state hash;
  crypto_hash_sha256_init(&hash);
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return fail(Errc::io, fmt::format("read {}", staged_path));
    }
    if (n == 0) break;
    crypto_hash_sha256_update(&hash, reinterpret_cast<const unsigned char*>(buf), static_cast<unsigned long long>(n));
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return fail(Errc::io, fmt::format("fsync {}: {}", staged_path, std::strerror(err)));
  std::string digest(crypto_hash_sha256_BYTES, '\0');
  crypto_hash_sha256_final(&hash, reinterpret_cast<unsigned char*>(digest.data()));
  std::string hex = to_hex(digest);
  std::string final_path = path_of(hex);
  std::error_code ec;
  if (std::filesystem::exists(final_path, ec)) return hex;
  std::string sub = dir_ + "/" + hex.substr(0, 2);
  std::filesystem::create_directories(sub, ec);
  if (ec) return fail(Errc::io, fmt::format("create {}: {}", sub, ec.message()));
  if (::rename(staged_path.c_str(), final_path.c_str()) != 0)
    return fail(Errc::io, fmt::format("rename {}: {}", final_path, std::strerror(errno)));
  if (auto r = fsync_path(sub, O_RDONLY | O_DIRECTORY); !r) return tl::unexpected(r.error());
  return hex;
}

Result<std::string> MediaStore::get(std::string_view hex) const {
  if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string_view::npos)
    return fail(Errc::not_found, "no such media");
  std::string path = path_of(hex);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno == ENOENT ? Errc::not_found : Errc::io, fmt::format("open {}", path));
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return fail(Errc::io, fmt::format("read {}", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace hearth::matrix
