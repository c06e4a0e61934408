// Fuzzes the Matrix JSON parser and canonical serialiser: parsing never crashes, and
// whatever parses is a fixed point (canonical text re-parses to the same value and the
// same text), within the depth limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "matrix/canonical_json.h"
#include "matrix/events.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto v = hearth::matrix::parse_json(text, {1 << 16, 32});
  if (!v) return 0;
  std::string once = hearth::matrix::canonical_json(*v);
  auto again = hearth::matrix::parse_json(once, {1 << 20, 32});
  if (!again || !(*again == *v) || hearth::matrix::canonical_json(*again) != once) std::abort();
  if (v->is_object()) {
    (void)hearth::matrix::redact_event(*v, hearth::matrix::RoomVersion::v11);
    (void)hearth::matrix::event_id_for(*v, hearth::matrix::RoomVersion::v10);
  }
  return 0;
}
