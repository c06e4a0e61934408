// Fuzzes the invitation page's form decoding and HTML escaping.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ops/http_routes.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  for (auto key : {"username", "password", "confirm", ""}) {
    auto value = hearth::ops::form_value(body, key);
    auto escaped = hearth::ops::html_escape(value);
    if (escaped.find('<') != std::string::npos || escaped.find('"') != std::string::npos) __builtin_trap();
  }
  return 0;
}
