#include "store/store.h"

#include <charconv>

namespace hearth::store {
namespace {

// Visitor helpers for OwnedRow: convert the way SQLite's column accessors do.
struct ToInteger {
  std::int64_t operator()(std::monostate) const { return 0; }
  std::int64_t operator()(std::int64_t v) const { return v; }
  std::int64_t operator()(double v) const { return static_cast<std::int64_t>(v); }
  std::int64_t operator()(const std::string& s) const {
    std::int64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }
  std::int64_t operator()(const Blob&) const { return 0; }
};

struct ToReal {
  double operator()(std::monostate) const { return 0; }
  double operator()(std::int64_t v) const { return static_cast<double>(v); }
  double operator()(double v) const { return v; }
  double operator()(const std::string& s) const {
    double v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }
  double operator()(const Blob&) const { return 0; }
};

}  // namespace

OwnedRow::OwnedRow(const Row& row) {
  values_.reserve(static_cast<std::size_t>(row.size()));
  for (int i = 0; i < row.size(); ++i) values_.push_back(row.value(i));
}

bool OwnedRow::is_null(int i) const { return values_.at(static_cast<std::size_t>(i)).is_null(); }

std::int64_t OwnedRow::integer(int i) const {
  return std::visit(ToInteger{}, values_.at(static_cast<std::size_t>(i)).get());
}

double OwnedRow::real(int i) const {
  return std::visit(ToReal{}, values_.at(static_cast<std::size_t>(i)).get());
}

std::string_view OwnedRow::text(int i) const {
  const auto& v = values_.at(static_cast<std::size_t>(i)).get();
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* b = std::get_if<Blob>(&v)) return b->bytes;
  return {};
}

std::string_view OwnedRow::blob(int i) const { return text(i); }

Value OwnedRow::value(int i) const { return values_.at(static_cast<std::size_t>(i)); }

Result<std::optional<OwnedRow>> Transaction::query_one(std::string_view sql,
                                                       std::span<const Value> params) {
  std::optional<OwnedRow> out;
  auto r = query(sql, params, [&out](const Row& row) {
    if (!out) out.emplace(row);
  });
  if (!r) return tl::unexpected(r.error());
  return out;
}

}  // namespace hearth::store
