#include "net/https_client.h"

#include <chrono>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>

namespace hearth::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct HttpsClient::Impl {
  HttpsClientOptions options;
  asio::ssl::context ctx{asio::ssl::context::tls_client};
};

HttpsClient::HttpsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsClient::~HttpsClient() = default;

Result<std::unique_ptr<HttpsClient>> HttpsClient::create(HttpsClientOptions options) {
  auto impl = std::make_unique<Impl>();
  boost::system::error_code ec;
  impl->ctx.set_options(asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_sslv3);
  if (options.ca_file.empty()) {
    impl->ctx.set_default_verify_paths(ec);
  } else {
    impl->ctx.load_verify_file(options.ca_file, ec);
  }
  if (ec) return fail(Errc::invalid_argument, fmt::format("trust anchors {}: {}", options.ca_file, ec.message()));
  impl->ctx.set_verify_mode(asio::ssl::verify_peer);
  impl->options = std::move(options);
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(impl)));
}

namespace {

bool non_public_v4(const asio::ip::address_v4& a) {
  auto b = a.to_bytes();
  return b[0] == 0 || b[0] == 10 || b[0] == 127 || b[0] >= 224 || (b[0] == 100 && (b[1] & 0xc0) == 64) ||
         (b[0] == 169 && b[1] == 254) || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168) ||
         (b[0] == 198 && (b[1] & 0xfe) == 18) || (b[0] == 192 && b[1] == 0 && b[2] == 0);
}

bool non_public(const asio::ip::address& a) {
  if (a.is_v4()) return non_public_v4(a.to_v4());
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return non_public_v4(asio::ip::make_address_v4(asio::ip::v4_mapped, v6));
  auto b = v6.to_bytes();
  return v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (b[0] & 0xfe) == 0xfc ||
         (b[0] == 0xfe && (b[1] & 0xc0) == 0x80);
}

// Writes the request and reads the answer on a connected (and, for TLS, handshaken) stream.
template <typename Stream>
asio::awaitable<void> talk(Stream& stream, const ClientRequest& req, const HttpsClientOptions& options,
                           Result<ClientResponse>& out) {
  http::request<http::string_body> r{req.method == "PUT"    ? http::verb::put
                                     : req.method == "POST" ? http::verb::post
                                                            : http::verb::get,
                                     req.target, 11};
  r.set(http::field::host, req.tls_name);
  r.set(http::field::user_agent, "hearth");
  for (const auto& [k, v] : req.headers) r.set(k, v);
  if (!req.body.empty()) {
    r.set(http::field::content_type, "application/json");
    r.body() = req.body;
  }
  r.prepare_payload();
  auto [wec, wn] = co_await http::async_write(stream, r, asio::as_tuple(asio::use_awaitable));
  if (wec) co_return void(out = fail(Errc::unavailable, fmt::format("write: {}", wec.message())));
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  const std::size_t limit = req.max_response_bytes ? req.max_response_bytes : options.max_response_bytes;
  parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(limit, 64 << 10)));
  parser.body_limit(limit);
  auto [rdec, rn] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
  if (rdec == http::error::body_limit || rdec == http::error::header_limit)
    co_return void(out = fail(Errc::resource_exhausted, "response too large"));
  if (rdec) co_return void(out = fail(Errc::unavailable, fmt::format("read: {}", rdec.message())));
  ClientResponse resp;
  resp.status = static_cast<int>(parser.get().result_int());
  for (const auto& field : parser.get()) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    resp.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  resp.body = std::move(parser.get().body());
  out = std::move(resp);
}

asio::awaitable<void> exchange(asio::ssl::context& ctx, const ClientRequest& req, const HttpsClientOptions& options,
                               Result<ClientResponse>& out) {
  auto ex = co_await asio::this_coro::executor;
  auto fail_with = [&](Errc code, std::string what) { out = fail(code, std::move(what)); };
  tcp::resolver resolver(ex);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(req.host, std::to_string(req.port), asio::as_tuple(asio::use_awaitable));
  if (rec) co_return fail_with(Errc::unavailable, fmt::format("resolve {}: {}", req.host, rec.message()));
  if (options.refuse_non_public_addresses)
    for (const auto& e : endpoints)
      if (non_public(e.endpoint().address()))
        co_return fail_with(Errc::permission_denied, fmt::format("{} resolves to the non-public address {}", req.host,
                                                                 e.endpoint().address().to_string()));
  if (!req.tls) {
    beast::tcp_stream stream(ex);
    auto [cec, unused] = co_await stream.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
    if (cec) co_return fail_with(Errc::unavailable, fmt::format("connect {}:{}: {}", req.host, req.port, cec.message()));
    co_await talk(stream, req, options, out);
    stream.socket().close();
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> stream(ex, ctx);
  if (!SSL_set_tlsext_host_name(stream.native_handle(), req.tls_name.c_str()))
    co_return fail_with(Errc::invalid_argument, "bad TLS name");
  stream.set_verify_callback(asio::ssl::host_name_verification(req.tls_name));
  auto [cec, unused] = co_await beast::get_lowest_layer(stream).async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
  if (cec) co_return fail_with(Errc::unavailable, fmt::format("connect {}:{}: {}", req.host, req.port, cec.message()));
  auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
  if (hec) {
    long v = SSL_get_verify_result(stream.native_handle());
    if (v != X509_V_OK || hec.category() == asio::error::get_ssl_category())
      co_return fail_with(Errc::permission_denied, fmt::format("TLS with {}: {}", req.tls_name, hec.message()));
    co_return fail_with(Errc::unavailable, fmt::format("TLS with {}: {}", req.tls_name, hec.message()));
  }
  co_await talk(stream, req, options, out);
  beast::get_lowest_layer(stream).socket().close();
}

}  // namespace

Result<ClientResponse> HttpsClient::request(const ClientRequest& req) const {
  Result<ClientResponse> out = fail(Errc::unavailable, fmt::format("{}:{}: timed out", req.host, req.port));
  {
    asio::io_context ioc(1);
    bool done = false;
    asio::co_spawn(ioc, exchange(impl_->ctx, req, impl_->options, out), [&done](std::exception_ptr) { done = true; });
    ioc.run_for(std::chrono::milliseconds(impl_->options.timeout_ms));
    if (!done) out = fail(Errc::unavailable, fmt::format("{}:{}: timed out", req.host, req.port));
  }  // the io_context's destruction closes whatever is still open
  return out;
}

bool is_non_public_address(const std::string& literal) {
  boost::system::error_code ec;
  auto a = asio::ip::make_address(literal, ec);
  return !ec && non_public(a);
}

}  // namespace hearth::net
