// Helpers shared by the IQ module tests: a reply recorder, XML from text, a session.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>

#include "xmpp/im.h"
#include "xmpp/iq_table.h"
#include "xmpp/xml.h"

namespace hearth::xmpp::testing {

// Records what a handler answered.
struct FakeReply final : IqReply {
  int calls = 0;
  bool is_result = false;
  std::optional<Element> payload;
  std::string type, condition, text;
  void result(std::optional<Element> p) override {
    ++calls;
    is_result = true;
    payload = std::move(p);
  }
  void error(std::string_view t, std::string_view c, std::string_view x) override {
    ++calls;
    type = t;
    condition = c;
    text = x;
  }
};

inline Element parse(std::string_view xml) {
  auto e = parse_element(xml);
  EXPECT_TRUE(e) << xml;
  return e ? std::move(*e) : Element("invalid");
}

inline SessionIdentity session(std::string local, std::string resource = "phone") {
  SessionIdentity me;
  me.localpart = local;
  me.domain = "localhost";
  me.resource = resource;
  me.bare = local + "@localhost";
  me.full = me.bare + "/" + resource;
  me.id = 1;
  return me;
}

}  // namespace hearth::xmpp::testing
