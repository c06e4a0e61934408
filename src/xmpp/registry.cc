#include "xmpp/registry.h"

#include <algorithm>

namespace hearth::xmpp {

std::shared_ptr<SessionEntry> SessionRegistry::bind(const std::string& bare, std::shared_ptr<SessionEntry> entry) {
  std::lock_guard lock(mutex_);
  auto& list = by_bare_[bare];
  std::shared_ptr<SessionEntry> displaced;
  for (auto it = list.begin(); it != list.end(); ++it) {
    if ((*it)->resource == entry->resource) {
      displaced = *it;
      list.erase(it);
      --count_;
      break;
    }
  }
  list.push_back(std::move(entry));
  ++count_;
  return displaced;
}

void SessionRegistry::unbind(const std::string& bare, std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = by_bare_.find(bare);
  if (it == by_bare_.end()) return;
  auto& list = it->second;
  auto before = list.size();
  list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& e) { return e->id == id; }), list.end());
  count_ -= before - list.size();
  if (list.empty()) by_bare_.erase(it);
}

std::vector<SessionEntry> SessionRegistry::sessions(const std::string& bare) const {
  std::lock_guard lock(mutex_);
  std::vector<SessionEntry> out;
  auto it = by_bare_.find(bare);
  if (it == by_bare_.end()) return out;
  for (const auto& e : it->second) out.push_back(*e);
  return out;
}

std::optional<SessionEntry> SessionRegistry::find(const std::string& bare, const std::string& resource) const {
  std::lock_guard lock(mutex_);
  auto it = by_bare_.find(bare);
  if (it == by_bare_.end()) return std::nullopt;
  for (const auto& e : it->second)
    if (e->resource == resource) return *e;
  return std::nullopt;
}

void SessionRegistry::set_presence(const std::string& bare, std::uint64_t id, bool available, int priority,
                                   std::string stanza) {
  std::lock_guard lock(mutex_);
  auto it = by_bare_.find(bare);
  if (it == by_bare_.end()) return;
  for (auto& e : it->second)
    if (e->id == id) {
      e->available = available;
      e->priority = priority;
      e->last_presence = std::move(stanza);
    }
}

void SessionRegistry::set_roster_interest(const std::string& bare, std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = by_bare_.find(bare);
  if (it == by_bare_.end()) return;
  for (auto& e : it->second)
    if (e->id == id) e->wants_roster_pushes = true;
}

void SessionRegistry::set_carbons(const std::string& bare, std::uint64_t id, bool enabled) {
  std::lock_guard lock(mutex_);
  auto it = by_bare_.find(bare);
  if (it == by_bare_.end()) return;
  for (auto& e : it->second)
    if (e->id == id) e->carbons = enabled;
}

std::size_t SessionRegistry::count() const {
  std::lock_guard lock(mutex_);
  return count_;
}

}  // namespace hearth::xmpp
