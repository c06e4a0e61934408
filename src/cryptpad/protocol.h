// Pure pieces of the CryptPad protocol: netflux frame parsing, history-keeper and RPC
// request parsing, channel id classes, checkpoint prefixes, ed25519 validation of channel
// messages and the history start selection. No I/O, no threads: everything here is
// unit-tested and fuzzed on its own (tests/unit/cryptpad, tests/fuzz/fuzz_netflux.cc).
//
// JSON arrives as text from CryptPad's clients (V8 JSON.stringify). Parsing validates the
// whole text with simdjson (size and depth limits first), then hands out *raw slices* of
// the original text for values that are echoed back or signed (txids, metadata objects,
// RPC arguments): CryptPad's signatures cover the exact JSON text the client produced,
// so re-serialising would break them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hearth::cryptpad {

struct ParseLimits {
  std::size_t max_bytes = 8 << 20;
  std::size_t max_depth = 32;
};

// One parsed JSON value as a raw slice of the input plus what the protocol needs of it.
struct RawValue {
  enum class Type { null, boolean, number, string, array, object };
  Type type = Type::null;
  std::string raw;       // exact JSON text as sent, e.g. "\"abc\"" or "{\"a\":1}"
  std::string text;      // unescaped value for strings; empty otherwise
  std::int64_t integer = 0;  // numbers that are integers
  bool is_integer = false;
  bool boolean = false;

  bool is_string() const { return type == Type::string; }
};

// Validates `json` (limits, well-formedness) and, when it is an array, returns its
// top-level elements (with copies of their raw text). Errc::invalid_argument with a message that
// says what was wrong ("frame too large", "nesting too deep", "not JSON", "not an array").
Result<std::vector<RawValue>> parse_array(std::string_view json, const ParseLimits& limits);
// Same for a JSON object: its members as (key, value) pairs in order.
Result<std::vector<std::pair<std::string, RawValue>>> parse_object(std::string_view json,
                                                                   const ParseLimits& limits);

// A client→server netflux frame `[seq, CMD, args...]`. A PONG echo `[0, "", "PONG", ts]`
// carries the command in slot 2 and is reported as cmd "PONG".
struct Frame {
  std::int64_t seq = 0;
  std::string cmd;
  std::vector<RawValue> args;  // slots after the command
};
Result<Frame> parse_frame(std::string_view json, const ParseLimits& limits);

// Channel id classes (CryptPad lib/hk-util.js).
enum class ChannelKind {
  stored,     // 32 hex
  broadcast,  // 33 chars (admin broadcast)
  ephemeral,  // 34 hex: relayed, never stored
  other,      // other ids the file store accepts (32–49 chars of [A-Za-z0-9+=-])
  invalid,    // anything else: a MSG to it is refused
};
ChannelKind classify_channel(std::string_view id);
bool is_hex(std::string_view s);

// `cp|<id>|rest` or `cp|rest` prefixes of checkpoint messages.
struct Checkpoint {
  bool is_checkpoint = false;
  std::string id;          // may be empty
  std::string_view body;   // content without the prefix
};
Checkpoint parse_checkpoint(std::string_view content);

// A message's "hash": its first 64 characters (frozen by the clients).
inline std::string_view message_hash(std::string_view content) { return content.substr(0, 64); }

// Standard base64 (with padding, as tweetnacl-util writes it) decode / encode.
std::optional<std::string> base64_decode(std::string_view b64);
std::string base64_encode(std::string_view bytes);

// Ed25519 check of a channel message against the channel's validateKey (base64 of a
// 32-byte public key): the content, without any checkpoint prefix, is base64 of a signed
// message (64-byte signature followed by the payload). Errc::unauthenticated on a bad
// signature, invalid_argument on a malformed key or content.
Result<void> verify_channel_message(std::string_view content, std::string_view validate_key_b64);
// Ed25519 detached signature check (RPC): all three arguments as base64 / raw text.
Result<void> verify_detached(std::string_view message, std::string_view signature_b64,
                             std::string_view public_key_b64);
// True when `key` is base64 of exactly 32 bytes.
bool is_valid_public_key(std::string_view key_b64);

// Where GET_HISTORY starts (message sequence numbers are 1-based and dense per channel).
struct HistoryIndex {
  std::int64_t last_seq = 0;                // 0: no messages
  std::vector<std::int64_t> checkpoints;    // seqs of stored checkpoints, ascending
};
enum class HistoryStartError { unknown_hash };
// No `known_seq` (no lastKnownHash): from the start if fewer than two checkpoints, else
// from the oldest checkpoint the index keeps (the second-to-last one, or an older one
// within the last 100 messages). With `known_seq`: from that message inclusive, unless
// the channel has checkpoints and the message is older than the oldest kept one
// (EUNKNOWN: the client must reload from a checkpoint).
// Returns the first seq to send (last_seq + 1 when nothing is to be sent).
std::int64_t oldest_kept_checkpoint(const HistoryIndex& index);
std::optional<std::int64_t> history_start(const HistoryIndex& index, std::optional<std::int64_t> known_seq);

// Requests sent to the history keeper (content of a MSG to its id).
struct HistoryRequest {
  enum class Kind { get_history, get_history_range, get_full_history } kind = Kind::get_history;
  std::string channel;
  std::string txid_raw;                    // raw JSON of txid ("" if absent)
  std::optional<std::string> last_known_hash;
  std::string metadata_raw;                // raw JSON object of the client's metadata ("" if none)
  std::optional<std::int64_t> priority;
  // GET_HISTORY_RANGE
  std::optional<std::string> from;         // a hash
  std::optional<std::int64_t> count, cp_count;
  std::optional<std::string> to;           // a hash or "NONE"
};
// Anonymous `[txid, [CMD, arg]]` or signed `[txid, [sig, key, cookie, CMD, arg]]`.
struct RpcRequest {
  std::string txid_raw;
  bool authenticated = false;
  std::string signature, public_key, cookie;  // authenticated only
  std::string command;
  RawValue arg;
  std::string signed_text;  // authenticated: "[<cookie>,<CMD>,<arg>]" from the raw slices
};
struct HkRequest {
  bool is_history = false;
  HistoryRequest history;
  RpcRequest rpc;
};
Result<HkRequest> parse_hk_request(std::string_view content, const ParseLimits& limits);

}  // namespace hearth::cryptpad
