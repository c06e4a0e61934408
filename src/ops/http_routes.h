// The HTTP routes ops owns, installed into net's Router by hearthd's main:
//   GET /health   JSON snapshot (200 when ok or warning, 503 when critical or unknown)
//   GET /metrics  Prometheus text format
//   GET/POST /invite/<token>  a small HTML page that redeems an invitation: a person
//                 picks a user name and password and gets an account on the invite's
//                 domain (what Prosody's invite pages do), usable from any client.
// /health and /metrics bypass admission control and rate limits and never touch storage,
// so they answer while the server is overloaded (incidents I16, I17).
#pragma once

#include "core/log.h"
#include "core/metrics.h"

namespace hearth::accounts {
class Accounts;
}
namespace hearth::net {
class Router;
}

namespace hearth::ops {

class HealthMonitor;

void install_health_routes(net::Router& router, HealthMonitor& health, MetricsRegistry& metrics);
void install_invite_routes(net::Router& router, accounts::Accounts& accounts, Logger& log);

// application/x-www-form-urlencoded value of `key` in `body` ("" if absent).
std::string form_value(std::string_view body, std::string_view key);
std::string html_escape(std::string_view s);

}  // namespace hearth::ops
