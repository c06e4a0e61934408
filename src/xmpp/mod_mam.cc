#include "xmpp/mod_mam.h"

#include <ctime>

#include <fmt/format.h>

#include "xmpp/forms.h"
#include "xmpp/im.h"
#include "xmpp/jid.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kRsmNs = "http://jabber.org/protocol/rsm";
constexpr std::string_view kForwardNs = "urn:xmpp:forward:0";
constexpr std::string_view kHintsNs = "urn:xmpp:hints";
constexpr int kMaxPage = 250;

}  // namespace

void answer_mam_query(XmppStore& store, const std::string& archive, const SessionIdentity& me, const Element& iq,
                      const Element& query, IqReply& reply) {
  if (iq.attr("type") == "get") {
    Element q("query", std::string(kMamNs));
    Element& x = q.add_child(make_form("form", kMamNs));
    x.add_child(form_field("with", "jid-single"));
    x.add_child(form_field("start", "text-single"));
    x.add_child(form_field("end", "text-single"));
    return reply.result(std::move(q));
  }
  ArchiveQuery aq;
  if (const Element* x = query.child("x", kDataFormsNs)) {
    for (const auto& field : x->children()) {
      if (field.name() != "field") continue;
      std::string var(field.attr("var"));
      const Element* v = field.child("value", kDataFormsNs);
      std::string value = v ? v->text() : std::string();
      if (var == "FORM_TYPE") {
        if (value != kMamNs) return reply.error("modify", "bad-request", "FORM_TYPE must be urn:xmpp:mam:2");
      } else if (var == "with") {
        auto jid = Jid::parse(value);
        if (!jid) return reply.error("modify", "bad-request", "'with' is not a JID");
        aq.with = jid->bare();
      } else if (var == "start" || var == "end") {
        auto ms = parse_xmpp_datetime(value);
        if (!ms) return reply.error("modify", "bad-request", "'" + var + "' is not an XEP-0082 date-time");
        (var == "start" ? aq.start_ms : aq.end_ms) = std::max<std::int64_t>(*ms, 1);
      } else {
        return reply.error("modify", "bad-request", "unsupported field '" + var + "'");
      }
    }
  }
  if (const Element* set = query.child("set", kRsmNs)) {
    if (const Element* max = set->child("max", kRsmNs)) {
      try {
        aq.max = std::stoi(max->text());
      } catch (...) {
        return reply.error("modify", "bad-request", "<max/> is not a number");
      }
    }
    if (const Element* after = set->child("after", kRsmNs)) aq.after_id = after->text();
    if (const Element* before = set->child("before", kRsmNs)) {
      aq.before_id = before->text();
      aq.last_page = aq.before_id.empty();
    }
  }
  aq.max = std::clamp(aq.max, 0, kMaxPage);
  auto page = store.query_archive(archive, aq);
  if (!page) {
    if (page.error().code == Errc::not_found) return reply.error("cancel", "item-not-found", page.error().message);
    return reply.error("wait", "internal-server-error");
  }
  std::string queryid(query.attr("queryid"));
  for (const auto& item : page->items) {
    std::string qid = queryid.empty() ? std::string() : fmt::format(" queryid='{}'", xml_escape(queryid));
    me.sink->deliver(fmt::format(
        "<message to='{}' from='{}'><result xmlns='{}'{} id='{}'><forwarded xmlns='{}'><delay xmlns='urn:xmpp:delay' "
        "stamp='{}'/>{}</forwarded></result></message>",
        xml_escape(me.full), xml_escape(archive), kMamNs, qid, xml_escape(item.id), kForwardNs,
        format_delay_stamp(item.stamp_ms), item.stanza));
  }
  Element fin("fin", std::string(kMamNs));
  if (page->complete) fin.set_attr("complete", "true");
  Element& set = fin.add_child(Element("set", std::string(kRsmNs)));
  if (!page->items.empty()) {
    set.add_child(Element("first", std::string(kRsmNs))).add_text(page->items.front().id);
    set.add_child(Element("last", std::string(kRsmNs))).add_text(page->items.back().id);
  }
  set.add_child(Element("count", std::string(kRsmNs))).add_text(std::to_string(page->count));
  reply.result(std::move(fin));
}

bool archivable(const Element& m) {
  std::string_view type = m.attr("type");
  if (!type.empty() && type != "chat" && type != "normal") return false;
  if (!m.child("body", kClientNs)) return false;
  if (m.child("no-store", kHintsNs) || m.child("no-permanent-store", kHintsNs)) return false;
  return true;
}

std::optional<std::int64_t> parse_xmpp_datetime(std::string_view s) {
  // CCYY-MM-DDThh:mm:ss[.sss]TZD
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t len) -> int {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return -1;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour < 0 ||
      tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60)
    return std::nullopt;
  std::size_t pos = 19;
  int millis = 0;
  if (s[pos] == '.') {
    std::size_t digits = 0;
    ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 3) millis = millis * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) millis *= 10;
  }
  std::int64_t offset_s = 0;
  if (pos < s.size() && s[pos] == 'Z' && pos + 1 == s.size()) {
  } else if (pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    int h = num(pos + 1, 2), m = num(pos + 4, 2);
    if (h < 0 || m < 0 || h > 23 || m > 59) return std::nullopt;
    offset_s = (h * 3600 + m * 60) * (s[pos] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  std::int64_t secs = static_cast<std::int64_t>(timegm(&tm)) - offset_s;
  return secs * 1000 + millis;
}

void register_mam(IqTable& table, XmppStore& store) {
  XmppStore* s = &store;
  table.add({std::string(kMamNs), "query", IqTarget::account,
             [s](const SessionIdentity& me, const std::string&, const Element& iq, const Element& q, IqReply& r) {
               answer_mam_query(*s, me.bare, me, iq, q, r);
             },
             {std::string(kMamNs), std::string(kSidNs)}});
  table.add({std::string(kMamNs), "prefs", IqTarget::account,
             [](const SessionIdentity&, const std::string&, const Element& iq, const Element&, IqReply& r) {
               if (iq.attr("type") != "get")
                 return r.error("cancel", "feature-not-implemented", "every message is archived; preferences are fixed");
               Element prefs("prefs", std::string(kMamNs));
               prefs.set_attr("default", "always");
               prefs.add_child(Element("always", std::string(kMamNs)));
               prefs.add_child(Element("never", std::string(kMamNs)));
               r.result(std::move(prefs));
             },
             {}});
}

}  // namespace hearth::xmpp
