// Structured logging.
//
// A Logger writes one line per event: a stable event name plus key/value fields, either as
// logfmt (`ts=... level=info event=http.listening addr=127.0.0.1 port=8008`) for people or
// as JSON lines for log shippers. Event names are dotted and stable so that operators can
// alert on them; free text goes in a `msg` field.
//
// Thread safety: a Logger may be used from any thread; each line is written with one
// write(2) so lines from different threads never interleave. There is no global logger:
// main() creates one and passes it by reference to every module.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

namespace hearth {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };
enum class LogFormat { text, json };

bool parse_log_level(std::string_view name, LogLevel& out);

// One key/value pair. The value is rendered to text at construction so that fields can be
// built from any scalar without templates in this header.
struct LogField {
  std::string_view key;
  std::string value;
  bool quoted = true;  // false for numbers and booleans (JSON output)

  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(std::string_view k, const char* v) : key(k), value(v ? v : "") {}
  LogField(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), quoted(false) {}
  LogField(std::string_view k, int v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, long v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, long long v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, unsigned v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, unsigned long v) : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, unsigned long long v)
      : key(k), value(std::to_string(v)), quoted(false) {}
  LogField(std::string_view k, double v);
};

using LogFields = std::initializer_list<LogField>;

// Where lines go. The default sink writes to a file descriptor (stderr).
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void write_line(std::string_view line) = 0;
};

class Logger {
 public:
  // Writes to stderr.
  Logger(LogLevel level = LogLevel::info, LogFormat format = LogFormat::text);
  Logger(std::shared_ptr<LogSink> sink, LogLevel level, LogFormat format);

  void set_level(LogLevel level) { level_ = level; }
  LogLevel level() const { return level_; }
  bool enabled(LogLevel level) const { return level >= level_; }

  void log(LogLevel level, std::string_view event, LogFields fields = {});
  void debug(std::string_view event, LogFields fields = {}) { log(LogLevel::debug, event, fields); }
  void info(std::string_view event, LogFields fields = {}) { log(LogLevel::info, event, fields); }
  void warn(std::string_view event, LogFields fields = {}) { log(LogLevel::warn, event, fields); }
  void error(std::string_view event, LogFields fields = {}) { log(LogLevel::error, event, fields); }

  // Renders a line without writing it (used by tests and by the admin log).
  std::string format_line(LogLevel level, std::string_view event, LogFields fields) const;

 private:
  std::shared_ptr<LogSink> sink_;
  LogLevel level_;
  LogFormat format_;
};

}  // namespace hearth
