// The HTTP/WebSocket session instantiated for plain TCP.
#include "net/http_session.h"

namespace hearth::net {

void start_plain_session(HttpServer::Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket,
                         std::string ip) {
  auto session = std::make_shared<HttpSession<beast::tcp_stream>>(impl, shard, listener,
                                                                  beast::tcp_stream(std::move(socket)), std::move(ip));
  session->start();
}

}  // namespace hearth::net
