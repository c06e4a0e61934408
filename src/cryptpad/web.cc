#include "cryptpad/web.h"

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <regex>

namespace hearth::cryptpad {

namespace {

constexpr std::uintmax_t kMaxFileBytes = 64u << 20;

std::string content_type_of(std::string_view path) {
  auto dot = path.rfind('.');
  std::string ext = dot == std::string_view::npos ? "" : std::string(path.substr(dot + 1));
  static const std::pair<const char*, const char*> kTypes[] = {
      {"html", "text/html; charset=utf-8"}, {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"}, {"css", "text/css; charset=utf-8"},
      {"less", "text/less; charset=utf-8"}, {"json", "application/json; charset=utf-8"},
      {"map", "application/json; charset=utf-8"}, {"svg", "image/svg+xml"}, {"png", "image/png"},
      {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"}, {"gif", "image/gif"}, {"webp", "image/webp"},
      {"ico", "image/x-icon"}, {"woff", "font/woff"}, {"woff2", "font/woff2"}, {"ttf", "font/ttf"},
      {"otf", "font/otf"}, {"eot", "application/vnd.ms-fontobject"}, {"wasm", "application/wasm"},
      {"txt", "text/plain; charset=utf-8"}, {"md", "text/markdown; charset=utf-8"}, {"xml", "application/xml"},
      {"pdf", "application/pdf"}, {"webmanifest", "application/manifest+json"}};
  for (const auto& [e, t] : kTypes)
    if (ext == e) return t;
  return "application/octet-stream";
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_office_page(std::string_view path) {
  static const std::regex kExempt[] = {
      std::regex(R"(^/common/onlyoffice/.*\.html.*)"),
      std::regex(R"(^/common/onlyoffice/dist/.*/sdkjs/common/spell/spell/spell\.js.*)"),
      std::regex(R"(^/(sheet|presentation|doc)/inner\.html.*)"),
      std::regex(R"(^/unsafeiframe/inner\.html.*$)"),
  };
  const std::string p(path);
  for (const auto& r : kExempt)
    if (std::regex_match(p, r)) return true;
  return false;
}

std::string collapse_spaces(const std::string& s) {
  std::string out;
  for (char c : s) {
    if ((c == ' ' || c == '\t' || c == '\n') && !out.empty() && out.back() == ' ') continue;
    out.push_back(c == '\t' || c == '\n' ? ' ' : c);
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> web_headers(const CryptpadOptions& o, std::string_view path) {
  const std::string& domain = o.http_unsafe_origin;
  const std::string sandbox = (!o.http_safe_origin.empty() && o.http_safe_origin != domain) ? o.http_safe_origin : "";
  std::string ws = domain;
  if (ws.rfind("https://", 0) == 0) ws = "wss://" + ws.substr(8);
  else if (ws.rfind("http://", 0) == 0) ws = "ws://" + ws.substr(7);
  std::string csp = "default-src 'none'; style-src 'unsafe-inline' 'self' " + domain + "; font-src 'self' data: " + domain +
                    "; child-src " + domain + "; frame-src 'self' blob: " + sandbox + "; connect-src 'self' blob: " +
                    domain + " " + sandbox + "  " + ws + "; img-src 'self' data: blob: " + domain +
                    "; media-src blob:; frame-ancestors 'self' " + domain + "; worker-src 'self'; ";
  csp += is_office_page(path) ? "script-src 'self' 'unsafe-eval' 'unsafe-inline' resource: " + domain
                              : "script-src 'self' resource: " + domain;
  return {
      {"X-XSS-Protection", "1; mode=block"},
      {"X-Content-Type-Options", "nosniff"},
      {"Access-Control-Allow-Origin", sandbox.empty() ? (domain.empty() ? "*" : domain) : sandbox},
      {"Referrer-Policy", "same-origin"},
      {"Permissions-policy", "interest-cohort=()"},
      {"Content-Security-Policy", collapse_spaces(csp)},
      {"Cross-Origin-Resource-Policy", "cross-origin"},
      {"Cross-Origin-Embedder-Policy", "require-corp"},
  };
}

std::vector<std::pair<std::string, std::string>> api_headers(const CryptpadOptions& options) {
  auto h = web_headers(options, "/api/");
  h.erase(std::remove_if(h.begin(), h.end(), [](const auto& kv) { return kv.first == "Content-Security-Policy"; }), h.end());
  return h;
}

net::Respond with_headers(net::Respond respond, std::vector<std::pair<std::string, std::string>> headers) {
  return [respond = std::move(respond), headers = std::move(headers)](net::HttpResponse r) {
    for (const auto& h : headers) {
      bool present = false;
      for (const auto& existing : r.headers) present |= existing.first == h.first;
      if (!present) r.headers.push_back(h);
    }
    respond(std::move(r));
  };
}

std::string clean_web_path(std::string_view path) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '%') {
      if (i + 2 >= path.size()) return "";
      int hi = hex_digit(path[i + 1]);
      int lo = hex_digit(path[i + 2]);
      if (hi < 0 || lo < 0) return "";
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0' || c == '\\') return "";
    out.push_back(c);
  }
  if (out.empty() || out[0] != '/') return "";
  // No "." or ".." segment.
  std::size_t start = 1;
  while (start <= out.size()) {
    std::size_t end = out.find('/', start);
    if (end == std::string::npos) end = out.size();
    std::string_view seg(out.data() + start, end - start);
    if (seg == ".." || seg == ".") return "";
    start = end + 1;
  }
  return out;
}

std::vector<std::string> web_candidates(std::string_view p) {
  std::vector<std::string> out;
  const std::string path(p);
  auto add_dir = [&](const std::string& dir, const std::string& rel) { out.push_back(dir + rel); };
  // customize/www and www serve everything; a directory gives its index.html.
  add_dir("customize/www", path);
  add_dir("www", path);
  if (path.rfind("/common/", 0) == 0) add_dir("src", path);
  static const std::regex kMain(R"(^/(index|contact|features|maintenance)\.html$)");
  const bool top_level = path.find('/', 1) == std::string::npos;
  if (path == "/" || std::regex_match(path, kMain) || top_level) {
    const std::string rel = path == "/" ? "/index.html" : path;
    add_dir("customize", rel);
    add_dir("customize.dist", rel);
  }
  if (path.rfind("/customize/", 0) == 0) {
    add_dir("customize", path.substr(10));
    add_dir("customize.dist", path.substr(10));
  }
  if (path.rfind("/customize.dist/", 0) == 0) add_dir("customize.dist", path.substr(15));
  return out;
}

void install_web_routes(net::Router& router, const CryptpadOptions& options) {
  if (options.web_root.empty()) return;
  std::error_code ec;
  const auto root = std::filesystem::weakly_canonical(options.web_root, ec);
  auto serve = [options, root](net::HttpRequest&& req, net::Respond respond) {
    const std::string path = clean_web_path(req.path);
    auto headers = web_headers(options, path.empty() ? std::string_view(req.path) : std::string_view(path));
    auto finish = [&](net::HttpResponse r) {
      for (auto& h : headers) r.headers.push_back(h);
      const bool versioned = req.query.find("ver=") != std::string::npos;
      r.headers.push_back({"Cache-Control", versioned ? "max-age=31536000" : "no-cache"});
      respond(std::move(r));
    };
    if (path.empty()) return finish(net::HttpResponse::text(400, "bad path\n"));
    for (std::string rel : web_candidates(path)) {
      std::error_code ec;
      auto file = std::filesystem::weakly_canonical(root / rel.substr(0, rel.size()), ec);
      if (ec) continue;
      if (std::filesystem::is_directory(file, ec)) {
        if (path.back() != '/') {  // as CryptPad's static server: /pad → /pad/
          net::HttpResponse r = net::HttpResponse::text(301, "Moved\n");
          r.headers.push_back({"Location", path + "/" + (req.query.empty() ? "" : "?" + req.query)});
          return finish(std::move(r));
        }
        file /= "index.html";
        file = std::filesystem::weakly_canonical(file, ec);
        if (ec) continue;
      }
      // Inside the root only (symlinks resolved).
      auto [r_end, f_it] = std::mismatch(root.begin(), root.end(), file.begin(), file.end());
      if (r_end != root.end()) continue;
      if (!std::filesystem::is_regular_file(file, ec)) continue;
      const auto size = std::filesystem::file_size(file, ec);
      if (ec || size > kMaxFileBytes) continue;
      std::ifstream in(file, std::ios::binary);
      if (!in) continue;
      net::HttpResponse r;
      r.content_type = content_type_of(file.filename().string());
      r.body.resize(size);
      in.read(r.body.data(), static_cast<std::streamsize>(size));
      if (in.gcount() != static_cast<std::streamsize>(size)) continue;
      return finish(std::move(r));
    }
    // CryptPad's 404 page.
    std::ifstream in(root / "customize.dist/404.html", std::ios::binary);
    net::HttpResponse r;
    r.status = 404;
    if (in) {
      r.content_type = "text/html; charset=utf-8";
      r.body.assign(std::istreambuf_iterator<char>(in), {});
    } else {
      r.body = "Not found\n";
    }
    finish(std::move(r));
  };
  net::RouteOptions opts;
  opts.blocking = true;
  // One page of the application loads a few hundred files at once; the per-address
  // request rate is for the API (connection caps and admission control still apply).
  opts.exempt_from_rate_limit = true;
  router.add_prefix("GET", "/", serve, opts);
  router.add_prefix("HEAD", "/", serve, opts);
}

}  // namespace hearth::cryptpad
