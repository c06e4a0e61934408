// XMPP addresses (JIDs) per RFC 7622: parsing, PRECIS preparation and the canonical form.
//
// A Jid always holds the canonical (enforced) form of each part, so two Jids name the same
// entity exactly when their strings are byte-equal; operator== is plain string equality.
// Construct one with Jid::parse (or fill the parts with the prep_* results); a default Jid
// is empty and is not a valid address.
//
// Canonical forms:
//   localpart    PRECIS UsernameCaseMapped (RFC 8265 §3.3): fullwidth/halfwidth mapped to
//                their decompositions, Unicode toLowerCase, NFC, IdentifierClass rules
//                (with contextual rules and the Bidi Rule), and RFC 7622 §3.3.1's extra
//                exclusions " & ' / : < > @.
//   domainpart   IDNA2008 via libidn2 (UTS #46 non-transitional mapping, so fullwidth and
//                uppercase are mapped), stored as lowercase U-labels (Unicode), as
//                RFC 7622 §3.2.1 asks; ASCII names stay lowercase ASCII and A-labels
//                ("xn--...") are converted to U-labels. One trailing dot is stripped and
//                the dots U+3002, U+FF0E, U+FF61 count as label separators. IP literals are
//                allowed and canonicalised: IPv4 dotted quad, IPv6 in brackets in
//                inet_ntop's lowercase compressed form ("[2001:db8::1]").
//   resourcepart PRECIS OpaqueString (RFC 8265 §4.2): non-ASCII spaces mapped to U+0020,
//                NFC, FreeformClass rules (no controls, no default-ignorables). Case and
//                '@', '/' are kept.
// Each part is 1..1023 bytes of UTF-8 after preparation.
//
// Errors: Errc::invalid_argument with a message naming the part ("localpart: ...",
// "domainpart: ...", "resourcepart: ..."); the XMPP session maps it to jid-malformed.
//
// Threads: pure functions without shared mutable state; safe from any thread. The ICU and
// libidn2 work is bounded by the input size (inputs over a few KiB are rejected first).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hearth::xmpp {

inline constexpr std::size_t kMaxJidPartBytes = 1023;

struct Jid {
  std::string local;     // empty for a domain JID
  std::string domain;    // never empty in a parsed Jid
  std::string resource;  // empty for a bare JID

  // "local@domain" or "domain".
  std::string bare() const;
  // bare() plus "/resource" when there is one.
  std::string full() const;
  bool is_bare() const { return resource.empty(); }
  // The Jid without its resource.
  Jid to_bare() const { return Jid{local, domain, {}}; }

  bool operator==(const Jid&) const = default;

  // Splits at the first '/' (the resource may contain '/' and '@'), then at the first '@'
  // before it (RFC 7622 §3.1; neither localpart nor domainpart may hold '@', so the choice
  // only changes which part the error names), and prepares each part. An empty part after a separator ("@example.com",
  // "juliet@", "example.com/") is an error, as is an empty domain.
  static Result<Jid> parse(std::string_view text);
};

// Each returns the canonical form of one part or Errc::invalid_argument.
Result<std::string> prep_localpart(std::string_view text);
Result<std::string> prep_domain(std::string_view text);
Result<std::string> prep_resource(std::string_view text);

}  // namespace hearth::xmpp
