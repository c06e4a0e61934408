#include <algorithm>

#include "net/net.h"

namespace hearth::net {

std::string_view HttpRequest::header(std::string_view lowercase_name) const {
  for (const auto& [name, value] : headers)
    if (name == lowercase_name) return value;
  return {};
}

HttpResponse HttpResponse::text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

void Router::add(std::string method, std::string path, HttpHandler h, RouteOptions o) {
  exact_.push_back({std::move(method), std::move(path), false, std::move(h), o});
}

void Router::add_prefix(std::string method, std::string prefix, HttpHandler h, RouteOptions o) {
  prefixes_.push_back({std::move(method), std::move(prefix), true, std::move(h), o});
  std::stable_sort(prefixes_.begin(), prefixes_.end(),
                   [](const Route& a, const Route& b) { return a.path.size() > b.path.size(); });
}

void Router::websocket(std::string path, WebSocketAcceptor a, std::size_t max_message_bytes, std::string subprotocol) {
  websockets_.push_back({std::move(path), WebSocketRoute{std::move(a), max_message_bytes, std::move(subprotocol)}});
}

RouteMatch Router::find(std::string_view method, std::string_view path) const {
  RouteMatch m;
  std::vector<std::string_view> allowed;
  auto consider = [&](const Route& r) {
    if (r.method == method || r.method == "*") {
      m.kind = RouteMatch::Kind::handler;
      m.handler = &r.handler;
      m.options = &r.options;
      m.path = &r.path;
      return true;
    }
    if (std::find(allowed.begin(), allowed.end(), r.method) == allowed.end())
      allowed.push_back(r.method);
    return false;
  };
  for (const auto& r : exact_)
    if (r.path == path && consider(r)) return m;
  for (const auto& r : prefixes_)
    if (path.substr(0, r.path.size()) == r.path && consider(r)) return m;
  if (allowed.empty()) return m;
  m.kind = RouteMatch::Kind::method_not_allowed;
  for (auto a : allowed) {
    if (!m.allow.empty()) m.allow += ", ";
    m.allow += a;
  }
  return m;
}

const WebSocketRoute* Router::find_websocket(std::string_view path) const {
  for (const auto& [p, route] : websockets_)
    if (p == path) return &route;
  return nullptr;
}

}  // namespace hearth::net
