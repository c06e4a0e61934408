// hearth::thumbnail — image thumbnails made in a separate, sandboxed worker process.
//
// Untrusted images are never decoded inside hearthd (design.md): make_thumbnail() starts
// `<exe> --thumbnail-worker W H METHOD` (hearthd itself, by /proc/self/exe), writes the
// image to its stdin and reads the thumbnail from its stdout, with a wall-clock deadline
// and an output limit. The worker (run_worker()) closes every other file descriptor,
// limits its CPU time, memory and file size with rlimits, installs a seccomp filter that
// allows only read/write/memory/exit system calls, and only then decodes.
//
// Formats: PNG (libpng) and JPEG (libjpeg-turbo's libjpeg API) in; PNG out for PNG, JPEG
// out for JPEG. Methods: "scale" (fit inside W×H, aspect ratio kept) and "crop" (fill
// W×H, centre cropped, aspect ratio kept); never larger than the original.
//
// Everything here is blocking; make_thumbnail() belongs on a worker thread. No state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hearth::thumbnail {

inline constexpr std::size_t kMaxInputBytes = 32u << 20;
inline constexpr std::int64_t kMaxPixels = 40'000'000;  // decoded size is checked before allocating
inline constexpr int kMaxSide = 2048;                    // of a requested thumbnail

struct Image {
  int width = 0, height = 0, channels = 0;  // 3 (RGB) or 4 (RGBA)
  std::vector<std::uint8_t> pixels;         // row-major, no padding
};

enum class Method { scale, crop };

// --- pure image functions (used by the worker; unit-tested in-process on trusted input)
// "image/png" or "image/jpeg" from the magic bytes; "" otherwise.
std::string_view sniff(std::string_view bytes);
Result<Image> decode(std::string_view bytes);
// The thumbnail size for a source of w×h asked as W×H with `method`.
void target_size(int w, int h, int want_w, int want_h, Method method, int* out_w, int* out_h);
Image resize(const Image& src, int want_w, int want_h, Method method);
Result<std::string> encode_png(const Image& img);
Result<std::string> encode_jpeg(const Image& img, int quality = 85);

// --- the worker process
// Entry point for `hearthd --thumbnail-worker W H METHOD`; returns the exit code.
int run_worker(int argc, char** argv);

struct Thumbnail {
  std::string content_type;
  std::string bytes;
};
// Runs the worker on `image`. invalid_argument for an unsupported or broken image,
// unavailable when the worker failed or ran out of time.
Result<Thumbnail> make_thumbnail(const std::string& exe, std::string_view image, int width, int height, Method method,
                                 int timeout_ms = 10'000);

}  // namespace hearth::thumbnail
