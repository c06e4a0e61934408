// RFC 7622 address parts with ICU (PRECIS, RFC 8264/8265) and libidn2 (IDNA2008).
#include "xmpp/jid.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/uscript.h>
#include <unicode/utf8.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace hearth::xmpp {
namespace {

// Width mapping and NFC can shrink a string, so the raw input may be longer than the
// prepared limit; this bound only keeps the ICU work small.
constexpr std::size_t kMaxRawPartBytes = 4 * kMaxJidPartBytes;

using CodePoints = std::vector<UChar32>;

tl::unexpected<Error> part_error(std::string_view part, std::string_view what) {
  return fail(Errc::invalid_argument, std::string(part) + ": " + std::string(what));
}

bool decode_utf8(std::string_view text, CodePoints& out) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const auto length = static_cast<int32_t>(text.size());
  for (int32_t i = 0; i < length;) {
    UChar32 c;
    U8_NEXT(s, i, length, c);
    if (c < 0) return false;
    out.push_back(c);
  }
  return true;
}

CodePoints to_code_points(const icu::UnicodeString& s) {
  CodePoints out;
  for (int32_t i = 0; i < s.length();) {
    UChar32 c = s.char32At(i);
    out.push_back(c);
    i += U16_LENGTH(c);
  }
  return out;
}

std::string to_utf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

const icu::Normalizer2& normalizer(bool nfc) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nfc ? icu::Normalizer2::getNFCInstance(status) : icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status) || n == nullptr) std::abort();  // ICU data missing: cannot run at all
  return *n;
}

bool has_compat(UChar32 c) {
  UErrorCode status = U_ZERO_ERROR;
  bool normalized = normalizer(false).isNormalized(icu::UnicodeString(c), status);
  return U_FAILURE(status) || !normalized;
}

enum class Property { valid, context_j, context_o, disallowed };

// RFC 8264 §8 derived property, in its order of precedence.
Property derive_property(UChar32 c, bool freeform) {
  switch (c) {  // RFC 5892 §2.6 exceptions
    case 0x00DF: case 0x03C2: case 0x06FD: case 0x06FE: case 0x0F0B: case 0x3007:
      return Property::valid;
    case 0x00B7: case 0x0375: case 0x05F3: case 0x05F4: case 0x30FB:
      return Property::context_o;
    case 0x0640: case 0x07FA: case 0x302E: case 0x302F: case 0x3031: case 0x3032: case 0x3033:
    case 0x3034: case 0x3035: case 0x303B:
      return Property::disallowed;
    default:
      break;
  }
  if ((c >= 0x0660 && c <= 0x0669) || (c >= 0x06F0 && c <= 0x06F9)) return Property::context_o;
  const auto category = static_cast<UCharCategory>(u_charType(c));
  if (category == U_UNASSIGNED) return Property::disallowed;  // includes noncharacters
  if (c >= 0x21 && c <= 0x7E) return Property::valid;
  if (c == 0x200C || c == 0x200D) return Property::context_j;
  const auto jamo = u_getIntPropertyValue(c, UCHAR_HANGUL_SYLLABLE_TYPE);
  if (jamo == U_HST_LEADING_JAMO || jamo == U_HST_VOWEL_JAMO || jamo == U_HST_TRAILING_JAMO) {
    return Property::disallowed;
  }
  if (u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT) ||
      u_hasBinaryProperty(c, UCHAR_NONCHARACTER_CODE_POINT)) {
    return Property::disallowed;
  }
  if (category == U_CONTROL_CHAR) return Property::disallowed;
  const Property id_dis_or_free = freeform ? Property::valid : Property::disallowed;
  if (has_compat(c)) return id_dis_or_free;
  switch (category) {
    case U_LOWERCASE_LETTER: case U_UPPERCASE_LETTER: case U_OTHER_LETTER: case U_DECIMAL_DIGIT_NUMBER:
    case U_MODIFIER_LETTER: case U_NON_SPACING_MARK: case U_COMBINING_SPACING_MARK:
      return Property::valid;
    case U_TITLECASE_LETTER: case U_LETTER_NUMBER: case U_OTHER_NUMBER: case U_ENCLOSING_MARK:  // other letter digits
    case U_SPACE_SEPARATOR:
    case U_MATH_SYMBOL: case U_CURRENCY_SYMBOL: case U_MODIFIER_SYMBOL: case U_OTHER_SYMBOL:
    case U_CONNECTOR_PUNCTUATION: case U_DASH_PUNCTUATION: case U_START_PUNCTUATION: case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION: case U_FINAL_PUNCTUATION: case U_OTHER_PUNCTUATION:
      return id_dis_or_free;
    default:
      return Property::disallowed;
  }
}

bool is_virama(UChar32 c) { return u_getCombiningClass(c) == 9; }

int joining_type(UChar32 c) { return u_getIntPropertyValue(c, UCHAR_JOINING_TYPE); }

UScriptCode script_of(UChar32 c) {
  UErrorCode status = U_ZERO_ERROR;
  UScriptCode s = uscript_getScript(c, &status);
  return U_FAILURE(status) ? USCRIPT_INVALID_CODE : s;
}

// RFC 5892 Appendix A.
bool context_allows(const CodePoints& cps, std::size_t i) {
  const UChar32 c = cps[i];
  const bool has_before = i > 0;
  const bool has_after = i + 1 < cps.size();
  switch (c) {
    case 0x200D:
      return has_before && is_virama(cps[i - 1]);
    case 0x200C: {
      if (has_before && is_virama(cps[i - 1])) return true;
      std::size_t b = i;
      while (b > 0 && joining_type(cps[b - 1]) == U_JT_TRANSPARENT) --b;
      if (b == 0) return false;
      const int left = joining_type(cps[b - 1]);
      if (left != U_JT_LEFT_JOINING && left != U_JT_DUAL_JOINING) return false;
      std::size_t a = i + 1;
      while (a < cps.size() && joining_type(cps[a]) == U_JT_TRANSPARENT) ++a;
      if (a == cps.size()) return false;
      const int right = joining_type(cps[a]);
      return right == U_JT_RIGHT_JOINING || right == U_JT_DUAL_JOINING;
    }
    case 0x00B7:
      return has_before && has_after && cps[i - 1] == 0x6C && cps[i + 1] == 0x6C;
    case 0x0375:
      return has_after && script_of(cps[i + 1]) == USCRIPT_GREEK;
    case 0x05F3:
    case 0x05F4:
      return has_before && script_of(cps[i - 1]) == USCRIPT_HEBREW;
    case 0x30FB:
      for (UChar32 other : cps) {
        if (other == 0x30FB) continue;
        const UScriptCode s = script_of(other);
        if (s == USCRIPT_HIRAGANA || s == USCRIPT_KATAKANA || s == USCRIPT_HAN) return true;
      }
      return false;
    default:
      break;
  }
  if (c >= 0x0660 && c <= 0x0669) {
    for (UChar32 other : cps)
      if (other >= 0x06F0 && other <= 0x06F9) return false;
    return true;
  }
  if (c >= 0x06F0 && c <= 0x06F9) {
    for (UChar32 other : cps)
      if (other >= 0x0660 && other <= 0x0669) return false;
    return true;
  }
  return false;
}

// RFC 5893 §2, applied when the string contains a right-to-left character.
bool bidi_rule_ok(const CodePoints& cps) {
  bool rtl = false;
  for (UChar32 c : cps) {
    const auto d = u_charDirection(c);
    if (d == U_RIGHT_TO_LEFT || d == U_RIGHT_TO_LEFT_ARABIC || d == U_ARABIC_NUMBER) rtl = true;
  }
  if (!rtl) return true;
  const auto first = u_charDirection(cps.front());
  if (first != U_LEFT_TO_RIGHT && first != U_RIGHT_TO_LEFT && first != U_RIGHT_TO_LEFT_ARABIC) return false;
  const bool rtl_label = first != U_LEFT_TO_RIGHT;
  bool has_en = false;
  bool has_an = false;
  for (UChar32 c : cps) {
    const auto d = u_charDirection(c);
    has_en = has_en || d == U_EUROPEAN_NUMBER;
    has_an = has_an || d == U_ARABIC_NUMBER;
    const bool common = d == U_EUROPEAN_NUMBER || d == U_EUROPEAN_NUMBER_SEPARATOR ||
                        d == U_COMMON_NUMBER_SEPARATOR || d == U_EUROPEAN_NUMBER_TERMINATOR ||
                        d == U_OTHER_NEUTRAL || d == U_BOUNDARY_NEUTRAL || d == U_DIR_NON_SPACING_MARK;
    const bool allowed = common || (rtl_label ? (d == U_RIGHT_TO_LEFT || d == U_RIGHT_TO_LEFT_ARABIC ||
                                                 d == U_ARABIC_NUMBER)
                                              : d == U_LEFT_TO_RIGHT);
    if (!allowed) return false;
  }
  std::size_t end = cps.size();
  while (end > 0 && u_charDirection(cps[end - 1]) == U_DIR_NON_SPACING_MARK) --end;
  if (end == 0) return false;
  const auto last = u_charDirection(cps[end - 1]);
  if (rtl_label) {
    if (has_en && has_an) return false;
    return last == U_RIGHT_TO_LEFT || last == U_RIGHT_TO_LEFT_ARABIC || last == U_EUROPEAN_NUMBER ||
           last == U_ARABIC_NUMBER;
  }
  return last == U_LEFT_TO_RIGHT || last == U_EUROPEAN_NUMBER;
}

Result<void> check_class(std::string_view part, const CodePoints& cps, bool freeform) {
  for (std::size_t i = 0; i < cps.size(); ++i) {
    switch (derive_property(cps[i], freeform)) {
      case Property::valid:
        break;
      case Property::context_j:
      case Property::context_o:
        if (!context_allows(cps, i)) return part_error(part, "character not allowed in this context");
        break;
      case Property::disallowed:
        return part_error(part, "disallowed character");
    }
  }
  return ok();
}

Result<std::string> finish(std::string_view part, std::string prepared) {
  if (prepared.empty()) return part_error(part, "empty");
  if (prepared.size() > kMaxJidPartBytes) return part_error(part, "longer than 1023 bytes");
  return prepared;
}

Result<CodePoints> decode_part(std::string_view part, std::string_view text) {
  if (text.empty()) return part_error(part, "empty");
  if (text.size() > kMaxRawPartBytes) return part_error(part, "longer than 1023 bytes");
  CodePoints cps;
  if (!decode_utf8(text, cps)) return part_error(part, "invalid UTF-8");
  return cps;
}

bool is_ldh_label(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  for (char c : label) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  // R-LDH labels ("ab--...") are reserved unless they are A-labels (RFC 5890 §2.3.1).
  if (label.size() >= 4 && label.substr(2, 2) == "--" && label.substr(0, 4) != "xn--") return false;
  return true;
}

// Validates an ASCII (A-label) domain name; sets has_alabel when an "xn--" label appears.
Result<void> check_ascii_domain(std::string_view name, bool& has_alabel) {
  if (name.size() > 253) return part_error("domainpart", "longer than 253 bytes in ASCII form");
  has_alabel = false;
  std::size_t start = 0;
  std::string_view last;
  while (true) {
    const std::size_t dot = name.find('.', start);
    const std::string_view label = name.substr(start, dot == std::string_view::npos ? name.npos : dot - start);
    if (!is_ldh_label(label)) return part_error("domainpart", "invalid label");
    if (label.substr(0, 4) == "xn--") has_alabel = true;
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (last.find_first_not_of("0123456789") == std::string_view::npos) {
    return part_error("domainpart", "numeric top-level label");
  }
  return ok();
}

Result<std::string> idn_lookup(const std::string& name) {
  uint8_t* out = nullptr;
  const int rc = idn2_lookup_u8(reinterpret_cast<const uint8_t*>(name.c_str()), &out,
                                IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL | IDN2_USE_STD3_ASCII_RULES);
  if (rc != IDN2_OK) return part_error("domainpart", idn2_strerror(rc));
  std::string result(reinterpret_cast<const char*>(out));
  idn2_free(out);
  return result;
}

Result<std::string> prep_ip_literal(std::string_view text, int family) {
  const std::string address(family == AF_INET6 ? text.substr(1, text.size() - 2) : text);
  unsigned char bytes[16];
  if (inet_pton(family, address.c_str(), bytes) != 1) return part_error("domainpart", "invalid IP literal");
  char buffer[INET6_ADDRSTRLEN];
  if (inet_ntop(family, bytes, buffer, sizeof buffer) == nullptr) return part_error("domainpart", "invalid IP literal");
  return family == AF_INET6 ? "[" + std::string(buffer) + "]" : std::string(buffer);
}

}  // namespace

Result<std::string> prep_localpart(std::string_view text) {
  constexpr std::string_view part = "localpart";
  auto cps = decode_part(part, text);
  if (!cps) return tl::unexpected(cps.error());
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkd = icu::Normalizer2::getNFKDInstance(status);
  if (U_FAILURE(status)) std::abort();
  icu::UnicodeString mapped;
  for (UChar32 c : *cps) {
    const auto type = u_getIntPropertyValue(c, UCHAR_DECOMPOSITION_TYPE);
    icu::UnicodeString decomposition;
    if ((type == U_DT_WIDE || type == U_DT_NARROW) && nfkd->getRawDecomposition(c, decomposition)) {
      mapped.append(decomposition);
    } else {
      mapped.append(c);
    }
  }
  mapped.toLower(icu::Locale::getRoot());
  const icu::UnicodeString normalized = normalizer(true).normalize(mapped, status);
  if (U_FAILURE(status)) return part_error(part, "normalization failed");
  const CodePoints prepared = to_code_points(normalized);
  if (prepared.empty()) return part_error(part, "empty");
  for (UChar32 c : prepared) {
    switch (c) {
      case '"': case '&': case '\'': case '/': case ':': case '<': case '>': case '@':
        return part_error(part, "disallowed character");
      default:
        break;
    }
  }
  if (auto r = check_class(part, prepared, false); !r) return tl::unexpected(r.error());
  if (!bidi_rule_ok(prepared)) return part_error(part, "violates the Bidi Rule");
  return finish(part, to_utf8(normalized));
}

Result<std::string> prep_resource(std::string_view text) {
  constexpr std::string_view part = "resourcepart";
  auto cps = decode_part(part, text);
  if (!cps) return tl::unexpected(cps.error());
  icu::UnicodeString mapped;
  for (UChar32 c : *cps) mapped.append(c != 0x20 && u_charType(c) == U_SPACE_SEPARATOR ? UChar32{0x20} : c);
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeString normalized = normalizer(true).normalize(mapped, status);
  if (U_FAILURE(status)) return part_error(part, "normalization failed");
  if (auto r = check_class(part, to_code_points(normalized), true); !r) return tl::unexpected(r.error());
  return finish(part, to_utf8(normalized));
}

Result<std::string> prep_domain(std::string_view text) {
  constexpr std::string_view part = "domainpart";
  if (text.empty()) return part_error(part, "empty");
  if (text.size() > kMaxRawPartBytes) return part_error(part, "longer than 1023 bytes");
  if (text.front() == '[') {
    if (text.size() < 3 || text.back() != ']') return part_error(part, "invalid IP literal");
    return prep_ip_literal(text, AF_INET6);
  }
  std::string name;
  name.reserve(text.size());
  bool ascii = true;
  for (std::size_t i = 0; i < text.size(); ++i) {
    // U+3002, U+FF0E and U+FF61 are label separators too (RFC 7622 §3.2).
    const std::string_view rest = text.substr(i, 3);
    if (rest == "\xE3\x80\x82" || rest == "\xEF\xBC\x8E" || rest == "\xEF\xBD\xA1") {
      name.push_back('.');
      i += 2;
      continue;
    }
    const char c = text[i];
    if (static_cast<unsigned char>(c) >= 0x80) ascii = false;
    name.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty()) return part_error(part, "empty");
  if (ascii && name.find('\0') == std::string::npos) {
    unsigned char bytes[4];
    if (inet_pton(AF_INET, name.c_str(), bytes) == 1) return prep_ip_literal(name, AF_INET);
  }
  bool has_alabel = false;
  if (ascii) {
    if (auto r = check_ascii_domain(name, has_alabel); !r) return tl::unexpected(r.error());
    if (!has_alabel) return finish(part, std::move(name));
  }
  if (name.find('\0') != std::string::npos) return part_error(part, "disallowed character");
  auto alabels = idn_lookup(name);
  if (!alabels) return tl::unexpected(alabels.error());
  if (auto r = check_ascii_domain(*alabels, has_alabel); !r) return tl::unexpected(r.error());
  char* unicode = nullptr;
  const int rc = idn2_to_unicode_8z8z(alabels->c_str(), &unicode, 0);
  if (rc != IDN2_OK) return part_error(part, idn2_strerror(rc));
  std::string ulabels(unicode);
  idn2_free(unicode);
  // The U-label form must map back to the same A-labels, or it would not be canonical.
  auto again = idn_lookup(ulabels);
  if (!again || *again != *alabels) return part_error(part, "invalid internationalized label");
  return finish(part, std::move(ulabels));
}

std::string Jid::bare() const { return local.empty() ? domain : local + "@" + domain; }

std::string Jid::full() const { return resource.empty() ? bare() : bare() + "/" + resource; }

Result<Jid> Jid::parse(std::string_view text) {
  if (text.size() > 3 * kMaxRawPartBytes + 2) return fail(Errc::invalid_argument, "jid: too long");
  Jid jid;
  const std::size_t slash = text.find('/');
  std::string_view head = text.substr(0, slash);
  if (slash != std::string_view::npos) {
    auto resource = prep_resource(text.substr(slash + 1));
    if (!resource) return tl::unexpected(resource.error());
    jid.resource = std::move(*resource);
  }
  // RFC 7622 §3.1: the localpart ends at the first '@' before the resource.
  const std::size_t at = head.find('@');
  if (at != std::string_view::npos) {
    auto local = prep_localpart(head.substr(0, at));
    if (!local) return tl::unexpected(local.error());
    jid.local = std::move(*local);
    head = head.substr(at + 1);
  }
  auto domain = prep_domain(head);
  if (!domain) return tl::unexpected(domain.error());
  jid.domain = std::move(*domain);
  return jid;
}

}  // namespace hearth::xmpp
