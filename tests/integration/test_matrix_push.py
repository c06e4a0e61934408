"""Push rules, unread counts, pushers, /sync filters and presence, device renaming and the
user directory, driven by matrix-nio (Debian's python3-matrix-nio) where it has the call,
plain HTTP otherwise."""
import json
import unittest
import urllib.parse

from nio import (AsyncClient, LoginResponse, PushEventMatch, PushNotify, PushRuleKind, PushRulesEvent, PushSetTweak,
                 SyncResponse)

from harness import Hearth

TIMEOUT = 20


class Push(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra="[limits]\nrequests_per_second_per_ip = 100000\nrequest_burst_per_ip = 100000\n")
        cls.h.start()
        cls.h.add_users("alice", "bob", "carol", "dave")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def asyncSetUp(self):
        self.clients = {}
        for name in ("alice", "bob", "carol"):
            c = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", f"@{name}:localhost")
            r = await c.login(f"{name} secret pw", device_name=f"{name}'s laptop")
            self.assertIsInstance(r, LoginResponse, r)
            self.clients[name] = c

    async def asyncTearDown(self):
        for c in self.clients.values():
            await c.close()

    def api(self, method, path, body=None, who="alice"):
        return self.h.matrix_api(method, path, body, token=self.clients[who].access_token)

    def ok(self, method, path, body=None, who="alice"):
        status, reply = self.api(method, path, body, who)
        self.assertEqual(status, 200, reply)
        return reply

    async def sync(self, who, since=None, sync_filter=None):
        r = await self.clients[who].sync(timeout=0, since=since, sync_filter=sync_filter)
        self.assertIsInstance(r, SyncResponse, r)
        return r

    async def room_with(self, creator, *members, preset="private_chat"):
        room = self.ok("POST", "/createRoom", {"preset": preset, "invite": [f"@{m}:localhost" for m in members]},
                       who=creator)["room_id"]
        for m in members:
            self.ok("POST", f"/rooms/{room}/join", {}, who=m)
        return room

    def send(self, room, who, body, txn, extra=None):
        content = {"msgtype": "m.text", "body": body, **(extra or {})}
        return self.ok("PUT", f"/rooms/{room}/send/m.room.message/{txn}", content, who=who)["event_id"]

    async def test_push_rules_with_nio(self):
        alice = self.clients["alice"]
        rules = self.ok("GET", "/pushrules/")["global"]
        self.assertEqual(rules["override"][0]["rule_id"], ".m.rule.master")
        self.assertIn(".m.rule.is_user_mention", [r["rule_id"] for r in rules["override"]])
        self.assertEqual([r["rule_id"] for r in rules["underride"]][-2:], [".m.rule.message", ".m.rule.encrypted"])
        self.assertEqual(rules["content"][0]["pattern"], "alice")
        # nio reads the defaults from the initial sync's m.push_rules account data.
        first = await self.sync("alice")
        events = [e for e in first.account_data_events if isinstance(e, PushRulesEvent)]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0].global_rules.override[0].id, ".m.rule.master")

        r = await alice.set_pushrule("global", PushRuleKind.override, "beer",
                                     conditions=[PushEventMatch("content.body", "beer")],
                                     actions=[PushNotify(), PushSetTweak("sound", "beeroclock.wav")])
        self.assertEqual(type(r).__name__, "SetPushRuleResponse", r)
        r = await alice.set_pushrule("global", PushRuleKind.override, "wine", before="beer",
                                     conditions=[PushEventMatch("content.body", "wine")], actions=[PushNotify()])
        self.assertEqual(type(r).__name__, "SetPushRuleResponse", r)
        ids = [x["rule_id"] for x in self.ok("GET", "/pushrules/global/")["override"]]
        self.assertEqual(ids[:3], [".m.rule.master", "wine", "beer"])
        by_kind = [x["rule_id"] for x in self.ok("GET", "/pushrules/global/override/")]
        self.assertEqual(by_kind, ids)
        self.assertEqual(self.ok("GET", "/pushrules/global/override/beer")["actions"][1]["value"], "beeroclock.wav")
        r = await alice.enable_pushrule("global", PushRuleKind.override, ".m.rule.master", True)
        self.assertEqual(type(r).__name__, "EnablePushRuleResponse", r)
        self.assertEqual(self.ok("GET", "/pushrules/global/override/.m.rule.master/enabled"), {"enabled": True})
        r = await alice.set_pushrule_actions("global", PushRuleKind.underride, ".m.rule.message",
                                             [PushNotify(), PushSetTweak("highlight", True)])
        self.assertEqual(type(r).__name__, "SetPushRuleActionsResponse", r)
        r = await alice.delete_pushrule("global", PushRuleKind.override, "wine")
        self.assertEqual(type(r).__name__, "DeletePushRuleResponse", r)
        # The change reaches the next sync as m.push_rules.
        later = await self.sync("alice", since=first.next_batch)
        events = [e for e in later.account_data_events if isinstance(e, PushRulesEvent)]
        self.assertEqual(len(events), 1)
        self.assertEqual([x.id for x in events[0].global_rules.override][:2], [".m.rule.master", "beer"])
        self.assertTrue(events[0].global_rules.override[0].enabled)
        # Errors: default rules cannot be deleted, unknown rules and kinds, reserved ids.
        status, body = self.api("DELETE", "/pushrules/global/override/.m.rule.master")
        self.assertEqual(status, 403, body)
        status, body = self.api("GET", "/pushrules/global/override/nope")
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))
        status, body = self.api("PUT", "/pushrules/global/sideways/x", {"actions": []})
        self.assertEqual(status, 400, body)
        status, body = self.api("PUT", "/pushrules/global/override/.mine", {"actions": []})
        self.assertEqual(status, 400, body)
        status, body = self.api("PUT", "/user/@alice:localhost/account_data/m.push_rules", {})
        self.assertEqual(status, 405, body)
        # Restore the defaults this test changed (the other tests count notifications).
        self.ok("PUT", "/pushrules/global/override/.m.rule.master/enabled", {"enabled": False})
        self.ok("PUT", "/pushrules/global/underride/.m.rule.message/actions", {"actions": ["notify"]})
        self.ok("DELETE", "/pushrules/global/override/beer")
        # Survives a restart.
        self.ok("PUT", "/pushrules/global/room/!quiet:localhost", {"actions": []})
        self.h.stop()
        self.h.start()
        rooms = self.ok("GET", "/pushrules/")["global"]["room"]
        self.assertEqual([x["rule_id"] for x in rooms], ["!quiet:localhost"])
        self.ok("DELETE", "/pushrules/global/room/!quiet:localhost")

    async def test_unread_counts_follow_rules_and_receipts(self):
        room = await self.room_with("bob", "alice", "carol")
        since = (await self.sync("alice")).next_batch
        self.send(room, "bob", "hello all", "u1")
        self.send(room, "bob", "ping", "u2", {"m.mentions": {"user_ids": ["@alice:localhost"]}})
        self.send(room, "bob", "a notice", "u3", {"msgtype": "m.notice"})
        last = self.send(room, "carol", "hey Alice, lunch?", "u4")  # the localpart, at word boundaries
        self.send(room, "alice", "my own message", "u5")  # own events never count
        r = await self.sync("alice", since=since)
        counts = r.rooms.join[room].unread_notifications
        self.assertEqual((counts.notification_count, counts.highlight_count), (3, 2))
        # A read receipt on the last message resets the counts (the sync sees the receipt).
        self.ok("POST", f"/rooms/{room}/receipt/m.read/{last}", {})
        r2 = await self.sync("alice", since=r.next_batch)
        counts = r2.rooms.join[room].unread_notifications
        self.assertEqual((counts.notification_count, counts.highlight_count), (0, 0))
        # A private receipt counts too; a room rule silences the room.
        self.send(room, "bob", "more", "u6")
        e = self.send(room, "bob", "and more", "u7")
        r3 = await self.sync("alice", since=r2.next_batch)
        self.assertEqual(r3.rooms.join[room].unread_notifications.notification_count, 2)
        self.ok("POST", f"/rooms/{room}/receipt/m.read.private/{e}", {})
        self.ok("PUT", f"/pushrules/global/room/{room}", {"actions": []})
        self.send(room, "bob", "silenced", "u8")
        r4 = await self.sync("alice", since=r3.next_batch)
        self.assertEqual(r4.rooms.join[room].unread_notifications.notification_count, 0)
        self.ok("DELETE", f"/pushrules/global/room/{room}")
        # The summary names the members.
        summary = r.rooms.join[room].summary
        self.assertEqual(summary.joined_member_count, 3)
        self.assertEqual(sorted(summary.heroes), ["@bob:localhost", "@carol:localhost"])

    async def test_pushers_are_stored(self):
        pusher = {"app_id": "org.example.app", "pushkey": "key-1", "kind": "http", "app_display_name": "Example",
                  "device_display_name": "phone", "lang": "en",
                  "data": {"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"}}
        self.ok("POST", "/pushers/set", pusher)
        got = self.ok("GET", "/pushers")["pushers"]
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["data"]["url"], pusher["data"]["url"])
        status, body = self.api("POST", "/pushers/set", {**pusher, "data": {"url": "ftp://x"}})
        self.assertEqual(status, 400, body)
        # The same pushkey for another user takes it over (no append).
        self.ok("POST", "/pushers/set", pusher, who="bob")
        self.assertEqual(self.ok("GET", "/pushers")["pushers"], [])
        self.ok("POST", "/pushers/set", {"app_id": "org.example.app", "pushkey": "key-1", "kind": None}, who="bob")
        self.assertEqual(self.ok("GET", "/pushers", who="bob")["pushers"], [])

    async def test_sync_filters_and_lazy_loading(self):
        room = await self.room_with("carol", "alice", "bob", preset="public_chat")
        other = await self.room_with("carol", "alice")
        self.send(room, "bob", "from bob", "f1")
        self.ok("PUT", f"/rooms/{room}/send/org.example.thing/f2", {"x": 1}, who="bob")
        # A stored filter (nio's upload_filter): only messages, only this room, members lazily.
        up = await self.clients["alice"].upload_filter(room={
            "rooms": [room], "timeline": {"types": ["m.room.message"], "limit": 5},
            "state": {"lazy_load_members": True}})
        self.assertEqual(type(up).__name__, "UploadFilterResponse", up)
        r = await self.sync("alice", sync_filter=up.filter_id)
        self.assertEqual(list(r.rooms.join), [room])
        joined = r.rooms.join[room]
        self.assertEqual({e.source["type"] for e in joined.timeline.events}, {"m.room.message"})
        members = {e.source["state_key"] for e in joined.state if e.source["type"] == "m.room.member"}
        self.assertEqual(members, {"@alice:localhost", "@bob:localhost"})  # carol sent nothing shown
        self.assertIn("m.room.create", {e.source["type"] for e in joined.state})
        # Inline: not_rooms, senders, and an account data filter.
        inline = json.dumps({"room": {"not_rooms": [room], "timeline": {"not_senders": ["@carol:localhost"]}},
                             "account_data": {"not_types": ["m.push_rules"]}})
        status, body = self.api("GET", "/sync?filter=" + urllib.parse.quote(inline))
        self.assertEqual(status, 200, body)
        self.assertNotIn(room, body["rooms"]["join"])
        self.assertIn(other, body["rooms"]["join"])
        self.assertEqual([e for e in body["rooms"]["join"][other]["timeline"]["events"]
                          if e["sender"] == "@carol:localhost"], [])
        self.assertNotIn("m.push_rules", [e["type"] for e in body["account_data"]["events"]])
        status, body = self.api("POST", "/user/@alice:localhost/filter", {"room": {"timeline": {"limit": "x"}}})
        self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"))

    async def test_presence_reaches_syncs_of_room_members(self):
        await self.room_with("alice", "bob")
        since = (await self.sync("bob")).next_batch
        r = await self.clients["alice"].set_presence("online", "baking")
        self.assertEqual(type(r).__name__, "PresenceSetResponse", r)
        got = await self.sync("bob", since=since)
        mine = [e for e in got.presence_events if e.user_id == "@alice:localhost"]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0].presence, mine[0].status_msg), ("online", "baking"))
        # nio's sync(set_presence=...) sets it too; only a change reaches the others.
        r = await self.clients["alice"].sync(timeout=0, since=since, set_presence="unavailable")
        self.assertIsInstance(r, SyncResponse, r)
        got = await self.sync("bob", since=got.next_batch)
        mine = [e for e in got.presence_events if e.user_id == "@alice:localhost"]
        self.assertEqual([(e.presence, e.status_msg) for e in mine], [("unavailable", "baking")])
        got = await self.sync("bob", since=got.next_batch)
        self.assertEqual([e for e in got.presence_events if e.user_id == "@alice:localhost"], [])
        # dave shares no room with alice: his initial sync has no presence of hers.
        status, body = self.h.matrix_api("POST", "/login", {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "dave"}, "password": "dave secret pw"})
        self.assertEqual(status, 200, body)
        status, body = self.h.matrix_api("GET", "/sync", token=body["access_token"])
        self.assertEqual([e for e in body["presence"]["events"] if e["sender"] == "@alice:localhost"], [])
        # The presence filter can exclude it.
        status, body = self.api("GET", "/sync?since=" + since + "&filter=" + urllib.parse.quote('{"presence":{"types":[]}}'), who="bob")
        self.assertEqual(body["presence"]["events"], [])

    async def test_device_rename(self):
        alice = self.clients["alice"]
        r = await alice.update_device(alice.device_id, {"display_name": "kitchen tablet"})
        self.assertEqual(type(r).__name__, "UpdateDeviceResponse", r)
        self.assertEqual(self.ok("GET", f"/devices/{alice.device_id}")["display_name"], "kitchen tablet")
        status, body = self.api("PUT", "/devices/NOSUCHDEVICE", {"display_name": "x"})
        self.assertEqual((status, body["errcode"]), (404, "M_NOT_FOUND"))
        status, body = self.api("PUT", f"/devices/{alice.device_id}", {"display_name": "x" * 300})
        self.assertEqual(status, 400, body)

    async def test_user_directory(self):
        self.ok("PUT", "/profile/@carol:localhost/displayname", {"displayname": "Carol Danvers"}, who="carol")
        # dave shares no room with carol and she is in no public room: not found.
        status, body = self.h.matrix_api("POST", "/login", {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "dave"}, "password": "dave secret pw"})
        dave = body["access_token"]
        status, body = self.h.matrix_api("POST", "/user_directory/search", {"search_term": "danvers"}, token=dave)
        self.assertEqual((status, body["results"]), (200, []))
        # alice shares a room with carol: found by display name and by user id.
        await self.room_with("alice", "carol")
        found = self.ok("POST", "/user_directory/search", {"search_term": "DANV"})["results"]
        self.assertEqual(found, [{"user_id": "@carol:localhost", "display_name": "Carol Danvers"}])
        self.assertEqual([x["user_id"] for x in self.ok("POST", "/user_directory/search",
                                                         {"search_term": "carol"})["results"]], ["@carol:localhost"])
        # A room published in the directory makes its members findable by everyone.
        pub = self.ok("POST", "/createRoom", {"preset": "public_chat", "visibility": "public"}, who="carol")["room_id"]
        self.assertTrue(pub)
        status, body = self.h.matrix_api("POST", "/user_directory/search", {"search_term": "danvers", "limit": 1},
                                         token=dave)
        self.assertEqual([x["user_id"] for x in body["results"]], ["@carol:localhost"])
        # Wildcards are literal; limits apply.
        self.assertEqual(self.ok("POST", "/user_directory/search", {"search_term": "%"})["results"], [])
        status, body = self.api("POST", "/user_directory/search", {"search_term": "x" * 300})
        self.assertEqual(status, 400, body)

    async def test_login_token(self):
        # get_token needs the password (UIA), then a new device logs in with the token once.
        status, body = self.h.matrix_api("POST", "/login", {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "bob"}, "password": "bob secret pw"})
        token = body["access_token"]
        flows = self.h.matrix_api("GET", "/login")[1]["flows"]
        self.assertIn({"type": "m.login.token", "get_login_token": True}, flows)
        self.assertTrue(self.ok("GET", "/capabilities", who="bob")["capabilities"]["m.get_login_token"]["enabled"])
        status, _, raw = self.h.request("POST", "/_matrix/client/v1/login/get_token", body="{}",
                                        headers={"Authorization": f"Bearer {token}"})
        self.assertEqual(status, 401)
        session = json.loads(raw)["session"]
        status, _, raw = self.h.request("POST", "/_matrix/client/v1/login/get_token", body=json.dumps({"auth": {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
            "password": "bob secret pw", "session": session}}), headers={"Authorization": f"Bearer {token}"})
        self.assertEqual(status, 200, raw)
        reply = json.loads(raw)
        self.assertGreater(reply["expires_in_ms"], 0)
        phone = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", "@bob:localhost")
        thief = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", "@bob:localhost")
        try:
            r = await phone.login(token=reply["login_token"], device_name="bob's phone")
            self.assertIsInstance(r, LoginResponse, r)
            self.assertEqual(r.user_id, "@bob:localhost")
            self.assertNotEqual(r.device_id, self.clients["bob"].device_id)
            again = await thief.login(token=reply["login_token"])
            self.assertNotIsInstance(again, LoginResponse)  # single use
        finally:
            await phone.close()
            await thief.close()
        status, body = self.h.matrix_api("POST", "/login", {"type": "m.login.token", "token": "made-up"})
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))


if __name__ == "__main__":
    unittest.main()
