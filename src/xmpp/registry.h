// Private to xmpp/: who is online. Maps a bare JID to its bound sessions, with the
// facts routing needs (priority, availability, last presence, roster interest) kept in
// the entry so any thread can route without touching a session's shard-owned state.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "xmpp/session_sink.h"

namespace hearth::xmpp {

struct SessionEntry {
  std::string full_jid;
  std::string resource;
  std::shared_ptr<SessionSink> sink;
  // Updated under the registry mutex.
  bool available = false;
  int priority = 0;
  bool wants_roster_pushes = false;
  bool carbons = false;  // XEP-0280
  std::string last_presence;  // serialised available presence, from = full JID
  std::uint64_t id = 0;
};

class SessionRegistry {
 public:
  // Registers a bound session; returns the entry it displaced (same full JID), if any.
  std::shared_ptr<SessionEntry> bind(const std::string& bare, std::shared_ptr<SessionEntry> entry);
  void unbind(const std::string& bare, std::uint64_t id);
  // Copies of the entries of `bare` (empty if offline).
  std::vector<SessionEntry> sessions(const std::string& bare) const;  // snapshots
  std::optional<SessionEntry> find(const std::string& bare, const std::string& resource) const;
  void set_presence(const std::string& bare, std::uint64_t id, bool available, int priority, std::string stanza);
  void set_roster_interest(const std::string& bare, std::uint64_t id);
  void set_carbons(const std::string& bare, std::uint64_t id, bool enabled);
  std::size_t count() const;

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::vector<std::shared_ptr<SessionEntry>>> by_bare_;
  std::size_t count_ = 0;
};

}  // namespace hearth::xmpp
