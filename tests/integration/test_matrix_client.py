"""The Matrix client-server API driven by a real client library (matrix-nio, Debian's
python3-matrix-nio): two people register with invitation tokens (UIA with
m.login.registration_token), log in, one creates a room and invites the other, who joins;
they exchange messages that /sync delivers (a waiting long-poll is woken by the new event),
history comes back through /messages, and all of it survives a restart of hearthd."""
import asyncio
import json
import os
import re
import unittest

from nio import (AsyncClient, JoinResponse, LoginResponse, MessageDirection, RoomCreateResponse,
                 RoomMessageText, RoomMessagesResponse, RoomSendResponse, SyncResponse)

from harness import Hearth

TIMEOUT = 20


class Matrix(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def setUp(self):
        self.clients = []

    async def asyncTearDown(self):
        for c in self.clients:
            await c.close()

    # -- helpers ---------------------------------------------------------------------
    def base(self):
        return f"http://127.0.0.1:{self.h.http_port}"

    def api(self, method, path, body=None, token=None):
        return self.h.matrix_api(method, path, body, token)

    def invite(self):
        r = self.h.ctl("invite", "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        return re.search(r"token: (\S+)", r.stdout).group(1)

    def register(self, name, password, token):
        """The two UIA round trips a client makes: ask for the flows, then answer the stage."""
        status, body = self.api("POST", "/register", {"username": name, "password": password})
        self.assertEqual(status, 401, body)
        self.assertIn(["m.login.registration_token"], [f["stages"] for f in body["flows"]])
        session = body["session"]
        status, body = self.api("POST", "/register", {
            "username": name, "password": password,
            "auth": {"type": "m.login.registration_token", "token": token, "session": session}})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["user_id"], f"@{name}:localhost")
        return body

    async def login(self, name, password):
        c = AsyncClient(self.base(), f"@{name}:localhost")
        self.clients.append(c)
        r = await c.login(password, device_name=f"{name}'s test device")
        self.assertIsInstance(r, LoginResponse, r)
        return c

    async def sync(self, c, timeout=0):
        r = await asyncio.wait_for(c.sync(timeout=timeout), TIMEOUT)
        self.assertIsInstance(r, SyncResponse, r)
        return r

    async def parked_syncs(self, n):
        """Waits (deadline TIMEOUT) until hearthd reports n parked /sync requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            _, _, raw = await loop.run_in_executor(None, self.h.request, "GET", "/metrics")
            m = re.search(r"^hearth_matrix_sync_waiting (\S+)$", raw.decode(), re.M)
            if m and float(m.group(1)) == n:
                return
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {n} parked syncs")
            await asyncio.sleep(0.02)

    # -- tests -----------------------------------------------------------------------
    async def test_two_people_chat_and_history_survives_restart(self):
        self.register("alice", "alice's password", self.invite())
        self.register("bob", "bob's password", self.invite())
        alice = await self.login("alice", "alice's password")
        bob = await self.login("bob", "bob's password")

        created = await alice.room_create(name="Kitchen", topic="what's for dinner", invite=["@bob:localhost"])
        self.assertIsInstance(created, RoomCreateResponse, created)
        room_id = created.room_id

        # Bob sees the invitation in his first sync and joins.
        await self.sync(bob)
        self.assertIn(room_id, bob.invited_rooms)
        joined = await bob.join(room_id)
        self.assertIsInstance(joined, JoinResponse, joined)
        await self.sync(bob)
        self.assertIn(room_id, bob.rooms)
        self.assertEqual(bob.rooms[room_id].name, "Kitchen")

        # Bob waits (long-poll); Alice's message wakes his sync well before its timeout.
        await self.sync(alice)
        self.assertIn("@bob:localhost", alice.rooms[room_id].users)
        waiting = asyncio.ensure_future(bob.sync(timeout=15000))
        await self.parked_syncs(1)  # Bob's sync is waiting on the server before Alice sends
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "soup?"})
        self.assertIsInstance(sent, RoomSendResponse, sent)
        r = await asyncio.wait_for(waiting, TIMEOUT)
        self.assertIsInstance(r, SyncResponse, r)
        bodies = [e.body for e in r.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)]
        self.assertIn("soup?", bodies)

        reply = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "soup!"})
        self.assertIsInstance(reply, RoomSendResponse, reply)
        r = await self.sync(alice, timeout=5000)
        self.assertIn("soup!", [e.body for e in r.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)])

        history = await alice.room_messages(room_id, start=alice.next_batch, direction=MessageDirection.back, limit=50)
        self.assertIsInstance(history, RoomMessagesResponse, history)
        texts = [e.body for e in history.chunk if isinstance(e, RoomMessageText)]
        self.assertEqual(texts, ["soup!", "soup?"])  # newest first
        since = alice.next_batch

        # Restart: the room, the history, the tokens and the sync position are still there.
        self.h.stop()
        self.h.start()
        again = AsyncClient(self.base(), "@alice:localhost")
        self.clients.append(again)
        again.restore_login("@alice:localhost", alice.device_id, alice.access_token)
        status, me = self.api("GET", "/account/whoami", token=alice.access_token)
        self.assertEqual((status, me["user_id"]), (200, "@alice:localhost"))
        r = await self.sync(again)  # initial sync after the restart
        self.assertEqual(again.rooms[room_id].topic, "what's for dinner")
        self.assertIn("soup!", [e.body for e in r.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)])
        r = await asyncio.wait_for(again.sync(timeout=0, since=since), TIMEOUT)
        self.assertIsInstance(r, SyncResponse, r)
        self.assertNotIn(room_id, r.rooms.join)  # nothing new since the token
        history = await again.room_messages(room_id, start=since, direction=MessageDirection.back, limit=50)
        self.assertEqual([e.body for e in history.chunk if isinstance(e, RoomMessageText)], ["soup!", "soup?"])
        # And a message sent now reaches Bob's old position.
        await again.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "after restart"})
        bob2 = AsyncClient(self.base(), "@bob:localhost")
        self.clients.append(bob2)
        bob2.restore_login("@bob:localhost", bob.device_id, bob.access_token)
        r = await asyncio.wait_for(bob2.sync(timeout=5000, since=bob.next_batch), TIMEOUT)
        self.assertIn("after restart",
                      [e.body for e in r.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)])

    async def test_registration_needs_a_valid_unused_token(self):
        token = self.invite()
        self.register("carol", "carol's password", token)
        # The invitation was consumed.
        status, body = self.api("POST", "/register", {
            "username": "dave", "password": "x", "auth": {"type": "m.login.registration_token", "token": token}})
        self.assertEqual(status, 401, body)
        self.assertEqual(body["errcode"], "M_FORBIDDEN")
        self.assertIn("session", body)
        # m.login.dummy is not offered on an invitation-only domain.
        status, body = self.api("POST", "/register", {"username": "dave", "password": "x", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(status, 401, body)
        status, body = self.api("POST", "/register", {"username": "carol", "password": "x"})
        self.assertEqual((status, body["errcode"]), (400, "M_USER_IN_USE"))
        status, body = self.api("POST", "/register", {"username": "Not Valid", "password": "x"})
        self.assertEqual((status, body["errcode"]), (400, "M_INVALID_USERNAME"))
        status, body = self.api("GET", "/register/m.login.registration_token/validity?token=" + self.invite())
        self.assertEqual((status, body), (200, {"valid": True}))

    async def test_errors_follow_the_spec(self):
        self.register("erin", "erin's password", self.invite())
        status, body = self.api("POST", "/login", {"type": "m.login.password",
                                                   "identifier": {"type": "m.id.user", "user": "erin"}, "password": "wrong"})
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        status, body = self.api("POST", "/login", b'{"type": "m.login.password",')
        self.assertEqual((status, body["errcode"]), (400, "M_NOT_JSON"))
        status, body = self.api("POST", "/login", b'{"type": "a", "type": "b"}')
        self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"))
        status, body = self.api("GET", "/account/whoami")
        self.assertEqual((status, body["errcode"]), (401, "M_MISSING_TOKEN"))
        status, body = self.api("GET", "/account/whoami", token="not-a-token")
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        status, body = self.api("GET", "/no/such/endpoint", token="x")
        self.assertEqual((status, body["errcode"]), (404, "M_UNRECOGNIZED"))
        status, login = self.api("POST", "/login", {"type": "m.login.password", "user": "@erin:localhost",
                                                    "password": "erin's password"})
        self.assertEqual(status, 200, login)
        token = login["access_token"]
        status, body = self.api("POST", "/createRoom", {"room_version": "1"}, token=token)
        self.assertEqual((status, body["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"))
        status, room = self.api("POST", "/createRoom", {"preset": "private_chat"}, token=token)
        self.assertEqual(status, 200, room)
        status, body = self.api("PUT", f"/rooms/{room['room_id']}/send/m.room.message/t1", {"body": 1.5}, token=token)
        self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"))
        # Size limits: a PDU over 65,536 bytes, a state key over 255 bytes.
        status, body = self.api("PUT", f"/rooms/{room['room_id']}/send/m.room.message/big", {"body": "x" * 65400},
                                token=token)
        self.assertEqual((status, body["errcode"]), (413, "M_TOO_LARGE"))
        status, body = self.api("PUT", f"/rooms/{room['room_id']}/state/org.example/{'k' * 300}", {}, token=token)
        self.assertEqual((status, body["errcode"]), (400, "M_INVALID_PARAM"))
        # The same transaction id gives the same event.
        _, first = self.api("PUT", f"/rooms/{room['room_id']}/send/m.room.message/t2", {"body": "x"}, token=token)
        _, second = self.api("PUT", f"/rooms/{room['room_id']}/send/m.room.message/t2", {"body": "x"}, token=token)
        self.assertEqual(first["event_id"], second["event_id"])
        # Logging out invalidates the token.
        status, _ = self.api("POST", "/logout", {}, token=token)
        self.assertEqual(status, 200)
        status, body = self.api("GET", "/account/whoami", token=token)
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    async def test_failed_logins_are_throttled(self):
        self.register("frank", "frank's password", self.invite())
        wrong = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}, "password": "no"}
        for _ in range(5):
            status, body = self.api("POST", "/login", wrong)
            self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))
        # Even the right password is refused until the window passes.
        right = dict(wrong, password="frank's password")
        status, body = self.api("POST", "/login", right)
        self.assertEqual((status, body["errcode"]), (429, "M_LIMIT_EXCEEDED"), body)
        self.assertGreater(body["retry_after_ms"], 0)
        # Other users are not affected.
        self.register("gina", "gina's password", self.invite())
        status, body = self.api("POST", "/login", {"type": "m.login.password", "user": "gina",
                                                   "password": "gina's password"})
        self.assertEqual(status, 200, body)

    async def test_discovery(self):
        status, _, raw = self.h.request("GET", "/_matrix/client/versions")
        self.assertEqual(status, 200)
        self.assertIn("v1.1", json.loads(raw)["versions"])
        status, _, raw = self.h.request("GET", "/.well-known/matrix/client")
        self.assertEqual(status, 200)
        self.assertTrue(json.loads(raw)["m.homeserver"]["base_url"].startswith("http"))
        status, body = self.api("GET", "/login")
        self.assertEqual(body, {"flows": [{"type": "m.login.password"}, {"type": "m.login.token", "get_login_token": True}]})
        # Not served yet, but answered in Matrix's error format.
        for path in ("/_matrix/media/v3/unknown", "/_matrix/federation/v1/version", "/_matrix/client/unstable/x"):
            status, _, raw = self.h.request("GET", path)
            self.assertEqual((status, json.loads(raw)["errcode"]), (404, "M_UNRECOGNIZED"), path)

    def test_server_key_is_published_and_self_signed(self):
        """The key in <data>/matrix/signing.key, as other servers will fetch it: its
        signature over the canonical JSON (without "signatures") verifies, and the key
        file survives a restart unchanged."""
        import base64
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        def b64(s):
            return base64.b64decode(s + "=" * (-len(s) % 4))

        status, _, raw = self.h.request("GET", "/_matrix/key/v2/server")
        self.assertEqual(status, 200)
        doc = json.loads(raw)
        self.assertEqual(doc["server_name"], "localhost")
        (key_id, key), = doc["verify_keys"].items()
        self.assertTrue(key_id.startswith("ed25519:"))
        signed = {k: v for k, v in doc.items() if k not in ("signatures", "unsigned")}
        canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        Ed25519PublicKey.from_public_bytes(b64(key["key"])).verify(b64(doc["signatures"]["localhost"][key_id]), canonical)
        with open(os.path.join(self.h.data_dir, "matrix", "signing.key")) as f:
            self.assertEqual(f.read().split()[:2], ["ed25519", key_id.split(":")[1]])
        self.assertEqual(os.stat(os.path.join(self.h.data_dir, "matrix", "signing.key")).st_mode & 0o777, 0o600)


if __name__ == "__main__":
    unittest.main()
