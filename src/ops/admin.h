// The admin API: a Unix socket that hearthctl talks to.
//
// Protocol: the client sends one JSON object on one line,
//   {"command":"user.add","args":{"jid":"alice@localhost","password":"...","admin":true}}
// and the server answers one line,
//   {"ok":true,"result":<command-specific JSON>}  or
//   {"ok":false,"error":{"code":"already_exists","message":"..."}}
// then closes. Argument values are strings, numbers or booleans and reach the command as
// strings ("true"/"false" for booleans).
//
// The socket is created with mode 0600 and every connection's peer credentials are
// checked (SO_PEERCRED): only root and the daemon's own user are served. Requests are
// limited to 64 KiB and 5 s.
//
// Descriptors: the server keeps one spare descriptor (/dev/null). When accept() fails
// because the process ran out of descriptors, it gives the spare up for that admin
// connection and takes it back afterwards, so `hearthctl check` still gets an answer
// while connections exhaust the limit (incident I16).
//
// Threads: AdminServer runs one thread that accepts and serves connections one at a time;
// commands run on it and may block (they are admin operations). start()/stop() from main.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/log.h"

namespace hearth::ops {

using AdminArgs = std::map<std::string, std::string>;
// Returns the result as serialised JSON.
using AdminCommand = std::function<Result<std::string>(const AdminArgs&)>;

// A command whose reply carries descriptors (SCM_RIGHTS on the reply line): the graceful
// restart's hand-over of listening sockets (incident I18). The server sends `fds` with the
// reply, closes them, then runs `after_reply` on the admin thread (even if the client went
// away: the caller decided to hand over when it returned the descriptors).
struct AdminFdResult {
  std::string result_json;
  std::vector<int> fds;  // at most kMaxAdminFds; owned by the server once returned
  std::function<void()> after_reply;
};
using AdminFdCommand = std::function<Result<AdminFdResult>(const AdminArgs&)>;
inline constexpr std::size_t kMaxAdminFds = 16;

class AdminServer {
 public:
  AdminServer(std::string socket_path, Logger& log);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Before start() only.
  void add_command(std::string name, AdminCommand command);
  void add_fd_command(std::string name, AdminFdCommand command);

  // Binds the socket (replacing a stale one left by a crash) and starts serving.
  Result<void> start();
  void stop();
  const std::string& socket_path() const { return path_; }

 private:
  void serve();
  void handle(int fd);

  std::string path_;
  Logger& log_;
  std::map<std::string, AdminCommand> commands_;
  std::map<std::string, AdminFdCommand> fd_commands_;
  int listen_fd_ = -1;
  int spare_fd_ = -1;  // given up for accept() when descriptors run out (incident I16)
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
};

struct AdminReply {
  bool ok = false;
  std::string result_json;  // when ok
  Errc code = Errc::internal;
  std::string message;      // when !ok
};

// Client side. Errc::unavailable when nothing listens on the socket (daemon not running).
// `reply_timeout_ms` bounds the wait for the answer (5 s; longer for a database snapshot).
Result<AdminReply> admin_call(const std::string& socket_path, const std::string& command,
                              const AdminArgs& args, int reply_timeout_ms = 5000);

// Client side of an AdminFdCommand: the reply and the descriptors that came with it
// (close-on-exec, owned by the caller).
struct AdminFdReply {
  AdminReply reply;
  std::vector<int> fds;
};
Result<AdminFdReply> admin_call_receiving_fds(const std::string& socket_path, const std::string& command,
                                              const AdminArgs& args, int reply_timeout_ms = 5000);

// A parsed JSON value reduced to what admin results need: used by hearthctl to print.
// Returns the string value of a top-level key of a JSON object, or "" if absent.
std::string json_field(const std::string& json, const std::string& key);

}  // namespace hearth::ops
