#include "ops/handover.h"

#include <unistd.h>

#include <thread>

#include <fmt/format.h>
#include <simdjson.h>

#include "core/json.h"

namespace hearth::ops {

AdminFdCommand hand_over_listeners_command(net::HttpServer& server, std::function<void()> begin_drain, Logger& log) {
  return [&server, begin_drain = std::move(begin_drain), &log](const AdminArgs&) -> Result<AdminFdResult> {
    auto sockets = server.listening_sockets();
    if (sockets.empty()) return fail(Errc::unavailable, "no listening sockets to hand over");
    if (sockets.size() > kMaxAdminFds) {
      for (auto& s : sockets) ::close(s.fd);
      return fail(Errc::resource_exhausted, fmt::format("{} listeners; at most {} can be handed over", sockets.size(), kMaxAdminFds));
    }
    AdminFdResult out;
    JsonWriter w;
    w.begin_object().key("pid").value(static_cast<std::int64_t>(::getpid())).key("listeners").begin_array();
    for (auto& s : sockets) {
      w.begin_object().key("kind").value(s.kind).key("address").value(s.address).key("port").value(s.port).end_object();
      out.fds.push_back(s.fd);
    }
    w.end_array().end_object();
    out.result_json = w.take();
    out.after_reply = [begin_drain, &log, n = sockets.size()] {
      log.info("hearthd.handed_over", {{"listeners", static_cast<std::int64_t>(n)}});
      begin_drain();
    };
    return out;
  };
}

Result<std::vector<net::ListeningSocket>> take_over_listeners(const std::string& admin_socket) {
  auto call = admin_call_receiving_fds(admin_socket, kTakeoverCommand, {});
  if (!call) return tl::unexpected(call.error());
  auto close_all = [&] {
    for (int fd : call->fds) ::close(fd);
  };
  if (!call->reply.ok) {
    close_all();
    return fail(call->reply.code, call->reply.message);
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::array listeners;
  if (parser.parse(call->reply.result_json).get(doc) != simdjson::SUCCESS ||
      doc["listeners"].get_array().get(listeners) != simdjson::SUCCESS || listeners.size() != call->fds.size()) {
    close_all();
    return fail(Errc::corrupt, "the running hearthd's hand-over reply does not match the descriptors it sent");
  }
  std::vector<net::ListeningSocket> out;
  std::size_t i = 0;
  for (auto item : listeners) {
    std::string_view kind, address;
    std::int64_t port = 0;
    if (item["kind"].get_string().get(kind) != simdjson::SUCCESS ||
        item["address"].get_string().get(address) != simdjson::SUCCESS ||
        item["port"].get_int64().get(port) != simdjson::SUCCESS) {
      for (std::size_t j = i; j < call->fds.size(); ++j) ::close(call->fds[j]);
      for (auto& s : out) ::close(s.fd);
      return fail(Errc::corrupt, "malformed listener in the hand-over reply");
    }
    out.push_back({call->fds[i++], std::string(kind), std::string(address), static_cast<int>(port)});
  }
  return out;
}

Result<DataDirLock> wait_for_data_dir_lock(const std::string& data_dir, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto lock = DataDirLock::acquire(data_dir);
    if (lock || lock.error().code != Errc::unavailable) return lock;
    if (std::chrono::steady_clock::now() >= deadline)
      return fail(Errc::unavailable, fmt::format("the previous hearthd did not release {} within {} s", data_dir,
                                                 timeout.count() / 1000));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // flock has no timed wait
  }
}

}  // namespace hearth::ops
