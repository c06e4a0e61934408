// RFC 4013 SASLprep with ICU's stringprep profile.
#include <unicode/usprep.h>
#include <unicode/ustring.h>

#include <cstdlib>
#include <string>

#include "accounts/accounts.h"

namespace hearth::accounts {

Result<std::string> sasl_prep(std::string_view text) {
  if (text.empty()) return fail(Errc::invalid_argument, "saslprep: empty");
  if (text.size() > 4096) return fail(Errc::invalid_argument, "saslprep: too long");
  UErrorCode status = U_ZERO_ERROR;
  static UStringPrepProfile* const profile = [] {
    UErrorCode open_status = U_ZERO_ERROR;
    UStringPrepProfile* p = usprep_openByType(USPREP_RFC4013_SASLPREP, &open_status);
    if (U_FAILURE(open_status)) std::abort();  // ICU data missing: cannot run at all
    return p;
  }();
  std::u16string source(text.size(), u'\0');
  int32_t source_len = 0;
  u_strFromUTF8(source.data(), static_cast<int32_t>(source.size()), &source_len, text.data(),
                static_cast<int32_t>(text.size()), &status);
  if (U_FAILURE(status)) return fail(Errc::invalid_argument, "saslprep: invalid UTF-8");
  // Mapping can grow a string (NFKC); retry once with the size ICU asks for.
  std::u16string prepared(static_cast<std::size_t>(source_len) * 2 + 16, u'\0');
  int32_t prepared_len = usprep_prepare(profile, source.data(), source_len, prepared.data(),
                                        static_cast<int32_t>(prepared.size()), USPREP_DEFAULT, nullptr, &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    status = U_ZERO_ERROR;
    prepared.assign(static_cast<std::size_t>(prepared_len), u'\0');
    prepared_len = usprep_prepare(profile, source.data(), source_len, prepared.data(),
                                  static_cast<int32_t>(prepared.size()), USPREP_DEFAULT, nullptr, &status);
  }
  if (U_FAILURE(status)) return fail(Errc::invalid_argument, "saslprep: prohibited or unassigned character");
  if (prepared_len == 0) return fail(Errc::invalid_argument, "saslprep: empty");
  std::string out(static_cast<std::size_t>(prepared_len) * 3, '\0');
  int32_t out_len = 0;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_len, prepared.data(), prepared_len, &status);
  if (U_FAILURE(status)) return fail(Errc::invalid_argument, "saslprep: invalid output");
  out.resize(static_cast<std::size_t>(out_len));
  return out;
}

}  // namespace hearth::accounts
