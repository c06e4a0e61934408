#include "matrix/media_multipart.h"

#include <gtest/gtest.h>

namespace hearth::matrix {
namespace {

TEST(MediaMultipart, EnvelopeRoundTripsThroughTheParser) {
  std::string bytes("\x89PNG\r\n--not-the-boundary\r\n\0tail", 32);
  auto e = media_multipart_envelope("b0undary", "image/png", "attachment; filename=\"cat.png\"");
  EXPECT_EQ(e.content_type, "multipart/mixed; boundary=b0undary");
  std::string body = e.prefix + bytes + e.suffix;
  auto part = parse_media_multipart(e.content_type, body);
  ASSERT_TRUE(part) << part.error().message;
  EXPECT_EQ(part->content_type, "image/png");
  EXPECT_EQ(part->filename, "cat.png");
  EXPECT_EQ(part->location, "");
  EXPECT_EQ(part->bytes, bytes);
}

TEST(MediaMultipart, SpecExampleWithQuotedBoundaryAndLocation) {
  // The spec's redirect form: the media part holds only a Location header.
  std::string body =
      "--gc0p4Jq0M2Yt08jU534c0p\r\nContent-Type: application/json\r\n\r\n{}\r\n"
      "--gc0p4Jq0M2Yt08jU534c0p\r\nLocation: https://cdn.example.org/ab/c1/2345.txt\r\n\r\n\r\n"
      "--gc0p4Jq0M2Yt08jU534c0p--\r\n";
  auto part = parse_media_multipart("Multipart/Mixed; Boundary=\"gc0p4Jq0M2Yt08jU534c0p\"", body);
  ASSERT_TRUE(part) << part.error().message;
  EXPECT_EQ(part->location, "https://cdn.example.org/ab/c1/2345.txt");
  EXPECT_TRUE(part->bytes.empty());
}

TEST(MediaMultipart, MalformedBodiesAreRefused) {
  auto e = media_multipart_envelope("b", "text/plain", "attachment");
  std::string good = e.prefix + "hello" + e.suffix;
  ASSERT_TRUE(parse_media_multipart(e.content_type, good));
  EXPECT_FALSE(parse_media_multipart("application/json", good));
  EXPECT_FALSE(parse_media_multipart("multipart/mixed", good)) << "no boundary";
  EXPECT_FALSE(parse_media_multipart("multipart/mixed; boundary=" + std::string(71, 'x'), good));
  EXPECT_FALSE(parse_media_multipart(e.content_type, e.prefix + "cut short")) << "unterminated";
  EXPECT_FALSE(parse_media_multipart(e.content_type, "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n"))
      << "metadata only";
  EXPECT_FALSE(parse_media_multipart(e.content_type, ""));
}

TEST(MediaMultipart, HeaderParameters) {
  EXPECT_EQ(header_param("attachment; filename=\"a b.png\"", "filename"), "a b.png");
  EXPECT_EQ(header_param("multipart/mixed;boundary=xyz; charset=utf-8", "boundary"), "xyz");
  EXPECT_EQ(header_param("attachment; FILENAME=x", "filename"), "x");
  EXPECT_EQ(header_param("attachment", "filename"), "");
  EXPECT_EQ(header_param("attachment; filenames=x", "filename"), "");
}

}  // namespace
}  // namespace hearth::matrix
