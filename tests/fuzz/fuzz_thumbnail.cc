// Fuzzes the thumbnail decoders (libpng, libjpeg behind our size limits) in-process, as the
// sandboxed worker runs them: decoding never crashes, and whatever decodes resizes and
// encodes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "thumbnail/thumbnail.h"

using namespace hearth::thumbnail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto img = decode(bytes);
  if (!img) return 0;
  if (img->width * static_cast<std::int64_t>(img->height) > 4'000'000) return 0;  // keep runs fast
  Image t = resize(*img, 32, 32, Method::crop);
  if (t.width > 32 || t.height > 32) std::abort();
  if (!(t.channels == 4 ? encode_png(t) : encode_jpeg(t))) std::abort();
  return 0;
}
