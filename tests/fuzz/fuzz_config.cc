// Fuzzes the TOML configuration parser: any input yields a Config or an Error, never a
// crash, hang or uncaught exception.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = hearth::parse_config(text, "fuzz.toml");
  if (config && config->domains.empty()) __builtin_trap();  // invariant: always a primary domain
  return 0;
}
