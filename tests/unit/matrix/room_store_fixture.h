// A RoomStore over a fresh SQLite store with the matrix migrations, in a directory of its
// own per test; shared by the room store, relations and search tests.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "core/log.h"
#include "core/metrics.h"
#include "matrix/room_store.h"
#include "store/store.h"

namespace hearth::matrix {

struct RoomStoreFixture : ::testing::Test {
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("hearth-matrix-" + std::to_string(::getpid()) + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "-" +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                        .string();
  Logger log{LogLevel::error, LogFormat::text};
  MetricsRegistry metrics;
  std::unique_ptr<store::Store> db;
  SigningKey key = SigningKey::from_seed(std::string(32, 'k'), "test");
  RoomStore rooms{"hs", key};

  void SetUp() override {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    reopen();
  }
  void TearDown() override {
    db.reset();
    std::filesystem::remove_all(dir);
  }
  void reopen() {
    if (db) db->close();
    db.reset();
    auto s = store::Store::open_sqlite({dir + "/db.sqlite", 1, 64, 1000}, log, metrics);
    ASSERT_TRUE(s) << s.error().describe();
    db = std::move(*s);
    ASSERT_TRUE(db->migrate("matrix", matrix_migrations()));
  }
};

}  // namespace hearth::matrix
