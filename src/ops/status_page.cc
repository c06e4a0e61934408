#include "ops/status_page.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <simdjson.h>

#include "core/json.h"
#include "ops/system.h"

namespace hearth::ops {
namespace {

std::string escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        // XML 1.0 forbids most control characters: drop them.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') continue;
        out += c;
    }
  }
  return out;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string rfc3339(std::int64_t ms) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}Z", fmt::gmtime(static_cast<std::time_t>(ms / 1000)));
}

std::string human(std::int64_t ms) {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(static_cast<std::time_t>(ms / 1000)));
}

// Stable across restarts and trimming: the entry's time, kind and a hash of its text.
std::string entry_id(const std::string& feed_id, const StatusEntry& e) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : e.kind + '\n' + e.text) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return fmt::format("{}:{}:{:016x}", feed_id, e.time_ms, h);
}

std::string entry_title(const StatusEntry& e) {
  if (e.kind == "notice") return "Notice: " + e.text.substr(0, 80);
  return fmt::format("Service state: {}", e.status);
}

Result<void> write_atomically(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Errc::io, fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return fail(Errc::io, fmt::format("cannot write {}: {}", tmp, std::strerror(e)));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("fsync {}: {}", tmp, std::strerror(e)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return fail(Errc::io, fmt::format("cannot rename {}: {}", tmp, std::strerror(e)));
  }
  return ok();
}

std::string_view colour(std::string_view status) {
  if (status == "ok") return "#1a7f37";
  if (status == "warning") return "#9a6700";
  if (status == "notice") return "#0969da";
  return "#cf222e";
}

}  // namespace

StatusPage::StatusPage(StatusPageOptions options, Logger& log) : options_(std::move(options)), log_(log) {
  if (options_.feed_id.empty()) {
    // An Atom id is a URI: the title reduced to letters, digits and dashes.
    std::string slug;
    for (char c : options_.title) slug += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '-';
    options_.feed_id = "urn:hearth:status:" + slug;
  }
}

Result<void> StatusPage::start() {
  if (::mkdir(options_.dir.c_str(), 0755) != 0 && errno != EEXIST)
    return fail(Errc::io, fmt::format("cannot create the status directory {}: {}", options_.dir, std::strerror(errno)));
  std::ifstream in(options_.dir + "/entries.jsonl");
  std::string line;
  simdjson::dom::parser parser;
  while (std::getline(in, line)) {
    simdjson::dom::element doc;
    if (parser.parse(line).get(doc) != simdjson::SUCCESS) continue;  // a torn last line
    StatusEntry e;
    std::string_view s;
    if (doc["time_ms"].get_int64().get(e.time_ms) != simdjson::SUCCESS) continue;
    if (doc["kind"].get_string().get(s) == simdjson::SUCCESS) e.kind = s;
    if (doc["status"].get_string().get(s) == simdjson::SUCCESS) e.status = s;
    if (doc["text"].get_string().get(s) == simdjson::SUCCESS) e.text = s;
    entries_.push_back(std::move(e));
  }
  if (entries_.size() > options_.max_entries) entries_.erase(entries_.begin(), entries_.end() - static_cast<long>(options_.max_entries));
  std::lock_guard lock(mutex_);
  return write_files();
}

void StatusPage::on_health(const HealthSnapshot& snap) {
  std::lock_guard lock(mutex_);
  bool changed = !last_ || last_->overall != snap.overall;
  last_ = snap;
  if (!changed) return;
  StatusEntry e{snap.checked_at_ms ? snap.checked_at_ms : now_ms(), "state", std::string(health_status_name(snap.overall)), ""};
  for (const auto& c : snap.checks)
    if (c.result.status != HealthStatus::ok)
      e.text += fmt::format("{}{}: {} {}", e.text.empty() ? "" : "\n", c.name, health_status_name(c.result.status),
                            c.result.message);
  if (e.text.empty()) e.text = "All checks are ok.";
  // A restart in the same state as before is not news.
  bool same_as_last_entry = false;
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    if (it->kind == "state") {
      same_as_last_entry = it->status == e.status && it->text == e.text;
      break;
    }
  if (!same_as_last_entry) {
    if (auto r = append_entry(e); !r) log_.warn("status.write_failed", {{"error", r.error().message}});
  }
  if (auto r = write_files(); !r) log_.warn("status.write_failed", {{"error", r.error().message}});
}

Result<void> StatusPage::add_notice(std::string text) {
  if (text.empty() || text.size() > 4000) return fail(Errc::invalid_argument, "a notice is 1 to 4000 characters");
  std::lock_guard lock(mutex_);
  if (auto r = append_entry({now_ms(), "notice", "notice", std::move(text)}); !r) return r;
  return write_files();
}

Result<void> StatusPage::append_entry(const StatusEntry& e) {
  entries_.push_back(e);
  if (entries_.size() > options_.max_entries) entries_.erase(entries_.begin());
  std::string all;
  for (const auto& x : entries_) {
    JsonWriter w;
    w.begin_object().key("time_ms").value(x.time_ms).key("kind").value(x.kind).key("status").value(x.status)
        .key("text").value(x.text).end_object();
    all += w.take() + "\n";
  }
  return write_atomically(options_.dir + "/entries.jsonl", all);
}

Result<void> StatusPage::write_files() {
  const std::int64_t updated = entries_.empty() ? now_ms() : entries_.back().time_ms;
  std::string overall = last_ ? std::string(health_status_name(last_->overall)) : "unknown";
  std::string t = escape(options_.title);

  std::string html = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n"
      "<link rel=\"alternate\" type=\"application/atom+xml\" href=\"feed.atom\" title=\"{}\">\n"
      "<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#1f2328}}"
      ".state{{font-size:1.4em;padding:.6em 1em;border-radius:6px;color:#fff}}"
      "table{{border-collapse:collapse;width:100%}}td{{padding:.3em .5em;border-bottom:1px solid #d0d7de;vertical-align:top}}"
      ".entry{{border-left:4px solid;padding:.2em .8em;margin:1em 0}}.when{{color:#656d76;font-size:.9em}}"
      "pre{{white-space:pre-wrap;margin:.3em 0}}</style>\n</head>\n<body>\n<h1>{}</h1>\n"
      "<p class=\"state\" id=\"overall\" data-status=\"{}\" style=\"background:{}\">Current state: {}</p>\n"
      "<p class=\"when\">Last checked {}. <a href=\"feed.atom\">Atom feed</a></p>\n",
      t, t, t, overall, colour(overall), overall,
      last_ && last_->checked_at_ms ? human(last_->checked_at_ms) : std::string("never"));
  if (last_) {
    html += "<h2>Checks</h2>\n<table>\n";
    for (const auto& c : last_->checks) {
      auto s = health_status_name(c.result.status);
      html += fmt::format("<tr><td>{}</td><td style=\"color:{}\">{}</td><td>{}</td></tr>\n", escape(c.name), colour(s), s,
                          escape(c.result.message.empty() ? c.result.value : c.result.message));
    }
    html += "</table>\n";
  }
  html += "<h2>History</h2>\n";
  if (entries_.empty()) html += "<p>No events yet.</p>\n";
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    html += fmt::format("<div class=\"entry\" style=\"border-color:{}\"><div class=\"when\">{}</div><strong>{}</strong>"
                        "<pre>{}</pre></div>\n",
                        colour(it->status), human(it->time_ms), escape(entry_title(*it)), escape(it->text));
  html += "</body>\n</html>\n";

  std::string atom = fmt::format(
      "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n"
      "  <title>{}</title>\n  <id>{}</id>\n  <updated>{}</updated>\n  <author><name>hearthd</name></author>\n"
      "  <link rel=\"alternate\" type=\"text/html\" href=\"index.html\"/>\n",
      t, escape(options_.feed_id), rfc3339(updated));
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    atom += fmt::format(
        "  <entry>\n    <title>{}</title>\n    <id>{}</id>\n    <updated>{}</updated>\n"
        "    <category term=\"{}\"/>\n    <content type=\"text\">{}</content>\n  </entry>\n",
        escape(entry_title(*it)), escape(entry_id(options_.feed_id, *it)), rfc3339(it->time_ms),
        escape(it->status), escape(it->text));
  atom += "</feed>\n";

  // The feed first: whoever sees the new page finds its entry in the feed too.
  if (auto r = write_atomically(options_.dir + "/feed.atom", atom); !r) return r;
  if (auto r = write_atomically(options_.dir + "/index.html", html); !r) return r;
  int fd = ::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  return ok();
}

}  // namespace hearth::ops
