#include "matrix/events.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include <fmt/format.h>
#include <sodium.h>

#include "core/random.h"

namespace hearth::matrix {

std::string base64_unpadded(std::string_view bytes, bool url_safe) {
  int variant = url_safe ? sodium_base64_VARIANT_URLSAFE_NO_PADDING : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  std::string out(sodium_base64_encoded_len(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                    variant);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  // Own decoder: lenient about the unused low bits of the last character, as the spec's
  // own example key ("...XA1") needs; strict about everything else.
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return fail(Errc::invalid_argument, "invalid base64 length");
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else return fail(Errc::invalid_argument, "invalid base64 character");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string sha256(std::string_view bytes) {
  std::string out(crypto_hash_sha256_BYTES, '\0');
  crypto_hash_sha256(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(bytes.data()),
                     bytes.size());
  return out;
}

SigningKey SigningKey::from_seed(std::string_view seed32, std::string version) {
  SigningKey k;
  k.key_id_ = "ed25519:" + version;
  crypto_sign_seed_keypair(k.public_key_.data(), k.secret_key_.data(),
                           reinterpret_cast<const unsigned char*>(seed32.data()));
  return k;
}

Result<SigningKey> SigningKey::load_or_create(const std::string& path) {
  namespace fs = std::filesystem;
  if (sodium_init() < 0) return fail(Errc::internal, "libsodium failed to initialise");
  std::error_code ec;
  if (fs::exists(path, ec)) {
    std::ifstream in(path);
    std::string algo, version, seed_b64;
    if (!(in >> algo >> version >> seed_b64) || algo != "ed25519")
      return fail(Errc::corrupt, fmt::format("{}: expected \"ed25519 <version> <base64 seed>\"", path));
    auto seed = base64_decode(seed_b64);
    if (!seed || seed->size() != 32) return fail(Errc::corrupt, fmt::format("{}: the seed is not 32 bytes", path));
    return from_seed(*seed, version);
  }
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) return fail(Errc::io, fmt::format("cannot create {}: {}", parent.string(), ec.message()));
    ::chmod(parent.c_str(), 0700);
  }
  std::string seed(32, '\0');
  randombytes_buf(seed.data(), seed.size());
  std::string version = "a_" + random_hex(2);
  std::string text = fmt::format("ed25519 {} {}\n", version, base64_unpadded(seed));
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::io, fmt::format("cannot write {}", tmp));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("cannot write {}", path));
  }
  sodium_memzero(text.data(), text.size());
  SigningKey key = from_seed(seed, version);
  sodium_memzero(seed.data(), seed.size());
  return key;
}

std::string SigningKey::public_key_base64() const {
  return base64_unpadded(std::string_view(reinterpret_cast<const char*>(public_key_.data()), public_key_.size()));
}

std::string SigningKey::sign(std::string_view message) const {
  std::string sig(crypto_sign_BYTES, '\0');
  crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size(), secret_key_.data());
  return sig;
}

bool verify_ed25519(std::string_view public_key32, std::string_view message, std::string_view signature64) {
  if (public_key32.size() != crypto_sign_PUBLICKEYBYTES || signature64.size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature64.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                     reinterpret_cast<const unsigned char*>(public_key32.data())) == 0;
}

namespace {
std::string signing_bytes(const JsonValue& object) {
  JsonValue copy = object;
  copy.erase("signatures");
  copy.erase("unsigned");
  return canonical_json(copy);
}
}  // namespace

void sign_json(JsonValue& object, std::string_view server_name, const SigningKey& key) {
  std::string sig = base64_unpadded(key.sign(signing_bytes(object)));
  JsonValue* sigs = object.get("signatures");
  if (!sigs || !sigs->is_object()) sigs = &object.set("signatures", JsonValue::object());
  JsonValue* server = sigs->get(server_name);
  if (!server || !server->is_object()) server = &sigs->set(std::string(server_name), JsonValue::object());
  server->set(key.key_id(), JsonValue::string(std::move(sig)));
}

bool verify_json_signature(const JsonValue& object, std::string_view server_name, std::string_view key_id,
                           std::string_view public_key32) {
  const JsonValue* sigs = object.get("signatures");
  const JsonValue* server = sigs ? sigs->get(server_name) : nullptr;
  const JsonValue* sig = server ? server->get(key_id) : nullptr;
  if (!sig || !sig->is_string()) return false;
  auto raw = base64_decode(sig->as_string());
  return raw && verify_ed25519(public_key32, signing_bytes(object), *raw);
}

Result<RoomVersion> parse_room_version(std::string_view id) {
  if (id == "10") return RoomVersion::v10;
  if (id == "11") return RoomVersion::v11;
  return fail(Errc::invalid_argument, fmt::format("unsupported room version \"{}\"", id));
}

std::string_view room_version_id(RoomVersion v) { return v == RoomVersion::v10 ? "10" : "11"; }

namespace {
JsonValue keep_only(const JsonValue& object, std::initializer_list<std::string_view> keys) {
  JsonValue out = JsonValue::object();
  for (auto k : keys)
    if (const JsonValue* v = object.get(k)) out.set(std::string(k), *v);
  return out;
}
}  // namespace

JsonValue redact_event(const JsonValue& event, RoomVersion version) {
  JsonValue out = version == RoomVersion::v10
                      ? keep_only(event, {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
                                          "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
                                          "origin_server_ts", "membership"})
                      : keep_only(event, {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
                                          "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"});
  const JsonValue* content = event.get("content");
  JsonValue kept = JsonValue::object();
  if (content && content->is_object()) {
    std::string_view type = event.string_at("type");
    bool v11 = version == RoomVersion::v11;
    if (type == "m.room.member") {
      kept = keep_only(*content, {"membership", "join_authorised_via_users_server"});
      if (v11) {
        const JsonValue* tpi = content->get("third_party_invite");
        if (tpi && tpi->is_object() && tpi->get("signed")) {
          JsonValue t = JsonValue::object();
          t.set("signed", *tpi->get("signed"));
          kept.set("third_party_invite", std::move(t));
        }
      }
    } else if (type == "m.room.create") {
      kept = v11 ? *content : keep_only(*content, {"creator"});
    } else if (type == "m.room.join_rules") {
      kept = keep_only(*content, {"join_rule", "allow"});
    } else if (type == "m.room.power_levels") {
      kept = v11 ? keep_only(*content, {"ban", "events", "events_default", "invite", "kick", "redact",
                                        "state_default", "users", "users_default"})
                 : keep_only(*content, {"ban", "events", "events_default", "kick", "redact", "state_default", "users",
                                        "users_default"});
    } else if (type == "m.room.history_visibility") {
      kept = keep_only(*content, {"history_visibility"});
    } else if (type == "m.room.redaction" && v11) {
      kept = keep_only(*content, {"redacts"});
    }
  }
  out.set("content", std::move(kept));
  return out;
}

std::string content_hash(const JsonValue& event) {
  JsonValue copy = event;
  copy.erase("unsigned");
  copy.erase("signatures");
  copy.erase("hashes");
  return sha256(canonical_json(copy));
}

std::string reference_hash(const JsonValue& event, RoomVersion version) {
  JsonValue redacted = redact_event(event, version);
  redacted.erase("signatures");
  redacted.erase("unsigned");
  return sha256(canonical_json(redacted));
}

std::string event_id_for(const JsonValue& event, RoomVersion version) {
  return "$" + base64_unpadded(reference_hash(event, version), true);
}

std::string hash_and_sign_event(JsonValue& event, RoomVersion version, std::string_view server_name,
                                const SigningKey& key) {
  JsonValue hashes = JsonValue::object();
  hashes.set("sha256", JsonValue::string(base64_unpadded(content_hash(event))));
  event.set("hashes", std::move(hashes));
  JsonValue redacted = redact_event(event, version);
  sign_json(redacted, server_name, key);
  event.set("signatures", *redacted.get("signatures"));
  return event_id_for(event, version);
}

}  // namespace hearth::matrix
