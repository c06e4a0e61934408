#include "ops/admin.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <simdjson.h>

#include "core/json.h"

namespace hearth::ops {
namespace {

constexpr std::size_t kMaxRequest = 64 * 1024;
constexpr int kIoTimeoutMs = 5000;

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path))
    return fail(Errc::invalid_argument, fmt::format("socket path too long ({} bytes, at most {}): {}", path.size(),
                                                    sizeof(addr.sun_path) - 1, path));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Reads until '\n', EOF, the size limit or the deadline. With `fds`, descriptors sent
// along (SCM_RIGHTS) are appended to it.
Result<std::string> read_line(int fd, std::size_t limit, int timeout_ms = kIoTimeoutMs, std::vector<int>* fds = nullptr) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    // Not `unavailable`: that means "nothing listens"; here something does but is stuck.
    if (left <= 0) return fail(Errc::io, "timed out reading from the admin socket");
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) continue;
    ssize_t n;
    if (fds) {
      iovec iov{buf, sizeof buf};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxAdminFds)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (n >= 0)
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
          std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            fds->push_back(received);
          }
        }
    } else {
      n = ::read(fd, buf, sizeof buf);
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Errc::io, fmt::format("admin socket read: {}", std::strerror(errno)));
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
    if (auto nl = out.find('\n'); nl != std::string::npos) {
      out.resize(nl);
      return out;
    }
    if (out.size() > limit) return fail(Errc::resource_exhausted, "admin request larger than 64 KiB");
  }
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Sends `data`, its first bytes carrying `fds` (SCM_RIGHTS).
bool write_all_with_fds(int fd, std::string_view data, const std::vector<int>& fds) {
  if (fds.empty() || fds.size() > kMaxAdminFds) return fds.empty() && write_all(fd, data);
  iovec iov{const_cast<char*>(data.data()), data.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxAdminFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ssize_t n;
  do n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  return write_all(fd, data.substr(static_cast<std::size_t>(n)));
}

std::string error_reply(Errc code, std::string_view message) {
  JsonWriter w;
  w.begin_object().key("ok").value(false).key("error").begin_object()
      .key("code").value(errc_name(code)).key("message").value(message).end_object().end_object();
  return w.take();
}

Errc errc_from_name(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(Errc::internal); ++i)
    if (errc_name(static_cast<Errc>(i)) == name) return static_cast<Errc>(i);
  return Errc::internal;
}

}  // namespace

AdminServer::AdminServer(std::string socket_path, Logger& log) : path_(std::move(socket_path)), log_(log) {}

AdminServer::~AdminServer() { stop(); }

void AdminServer::add_command(std::string name, AdminCommand command) { commands_[std::move(name)] = std::move(command); }
void AdminServer::add_fd_command(std::string name, AdminFdCommand command) {
  fd_commands_[std::move(name)] = std::move(command);
}

Result<void> AdminServer::start() {
  auto addr = unix_address(path_);
  if (!addr) return tl::unexpected(addr.error());
  // A socket file left by a crashed daemon: nothing can be listening on it, since the
  // data-directory lock proves no other daemon runs.
  ::unlink(path_.c_str());
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return fail(Errc::io, fmt::format("admin socket: {}", std::strerror(errno)));
  mode_t old = ::umask(0177);  // the socket is born 0600, never briefly world-accessible
  int rc = ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  ::umask(old);
  if (rc != 0 || ::chmod(path_.c_str(), 0600) != 0 || ::listen(listen_fd_, 16) != 0) {
    int e = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    return fail(Errc::io, fmt::format("cannot listen on admin socket {}: {}", path_, std::strerror(e)));
  }
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) return fail(Errc::io, "pipe2 failed");
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  thread_ = std::thread([this] { serve(); });
  log_.info("admin.listening", {{"socket", path_}});
  return ok();
}

void AdminServer::stop() {
  if (thread_.joinable()) {
    char c = 'x';
    [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    ::unlink(path_.c_str());
  }
  for (int& fd : wake_pipe_)
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  if (spare_fd_ >= 0) {
    ::close(spare_fd_);
    spare_fd_ = -1;
  }
}

void AdminServer::serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    int rc = ::poll(fds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      log_.error("admin.poll_failed", {{"error", std::strerror(errno)}});
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
      // Out of descriptors: the spare one is for exactly this (incident I16).
      ::close(spare_fd_);
      spare_fd_ = -1;
      fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) log_.warn("admin.spare_descriptor_used", {});
    }
    if (fd < 0) {
      if (spare_fd_ < 0) spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (errno == EMFILE || errno == ENFILE) ::poll(nullptr, 0, 100);  // do not spin
      continue;
    }
    handle(fd);
    ::close(fd);
    if (spare_fd_ < 0) spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
}

void AdminServer::handle(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && cred.uid != ::getuid())) {
    log_.warn("admin.refused", {{"uid", static_cast<long>(cred.uid)}});
    write_all(fd, error_reply(Errc::permission_denied, "only root and the daemon's user may use the admin socket") + "\n");
    return;
  }
  auto line = read_line(fd, kMaxRequest);
  if (!line) {
    write_all(fd, error_reply(line.error().code, line.error().message) + "\n");
    return;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view command;
  AdminArgs args;
  if (parser.parse(*line).get(doc) != simdjson::SUCCESS || doc["command"].get_string().get(command) != simdjson::SUCCESS) {
    write_all(fd, error_reply(Errc::invalid_argument, "expected {\"command\":...,\"args\":{...}}") + "\n");
    return;
  }
  simdjson::dom::object arg_obj;
  if (doc["args"].get_object().get(arg_obj) == simdjson::SUCCESS) {
    for (auto [k, v] : arg_obj) {
      std::string value;
      if (v.is_string()) value = std::string(v.get_string().value());
      else if (v.is_bool()) value = v.get_bool().value() ? "true" : "false";
      else if (v.is_int64()) value = std::to_string(v.get_int64().value());
      else if (v.is_double()) value = fmt::format("{}", v.get_double().value());
      else continue;
      args[std::string(k)] = std::move(value);
    }
  }
  if (auto fit = fd_commands_.find(std::string(command)); fit != fd_commands_.end()) {
    auto result = fit->second(args);
    log_.info("admin.command", {{"command", command}, {"ok", static_cast<bool>(result)}});
    if (!result) {
      write_all(fd, error_reply(result.error().code, result.error().message) + "\n");
      return;
    }
    std::string reply = "{\"ok\":true,\"result\":" + (result->result_json.empty() ? std::string("null") : result->result_json) + "}\n";
    if (!write_all_with_fds(fd, reply, result->fds)) log_.warn("admin.reply_failed", {{"command", command}});
    for (int f : result->fds) ::close(f);
    if (result->after_reply) result->after_reply();
    return;
  }
  auto it = commands_.find(std::string(command));
  std::string reply;
  if (it == commands_.end()) {
    reply = error_reply(Errc::not_found, fmt::format("unknown admin command '{}'", command));
  } else {
    auto result = it->second(args);
    if (result) {
      reply = "{\"ok\":true,\"result\":" + (result->empty() ? std::string("null") : *result) + "}";
    } else {
      reply = error_reply(result.error().code, result.error().message);
    }
    log_.info("admin.command", {{"command", command}, {"ok", static_cast<bool>(result)}});
  }
  write_all(fd, reply + "\n");
}

namespace {
Result<AdminReply> call(const std::string& socket_path, const std::string& command, const AdminArgs& args,
                        int reply_timeout_ms, std::vector<int>* fds) {
  auto addr = unix_address(socket_path);
  if (!addr) return tl::unexpected(addr.error());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(Errc::io, std::strerror(errno));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    int e = errno;
    ::close(fd);
    if (e == ENOENT || e == ECONNREFUSED)
      return fail(Errc::unavailable, fmt::format("hearthd is not running (nothing listens on {})", socket_path));
    return fail(Errc::io, fmt::format("cannot connect to {}: {}", socket_path, std::strerror(e)));
  }
  JsonWriter w;
  w.begin_object().key("command").value(command).key("args").begin_object();
  for (const auto& [k, v] : args) w.key(k).value(v);
  w.end_object().end_object();
  if (!write_all(fd, w.str() + "\n")) {
    ::close(fd);
    return fail(Errc::io, "cannot send to the admin socket");
  }
  auto line = read_line(fd, 16 * 1024 * 1024, reply_timeout_ms, fds);
  ::close(fd);
  if (!line) return tl::unexpected(line.error());
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(*line).get(doc) != simdjson::SUCCESS) return fail(Errc::corrupt, "malformed reply from hearthd");
  AdminReply reply;
  bool ok_flag = false;
  if (doc["ok"].get_bool().get(ok_flag) != simdjson::SUCCESS) return fail(Errc::corrupt, "malformed reply from hearthd");
  reply.ok = ok_flag;
  if (ok_flag) {
    reply.result_json = simdjson::minify(doc["result"]);
  } else {
    std::string_view code, message;
    if (doc["error"]["code"].get_string().get(code) != simdjson::SUCCESS) code = "internal";
    if (doc["error"]["message"].get_string().get(message) != simdjson::SUCCESS) message = "malformed error reply";
    reply.code = errc_from_name(code);
    reply.message = std::string(message);
  }
  return reply;
}

}  // namespace

Result<AdminReply> admin_call(const std::string& socket_path, const std::string& command, const AdminArgs& args,
                              int reply_timeout_ms) {
  return call(socket_path, command, args, reply_timeout_ms, nullptr);
}

Result<AdminFdReply> admin_call_receiving_fds(const std::string& socket_path, const std::string& command,
                                              const AdminArgs& args, int reply_timeout_ms) {
  AdminFdReply out;
  auto reply = call(socket_path, command, args, reply_timeout_ms, &out.fds);
  if (!reply) {
    for (int f : out.fds) ::close(f);
    return tl::unexpected(reply.error());
  }
  out.reply = std::move(*reply);
  return out;
}

std::string json_field(const std::string& json, const std::string& key) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json).get(doc) != simdjson::SUCCESS) return {};
  simdjson::dom::element v;
  if (doc[key].get(v) != simdjson::SUCCESS) return {};
  if (v.is_string()) return std::string(v.get_string().value());
  return simdjson::minify(v);
}

}  // namespace hearth::ops
