"""Matrix rooms over plain HTTP (what every client library sends): public rooms joined by
alias, invite/kick/ban/unban with their power-level checks, state events, the members
endpoints, /sync's leave and invite sections, /messages in both directions, and a parked
/sync answered at once when hearthd stops."""
import json
import re
import threading
import time
import unittest

from harness import Hearth


class Rooms(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Many requests from one address in a few seconds: lift the per-IP HTTP rate limit
        # (its own tests are elsewhere) so that it does not decide these tests.
        cls.h = Hearth(config_extra="[limits]\nrequests_per_second_per_ip = 100000\nrequest_burst_per_ip = 100000\n").start()
        cls.tokens = {}
        for name in ("ann", "ben", "cat"):
            r = cls.h.ctl("invite", "create")
            assert r.returncode == 0, r.stderr
            invite = re.search(r"token: (\S+)", r.stdout).group(1)
            status, body = cls.api("POST", "/register", {
                "username": name, "password": "pw " + name,
                "auth": {"type": "m.login.registration_token", "token": invite}})
            assert status == 200, body
            cls.tokens[name] = body["access_token"]

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    @classmethod
    def api(cls, method, path, body=None, who=None, timeout=None):
        headers = {"Content-Type": "application/json"}
        if who:
            headers["Authorization"] = f"Bearer {cls.tokens[who]}"
        data = None if body is None else json.dumps(body)
        status, _, raw = cls.h.request(method, "/_matrix/client/v3" + path, body=data, headers=headers)
        return status, json.loads(raw) if raw else None

    def ok(self, method, path, body=None, who=None):
        status, reply = self.api(method, path, body, who)
        self.assertEqual(status, 200, reply)
        return reply

    def forbidden(self, method, path, body=None, who=None):
        status, reply = self.api(method, path, body, who)
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"), reply)

    def sync(self, who, since=None, timeout=0):
        q = f"?timeout={timeout}" + (f"&since={since}" if since else "")
        return self.ok("GET", "/sync" + q, who=who)

    def test_public_room_by_alias_and_moderation(self):
        room = self.ok("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "lobby",
                                               "name": "Lobby"}, who="ann")["room_id"]
        self.assertEqual(self.ok("GET", "/directory/room/%23lobby:localhost", who="ben")["room_id"], room)
        status, body = self.api("POST", "/createRoom", {"room_alias_name": "lobby"}, who="ben")
        self.assertEqual((status, body["errcode"]), (400, "M_ROOM_IN_USE"))
        self.assertEqual(self.ok("POST", "/join/%23lobby:localhost", {}, who="ben")["room_id"], room)
        self.ok("POST", f"/rooms/{room}/join", {}, who="cat")
        joined = self.ok("GET", f"/rooms/{room}/joined_members", who="ben")["joined"]
        self.assertEqual(sorted(joined), ["@ann:localhost", "@ben:localhost", "@cat:localhost"])
        self.assertEqual(joined["@ben:localhost"]["display_name"], "ben")

        # Power levels: ben (0) may talk but not rename, kick or ban; ann (100) may.
        self.ok("PUT", f"/rooms/{room}/send/m.room.message/1", {"msgtype": "m.text", "body": "hi"}, who="ben")
        self.forbidden("PUT", f"/rooms/{room}/state/m.room.name/", {"name": "mine"}, who="ben")
        self.forbidden("POST", f"/rooms/{room}/kick", {"user_id": "@cat:localhost"}, who="ben")
        self.forbidden("POST", f"/rooms/{room}/ban", {"user_id": "@cat:localhost"}, who="ben")
        self.ok("PUT", f"/rooms/{room}/state/m.room.name/", {"name": "Big lobby"}, who="ann")
        self.assertEqual(self.ok("GET", f"/rooms/{room}/state/m.room.name/", who="cat"), {"name": "Big lobby"})

        before = self.sync("cat")["next_batch"]
        self.ok("POST", f"/rooms/{room}/ban", {"user_id": "@cat:localhost", "reason": "spam"}, who="ann")
        self.forbidden("POST", f"/rooms/{room}/join", {}, who="cat")
        self.forbidden("PUT", f"/rooms/{room}/send/m.room.message/2", {"body": "let me in"}, who="cat")
        # The ban shows in cat's sync as a left room, ending with the ban event.
        left = self.sync("cat", since=before)["rooms"]["leave"][room]["timeline"]["events"]
        self.assertEqual((left[-1]["type"], left[-1]["content"]["membership"]), ("m.room.member", "ban"))
        self.ok("POST", f"/rooms/{room}/unban", {"user_id": "@cat:localhost"}, who="ann")
        self.ok("POST", f"/rooms/{room}/join", {}, who="cat")
        self.ok("POST", f"/rooms/{room}/kick", {"user_id": "@cat:localhost"}, who="ann")
        members = self.ok("GET", f"/rooms/{room}/members?membership=leave", who="ann")["chunk"]
        self.assertEqual([m["state_key"] for m in members], ["@cat:localhost"])
        # Kicked: cat can read history up to the kick, not what follows.
        self.ok("PUT", f"/rooms/{room}/send/m.room.message/3", {"msgtype": "m.text", "body": "after kick"}, who="ann")
        bodies = [e["content"].get("body") for e in
                  self.ok("GET", f"/rooms/{room}/messages?dir=b&limit=50", who="cat")["chunk"]]
        self.assertIn("hi", bodies)
        self.assertNotIn("after kick", bodies)

    def test_invite_only_room_and_leaving(self):
        room = self.ok("POST", "/createRoom", {"preset": "private_chat"}, who="ann")["room_id"]
        self.forbidden("POST", f"/rooms/{room}/join", {}, who="ben")
        self.forbidden("GET", f"/rooms/{room}/state", who="ben")
        before = self.sync("ben")["next_batch"]
        self.ok("POST", f"/rooms/{room}/invite", {"user_id": "@ben:localhost"}, who="ann")
        invited = self.sync("ben", since=before)["rooms"]["invite"][room]["invite_state"]["events"]
        self.assertIn(("m.room.member", "@ben:localhost", "invite"),
                      [(e["type"], e.get("state_key"), e["content"].get("membership")) for e in invited])
        self.assertIn("m.room.create", [e["type"] for e in invited])
        status, body = self.api("POST", f"/rooms/{room}/invite", {"user_id": "@nobody:localhost"}, who="ann")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))
        self.ok("POST", f"/rooms/{room}/join", {}, who="ben")
        self.assertIn(room, self.ok("GET", "/joined_rooms", who="ben")["joined_rooms"])
        state_types = {e["type"] for e in self.ok("GET", f"/rooms/{room}/state", who="ben")}
        self.assertTrue({"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member"} <= state_types)
        self.ok("POST", f"/rooms/{room}/leave", {}, who="ben")
        self.assertNotIn(room, self.ok("GET", "/joined_rooms", who="ben")["joined_rooms"])
        self.forbidden("POST", f"/rooms/{room}/leave", {}, who="ben")

    def test_messages_in_both_directions(self):
        room = self.ok("POST", "/createRoom", {}, who="ann")["room_id"]
        ids = [self.ok("PUT", f"/rooms/{room}/send/m.room.message/m{i}", {"msgtype": "m.text", "body": str(i)},
                       who="ann")["event_id"] for i in range(7)]
        page = self.ok("GET", f"/rooms/{room}/messages?dir=b&limit=3", who="ann")
        self.assertEqual([e["event_id"] for e in page["chunk"]], ids[6:3:-1])
        page2 = self.ok("GET", f"/rooms/{room}/messages?dir=b&limit=3&from={page['end']}", who="ann")
        self.assertEqual([e["event_id"] for e in page2["chunk"]], ids[3:0:-1])
        fwd = self.ok("GET", f"/rooms/{room}/messages?dir=f&limit=10&from={page2['end']}", who="ann")
        self.assertEqual([e["event_id"] for e in fwd["chunk"]][:6], ids[1:7])
        event = self.ok("GET", f"/rooms/{room}/event/{ids[0]}", who="ann")
        self.assertEqual((event["content"]["body"], event["unsigned"]["transaction_id"]), ("0", "m0"))
        status, body = self.api("GET", f"/rooms/{room}/messages?dir=x", who="ann")
        self.assertEqual((status, body["errcode"]), (400, "M_INVALID_PARAM"))

    def test_redaction(self):
        room = self.ok("POST", "/createRoom", {"preset": "public_chat"}, who="ann")["room_id"]
        self.ok("POST", f"/rooms/{room}/join", {}, who="ben")
        mine = self.ok("PUT", f"/rooms/{room}/send/m.room.message/r1", {"msgtype": "m.text", "body": "oops"},
                       who="ben")["event_id"]
        anns = self.ok("PUT", f"/rooms/{room}/send/m.room.message/r2", {"msgtype": "m.text", "body": "mine"},
                       who="ann")["event_id"]
        # Ben (level 0) may redact his own message but not Ann's.
        self.forbidden("PUT", f"/rooms/{room}/redact/{anns}/x1", {"reason": "no"}, who="ben")
        redaction = self.ok("PUT", f"/rooms/{room}/redact/{mine}/x2", {"reason": "typo"}, who="ben")["event_id"]
        again = self.ok("PUT", f"/rooms/{room}/redact/{mine}/x2", {"reason": "typo"}, who="ben")["event_id"]
        self.assertEqual(redaction, again)  # idempotent per transaction id
        event = self.ok("GET", f"/rooms/{room}/event/{mine}", who="ann")
        self.assertEqual(event["content"], {})
        self.assertEqual(event["unsigned"]["redacted_because"]["event_id"], redaction)
        red = self.ok("GET", f"/rooms/{room}/event/{redaction}", who="ben")
        self.assertEqual((red["type"], red["redacts"], red["content"]["redacts"]), ("m.room.redaction", mine, mine))
        self.assertEqual(red["unsigned"]["transaction_id"], "x2")
        # Ann (100) may redact anything.
        self.ok("PUT", f"/rooms/{room}/redact/{anns}/x3", {}, who="ann")
        status, body = self.api("PUT", f"/rooms/{room}/redact/$nope/x4", {}, who="ann")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))

    def test_profile_account_data_and_devices(self):
        room = self.ok("POST", "/createRoom", {}, who="cat")["room_id"]
        self.assertEqual(self.ok("GET", "/profile/@cat:localhost/displayname"), {"displayname": "cat"})
        since = self.sync("cat")["next_batch"]
        self.ok("PUT", "/profile/@cat:localhost/displayname", {"displayname": "Cat Stevens"}, who="cat")
        self.forbidden("PUT", "/profile/@ann:localhost/displayname", {"displayname": "x"}, who="cat")
        self.assertEqual(self.ok("GET", "/profile/@cat:localhost"), {"displayname": "Cat Stevens"})
        status, body = self.api("GET", "/profile/@nobody:localhost")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))
        # The room sees the new name in a member event.
        joined = self.sync("cat", since=since)["rooms"]["join"][room]
        timeline = joined["timeline"]["events"]
        self.assertEqual(len(timeline), 1)  # only the change, not the room again
        self.assertEqual(joined["state"]["events"], [])
        self.assertEqual(timeline[-1]["content"]["displayname"], "Cat Stevens")
        self.assertEqual(timeline[-1]["unsigned"]["prev_content"]["displayname"], "cat")
        # Account data, global and per room, reaches /sync (a parked sync is woken by it).
        since = self.sync("cat")["next_batch"]
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", self.sync("cat", since=since, timeout=15000)))
        t.start()
        deadline = time.monotonic() + 20
        while not re.search(r"^hearth_matrix_sync_waiting 1", self.h.request("GET", "/metrics")[2].decode(), re.M):
            self.assertLess(time.monotonic(), deadline, "the sync never parked")
            time.sleep(0.02)
        self.ok("PUT", "/user/@cat:localhost/account_data/org.example.settings", {"theme": "dark"}, who="cat")
        t.join(20)
        self.assertFalse(t.is_alive())
        self.assertEqual(result["r"]["account_data"]["events"],
                         [{"type": "org.example.settings", "content": {"theme": "dark"}}])
        since = result["r"]["next_batch"]
        self.ok("PUT", f"/user/@cat:localhost/rooms/{room}/account_data/m.tag", {"tags": {"u.work": {}}}, who="cat")
        r = self.sync("cat", since=since)
        self.assertEqual(r["account_data"]["events"], [])
        self.assertEqual(r["rooms"]["join"][room]["account_data"]["events"][0]["type"], "m.tag")
        self.assertEqual(self.ok("GET", "/user/@cat:localhost/account_data/org.example.settings", who="cat"),
                         {"theme": "dark"})
        self.forbidden("GET", "/user/@ann:localhost/account_data/org.example.settings", who="cat")
        status, body = self.api("GET", "/user/@cat:localhost/account_data/none", who="cat")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))
        # An initial sync has all of it.
        r = self.sync("cat")
        self.assertIn("org.example.settings", [e["type"] for e in r["account_data"]["events"]])
        devices = self.ok("GET", "/devices", who="cat")["devices"]
        self.assertEqual(len(devices), 1)
        self.assertEqual(self.ok("GET", f"/devices/{devices[0]['device_id']}", who="cat")["device_id"],
                         devices[0]["device_id"])

    def test_typing_and_receipts(self):
        room = self.ok("POST", "/createRoom", {"preset": "public_chat"}, who="ann")["room_id"]
        self.ok("POST", f"/rooms/{room}/join", {}, who="ben")
        msg = self.ok("PUT", f"/rooms/{room}/send/m.room.message/e1", {"msgtype": "m.text", "body": "read me"},
                      who="ann")["event_id"]
        since = self.sync("ann")["next_batch"]

        def ephemeral(reply):
            return reply["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])

        self.ok("PUT", f"/rooms/{room}/typing/@ben:localhost", {"typing": True, "timeout": 1000}, who="ben")
        self.forbidden("PUT", f"/rooms/{room}/typing/@ann:localhost", {"typing": True}, who="ben")
        r = self.sync("ann", since=since)
        self.assertIn({"type": "m.typing", "content": {"user_ids": ["@ben:localhost"]}}, ephemeral(r))
        # Nothing else happens: the typing timeout (1 s) itself wakes a parked sync.
        started = time.monotonic()
        r = self.sync("ann", since=r["next_batch"], timeout=15000)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn({"type": "m.typing", "content": {"user_ids": []}}, ephemeral(r))
        since = r["next_batch"]

        self.ok("POST", f"/rooms/{room}/receipt/m.read/{msg}", {}, who="ben")
        self.ok("POST", f"/rooms/{room}/read_markers", {"m.fully_read": msg, "m.read.private": msg}, who="ann")
        status, body = self.api("POST", f"/rooms/{room}/receipt/m.read/$unknown", {}, who="ben")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))
        r = self.sync("ann", since=since)
        receipts = [e["content"] for e in ephemeral(r) if e["type"] == "m.receipt"]
        self.assertEqual(len(receipts), 1)
        self.assertIn("@ben:localhost", receipts[0][msg]["m.read"])
        self.assertIn("@ann:localhost", receipts[0][msg]["m.read.private"])  # her own private receipt
        self.assertEqual(r["rooms"]["join"][room]["account_data"]["events"],
                         [{"type": "m.fully_read", "content": {"event_id": msg}}])
        # Ben sees Ann's public state but not her private receipt.
        r = self.sync("ben")
        receipts = [e["content"] for e in ephemeral(r) if e["type"] == "m.receipt"]
        self.assertNotIn("m.read.private", receipts[0][msg])
        self.assertIn("@ben:localhost", receipts[0][msg]["m.read"])

    def test_directory_aliases_and_context(self):
        room = self.ok("POST", "/createRoom", {"visibility": "public", "preset": "public_chat",
                                               "name": "Gardening club", "topic": "tomatoes",
                                               "room_alias_name": "garden"}, who="ann")["room_id"]
        hidden = self.ok("POST", "/createRoom", {"name": "Gardening secrets"}, who="ann")["room_id"]
        found = self.ok("POST", "/publicRooms", {"filter": {"generic_search_term": "GARDEN"}}, who="ben")["chunk"]
        self.assertEqual([r["room_id"] for r in found], [room])
        self.assertEqual((found[0]["name"], found[0]["topic"], found[0]["canonical_alias"], found[0]["num_joined_members"]),
                         ("Gardening club", "tomatoes", "#garden:localhost", 1))
        status, _, raw = self.h.request("GET", "/_matrix/client/v3/publicRooms?limit=100")
        self.assertEqual(status, 200)
        self.assertIn(room, [r["room_id"] for r in json.loads(raw)["chunk"]])
        self.assertEqual(self.ok("GET", f"/directory/list/room/{hidden}"), {"visibility": "private"})
        self.forbidden("PUT", f"/directory/list/room/{hidden}", {"visibility": "public"}, who="ben")
        self.ok("PUT", f"/directory/list/room/{hidden}", {"visibility": "public"}, who="ann")
        self.assertEqual(self.ok("GET", f"/directory/list/room/{hidden}"), {"visibility": "public"})
        self.ok("PUT", f"/directory/list/room/{hidden}", {"visibility": "private"}, who="ann")

        self.ok("PUT", "/directory/room/%23veg:localhost", {"room_id": room}, who="ann")
        self.assertEqual(self.ok("GET", f"/rooms/{room}/aliases", who="ann")["aliases"],
                         ["#garden:localhost", "#veg:localhost"])
        self.ok("POST", f"/rooms/{room}/join", {}, who="ben")
        self.forbidden("DELETE", "/directory/room/%23veg:localhost", who="ben")
        self.ok("DELETE", "/directory/room/%23veg:localhost", who="ann")
        status, body = self.api("GET", "/directory/room/%23veg:localhost", who="ann")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))

        ids = [self.ok("PUT", f"/rooms/{room}/send/m.room.message/c{i}", {"msgtype": "m.text", "body": str(i)},
                       who="ann")["event_id"] for i in range(5)]
        ctx = self.ok("GET", f"/rooms/{room}/context/{ids[2]}?limit=2", who="ben")
        self.assertEqual(ctx["event"]["event_id"], ids[2])
        self.assertEqual([e["event_id"] for e in ctx["events_before"]], [ids[1]])
        self.assertEqual([e["event_id"] for e in ctx["events_after"]], [ids[3]])
        after_end = self.ok("GET", f"/rooms/{room}/messages?dir=f&from={ctx['end']}", who="ben")["chunk"]
        self.assertEqual(after_end[0]["event_id"], ids[4])
        before_start = self.ok("GET", f"/rooms/{room}/messages?dir=b&from={ctx['start']}&limit=1", who="ben")["chunk"]
        self.assertEqual(before_start[0]["event_id"], ids[0])

    def test_history_visibility(self):
        def bodies(who, room):
            return [e["content"].get("body") for e in
                    self.ok("GET", f"/rooms/{room}/messages?dir=b&limit=100", who=who)["chunk"]
                    if e["type"] == "m.room.message"]

        for visibility, ben_sees_before in (("joined", False), ("invited", False), ("shared", True)):
            room = self.ok("POST", "/createRoom", {"initial_state": [{
                "type": "m.room.history_visibility", "content": {"history_visibility": visibility}}]},
                who="ann")["room_id"]
            before = self.ok("PUT", f"/rooms/{room}/send/m.room.message/b", {"msgtype": "m.text", "body": "before"},
                             who="ann")["event_id"]
            self.ok("POST", f"/rooms/{room}/invite", {"user_id": "@ben:localhost"}, who="ann")
            self.ok("PUT", f"/rooms/{room}/send/m.room.message/i", {"msgtype": "m.text", "body": "invited"}, who="ann")
            self.ok("POST", f"/rooms/{room}/join", {}, who="ben")
            self.ok("PUT", f"/rooms/{room}/send/m.room.message/a", {"msgtype": "m.text", "body": "after"}, who="ann")
            expected = (["after"] + (["invited"] if visibility != "joined" else [])
                        + (["before"] if ben_sees_before else []))
            self.assertEqual(bodies("ben", room), expected, visibility)
            self.assertEqual(bodies("ann", room), ["after", "invited", "before"])
            status, _ = self.api("GET", f"/rooms/{room}/event/{before}", who="ben")
            self.assertEqual(status, 200 if ben_sees_before else 404, visibility)
            timeline = self.sync("ben")["rooms"]["join"][room]["timeline"]["events"]
            self.assertEqual("before" in [e["content"].get("body") for e in timeline], ben_sees_before, visibility)

    def new_user(self, name):
        r = self.h.ctl("invite", "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        invite = re.search(r"token: (\S+)", r.stdout).group(1)
        status, body = self.api("POST", "/register", {
            "username": name, "password": "pw " + name,
            "auth": {"type": "m.login.registration_token", "token": invite}})
        self.assertEqual(status, 200, body)
        self.tokens[name] = body["access_token"]

    def member_state(self, room, user):
        return self.ok("GET", f"/rooms/{room}/state/m.room.member/{user}", who="ann")

    def test_deleted_accounts_leave_their_rooms(self):
        self.new_user("dan")
        room = self.ok("POST", "/createRoom", {"preset": "public_chat"}, who="ann")["room_id"]
        invited = self.ok("POST", "/createRoom", {"invite": ["@dan:localhost"]}, who="ann")["room_id"]
        self.ok("POST", f"/rooms/{room}/join", {}, who="dan")
        self.ok("PUT", "/profile/@dan:localhost/displayname", {"displayname": "Dan"}, who="dan")
        r = self.h.ctl("user", "del", "dan@localhost")
        self.assertEqual(r.returncode, 0, r.stderr)
        for rid in (room, invited):
            self.assertEqual(self.member_state(rid, "@dan:localhost"),
                             {"membership": "leave", "reason": "account deleted"})
        status, body = self.api("GET", "/profile/@dan:localhost")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))

    def test_zy_deleting_while_stopped_is_swept_at_start(self):
        self.new_user("eve")
        room = self.ok("POST", "/createRoom", {"preset": "public_chat"}, who="ann")["room_id"]
        self.ok("POST", f"/rooms/{room}/join", {}, who="eve")
        self.assertEqual(self.h.stop(), 0)
        r = self.h.ctl("user", "del", "eve@localhost")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.h.start()
        self.assertEqual(self.member_state(room, "@eve:localhost")["membership"], "leave")
        self.assertIn("matrix.forgot_deleted_account", self.h.stderr())

    def test_zz_stop_answers_a_parked_sync(self):
        since = self.sync("ann")["next_batch"]
        result = {}

        def long_poll():
            result["reply"] = self.api("GET", f"/sync?timeout=30000&since={since}", who="ann")

        t = threading.Thread(target=long_poll)
        t.start()
        deadline = time.monotonic() + 20
        while not re.search(r"^hearth_matrix_sync_waiting 1", self.h.request("GET", "/metrics")[2].decode(), re.M):
            self.assertLess(time.monotonic(), deadline, "the sync never parked")
            time.sleep(0.02)
        started = time.monotonic()
        self.h.stop()
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertEqual(result["reply"][0], 200, result)
        self.assertLess(time.monotonic() - started, 4)  # well inside drain_seconds (5)
        self.h.start()


if __name__ == "__main__":
    unittest.main()
