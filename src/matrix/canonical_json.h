// Matrix JSON values: a parser with limits (simdjson underneath) and the canonical
// serialisation the spec's signing and hashing rules need (appendices, "Canonical JSON"):
// object keys sorted by their UTF-8 bytes, no insignificant whitespace, integers only
// (within ±(2^53 − 1)), shortest escapes with lowercase \u00xx for control characters.
//
// JsonValue is a plain value type (no shared state); objects keep their members sorted by
// key bytes at all times, so serialising is one walk and lookups are binary searches.
// Nothing here touches I/O; every function is safe to call from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace hearth::matrix {

inline constexpr std::int64_t kMaxSafeInteger = 9007199254740991;  // 2^53 - 1

class JsonValue {
 public:
  enum class Kind { null, boolean, integer, string, array, object };
  using Member = std::pair<std::string, JsonValue>;

  JsonValue() = default;
  static JsonValue boolean(bool b);
  static JsonValue integer(std::int64_t i);
  static JsonValue string(std::string s);
  static JsonValue array(std::vector<JsonValue> items = {});
  static JsonValue object();

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_int() const { return kind_ == Kind::integer; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  bool as_bool() const { return bool_; }
  std::int64_t as_int() const { return int_; }
  const std::string& as_string() const { return str_; }
  const std::vector<JsonValue>& items() const { return items_; }
  std::vector<JsonValue>& items() { return items_; }
  const std::vector<Member>& members() const { return members_; }

  // Object access. get() returns nullptr when absent (or when this is not an object).
  const JsonValue* get(std::string_view key) const;
  JsonValue* get(std::string_view key);
  // Inserts or replaces; turns a null value into an object first.
  JsonValue& set(std::string key, JsonValue value);
  bool erase(std::string_view key);
  // Convenience: the string at `key`, or "" when absent or not a string.
  std::string_view string_at(std::string_view key) const;

  bool operator==(const JsonValue& other) const;

 private:
  Kind kind_ = Kind::null;
  bool bool_ = false;
  std::int64_t int_ = 0;
  std::string str_;
  std::vector<JsonValue> items_;
  std::vector<Member> members_;  // sorted by key bytes, keys unique
};

struct JsonLimits {
  std::size_t max_bytes = 1 << 20;
  std::size_t max_depth = 64;  // nesting of arrays and objects
};

// Why parsing failed; maps to the spec's M_NOT_JSON (not JSON at all) or M_BAD_JSON
// (JSON, but not what Matrix accepts: duplicate keys, a fraction, an integer out of
// range, too deep, too big).
enum class JsonError { not_json, bad_json };

struct JsonParseError {
  JsonError kind;
  std::string message;
};

// Parses one JSON text. Numbers must be integers within ±(2^53 − 1); a number written
// with an exponent or fraction is accepted only when its value is such an integer (the
// spec's own example canonicalises 1e10 to 10000000000 and -0 to 0). Duplicate object
// keys are rejected. Strings must be valid UTF-8 (surrogate escapes must pair up).
tl::expected<JsonValue, JsonParseError> parse_json(std::string_view text, const JsonLimits& limits = {});

// The canonical form (compact, keys sorted by UTF-8 bytes).
std::string canonical_json(const JsonValue& value);
void canonical_json_to(std::string& out, const JsonValue& value);

}  // namespace hearth::matrix
