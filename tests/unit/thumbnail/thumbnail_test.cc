// Thumbnails: sizes keep the aspect ratio and never enlarge; PNG and JPEG round trips;
// broken input is refused as a value.
#include <gtest/gtest.h>

#include "thumbnail/thumbnail.h"

namespace hearth::thumbnail {
namespace {

Image gradient(int w, int h, int channels) {
  Image img{w, h, channels, std::vector<std::uint8_t>(static_cast<std::size_t>(w) * h * channels)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < channels; ++k)
        img.pixels[(static_cast<std::size_t>(y) * w + x) * channels + k] = static_cast<std::uint8_t>(k == 3 ? 255 : (x + y) % 256);
  return img;
}

TEST(Thumbnail, SizesKeepTheAspectRatioAndNeverEnlarge) {
  int w = 0, h = 0;
  target_size(1000, 500, 320, 240, Method::scale, &w, &h);
  EXPECT_EQ(std::pair(w, h), std::pair(320, 160));
  target_size(500, 1000, 320, 240, Method::scale, &w, &h);
  EXPECT_EQ(std::pair(w, h), std::pair(120, 240));
  target_size(100, 50, 320, 240, Method::scale, &w, &h);
  EXPECT_EQ(std::pair(w, h), std::pair(100, 50));
  target_size(1000, 500, 96, 96, Method::crop, &w, &h);
  EXPECT_EQ(std::pair(w, h), std::pair(96, 96));
  target_size(40, 20, 96, 96, Method::crop, &w, &h);  // smaller than asked: square, not enlarged
  EXPECT_EQ(std::pair(w, h), std::pair(20, 20));
}

TEST(Thumbnail, CropTakesTheCentre) {
  // Left third black, middle white, right third black: a square crop is all white.
  Image img{300, 100, 3, std::vector<std::uint8_t>(300 * 100 * 3, 0)};
  for (int y = 0; y < 100; ++y)
    for (int x = 100; x < 200; ++x)
      for (int k = 0; k < 3; ++k) img.pixels[(static_cast<std::size_t>(y) * 300 + x) * 3 + k] = 255;
  Image out = resize(img, 32, 32, Method::crop);
  ASSERT_EQ(std::pair(out.width, out.height), std::pair(32, 32));
  for (auto p : out.pixels) EXPECT_EQ(p, 255);
  Image scaled = resize(img, 30, 30, Method::scale);
  EXPECT_EQ(std::pair(scaled.width, scaled.height), std::pair(30, 10));
  EXPECT_EQ(scaled.pixels[0], 0);  // the left edge stays black
}

TEST(Thumbnail, PngAndJpegRoundTrips) {
  auto png = encode_png(gradient(64, 48, 4));
  ASSERT_TRUE(png);
  EXPECT_EQ(sniff(*png), "image/png");
  auto back = decode(*png);
  ASSERT_TRUE(back);
  EXPECT_EQ(std::tuple(back->width, back->height, back->channels), std::tuple(64, 48, 4));
  EXPECT_EQ(back->pixels, gradient(64, 48, 4).pixels);
  auto jpeg = encode_jpeg(gradient(64, 48, 3));
  ASSERT_TRUE(jpeg);
  EXPECT_EQ(sniff(*jpeg), "image/jpeg");
  auto j = decode(*jpeg);
  ASSERT_TRUE(j);
  EXPECT_EQ(std::tuple(j->width, j->height, j->channels), std::tuple(64, 48, 3));
}

TEST(Thumbnail, BrokenInputIsRefused) {
  EXPECT_EQ(decode("GIF89a").error().code, Errc::invalid_argument);
  auto png = encode_png(gradient(16, 16, 4));
  ASSERT_TRUE(png);
  EXPECT_FALSE(decode(png->substr(0, png->size() / 2)));
  auto jpeg = encode_jpeg(gradient(16, 16, 3));
  ASSERT_TRUE(jpeg);
  std::string cut = jpeg->substr(0, 20);
  EXPECT_FALSE(decode(cut));
}

}  // namespace
}  // namespace hearth::thumbnail
