// Canonical JSON: the spec's examples (appendices, "Canonical JSON") and the parser's
// limits and refusals.
#include <gtest/gtest.h>

#include "matrix/canonical_json.h"

namespace hearth::matrix {
namespace {

std::string canon(std::string_view text) {
  auto v = parse_json(text);
  EXPECT_TRUE(v) << text << ": " << (v ? "" : v.error().message);
  return v ? canonical_json(*v) : "";
}

TEST(CanonicalJson, SpecExamples) {
  EXPECT_EQ(canon("{}"), "{}");
  EXPECT_EQ(canon(R"({"one": 1, "two": "Two"})"), R"({"one":1,"two":"Two"})");
  EXPECT_EQ(canon(R"({"b": "2", "a": "1"})"), R"({"a":"1","b":"2"})");
  EXPECT_EQ(canon(R"({"b":"2","a":"1"})"), R"({"a":"1","b":"2"})");
  EXPECT_EQ(canon(R"({
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}
            ]
        }
    }
})"),
            R"({"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":)"
            R"([{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},)"
            R"("success":true}})");
  EXPECT_EQ(canon(R"({"a": "日本語"})"), R"({"a":"日本語"})");
  EXPECT_EQ(canon(R"({"本": 2, "日": 1})"), R"({"日":1,"本":2})");
  EXPECT_EQ(canon(R"({"a": "\u65E5"})"), R"({"a":"日"})");
  EXPECT_EQ(canon(R"({"a": null})"), R"({"a":null})");
  EXPECT_EQ(canon(R"({"a": -0, "b": 1e10})"), R"({"a":0,"b":10000000000})");
}

TEST(CanonicalJson, EscapesControlCharactersInLowercaseAndKeepsUnicodeRaw) {
  EXPECT_EQ(canon(R"(["\u0001\u001F\n\t\"\\/\u00e9"])"), "[\"\\u0001\\u001f\\n\\t\\\"\\\\/\xc3\xa9\"]");
}

TEST(CanonicalJson, SortsKeysByUtf8Bytes) {
  // U+00E9 (C3 A9) sorts after "z" by bytes; U+FF21 after both.
  EXPECT_EQ(canon(R"({"é":1,"z":2,"Ａ":3,"A":4})"), R"({"A":4,"z":2,"é":1,"Ａ":3})");
}

TEST(CanonicalJson, IntegerRange) {
  EXPECT_EQ(canon("[9007199254740991,-9007199254740991]"), "[9007199254740991,-9007199254740991]");
  for (auto text : {"[9007199254740992]", "[-9007199254740992]", "[18446744073709551615]", "[1e300]"}) {
    auto v = parse_json(text);
    ASSERT_FALSE(v) << text;
    EXPECT_EQ(v.error().kind, JsonError::bad_json) << text;
  }
}

TEST(CanonicalJson, RejectsFractionsAndDuplicateKeys) {
  auto fraction = parse_json(R"({"a":1.5})");
  ASSERT_FALSE(fraction);
  EXPECT_EQ(fraction.error().kind, JsonError::bad_json);
  auto dup = parse_json(R"({"a":1,"b":{"c":1,"c":2}})");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().kind, JsonError::bad_json);
  EXPECT_NE(dup.error().message.find("duplicate"), std::string::npos);
}

TEST(CanonicalJson, NotJsonIsReportedAsSuch) {
  for (auto text : {"", "{", "{\"a\":}", "[1,]", "nope", "{\"a\":\"\xff\"}", "\"\\ud800\""}) {
    auto v = parse_json(text);
    ASSERT_FALSE(v) << text;
    EXPECT_EQ(v.error().kind, JsonError::not_json) << text;
  }
}

TEST(CanonicalJson, DepthAndSizeLimits) {
  std::string deep(65, '[');
  deep += std::string(65, ']');
  auto v = parse_json(deep, {1 << 20, 64});
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().kind, JsonError::bad_json);
  std::string ok_depth = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(parse_json(ok_depth, {1 << 20, 64}));
  auto big = parse_json(std::string(100, ' ') + "{}", {50, 64});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().kind, JsonError::bad_json);
}

TEST(CanonicalJson, ObjectEditingKeepsOrder) {
  JsonValue o = JsonValue::object();
  o.set("b", JsonValue::integer(2));
  o.set("a", JsonValue::string("x"));
  o.set("c", JsonValue::boolean(true));
  o.set("b", JsonValue());
  EXPECT_EQ(canonical_json(o), R"({"a":"x","b":null,"c":true})");
  EXPECT_TRUE(o.erase("a"));
  EXPECT_FALSE(o.erase("a"));
  EXPECT_EQ(canonical_json(o), R"({"b":null,"c":true})");
  EXPECT_EQ(o.get("zz"), nullptr);
}

}  // namespace
}  // namespace hearth::matrix
