// Private to xmpp/: where stanzas for one bound session go, across reconnections.
//
// A SessionSink outlives any single TCP connection of its session. It numbers every
// stanza sent to the client and, once stream management (XEP-0198) is enabled, keeps a
// copy until the client acknowledges it. While the client is away (detached, waiting
// for a resumption) stanzas are queued; on resumption they are re-sent; when the session
// finally ends, what was never acknowledged is handed back (take_unacked) so messages can
// go to offline storage instead of being lost.
//
// Thread-safe: deliver() is called by routing on any thread; one mutex orders sends, so
// the client sees stanzas in the order they were numbered.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/net.h"

namespace hearth::xmpp {

class SessionSink {
 public:
  explicit SessionSink(std::shared_ptr<net::StreamConnection> conn, std::size_t max_unacked = 10000)
      : conn_(std::move(conn)), max_unacked_(max_unacked) {}

  // Sends (or, while detached, queues) one serialised stanza.
  void deliver(std::string stanza);
  // Sends bytes that are not stanzas (stream errors, SM elements): never counted.
  void send_raw(std::string bytes);

  // Starts counting and keeping copies (<enable/>).
  void enable_acks();
  bool acks_enabled() const;
  // The client acknowledged `h` stanzas in total (mod 2^32). False when h acknowledges
  // more than was sent (the caller ends the stream: handled-count-too-high).
  bool ack(std::uint32_t h);
  std::uint32_t sent_count() const;

  // XEP-0352 client state: while inactive, presence stanzas are held back (only the
  // newest per sender) and flushed before the next other stanza or when active again.
  void set_active(bool active);

  // The connection went away; keep queuing.
  void detach();
  // No connection right now (waiting for a resumption): what is delivered only queues.
  bool detached() const;
  // A resumed connection: acknowledge `h`, then re-send everything still unacknowledged.
  bool attach(std::shared_ptr<net::StreamConnection> conn, std::uint32_t h);
  // Closes the current connection (if any) after sending `farewell`.
  void close_connection(std::string farewell);
  // The session ended for good: what the client never acknowledged, oldest first.
  std::vector<std::string> take_unacked();

  // Graceful restart (incident I18, see sm_handover.h). Counters and unacknowledged
  // stanzas of a session handed to the successor process.
  struct Handover {
    std::uint32_t sent = 0, acked = 0;
    std::vector<std::string> unacked;  // oldest first
  };
  // Detaches and hands over what is unacknowledged (held presences included). Stanzas
  // delivered afterwards queue as while detached; take_unacked() returns only those.
  Handover hand_over();
  // The successor's sink for a handed-over session: detached, acks on, these counters.
  static std::shared_ptr<SessionSink> restore(const Handover& h);

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<net::StreamConnection> conn_;  // null while detached
  bool acks_ = false;
  std::uint32_t sent_ = 0;   // stanzas numbered so far
  std::uint32_t acked_ = 0;  // the client's last h
  // A list, not a deque: an idle session's empty list holds no memory (a deque ~600 bytes).
  std::list<std::string> unacked_;
  bool inactive_ = false;
  std::vector<std::pair<std::string, std::string>> held_presence_;  // (from, stanza), oldest first
  std::size_t max_unacked_;

  void send_locked(std::string stanza);
  void flush_held_locked();
};

}  // namespace hearth::xmpp
