#include "cryptpad/web.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace hearth::cryptpad {
namespace {

std::string header(const std::vector<std::pair<std::string, std::string>>& h, const std::string& name) {
  for (const auto& [k, v] : h)
    if (k == name) return v;
  return "";
}

TEST(CryptpadWeb, PathsAreDecodedAndTraversalRefused) {
  EXPECT_EQ(clean_web_path("/pad/inner.html"), "/pad/inner.html");
  EXPECT_EQ(clean_web_path("/a%20b"), "/a b");
  EXPECT_EQ(clean_web_path("/../etc/passwd"), "");
  EXPECT_EQ(clean_web_path("/a/%2e%2e/b"), "");
  EXPECT_EQ(clean_web_path("/a/./b"), "");
  EXPECT_EQ(clean_web_path("/a%00b"), "");
  EXPECT_EQ(clean_web_path("/a\\b"), "");
  EXPECT_EQ(clean_web_path("/a%2"), "");
  EXPECT_EQ(clean_web_path("/a%zz"), "");
  EXPECT_EQ(clean_web_path("relative"), "");
}

TEST(CryptpadWeb, LookupOrderFollowsCryptpad) {
  EXPECT_EQ(web_candidates("/pad/inner.html"),
            (std::vector<std::string>{"customize/www/pad/inner.html", "www/pad/inner.html"}));
  EXPECT_EQ(web_candidates("/common/common-util.js"),
            (std::vector<std::string>{"customize/www/common/common-util.js", "www/common/common-util.js",
                                      "src/common/common-util.js"}));
  EXPECT_EQ(web_candidates("/"), (std::vector<std::string>{"customize/www/", "www/", "customize/index.html",
                                                           "customize.dist/index.html"}));
  auto c = web_candidates("/customize/fonts/x.woff");
  EXPECT_NE(std::find(c.begin(), c.end(), "customize.dist/fonts/x.woff"), c.end());
}

TEST(CryptpadWeb, SecurityHeadersNameBothOrigins) {
  CryptpadOptions o;
  o.http_unsafe_origin = "https://pad.example";
  o.http_safe_origin = "https://sandbox.example";
  auto h = web_headers(o, "/pad/inner.html");
  const std::string csp = header(h, "Content-Security-Policy");
  EXPECT_NE(csp.find("frame-src 'self' blob: https://sandbox.example"), std::string::npos);
  EXPECT_NE(csp.find("wss://pad.example"), std::string::npos);
  EXPECT_NE(csp.find("script-src 'self' resource: https://pad.example"), std::string::npos);
  EXPECT_EQ(csp.find("unsafe-eval"), std::string::npos);
  EXPECT_EQ(header(h, "Cross-Origin-Embedder-Policy"), "require-corp");
  EXPECT_EQ(header(h, "Cross-Origin-Resource-Policy"), "cross-origin");
  EXPECT_EQ(header(h, "Access-Control-Allow-Origin"), "https://sandbox.example");
  EXPECT_EQ(header(h, "X-Content-Type-Options"), "nosniff");
  // OnlyOffice's inner pages need eval.
  EXPECT_NE(header(web_headers(o, "/sheet/inner.html"), "Content-Security-Policy").find("'unsafe-eval'"),
            std::string::npos);
}

}  // namespace
}  // namespace hearth::cryptpad
