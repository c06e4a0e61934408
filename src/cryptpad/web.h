// Serving CryptPad's web application (private to the module): the static files of a
// CryptPad checkout (`cryptpad.web_root`, the directory holding www/, customize.dist/ and
// src/common/), looked up in the order CryptPad's own server uses:
//   customize/www, www                       every path
//   src/common                               /common/...
//   customize, customize.dist                /, /index.html, /contact.html, /features.html,
//                                            /maintenance.html, /customize/..., top-level files
//   customize.dist                           /customize.dist/...
// with the headers of CryptPad's lib/defaults.js on every answer: a Content-Security-Policy
// built from both origins (main = http_unsafe_origin, sandbox = http_safe_origin; the
// OnlyOffice and unsafeiframe inner pages get the one with 'unsafe-eval'),
// Cross-Origin-Embedder-Policy: require-corp, Cross-Origin-Resource-Policy: cross-origin,
// Access-Control-Allow-Origin: the sandbox origin, nosniff, same-origin referrers, and
// Cache-Control max-age=31536000 for `?ver=` URLs, else no-cache.
//
// Paths are percent-decoded; "..", NUL and backslashes are refused, and a file must resolve
// (symlinks included) inside the web root. Files larger than 64 MiB are not served.
#pragma once

#include <string>
#include <vector>

#include "cryptpad/cryptpad.h"

namespace hearth::cryptpad {

// The security headers for a path ("/pad/inner.html").
std::vector<std::pair<std::string, std::string>> web_headers(const CryptpadOptions& options, std::string_view path);
// The same without the Content-Security-Policy, for the API answers (/api/*, /blob, /block,
// /upload-blob…): the sandbox origin loads /api/config cross-origin under COEP.
std::vector<std::pair<std::string, std::string>> api_headers(const CryptpadOptions& options);
// Wraps `respond` so that every answer carries `headers`.
net::Respond with_headers(net::Respond respond, std::vector<std::pair<std::string, std::string>> headers);
// Percent-decodes and checks a request path; "" when it must be refused.
std::string clean_web_path(std::string_view path);
// The files that may answer `path`, in order, relative to the web root.
std::vector<std::string> web_candidates(std::string_view clean_path);

// Registers GET/HEAD on every path not taken by a longer route (blocking routes, exempt
// from the per-address request rate: an application page loads hundreds of files).
void install_web_routes(net::Router& router, const CryptpadOptions& options);

}  // namespace hearth::cryptpad
