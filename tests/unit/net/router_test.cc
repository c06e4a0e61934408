#include <gtest/gtest.h>

#include "net/net.h"

namespace hearth::net {
namespace {

HttpHandler tagged(std::string* out, std::string tag) {
  return [out, tag](HttpRequest&&, Respond) { *out = tag; };
}

TEST(Router, ExactPrefixAndLongestPrefixWins) {
  Router r;
  std::string hit;
  r.add("GET", "/a", tagged(&hit, "exact"));
  r.add_prefix("GET", "/a/", tagged(&hit, "short"));
  r.add_prefix("GET", "/a/b/", tagged(&hit, "long"));
  auto run = [&](std::string_view path) {
    hit.clear();
    auto m = r.find("GET", path);
    if (m.kind == RouteMatch::Kind::handler) (*m.handler)(HttpRequest{}, [](HttpResponse) {});
    return hit;
  };
  EXPECT_EQ(run("/a"), "exact");
  EXPECT_EQ(run("/a/x"), "short");
  EXPECT_EQ(run("/a/b/c"), "long");
  EXPECT_EQ(run("/ab"), "");
}

TEST(Router, NotFoundAndMethodNotAllowed) {
  Router r;
  r.add("GET", "/x", [](HttpRequest&&, Respond) {});
  r.add("PUT", "/x", [](HttpRequest&&, Respond) {});
  r.add_prefix("POST", "/", [](HttpRequest&&, Respond) {});
  EXPECT_EQ(r.find("GET", "/x").kind, RouteMatch::Kind::handler);
  // A shorter prefix accepting the method still matches.
  EXPECT_EQ(r.find("POST", "/x").kind, RouteMatch::Kind::handler);
  auto m = r.find("DELETE", "/x");
  EXPECT_EQ(m.kind, RouteMatch::Kind::method_not_allowed);
  EXPECT_EQ(m.allow, "GET, PUT, POST");

  Router empty;
  EXPECT_EQ(empty.find("GET", "/").kind, RouteMatch::Kind::not_found);
}

TEST(Router, AnyMethodAndRouteOptions) {
  Router r;
  RouteOptions o;
  o.blocking = true;
  o.max_body_bytes = 10;
  r.add("*", "/any", [](HttpRequest&&, Respond) {}, o);
  auto m = r.find("PATCH", "/any");
  ASSERT_EQ(m.kind, RouteMatch::Kind::handler);
  EXPECT_TRUE(m.options->blocking);
  EXPECT_EQ(m.options->max_body_bytes, 10);
}

TEST(Router, WebSocketRoutes) {
  Router r;
  r.websocket("/ws", [](std::shared_ptr<WebSocketConnection>, const HttpRequest&) { return WebSocketCallbacks{}; },
              1234);
  ASSERT_NE(r.find_websocket("/ws"), nullptr);
  EXPECT_EQ(r.find_websocket("/ws")->max_message_bytes, 1234u);
  EXPECT_EQ(r.find_websocket("/ws/"), nullptr);
  EXPECT_EQ(r.find("GET", "/ws").kind, RouteMatch::Kind::not_found);
}

TEST(HttpTypes, HeaderLookupAndResponseFactories) {
  HttpRequest req;
  req.headers = {{"host", "a"}, {"x-two", "1"}, {"x-two", "2"}};
  EXPECT_EQ(req.header("x-two"), "1");
  EXPECT_EQ(req.header("absent"), "");
  auto j = HttpResponse::json(201, "{}");
  EXPECT_EQ(j.status, 201);
  EXPECT_EQ(j.content_type, "application/json");
  auto t = HttpResponse::text(200, "hi");
  EXPECT_EQ(t.content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(t.body, "hi");
}

}  // namespace
}  // namespace hearth::net
