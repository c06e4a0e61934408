#include "core/log.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "core/json.h"

namespace hearth {
namespace {

class FdSink final : public LogSink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  void write_line(std::string_view line) override {
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;  // nowhere left to report a failing log write
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

 private:
  int fd_;
};

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20)
      return true;
  }
  return false;
}

void append_logfmt_value(std::string& out, std::string_view v) {
  if (!needs_quotes(v)) {
    out += v;
    return;
  }
  json_escape_to(out, v);  // produces a quoted, escaped string
}

}  // namespace

bool parse_log_level(std::string_view name, LogLevel& out) {
  if (name == "debug") out = LogLevel::debug;
  else if (name == "info") out = LogLevel::info;
  else if (name == "warn" || name == "warning") out = LogLevel::warn;
  else if (name == "error") out = LogLevel::error;
  else return false;
  return true;
}

LogField::LogField(std::string_view k, double v) : key(k), value(fmt::format("{}", v)), quoted(false) {}

Logger::Logger(LogLevel level, LogFormat format)
    : sink_(std::make_shared<FdSink>(STDERR_FILENO)), level_(level), format_(format) {}

Logger::Logger(std::shared_ptr<LogSink> sink, LogLevel level, LogFormat format)
    : sink_(std::move(sink)), level_(level), format_(format) {}

void Logger::log(LogLevel level, std::string_view event, LogFields fields) {
  if (!enabled(level)) return;
  sink_->write_line(format_line(level, event, fields));
}

std::string Logger::format_line(LogLevel level, std::string_view event, LogFields fields) const {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::string ts = fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z",
                               std::chrono::floor<std::chrono::seconds>(now), static_cast<int>(ms));
  std::string out;
  out.reserve(128);
  if (format_ == LogFormat::json) {
    JsonWriter w;
    w.begin_object().key("ts").value(ts).key("level").value(level_name(level)).key("event").value(event);
    for (const auto& f : fields) {
      w.key(f.key);
      if (f.quoted) w.value(f.value);
      else w.raw(f.value);
    }
    w.end_object();
    out = w.take();
  } else {
    out += "ts=";
    out += ts;
    out += " level=";
    out += level_name(level);
    out += " event=";
    append_logfmt_value(out, event);
    for (const auto& f : fields) {
      out += ' ';
      out += f.key;
      out += '=';
      append_logfmt_value(out, f.value);
    }
  }
  out += '\n';
  return out;
}

}  // namespace hearth
