// A small JSON writer (no third-party headers). Parsing uses simdjson inside the .cc files
// that need it; this writer is what every module uses to produce JSON.
//
// JsonWriter appends to a string and tracks whether a comma is due; it does not validate
// nesting (a debug assertion catches misuse in tests). Strings are escaped per RFC 8259
// with lowercase \u00xx for control characters (the form Matrix canonical JSON requires).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hearth {

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }
  JsonWriter& value(std::int64_t n);
  JsonWriter& value(int n) { return value(static_cast<std::int64_t>(n)); }
  JsonWriter& value(std::uint64_t n);
  JsonWriter& value(double d);
  JsonWriter& value(bool b);
  JsonWriter& null();
  // Inserts already-serialised JSON as a value.
  JsonWriter& raw(std::string_view json);

  const std::string& str() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void separator();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

void json_escape_to(std::string& out, std::string_view s);
std::string json_quote(std::string_view s);

}  // namespace hearth
