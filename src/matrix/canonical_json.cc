#include "matrix/canonical_json.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <simdjson.h>

#include "core/json.h"

namespace hearth::matrix {

JsonValue JsonValue::boolean(bool b) {
  JsonValue v;
  v.kind_ = Kind::boolean;
  v.bool_ = b;
  return v;
}
JsonValue JsonValue::integer(std::int64_t i) {
  JsonValue v;
  v.kind_ = Kind::integer;
  v.int_ = i;
  return v;
}
JsonValue JsonValue::string(std::string s) {
  JsonValue v;
  v.kind_ = Kind::string;
  v.str_ = std::move(s);
  return v;
}
JsonValue JsonValue::array(std::vector<JsonValue> items) {
  JsonValue v;
  v.kind_ = Kind::array;
  v.items_ = std::move(items);
  return v;
}
JsonValue JsonValue::object() {
  JsonValue v;
  v.kind_ = Kind::object;
  return v;
}

namespace {
auto member_less = [](const JsonValue::Member& m, std::string_view k) { return std::string_view(m.first) < k; };
}

const JsonValue* JsonValue::get(std::string_view key) const {
  if (kind_ != Kind::object) return nullptr;
  auto it = std::lower_bound(members_.begin(), members_.end(), key, member_less);
  return (it != members_.end() && it->first == key) ? &it->second : nullptr;
}

JsonValue* JsonValue::get(std::string_view key) {
  return const_cast<JsonValue*>(static_cast<const JsonValue*>(this)->get(key));
}

JsonValue& JsonValue::set(std::string key, JsonValue value) {
  if (kind_ == Kind::null) kind_ = Kind::object;
  auto it = std::lower_bound(members_.begin(), members_.end(), std::string_view(key), member_less);
  if (it != members_.end() && it->first == key) {
    it->second = std::move(value);
    return it->second;
  }
  return members_.emplace(it, std::move(key), std::move(value))->second;
}

bool JsonValue::erase(std::string_view key) {
  if (kind_ != Kind::object) return false;
  auto it = std::lower_bound(members_.begin(), members_.end(), key, member_less);
  if (it == members_.end() || it->first != key) return false;
  members_.erase(it);
  return true;
}

std::string_view JsonValue::string_at(std::string_view key) const {
  const JsonValue* v = get(key);
  return (v && v->is_string()) ? std::string_view(v->str_) : std::string_view();
}

bool JsonValue::operator==(const JsonValue& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::null: return true;
    case Kind::boolean: return bool_ == o.bool_;
    case Kind::integer: return int_ == o.int_;
    case Kind::string: return str_ == o.str_;
    case Kind::array: return items_ == o.items_;
    case Kind::object: return members_ == o.members_;
  }
  return false;
}

namespace {

using ParseResult = tl::expected<JsonValue, JsonParseError>;

tl::unexpected<JsonParseError> bad(std::string message) {
  return tl::unexpected(JsonParseError{JsonError::bad_json, std::move(message)});
}

ParseResult convert(simdjson::dom::element e, std::size_t depth, const JsonLimits& limits) {
  using simdjson::dom::element_type;
  switch (e.type()) {
    case element_type::NULL_VALUE: return JsonValue();
    case element_type::BOOL: return JsonValue::boolean(e.get_bool().value_unsafe());
    case element_type::INT64: {
      std::int64_t i = e.get_int64().value_unsafe();
      if (i > kMaxSafeInteger || i < -kMaxSafeInteger) return bad("integer out of range");
      return JsonValue::integer(i);
    }
    case element_type::UINT64: return bad("integer out of range");
    case element_type::DOUBLE: {
      double d = e.get_double().value_unsafe();
      if (!std::isfinite(d) || std::trunc(d) != d) return bad("numbers must be integers");
      if (d > static_cast<double>(kMaxSafeInteger) || d < -static_cast<double>(kMaxSafeInteger))
        return bad("integer out of range");
      return JsonValue::integer(static_cast<std::int64_t>(d));
    }
    case element_type::STRING: return JsonValue::string(std::string(e.get_string().value_unsafe()));
    case element_type::ARRAY: {
      if (depth >= limits.max_depth) return bad("nested too deeply");
      std::vector<JsonValue> items;
      simdjson::dom::array arr;
      if (e.get_array().get(arr) != simdjson::SUCCESS) return bad("malformed array");
      for (simdjson::dom::element child : arr) {
        auto v = convert(child, depth + 1, limits);
        if (!v) return v;
        items.push_back(std::move(*v));
      }
      return JsonValue::array(std::move(items));
    }
    case element_type::OBJECT: {
      if (depth >= limits.max_depth) return bad("nested too deeply");
      JsonValue obj = JsonValue::object();
      simdjson::dom::object fields;
      if (e.get_object().get(fields) != simdjson::SUCCESS) return bad("malformed object");
      for (auto field : fields) {
        auto v = convert(field.value, depth + 1, limits);
        if (!v) return v;
        if (obj.get(field.key)) return bad(fmt::format("duplicate key \"{}\"", field.key));
        obj.set(std::string(field.key), std::move(*v));
      }
      return obj;
    }
  }
  return bad("unknown JSON type");
}

}  // namespace

tl::expected<JsonValue, JsonParseError> parse_json(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) return bad("JSON text too large");
  simdjson::dom::parser parser;
  // simdjson's own depth limit sits one above ours so that "too deep" is reported by us.
  if (parser.allocate(std::max<std::size_t>(text.size(), 64), limits.max_depth + 2) != simdjson::SUCCESS)
    return bad("cannot allocate a parser");
  simdjson::dom::element root;
  auto err = parser.parse(text.data(), text.size(), true).get(root);
  if (err == simdjson::DEPTH_ERROR) return bad("nested too deeply");
  if (err == simdjson::NUMBER_OUT_OF_RANGE || err == simdjson::NUMBER_ERROR) return bad("invalid or out-of-range number");
  if (err != simdjson::SUCCESS)
    return tl::unexpected(JsonParseError{JsonError::not_json, simdjson::error_message(err)});
  return convert(root, 0, limits);
}

void canonical_json_to(std::string& out, const JsonValue& v) {
  switch (v.kind()) {
    case JsonValue::Kind::null: out += "null"; break;
    case JsonValue::Kind::boolean: out += v.as_bool() ? "true" : "false"; break;
    case JsonValue::Kind::integer: out += std::to_string(v.as_int()); break;
    case JsonValue::Kind::string: json_escape_to(out, v.as_string()); break;
    case JsonValue::Kind::array: {
      out += '[';
      bool first = true;
      for (const auto& item : v.items()) {
        if (!first) out += ',';
        first = false;
        canonical_json_to(out, item);
      }
      out += ']';
      break;
    }
    case JsonValue::Kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : v.members()) {
        if (!first) out += ',';
        first = false;
        json_escape_to(out, key);
        out += ':';
        canonical_json_to(out, value);
      }
      out += '}';
      break;
    }
  }
}

std::string canonical_json(const JsonValue& value) {
  std::string out;
  canonical_json_to(out, value);
  return out;
}

}  // namespace hearth::matrix
