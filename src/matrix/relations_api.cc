// GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] and
// GET /rooms/{roomId}/threads (client-server API v1), on relations.h.
#include <fmt/format.h>

#include "core/json.h"
#include "matrix/relations.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

constexpr int kDefaultPage = 50;
constexpr int kMaxPage = 100;
constexpr int kMaxRecursion = 3;

// "<prefix><N>" with N a non-negative integer; nullopt for "" (no token).
ApiResult<std::optional<std::int64_t>> parse_page_token(const std::string& t, char prefix) {
  if (t.empty()) return std::optional<std::int64_t>();
  if (t.size() < 2 || t.size() > 20 || t[0] != prefix) return api_error(400, "M_INVALID_PARAM", "Invalid pagination token");
  std::int64_t n = 0;
  for (std::size_t i = 1; i < t.size(); ++i) {
    if (t[i] < '0' || t[i] > '9') return api_error(400, "M_INVALID_PARAM", "Invalid pagination token");
    n = n * 10 + (t[i] - '0');
  }
  return std::optional<std::int64_t>(n);
}

ApiResult<int> parse_limit(const std::string& l) {
  if (l.empty()) return kDefaultPage;
  if (l.size() > 9 || l.find_first_not_of("0123456789") != std::string::npos)
    return api_error(400, "M_INVALID_PARAM", "limit must be a non-negative integer");
  return std::clamp(std::atoi(l.c_str()), 1, kMaxPage);
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::relations(Ctx& ctx) {
  const std::string room_id = ctx.params[0], parent_id = ctx.params[1];
  RelationQuery q;
  q.parent_id = parent_id;
  if (ctx.params.size() > 2) q.rel_type = ctx.params[2];
  if (ctx.params.size() > 3) q.event_type = ctx.params[3];
  std::string dir = ctx.query_param("dir");
  if (!dir.empty() && dir != "b" && dir != "f") return api_error(400, "M_INVALID_PARAM", "dir must be b or f");
  q.backwards = dir != "f";
  auto limit = parse_limit(ctx.query_param("limit"));
  if (!limit) return tl::unexpected(limit.error());
  q.limit = *limit;
  auto from = parse_page_token(ctx.query_param("from"), 'r');
  if (!from) return tl::unexpected(from.error());
  auto to = parse_page_token(ctx.query_param("to"), 'r');
  if (!to) return tl::unexpected(to.error());
  q.from = *from;
  q.to = *to;
  std::string recurse = ctx.query_param("recurse");
  if (!recurse.empty() && recurse != "true" && recurse != "false")
    return api_error(400, "M_INVALID_PARAM", "recurse must be true or false");
  q.depth = recurse == "true" ? kMaxRecursion : 1;
  std::int64_t now = clock.now_ms();
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::optional<std::string>> {
    auto parent = rooms.event(tx, parent_id);
    if (!parent) return tl::unexpected(parent.error());
    if (!*parent || (*parent)->room_id != room_id) return std::optional<std::string>();
    auto filter = VisibilityFilter::load(tx, room_id, ctx.user_id);
    if (!filter) return tl::unexpected(filter.error());
    if (!filter->visible(**parent)) return std::optional<std::string>();
    auto page = related_events(tx, q);
    if (!page) return tl::unexpected(page.error());
    filter->apply(page->chunk);
    if (auto b = bundle_aggregations(tx, page->chunk, ctx.user_id, now); !b) return tl::unexpected(b.error());
    JsonWriter w;
    w.begin_object().key("chunk").begin_array();
    for (const auto& e : page->chunk) w.raw(render_event(e, ctx.user_id, ctx.device_id, now));
    w.end_array();
    if (page->next) w.key("next_batch").value(fmt::format("r{}", *page->next));
    if (q.from) w.key("prev_batch").value(fmt::format("r{}", *q.from));
    if (q.depth > 1) w.key("recursion_depth").value(q.depth);
    w.end_object();
    return std::optional<std::string>(w.take());
  });
  if (!r) return tl::unexpected(to_api_error(r.error()));
  if (!*r) return api_error(404, "M_NOT_FOUND", "Event not found");
  return **r;
}

ApiResult<std::string> MatrixService::Impl::threads(Ctx& ctx) {
  const std::string room_id = ctx.params[0];
  std::string include = ctx.query_param("include");
  if (!include.empty() && include != "all" && include != "participated")
    return api_error(400, "M_INVALID_PARAM", "include must be all or participated");
  auto limit = parse_limit(ctx.query_param("limit"));
  if (!limit) return tl::unexpected(limit.error());
  auto from = parse_page_token(ctx.query_param("from"), 't');
  if (!from) return tl::unexpected(from.error());
  std::int64_t now = clock.now_ms();
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto m = require_member(tx, room_id, ctx.user_id, false, true);
    if (!m) return fail(Errc::permission_denied, m.error().error);
    std::optional<std::string_view> participant;
    if (include == "participated") participant = ctx.user_id;
    auto page = thread_roots(tx, room_id, participant, *from, *limit);
    if (!page) return tl::unexpected(page.error());
    auto filter = VisibilityFilter::load(tx, room_id, ctx.user_id);
    if (!filter) return tl::unexpected(filter.error());
    filter->apply(page->roots);
    if (auto b = bundle_aggregations(tx, page->roots, ctx.user_id, now); !b) return tl::unexpected(b.error());
    JsonWriter w;
    w.begin_object().key("chunk").begin_array();
    for (const auto& e : page->roots) w.raw(render_event(e, ctx.user_id, ctx.device_id, now));
    w.end_array();
    if (page->next) w.key("next_batch").value(fmt::format("t{}", *page->next));
    w.end_object();
    return w.take();
  });
  if (!r) {
    if (r.error().code == Errc::permission_denied) return api_error(403, "M_FORBIDDEN", r.error().message);
    return tl::unexpected(to_api_error(r.error()));
  }
  return *r;
}

}  // namespace hearth::matrix
