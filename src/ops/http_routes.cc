#include "ops/http_routes.h"

#include <fmt/format.h>

#include "accounts/accounts.h"
#include "net/net.h"
#include "ops/health.h"

namespace hearth::ops {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') out += ' ';
    else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else out += s[i];
  }
  return out;
}

net::HttpResponse html(int status, std::string_view title, std::string_view body) {
  net::HttpResponse r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.body = fmt::format(
      "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">"
      "<title>{0}</title><style>body{{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}}"
      "label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em}}button{{margin-top:1em;padding:.5em 1.5em}}"
      ".err{{color:#a00}}</style></head><body><h1>{0}</h1>{1}</body></html>",
      html_escape(title), body);
  return r;
}

std::string invite_form(const accounts::Invite& invite, std::string_view error, std::string_view username) {
  return fmt::format(
      "<p>You are invited to create an account on <b>{0}</b>{1}.</p>{2}"
      "<form method=post><label for=u>User name</label><input id=u name=username value=\"{3}\" required "
      "autocomplete=username><label for=p>Password</label><input id=p name=password type=password required "
      "autocomplete=new-password minlength=8><label for=c>Password again</label><input id=c name=confirm "
      "type=password required autocomplete=new-password><button>Create account</button></form>",
      html_escape(invite.domain), invite.grants_admin ? " as an administrator" : "",
      error.empty() ? std::string() : fmt::format("<p class=err>{}</p>", html_escape(error)), html_escape(username));
}

int status_for(Errc code) {
  switch (code) {
    case Errc::not_found: return 404;
    case Errc::expired: return 410;
    case Errc::invalid_argument: return 400;
    case Errc::already_exists: return 409;
    case Errc::permission_denied: return 403;
    case Errc::unavailable:
    case Errc::read_only: return 503;
    default: return 500;
  }
}

// An invitation that was used or expired is gone for good; an unknown one was never there.
int invite_status_for(Errc code) {
  if (code == Errc::permission_denied || code == Errc::expired) return 410;
  return status_for(code);
}

std::string token_from_path(std::string_view path) {
  constexpr std::string_view prefix = "/invite/";
  auto token = path.substr(prefix.size());
  while (!token.empty() && token.back() == '/') token.remove_suffix(1);
  return std::string(token);
}

}  // namespace

std::string form_value(std::string_view body, std::string_view key) {
  while (!body.empty()) {
    auto amp = body.find('&');
    auto pair = body.substr(0, amp);
    auto eq = pair.find('=');
    if (url_decode(pair.substr(0, eq)) == key) return eq == std::string_view::npos ? "" : url_decode(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    body.remove_prefix(amp + 1);
  }
  return {};
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

void install_health_routes(net::Router& router, HealthMonitor& health, MetricsRegistry& metrics) {
  net::RouteOptions exempt;
  exempt.exempt_from_admission = true;
  exempt.exempt_from_rate_limit = true;
  router.add("GET", "/health", [&health](net::HttpRequest&&, net::Respond respond) {
    auto snap = health.snapshot();
    bool serving = snap.overall == HealthStatus::ok || snap.overall == HealthStatus::warning;
    auto r = net::HttpResponse::json(serving ? 200 : 503, snap.to_json());
    r.headers.emplace_back("Cache-Control", "no-store");
    respond(std::move(r));
  }, exempt);
  router.add("GET", "/metrics", [&metrics](net::HttpRequest&&, net::Respond respond) {
    net::HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics.render();
    respond(std::move(r));
  }, exempt);
}

void install_invite_routes(net::Router& router, accounts::Accounts& accounts, Logger& log) {
  net::RouteOptions blocking;
  blocking.blocking = true;  // storage and argon2id: off the event loop
  blocking.max_body_bytes = 4096;
  auto* acc = &accounts;
  router.add_prefix("GET", "/invite/", [acc](net::HttpRequest&& req, net::Respond respond) {
    auto invite = acc->check_invite(token_from_path(req.path));
    if (!invite) {
      respond(html(invite_status_for(invite.error().code), "Invitation not valid",
                   fmt::format("<p>{}</p>", html_escape(invite.error().message))));
      return;
    }
    respond(html(200, "Create your account", invite_form(*invite, "", "")));
  }, blocking);
  router.add_prefix("POST", "/invite/", [acc, &log](net::HttpRequest&& req, net::Respond respond) {
    std::string token = token_from_path(req.path);
    auto invite = acc->check_invite(token);
    if (!invite) {
      respond(html(invite_status_for(invite.error().code), "Invitation not valid",
                   fmt::format("<p>{}</p>", html_escape(invite.error().message))));
      return;
    }
    std::string username = form_value(req.body, "username");
    std::string password = form_value(req.body, "password");
    if (password != form_value(req.body, "confirm")) {
      respond(html(400, "Create your account", invite_form(*invite, "The two passwords differ.", username)));
      return;
    }
    if (password.size() < 8) {
      respond(html(400, "Create your account", invite_form(*invite, "Use at least 8 characters.", username)));
      return;
    }
    auto user = acc->register_user(invite->domain, username, password, std::string_view(token));
    if (!user) {
      respond(html(status_for(user.error().code), "Create your account", invite_form(*invite, user.error().message, username)));
      return;
    }
    log.info("accounts.registered", {{"jid", user->jid()}, {"admin", user->admin}, {"via", "invite_page"}});
    respond(html(201, "Account created",
                 fmt::format("<p>Your account <b>{}</b> is ready{}. Sign in with it from any XMPP or Matrix "
                             "client.</p>",
                             html_escape(user->jid()), user->admin ? " and is an administrator" : "")));
  }, blocking);
}

}  // namespace hearth::ops
