// The multipart/mixed body of federation media downloads (server-server API v1.11,
// GET /_matrix/federation/v1/media/download): a JSON metadata part, then the media part
// (its bytes, or a Location header to fetch them from). Pure: no I/O; the parser works on
// a body already bounded by the caller's response limit and copies nothing.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth::matrix {

struct MediaPart {
  std::string content_type, filename, location;
  std::string_view bytes;  // into the parsed body
};

// invalid_argument when the Content-Type is not multipart/mixed with a boundary (at most
// 70 characters, RFC 2046), or the body has no complete second part.
Result<MediaPart> parse_media_multipart(std::string_view content_type, std::string_view body);

// The text sent before and after the media bytes, for a given boundary; the content type
// and disposition must already be safe header values.
struct MultipartEnvelope {
  std::string content_type;  // "multipart/mixed; boundary=..."
  std::string prefix, suffix;
};
MultipartEnvelope media_multipart_envelope(std::string_view boundary, std::string_view media_content_type,
                                           std::string_view content_disposition);

// A parameter of a header value: header_param(`attachment; filename="a.png"`, "filename")
// is "a.png"; "" when absent.
std::string header_param(std::string_view value, std::string_view name);

}  // namespace hearth::matrix
