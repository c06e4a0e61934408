// The thumbnail worker process and the parent side that runs it.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "thumbnail/thumbnail.h"

extern char** environ;

namespace hearth::thumbnail {

namespace {

constexpr std::size_t kMaxOutputBytes = 16u << 20;

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Only what decoding from stdin and writing to stdout needs; anything else kills the process.
bool install_seccomp() {
#if defined(__x86_64__)
  constexpr std::uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
  const int allowed[] = {SYS_read, SYS_write, SYS_exit, SYS_exit_group, SYS_brk, SYS_mmap, SYS_munmap, SYS_mremap,
                         SYS_madvise, SYS_rt_sigreturn, SYS_futex, SYS_close, SYS_fstat, SYS_newfstatat, SYS_lseek,
                         SYS_rt_sigprocmask, SYS_getpid, SYS_gettid, SYS_tgkill};  // the last three: abort()
  std::vector<int> allowed_calls(std::begin(allowed), std::end(allowed));
#if defined(__SANITIZE_ADDRESS__)
  // The sanitizer runtime sets up alternate signal stacks and maps shadow memory lazily.
  for (int nr : {SYS_sigaltstack, SYS_mprotect, SYS_prlimit64, SYS_sched_yield}) allowed_calls.push_back(nr);
#endif
  std::vector<sock_filter> prog;
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  for (int nr : allowed_calls) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == 0;
}

void limit(int resource, rlim_t value) {
  rlimit r{value, value};
  setrlimit(resource, &r);
}

}  // namespace

int run_worker(int argc, char** argv) {
  if (argc < 5) return 2;
  int want_w = std::atoi(argv[2]), want_h = std::atoi(argv[3]);
  Method method = std::strcmp(argv[4], "crop") == 0 ? Method::crop : Method::scale;
  if (want_w < 1 || want_h < 1 || want_w > kMaxSide || want_h > kMaxSide) return 2;
  ::close_range(3, ~0U, 0);  // nothing of hearthd's: no sockets, no database
  limit(RLIMIT_CPU, 10);
  limit(RLIMIT_FSIZE, 0);
  limit(RLIMIT_NOFILE, 8);
#if !defined(__SANITIZE_ADDRESS__)
  limit(RLIMIT_AS, rlim_t{1} << 30);  // ASan reserves far more address space than it uses
#endif
  // Read everything before the filter (it is the same read call, but keeps the limit check
  // simple), then decode under the filter.
  std::string input;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 3;
    if (n == 0) break;
    input.append(buf, static_cast<std::size_t>(n));
    if (input.size() > kMaxInputBytes) return 4;
  }
  if (!install_seccomp()) return 5;
  auto img = decode(input);
  if (!img) ::_exit(6);
  std::string().swap(input);
  Image thumb = resize(*img, want_w, want_h, method);
  auto out = img->channels == 4 ? encode_png(thumb) : encode_jpeg(thumb);
  if (!out) return 7;
  // _exit: no atexit handlers (a sanitizer's leak check would need calls the filter forbids).
  ::_exit(write_all(1, out->data(), out->size()) ? 0 : 8);
}

Result<Thumbnail> make_thumbnail(const std::string& exe, std::string_view image, int width, int height, Method method,
                                 int timeout_ms) {
  std::string_view type = sniff(image);
  if (type.empty()) return fail(Errc::invalid_argument, "not a PNG or JPEG image");
  if (image.size() > kMaxInputBytes) return fail(Errc::invalid_argument, "image too large for a thumbnail");
  width = std::clamp(width, 1, kMaxSide);
  height = std::clamp(height, 1, kMaxSide);
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return fail(Errc::unavailable, "pipe failed");
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return fail(Errc::unavailable, "pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  std::string w = std::to_string(width), h = std::to_string(height);
  std::string m = method == Method::crop ? "crop" : "scale";
  char* args[] = {const_cast<char*>("hearthd"), const_cast<char*>("--thumbnail-worker"), w.data(), h.data(), m.data(),
                  nullptr};
  char* env[] = {nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, args, env);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    return fail(Errc::unavailable, "cannot start the thumbnail worker");
  }
  // Feed the input and collect the output together (poll), within the deadline.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  std::size_t sent = 0;
  std::string result;
  bool failed = false, in_open = true;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      failed = true;
      break;
    }
    pollfd fds[2] = {{out[0], POLLIN, 0}, {in_open ? in[1] : -1, POLLOUT, 0}};
    int n = poll(fds, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failed = true;
      break;
    }
    if (in_open && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t wrote = ::write(in[1], image.data() + sent, std::min<std::size_t>(image.size() - sent, 65536));
      if (wrote > 0) sent += static_cast<std::size_t>(wrote);
      if (wrote < 0 && errno != EAGAIN && errno != EINTR) sent = image.size();  // the worker stopped reading
      if (sent == image.size()) {
        close(in[1]);
        in_open = false;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[65536];
      ssize_t got = ::read(out[0], buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;  // the worker finished
      result.append(buf, static_cast<std::size_t>(got));
      if (result.size() > kMaxOutputBytes) {
        failed = true;
        break;
      }
    }
  }
  if (in_open) close(in[1]);
  close(out[0]);
  if (failed) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (failed) return fail(Errc::unavailable, "the thumbnail worker ran out of time or output");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 6) return fail(Errc::invalid_argument, "the image cannot be decoded");
    return fail(Errc::unavailable, "the thumbnail worker failed");
  }
  return Thumbnail{type == "image/png" ? "image/png" : "image/jpeg", std::move(result)};
}

}  // namespace hearth::thumbnail
