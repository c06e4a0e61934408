#include "xmpp/session_sink.h"

namespace hearth::xmpp {

namespace {
constexpr std::uint32_t kRequestAckEvery = 5;
constexpr const char* kAckRequest = "<r xmlns='urn:xmpp:sm:3'/>";
}  // namespace

void SessionSink::deliver(std::string stanza) {
  std::lock_guard lock(mutex_);
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
  std::vector<std::string> out(std::make_move_iterator(unacked_.begin()), std::make_move_iterator(unacked_.end()));
  unacked_.clear();
  return out;
}

}  // namespace hearth::xmpp
