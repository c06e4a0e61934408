// Fuzzes what a remote server controls in a federation media download: the first line as
// the Content-Type header, the rest as the multipart body. Nothing may crash; a parsed
// media part's bytes must lie inside the body.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "matrix/media_multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto nl = text.find('\n');
  if (nl == std::string_view::npos) return 0;
  std::string_view body = text.substr(nl + 1);
  auto part = hearth::matrix::parse_media_multipart(text.substr(0, nl), body);
  if (part && !part->bytes.empty() &&
      (part->bytes.data() < body.data() || part->bytes.data() + part->bytes.size() > body.data() + body.size()))
    std::abort();
  return 0;
}
