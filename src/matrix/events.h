// Event crypto and formats for room versions 10 and 11: unpadded base64, SHA-256 content
// hashes, reference hashes (event ids), ed25519 signatures on canonical JSON, and the
// redaction algorithm. Everything works on JsonValue and is pure (no I/O) except
// SigningKey::load_or_create, which reads or writes the key file once at start-up.
//
// Spec sections: appendices "Signing JSON", server-server "Calculating the content hash
// for an event", "Calculating the reference hash for an event", room versions 10/11
// "Redactions" and "Event IDs".
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "matrix/canonical_json.h"

namespace hearth::matrix {

// RFC 4648 base64 without '=' padding; url_safe uses '-' and '_'.
std::string base64_unpadded(std::string_view bytes, bool url_safe = false);
// Accepts the standard or URL-safe alphabet, with or without padding.
Result<std::string> base64_decode(std::string_view text);
std::string sha256(std::string_view bytes);  // raw 32 bytes

// An ed25519 server signing key. A plain value; signing is thread-safe.
class SigningKey {
 public:
  // The key from a 32-byte seed, named "ed25519:<version>".
  static SigningKey from_seed(std::string_view seed32, std::string version);
  // Reads `path` ("ed25519 <version> <unpadded base64 seed>", the format Synapse and
  // Dendrite tools also read), or generates a key, writes it (mode 0600, temp file +
  // rename, parent directory created 0700) and returns it. The key never changes after.
  static Result<SigningKey> load_or_create(const std::string& path);

  const std::string& key_id() const { return key_id_; }  // "ed25519:a_1b2c"
  std::string public_key_base64() const;
  std::string sign(std::string_view message) const;  // raw 64-byte signature
  const std::array<unsigned char, 32>& public_key() const { return public_key_; }

 private:
  std::string key_id_;
  std::array<unsigned char, 64> secret_key_{};
  std::array<unsigned char, 32> public_key_{};
};

bool verify_ed25519(std::string_view public_key32, std::string_view message, std::string_view signature64);

// Adds signatures[server_name][key_id] over the canonical JSON of `object` without its
// "signatures" and "unsigned" members (which are kept as they were).
void sign_json(JsonValue& object, std::string_view server_name, const SigningKey& key);
// Checks signatures[server_name][key_id] with the given public key.
bool verify_json_signature(const JsonValue& object, std::string_view server_name, std::string_view key_id,
                           std::string_view public_key32);

enum class RoomVersion { v10, v11 };
// "10" | "11"; nullopt-like failure for anything else.
Result<RoomVersion> parse_room_version(std::string_view id);
std::string_view room_version_id(RoomVersion v);

// The redacted copy of an event (PDU) as the room version's redaction algorithm defines.
JsonValue redact_event(const JsonValue& event, RoomVersion version);

// SHA-256 of the canonical JSON of the event without "unsigned", "signatures", "hashes".
std::string content_hash(const JsonValue& event);
// SHA-256 of the canonical JSON of the redacted event without "signatures" and "unsigned".
std::string reference_hash(const JsonValue& event, RoomVersion version);
// "$" + URL-safe unpadded base64 of the reference hash (room versions 4 and later).
std::string event_id_for(const JsonValue& event, RoomVersion version);

// Completes a new local PDU: sets hashes.sha256 (content hash), then signs the redacted
// event and copies that signature into the PDU. Returns the event id.
std::string hash_and_sign_event(JsonValue& event, RoomVersion version, std::string_view server_name,
                                const SigningKey& key);

}  // namespace hearth::matrix
