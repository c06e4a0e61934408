#include "thumbnail/thumbnail.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>

#include <jpeglib.h>
#include <png.h>

namespace hearth::thumbnail {

std::string_view sniff(std::string_view b) {
  if (b.size() >= 8 && b.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8)) return "image/png";
  if (b.size() >= 3 && b.substr(0, 3) == std::string_view("\xff\xd8\xff", 3)) return "image/jpeg";
  return "";
}

namespace {

Result<Image> decode_png(std::string_view bytes) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()))
    return fail(Errc::invalid_argument, "not a readable PNG");
  if (png.width == 0 || png.height == 0 || std::int64_t{png.width} * png.height > kMaxPixels) {
    png_image_free(&png);
    return fail(Errc::invalid_argument, "PNG too large");
  }
  png.format = PNG_FORMAT_RGBA;
  Image img;
  img.width = static_cast<int>(png.width);
  img.height = static_cast<int>(png.height);
  img.channels = 4;
  img.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, img.pixels.data(), 0, nullptr)) {
    png_image_free(&png);
    return fail(Errc::invalid_argument, "broken PNG");
  }
  return img;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
};

void jpeg_fail(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<JpegError*>(cinfo->err)->jump, 1); }
void jpeg_quiet(j_common_ptr, int) {}

Result<Image> decode_jpeg(std::string_view bytes) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_quiet;
  Image img;  // declared before setjmp: nothing with a destructor is created after it
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return fail(Errc::invalid_argument, "broken JPEG");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.image_width == 0 || std::int64_t{cinfo.image_width} * cinfo.image_height > kMaxPixels) {
    jpeg_destroy_decompress(&cinfo);
    return fail(Errc::invalid_argument, "JPEG too large");
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  img.width = static_cast<int>(cinfo.output_width);
  img.height = static_cast<int>(cinfo.output_height);
  img.channels = 3;
  img.pixels.resize(static_cast<std::size_t>(img.width) * img.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.pixels.data() + static_cast<std::size_t>(cinfo.output_scanline) * img.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

}  // namespace

Result<Image> decode(std::string_view bytes) {
  if (bytes.size() > kMaxInputBytes) return fail(Errc::invalid_argument, "image too large");
  auto type = sniff(bytes);
  if (type == "image/png") return decode_png(bytes);
  if (type == "image/jpeg") return decode_jpeg(bytes);
  return fail(Errc::invalid_argument, "unsupported image type");
}

void target_size(int w, int h, int want_w, int want_h, Method method, int* out_w, int* out_h) {
  want_w = std::max(1, want_w);
  want_h = std::max(1, want_h);
  if (method == Method::crop) {
    // The largest centred region with the wanted aspect ratio, shrunk to the wanted size.
    if (static_cast<std::int64_t>(w) * want_h > static_cast<std::int64_t>(h) * want_w) {
      *out_h = std::min(h, want_h);
      *out_w = std::max(1, static_cast<int>(static_cast<std::int64_t>(*out_h) * want_w / want_h));
    } else {
      *out_w = std::min(w, want_w);
      *out_h = std::max(1, static_cast<int>(static_cast<std::int64_t>(*out_w) * want_h / want_w));
    }
    return;
  }
  double f = std::min({1.0, static_cast<double>(want_w) / w, static_cast<double>(want_h) / h});
  *out_w = std::max(1, static_cast<int>(w * f + 0.5));
  *out_h = std::max(1, static_cast<int>(h * f + 0.5));
}

Image resize(const Image& src, int want_w, int want_h, Method method) {
  int ow = 0, oh = 0;
  target_size(src.width, src.height, want_w, want_h, method, &ow, &oh);
  // The source region: all of it (scale) or the centred part with the output's aspect (crop).
  double rx = 0, ry = 0, rw = src.width, rh = src.height;
  if (method == Method::crop) {
    if (static_cast<double>(src.width) / src.height > static_cast<double>(ow) / oh) {
      rw = static_cast<double>(src.height) * ow / oh;
      rx = (src.width - rw) / 2;
    } else {
      rh = static_cast<double>(src.width) * oh / ow;
      ry = (src.height - rh) / 2;
    }
  }
  Image out;
  out.width = ow;
  out.height = oh;
  out.channels = src.channels;
  out.pixels.resize(static_cast<std::size_t>(ow) * oh * src.channels);
  const int c = src.channels;
  // Box filter: each output pixel averages the source pixels its area covers.
  for (int y = 0; y < oh; ++y) {
    int y0 = static_cast<int>(ry + rh * y / oh);
    int y1 = std::max(y0 + 1, std::min(src.height, static_cast<int>(ry + rh * (y + 1) / oh)));
    for (int x = 0; x < ow; ++x) {
      int x0 = static_cast<int>(rx + rw * x / ow);
      int x1 = std::max(x0 + 1, std::min(src.width, static_cast<int>(rx + rw * (x + 1) / ow)));
      std::uint64_t sum[4] = {0, 0, 0, 0};
      for (int sy = y0; sy < y1; ++sy) {
        const std::uint8_t* p = src.pixels.data() + (static_cast<std::size_t>(sy) * src.width + x0) * c;
        for (int sx = x0; sx < x1; ++sx, p += c)
          for (int k = 0; k < c; ++k) sum[k] += p[k];
      }
      std::uint64_t n = static_cast<std::uint64_t>(y1 - y0) * (x1 - x0);
      std::uint8_t* q = out.pixels.data() + (static_cast<std::size_t>(y) * ow + x) * c;
      for (int k = 0; k < c; ++k) q[k] = static_cast<std::uint8_t>((sum[k] + n / 2) / n);
    }
  }
  return out;
}

Result<std::string> encode_png(const Image& img) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(img.width);
  png.height = static_cast<png_uint_32>(img.height);
  png.format = img.channels == 4 ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, img.pixels.data(), 0, nullptr))
    return fail(Errc::internal, "cannot encode PNG");
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, img.pixels.data(), 0, nullptr))
    return fail(Errc::internal, "cannot encode PNG");
  out.resize(size);
  return out;
}

Result<std::string> encode_jpeg(const Image& img, int quality) {
  jpeg_compress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  unsigned char* mem = nullptr;
  unsigned long size = 0;
  std::vector<std::uint8_t> row(static_cast<std::size_t>(img.width) * 3);
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(mem);
    return fail(Errc::internal, "cannot encode JPEG");
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &mem, &size);
  cinfo.image_width = static_cast<JDIMENSION>(img.width);
  cinfo.image_height = static_cast<JDIMENSION>(img.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    const std::uint8_t* p = img.pixels.data() + static_cast<std::size_t>(cinfo.next_scanline) * img.width * img.channels;
    for (int x = 0; x < img.width; ++x)
      for (int k = 0; k < 3; ++k) row[static_cast<std::size_t>(x) * 3 + k] = p[static_cast<std::size_t>(x) * img.channels + k];
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&cinfo, &r, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(mem), size);
  jpeg_destroy_compress(&cinfo);
  std::free(mem);
  return out;
}

}  // namespace hearth::thumbnail
