#include "xmpp/muc_room.h"

#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <sodium.h>

#include <charconv>
#include <fmt/format.h>

namespace hearth::xmpp {
namespace {

constexpr std::string_view kRoomConfigForm = "http://jabber.org/protocol/muc#roomconfig";

std::optional<int> to_int(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

Element option(std::string_view label, std::string_view value) {
  Element o("option", std::string(kDataFormsNs));
  o.set_attr("label", std::string(label));
  o.add_child(Element("value", std::string(kDataFormsNs))).add_text(value);
  return o;
}

}  // namespace

std::string_view affiliation_name(Affiliation a) {
  switch (a) {
    case Affiliation::outcast: return "outcast";
    case Affiliation::none: return "none";
    case Affiliation::member: return "member";
    case Affiliation::admin: return "admin";
    case Affiliation::owner: return "owner";
  }
  return "none";
}

std::optional<Affiliation> parse_affiliation(std::string_view n) {
  if (n == "outcast") return Affiliation::outcast;
  if (n == "none") return Affiliation::none;
  if (n == "member") return Affiliation::member;
  if (n == "admin") return Affiliation::admin;
  if (n == "owner") return Affiliation::owner;
  return std::nullopt;
}

std::string_view role_name(Role r) {
  switch (r) {
    case Role::none: return "none";
    case Role::visitor: return "visitor";
    case Role::participant: return "participant";
    case Role::moderator: return "moderator";
  }
  return "none";
}

std::optional<Role> parse_role(std::string_view n) {
  if (n == "none") return Role::none;
  if (n == "visitor") return Role::visitor;
  if (n == "participant") return Role::participant;
  if (n == "moderator") return Role::moderator;
  return std::nullopt;
}

std::string RoomConfig::serialise() const {
  auto b = [](bool v) { return v ? "1" : "0"; };
  auto clean = [](std::string s) {
    for (char& c : s)
      if (c == '\n' || c == '\r') c = ' ';
    return s;
  };
  return fmt::format(
      "name={}\ndescription={}\npersistent={}\npublic={}\nmembers_only={}\nmoderated={}\npassword={}\n"
      "non_anonymous={}\nchange_subject={}\nallow_invites={}\nhistory_max={}\nmax_users={}\narchived={}\n",
      clean(name), clean(description), b(persistent), b(public_room), b(members_only), b(moderated), clean(password),
      b(non_anonymous), b(occupants_change_subject), b(allow_invites), history_max, max_users, b(archived));
}

RoomConfig RoomConfig::parse(std::string_view text) {
  RoomConfig c;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view k = line.substr(0, eq), v = line.substr(eq + 1);
    bool on = v == "1";
    if (k == "name") c.name = v;
    else if (k == "description") c.description = v;
    else if (k == "persistent") c.persistent = on;
    else if (k == "public") c.public_room = on;
    else if (k == "members_only") c.members_only = on;
    else if (k == "moderated") c.moderated = on;
    else if (k == "password") c.password = v;
    else if (k == "non_anonymous") c.non_anonymous = on;
    else if (k == "change_subject") c.occupants_change_subject = on;
    else if (k == "allow_invites") c.allow_invites = on;
    else if (k == "history_max") c.history_max = to_int(v).value_or(c.history_max);
    else if (k == "max_users") c.max_users = to_int(v).value_or(c.max_users);
    else if (k == "archived") c.archived = on;
  }
  return c;
}

Element room_config_form(const RoomConfig& c) {
  Element x = make_form("form", kRoomConfigForm);
  auto b = [](bool v) { return std::vector<std::string>{v ? "1" : "0"}; };
  x.add_child(form_field("muc#roomconfig_roomname", "text-single", {c.name}));
  x.add_child(form_field("muc#roomconfig_roomdesc", "text-single", {c.description}));
  x.add_child(form_field("muc#roomconfig_persistentroom", "boolean", b(c.persistent)));
  x.add_child(form_field("muc#roomconfig_publicroom", "boolean", b(c.public_room)));
  x.add_child(form_field("muc#roomconfig_membersonly", "boolean", b(c.members_only)));
  x.add_child(form_field("muc#roomconfig_moderatedroom", "boolean", b(c.moderated)));
  x.add_child(form_field("muc#roomconfig_passwordprotectedroom", "boolean", b(!c.password.empty())));
  x.add_child(form_field("muc#roomconfig_roomsecret", "text-private", {c.password}));
  Element whois = form_field("muc#roomconfig_whois", "list-single", {c.non_anonymous ? "anyone" : "moderators"});
  whois.add_child(option("Moderators only", "moderators"));
  whois.add_child(option("Anyone", "anyone"));
  x.add_child(std::move(whois));
  x.add_child(form_field("muc#roomconfig_changesubject", "boolean", b(c.occupants_change_subject)));
  x.add_child(form_field("muc#roomconfig_allowinvites", "boolean", b(c.allow_invites)));
  x.add_child(form_field("muc#maxhistoryfetch", "text-single", {std::to_string(c.history_max)}));
  x.add_child(form_field("muc#roomconfig_maxusers", "text-single", {std::to_string(c.max_users)}));
  x.add_child(form_field("muc#roomconfig_enablearchiving", "boolean", b(c.archived)));
  return x;
}

std::string apply_room_config(RoomConfig& c, const SubmittedForm& form, int max_users_limit) {
  RoomConfig next = c;
  bool password_protected = !c.password.empty();
  bool protection_given = false;
  for (const auto& [var, values] : form.fields) {
    std::string v = values.empty() ? std::string() : values.front();
    auto flag = [&](bool& out) {
      auto parsed = form_bool(v);
      if (!parsed) return false;
      out = *parsed;
      return true;
    };
    bool ok = true;
    if (var == "muc#roomconfig_roomname") next.name = v.substr(0, 256);
    else if (var == "muc#roomconfig_roomdesc") next.description = v.substr(0, 1024);
    else if (var == "muc#roomconfig_persistentroom") ok = flag(next.persistent);
    else if (var == "muc#roomconfig_publicroom") ok = flag(next.public_room);
    else if (var == "muc#roomconfig_membersonly") ok = flag(next.members_only);
    else if (var == "muc#roomconfig_moderatedroom") ok = flag(next.moderated);
    else if (var == "muc#roomconfig_passwordprotectedroom") {
      ok = flag(password_protected);
      protection_given = true;
    } else if (var == "muc#roomconfig_roomsecret") next.password = v.substr(0, 256);
    else if (var == "muc#roomconfig_whois") {
      ok = v == "anyone" || v == "moderators";
      next.non_anonymous = v == "anyone";
    } else if (var == "muc#roomconfig_changesubject") ok = flag(next.occupants_change_subject);
    else if (var == "muc#roomconfig_allowinvites") ok = flag(next.allow_invites);
    else if (var == "muc#maxhistoryfetch" || var == "muc#roomconfig_historylength") {
      auto n = to_int(v);
      ok = n && *n >= 0 && *n <= 1000;
      if (ok) next.history_max = *n;
    } else if (var == "muc#roomconfig_maxusers") {
      auto n = to_int(v);
      ok = n && *n >= 1;
      if (ok) next.max_users = std::min(*n, max_users_limit);
    } else if (var == "muc#roomconfig_enablearchiving" || var == "mam") ok = flag(next.archived);
    if (!ok) return var;
  }
  if (protection_given && !password_protected) next.password.clear();
  if (protection_given && password_protected && next.password.empty()) return "muc#roomconfig_roomsecret";
  c = std::move(next);
  return {};
}

Role default_role(Affiliation a, const RoomConfig& config) {
  switch (a) {
    case Affiliation::owner:
    case Affiliation::admin: return Role::moderator;
    case Affiliation::member: return Role::participant;
    case Affiliation::none: return config.moderated ? Role::visitor : Role::participant;
    case Affiliation::outcast: return Role::none;
  }
  return Role::none;
}

bool may_change_affiliation(Affiliation actor, Affiliation target_current, Affiliation wanted) {
  if (actor == Affiliation::owner) return true;
  if (actor != Affiliation::admin) return false;
  auto low = [](Affiliation a) { return a == Affiliation::none || a == Affiliation::member || a == Affiliation::outcast; };
  return low(target_current) && low(wanted);
}

bool may_change_role(Affiliation actor_affiliation, Role actor_role, Affiliation target_affiliation, Role wanted) {
  if (actor_role != Role::moderator) return false;
  // Nobody changes the role of someone with a higher affiliation; an admin or owner is
  // never made less than a moderator by a mere moderator.
  if (static_cast<int>(target_affiliation) > static_cast<int>(actor_affiliation)) return false;
  if ((target_affiliation == Affiliation::admin || target_affiliation == Affiliation::owner) &&
      actor_affiliation != Affiliation::owner && wanted != Role::moderator)
    return false;
  if (wanted == Role::moderator)
    return actor_affiliation == Affiliation::admin || actor_affiliation == Affiliation::owner;
  return true;
}

std::string occupant_id(std::string_view room_secret, std::string_view real_bare) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), room_secret.data(), static_cast<int>(room_secret.size()),
       reinterpret_cast<const unsigned char*>(real_bare.data()), real_bare.size(), mac, &len);
  std::string out(sodium_base64_ENCODED_LEN(18, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), mac, 18, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

}  // namespace hearth::xmpp
