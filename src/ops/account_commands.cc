#include "ops/account_commands.h"

#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "accounts/accounts.h"
#include "core/json.h"

namespace hearth::ops {
namespace {

bool flag(const AdminArgs& args, const char* key) {
  auto it = args.find(key);
  return it != args.end() && (it->second == "true" || it->second == "1");
}

std::string arg(const AdminArgs& args, const char* key) {
  auto it = args.find(key);
  return it == args.end() ? std::string() : it->second;
}

Result<std::string> required(const AdminArgs& args, const char* key) {
  auto it = args.find(key);
  if (it == args.end() || it->second.empty()) return fail(Errc::invalid_argument, fmt::format("missing argument '{}'", key));
  return it->second;
}

// The account an admin command names in its "jid" argument, as (localpart, domain).
Result<std::pair<std::string, std::string>> account_arg(const AdminArgs& args, std::string_view default_domain) {
  auto jid = required(args, "jid");
  if (!jid) return tl::unexpected(jid.error());
  return split_jid(*jid, default_domain);
}

std::string user_json(const accounts::UserInfo& u) {
  JsonWriter w;
  w.begin_object().key("jid").value(u.jid()).key("admin").value(u.admin).key("created_ms").value(u.created_ms).end_object();
  return w.take();
}

}  // namespace

Result<std::pair<std::string, std::string>> split_jid(std::string_view jid, std::string_view default_domain) {
  auto at = jid.find('@');
  if (at == std::string_view::npos) {
    if (jid.empty()) return fail(Errc::invalid_argument, "empty user name");
    return std::pair<std::string, std::string>(std::string(jid), std::string(default_domain));
  }
  if (at == 0 || at + 1 == jid.size() || jid.find('@', at + 1) != std::string_view::npos)
    return fail(Errc::invalid_argument, fmt::format("'{}' is not a user address (expected name@domain)", jid));
  return std::pair<std::string, std::string>(std::string(jid.substr(0, at)), std::string(jid.substr(at + 1)));
}

std::string invite_url(std::string_view public_url, std::string_view token) {
  if (public_url.empty()) return {};
  std::string base(public_url);
  while (!base.empty() && base.back() == '/') base.pop_back();
  return fmt::format("{}/invite/{}", base, token);
}

void add_account_commands(AdminCommands& commands, accounts::Accounts& accounts, AccountCommandContext ctx) {
  auto* acc = &accounts;
  commands["user.add"] = [acc, ctx](const AdminArgs& args) -> Result<std::string> {
    auto parts = account_arg(args, ctx.primary_domain);
    if (!parts) return tl::unexpected(parts.error());
    auto password = required(args, "password");
    if (!password) return tl::unexpected(password.error());
    std::string invite = arg(args, "invite");
    Result<accounts::UserInfo> user =
        invite.empty() ? acc->create_user(parts->second, parts->first, *password, flag(args, "admin"))
                       : acc->register_user(parts->second, parts->first, *password, std::string_view(invite));
    if (!user) return tl::unexpected(user.error());
    return user_json(*user);
  };
  commands["user.add_many"] = [acc, ctx](const AdminArgs& args) -> Result<std::string> {
    auto prefix = required(args, "prefix");
    if (!prefix) return tl::unexpected(prefix.error());
    auto password = required(args, "password");
    if (!password) return tl::unexpected(password.error());
    char* end = nullptr;
    std::string count_text = arg(args, "count");
    long long count = std::strtoll(count_text.c_str(), &end, 10);
    if (count_text.empty() || *end != '\0' || count <= 0 || count > 100000)
      return fail(Errc::invalid_argument, "count must be an integer from 1 to 100000");
    std::string domain = arg(args, "domain");
    if (domain.empty()) domain = ctx.primary_domain;
    std::vector<std::string> localparts;
    localparts.reserve(static_cast<std::size_t>(count));
    for (long long i = 1; i <= count; ++i) localparts.push_back(fmt::format("{}{}", *prefix, i));
    auto sessions = acc->create_users_with_sessions(domain, localparts, *password);
    if (!sessions) return tl::unexpected(sessions.error());
    JsonWriter w;
    w.begin_object().key("domain").value(domain).key("users").begin_array();
    for (std::size_t i = 0; i < localparts.size(); ++i) {
      w.begin_object()
          .key("localpart").value(localparts[i])
          .key("device_id").value((*sessions)[i].device_id)
          .key("access_token").value((*sessions)[i].access_token)
          .end_object();
    }
    w.end_array().end_object();
    return w.take();
  };
  commands["user.passwd"] = [acc, ctx](const AdminArgs& args) -> Result<std::string> {
    auto parts = account_arg(args, ctx.primary_domain);
    if (!parts) return tl::unexpected(parts.error());
    auto password = required(args, "password");
    if (!password) return tl::unexpected(password.error());
    if (auto r = acc->set_password(parts->second, parts->first, *password); !r) return tl::unexpected(r.error());
    return fmt::format("{{\"jid\":{}}}", json_quote(parts->first + "@" + parts->second));
  };
  commands["user.del"] = [acc, ctx](const AdminArgs& args) -> Result<std::string> {
    auto parts = account_arg(args, ctx.primary_domain);
    if (!parts) return tl::unexpected(parts.error());
    if (auto r = acc->delete_user(parts->second, parts->first); !r) return tl::unexpected(r.error());
    if (ctx.on_account_deleted) {
      if (auto r = ctx.on_account_deleted(parts->first + "@" + parts->second); !r) return tl::unexpected(r.error());
    }
    return fmt::format("{{\"jid\":{}}}", json_quote(parts->first + "@" + parts->second));
  };
  commands["user.list"] = [acc](const AdminArgs& args) -> Result<std::string> {
    auto users = acc->list_users(arg(args, "domain"));
    if (!users) return tl::unexpected(users.error());
    JsonWriter w;
    w.begin_object().key("users").begin_array();
    for (const auto& u : *users) w.raw(user_json(u));
    w.end_array().end_object();
    return w.take();
  };
  commands["invite.create"] = [acc, ctx](const AdminArgs& args) -> Result<std::string> {
    std::string domain = arg(args, "domain");
    if (domain.empty()) domain = ctx.primary_domain;
    std::optional<std::int64_t> ttl_ms;
    if (auto hours = arg(args, "ttl_hours"); !hours.empty()) {
      char* end = nullptr;
      long long h = std::strtoll(hours.c_str(), &end, 10);
      if (*end != '\0' || h <= 0) return fail(Errc::invalid_argument, "ttl_hours must be a positive integer");
      ttl_ms = h * 3600 * 1000;
    }
    auto invite = acc->create_invite(domain, flag(args, "admin"), ttl_ms, "hearthctl", "admin");
    if (!invite) return tl::unexpected(invite.error());
    JsonWriter w;
    w.begin_object()
        .key("token").value(invite->token)
        .key("domain").value(invite->domain)
        .key("admin").value(invite->grants_admin)
        .key("expires_ms").value(invite->expires_ms)
        .key("url").value(invite_url(ctx.public_url, invite->token))
        .end_object();
    return w.take();
  };
}

}  // namespace hearth::ops
