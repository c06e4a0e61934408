#include "core/log.h"

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace hearth {
namespace {

struct CaptureSink : LogSink {
  std::mutex m;
  std::vector<std::string> lines;
  void write_line(std::string_view line) override {
    std::lock_guard lock(m);
    lines.emplace_back(line);
  }
};

TEST(Logger, TextFormatIsLogfmt) {
  auto sink = std::make_shared<CaptureSink>();
  Logger log(sink, LogLevel::info, LogFormat::text);
  log.info("http.listening", {{"addr", "127.0.0.1"}, {"port", 8008}, {"msg", "hello world"}});
  ASSERT_EQ(sink->lines.size(), 1u);
  const auto& l = sink->lines[0];
  EXPECT_NE(l.find("level=info event=http.listening addr=127.0.0.1 port=8008 msg=\"hello world\""), std::string::npos) << l;
  EXPECT_EQ(l.back(), '\n');
}

TEST(Logger, JsonFormatEscapesAndTypes) {
  auto sink = std::make_shared<CaptureSink>();
  Logger log(sink, LogLevel::debug, LogFormat::json);
  log.warn("x", {{"s", "a\"b\n"}, {"n", 3}, {"b", true}});
  ASSERT_EQ(sink->lines.size(), 1u);
  EXPECT_NE(sink->lines[0].find(R"("level":"warn","event":"x","s":"a\"b\n","n":3,"b":true})"), std::string::npos)
      << sink->lines[0];
}

TEST(Logger, LevelFilters) {
  auto sink = std::make_shared<CaptureSink>();
  Logger log(sink, LogLevel::warn, LogFormat::text);
  log.info("dropped");
  log.debug("dropped");
  log.error("kept");
  ASSERT_EQ(sink->lines.size(), 1u);
  EXPECT_NE(sink->lines[0].find("event=kept"), std::string::npos);
  LogLevel lv;
  EXPECT_TRUE(parse_log_level("warning", lv));
  EXPECT_EQ(lv, LogLevel::warn);
  EXPECT_FALSE(parse_log_level("loud", lv));
}

TEST(Logger, LinesFromThreadsDoNotInterleave) {
  auto sink = std::make_shared<CaptureSink>();
  Logger log(sink, LogLevel::info, LogFormat::text);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) log.info("t", {{"thread", t}, {"i", i}});
    });
  for (auto& th : threads) th.join();
  ASSERT_EQ(sink->lines.size(), 800u);
  for (const auto& l : sink->lines) EXPECT_EQ(std::count(l.begin(), l.end(), '\n'), 1);
}

}  // namespace
}  // namespace hearth
