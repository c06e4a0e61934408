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


if __name__ == "__main__":
    unittest.main()
