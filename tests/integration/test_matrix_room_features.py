"""Matrix relations, threads, edits and references (issue 5), driven by matrix-nio (Debian's
python3-matrix-nio) for login, sending and /sync; nio has no API for /relations, /threads,
/search, /upgrade or /knock, so those are plain HTTP calls with nio's access token."""
import asyncio
import json
import unittest
import urllib.parse

from nio import AsyncClient, LoginResponse, RoomSendResponse, SyncResponse

from harness import Hearth

TIMEOUT = 20


class RoomFeatures(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra="[limits]\nrequests_per_second_per_ip = 100000\nrequest_burst_per_ip = 100000\n")
        cls.h.start()
        cls.h.add_users("ann", "ben", "cat")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def asyncSetUp(self):
        self.clients = {}
        for name in ("ann", "ben", "cat"):
            c = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", f"@{name}:localhost")
            r = await c.login(f"{name} secret pw")
            self.assertIsInstance(r, LoginResponse, r)
            self.clients[name] = c

    async def asyncTearDown(self):
        for c in self.clients.values():
            await c.close()

    # -- helpers ---------------------------------------------------------------------
    def call(self, method, path, body=None, who="ann", version="v3"):
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {self.clients[who].access_token}"}
        data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        status, _, raw = self.h.request(method, f"/_matrix/client/{version}" + path, body=data, headers=headers)
        return status, json.loads(raw) if raw else None

    def ok(self, method, path, body=None, who="ann", version="v3"):
        status, reply = self.call(method, path, body, who, version)
        self.assertEqual(status, 200, reply)
        return reply

    async def send(self, who, room, content, type="m.room.message"):
        r = await self.clients[who].room_send(room, type, content)
        self.assertIsInstance(r, RoomSendResponse, r)
        return r.event_id

    async def shared_room(self, *members, preset="public_chat"):
        room = self.ok("POST", "/createRoom", {"preset": preset})["room_id"]
        for m in members:
            self.ok("POST", f"/join/{urllib.parse.quote(room)}", {}, who=m)
        return room

    @staticmethod
    def text(body):
        return {"msgtype": "m.text", "body": body}

    # -- relations and threads -------------------------------------------------------
    async def test_threads_edits_references_and_relations_paging(self):
        room = await self.shared_room("ben", "cat")
        root = await self.send("ann", room, self.text("root"))
        replies = []
        for i, who in enumerate(("ben", "ben", "ann")):
            replies.append(await self.send(who, room, {
                **self.text(f"reply {i}"), "m.relates_to": {"rel_type": "m.thread", "event_id": root}}))
        edit = await self.send("ann", room, {
            **self.text("* root (edited)"), "m.new_content": self.text("root (edited)"),
            "m.relates_to": {"rel_type": "m.replace", "event_id": root}})
        forged = await self.send("ben", room, {  # another sender's "edit" is no edit
            **self.text("* hijacked"), "m.new_content": self.text("hijacked"),
            "m.relates_to": {"rel_type": "m.replace", "event_id": root}})
        ref = await self.send("cat", room, {**self.text("see above"),
                                            "m.relates_to": {"rel_type": "m.reference", "event_id": root}})

        # The root as served by /event, by /sync (nio) and by /messages carries the bundle.
        ev = self.ok("GET", f"/rooms/{room}/event/{root}", who="cat")
        rel = ev["unsigned"]["m.relations"]
        self.assertEqual(rel["m.thread"]["count"], 3)
        self.assertEqual(rel["m.thread"]["latest_event"]["event_id"], replies[-1])
        self.assertFalse(rel["m.thread"]["current_user_participated"])  # cat did not take part
        self.assertEqual(rel["m.replace"]["event_id"], edit)
        self.assertEqual(rel["m.reference"]["chunk"], [{"event_id": ref}])
        ev = self.ok("GET", f"/rooms/{room}/event/{root}", who="ben")
        self.assertTrue(ev["unsigned"]["m.relations"]["m.thread"]["current_user_participated"])

        s = await asyncio.wait_for(self.clients["cat"].sync(timeout=0), TIMEOUT)
        self.assertIsInstance(s, SyncResponse, s)
        served = [e.source for e in s.rooms.join[room].timeline.events if e.event_id == root]
        if served:  # the timeline may have been cut before the root (limit)
            self.assertEqual(served[0]["unsigned"]["m.relations"]["m.thread"]["count"], 3)
        msgs = self.ok("GET", f"/rooms/{room}/messages?dir=b&limit=50", who="cat")
        self.assertEqual([e for e in msgs["chunk"] if e["event_id"] == root][0]["unsigned"]["m.relations"]
                         ["m.replace"]["event_id"], edit)

        # /relations: all children newest first, filtered by type, paged both ways.
        everything = self.ok("GET", f"/rooms/{room}/relations/{root}", who="cat", version="v1")
        self.assertEqual([e["event_id"] for e in everything["chunk"]], [ref, forged, edit] + replies[::-1])
        thread = self.ok("GET", f"/rooms/{room}/relations/{root}/m.thread?limit=2", who="cat", version="v1")
        self.assertEqual([e["event_id"] for e in thread["chunk"]], [replies[2], replies[1]])
        rest = self.ok("GET", f"/rooms/{room}/relations/{root}/m.thread?limit=2&from={thread['next_batch']}",
                       who="cat", version="v1")
        self.assertEqual([e["event_id"] for e in rest["chunk"]], [replies[0]])
        self.assertNotIn("next_batch", rest)
        forwards = self.ok("GET", f"/rooms/{room}/relations/{root}/m.thread/m.room.message?dir=f", who="cat",
                           version="v1")
        self.assertEqual([e["event_id"] for e in forwards["chunk"]], replies)
        self.assertEqual(self.ok("GET", f"/rooms/{room}/relations/{root}/m.thread/m.other", who="cat",
                                 version="v1")["chunk"], [])

        # recurse: an edit of a thread reply relates to the root only indirectly.
        reply_edit = await self.send("ben", room, {
            **self.text("* reply 0 (edited)"), "m.new_content": self.text("reply 0 (edited)"),
            "m.relates_to": {"rel_type": "m.replace", "event_id": replies[0]}})
        flat = self.ok("GET", f"/rooms/{room}/relations/{root}/m.replace", who="cat", version="v1")
        self.assertEqual([e["event_id"] for e in flat["chunk"]], [forged, edit])
        deep = self.ok("GET", f"/rooms/{room}/relations/{root}/m.replace?recurse=true", who="cat", version="v1")
        self.assertEqual([e["event_id"] for e in deep["chunk"]], [reply_edit, forged, edit])
        self.assertGreaterEqual(deep["recursion_depth"], 2)

        # A redacted edit no longer counts; the older valid edit is gone too once redacted.
        self.ok("PUT", f"/rooms/{room}/redact/{edit}/r1", {}, who="ann")
        ev = self.ok("GET", f"/rooms/{room}/event/{root}", who="cat")
        self.assertNotIn("m.replace", ev["unsigned"]["m.relations"])
        self.assertEqual([e["event_id"] for e in self.ok(
            "GET", f"/rooms/{room}/relations/{root}/m.replace", who="cat", version="v1")["chunk"]], [forged])

        # Bad input.
        status, reply = self.call("GET", f"/rooms/{room}/relations/$unknown", who="cat", version="v1")
        self.assertEqual((status, reply["errcode"]), (404, "M_NOT_FOUND"))
        status, reply = self.call("GET", f"/rooms/{room}/relations/{root}?from=x1", who="cat", version="v1")
        self.assertEqual((status, reply["errcode"]), (400, "M_INVALID_PARAM"))
        status, reply = self.call("GET", f"/rooms/{room}/relations/{root}?dir=sideways", who="cat", version="v1")
        self.assertEqual((status, reply["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_thread_list_by_latest_activity_and_participation(self):
        room = await self.shared_room("ben", "cat")
        first = await self.send("ann", room, self.text("first topic"))
        second = await self.send("ben", room, self.text("second topic"))
        await self.send("cat", room, {**self.text("on first"), "m.relates_to": {"rel_type": "m.thread", "event_id": first}})
        await self.send("cat", room, {**self.text("on second"),
                                      "m.relates_to": {"rel_type": "m.thread", "event_id": second}})
        await self.send("ann", room, {**self.text("first again"),
                                      "m.relates_to": {"rel_type": "m.thread", "event_id": first}})
        everything = self.ok("GET", f"/rooms/{room}/threads", who="ben", version="v1")
        self.assertEqual([e["event_id"] for e in everything["chunk"]], [first, second])
        self.assertEqual(everything["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2)
        paged = self.ok("GET", f"/rooms/{room}/threads?limit=1", who="ben", version="v1")
        self.assertEqual([e["event_id"] for e in paged["chunk"]], [first])
        rest = self.ok("GET", f"/rooms/{room}/threads?limit=1&from={paged['next_batch']}", who="ben", version="v1")
        self.assertEqual([e["event_id"] for e in rest["chunk"]], [second])
        # ben started the second thread (participation counts the root); ann only the first.
        self.assertEqual([e["event_id"] for e in self.ok(
            "GET", f"/rooms/{room}/threads?include=participated", who="ben", version="v1")["chunk"]], [second])
        self.assertEqual([e["event_id"] for e in self.ok(
            "GET", f"/rooms/{room}/threads?include=participated", who="ann", version="v1")["chunk"]], [first])
        status, reply = self.call("GET", f"/rooms/{room}/threads?include=some", who="ben", version="v1")
        self.assertEqual((status, reply["errcode"]), (400, "M_INVALID_PARAM"))

        # Threaded read receipts: one per thread, delivered with their thread_id.
        reply = self.ok("GET", f"/rooms/{room}/relations/{first}/m.thread?limit=1", who="ben", version="v1")["chunk"][0]
        since = self.ok("GET", "/sync?timeout=0", who="ann")["next_batch"]
        self.ok("POST", f"/rooms/{room}/receipt/m.read/{reply['event_id']}", {"thread_id": first}, who="ben")
        self.ok("POST", f"/rooms/{room}/receipt/m.read/{second}", {"thread_id": "main"}, who="ben")
        self.ok("POST", f"/rooms/{room}/receipt/m.read/{first}", {"thread_id": first}, who="cat")  # the root is in it
        synced = self.ok("GET", f"/sync?timeout=0&since={since}", who="ann")["rooms"]["join"][room]
        receipts = [e["content"] for e in synced["ephemeral"]["events"] if e["type"] == "m.receipt"][0]
        self.assertEqual(receipts[reply["event_id"]]["m.read"]["@ben:localhost"]["thread_id"], first)
        self.assertEqual(receipts[second]["m.read"]["@ben:localhost"]["thread_id"], "main")
        self.assertEqual(receipts[first]["m.read"]["@cat:localhost"]["thread_id"], first)
        for bad in ({"thread_id": ""}, {"thread_id": 5}, {"thread_id": "not-an-event"},
                    {"thread_id": second}, {"thread_id": "main", "_event": reply["event_id"]}):
            event = bad.pop("_event", first)
            status, answer = self.call("POST", f"/rooms/{room}/receipt/m.read/{event}", bad, who="ben")
            self.assertEqual((status, answer["errcode"]), (400, "M_INVALID_PARAM"), bad)

    # -- search ------------------------------------------------------------------------
    def search(self, who, criteria, next_batch=None, expect=200):
        path = "/search" + (f"?next_batch={next_batch}" if next_batch else "")
        status, reply = self.call("POST", path, {"search_categories": {"room_events": criteria}}, who=who)
        self.assertEqual(status, expect, reply)
        return reply["search_categories"]["room_events"] if expect == 200 else reply

    async def test_search_room_events(self):
        room = await self.shared_room("ben")
        self.ok("PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "Zebra crossings"})
        words = []
        for i in range(5):
            words.append(await self.send("ann" if i % 2 else "ben", room, self.text(f"zebra sighting number {i}")))
        other = await self.send("ann", room, self.text("nothing to see"))
        private = self.ok("POST", "/createRoom", {"preset": "private_chat"}, who="cat")["room_id"]
        await self.send("cat", private, self.text("zebra in cat's private room"))

        found = self.search("ben", {"search_term": "Zebra", "order_by": "recent"})
        self.assertEqual(found["count"], 6)  # five messages and the topic; not cat's room
        self.assertEqual(found["highlights"], ["zebra"])
        self.assertEqual([r["result"]["event_id"] for r in found["results"]][:5], words[::-1])
        self.assertNotIn("next_batch", found)
        bodies = self.search("ben", {"search_term": "zebra", "keys": ["content.body"], "order_by": "recent",
                                     "filter": {"limit": 2}})
        self.assertEqual([r["result"]["event_id"] for r in bodies["results"]], [words[4], words[3]])
        more = self.search("ben", {"search_term": "zebra", "keys": ["content.body"], "order_by": "recent",
                                   "filter": {"limit": 2}}, next_batch=bodies["next_batch"])
        self.assertEqual([r["result"]["event_id"] for r in more["results"]], [words[2], words[1]])
        self.assertEqual(len(self.search("ben", {"search_term": "zebra", "keys": ["content.topic"]})["results"]), 1)
        by_sender = self.search("ben", {"search_term": "zebra", "filter": {"senders": ["@ann:localhost"]}})
        self.assertEqual({r["result"]["sender"] for r in by_sender["results"]}, {"@ann:localhost"})
        self.assertEqual(len(by_sender["results"]), 3)  # words 1 and 3, and ann's topic
        self.assertEqual(self.search("ben", {"search_term": "zebra", "filter": {"not_rooms": [room]}})["results"], [])
        ranked = self.search("ben", {"search_term": "sighting number 3"})
        self.assertEqual([r["result"]["event_id"] for r in ranked["results"]], [words[3]])
        self.assertIsInstance(ranked["results"][0]["rank"], (int, float))

        ctx = self.search("ann", {"search_term": "number 2", "event_context": {
            "before_limit": 1, "after_limit": 1, "include_profile": True}})
        c = ctx["results"][0]["context"]
        self.assertEqual([e["event_id"] for e in c["events_before"]], [words[1]])
        self.assertEqual([e["event_id"] for e in c["events_after"]], [words[3]])
        self.assertIn("@ben:localhost", c["profile_info"])

        # History visibility: in a "joined" room, cat joining later finds only what came after.
        hidden = await self.shared_room()
        self.ok("PUT", f"/rooms/{hidden}/state/m.room.history_visibility/", {"history_visibility": "joined"})
        await self.send("ann", hidden, self.text("zebra before cat joined"))
        self.ok("POST", f"/join/{urllib.parse.quote(hidden)}", {}, who="cat")
        late = await self.send("ann", hidden, self.text("zebra after cat joined"))
        self.assertEqual([r["result"]["event_id"] for r in self.search(
            "cat", {"search_term": "zebra", "filter": {"rooms": [hidden]}})["results"]], [late])
        self.assertEqual(len(self.search("ann", {"search_term": "zebra", "filter": {"rooms": [hidden]}})["results"]), 2)
        self.assertEqual(self.search("ann", {"search_term": "nothing"})["results"][0]["result"]["event_id"], other)

        # Bad input: clear 400s, nothing else.
        for bad in ({"search_term": ""}, {"search_term": "?!"}, {"search_term": "x" * 600},
                    {"search_term": "zebra", "order_by": "oldest"}, {"search_term": "zebra", "keys": ["sender"]}):
            self.assertEqual(self.search("ann", bad, expect=400)["errcode"], "M_INVALID_PARAM", bad)
        for bad in ({}, {"search_term": 5}, {"search_term": "a", "filter": "x"}):
            self.assertEqual(self.search("ann", bad, expect=400)["errcode"], "M_BAD_JSON", bad)
        status, reply = self.call("POST", "/search", "{not json")
        self.assertEqual((status, reply["errcode"]), (400, "M_NOT_JSON"))
        status, reply = self.call("POST", "/search?next_batch=zz", {"search_categories": {
            "room_events": {"search_term": "zebra"}}})
        self.assertEqual((status, reply["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual(self.ok("POST", "/search", {"search_categories": {}}), {"search_categories": {}})

    # -- room upgrades -------------------------------------------------------------------
    async def test_room_upgrade(self):
        room = self.ok("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "upgradable",
                                               "name": "Upgradable", "topic": "old topic",
                                               "room_version": "10"})["room_id"]
        self.ok("PUT", f"/directory/list/room/{room}", {"visibility": "public"})
        self.ok("POST", f"/join/{urllib.parse.quote(room)}", {}, who="ben")
        self.ok("POST", f"/rooms/{room}/ban", {"user_id": "@cat:localhost", "reason": "spam"})
        caps = self.ok("GET", "/capabilities", who="ben")["capabilities"]["m.room_versions"]
        self.assertIn(caps["default"], caps["available"])

        status, reply = self.call("POST", f"/rooms/{room}/upgrade", {"new_version": "11"}, who="ben")
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))  # no power for the tombstone
        status, reply = self.call("POST", f"/rooms/{room}/upgrade", {"new_version": "9"})
        self.assertEqual((status, reply["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"))
        status, reply = self.call("POST", f"/rooms/{room}/upgrade", {})
        self.assertEqual((status, reply["errcode"]), (400, "M_BAD_JSON"))
        status, reply = self.call("POST", f"/rooms/{room}/upgrade", {"new_version": "11"}, who="cat")
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))  # banned: not in the room

        new = self.ok("POST", f"/rooms/{room}/upgrade", {"new_version": "11"})["replacement_room"]
        self.assertNotEqual(new, room)
        tomb = self.ok("GET", f"/rooms/{room}/state/m.room.tombstone/", who="ben")
        self.assertEqual(tomb["replacement_room"], new)
        create = self.ok("GET", f"/rooms/{new}/state/m.room.create/?format=event")
        self.assertEqual(create["content"]["room_version"], "11")
        self.assertEqual(create["content"]["predecessor"]["room_id"], room)
        self.assertEqual(self.ok("GET", f"/rooms/{new}/state/m.room.name/"), {"name": "Upgradable"})
        self.assertEqual(self.ok("GET", f"/rooms/{new}/state/m.room.topic/"), {"topic": "old topic"})
        self.assertEqual(self.ok("GET", f"/rooms/{new}/state/m.room.join_rules/")["join_rule"], "public")
        self.assertEqual(self.ok("GET", f"/rooms/{new}/state/m.room.canonical_alias/")["alias"],
                         "#upgradable:localhost")
        self.assertEqual(self.ok("GET", "/directory/room/%23upgradable:localhost", who="ben")["room_id"], new)
        self.assertEqual(self.ok("GET", f"/directory/list/room/{new}")["visibility"], "public")
        self.assertEqual(self.ok("GET", f"/rooms/{new}/state/m.room.member/@cat:localhost")["membership"], "ban")
        levels = self.ok("GET", f"/rooms/{new}/state/m.room.power_levels/")
        self.assertEqual(levels["users"], {"@ann:localhost": 100})

        # Old room: ordinary members are silenced; the new room takes them (cat stays banned).
        status, reply = self.call("PUT", f"/rooms/{room}/send/m.room.message/t1", self.text("still here?"), who="ben")
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))
        self.ok("POST", f"/join/{urllib.parse.quote(new)}", {}, who="ben")
        await self.send("ben", new, self.text("moved"))
        status, reply = self.call("POST", f"/join/{urllib.parse.quote(new)}", {}, who="cat")
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))
        status, reply = self.call("POST", "/rooms/!nowhere:localhost/upgrade", {"new_version": "11"})
        self.assertEqual(status, 403, reply)  # not a member of an unknown room

    # -- knocking ------------------------------------------------------------------------
    def raw_sync(self, who, since=None):
        return self.ok("GET", "/sync?timeout=0" + (f"&since={since}" if since else ""), who=who)

    async def test_knocking(self):
        room = self.ok("POST", "/createRoom", {"preset": "private_chat", "room_alias_name": "knockable",
                                               "name": "Knock first"})["room_id"]
        self.ok("PUT", f"/rooms/{room}/state/m.room.join_rules/", {"join_rule": "knock"})
        before = self.raw_sync("ben")["next_batch"]
        self.assertEqual(self.ok("POST", f"/knock/{urllib.parse.quote(room)}", {"reason": "let me in"},
                                 who="ben")["room_id"], room)
        knocked = self.raw_sync("ben", before)["rooms"]["knock"][room]["knock_state"]["events"]
        by_type = {e["type"]: e for e in knocked}
        self.assertEqual(by_type["m.room.join_rules"]["content"]["join_rule"], "knock")
        self.assertEqual(by_type["m.room.name"]["content"]["name"], "Knock first")
        self.assertEqual(by_type["m.room.member"]["content"]["membership"], "knock")
        member = self.ok("GET", f"/rooms/{room}/state/m.room.member/@ben:localhost")
        self.assertEqual((member["membership"], member["reason"]), ("knock", "let me in"))
        status, reply = self.call("POST", f"/join/{urllib.parse.quote(room)}", {}, who="ben")
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))  # knocking is not joining

        # Accepted by an invite; then ben joins.
        since = self.raw_sync("ben")["next_batch"]
        self.ok("POST", f"/rooms/{room}/invite", {"user_id": "@ben:localhost"})
        synced = self.raw_sync("ben", since)["rooms"]
        self.assertIn(room, synced["invite"])
        self.assertNotIn(room, synced["knock"])
        self.ok("POST", f"/join/{urllib.parse.quote(room)}", {}, who="ben")
        status, reply = self.call("POST", f"/knock/{urllib.parse.quote(room)}", {}, who="ben")
        self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))  # already joined

        # Rejected by a kick; a new knock is possible, and the knocker may withdraw it.
        self.ok("POST", "/knock/%23knockable:localhost", {}, who="cat")
        self.ok("POST", f"/rooms/{room}/kick", {"user_id": "@cat:localhost", "reason": "not now"})
        self.assertEqual(self.ok("GET", f"/rooms/{room}/state/m.room.member/@cat:localhost")["membership"], "leave")
        self.ok("POST", f"/knock/{urllib.parse.quote(room)}", {}, who="cat")
        self.ok("POST", f"/rooms/{room}/leave", {}, who="cat")
        self.assertEqual(self.ok("GET", f"/rooms/{room}/state/m.room.member/@cat:localhost")["membership"], "leave")

        # knock_restricted (room versions 10 and 11) accepts knocks too.
        restricted = self.ok("POST", "/createRoom", {"preset": "private_chat", "room_version": "10"})["room_id"]
        self.ok("PUT", f"/rooms/{restricted}/state/m.room.join_rules/", {
            "join_rule": "knock_restricted", "allow": [{"type": "m.room_membership", "room_id": room}]})
        self.ok("POST", f"/knock/{urllib.parse.quote(restricted)}", {}, who="cat")

        # Bad input.
        public = self.ok("POST", "/createRoom", {"preset": "public_chat"})["room_id"]
        for closed in (public, self.ok("POST", "/createRoom", {"preset": "private_chat"})["room_id"]):
            status, reply = self.call("POST", f"/knock/{urllib.parse.quote(closed)}", {}, who="cat")
            self.assertEqual((status, reply["errcode"]), (403, "M_FORBIDDEN"))
        status, reply = self.call("POST", "/knock/%23nowhere:localhost", {}, who="cat")
        self.assertEqual((status, reply["errcode"]), (404, "M_NOT_FOUND"))
        status, reply = self.call("POST", f"/knock/{urllib.parse.quote(room)}", {"reason": 5}, who="cat")
        self.assertEqual((status, reply["errcode"]), (400, "M_BAD_JSON"))
        status, reply = self.call("POST", "/knock/nonsense", {}, who="cat")
        self.assertEqual((status, reply["errcode"]), (400, "M_INVALID_PARAM"))


if __name__ == "__main__":
    unittest.main()
