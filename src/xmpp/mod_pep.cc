#include "xmpp/mod_pep.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <utility>

#include "core/clock.h"
#include "core/random.h"
#include "store/store.h"
#include "xmpp/caps.h"
#include "xmpp/forms.h"
#include "xmpp/registry.h"
#include "xmpp/xmpp_store.h"

namespace hearth::xmpp {
namespace {

constexpr std::string_view kNodeConfigForm = "http://jabber.org/protocol/pubsub#node_config";
constexpr std::string_view kPublishOptionsForm = "http://jabber.org/protocol/pubsub#publish-options";
constexpr std::string_view kDelayNs = "urn:xmpp:delay";
constexpr std::string_view kNotifySuffix = "+notify";
constexpr std::size_t kMaxNodeNameBytes = 1024;
constexpr std::size_t kMaxItemIdBytes = 256;

const std::vector<store::Migration> kMigrations = {
    {1, "pep nodes and items", R"sql(
CREATE TABLE xmpp_pep_node (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  access_model TEXT NOT NULL,
  persist_items INTEGER NOT NULL,
  max_items INTEGER NOT NULL,
  send_last INTEGER NOT NULL,
  notify_retract INTEGER NOT NULL,
  title TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (owner, node)
) WITHOUT ROWID;
CREATE TABLE xmpp_pep_item (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  item_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  xml TEXT NOT NULL,
  published_ms INTEGER NOT NULL,
  PRIMARY KEY (owner, node, item_id)
) WITHOUT ROWID;
CREATE INDEX xmpp_pep_item_seq ON xmpp_pep_item(owner, node, seq);
)sql"},
};

// Fields a client may send that hearth accepts without keeping (their only sensible value
// is what hearth does anyway).
bool accepted_but_fixed(std::string_view var) {
  static const std::set<std::string_view> fixed = {
      "pubsub#deliver_payloads",   "pubsub#deliver_notifications", "pubsub#notify_config",
      "pubsub#notify_delete",      "pubsub#notify_sub",            "pubsub#presence_based_delivery",
      "pubsub#publish_model",      "pubsub#purge_offline",         "pubsub#subscribe",
      "pubsub#type",               "pubsub#itemreply",             "pubsub#max_payload_size",
      "pubsub#description",        "pubsub#roster_groups_allowed", "pubsub#notification_type"};
  return fixed.count(var) > 0;
}

// Applies one node_config field; false if the field is unknown or its value invalid.
bool apply_field(PepNodeConfig& config, std::string_view var, const std::vector<std::string>& values,
                 int max_items_limit) {
  std::string value = values.empty() ? std::string() : values.front();
  if (var == "pubsub#access_model") {
    if (value != "open" && value != "presence" && value != "roster" && value != "whitelist") return false;
    config.access_model = value;
  } else if (var == "pubsub#persist_items") {
    auto b = form_bool(value);
    if (!b) return false;
    config.persist_items = *b;
  } else if (var == "pubsub#max_items") {
    if (value == "max") {
      config.max_items = max_items_limit;
    } else {
      int n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n < 1) return false;
      config.max_items = std::min(n, max_items_limit);
    }
  } else if (var == "pubsub#send_last_published_item") {
    if (value == "never") config.send_last_published_item = false;
    else if (value == "on_sub" || value == "on_sub_and_presence") config.send_last_published_item = true;
    else return false;
  } else if (var == "pubsub#notify_retract") {
    auto b = form_bool(value);
    if (!b) return false;
    config.notify_retract = *b;
  } else if (var == "pubsub#title") {
    if (value.size() > kMaxNodeNameBytes) return false;
    config.title = value;
  } else {
    return accepted_but_fixed(var);
  }
  return true;
}

// XEP-0223 §4 precondition: does the node's config already say what the publisher asks?
bool satisfies(const PepNodeConfig& config, std::string_view var, const std::vector<std::string>& values,
               int max_items_limit) {
  if (accepted_but_fixed(var)) return true;
  PepNodeConfig wanted = config;
  if (!apply_field(wanted, var, values, max_items_limit)) return false;
  return wanted.access_model == config.access_model && wanted.persist_items == config.persist_items &&
         wanted.max_items == config.max_items &&
         wanted.send_last_published_item == config.send_last_published_item &&
         wanted.notify_retract == config.notify_retract && wanted.title == config.title;
}

int kept_items(const PepNodeConfig& config) { return config.persist_items ? config.max_items : 1; }

Element config_form(const PepNodeConfig& c, int max_items_limit) {
  Element x = make_form("form", kNodeConfigForm);
  Element access = form_field("pubsub#access_model", "list-single", {c.access_model});
  for (const char* option : {"open", "presence", "roster", "whitelist"})
    access.add_child(Element("option", std::string(kDataFormsNs)))
        .add_child(Element("value", std::string(kDataFormsNs)))
        .add_text(option);
  x.add_child(std::move(access));
  x.add_child(form_field("pubsub#persist_items", "boolean", {c.persist_items ? "1" : "0"}));
  x.add_child(form_field("pubsub#max_items", "text-single",
                         {c.max_items >= max_items_limit ? std::string("max") : std::to_string(c.max_items)}));
  x.add_child(form_field("pubsub#send_last_published_item", "list-single",
                         {c.send_last_published_item ? "on_sub_and_presence" : "never"}));
  x.add_child(form_field("pubsub#notify_retract", "boolean", {c.notify_retract ? "1" : "0"}));
  x.add_child(form_field("pubsub#deliver_payloads", "boolean", {"1"}));
  x.add_child(form_field("pubsub#publish_model", "list-single", {"publishers"}));
  x.add_child(form_field("pubsub#title", "text-single", {c.title}));
  return x;
}

Element pubsub_condition(std::string_view name, std::string_view feature = {}) {
  Element e{std::string(name), std::string(kPubsubErrorsNs)};
  if (!feature.empty()) e.set_attr("feature", std::string(feature));
  return e;
}

Result<std::optional<PepNodeConfig>> load_config(store::Transaction& tx, std::string_view owner,
                                                 std::string_view node) {
  auto row = tx.query_one(
      "SELECT access_model, persist_items, max_items, send_last, notify_retract, title FROM xmpp_pep_node "
      "WHERE owner = ? AND node = ?",
      {std::string(owner), std::string(node)});
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<PepNodeConfig>();
  const auto& r = **row;
  PepNodeConfig c;
  c.access_model = std::string(r.text(0));
  c.persist_items = r.integer(1) != 0;
  c.max_items = static_cast<int>(r.integer(2));
  c.send_last_published_item = r.integer(3) != 0;
  c.notify_retract = r.integer(4) != 0;
  c.title = std::string(r.text(5));
  return std::optional<PepNodeConfig>(std::move(c));
}

Result<void> save_config(store::Transaction& tx, std::string_view owner, std::string_view node,
                         const PepNodeConfig& c, std::int64_t now_ms) {
  auto r = tx.exec(
      "INSERT INTO xmpp_pep_node(owner, node, access_model, persist_items, max_items, send_last, notify_retract, "
      "title, created_ms) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(owner, node) DO UPDATE SET "
      "access_model = excluded.access_model, persist_items = excluded.persist_items, max_items = "
      "excluded.max_items, send_last = excluded.send_last, notify_retract = excluded.notify_retract, title = "
      "excluded.title",
      {std::string(owner), std::string(node), c.access_model, std::int64_t{c.persist_items}, std::int64_t{c.max_items},
       std::int64_t{c.send_last_published_item}, std::int64_t{c.notify_retract}, c.title, now_ms});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

// Drops the oldest items past what the node keeps.
Result<void> trim(store::Transaction& tx, std::string_view owner, std::string_view node, const PepNodeConfig& c) {
  auto r = tx.exec(
      "DELETE FROM xmpp_pep_item WHERE owner = ? AND node = ? AND seq NOT IN (SELECT seq FROM xmpp_pep_item WHERE "
      "owner = ? AND node = ? ORDER BY seq DESC LIMIT ?)",
      {std::string(owner), std::string(node), std::string(owner), std::string(node), std::int64_t{kept_items(c)}});
  if (!r) return tl::unexpected(r.error());
  return ok();
}

Result<std::int64_t> count_nodes(store::Transaction& tx, std::string_view owner) {
  auto row = tx.query_one("SELECT count(*) FROM xmpp_pep_node WHERE owner = ?", {std::string(owner)});
  if (!row) return tl::unexpected(row.error());
  return (*row)->integer(0);
}

struct StoredItem {
  std::string id, xml;
  std::int64_t published_ms = 0;
};

Element item_element(const StoredItem& item) {
  Element e("item", std::string(kPubsubNs));
  e.set_attr("id", item.id);
  if (auto payload = parse_element(item.xml)) e.add_child(std::move(*payload));
  return e;
}

Element headline(const std::string& from, const std::string& to, Element event_child,
                 std::optional<std::int64_t> delay_ms = std::nullopt) {
  Element m("message", std::string(kClientNs));
  m.set_attr("from", from);
  m.set_attr("to", to);
  m.set_attr("type", "headline");
  m.set_attr("id", random_hex(8));
  Element& event = m.add_child(Element("event", std::string(kPubsubEventNs)));
  event_child.replace_ns(kPubsubNs, kPubsubEventNs);
  event.add_child(std::move(event_child));
  if (delay_ms) {
    Element& d = m.add_child(Element("delay", std::string(kDelayNs)));
    d.set_attr("from", from);
    d.set_attr("stamp", format_delay_stamp(*delay_ms));
  }
  return m;
}

bool is_true(std::string_view v) { return v == "1" || v == "true"; }

}  // namespace

Pep::Pep(store::Store& store, XmppStore& roster, SessionRegistry& registry, Clock& clock,
         std::function<bool(const std::string&, const std::string&)> blocked, PepOptions options)
    : store_(store),
      roster_(roster),
      registry_(registry),
      clock_(clock),
      blocked_(std::move(blocked)),
      options_(options) {}

Result<void> Pep::register_iqs(IqTable& table) {
  if (auto m = store_.migrate("xmpp_pep", kMigrations); !m) return m;
  std::vector<std::string> features;
  for (const char* f : {"publish", "publish-options", "auto-create", "create-nodes", "persistent-items",
                        "retrieve-items", "retract-items", "delete-nodes", "purge-nodes", "config-node",
                        "access-open", "access-presence", "access-roster", "access-whitelist", "last-published",
                        "item-ids", "filtered-notifications", "delete-items"})
    features.push_back(fmt::format("{}#{}", kPubsubNs, f));
  features.emplace_back(kPubsubNs);
  table.add({std::string(kPubsubNs), "pubsub", IqTarget::account_or_peer,
             [this](const SessionIdentity& me, const std::string& to, const Element& iq, const Element& p,
                    IqReply& r) { handle_pubsub(me, to, iq, p, r); },
             features});
  table.add({std::string(kPubsubOwnerNs), "pubsub", IqTarget::account_or_peer,
             [this](const SessionIdentity& me, const std::string& to, const Element& iq, const Element& p,
                    IqReply& r) { handle_owner(me, to, iq, p, r); },
             {}});
  return ok();
}

// ---- requests ---------------------------------------------------------------------

void Pep::handle_pubsub(const SessionIdentity& me, const std::string& to, const Element& iq, const Element& pubsub,
                        IqReply& reply) {
  bool owner = to == me.bare;
  bool set = iq.attr("type") == "set";
  const Element* verb = nullptr;
  for (const auto& c : pubsub.children()) {
    if (c.name() == "publish-options" || c.name() == "configure") continue;
    if (verb) return reply.error("modify", "bad-request", "one pubsub action per request");
    verb = &c;
  }
  if (!verb) return reply.error("modify", "bad-request", "no pubsub action");
  const std::string& name = verb->name();
  if (!set && name == "items") return items(me, to, *verb, reply);
  if (set && (name == "publish" || name == "retract" || name == "create")) {
    if (!owner) return reply.error("auth", "forbidden", "only the account's owner publishes to its nodes");
    if (name == "publish") return publish(me, iq, pubsub, *verb, reply);
    if (name == "retract") return retract(me, *verb, reply);
    return create(me, pubsub, *verb, reply);
  }
  if (name == "subscribe" || name == "unsubscribe" || name == "subscriptions" || name == "affiliations" ||
      name == "options" || name == "default")
    return reply.error_with("cancel", "feature-not-implemented", pubsub_condition("unsupported", name),
                            "PEP notifications follow +notify interest; explicit subscriptions are not supported");
  reply.error("modify", "bad-request", fmt::format("'{}' is not a pubsub {} action", name, set ? "set" : "get"));
}

void Pep::publish(const SessionIdentity& me, const Element&, const Element& pubsub, const Element& publish,
                  IqReply& reply) {
  std::string node(publish.attr("node"));
  if (node.empty() || node.size() > kMaxNodeNameBytes)
    return reply.error_with("modify", "bad-request", pubsub_condition("nodeid-required"));
  std::vector<const Element*> items;
  for (const auto& c : publish.children())
    if (c.name() == "item") items.push_back(&c);
  if (items.size() != 1)
    return reply.error_with("modify", "bad-request", pubsub_condition("invalid-payload"), "publish exactly one item");
  const Element& item = *items.front();
  const Element* payload = nullptr;
  int payloads = 0;
  for (const auto& c : item.children()) {
    payload = &c;
    ++payloads;
  }
  if (payloads == 0) return reply.error_with("modify", "bad-request", pubsub_condition("payload-required"));
  if (payloads > 1) return reply.error_with("modify", "bad-request", pubsub_condition("invalid-payload"));
  std::string id(item.attr("id"));
  if (id.size() > kMaxItemIdBytes) return reply.error("modify", "bad-request", "the item id is too long");
  if (id.empty()) id = random_hex(12);
  std::string xml = payload->serialize();
  if (xml.size() > options_.max_item_bytes)
    return reply.error_with("modify", "not-acceptable", pubsub_condition("payload-too-big"),
                            fmt::format("an item may hold at most {} bytes", options_.max_item_bytes));

  std::optional<SubmittedForm> wanted;
  if (const Element* po = pubsub.child("publish-options", kPubsubNs)) {
    if (const Element* x = po->child("x", kDataFormsNs)) {
      wanted = read_form(*x);
      if (!wanted || (!wanted->form_type.empty() && wanted->form_type != kPublishOptionsForm))
        return reply.error_with("modify", "bad-request", pubsub_condition("invalid-options"));
    }
  }

  enum class Outcome { ok, precondition, too_many_nodes } outcome = Outcome::ok;
  PepNodeConfig config;
  std::int64_t now = clock_.now_ms();
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto existing = load_config(tx, me.bare, node);
    if (!existing) return tl::unexpected(existing.error());
    if (*existing) {
      config = **existing;
      if (wanted)
        for (const auto& [var, values] : wanted->fields)
          if (!satisfies(config, var, values, options_.max_items_per_node)) {
            outcome = Outcome::precondition;
            return false;
          }
    } else {
      auto nodes = count_nodes(tx, me.bare);
      if (!nodes) return tl::unexpected(nodes.error());
      if (*nodes >= options_.max_nodes) {
        outcome = Outcome::too_many_nodes;
        return false;
      }
      if (wanted)
        for (const auto& [var, values] : wanted->fields)
          if (!apply_field(config, var, values, options_.max_items_per_node)) {
            outcome = Outcome::precondition;
            return false;
          }
      if (auto s = save_config(tx, me.bare, node, config, now); !s) return tl::unexpected(s.error());
    }
    auto w = tx.exec(
        "INSERT INTO xmpp_pep_item(owner, node, item_id, seq, xml, published_ms) VALUES(?, ?, ?, "
        "(SELECT coalesce(max(seq), 0) + 1 FROM xmpp_pep_item WHERE owner = ? AND node = ?), ?, ?) "
        "ON CONFLICT(owner, node, item_id) DO UPDATE SET seq = excluded.seq, xml = excluded.xml, "
        "published_ms = excluded.published_ms",
        {me.bare, node, id, me.bare, node, xml, now});
    if (!w) return tl::unexpected(w.error());
    if (auto t = trim(tx, me.bare, node, config); !t) return tl::unexpected(t.error());
    return true;
  });
  if (outcome == Outcome::precondition)
    return reply.error_with("cancel", "conflict", pubsub_condition("precondition-not-met"),
                            "the node's configuration differs from the publish-options");
  if (outcome == Outcome::too_many_nodes)
    return reply.error("cancel", "policy-violation", fmt::format("an account has at most {} nodes", options_.max_nodes));
  if (!r) return reply_storage_error(reply, r.error());

  Element answer("pubsub", std::string(kPubsubNs));
  Element& p = answer.add_child(Element("publish", std::string(kPubsubNs)));
  p.set_attr("node", node);
  p.add_child(Element("item", std::string(kPubsubNs))).set_attr("id", id);
  reply.result(std::move(answer));

  Element event("items", std::string(kPubsubNs));
  event.set_attr("node", node);
  Element& it = event.add_child(Element("item", std::string(kPubsubNs)));
  it.set_attr("id", id);
  it.add_child(*payload);
  notify(me.bare, node, config, event);
}

void Pep::retract(const SessionIdentity& me, const Element& retract, IqReply& reply) {
  std::string node(retract.attr("node"));
  if (node.empty()) return reply.error_with("modify", "bad-request", pubsub_condition("nodeid-required"));
  std::vector<std::string> ids;
  for (const auto& c : retract.children())
    if (c.name() == "item" && !c.attr("id").empty()) ids.emplace_back(c.attr("id"));
  if (ids.empty()) return reply.error_with("modify", "bad-request", pubsub_condition("item-required"));
  bool missing = false;
  PepNodeConfig config;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto existing = load_config(tx, me.bare, node);
    if (!existing) return tl::unexpected(existing.error());
    if (!*existing) {
      missing = true;
      return false;
    }
    config = **existing;
    for (const auto& id : ids) {
      auto d = tx.exec("DELETE FROM xmpp_pep_item WHERE owner = ? AND node = ? AND item_id = ?", {me.bare, node, id});
      if (!d) return tl::unexpected(d.error());
      if (*d == 0) {
        missing = true;
        return fail(Errc::not_found, "no such item");
      }
    }
    return true;
  });
  if (missing) return reply.error("cancel", "item-not-found");
  if (!r) return reply_storage_error(reply, r.error());
  reply.result();
  if (!is_true(retract.attr("notify")) && !config.notify_retract) return;
  Element event("items", std::string(kPubsubNs));
  event.set_attr("node", node);
  for (const auto& id : ids) event.add_child(Element("retract", std::string(kPubsubNs))).set_attr("id", id);
  notify(me.bare, node, config, event);
}

void Pep::create(const SessionIdentity& me, const Element& pubsub, const Element& create, IqReply& reply) {
  std::string node(create.attr("node"));
  if (node.empty() || node.size() > kMaxNodeNameBytes)
    return reply.error_with("modify", "not-acceptable", pubsub_condition("nodeid-required"),
                            "PEP nodes are named by the client");
  PepNodeConfig config;
  if (const Element* configure = pubsub.child("configure", kPubsubNs)) {
    if (const Element* x = configure->child("x", kDataFormsNs)) {
      auto form = read_form(*x);
      if (!form) return reply.error("modify", "bad-request", "the configuration form is malformed");
      for (const auto& [var, values] : form->fields)
        if (!apply_field(config, var, values, options_.max_items_per_node))
          return reply.error("modify", "not-acceptable", fmt::format("unsupported value for '{}'", var));
    }
  }
  enum class Outcome { ok, exists, too_many } outcome = Outcome::ok;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto existing = load_config(tx, me.bare, node);
    if (!existing) return tl::unexpected(existing.error());
    if (*existing) {
      outcome = Outcome::exists;
      return false;
    }
    auto nodes = count_nodes(tx, me.bare);
    if (!nodes) return tl::unexpected(nodes.error());
    if (*nodes >= options_.max_nodes) {
      outcome = Outcome::too_many;
      return false;
    }
    if (auto s = save_config(tx, me.bare, node, config, clock_.now_ms()); !s) return tl::unexpected(s.error());
    return true;
  });
  if (outcome == Outcome::exists) return reply.error("cancel", "conflict", "the node exists");
  if (outcome == Outcome::too_many)
    return reply.error("cancel", "policy-violation", fmt::format("an account has at most {} nodes", options_.max_nodes));
  if (!r) return reply_storage_error(reply, r.error());
  reply.result();
}

void Pep::items(const SessionIdentity& me, const std::string& owner, const Element& items, IqReply& reply) {
  std::string node(items.attr("node"));
  if (node.empty()) return reply.error_with("modify", "bad-request", pubsub_condition("nodeid-required"));
  std::vector<std::string> ids;
  for (const auto& c : items.children())
    if (c.name() == "item" && !c.attr("id").empty()) ids.emplace_back(c.attr("id"));
  int max_items = 0;
  if (auto m = items.attr("max_items"); !m.empty()) {
    auto [end, ec] = std::from_chars(m.data(), m.data() + m.size(), max_items);
    if (ec != std::errc() || end != m.data() + m.size() || max_items < 1)
      return reply.error("modify", "bad-request", "max_items is a positive integer");
  }
  std::optional<PepNodeConfig> config;
  std::vector<StoredItem> found;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    auto c = load_config(tx, owner, node);
    if (!c) return tl::unexpected(c.error());
    config = *c;
    if (!config) return false;
    auto add = [&](const store::Row& row) {
      found.push_back({std::string(row.text(0)), std::string(row.text(1)), row.integer(2)});
    };
    if (!ids.empty()) {
      for (const auto& id : ids) {
        auto q = tx.query("SELECT item_id, xml, published_ms FROM xmpp_pep_item WHERE owner = ? AND node = ? AND "
                          "item_id = ?",
                          {owner, node, id}, add);
        if (!q) return tl::unexpected(q.error());
      }
      return true;
    }
    auto q = tx.query(
        "SELECT item_id, xml, published_ms FROM xmpp_pep_item WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?",
        {owner, node, std::int64_t{max_items > 0 ? max_items : options_.max_items_per_node}}, add);
    if (!q) return tl::unexpected(q.error());
    std::reverse(found.begin(), found.end());
    return true;
  });
  if (!r) return reply_storage_error(reply, r.error());
  if (!config) return reply.error("cancel", "item-not-found", "no such node");
  if (owner != me.bare && !may_read(owner, me.bare, *config)) {
    if (config->access_model == "whitelist")
      return reply.error_with("cancel", "not-allowed", pubsub_condition("closed-node"));
    if (config->access_model == "roster")
      return reply.error_with("auth", "not-authorized", pubsub_condition("not-in-roster-group"));
    return reply.error_with("auth", "not-authorized", pubsub_condition("presence-subscription-required"));
  }
  Element answer("pubsub", std::string(kPubsubNs));
  Element& list = answer.add_child(Element("items", std::string(kPubsubNs)));
  list.set_attr("node", node);
  for (const auto& item : found) list.add_child(item_element(item));
  reply.result(std::move(answer));
}

void Pep::handle_owner(const SessionIdentity& me, const std::string& to, const Element& iq, const Element& pubsub,
                       IqReply& reply) {
  if (to != me.bare) return reply.error("auth", "forbidden", "only the account's owner manages its nodes");
  const Element* verb = nullptr;
  for (const auto& c : pubsub.children()) {
    if (verb) return reply.error("modify", "bad-request", "one pubsub action per request");
    verb = &c;
  }
  if (!verb) return reply.error("modify", "bad-request", "no pubsub action");
  bool set = iq.attr("type") == "set";
  std::string node(verb->attr("node"));
  const std::string& name = verb->name();
  if (name != "configure" && name != "delete" && name != "purge")
    return reply.error_with("cancel", "feature-not-implemented", pubsub_condition("unsupported", name));
  if (node.empty()) return reply.error_with("modify", "bad-request", pubsub_condition("nodeid-required"));
  if (!set && name != "configure") return reply.error("modify", "bad-request", "delete and purge are sets");

  if (name == "configure" && !set) {
    auto c = store_.read_sync([&](store::Transaction& tx) { return load_config(tx, me.bare, node); });
    if (!c) return reply_storage_error(reply, c.error());
    if (!*c) return reply.error("cancel", "item-not-found", "no such node");
    Element answer("pubsub", std::string(kPubsubOwnerNs));
    Element& configure = answer.add_child(Element("configure", std::string(kPubsubOwnerNs)));
    configure.set_attr("node", node);
    configure.add_child(config_form(**c, options_.max_items_per_node));
    return reply.result(std::move(answer));
  }

  std::optional<SubmittedForm> form;
  if (name == "configure") {
    const Element* x = verb->child("x", kDataFormsNs);
    if (!x) return reply.error("modify", "bad-request", "a configure set carries a form");
    form = read_form(*x);
    if (!form || (!form->form_type.empty() && form->form_type != kNodeConfigForm))
      return reply.error("modify", "bad-request", "the configuration form is malformed");
  }
  bool missing = false;
  std::string invalid_field;
  PepNodeConfig config;
  auto r = store_.write_sync([&](store::Transaction& tx) -> Result<bool> {
    auto existing = load_config(tx, me.bare, node);
    if (!existing) return tl::unexpected(existing.error());
    if (!*existing) {
      missing = true;
      return false;
    }
    config = **existing;
    if (name == "configure") {
      for (const auto& [var, values] : form->fields)
        if (!apply_field(config, var, values, options_.max_items_per_node)) {
          invalid_field = var;
          return false;
        }
      if (auto s = save_config(tx, me.bare, node, config, clock_.now_ms()); !s) return tl::unexpected(s.error());
      if (auto t = trim(tx, me.bare, node, config); !t) return tl::unexpected(t.error());
      return true;
    }
    auto d = tx.exec("DELETE FROM xmpp_pep_item WHERE owner = ? AND node = ?", {me.bare, node});
    if (!d) return tl::unexpected(d.error());
    if (name == "delete") {
      auto n = tx.exec("DELETE FROM xmpp_pep_node WHERE owner = ? AND node = ?", {me.bare, node});
      if (!n) return tl::unexpected(n.error());
    }
    return true;
  });
  if (missing) return reply.error("cancel", "item-not-found", "no such node");
  if (!invalid_field.empty())
    return reply.error("modify", "not-acceptable", fmt::format("unsupported value for '{}'", invalid_field));
  if (!r) return reply_storage_error(reply, r.error());
  reply.result();
  if (name == "configure") return;
  Element event(name, std::string(kPubsubNs));
  event.set_attr("node", node);
  notify(me.bare, node, config, event);
}

// ---- access and notifications -----------------------------------------------------

bool Pep::may_read(const std::string& owner, const std::string& requester, const PepNodeConfig& config) {
  if (owner == requester || config.access_model == "open") return true;
  if (config.access_model == "whitelist") return false;
  auto item = roster_.roster_item(owner, requester);
  if (!item || !*item) return false;
  return (*item)->state.sends_presence() && !blocked_(owner, requester);
}

void Pep::notify(const std::string& owner, const std::string& node, const PepNodeConfig& config,
                 const Element& event_child) {
  std::vector<std::string> bares = {owner};
  if (config.access_model != "whitelist") {
    if (auto roster = roster_.roster(owner)) {
      for (const auto& item : roster->items)
        if (item.state.sends_presence() && !blocked_(owner, item.jid) && !blocked_(item.jid, owner))
          bares.push_back(item.jid);
    }
  }
  // XEP-0163 §4.3.1: notifications reach those the owner shares presence with; an open
  // access model only widens who may fetch items.
  const std::string& want = node;
  for (const auto& bare : bares) {
    for (const auto& s : registry_.sessions(bare)) {
      if (!s.available) continue;
      {
        std::lock_guard lock(mutex_);
        auto it = interest_.find(s.id);
        if (it == interest_.end() || !it->second.nodes.count(want)) continue;
      }
      ImRouter::send(*s.sink, headline(owner, s.full_jid, event_child));
    }
  }
}

void Pep::on_presence(const SessionIdentity& me, const Element& presence) {
  if (presence.attr("type") == "unavailable") {
    std::lock_guard lock(mutex_);
    interest_.erase(me.id);
    return;
  }
  const Element* c = presence.child("c", kCapsNs);
  if (!c) return;
  std::string ver(c->attr("ver"));
  if (ver.empty()) return;
  std::string id;
  std::optional<std::vector<std::string>> known;
  {
    std::lock_guard lock(mutex_);
    if (auto it = caps_.find(ver); it != caps_.end()) known = it->second;
  }
  if (known) return set_features(me, *known);
  {
    std::lock_guard lock(mutex_);
    for (const auto& [qid, q] : pending_)
      if (q.session_id == me.id && q.ver == ver) return;  // already asked
    if (pending_.size() > 10000) pending_.clear();       // clients that never answer
    id = fmt::format("hearth-caps-{}", next_query_++);
    pending_[id] = {me.id, ver};
  }
  Element iq("iq", std::string(kClientNs));
  iq.set_attr("type", "get");
  iq.set_attr("id", id);
  iq.set_attr("from", me.bare);
  iq.set_attr("to", me.full);
  Element& q = iq.add_child(Element("query", std::string(kDiscoInfoNs)));
  q.set_attr("node", fmt::format("{}#{}", c->attr("node"), ver));
  ImRouter::send(*me.sink, iq);
}

bool Pep::on_iq_response(const SessionIdentity& me, const Element& iq) {
  std::string id(iq.attr("id"));
  if (id.rfind("hearth-caps-", 0) != 0) return false;
  PendingQuery query;
  {
    std::lock_guard lock(mutex_);
    auto it = pending_.find(id);
    if (it == pending_.end() || it->second.session_id != me.id) return false;
    query = it->second;
    pending_.erase(it);
  }
  if (iq.attr("type") != "result") return true;
  const Element* q = iq.child("query", kDiscoInfoNs);
  if (!q) return true;
  std::vector<DiscoIdentity> identities;
  std::vector<std::string> features;
  std::vector<SubmittedForm> forms;
  bool valid = true;
  for (const auto& c : q->children()) {
    if (c.name() == "identity")
      identities.push_back({std::string(c.attr("category")), std::string(c.attr("type")),
                            std::string(c.attr("xml:lang")), std::string(c.attr("name"))});
    else if (c.name() == "feature")
      features.emplace_back(c.attr("var"));
    else if (c.name() == "x" && c.ns() == kDataFormsNs) {
      auto form = read_form(c);
      if (form) forms.push_back(std::move(*form));
      else valid = false;
    }
  }
  if (features.size() > 1000) features.resize(1000);
  // Only a verification string that matches what the client answered may be shared with
  // other sessions; otherwise the answer counts for this session alone.
  if (valid && caps_ver(identities, features, forms) == query.ver) {
    std::lock_guard lock(mutex_);
    if (caps_.size() > 10000) caps_.clear();
    caps_[query.ver] = features;
  }
  set_features(me, features);
  return true;
}

void Pep::on_session_closed(const SessionIdentity& me) {
  std::lock_guard lock(mutex_);
  interest_.erase(me.id);
  for (auto it = pending_.begin(); it != pending_.end();)
    it = it->second.session_id == me.id ? pending_.erase(it) : std::next(it);
}

std::set<std::string> Pep::interest_of(std::uint64_t session_id) const {
  std::lock_guard lock(mutex_);
  auto it = interest_.find(session_id);
  return it == interest_.end() ? std::set<std::string>() : it->second.nodes;
}

void Pep::set_features(const SessionIdentity& me, const std::vector<std::string>& features) {
  std::set<std::string> nodes;
  for (const auto& f : features)
    if (f.size() > kNotifySuffix.size() && f.ends_with(kNotifySuffix))
      nodes.insert(f.substr(0, f.size() - kNotifySuffix.size()));
  std::set<std::string> added;
  {
    std::lock_guard lock(mutex_);
    Interest& interest = interest_[me.id];
    for (const auto& n : nodes)
      if (!interest.nodes.count(n)) added.insert(n);
    interest = {me.bare, me.full, std::move(nodes)};
  }
  send_last_items(me, added);
}

void Pep::send_last_items(const SessionIdentity& me, const std::set<std::string>& nodes) {
  if (nodes.empty()) return;
  std::vector<std::string> owners = {me.bare};
  if (auto roster = roster_.roster(me.bare))
    for (const auto& item : roster->items)
      if (item.state.receives_presence()) owners.push_back(item.jid);
  for (const auto& owner : owners) {
    struct Last {
      std::string node;
      PepNodeConfig config;
      StoredItem item;
    };
    std::vector<Last> last;
    auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
      return tx
          .query(
              "SELECT n.node, n.access_model, n.persist_items, n.max_items, n.send_last, n.notify_retract, n.title, "
              "i.item_id, i.xml, i.published_ms FROM xmpp_pep_node n JOIN xmpp_pep_item i ON i.owner = n.owner AND "
              "i.node = n.node WHERE n.owner = ? AND n.send_last = 1 AND i.seq = (SELECT max(seq) FROM xmpp_pep_item "
              "WHERE owner = n.owner AND node = n.node)",
              {owner},
              [&](const store::Row& row) {
                std::string node(row.text(0));
                if (!nodes.count(node)) return;
                PepNodeConfig c;
                c.access_model = std::string(row.text(1));
                c.persist_items = row.integer(2) != 0;
                c.max_items = static_cast<int>(row.integer(3));
                c.send_last_published_item = row.integer(4) != 0;
                c.notify_retract = row.integer(5) != 0;
                c.title = std::string(row.text(6));
                last.push_back({std::move(node), std::move(c),
                                {std::string(row.text(7)), std::string(row.text(8)), row.integer(9)}});
              })
          .map([] { return true; });
    });
    if (!r) continue;
    if (owner != me.bare && (blocked_(owner, me.bare) || blocked_(me.bare, owner))) continue;
    for (const auto& l : last) {
      if (!may_read(owner, me.bare, l.config)) continue;
      Element event("items", std::string(kPubsubNs));
      event.set_attr("node", l.node);
      event.add_child(item_element(l.item));
      ImRouter::send(*me.sink, headline(owner, me.full, std::move(event), l.item.published_ms));
    }
  }
}

std::vector<std::string> Pep::visible_nodes(const std::string& owner, const std::string& requester) {
  std::vector<std::pair<std::string, PepNodeConfig>> nodes;
  auto r = store_.read_sync([&](store::Transaction& tx) -> Result<bool> {
    return tx
        .query("SELECT node, access_model FROM xmpp_pep_node WHERE owner = ? ORDER BY node", {owner},
               [&](const store::Row& row) {
                 PepNodeConfig c;
                 c.access_model = std::string(row.text(1));
                 nodes.emplace_back(std::string(row.text(0)), std::move(c));
               })
        .map([] { return true; });
  });
  std::vector<std::string> out;
  if (!r) return out;
  for (auto& [node, config] : nodes)
    if (may_read(owner, requester, config)) out.push_back(std::move(node));
  return out;
}

Result<void> Pep::forget_account(const std::string& bare) {
  return store_
      .write_sync([&](store::Transaction& tx) -> Result<bool> {
        if (auto r = tx.exec("DELETE FROM xmpp_pep_item WHERE owner = ?", {bare}); !r) return tl::unexpected(r.error());
        if (auto r = tx.exec("DELETE FROM xmpp_pep_node WHERE owner = ?", {bare}); !r) return tl::unexpected(r.error());
        return true;
      })
      .map([](bool) {});
}

}  // namespace hearth::xmpp
