// The account administration commands (user add/passwd/del/list, invite create), written
// once and used two ways: hearthd serves them on its admin socket, and hearthctl runs the
// same functions in-process on a stopped data directory.
//
// Commands block (argon2id hashing, synchronous storage): run them on the admin thread or
// in hearthctl, never on an event-loop shard.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "ops/admin.h"

namespace hearth::accounts {
class Accounts;
}

namespace hearth::ops {

struct AccountCommandContext {
  std::string primary_domain;
  // Base URL for invitation links, e.g. "https://localhost:8443"; empty: links omitted.
  std::string public_url;
  // Called after an account was deleted, with its bare JID, so protocol modules drop what
  // they kept for it; may be empty. A failure is reported to the admin.
  std::function<Result<void>(const std::string& bare)> on_account_deleted;
};

using AdminCommands = std::map<std::string, AdminCommand>;

// Adds user.add, user.add_many, user.passwd, user.del, user.list and invite.create.
//   user.add     {jid, password, admin?: bool, invite?: token}  -> {jid, admin}
//   user.add_many {prefix, count, password, domain?}            -> {domain, users: [{localpart, device_id, access_token}]}
//                (<prefix>1..<prefix>count sharing one password derivation, with a session
//                each: bulk provisioning for benchmarks, see Accounts::create_users_with_sessions)
//   user.passwd  {jid, password}                                -> {jid}
//   user.del     {jid}                                          -> {jid}
//   user.list    {domain?}                                      -> {users: [{jid, admin, created_ms}]}
//   invite.create {domain?, admin?: bool, ttl_hours?: int}      -> {token, domain, admin, expires_ms, url}
void add_account_commands(AdminCommands& commands, accounts::Accounts& accounts, AccountCommandContext context);

// "alice@example.org" -> {"alice", "example.org"}; a bare "alice" takes `default_domain`.
Result<std::pair<std::string, std::string>> split_jid(std::string_view jid, std::string_view default_domain);

// The link a person opens to redeem an invitation in a browser.
std::string invite_url(std::string_view public_url, std::string_view token);

}  // namespace hearth::ops
