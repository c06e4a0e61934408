#include "cryptpad/protocol.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include <simdjson.h>

namespace hearth::cryptpad {
namespace {

// Skips one JSON value of text that simdjson already validated; returns the index after it.
std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size()) return i;
  char c = s[i];
  if (c == '"') {
    for (++i; i < s.size(); ++i) {
      if (s[i] == '\\') ++i;
      else if (s[i] == '"') return i + 1;
    }
    return s.size();
  }
  if (c == '[' || c == '{') {
    int depth = 0;
    for (; i < s.size(); ++i) {
      char d = s[i];
      if (d == '"') {
        i = skip_value(s, i) - 1;
      } else if (d == '[' || d == '{') {
        ++depth;
      } else if (d == ']' || d == '}') {
        if (--depth == 0) return i + 1;
      }
    }
    return s.size();
  }
  while (i < s.size() && s[i] != ',' && s[i] != ']' && s[i] != '}' && s[i] != ' ' && s[i] != '\t' &&
         s[i] != '\n' && s[i] != '\r')
    ++i;
  return i;
}

std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

RawValue to_raw(simdjson::dom::element e, std::string_view raw) {
  RawValue v;
  v.raw = std::string(raw);
  switch (e.type()) {
    case simdjson::dom::element_type::ARRAY: v.type = RawValue::Type::array; break;
    case simdjson::dom::element_type::OBJECT: v.type = RawValue::Type::object; break;
    case simdjson::dom::element_type::STRING: {
      v.type = RawValue::Type::string;
      std::string_view sv;
      if (e.get_string().get(sv) == simdjson::SUCCESS) v.text = std::string(sv);
      break;
    }
    case simdjson::dom::element_type::INT64:
      v.type = RawValue::Type::number;
      v.is_integer = true;
      v.integer = e.get_int64().value_unsafe();
      break;
    case simdjson::dom::element_type::UINT64:
      v.type = RawValue::Type::number;
      break;
    case simdjson::dom::element_type::DOUBLE: {
      v.type = RawValue::Type::number;
      double d = e.get_double().value_unsafe();
      if (d == static_cast<double>(static_cast<std::int64_t>(d)) && d > -9.2e18 && d < 9.2e18) {
        v.is_integer = true;
        v.integer = static_cast<std::int64_t>(d);
      }
      break;
    }
    case simdjson::dom::element_type::BOOL:
      v.type = RawValue::Type::boolean;
      v.boolean = e.get_bool().value_unsafe();
      break;
    case simdjson::dom::element_type::NULL_VALUE: v.type = RawValue::Type::null; break;
  }
  return v;
}

// A per-thread parser with the depth limit applied.
Result<simdjson::dom::element> parse_doc(simdjson::dom::parser& parser, std::string_view json,
                                         const ParseLimits& limits) {
  if (json.size() > limits.max_bytes) return fail(Errc::invalid_argument, "JSON text too large");
  if (parser.max_depth() != limits.max_depth) {
    if (parser.allocate(std::max<std::size_t>(json.size(), 4096), limits.max_depth) != simdjson::SUCCESS)
      return fail(Errc::resource_exhausted, "cannot allocate the JSON parser");
  }
  simdjson::dom::element doc;
  auto err = parser.parse(json.data(), json.size(), true).get(doc);
  if (err == simdjson::DEPTH_ERROR) return fail(Errc::invalid_argument, "JSON nesting too deep");
  if (err != simdjson::SUCCESS) return fail(Errc::invalid_argument, "not JSON");
  return doc;
}

// Raw slices of the top-level members of an array or object text (already validated).
std::vector<std::string_view> member_slices(std::string_view s, bool object) {
  std::vector<std::string_view> out;
  std::size_t i = skip_ws(s, 0);
  if (i >= s.size()) return out;
  ++i;  // '[' or '{'
  for (;;) {
    i = skip_ws(s, i);
    if (i >= s.size() || s[i] == ']' || s[i] == '}') break;
    if (object) {
      i = skip_value(s, i);  // key
      i = skip_ws(s, i);
      ++i;  // ':'
      i = skip_ws(s, i);
    }
    std::size_t start = i;
    i = skip_value(s, i);
    out.push_back(s.substr(start, i - start));
    i = skip_ws(s, i);
    if (i < s.size() && s[i] == ',') ++i;
  }
  return out;
}

thread_local simdjson::dom::parser tls_parser;

}  // namespace

Result<std::vector<RawValue>> parse_array(std::string_view json, const ParseLimits& limits) {
  auto doc = parse_doc(tls_parser, json, limits);
  if (!doc) return tl::unexpected(doc.error());
  simdjson::dom::array arr;
  if (doc->get_array().get(arr) != simdjson::SUCCESS) return fail(Errc::invalid_argument, "not a JSON array");
  auto slices = member_slices(json, false);
  std::vector<RawValue> out;
  out.reserve(slices.size());
  std::size_t i = 0;
  for (auto e : arr) {
    if (i >= slices.size()) return fail(Errc::internal, "JSON slice mismatch");
    out.push_back(to_raw(e, slices[i++]));
  }
  if (i != slices.size()) return fail(Errc::internal, "JSON slice mismatch");
  return out;
}

Result<std::vector<std::pair<std::string, RawValue>>> parse_object(std::string_view json, const ParseLimits& limits) {
  auto doc = parse_doc(tls_parser, json, limits);
  if (!doc) return tl::unexpected(doc.error());
  simdjson::dom::object obj;
  if (doc->get_object().get(obj) != simdjson::SUCCESS) return fail(Errc::invalid_argument, "not a JSON object");
  auto slices = member_slices(json, true);
  std::vector<std::pair<std::string, RawValue>> out;
  std::size_t i = 0;
  for (auto field : obj) {
    if (i >= slices.size()) return fail(Errc::internal, "JSON slice mismatch");
    out.emplace_back(std::string(field.key), to_raw(field.value, slices[i++]));
  }
  if (i != slices.size()) return fail(Errc::internal, "JSON slice mismatch");
  return out;
}

Result<Frame> parse_frame(std::string_view json, const ParseLimits& limits) {
  auto arr = parse_array(json, limits);
  if (!arr) return tl::unexpected(arr.error());
  auto& v = *arr;
  if (v.size() < 2) return fail(Errc::invalid_argument, "frame has fewer than two elements");
  Frame f;
  if (v[0].type != RawValue::Type::number || !v[0].is_integer || v[0].integer < 0)
    return fail(Errc::invalid_argument, "frame sequence is not a non-negative integer");
  f.seq = v[0].integer;
  if (v.size() >= 3 && v[1].is_string() && v[1].text.empty() && v[2].is_string() && v[2].text == "PONG") {
    f.cmd = "PONG";
    f.args.assign(std::make_move_iterator(v.begin() + 3), std::make_move_iterator(v.end()));
    return f;
  }
  if (!v[1].is_string()) return fail(Errc::invalid_argument, "frame command is not a string");
  f.cmd = std::move(v[1].text);
  f.args.assign(std::make_move_iterator(v.begin() + 2), std::make_move_iterator(v.end()));
  return f;
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); });
}

ChannelKind classify_channel(std::string_view id) {
  if (id.size() == 32 && is_hex(id)) return ChannelKind::stored;
  if (id.size() == 34 && is_hex(id)) return ChannelKind::ephemeral;
  if (id.size() == 33 && id.find_first_not_of('0') == std::string_view::npos) return ChannelKind::broadcast;
  if (id.size() < 32 || id.size() > 49) return ChannelKind::invalid;
  for (char c : id) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '=' || c == '-';
    if (!ok) return ChannelKind::invalid;
  }
  return ChannelKind::other;
}

Checkpoint parse_checkpoint(std::string_view content) {
  Checkpoint cp;
  if (content.substr(0, 3) != "cp|") {
    cp.body = content;
    return cp;
  }
  cp.is_checkpoint = true;
  std::string_view rest = content.substr(3);
  // Same shape the clients strip: an optional id of up to 20 base64 characters then '|'.
  std::size_t bar = rest.find('|');
  if (bar != std::string_view::npos && bar <= 20) {
    std::string_view id = rest.substr(0, bar);
    bool b64 = std::all_of(id.begin(), id.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '/' || c == '=';
    });
    if (b64) {
      cp.id = std::string(id);
      cp.body = rest.substr(bar + 1);
      return cp;
    }
  }
  cp.body = rest;
  return cp;
}

std::optional<std::string> base64_decode(std::string_view b64) {
  if (sodium_init() < 0) return std::nullopt;
  std::string out(b64.size() / 4 * 3 + 3, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), b64.data(), b64.size(), nullptr,
                        &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0)
    return std::nullopt;
  if (end != b64.data() + b64.size()) return std::nullopt;
  out.resize(len);
  return out;
}

std::string base64_encode(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

bool is_valid_public_key(std::string_view key_b64) {
  auto key = base64_decode(key_b64);
  return key && key->size() == crypto_sign_PUBLICKEYBYTES;
}

Result<void> verify_channel_message(std::string_view content, std::string_view validate_key_b64) {
  auto key = base64_decode(validate_key_b64);
  if (!key || key->size() != crypto_sign_PUBLICKEYBYTES) return fail(Errc::invalid_argument, "malformed validateKey");
  auto signed_msg = base64_decode(parse_checkpoint(content).body);
  if (!signed_msg) return fail(Errc::invalid_argument, "message is not base64");
  if (signed_msg->size() < crypto_sign_BYTES) return fail(Errc::invalid_argument, "message shorter than a signature");
  const auto* bytes = reinterpret_cast<const unsigned char*>(signed_msg->data());
  if (crypto_sign_verify_detached(bytes, bytes + crypto_sign_BYTES, signed_msg->size() - crypto_sign_BYTES,
                                  reinterpret_cast<const unsigned char*>(key->data())) != 0)
    return fail(Errc::unauthenticated, "bad signature");
  return ok();
}

Result<void> verify_detached(std::string_view message, std::string_view signature_b64, std::string_view public_key_b64) {
  auto key = base64_decode(public_key_b64);
  auto sig = base64_decode(signature_b64);
  if (!key || key->size() != crypto_sign_PUBLICKEYBYTES || !sig || sig->size() != crypto_sign_BYTES)
    return fail(Errc::invalid_argument, "malformed key or signature");
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                  reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                  reinterpret_cast<const unsigned char*>(key->data())) != 0)
    return fail(Errc::unauthenticated, "bad signature");
  return ok();
}

std::int64_t oldest_kept_checkpoint(const HistoryIndex& index) {
  const auto& cps = index.checkpoints;
  for (std::size_t i = 0; i < cps.size(); ++i) {
    if (i + 2 >= cps.size() || cps[i] > index.last_seq - 100) return cps[i];
  }
  return 1;
}

std::optional<std::int64_t> history_start(const HistoryIndex& index, std::optional<std::int64_t> known_seq) {
  if (!known_seq) return index.checkpoints.size() < 2 ? 1 : oldest_kept_checkpoint(index);
  if (*known_seq < 1 || *known_seq > index.last_seq) return std::nullopt;
  if (!index.checkpoints.empty() && *known_seq < oldest_kept_checkpoint(index)) return std::nullopt;
  return *known_seq;
}

namespace {

const RawValue* member(const std::vector<std::pair<std::string, RawValue>>& obj, std::string_view key) {
  for (const auto& [k, v] : obj)
    if (k == key) return &v;
  return nullptr;
}

std::optional<std::int64_t> int_member(const std::vector<std::pair<std::string, RawValue>>& obj, std::string_view key) {
  const RawValue* v = member(obj, key);
  if (v && v->type == RawValue::Type::number && v->is_integer) return v->integer;
  return std::nullopt;
}

}  // namespace

Result<HkRequest> parse_hk_request(std::string_view content, const ParseLimits& limits) {
  auto arr = parse_array(content, limits);
  if (!arr) return tl::unexpected(arr.error());
  auto& v = *arr;
  HkRequest req;
  if (!v.empty() && v[0].is_string() &&
      (v[0].text == "GET_HISTORY" || v[0].text == "GET_HISTORY_RANGE" || v[0].text == "GET_FULL_HISTORY")) {
    req.is_history = true;
    auto& h = req.history;
    h.kind = v[0].text == "GET_HISTORY"         ? HistoryRequest::Kind::get_history
             : v[0].text == "GET_HISTORY_RANGE" ? HistoryRequest::Kind::get_history_range
                                                : HistoryRequest::Kind::get_full_history;
    if (v.size() < 2 || !v[1].is_string()) return fail(Errc::invalid_argument, "history request without a channel");
    h.channel = v[1].text;
    if (v.size() >= 3 && v[2].type == RawValue::Type::object) {
      auto obj = parse_object(v[2].raw, limits);
      if (!obj) return tl::unexpected(obj.error());
      if (const RawValue* t = member(*obj, "txid"); t && t->type != RawValue::Type::null) h.txid_raw = t->raw;
      if (const RawValue* l = member(*obj, "lastKnownHash"); l && l->is_string()) h.last_known_hash = l->text;
      if (const RawValue* m = member(*obj, "metadata"); m && m->type == RawValue::Type::object) h.metadata_raw = m->raw;
      h.priority = int_member(*obj, "priority");
      if (const RawValue* f = member(*obj, "from"); f && f->is_string()) h.from = f->text;
      if (const RawValue* t = member(*obj, "to"); t && t->is_string()) h.to = t->text;
      h.count = int_member(*obj, "count");
      h.cp_count = int_member(*obj, "cpCount");
    }
    return req;
  }
  if (v.size() != 2 || v[1].type != RawValue::Type::array)
    return fail(Errc::invalid_argument, "not a history or RPC request");
  auto& r = req.rpc;
  r.txid_raw = v[0].raw;
  auto data = parse_array(v[1].raw, limits);
  if (!data) return tl::unexpected(data.error());
  auto& d = *data;
  if (d.size() == 2 && d[0].is_string()) {
    r.command = d[0].text;
    r.arg = std::move(d[1]);
    return req;
  }
  if (d.size() == 5 && d[0].is_string() && d[1].is_string() && d[3].is_string()) {
    r.authenticated = true;
    r.signature = d[0].text;
    r.public_key = d[1].text;
    if (d[2].is_string()) r.cookie = d[2].text;
    r.command = d[3].text;
    r.signed_text = "[" + d[2].raw + "," + d[3].raw + "," + d[4].raw + "]";
    r.arg = std::move(d[4]);
    return req;
  }
  return fail(Errc::invalid_argument, "malformed RPC request");
}

}  // namespace hearth::cryptpad
