// Fuzzes the admin protocol's JSON field extraction (what hearthctl reads from replies).
#include <cstddef>
#include <cstdint>
#include <string>

#include "ops/admin.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string json(reinterpret_cast<const char*>(data), size);
  (void)hearth::ops::json_field(json, "ok");
  (void)hearth::ops::json_field(json, "result");
  return 0;
}
