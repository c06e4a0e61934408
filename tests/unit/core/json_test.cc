#include "core/json.h"

#include "core/random.h"

#include <gtest/gtest.h>

namespace hearth {
namespace {

TEST(JsonWriter, NestedContainersAndCommas) {
  JsonWriter w;
  w.begin_object()
      .key("a").value(1)
      .key("b").begin_array().value("x").value(true).null().begin_object().end_object().end_array()
      .key("c").raw("{\"z\":0}")
      .end_object();
  EXPECT_EQ(w.str(), R"({"a":1,"b":["x",true,null,{}],"c":{"z":0}})");
}

TEST(JsonWriter, EscapesControlCharactersLowercase) {
  EXPECT_EQ(json_quote(std::string("a\x01\x1f\"\\\n", 6)), "\"a\\u0001\\u001f\\\"\\\\\\n\"");
  EXPECT_EQ(json_quote("é"), "\"é\"");
}

TEST(Random, TokensAreUrlSafeAndDistinct) {
  auto a = random_token(32);
  auto b = random_token(32);
  EXPECT_EQ(a.size(), 43u);
  EXPECT_NE(a, b);
  for (char c : a) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_');
  EXPECT_EQ(random_hex(8).size(), 16u);
  EXPECT_TRUE(secrets_equal("abc", "abc"));
  EXPECT_FALSE(secrets_equal("abc", "abd"));
  EXPECT_FALSE(secrets_equal("abc", "ab"));
}

}  // namespace
}  // namespace hearth
