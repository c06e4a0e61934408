// Graceful restart (incident I18): a new hearthd takes over a running one's listening
// sockets, and the old one drains.
//
// The sequence, started by `hearthd --takeover` (the successor):
//  1. The successor asks the running daemon over the admin socket (`takeover.listeners`)
//     for its listening sockets; they come back with the reply (SCM_RIGHTS) together with
//     what each one is (kind, address, port).
//  2. Right after replying, the predecessor begins its drain (`begin_drain`): its acceptors
//     close (its own descriptors only: the sockets stay open and listening in the
//     successor), parked Matrix /sync long-polls are answered, XMPP streams are told to
//     reconnect, requests in flight finish, acknowledged writes are already durable. It then
//     closes the store and exits, releasing the data-directory lock.
//  3. The successor waits for that lock (the data directory has one writer process at a
//     time: the store's writer thread, caches and sequence counters are per process), then
//     opens the store and serves on the inherited sockets.
// Between 2 and 3 nobody calls accept(): connections wait in the kernel's listen backlog,
// so a client sees a delay, never a refused connection.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "net/net.h"
#include "ops/admin.h"
#include "ops/system.h"

namespace hearth::ops {

inline constexpr const char* kTakeoverCommand = "takeover.listeners";

// Predecessor side: the admin command that hands `server`'s listening sockets over and
// then calls `begin_drain` (on the admin thread; it must only start the drain).
AdminFdCommand hand_over_listeners_command(net::HttpServer& server, std::function<void()> begin_drain, Logger& log);

// Successor side: the running daemon's listening sockets (the caller owns the
// descriptors). Errc::unavailable when no daemon answers on `admin_socket`.
Result<std::vector<net::ListeningSocket>> take_over_listeners(const std::string& admin_socket);

// Successor side: the data-directory lock, waiting up to `timeout` for the predecessor to
// release it (it does when it exits after draining).
Result<DataDirLock> wait_for_data_dir_lock(const std::string& data_dir, std::chrono::milliseconds timeout);

}  // namespace hearth::ops
