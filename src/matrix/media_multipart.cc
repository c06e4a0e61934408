#include "matrix/media_multipart.h"

#include <cctype>
#include <vector>

#include <fmt/format.h>

namespace hearth::matrix {

namespace {
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}
}  // namespace

std::string header_param(std::string_view value, std::string_view name) {
  std::size_t pos = 0;
  while ((pos = value.find(';', pos)) != std::string_view::npos) {
    ++pos;
    while (pos < value.size() && value[pos] == ' ') ++pos;
    if (!iequals(value.substr(pos, name.size()), name) || value.substr(pos + name.size(), 1) != "=") continue;
    std::string_view v = value.substr(pos + name.size() + 1);
    if (!v.empty() && v.front() == '"') {
      auto end = v.find('"', 1);
      return std::string(v.substr(1, end == std::string_view::npos ? std::string_view::npos : end - 1));
    }
    return std::string(v.substr(0, v.find(';')));
  }
  return {};
}

Result<MediaPart> parse_media_multipart(std::string_view content_type, std::string_view body) {
  std::string boundary = header_param(content_type, "boundary");
  if (!iequals(content_type.substr(0, 15), "multipart/mixed") || boundary.empty() || boundary.size() > 70)
    return fail(Errc::invalid_argument, "the response is not multipart/mixed with a boundary");
  const std::string delimiter = "--" + boundary;
  std::vector<std::string_view> parts;
  std::size_t pos = body.find(delimiter);
  while (pos != std::string_view::npos) {
    pos += delimiter.size();
    if (body.substr(pos, 2) == "--") break;  // the closing delimiter
    if (body.substr(pos, 2) != "\r\n") return fail(Errc::invalid_argument, "malformed multipart delimiter");
    pos += 2;
    auto next = body.find("\r\n" + delimiter, pos);
    if (next == std::string_view::npos) return fail(Errc::invalid_argument, "unterminated multipart part");
    parts.push_back(body.substr(pos, next - pos));
    pos = next + 2;
    if (parts.size() > 2) break;
  }
  if (parts.size() < 2) return fail(Errc::invalid_argument, "the response has no media part");
  std::string_view media = parts[1];
  auto end = media.find("\r\n\r\n");
  std::string_view head = end == std::string_view::npos ? media : media.substr(0, end + 2);
  MediaPart out;
  out.bytes = end == std::string_view::npos ? std::string_view() : media.substr(end + 4);
  std::size_t line = 0;
  while (line < head.size()) {
    auto eol = head.find("\r\n", line);
    if (eol == std::string_view::npos) eol = head.size();
    std::string_view h = head.substr(line, eol - line);
    line = eol + 2;
    auto colon = h.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(h.substr(0, colon));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = h.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (name == "content-type") out.content_type = std::string(value);
    else if (name == "content-disposition") out.filename = header_param(value, "filename");
    else if (name == "location") out.location = std::string(value);
  }
  return out;
}

MultipartEnvelope media_multipart_envelope(std::string_view boundary, std::string_view media_content_type,
                                           std::string_view content_disposition) {
  MultipartEnvelope e;
  e.content_type = fmt::format("multipart/mixed; boundary={}", boundary);
  e.prefix = fmt::format(
      "--{0}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{0}\r\nContent-Type: {1}\r\nContent-Disposition: "
      "{2}\r\n\r\n",
      boundary, media_content_type, content_disposition);
  e.suffix = fmt::format("\r\n--{}--\r\n", boundary);
  return e;
}

}  // namespace hearth::matrix
