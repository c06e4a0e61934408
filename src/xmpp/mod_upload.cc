#include "xmpp/mod_upload.h"

#include <fmt/format.h>

#include <charconv>
#include <vector>

#include "blobs/blobs.h"
#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"
#include "xmpp/forms.h"
#include "xmpp/jid.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kPrefix = "/upload/";
constexpr std::size_t kMaxNameBytes = 255;

const std::vector<store::Migration> kMigrations = {
    {1, "upload slots", R"sql(
CREATE TABLE xmpp_upload_slot (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  blob TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX xmpp_upload_slot_created ON xmpp_upload_slot(created_ms);
)sql"},
};

// RFC 3986 unreserved characters pass; everything else is %XX.
std::string percent_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') out += static_cast<char>(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

// A MIME type we echo in Content-Type: "type/subtype" of token characters, else a safe
// default (never text/html from the uploader's say-so: it is served with a sandbox CSP
// anyway).
std::string safe_content_type(std::string_view t) {
  auto token = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$&-^_.+").find(c) != std::string_view::npos; };
  auto slash = t.find('/');
  if (t.empty() || t.size() > 127 || slash == std::string_view::npos || slash == 0 || slash + 1 == t.size())
    return "application/octet-stream";
  for (std::size_t i = 0; i < t.size(); ++i)
    if (i != slash && !token(t[i])) return "application/octet-stream";
  return std::string(t);
}

struct Slot {
  std::string id, owner, name, content_type, blob;
  std::int64_t size = 0, created_ms = 0;
};

// "/upload/<slot>/<name>" -> slot id; "" if the path has another shape.
std::string slot_of(std::string_view path) {
  if (path.substr(0, kPrefix.size()) != kPrefix) return {};
  path.remove_prefix(kPrefix.size());
  auto slash = path.find('/');
  if (slash == std::string_view::npos || slash == 0) return {};
  std::string_view id = path.substr(0, slash);
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return {};
  return std::string(id);
}

net::HttpResponse plain(int status, std::string text) {
  auto r = net::HttpResponse::text(status, std::move(text) + "\n");
  r.headers.emplace_back("Access-Control-Allow-Origin", "*");
  return r;
}

}  // namespace

HttpUploadService::HttpUploadService(UploadOptions options, blobs::BlobStore& blobs, store::Store& store, Clock& clock,
                                     Logger& log, Deliver deliver)
    : options_(std::move(options)), blobs_(blobs), store_(store), clock_(clock), log_(log), deliver_(std::move(deliver)) {}

Result<void> HttpUploadService::migrate() { return store_.migrate("xmpp_upload", kMigrations); }

void HttpUploadService::set_public_url(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  std::lock_guard lock(mutex_);
  public_url_ = std::move(url);
}

void HttpUploadService::handle(const SessionIdentity& from, Element st) {
  if (st.name() != "iq") return;
  std::string type(st.attr("type"));
  if (type != "get" && type != "set") return;
  auto answer = [&](std::optional<Element> payload) {
    Element r("iq", std::string(kClientNs));
    r.set_attr("type", "result");
    r.set_attr("id", std::string(st.attr("id")));
    r.set_attr("from", options_.domain);
    r.set_attr("to", from.full);
    if (payload) r.add_child(std::move(*payload));
    deliver_(r);
  };
  auto error = [&](std::string_view etype, std::string_view cond, std::string_view text,
                   std::optional<Element> app = std::nullopt) {
    Element e = make_error_reply(st, etype, cond, text);
    if (app)
      if (Element* err = e.child("error")) err->add_child(std::move(*app));
    deliver_(e);
  };
  const Element* payload = st.children().begin() != st.children().end() ? &*st.children().begin() : nullptr;
  if (!payload) return error("modify", "bad-request", "empty iq");
  auto to = Jid::parse(st.attr("to"));
  if (!to || !to->local.empty() || !to->resource.empty()) return error("cancel", "service-unavailable", "");
  const blobs::BlobOptions& limits = blobs_.options();
  if (payload->ns() == kDiscoInfoNs && type == "get") {
    Element q("query", std::string(kDiscoInfoNs));
    Element& id = q.add_child(Element("identity", std::string(kDiscoInfoNs)));
    id.set_attr("category", "store");
    id.set_attr("type", "file");
    id.set_attr("name", name());
    for (auto f : {kDiscoInfoNs, kUploadNs})
      q.add_child(Element("feature", std::string(kDiscoInfoNs))).set_attr("var", std::string(f));
    Element x = make_form("result", kUploadNs);
    x.add_child(form_field("max-file-size", "text-single", {std::to_string(limits.max_file_bytes)}));
    q.add_child(std::move(x));
    return answer(std::move(q));
  }
  if (payload->ns() == kDiscoItemsNs && type == "get") return answer(Element("query", std::string(kDiscoItemsNs)));
  if (payload->ns() != kUploadNs || payload->name() != "request" || type != "get")
    return error("cancel", "service-unavailable", "");

  std::string filename(payload->attr("filename"));
  std::string size_text(payload->attr("size"));
  std::string content_type(payload->attr("content-type"));
  std::int64_t size = -1;
  auto [end, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (ec != std::errc() || end != size_text.data() + size_text.size() || size < 0)
    return error("modify", "bad-request", "size is a number of bytes");
  if (filename.empty() || filename.size() > kMaxNameBytes || filename.find('/') != std::string::npos ||
      filename.find('\0') != std::string::npos)
    return error("modify", "bad-request", "a file name without '/' is needed");
  if (content_type.size() > 127) return error("modify", "bad-request", "content-type is too long");
  if (size > limits.max_file_bytes) {
    Element too_large("file-too-large", std::string(kUploadNs));
    too_large.add_child(Element("max-file-size", std::string(kUploadNs))).add_text(std::to_string(limits.max_file_bytes));
    return error("modify", "not-acceptable", fmt::format("files may be at most {} bytes", limits.max_file_bytes),
                 std::move(too_large));
  }
  auto used = blobs_.used_today(from.bare);
  if (!used) return error("wait", "internal-server-error", "");
  if (*used + size > limits.daily_quota_bytes) {
    // XEP-0363 §5: quota reached; retry once the oldest upload of the day leaves the window.
    Element retry("retry", std::string(kUploadNs));
    retry.set_attr("stamp", format_delay_stamp(clock_.now_ms() + 86'400'000));
    return error("wait", "resource-constraint",
                 fmt::format("the daily upload quota of {} bytes is used up", limits.daily_quota_bytes), std::move(retry));
  }
  std::string base;
  {
    std::lock_guard lock(mutex_);
    base = public_url_;
  }
  if (base.empty()) return error("wait", "service-unavailable", "uploads are not reachable yet");
  Slot slot{random_token(24), from.bare, filename, content_type, {}, size, clock_.now_ms()};
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "INSERT INTO xmpp_upload_slot(id, owner, name, size, content_type, created_ms) VALUES(?, ?, ?, ?, ?, ?)",
        {slot.id, slot.owner, slot.name, slot.size, slot.content_type, slot.created_ms});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) {
    auto [etype, cond] = storage_error_condition(w.error());
    return error(etype, cond, "the slot could not be stored");
  }
  std::string url = fmt::format("{}{}{}/{}", base, kPrefix, slot.id, percent_encode(filename));
  Element s("slot", std::string(kUploadNs));
  s.add_child(Element("put", std::string(kUploadNs))).set_attr("url", url);
  s.add_child(Element("get", std::string(kUploadNs))).set_attr("url", url);
  answer(std::move(s));
}

void HttpUploadService::install_routes(net::Router& router) {
  net::RouteOptions put_options;
  put_options.blocking = true;
  put_options.max_body_bytes = blobs_.options().max_file_bytes;
  // The body is streamed to blobs/' staging directory (never whole in memory), after the
  // slot was checked and its declared size made the body's limit.
  put_options.body_staging_dir = blobs_.staging_dir();
  put_options.check_body = [this](const net::HttpRequest& head) { return check_put(head); };
  router.add_prefix("PUT", std::string(kPrefix),
                    [this](net::HttpRequest&& r, net::Respond respond) { put(std::move(r), std::move(respond)); },
                    put_options);
  net::RouteOptions get_options;
  get_options.blocking = true;
  router.add_prefix("GET", std::string(kPrefix),
                    [this](net::HttpRequest&& r, net::Respond respond) { get(std::move(r), std::move(respond)); },
                    get_options);
  // Web clients (Converse.js) upload with XHR from another origin.
  router.add_prefix("OPTIONS", std::string(kPrefix), [](net::HttpRequest&&, net::Respond respond) {
    net::HttpResponse r = net::HttpResponse::text(204, "");
    r.headers = {{"Access-Control-Allow-Origin", "*"},
                 {"Access-Control-Allow-Methods", "GET, PUT, OPTIONS"},
                 {"Access-Control-Allow-Headers", "Content-Type"},
                 {"Access-Control-Max-Age", "86400"}};
    respond(std::move(r));
  });
}

// The slot named by a PUT's path, checked against the request's head: nullopt and the
// answer when the PUT cannot be accepted.
namespace {
std::optional<Slot> usable_slot(store::Store& store_, Clock& clock_, const UploadOptions& options_,
                                const net::HttpRequest& request, std::optional<std::int64_t> length,
                                net::HttpResponse& refusal) {
  std::string id = slot_of(request.path);
  if (id.empty()) {
    refusal = plain(404, "no such upload slot");
    return std::nullopt;
  }
  std::optional<Slot> slot;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT owner, name, size, content_type, created_ms, blob FROM xmpp_upload_slot WHERE id = ?", {id});
    if (!row) return tl::unexpected(row.error());
    if (*row) slot = Slot{id, std::string((*row)->text(0)), std::string((*row)->text(1)), std::string((*row)->text(3)),
                          std::string((*row)->text(5)), (*row)->integer(2), (*row)->integer(4)};
    return true;
  });
  if (!r) refusal = plain(503, "storage is unavailable");
  else if (!slot) refusal = plain(403, "this URL is not an upload slot");
  else if (!slot->blob.empty()) refusal = plain(409, "this slot was used already");
  else if (clock_.now_ms() > slot->created_ms + std::int64_t{options_.slot_ttl_seconds} * 1000)
    refusal = plain(403, "this upload slot has expired; ask for a new one");
  else if (length && *length != slot->size)
    refusal = plain(*length > slot->size ? 413 : 400, fmt::format("the slot is for exactly {} bytes", slot->size));
  else if (!slot->content_type.empty() && request.header("content-type") != slot->content_type)
    refusal = plain(400, fmt::format("the slot is for content type {}", slot->content_type));
  else
    return slot;
  return std::nullopt;
}
}  // namespace

net::BodyAdmission HttpUploadService::check_put(const net::HttpRequest& head) {
  net::BodyAdmission admission;
  std::optional<std::int64_t> declared;
  std::string_view cl = head.header("content-length");
  if (!cl.empty()) {
    std::int64_t v = -1;
    auto [end, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), v);
    if (ec == std::errc() && end == cl.data() + cl.size()) declared = v;
  }
  net::HttpResponse refusal;
  auto slot = usable_slot(store_, clock_, options_, head, declared, refusal);
  if (!slot) admission.refuse = std::move(refusal);
  else admission.limit = slot->size;  // a chunked body may not outgrow the slot either
  return admission;
}

void HttpUploadService::put(net::HttpRequest&& request, net::Respond respond) {
  // Checked again: the head was checked before the body was read, but the slot may have
  // been used or have expired meanwhile, and a chunked body may be shorter.
  net::HttpResponse refusal;
  auto slot = usable_slot(store_, clock_, options_, request, request.body_file_bytes, refusal);
  if (!slot) return respond(std::move(refusal));
  std::string_view type = request.header("content-type");
  std::string id = slot->id;
  std::int64_t expires = clock_.now_ms() + std::int64_t{options_.expiry_days} * 86'400'000;
  auto blob = blobs_.put_file(slot->owner, slot->name, slot->content_type.empty() ? std::string(type) : slot->content_type,
                              request.body_file, expires);
  if (!blob) {
    if (blob.error().code == Errc::resource_exhausted) return respond(plain(413, blob.error().message));
    if (blob.error().code == Errc::invalid_argument) return respond(plain(413, blob.error().message));
    if (blob.error().code == Errc::read_only) return respond(plain(507, "the server is read-only for now"));
    log_.warn("xmpp.upload_failed", {{"owner", slot->owner}, {"error", blob.error().describe()}});
    return respond(plain(500, "the file could not be stored"));
  }
  bool raced = false;
  auto u = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto n = tx.exec("UPDATE xmpp_upload_slot SET blob = ? WHERE id = ? AND blob = ''", {blob->id, id});
    if (!n) return tl::unexpected(n.error());
    raced = *n == 0;
    return true;
  });
  if (!u || raced) return respond(plain(raced ? 409 : 503, raced ? "this slot was used already" : "storage is unavailable"));
  log_.info("xmpp.uploaded", {{"owner", slot->owner}, {"bytes", slot->size}, {"blob", blob->hash.substr(0, 16)}});
  respond(plain(201, "stored"));
}

void HttpUploadService::get(net::HttpRequest&& request, net::Respond respond) {
  std::string id = slot_of(request.path);
  if (id.empty()) return respond(plain(404, "not found"));
  std::string blob_id, content_type;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT blob, content_type FROM xmpp_upload_slot WHERE id = ?", {id});
    if (!row) return tl::unexpected(row.error());
    if (*row) {
      blob_id = std::string((*row)->text(0));
      content_type = std::string((*row)->text(1));
    }
    return true;
  });
  if (!r) return respond(plain(503, "storage is unavailable"));
  if (blob_id.empty()) return respond(plain(404, "not found"));
  auto blob = blobs_.get(blob_id);
  if (!blob) return respond(plain(503, "storage is unavailable"));
  if (!*blob) return respond(plain(404, "not found (or expired)"));
  net::HttpResponse out;
  out.status = 200;
  out.content_type = safe_content_type((*blob)->content_type);
  out.body_file = blobs_.path_of((*blob)->hash);  // sent from disk in chunks, with Range
  out.headers = {{"Access-Control-Allow-Origin", "*"},
                 {"X-Content-Type-Options", "nosniff"},
                 {"Content-Security-Policy", "default-src 'none'; sandbox"},
                 {"Cache-Control", "private, max-age=86400"}};
  respond(std::move(out));
}

Result<std::int64_t> HttpUploadService::purge(std::int64_t now_ms, int batch) {
  auto files = blobs_.purge_expired(now_ms, batch);
  if (!files) return files;
  // Slots are dropped with their file's expiry; unused ones after their TTL.
  std::int64_t oldest = now_ms - std::int64_t{options_.expiry_days} * 86'400'000;
  std::int64_t unused = now_ms - std::int64_t{options_.slot_ttl_seconds} * 1000;
  auto slots = store_.write_sync([&](store::Transaction& tx) -> Result<std::int64_t> {
    auto a = tx.exec(
        "DELETE FROM xmpp_upload_slot WHERE id IN (SELECT id FROM xmpp_upload_slot WHERE (blob = '' AND created_ms < ?) "
        "OR created_ms < ? LIMIT ?)",
        {unused, oldest, std::int64_t{batch}});
    if (!a) return tl::unexpected(a.error());
    return *a;
  });
  if (!slots) return slots;
  return *files + *slots;
}

}  // namespace hearth::xmpp
