#include "cryptpad/rpc.h"

#include <gtest/gtest.h>

#include "core/clock.h"

namespace hearth::cryptpad {
namespace {

TEST(CryptpadRpc, PinListHashMatchesCryptpadClients) {
  // b64(sha512(JSON.stringify(sorted unique list))), as computed by tweetnacl in Node.
  EXPECT_EQ(pin_list_hash({"b", "a", "b"}),
            "dOScmv9K4/iqDPOPpyPGNyHpymstFwRPuQwYV6umKXp6mPCPyD51S+CiTUqVQGHuSUyBmUKE7fTeOjjJwsSvhA==");
  EXPECT_EQ(pin_list_hash({}),
            "slspTLTetp6gCkw88xE5BIAbYBXllWvQGahXCx/h1gQOlE7zze4W0KRlA8puZZol8hz5zt3BPzUqPJgTjBXWrw==");
}

TEST(CryptpadRpc, CookiesRotateKeepTwoTokensAndExpireWhenIdle) {
  ManualClock clock;
  RpcSessions sessions(clock);
  const std::string key = "k";
  EXPECT_FALSE(sessions.valid(key, "1|2|3"));
  std::string first = sessions.cookie_for(key);
  EXPECT_TRUE(sessions.valid(key, first));
  EXPECT_FALSE(sessions.valid("other", first));
  EXPECT_EQ(sessions.cookie_for(key), first);  // same token within a minute
  clock.advance_ms(61'000);
  std::string second = sessions.cookie_for(key);
  EXPECT_NE(second, first);
  EXPECT_TRUE(sessions.valid(key, first));   // the previous token still works
  clock.advance_ms(61'000);
  std::string third = sessions.cookie_for(key);
  EXPECT_FALSE(sessions.valid(key, first));  // only the two newest are kept
  EXPECT_TRUE(sessions.valid(key, second));
  EXPECT_TRUE(sessions.valid(key, third));
  // A wrong pid field is refused even with a good token.
  std::string forged = "0|1|" + third.substr(third.rfind('|') + 1);
  EXPECT_FALSE(sessions.valid(key, forged));
  clock.advance_ms(5 * 60 * 1000 + 1);
  EXPECT_FALSE(sessions.valid(key, third));
  sessions.cookie_for(key);
  sessions.expire(key);
  EXPECT_FALSE(sessions.valid(key, sessions.cookie_for("someone else")));
}

}  // namespace
}  // namespace hearth::cryptpad
