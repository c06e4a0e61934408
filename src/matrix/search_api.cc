// POST /search (category room_events) on search.h; and the background job that indexes
// the events stored before the search index existed.
#include <fmt/format.h>

#include <map>

#include "core/json.h"
#include "matrix/relations.h"
#include "matrix/search.h"
#include "matrix/service_internal.h"

namespace hearth::matrix {

namespace {

constexpr int kDefaultResults = 10;
constexpr int kMaxResults = 50;
constexpr int kMaxContext = 20;
constexpr int kScanChunk = 100;
constexpr int kMaxScannedPerRequest = 2000;  // raw hits looked at per request (the rest by next_batch)

ApiResult<int> int_field(const JsonValue& o, std::string_view key, int fallback, int max) {
  const JsonValue* v = o.get(key);
  if (!v) return fallback;
  if (!v->is_int() || v->as_int() < 0) return api_error(400, "M_INVALID_PARAM", fmt::format("{} must be a non-negative integer", key));
  return static_cast<int>(std::min<std::int64_t>(v->as_int(), max));
}

}  // namespace

ApiResult<std::string> MatrixService::Impl::search(Ctx& ctx) {
  auto body = ctx.body(options.max_body_bytes);
  if (!body) return tl::unexpected(body.error());
  const JsonValue* categories = body->get("search_categories");
  if (!categories || !categories->is_object()) return api_error(400, "M_BAD_JSON", "search_categories must be an object");
  const JsonValue* criteria = categories->get("room_events");
  if (!criteria) return std::string(R"({"search_categories":{}})");
  if (!criteria->is_object()) return api_error(400, "M_BAD_JSON", "room_events must be an object");
  const JsonValue* term = criteria->get("search_term");
  if (!term || !term->is_string()) return api_error(400, "M_BAD_JSON", "search_term must be a string");
  std::vector<std::string> keys;
  if (const JsonValue* k = criteria->get("keys")) {
    if (!k->is_array() || k->items().size() > 3) return api_error(400, "M_BAD_JSON", "keys must be a list of keys");
    for (const auto& key : k->items()) {
      if (!key.is_string()) return api_error(400, "M_BAD_JSON", "keys must be a list of keys");
      keys.push_back(key.as_string());
    }
  }
  std::vector<std::string> highlights;
  auto query = fts_query(term->as_string(), keys, &highlights);
  if (!query) return api_error(400, "M_INVALID_PARAM", query.error().message);
  std::string order(criteria->string_at("order_by"));
  if (order.empty()) order = "rank";
  if (order != "rank" && order != "recent") return api_error(400, "M_INVALID_PARAM", "order_by must be rank or recent");
  SyncFilter filter;
  int limit = kDefaultResults;
  if (const JsonValue* f = criteria->get("filter")) {
    if (!f->is_object()) return api_error(400, "M_BAD_JSON", "filter must be an object");
    JsonValue room = JsonValue::object();
    if (const JsonValue* r = f->get("rooms")) room.set("rooms", *r);
    if (const JsonValue* r = f->get("not_rooms")) room.set("not_rooms", *r);
    room.set("timeline", *f);
    JsonValue whole = JsonValue::object();
    whole.set("room", std::move(room));
    auto parsed = SyncFilter::parse(whole);
    if (!parsed) return api_error(400, "M_BAD_JSON", parsed.error().message);
    filter = std::move(*parsed);
    if (filter.timeline.limit > 0) limit = std::min(filter.timeline.limit, kMaxResults);
  }
  int before_limit = 0, after_limit = 0;
  bool with_context = false, include_profile = false;
  if (const JsonValue* c = criteria->get("event_context")) {
    if (!c->is_object()) return api_error(400, "M_BAD_JSON", "event_context must be an object");
    with_context = true;
    auto b = int_field(*c, "before_limit", 5, kMaxContext);
    if (!b) return tl::unexpected(b.error());
    auto a = int_field(*c, "after_limit", 5, kMaxContext);
    if (!a) return tl::unexpected(a.error());
    before_limit = *b;
    after_limit = *a;
    const JsonValue* p = c->get("include_profile");
    include_profile = p && p->is_bool() && p->as_bool();
  }
  std::int64_t offset = 0;
  if (std::string nb = ctx.query_param("next_batch"); !nb.empty()) {
    if (nb.size() < 2 || nb.size() > 19 || nb[0] != 'o' || nb.find_first_not_of("0123456789", 1) != std::string::npos)
      return api_error(400, "M_INVALID_PARAM", "Invalid next_batch");
    offset = std::stoll(nb.substr(1));
  }
  std::int64_t now = clock.now_ms();
  auto r = store.read_sync([&](store::Transaction& tx) -> Result<std::string> {
    auto count = count_search_hits(tx, ctx.user_id, *query);
    if (!count) return tl::unexpected(count.error());
    std::map<std::string, VisibilityFilter> visibility;
    std::vector<std::pair<SearchHit, StoredEvent>> results;
    std::int64_t position = offset;
    bool exhausted = false;
    while (static_cast<int>(results.size()) < limit && position - offset < kMaxScannedPerRequest && !exhausted) {
      auto hits = search_events(tx, ctx.user_id, *query, order == "rank", position, kScanChunk);
      if (!hits) return tl::unexpected(hits.error());
      exhausted = static_cast<int>(hits->size()) < kScanChunk;
      std::size_t used = 0;
      for (const auto& hit : *hits) {
        if (static_cast<int>(results.size()) >= limit) break;
        ++used;
        if (!filter.allows_room(hit.room_id)) continue;
        auto it = visibility.find(hit.room_id);
        if (it == visibility.end()) {
          auto v = VisibilityFilter::load(tx, hit.room_id, ctx.user_id);
          if (!v) return tl::unexpected(v.error());
          it = visibility.emplace(hit.room_id, std::move(*v)).first;
        }
        auto rows = rooms.paginate(tx, hit.room_id, hit.stream, true, 1, hit.stream);
        if (!rows) return tl::unexpected(rows.error());
        if (rows->empty() || rows->front().stream != hit.stream) continue;
        StoredEvent& e = rows->front();
        if (!it->second.visible(e) || !filter.timeline.allows(e.type, e.sender)) continue;
        results.emplace_back(hit, std::move(e));
      }
      position += static_cast<std::int64_t>(used);
      if (used < hits->size()) exhausted = false;  // stopped inside the chunk: more may follow
    }
    JsonWriter w;
    w.begin_object().key("search_categories").begin_object().key("room_events").begin_object();
    w.key("count").value(*count);
    w.key("highlights").begin_array();
    for (const auto& h : highlights) w.value(h);
    w.end_array();
    w.key("results").begin_array();
    for (auto& [hit, e] : results) {
      if (auto b = bundle_aggregations(tx, e, ctx.user_id, now); !b) return tl::unexpected(b.error());
      w.begin_object().key("rank").value(hit.rank).key("result").raw(render_event(e, ctx.user_id, ctx.device_id, now));
      if (with_context) {
        const VisibilityFilter& vis = visibility.at(e.room_id);
        auto before = rooms.paginate(tx, e.room_id, e.stream - 1, true, before_limit, e.stream);
        if (!before) return tl::unexpected(before.error());
        auto max = rooms.max_stream(tx);
        if (!max) return tl::unexpected(max.error());
        auto after = rooms.paginate(tx, e.room_id, e.stream, false, after_limit, *max);
        if (!after) return tl::unexpected(after.error());
        vis.apply(*before);
        vis.apply(*after);
        w.key("context").begin_object();
        w.key("start").value(fmt::format("s{}", before->empty() ? e.stream - 1 : before->back().stream - 1));
        w.key("end").value(fmt::format("s{}", after->empty() ? e.stream : after->back().stream));
        w.key("events_before").begin_array();
        for (const auto& b : *before) w.raw(render_event(b, ctx.user_id, ctx.device_id, now));
        w.end_array().key("events_after").begin_array();
        for (const auto& a : *after) w.raw(render_event(a, ctx.user_id, ctx.device_id, now));
        w.end_array();
        if (include_profile) {
          w.key("profile_info").begin_object();
          auto member = rooms.state_event(tx, e.room_id, "m.room.member", e.sender);
          if (!member) return tl::unexpected(member.error());
          w.key(e.sender).begin_object();
          if (*member) {
            auto v = parse_json((*member)->client_json, {std::size_t{1} << 24, 128});
            const JsonValue* c = v ? v->get("content") : nullptr;
            if (c)
              for (const char* field : {"displayname", "avatar_url"})
                if (const JsonValue* f = c->get(field); f && f->is_string()) w.key(field).value(f->as_string());
          }
          w.end_object().end_object();
        }
        w.end_object();
      }
      w.end_object();
    }
    w.end_array();
    if (!exhausted) w.key("next_batch").value(fmt::format("o{}", position));
    w.end_object().end_object().end_object();
    return w.take();
  });
  if (!r) {
    if (r.error().code == Errc::invalid_argument) return api_error(400, "M_INVALID_PARAM", r.error().message);
    return tl::unexpected(to_api_error(r.error()));
  }
  return *r;
}

void MatrixService::Impl::search_backfill() {
  std::weak_ptr<Impl> weak = weak_from_this();
  store.write(
      [weak](store::Transaction& tx) -> Result<void> {
        auto self = weak.lock();
        if (!self) return ok();
        auto done = backfill_search_batch(tx, 500);
        if (!done) return tl::unexpected(done.error());
        self->search_backfill_done = *done;
        return ok();
      },
      [weak](Result<void> r) {
        auto self = weak.lock();
        if (!self) return;
        if (!r) {
          self->log.warn("matrix.search_backfill_failed", {{"error", r.error().describe()}});
        } else if (self->search_backfill_done) {
          return;
        }
        // The next batch after a pause, so that client writes interleave with it.
        self->run_after(std::chrono::milliseconds(r ? 20 : 5000), [weak] {
          if (auto s = weak.lock()) s->search_backfill();
        });
      });
}

}  // namespace hearth::matrix
