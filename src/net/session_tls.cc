// The HTTP/WebSocket session instantiated for TLS.
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/http_session.h"

namespace hearth::net {

void start_tls_session(HttpServer::Impl& impl, Shard& shard, const Listener& listener, tcp::socket socket,
                       std::string ip) {
  using TlsStream = beast::ssl_stream<beast::tcp_stream>;
  auto session = std::make_shared<HttpSession<TlsStream>>(
      impl, shard, listener, TlsStream(beast::tcp_stream(std::move(socket)), *impl.tls.front()), std::move(ip));
  session->start();
}

}  // namespace hearth::net
