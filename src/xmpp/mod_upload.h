// Private to xmpp/: XEP-0363 HTTP file upload at upload.<domain>.
//
// A client asks the service for a slot (file name, size, type); the service checks the
// size against the per-file limit and the owner's daily quota (blobs/) and answers with a
// PUT and a GET URL on hearth's own HTTPS listener: <public_url>/upload/<slot>/<name>. The
// slot id (24 random bytes) is the capability; a PUT is accepted once, within
// slot_ttl_seconds, with exactly the announced size and type, and the file is durable in
// blobs/ (with its owner and expiry) before 201 is answered. GET serves it until it expires
// (then 404), with headers that keep browsers from running it. Nothing in the URL's name
// part is used to find files on disk.
//
// Threads: the XMPP side runs on the worker pool (LocalService); HTTP handlers are blocking
// routes (worker pool). Schema: module "xmpp_upload" (table xmpp_upload_slot).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "core/error.h"
#include "net/net.h"
#include "xmpp/im.h"

namespace hearth {
class Clock;
}
namespace hearth::store {
class Store;
}
namespace hearth::blobs {
class BlobStore;
}

namespace hearth::xmpp {

inline constexpr std::string_view kUploadNs = "urn:xmpp:http:upload:0";

struct UploadOptions {
  std::string domain;          // "upload.example.org"
  int expiry_days = 14;        // files are deleted after this
  int slot_ttl_seconds = 300;  // a slot must be used within this
};

class HttpUploadService final : public LocalService {
 public:
  using Deliver = std::function<bool(const Element&)>;
  HttpUploadService(UploadOptions options, blobs::BlobStore& blobs, store::Store& store, Clock& clock, Logger& log,
                    Deliver deliver);
  Result<void> migrate();

  // The base URL the slots point at ("https://example.org:8443"); set once the listeners
  // are bound.
  void set_public_url(std::string url);
  // PUT/GET/OPTIONS under /upload/ (blocking routes). A PUT's body is streamed to a file
  // in blobs/' staging directory, limited to the slot's size, and handed to put_file.
  void install_routes(net::Router& router);
  // Deletes expired files and unused slots, at most `batch` at a time; returns how many.
  Result<std::int64_t> purge(std::int64_t now_ms, int batch);

  void handle(const SessionIdentity& from, Element stanza) override;
  void session_gone(const SessionIdentity&) override {}
  std::string name() const override { return "HTTP File Upload"; }

 private:
  // Before a PUT's body is read: the slot, its size (the body's limit) and type.
  net::BodyAdmission check_put(const net::HttpRequest& head);
  void put(net::HttpRequest&& request, net::Respond respond);
  void get(net::HttpRequest&& request, net::Respond respond);

  UploadOptions options_;
  blobs::BlobStore& blobs_;
  store::Store& store_;
  Clock& clock_;
  Logger& log_;
  Deliver deliver_;
  mutable std::mutex mutex_;
  std::string public_url_;
};

}  // namespace hearth::xmpp
