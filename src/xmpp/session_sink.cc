#include "xmpp/session_sink.h"

namespace hearth::xmpp {

namespace {
constexpr std::uint32_t kRequestAckEvery = 5;
constexpr const char* kAckRequest = "<r xmlns='urn:xmpp:sm:3'/>";
}  // namespace

namespace {
// The 'from' attribute of a serialised stanza (our serialiser quotes with ').
std::string_view from_of(std::string_view stanza) {
  auto end_of_tag = stanza.find('>');
  auto pos = stanza.find(" from='");
  if (pos == std::string_view::npos || pos > end_of_tag) return {};
  pos += 7;
  auto end = stanza.find('\'', pos);
  return end == std::string_view::npos ? std::string_view() : stanza.substr(pos, end - pos);
}
}  // namespace

void SessionSink::deliver(std::string stanza) {
  std::lock_guard lock(mutex_);
  if (inactive_ && stanza.rfind("<presence", 0) == 0) {
    std::string from(from_of(stanza));
    for (auto it = held_presence_.begin(); it != held_presence_.end(); ++it)
      if (it->first == from) {
        held_presence_.erase(it);
        break;
      }
    held_presence_.emplace_back(std::move(from), std::move(stanza));
    return;
  }
  flush_held_locked();
  send_locked(std::move(stanza));
}

void SessionSink::set_active(bool active) {
  std::lock_guard lock(mutex_);
  inactive_ = !active;
  if (active) flush_held_locked();
}

void SessionSink::flush_held_locked() {
  auto held = std::move(held_presence_);
  held_presence_.clear();
  for (auto& [from, stanza] : held) send_locked(std::move(stanza));
}

void SessionSink::send_locked(std::string stanza) {
  if (!acks_) {
    if (conn_) conn_->send(std::move(stanza));
    return;
  }
  ++sent_;
  if (unacked_.size() >= max_unacked_) {
    // A client that never acknowledges cannot make us hold its traffic forever.
    if (conn_) conn_->close();
    return;
  }
  unacked_.push_back(stanza);
  if (!conn_) return;
  conn_->send(std::move(stanza));
  if (unacked_.size() % kRequestAckEvery == 0) conn_->send(kAckRequest);
}

void SessionSink::send_raw(std::string bytes) {
  std::lock_guard lock(mutex_);
  if (conn_) conn_->send(std::move(bytes));
}

void SessionSink::enable_acks() {
  std::lock_guard lock(mutex_);
  acks_ = true;
}

bool SessionSink::acks_enabled() const {
  std::lock_guard lock(mutex_);
  return acks_;
}

bool SessionSink::ack(std::uint32_t h) {
  std::lock_guard lock(mutex_);
  std::uint32_t newly = h - acked_;  // wraps per XEP-0198 §4
  if (newly > unacked_.size()) return false;
  for (std::uint32_t i = 0; i < newly; ++i) unacked_.pop_front();
  acked_ = h;
  return true;
}

std::uint32_t SessionSink::sent_count() const {
  std::lock_guard lock(mutex_);
  return sent_;
}

bool SessionSink::detached() const {
  std::lock_guard lock(mutex_);
  return !conn_;
}

void SessionSink::detach() {
  std::lock_guard lock(mutex_);
  conn_.reset();
}

bool SessionSink::attach(std::shared_ptr<net::StreamConnection> conn, std::uint32_t h) {
  std::lock_guard lock(mutex_);
  std::uint32_t newly = h - acked_;
  if (newly > unacked_.size()) return false;
  for (std::uint32_t i = 0; i < newly; ++i) unacked_.pop_front();
  acked_ = h;
  conn_ = std::move(conn);
  for (const auto& s : unacked_) conn_->send(s);
  if (!unacked_.empty()) conn_->send(kAckRequest);
  return true;
}

void SessionSink::close_connection(std::string farewell) {
  std::lock_guard lock(mutex_);
  if (!conn_) return;
  if (!farewell.empty()) conn_->send(std::move(farewell));
  conn_->close();
  conn_.reset();
}

std::vector<std::string> SessionSink::take_unacked() {
  std::lock_guard lock(mutex_);
  flush_held_locked();
  std::vector<std::string> out(std::make_move_iterator(unacked_.begin()), std::make_move_iterator(unacked_.end()));
  unacked_.clear();
  return out;
}

SessionSink::Handover SessionSink::hand_over() {
  std::lock_guard lock(mutex_);
  flush_held_locked();
  conn_.reset();
  Handover h{sent_, acked_, std::vector<std::string>(unacked_.begin(), unacked_.end())};
  // From now on unacked_ holds only what arrives after the hand-over.
  acked_ += static_cast<std::uint32_t>(unacked_.size());
  unacked_.clear();
  return h;
}

std::shared_ptr<SessionSink> SessionSink::restore(const Handover& h) {
  auto sink = std::make_shared<SessionSink>(nullptr);
  sink->acks_ = true;
  sink->sent_ = h.sent;
  sink->acked_ = h.acked;
  sink->unacked_.assign(h.unacked.begin(), h.unacked.end());
  return sink;
}

}  // namespace hearth::xmpp
