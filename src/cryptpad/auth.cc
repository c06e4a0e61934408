#include "cryptpad/auth.h"

#include <sodium.h>

#include <ctime>

#include <fmt/format.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"
#include "cryptpad/files.h"
#include "cryptpad/web.h"
#include "store/store.h"

namespace hearth::cryptpad {

namespace {

tl::unexpected<std::string> err(std::string code) { return tl::unexpected<std::string>(std::move(code)); }
// Read-only mode (disk reserve reached, I02) has its own code: the client may try later.
std::string storage_code(const Error& e) { return e.code == Errc::read_only ? "E_READ_ONLY" : "E_STORAGE"; }

std::string iso_date(std::int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
}

net::HttpResponse json_error(int status, std::string_view message) {
  JsonWriter w;
  w.begin_object().key("error").value(message).end_object();
  return net::HttpResponse::json(status, w.take());
}

std::optional<std::string> str_field(const std::map<std::string, RawValue>& fields, const char* name) {
  auto it = fields.find(name);
  if (it == fields.end() || !it->second.is_string()) return std::nullopt;
  return it->second.text;
}

std::optional<std::map<std::string, RawValue>> object_field(const std::map<std::string, RawValue>& fields,
                                                            const char* name, const ParseLimits& limits) {
  auto it = fields.find(name);
  if (it == fields.end() || it->second.type != RawValue::Type::object) return std::nullopt;
  auto members = parse_object(it->second.raw, limits);
  if (!members) return std::nullopt;
  std::map<std::string, RawValue> out;
  for (auto& [k, v] : *members) out.insert_or_assign(k, std::move(v));
  return out;
}

bool is_recovery_key(const std::optional<std::string>& k) {
  if (!k || k->size() != 32) return false;
  for (char c : *k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/')) return false;
  return true;
}

std::string sha512(std::string_view bytes) {
  unsigned char h[crypto_hash_sha512_BYTES];
  crypto_hash_sha512(h, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}

}  // namespace

std::string safe_key(std::string_view key) {
  std::string out(key);
  for (auto& c : out)
    if (c == '/') c = '-';
  return out;
}

CryptpadAuth::CryptpadAuth(store::Store& store, Clock& clock, CryptpadFiles& files, AuthOptions options)
    : store_(store), clock_(clock), files_(files), options_(options) {
  limits_.max_bytes = 1 << 20;
}

// -- storage ------------------------------------------------------------------------------
bool CryptpadAuth::has_mfa(const std::string& key, std::string* secret, std::string* contact) {
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT secret, contact FROM cryptpad_mfa WHERE key = ?", {key});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return false;
    if (secret) *secret = std::string((*row)->text(0));
    if (contact && !(*row)->is_null(1)) *contact = std::string((*row)->text(1));
    return true;
  });
  // Fail closed: a store error counts as "protected".
  return !r || *r;
}

bool CryptpadAuth::block_exists(const std::string& key) {
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT 1 FROM cryptpad_blocks WHERE key = ? AND content IS NOT NULL", {key});
    if (!row) return tl::unexpected(row.error());
    return row->has_value();
  });
  return r && *r;
}

// CryptPad's validateAncestorProof: `[oldPub, sig]`, sig signs oldPub's bytes with the
// old key, and the old block exists. Returns the old key.
static std::optional<std::string> ancestor_of(const std::string& proof, const ParseLimits& limits) {
  auto arr = parse_array(proof, limits);
  if (!arr || arr->size() < 2 || !(*arr)[0].is_string() || !(*arr)[1].is_string()) return std::nullopt;
  auto pub = base64_decode((*arr)[0].text);
  if (!pub || !verify_detached(*pub, (*arr)[1].text, (*arr)[0].text)) return std::nullopt;
  return (*arr)[0].text;
}

tl::expected<void, std::string> CryptpadAuth::write_block(const AuthBody& b) {
  auto content = object_field(b.fields, "content", limits_);
  if (!content) return err("E_INVALID_BLOCK");
  auto key = str_field(*content, "publicKey");
  auto signature = str_field(*content, "signature");
  auto ciphertext = str_field(*content, "ciphertext");
  if (!key || !is_valid_public_key(*key)) return err("E_INVALID_KEY");
  if (!signature) return err("E_INVALID_SIGNATURE");
  if (!ciphertext) return err("E_INVALID_BLOCK");
  auto bytes = base64_decode(*ciphertext);
  if (!bytes) return err("E_INVALID_BLOCK");
  if (!verify_detached(sha512(*bytes), *signature, *key)) return err("E_COULD_NOT_VERIFY");
  const std::string sk = safe_key(*key);
  const std::int64_t now = clock_.now_ms();
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "INSERT INTO cryptpad_blocks(key, content, updated, removed) VALUES (?, ?, ?, NULL) "
        "ON CONFLICT(key) DO UPDATE SET content = excluded.content, archived = NULL, updated = excluded.updated, "
        "removed = NULL",
        {sk, store::Blob{*bytes}, now});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) return err(storage_code(w.error()));
  return {};
}

tl::expected<void, std::string> CryptpadAuth::remove_block(const AuthBody& b) {
  const std::string sk = safe_key(b.public_key);
  std::string reason = str_field(b.fields, "reason").value_or("");
  if (reason.size() > 256) reason.resize(256);
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto r = tx.exec(
        "UPDATE cryptpad_blocks SET archived = COALESCE(content, archived), content = NULL, removed = ?, updated = ? "
        "WHERE key = ?",
                     {reason, clock_.now_ms(), sk});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) return err(storage_code(w.error()));
  return {};
}

tl::expected<void, std::string> CryptpadAuth::archive_block(const std::string& key, const std::string& reason) {
  const std::string sk = safe_key(key);
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT 1 FROM cryptpad_blocks WHERE key = ? AND content IS NOT NULL", {sk});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return false;
    auto r = tx.exec("UPDATE cryptpad_blocks SET archived = content, content = NULL, removed = ?, updated = ? WHERE key = ?",
                     {"MODERATION_BLOCK:" + reason, clock_.now_ms(), sk});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) return err(storage_code(w.error()));
  if (!*w) return err("ENOENT");
  return {};
}

tl::expected<void, std::string> CryptpadAuth::restore_block(const std::string& key) {
  const std::string sk = safe_key(key);
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto row = tx.query_one("SELECT 1 FROM cryptpad_blocks WHERE key = ? AND content IS NULL AND archived IS NOT NULL", {sk});
    if (!row) return tl::unexpected(row.error());
    if (!*row) return false;
    auto r = tx.exec("UPDATE cryptpad_blocks SET content = archived, archived = NULL, removed = NULL, updated = ? WHERE key = ?",
                     {clock_.now_ms(), sk});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) return err(storage_code(w.error()));
  if (!*w) return err("ENOENT");
  return {};
}

tl::expected<std::string, std::string> CryptpadAuth::new_session(const std::string& sk) {
  const std::string id = random_token(32);
  const std::int64_t expires = clock_.now_ms() + options_.totp_session_ms;
  auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    if (auto d = tx.exec("DELETE FROM cryptpad_auth_sessions WHERE key = ? AND expires < ?", {sk, clock_.now_ms()}); !d)
      return tl::unexpected(d.error());
    auto r = tx.exec("INSERT INTO cryptpad_auth_sessions(key, id, expires) VALUES (?, ?, ?)", {sk, id, expires});
    if (!r) return tl::unexpected(r.error());
    return true;
  });
  if (!w) return err(w.error().code == Errc::read_only ? "E_READ_ONLY" : "SESSION_WRITE_ERROR");
  JsonWriter j;
  j.begin_object().key("bearer").value(id).end_object();
  return j.take();
}

// -- commands -----------------------------------------------------------------------------
std::string CryptpadAuth::check(const AuthBody& b) {
  const std::string sk = safe_key(b.public_key);
  const auto& f = b.fields;
  const std::string& cmd = b.command;
  const std::int64_t now_s = clock_.now_ms() / 1000;
  auto check_code = [&](const std::string& key, const std::optional<std::string>& code) -> std::string {
    std::string secret;
    if (!has_mfa(key, &secret)) return "NO_MFA_CONFIGURED";
    auto decoded = base32_decode(secret);
    if (!decoded || decoded->size() != 20) return "E_INVALID_SECRET";
    if (!code || !totp_verify(*decoded, *code, now_s)) return "INVALID_OTP";
    return "";
  };
  if (cmd == "MFA_CHECK" || cmd == "REMOVE_BLOCK") {
    return has_mfa(sk) ? "NOT_ALLOWED" : "";
  }
  if (cmd == "WRITE_BLOCK") {
    auto content = object_field(f, "content", limits_);
    if (!content || str_field(*content, "publicKey") != b.public_key) return "INVALID_KEY";
    return has_mfa(sk) ? "NOT_ALLOWED" : "";
  }
  if (cmd == "UPLOAD_COOKIE") return "";
  if (cmd == "TOTP_SETUP") {
    auto code = str_field(f, "code");
    if (!code || !is_valid_otp(*code)) return "E_INVALID";
    auto contact = f.find("contact");
    if (contact != f.end() && contact->second.type != RawValue::Type::null &&
        (!contact->second.is_string() || contact->second.text.size() > 254))
      return "INVALID_CONTACT";
    auto secret = str_field(f, "secret");
    auto decoded = secret ? base32_decode(*secret) : std::nullopt;
    if (!decoded || decoded->size() != 20) return "INVALID_SECRET";
    if (has_mfa(sk)) return "EEXISTS";
    if (!totp_verify(*decoded, *code, now_s)) return "INVALID_OTP";
    return "";
  }
  if (cmd == "TOTP_VALIDATE") {
    auto code = str_field(f, "code");
    if (!code || !is_valid_otp(*code)) return "E_INVALID";
    return check_code(sk, code);
  }
  if (cmd == "TOTP_MFA_CHECK" || cmd == "TOTP_REMOVE_BLOCK") {
    auto code = str_field(f, "auth");
    if (!code || !is_valid_otp(*code)) return "E_INVALID";
    return check_code(sk, code);
  }
  if (cmd == "TOTP_REVOKE") {
    auto code = str_field(f, "code");
    auto recovery = str_field(f, "recoveryKey");
    bool code_ok = code && is_valid_otp(*code);
    if (!code_ok && !is_recovery_key(recovery)) return "E_INVALID";
    if (recovery && !code_ok) {
      std::string secret, contact;
      if (!has_mfa(sk, &secret, &contact)) return "NO_MFA_CONFIGURED";
      if (contact.rfind("secret:", 0) != 0) return "E_NO_RECOVERY_KEY";
      if (!secrets_equal(contact.substr(7), *recovery)) return "E_WRONG_RECOVERY_KEY";
      return "";
    }
    return check_code(sk, code);
  }
  if (cmd == "TOTP_WRITE_BLOCK") {
    auto content = object_field(f, "content", limits_);
    if (!content || str_field(*content, "publicKey") != b.public_key) return "INVALID_KEY";
    auto code = str_field(*content, "auth");
    if (!code || !is_valid_otp(*code)) return "E_INVALID";
    auto proof = str_field(*content, "registrationProof");
    if (!proof) return "MISSING_ANCESTOR";
    auto old_key = ancestor_of(*proof, limits_);
    if (!old_key || !block_exists(safe_key(*old_key))) return "INVALID_ANCESTOR";
    return check_code(safe_key(*old_key), code);
  }
  return "invalid command";
}

tl::expected<std::string, std::string> CryptpadAuth::complete(const AuthBody& b) {
  const std::string sk = safe_key(b.public_key);
  const std::string& cmd = b.command;
  if (cmd == "MFA_CHECK" || cmd == "TOTP_MFA_CHECK") return std::string();
  if (cmd == "WRITE_BLOCK") {
    if (auto w = write_block(b); !w) return err(w.error());
    return std::string();
  }
  if (cmd == "REMOVE_BLOCK") {
    if (auto r = remove_block(b); !r) return err(r.error());
    return std::string();
  }
  if (cmd == "UPLOAD_COOKIE") {
    JsonWriter w;
    w.begin_object().key("cookie").value(files_.new_cookie(b.public_key)).end_object();
    return w.take();
  }
  if (cmd == "TOTP_SETUP") {
    if (!block_exists(sk)) return err("NO_BLOCK");
    auto secret = str_field(b.fields, "secret").value_or("");
    auto contact = str_field(b.fields, "contact");
    auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto r = tx.exec("INSERT INTO cryptpad_mfa(key, secret, contact, created) VALUES (?, ?, ?, ?)",
                       {sk, secret, contact, clock_.now_ms()});
      if (!r) return tl::unexpected(r.error());
      return true;
    });
    if (!w) return err(w.error().code == Errc::read_only ? "E_READ_ONLY" : "STORAGE_FAILURE");
    return new_session(sk);
  }
  if (cmd == "TOTP_VALIDATE") return new_session(sk);
  auto revoke = [&](const std::string& key) -> tl::expected<void, std::string> {
    auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
      if (auto r = tx.exec("DELETE FROM cryptpad_mfa WHERE key = ?", {key}); !r) return tl::unexpected(r.error());
      if (auto r = tx.exec("DELETE FROM cryptpad_auth_sessions WHERE key = ?", {key}); !r) return tl::unexpected(r.error());
      return true;
    });
    if (!w) return err(storage_code(w.error()));
    return {};
  };
  if (cmd == "TOTP_REVOKE") {
    if (auto r = revoke(sk); !r) return err(r.error());
    return std::string();
  }
  if (cmd == "TOTP_REMOVE_BLOCK") {
    if (auto r = remove_block(b); !r) return err(r.error());
    if (auto r = revoke(sk); !r) return err(r.error());
    return std::string();
  }
  if (cmd == "TOTP_WRITE_BLOCK") {
    if (auto w = write_block(b); !w) return err("BLOCK_WRITE_ERROR");
    auto content = object_field(b.fields, "content", limits_);
    auto proof = content ? str_field(*content, "registrationProof") : std::nullopt;
    auto old_key = proof ? ancestor_of(*proof, limits_) : std::nullopt;
    if (!old_key) return err("INVALID_ANCESTOR");
    const std::string old_sk = safe_key(*old_key);
    auto w = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
      auto r = tx.exec(
          "INSERT OR REPLACE INTO cryptpad_mfa(key, secret, contact, created) SELECT ?, secret, contact, created FROM "
          "cryptpad_mfa WHERE key = ?",
          {sk, old_sk});
      if (!r) return tl::unexpected(r.error());
      return true;
    });
    if (!w) return err(w.error().code == Errc::read_only ? "E_READ_ONLY" : "STORAGE_FAILURE");
    return new_session(sk);
  }
  return err("Not implemented");
}

net::HttpResponse CryptpadAuth::auth(const std::string& body) {
  auto parsed = parse_auth_body(body, limits_);
  if (!parsed) return json_error(500, parsed.error().message);
  const std::int64_t now = clock_.now_ms();
  if (!parsed->is_response) {
    std::string e = check(*parsed);
    if (!e.empty()) return json_error(500, e);
    Challenge c;
    // 24 random bytes, base64 with '/' → '-' (32 characters), as CryptPad.
    unsigned char raw[24];
    randombytes_buf(raw, sizeof raw);
    std::string txid = safe_key(base64_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw)));
    c.date = iso_date(now);
    c.created_ms = now;
    c.body = std::move(*parsed);
    const std::string date = c.date;
    {
      std::lock_guard lock(mu_);
      for (auto it = challenges_.begin(); it != challenges_.end();) {
        if (now - it->second.created_ms > options_.challenge_ms) it = challenges_.erase(it);
        else ++it;
      }
      if (challenges_.size() >= options_.max_challenges) return json_error(503, "Too many pending challenges");
      challenges_.emplace(txid, std::move(c));
    }
    JsonWriter w;
    w.begin_object().key("txid").value(txid).key("date").value(date).end_object();
    return net::HttpResponse::json(200, w.take());
  }
  Challenge c;
  {
    std::lock_guard lock(mu_);
    auto it = challenges_.find(parsed->txid);
    if (it == challenges_.end() || now - it->second.created_ms > options_.challenge_ms)
      return json_error(500, "Unexpected response");
    c = std::move(it->second);
    challenges_.erase(it);  // single use
  }
  auto text = challenge_signed_text(c.body.raw, parsed->txid, c.date);
  if (!text || !verify_detached(*text, parsed->sig, c.body.public_key)) return json_error(500, "Failed signature validation");
  auto result = complete(c.body);
  if (!result) {
    JsonWriter w;
    w.begin_object().key("error").value("Execution error").key("errorCode").value(result.error()).end_object();
    return net::HttpResponse::json(500, w.take());
  }
  return net::HttpResponse::json(200, *result);
}

net::HttpResponse CryptpadAuth::block(const std::string& sk, std::string_view authorization) {
  struct Row {
    bool found = false;
    std::optional<std::string> content;
    std::string removed;
  } row;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto q = tx.query_one("SELECT content, removed FROM cryptpad_blocks WHERE key = ?", {sk});
    if (!q) return tl::unexpected(q.error());
    if (!*q) return false;
    row.found = true;
    if (!(*q)->is_null(0)) row.content = std::string((*q)->blob(0));
    if (!(*q)->is_null(1)) row.removed = std::string((*q)->text(1));
    return true;
  });
  if (!r) return net::HttpResponse::json(500, R"({"code":500,"error":"UNEXPECTED_ERROR"})");
  auto not_found = [&] {
    JsonWriter w;
    w.begin_object();
    if (row.found && !row.content) w.key("reason").value(row.removed);
    w.key("code").value(404).end_object();
    return net::HttpResponse::json(404, w.take());
  };
  if (!row.content) return not_found();
  if (has_mfa(sk)) {
    auto no = net::HttpResponse::json(401, R"({"sso":false,"method":"TOTP","code":401})");
    std::string_view token = authorization;
    if (token.rfind("Bearer", 0) != 0) return no;
    token.remove_prefix(6);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (token.empty()) return no;
    const std::int64_t now = clock_.now_ms();
    auto valid = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
      auto q = tx.query_one("SELECT expires FROM cryptpad_auth_sessions WHERE key = ? AND id = ?", {sk, std::string(token)});
      if (!q) return tl::unexpected(q.error());
      return q->has_value() && (*q)->integer(0) > now;
    });
    if (!valid || !*valid) return no;
  }
  net::HttpResponse ok;
  ok.status = 200;
  ok.content_type = "application/octet-stream";
  ok.headers.push_back({"Cache-Control", "max-age=0"});
  ok.body = std::move(*row.content);
  return ok;
}

net::HttpResponse CryptpadAuth::upload_blob(const std::string& body) {
  auto chunk = parse_upload_chunk(body, limits_);
  if (!chunk) {
    if (chunk.error().code == Errc::unauthenticated) return json_error(403, "INVALID_KEY");
    return json_error(500, chunk.error().message);
  }
  auto cookie = files_.append_chunk(chunk->public_key, chunk->cookie, chunk->bytes);
  if (!cookie) return json_error(cookie.error() == "INVALID_COOKIE" ? 403 : 500, cookie.error());
  JsonWriter w;
  w.begin_object().key("cookie").value(*cookie).end_object();
  return net::HttpResponse::json(200, w.take());
}

}  // namespace hearth::cryptpad

namespace hearth::cryptpad {

namespace {

// "/<prefix>/<xx>/<name>" → name, when xx is the name's first two characters.
std::optional<std::string> sharded_name(std::string_view path, std::string_view prefix) {
  if (path.rfind(prefix, 0) != 0) return std::nullopt;
  path.remove_prefix(prefix.size());
  auto slash = path.find('/');
  if (slash != 2) return std::nullopt;
  std::string_view name = path.substr(3);
  if (name.size() < 2 || name.substr(0, 2) != path.substr(0, 2) || name.find('/') != std::string_view::npos)
    return std::nullopt;
  return std::string(name);
}

}  // namespace

void install_auth_routes(net::Router& router, std::shared_ptr<CryptpadAuth> auth, std::shared_ptr<CryptpadFiles> files,
                         const CryptpadOptions& options) {
  const auto extra = api_headers(options);
  net::RouteOptions blocking;
  blocking.blocking = true;
  blocking.max_body_bytes = 256 << 10;
  auto on_auth = [auth, extra](net::HttpRequest&& req, net::Respond respond) { with_headers(std::move(respond), extra)(auth->auth(req.body)); };
  router.add("POST", "/api/auth", on_auth, blocking);
  router.add("POST", "/api/auth/", on_auth, blocking);

  net::RouteOptions upload = blocking;
  upload.max_body_bytes = 512 << 10;  // CryptPad: 500 kB (a 128 KiB chunk is ~175 kB of base64)
  auto on_upload = [auth, extra](net::HttpRequest&& req, net::Respond respond) {
    with_headers(std::move(respond), extra)(auth->upload_blob(req.body));
  };
  router.add("POST", "/upload-blob", on_upload, upload);
  router.add_prefix("POST", "/upload-blob/", on_upload, upload);

  router.add_prefix("GET", "/block/", [auth, extra](net::HttpRequest&& req, net::Respond plain) {
    auto respond = with_headers(std::move(plain), extra);
    auto name = sharded_name(req.path, "/block/");
    if (!name || name->size() != 44) return respond(net::HttpResponse::json(404, R"({"error":"INVALID_ID"})"));
    respond(auth->block(*name, req.header("authorization")));
  }, blocking);

  const std::string embedder = options.http_safe_origin.empty() ? "*" : options.http_safe_origin;
  auto on_blob = [files, extra](net::HttpRequest&& req, net::Respond plain) {
    auto respond = with_headers(std::move(plain), extra);
    auto id = sharded_name(req.path, "/blob/");
    if (!id || !CryptpadFiles::is_file_id(*id)) return respond(net::HttpResponse::text(404, "Not found\n"));
    auto f = files->find(*id);
    if (!f) return respond(net::HttpResponse::text(500, "storage error\n"));
    if (!*f || (*f)->archived) return respond(net::HttpResponse::text(404, "Not found\n"));
    auto path = files->path_of(**f);
    if (!path) return respond(net::HttpResponse::text(500, "storage error\n"));
    net::HttpResponse r;
    r.content_type = "application/octet-stream";
    r.headers.push_back({"Cache-Control", "max-age=31536000"});
    r.headers.push_back({"Access-Control-Allow-Headers", "Content-Length"});
    r.headers.push_back({"Access-Control-Expose-Headers", "Content-Length"});
    r.body_file = std::move(*path);  // sent from disk in chunks, with Range
    respond(std::move(r));
  };
  net::RouteOptions reads;
  reads.blocking = true;
  router.add_prefix("GET", "/blob/", on_blob, reads);
  router.add_prefix("HEAD", "/blob/", on_blob, reads);
  router.add_prefix("OPTIONS", "/blob/", [embedder](net::HttpRequest&&, net::Respond respond) {
    net::HttpResponse r;
    r.status = 204;
    r.content_type.clear();
    r.headers.push_back({"Access-Control-Allow-Origin", embedder});
    r.headers.push_back({"Access-Control-Allow-Methods", "GET, OPTIONS"});
    r.headers.push_back({"Access-Control-Allow-Headers", "Content-Type, Content-Range, Range, Cache-Control"});
    r.headers.push_back({"Access-Control-Max-Age", "1728000"});
    respond(std::move(r));
  });

  // Each text is a translation map, as CryptPad's decrees store them: {"default": text}.
  JsonWriter w;
  w.begin_object();
  for (const auto& [name, text] : {std::pair<const char*, const std::string*>{"name", &options.instance_name},
                                   {"description", &options.instance_description},
                                   {"location", &options.instance_location},
                                   {"notice", &options.instance_notice}}) {
    w.key(name).begin_object();
    if (!text->empty()) w.key("default").value(*text);
    w.end_object();
  }
  w.end_object();
  // The loader of server plugins' client extensions; hearth has none.
  router.add("GET", "/extensions.js", [extra](net::HttpRequest&&, net::Respond plain) {
    auto respond = with_headers(std::move(plain), extra);
    net::HttpResponse r;
    r.content_type = "text/javascript";
    r.headers.push_back({"Cache-Control", "no-cache"});
    r.body = "define([], function () { return []; });\n";
    respond(std::move(r));
  });
  const std::string instance_js = "define(function (){\n    return " + w.str() + ";\n});";
  router.add("GET", "/api/instance", [instance_js, extra](net::HttpRequest&&, net::Respond plain) {
    auto respond = with_headers(std::move(plain), extra);
    net::HttpResponse r;
    r.content_type = "text/javascript";
    r.headers.push_back({"Cache-Control", "no-cache"});
    r.body = instance_js;
    respond(std::move(r));
  });
}

}  // namespace hearth::cryptpad
