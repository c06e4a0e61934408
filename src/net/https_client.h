// A small outgoing HTTP(S) client for server-to-server calls (Matrix federation: key
// fetches, well-known lookups, /send; Matrix push gateways). Blocking by design: callers run it on the
// blocking worker pool, never on a shard thread. Every call is bounded: one deadline for
// resolve + connect + handshake + request + response, and a response size limit.
//
// TLS: the server's chain must verify against `ca_file` (the system trust store when it is
// empty) and its certificate must name `tls_name` (RFC 6125 host name check); otherwise the
// call fails with Errc::permission_denied before any request byte is sent. A request with
// `tls = false` is plain HTTP (push gateways on a trusted network; federation never).
//
// Non-public addresses: with `refuse_non_public_addresses`, a host that resolves to any
// loopback, private, link-local, CGNAT, unique-local, multicast or unspecified address is
// refused (permission_denied) before connecting; the check runs on the resolved addresses,
// so a DNS name pointing inwards is caught too.
//
// Thread-safe: one HttpsClient may be used from many threads at once (each call has its
// own connection; there is no pooling yet). Boost and OpenSSL stay in https_client.cc.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace hearth::net {

struct HttpsClientOptions {
  std::string ca_file;                      // PEM trust anchors; "": system store
  int timeout_ms = 10000;                   // whole exchange
  std::size_t max_response_bytes = 1 << 20;  // headers + body; larger: resource_exhausted
  bool refuse_non_public_addresses = false;  // see above
};

// True for an address literal (IPv4 or IPv6, IPv4-mapped included) that is not publicly
// routable (see above); false for a public one and for text that is not an address.
bool is_non_public_address(const std::string& literal);

struct ClientRequest {
  std::string method = "GET";
  std::string host;      // where to connect: a name or an address literal
  int port = 443;
  std::string tls_name;  // SNI, Host header and the name the certificate must carry
  std::string target;    // "/_matrix/key/v2/server"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;      // sent with Content-Type: application/json when not empty
  bool tls = true;       // false: plain HTTP (tls_name is then only the Host header)
  std::size_t max_response_bytes = 0;  // this call's limit (e.g. a media download); 0: the client's
};

struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
};

class HttpsClient {
 public:
  // Loads the trust anchors (Errc::invalid_argument when the file is unreadable).
  static Result<std::unique_ptr<HttpsClient>> create(HttpsClientOptions options);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // One request on a fresh connection. Errors: unavailable (resolve, connect, timeout),
  // permission_denied (certificate), resource_exhausted (response too large),
  // invalid_argument (malformed response).
  Result<ClientResponse> request(const ClientRequest& req) const;

  struct Impl;

 private:
  explicit HttpsClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hearth::net
