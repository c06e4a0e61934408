// Fuzzes what a remote server controls: the first line as an X-Matrix Authorization
// header; the rest as {"events":{id: pdu}, "sets":[{"type\u0000state_key": id}]} run through
// state resolution v2 (arbitrary, even cyclic, auth graphs). Nothing may crash, and the
// resolution must not depend on the order of the state sets.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <map>
#include <string_view>

#include "matrix/federation.h"
#include "matrix/state_resolution.h"

using namespace hearth::matrix;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto nl = text.find('\n');
  (void)parse_x_matrix(text.substr(0, nl));
  if (nl == std::string_view::npos) return 0;
  auto v = parse_json(text.substr(nl + 1), {1 << 16, 16});
  if (!v) return 0;
  const JsonValue* events = v->get("events");
  const JsonValue* sets = v->get("sets");
  if (!events || !events->is_object() || !sets || !sets->is_array() || sets->items().size() > 8) return 0;
  std::map<std::string, JsonValue, std::less<>> by_id(events->members().begin(), events->members().end());
  EventLookup lookup = [&by_id](std::string_view id) -> const JsonValue* {
    auto it = by_id.find(id);
    return it == by_id.end() || !it->second.is_object() ? nullptr : &it->second;
  };
  std::vector<StateMap> state_sets;
  for (const auto& s : sets->items()) {
    if (!s.is_object()) return 0;
    StateMap m;
    for (const auto& [k, id] : s.members()) {
      auto zero = k.find('\0');
      if (zero == std::string::npos || !id.is_string()) return 0;
      m[{k.substr(0, zero), k.substr(zero + 1)}] = id.as_string();
    }
    state_sets.push_back(std::move(m));
  }
  StateResLimits limits{5000};
  auto a = resolve_state_v2(state_sets, RoomVersion::v11, lookup, limits);
  std::reverse(state_sets.begin(), state_sets.end());
  auto b = resolve_state_v2(state_sets, RoomVersion::v11, lookup, limits);
  if (bool(a) != bool(b) || (a && *a != *b)) std::abort();
  return 0;
}
