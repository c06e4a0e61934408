// hearthd configuration: TOML (toml++) parsed into a plain struct.
//
// Every key has a default, so an empty or missing file is a valid configuration (domain
// `localhost`, data in `./data`). `config_keys()` is the single list of keys with their
// defaults and descriptions; docs/configuration.md documents the same list and a unit test
// checks that the two agree. Unknown keys and wrong types are errors that name the file,
// the line and the key: a typo must never silently fall back to a default.
//
// Modules never read Config: main() copies what each module needs into that module's own
// options struct, so a module can be tested without a configuration file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hearth {

struct DomainConfig {
  std::string name;                    // e.g. "example.org"
  std::string registration = "invite";  // closed | invite | open
  std::string tls_cert;                // PEM chain; empty: self-signed, generated once
  std::string tls_key;
};

struct Config {
  // [server]
  std::string data_dir = "./data";
  int shards = 0;  // 0: one per core
  int drain_seconds = 10;
  int stall_warning_ms = 100;  // an event-loop turn longer than this is logged and counted

  // [[domain]] (at least one; the first is the primary domain)
  std::vector<DomainConfig> domains;

  // [http]
  std::vector<std::string> http_bind = {"127.0.0.1"};
  int http_port = 8008;      // plain HTTP; 0 picks a free port, -1 disables
  int https_port = 8443;     // HTTP over TLS; 0 picks a free port, -1 disables
  std::int64_t http_max_body_bytes = 1 << 20;
  std::int64_t http_max_header_bytes = 16 << 10;
  int http_idle_timeout_seconds = 60;
  std::string public_url;    // base URL printed and used in links; empty: derived

  // [xmpp]
  std::vector<std::string> xmpp_bind = {"127.0.0.1"};
  int xmpp_c2s_port = 5222;      // STARTTLS required; 0 picks a free port, -1 disables
  int xmpp_c2s_tls_port = 5223;  // direct TLS (XEP-0368); 0 picks a free port, -1 disables
  std::int64_t xmpp_max_stanza_bytes = 256 * 1024;
  std::int64_t xmpp_read_bytes_per_second = 64 * 1024;
  int xmpp_max_offline_messages = 500;
  int xmpp_max_roster_items = 1000;
  std::int64_t xmpp_pep_max_item_bytes = 128 * 1024;
  int xmpp_pep_max_nodes = 256;
  int xmpp_pep_max_items = 1000;
  int xmpp_fast_token_ttl_days = 21;
  int xmpp_archive_retention_days = 0;
  int xmpp_archive_purge_interval_seconds = 3600;
  bool xmpp_muc = true;

  // [upload] files shared through XEP-0363 (stored in blobs/)
  bool upload_enabled = true;
  std::int64_t upload_max_file_bytes = 100LL << 20;
  std::int64_t upload_daily_quota_bytes = 200LL << 20;
  int upload_expiry_days = 14;
  int xmpp_muc_max_users_per_room = 1000;
  int xmpp_idle_timeout_seconds = 600;
  bool xmpp_channel_binding = true;
  bool xmpp_strict_channel_binding = false;
  int xmpp_resume_timeout_seconds = 300;
  bool xmpp_s2s_enabled = true;
  int xmpp_s2s_port = 5269;
  std::vector<std::string> xmpp_s2s_static_routes;
  std::string xmpp_s2s_ca_file;
  std::string xmpp_s2s_ca_dir;
  bool xmpp_s2s_dialback = true;
  bool xmpp_s2s_bidi = true;
  std::int64_t xmpp_s2s_max_pending_bytes = 8 << 20;
  int xmpp_s2s_queue_max_stanzas = 1000;
  int xmpp_s2s_connect_timeout_seconds = 10;
  int xmpp_s2s_retry_initial_seconds = 2;
  int xmpp_s2s_retry_max_seconds = 300;
  int xmpp_s2s_max_attempts = 5;

  // [contact] XEP-0157 addresses (URIs), shown to clients and in docs
  std::vector<std::string> contact_abuse, contact_admin, contact_security, contact_status, contact_support;

  // [turn] a STUN/TURN server (coturn) with a shared secret, for calls
  std::string turn_host;
  int turn_port = 3478;
  int turn_tls_port = 0;
  std::string turn_secret;
  int turn_ttl_seconds = 86400;
  // [cryptpad]
  bool cryptpad_enabled = true;
  std::string cryptpad_websocket_path = "/cryptpad_websocket";
  std::int64_t cryptpad_max_message_bytes = 1 << 20;
  int cryptpad_ping_after_seconds = 15;
  int cryptpad_idle_timeout_seconds = 60;
  std::int64_t cryptpad_storage_limit_bytes = 50 << 20;
  std::int64_t cryptpad_max_upload_bytes = 20 << 20;
  std::string cryptpad_http_unsafe_origin;
  std::string cryptpad_http_safe_origin;
  std::string cryptpad_instance_name;
  std::string cryptpad_instance_description;
  std::string cryptpad_instance_location;
  std::string cryptpad_instance_notice;
  std::vector<std::string> cryptpad_admin_keys;
  std::string cryptpad_web_root;
  // [matrix]
  std::string matrix_server_name;  // empty: the primary domain
  std::string matrix_default_room_version = "11";
  int matrix_max_sync_timeout_seconds = 30;
  std::int64_t matrix_max_upload_bytes = 50 << 20;
  std::int64_t matrix_media_quota_bytes = std::int64_t{1} << 30;
  int matrix_media_retention_days = 0;
  int matrix_max_pending_uploads = 10;
  bool matrix_coalesce_requests = true;
  int matrix_max_pushers_per_user = 20;
  int matrix_push_queue_per_pusher = 100;
  int matrix_push_timeout_seconds = 10;
  bool matrix_push_to_private_addresses = false;
  bool matrix_federation = false;
  std::vector<std::string> matrix_federation_destinations;
  std::string matrix_federation_ca_file;
  int matrix_federation_timeout_seconds = 10;
  bool matrix_federation_insecure_skip_checks_for_tests = false;

  // [limits]
  int max_connections = 10000;
  int max_connections_per_ip = 100;
  double requests_per_second_per_ip = 50;
  int request_burst_per_ip = 100;
  int max_inflight_requests = 1000;
  int fd_reserve = 128;  // descriptors kept for health, admin and storage

  // [store]
  int store_readers = 4;
  int store_max_batch = 256;
  int store_queue_limit = 10000;

  // [accounts]
  int scram_iterations = 4096;
  int invite_ttl_hours = 168;
  int token_ttl_days = 0;  // 0: access tokens do not expire

  // [ops]
  std::string admin_socket;  // empty: <data_dir>/hearthd.sock
  int health_interval_seconds = 10;
  int disk_warning_percent = 80;
  int disk_high_percent = 90;
  int disk_critical_percent = 95;
  int disk_reserve_mib = 256;      // read-only mode below this much free space
  int disk_reserve_inodes = 1000;  // ... or this many free inodes
  int wal_warning_mib = 256;
  int database_max_mib = 0;  // 0: no cap but the disk
  int open_files_warning_percent = 80;
  int open_files_critical_percent = 95;
  bool read_only_at_reserve = true;
  bool status_page = true;         // static status page + Atom feed (incident I14)
  std::string status_dir;          // empty: <data_dir>/status
  std::string status_title = "hearth status";
  std::string replica_dir;         // empty: no continuous replica
  int replica_interval_seconds = 60;
  int replica_max_incrementals = 1000;
  int replica_rebase_percent = 50;
  int replica_keep_chains = 2;
  bool debug_commands = false;     // test-only admin commands (debug.*)

  // [log]
  std::string log_level = "info";
  std::string log_format = "text";  // text | json

  const DomainConfig& primary_domain() const { return domains.front(); }
};

struct ConfigKey {
  std::string_view key;           // dotted, e.g. "http.port"; "domain[].name" for arrays
  std::string_view default_value; // as written in TOML
  std::string_view description;
};

// The documented keys, in documentation order.
const std::vector<ConfigKey>& config_keys();

// Parses TOML text; `origin` names the file in error messages.
Result<Config> parse_config(std::string_view toml_text, std::string_view origin);
// Reads and parses a file.
Result<Config> load_config_file(const std::string& path);
// Defaults only (what hearthd runs with when given no file).
Config default_config();

}  // namespace hearth
