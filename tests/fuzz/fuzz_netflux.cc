// Fuzzes the netflux frame parser and the history-keeper/RPC request parser: must never
// crash, every raw slice handed out must itself be valid JSON of the same type, and the
// signed text of an RPC request must parse as a 3-element array.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cryptpad/metadata.h"
#include "cryptpad/protocol.h"

using namespace hearth::cryptpad;

namespace {
void check_raw(const RawValue& v, const ParseLimits& limits) {
  auto again = parse_array("[" + v.raw + "]", limits);
  if (!again || again->size() != 1 || (*again)[0].type != v.type) __builtin_trap();
  if (v.is_string() && (*again)[0].text != v.text) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ParseLimits limits;
  limits.max_bytes = 1 << 16;
  limits.max_depth = 16;
  ParseLimits roomy = limits;
  roomy.max_depth = 18;  // re-parsing a slice inside "[...]" adds one level
  if (auto f = parse_frame(text, limits)) {
    for (const auto& a : f->args) check_raw(a, roomy);
  }
  if (auto r = parse_hk_request(text, limits)) {
    if (!r->is_history && r->rpc.authenticated) {
      auto signed_parts = parse_array(r->rpc.signed_text, roomy);
      if (!signed_parts || signed_parts->size() != 3) __builtin_trap();
    }
    if (r->is_history && !r->history.metadata_raw.empty()) {
      (void)ChannelMeta::initial(std::string(32, 'a'), r->history.metadata_raw, 0, roomy);
    }
  }
  auto cp = parse_checkpoint(text);
  if (cp.body.size() > text.size()) __builtin_trap();
  (void)classify_channel(text);
  return 0;
}
