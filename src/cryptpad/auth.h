// CryptPad's HTTP endpoints besides /api/config and /api/broadcast (private to the
// module): POST /api/auth (the two-step challenge: MFA_CHECK, WRITE_BLOCK, REMOVE_BLOCK,
// UPLOAD_COOKIE, TOTP_SETUP, TOTP_VALIDATE, TOTP_MFA_CHECK, TOTP_REVOKE,
// TOTP_WRITE_BLOCK, TOTP_REMOVE_BLOCK), GET /block/<xx>/<key> (login blocks, with the
// bearer-session rule once TOTP is on), POST /upload-blob (chunks), GET/HEAD
// /blob/<xx>/<id> and GET /api/instance.
//
// Login blocks, TOTP settings and TOTP sessions are rows (cryptpad_blocks, cryptpad_mfa,
// cryptpad_auth_sessions), keyed by the "safe" key (base64 with '/' → '-'), committed
// before the answer. Challenges between the two steps are kept in memory (bounded, five
// minutes): they are single-use and worthless after a restart, when the client starts
// over.
//
// Handlers block on the store: they are registered as blocking routes (net's worker pool).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cryptpad/cryptpad.h"
#include "cryptpad/auth_protocol.h"
#include "cryptpad/protocol.h"

namespace hearth::cryptpad {

class CryptpadFiles;

struct AuthOptions {
  std::int64_t totp_session_ms = 7LL * 24 * 3600 * 1000;  // CryptPad's otpSessionExpiration default
  std::size_t max_challenges = 10000;
  std::int64_t challenge_ms = 5 * 60 * 1000;
};

class CryptpadAuth {
 public:
  CryptpadAuth(store::Store& store, Clock& clock, CryptpadFiles& files, AuthOptions options = {});

  net::HttpResponse auth(const std::string& body);
  net::HttpResponse block(const std::string& safe_key, std::string_view authorization);
  net::HttpResponse upload_blob(const std::string& body);

  // Admin archival of a block (kept, restorable; GET /block answers 404 with the reason)
  // and its restoration; ENOENT when there is nothing to archive or restore.
  tl::expected<void, std::string> archive_block(const std::string& key, const std::string& reason);
  tl::expected<void, std::string> restore_block(const std::string& key);

 private:
  struct Challenge {
    AuthBody body;
    std::string date;
    std::int64_t created_ms = 0;
  };
  // First-step checks; "" when the command may proceed, else CryptPad's error.
  std::string check(const AuthBody& b);
  // Second step; the JSON answer or an error code.
  tl::expected<std::string, std::string> complete(const AuthBody& b);

  bool has_mfa(const std::string& safe_key, std::string* secret = nullptr, std::string* contact = nullptr);
  bool block_exists(const std::string& safe_key);
  tl::expected<void, std::string> write_block(const AuthBody& b);
  tl::expected<void, std::string> remove_block(const AuthBody& b);
  tl::expected<std::string, std::string> new_session(const std::string& safe_key);

  store::Store& store_;
  Clock& clock_;
  CryptpadFiles& files_;
  AuthOptions options_;
  ParseLimits limits_;
  std::mutex mu_;
  std::map<std::string, Challenge> challenges_;  // by txid
};

// Registers the routes above (and GET /api/instance) on the router.
void install_auth_routes(net::Router& router, std::shared_ptr<CryptpadAuth> auth, std::shared_ptr<CryptpadFiles> files,
                         const CryptpadOptions& options);

// base64 key with '/' replaced by '-', as CryptPad names its files.
std::string safe_key(std::string_view key);

}  // namespace hearth::cryptpad
