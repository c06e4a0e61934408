// The static status page and feed (incident I14).
#include "ops/status_page.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace hearth::ops {
namespace {

namespace fs = std::filesystem;

std::string get(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

HealthSnapshot snap(HealthStatus overall, std::string message = "") {
  HealthSnapshot s;
  s.overall = overall;
  s.checked_at_ms = 1'700'000'000'000;
  s.checks.push_back({"disk", {overall, "50%", std::move(message), {}}});
  return s;
}

TEST(StatusPageTest, EntriesOnStateChangesAndNoticesSurviveARestart) {
  std::string tmpl = (fs::temp_directory_path() / "hearth-status-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  fs::path dir = fs::path(tmpl) / "status";
  Logger log(LogLevel::error, LogFormat::text);
  {
    StatusPage page({dir.string(), "Example & Co"}, log);
    ASSERT_TRUE(page.start());
    page.on_health(snap(HealthStatus::ok));
    page.on_health(snap(HealthStatus::ok));  // no change: no entry
    page.on_health(snap(HealthStatus::critical, "disk <full>"));
    ASSERT_TRUE(page.add_notice("Maintenance at 22:00"));
    EXPECT_FALSE(page.add_notice(""));
  }
  std::string feed = get(dir / "feed.atom");
  EXPECT_EQ(count(feed, "<entry>"), 3u);
  EXPECT_NE(feed.find("<title>Example &amp; Co</title>"), std::string::npos);
  EXPECT_NE(feed.find("disk &lt;full&gt;"), std::string::npos);
  EXPECT_LT(feed.find("Maintenance at 22:00"), feed.find("Service state: critical")) << "newest first";
  std::string html = get(dir / "index.html");
  EXPECT_NE(html.find("data-status=\"critical\""), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);

  StatusPage again({dir.string(), "Example & Co"}, log);
  ASSERT_TRUE(again.start());
  again.on_health(snap(HealthStatus::ok));
  EXPECT_EQ(count(get(dir / "feed.atom"), "<entry>"), 4u) << "history kept across a restart";
  fs::remove_all(tmpl);
}

}  // namespace
}  // namespace hearth::ops
