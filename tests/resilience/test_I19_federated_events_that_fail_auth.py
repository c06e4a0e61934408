"""Incident I19 — room state was reset when an event that failed authorization arrived over
federation. A fake remote homeserver (remote.test, written here: ed25519 keys with
python3-nacl, canonical JSON, content and reference hashes, X-Matrix request signatures)
serves its key over HTTPS with a test CA, joins a public room on hearth through make_join /
send_join, then sends PDUs over /send:

  (a) a valid message: a local matrix-nio client sees it in /sync;
  (b) m.room.power_levels and m.room.join_rules changes by the remote user, who lacks the
      power: rejected, GET /rooms/{id}/state unchanged;
  (d) a forged event (bad signature) is not applied; one whose content hash does not
      match arrives redacted (its content never reaches clients);
  (c) after a local ban of the remote user, a message and a member event citing the old
      membership (valid against their auth events and the state before them): soft-failed,
      not in the state and never delivered to the nio client.

HEARTH_DEFENCE_OFF=1 runs hearthd with matrix.federation_insecure_skip_checks_for_tests =
true (a test-only switch: incoming PDUs are applied without checks), and the test fails."""
import asyncio
import copy
import json
import os
import shutil
import sys
import tempfile
import time
import unittest
import urllib.parse

from nio import AsyncClient, LoginResponse, SyncResponse

from resilience import DEFENCE_OFF, Hearth, with_section

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from matrix_fed import REMOTE, Server, event_id, serve_remote  # noqa: E402
from test_xmpp_federation import make_ca, make_cert  # noqa: E402

BOB = f"@bob:{REMOTE}"
TIMEOUT = 20



class FederatedEventsThatFailAuth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hearth-i19-")
        ca = make_ca(cls.tmp)
        cert, key = make_cert(cls.tmp, "remote", [REMOTE])
        cls.remote = Server()
        cls.httpd = serve_remote(cls.remote, "127.0.0.2", cert, key)
        port = cls.httpd.server_address[1]
        cls.h = Hearth()
        with_section(cls.h, "matrix", (
            f'federation = true\nfederation_ca_file = "{ca}"\n'
            f'federation_destinations = ["{REMOTE}=127.0.0.2:{port}"]\n'
            f'federation_insecure_skip_checks_for_tests = {"true" if DEFENCE_OFF else "false"}\n'))
        cls.h.start()
        cls.h.add_users("alice")
        status, body = cls.h.matrix_api("POST", "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "alice secret pw"})
        assert status == 200, body
        cls.token = body["access_token"]

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()
        cls.httpd.shutdown()
        cls.httpd.server_close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------
    def client(self, method, path, body=None):
        return self.h.matrix_api(method, path, body, token=self.token)

    def federation(self, method, path, body=None, signer=None):
        signer = signer or self.remote
        headers = {"Authorization": signer.x_matrix(method, path, "localhost", body)}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        status, _, raw = self.h.request(method, path, body=data, headers=headers)
        return status, json.loads(raw) if raw else None

    def state(self, room):
        status, body = self.client("GET", f"/rooms/{urllib.parse.quote(room)}/state")
        self.assertEqual(status, 200, body)
        for e in body:
            e.get("unsigned", {}).pop("age", None)  # the only part that changes with time
        return sorted(body, key=lambda e: (e["type"], e["state_key"]))

    def state_ids(self, room):
        return {(e["type"], e["state_key"]): e["event_id"] for e in self.state(room)}

    def pdu(self, room, etype, content, prev, auth, state_key=None, sender=BOB):
        e = {"type": etype, "room_id": room, "sender": sender, "content": content, "depth": 100,
             "origin_server_ts": int(time.time() * 1000), "prev_events": prev, "auth_events": auth}
        if state_key is not None:
            e["state_key"] = state_key
        return e

    def send(self, *pdus):
        txn = f"t{time.monotonic_ns()}"
        status, body = self.federation("PUT", f"/_matrix/federation/v1/send/{txn}",
                                       {"origin": REMOTE, "origin_server_ts": int(time.time() * 1000),
                                        "pdus": list(pdus)})
        self.assertEqual(status, 200, body)
        return body["pdus"]

    async def nio_until(self, c, room, predicate, what):
        """Syncs until predicate(list of timeline event sources) holds (deadline TIMEOUT)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            r = await asyncio.wait_for(c.sync(timeout=1000), TIMEOUT)
            self.assertIsInstance(r, SyncResponse, r)
            joined = r.rooms.join.get(room)
            if joined:
                self.seen.extend(e.source for e in joined.timeline.events)
            if predicate(self.seen):
                return
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")

    # -- the test ------------------------------------------------------------------------
    def test_events_that_fail_auth_never_change_state(self):
        asyncio.run(self.scenario())

    async def scenario(self):
        status, body = self.client("POST", "/createRoom", {"preset": "public_chat", "name": "I19"})
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        quoted = urllib.parse.quote(room)
        nio = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", "@alice:localhost")
        self.seen = []
        try:
            r = await nio.login("alice secret pw", device_name="I19 observer")
            self.assertIsInstance(r, LoginResponse, r)
            await nio.sync(timeout=0)

            # The remote user joins through make_join / send_join.
            status, body = self.federation(
                "GET", f"/_matrix/federation/v1/make_join/{quoted}/{urllib.parse.quote(BOB)}?ver=10&ver=11")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["room_version"], "11")
            join = body["event"]
            join["origin_server_ts"] = int(time.time() * 1000)
            join_id = self.remote.finish_event(join)
            status, body = self.federation("PUT", f"/_matrix/federation/v2/send_join/{quoted}/{join_id}", join)
            self.assertEqual(status, 200, body)
            self.assertTrue(any(e["type"] == "m.room.create" for e in body["state"]), body)
            ids = self.state_ids(room)
            self.assertEqual(ids[("m.room.member", BOB)], join_id)
            auth = [ids[("m.room.create", "")], ids[("m.room.power_levels", "")], join_id]

            # (a) A valid message reaches the local client.
            msg = self.pdu(room, "m.room.message", {"msgtype": "m.text", "body": "hello from remote"}, [join_id], auth)
            msg_id = self.remote.finish_event(msg)
            self.assertEqual(self.send(msg), {msg_id: {}})
            await self.nio_until(nio, room, lambda seen: any(e["event_id"] == msg_id for e in seen), "the message")

            # (b) State changes the remote user has no power for: rejected, state unchanged.
            before = self.state(room)
            pl = next(e for e in before if e["type"] == "m.room.power_levels")["content"]
            pl = copy.deepcopy(pl)
            pl["users"][BOB] = 100
            grab = self.pdu(room, "m.room.power_levels", pl, [msg_id], auth, state_key="")
            grab_id = self.remote.finish_event(grab)
            close = self.pdu(room, "m.room.join_rules", {"join_rule": "invite"}, [msg_id],
                             auth, state_key="")
            close_id = self.remote.finish_event(close)
            result = self.send(grab, close)
            self.assertEqual(self.state(room), before, "the state changed")
            self.assertIn("error", result.get(grab_id, {}), result)
            self.assertIn("error", result.get(close_id, {}), result)

            # (d) Forgeries: a bad signature is dropped; a bad content hash arrives redacted.
            mallory = Server()  # same server name, another key
            forged = self.pdu(room, "m.room.topic", {"topic": "forged"}, [msg_id], auth, state_key="")
            forged_id = mallory.finish_event(forged)
            tampered = self.pdu(room, "m.room.message", {"msgtype": "m.text", "body": "original"}, [msg_id], auth)
            self.remote.finish_event(tampered)
            tampered["content"]["body"] = "tampered after signing"
            tampered_id = event_id(tampered)
            result = self.send(forged, tampered)
            self.assertIn("error", result.get(forged_id, {}), result)
            self.assertEqual(self.state(room), before)

            # An accepted state event from a fork (its prev event predates a local topic
            # change): state resolution merges it; the newer topic is not reset.
            status, body = self.client("PUT", f"/rooms/{quoted}/state/m.room.topic/", {"topic": "local topic"})
            self.assertEqual(status, 200, body)
            topic_id = body["event_id"]
            rename = self.pdu(room, "m.room.member", {"membership": "join", "displayname": "Bob"}, [msg_id],
                              [ids[("m.room.create", "")], ids[("m.room.power_levels", "")], join_id,
                               ids[("m.room.join_rules", "")]], state_key=BOB)
            rename_id = self.remote.finish_event(rename)
            self.assertEqual(self.send(rename), {rename_id: {}})
            merged = self.state_ids(room)
            self.assertEqual(merged[("m.room.topic", "")], topic_id, "the fork reset the topic")
            self.assertEqual(merged[("m.room.member", BOB)], rename_id)
            join_id = rename_id
            ids = merged

            # (c) Banned locally, the remote user's server keeps citing the old membership.
            status, body = self.client("POST", f"/rooms/{quoted}/ban", {"user_id": BOB, "reason": "I19"})
            self.assertEqual(status, 200, body)
            banned_state = self.state(room)
            late = self.pdu(room, "m.room.message", {"msgtype": "m.text", "body": "sent while banned"}, [msg_id], auth)
            late_id = self.remote.finish_event(late)
            rejoin = self.pdu(room, "m.room.member", {"membership": "join", "displayname": "bob again"}, [msg_id],
                              [ids[("m.room.create", "")], ids[("m.room.power_levels", "")], join_id,
                               ids[("m.room.join_rules", "")]], state_key=BOB)
            rejoin_id = self.remote.finish_event(rejoin)
            self.send(late, rejoin)
            self.assertEqual(self.state(room), banned_state)
            self.assertEqual(self.state_ids(room)[("m.room.member", BOB)],
                             next(e["event_id"] for e in banned_state
                                  if e["type"] == "m.room.member" and e["state_key"] == BOB))
            status, body = self.client("PUT", f"/rooms/{quoted}/send/m.room.message/marker",
                                       {"msgtype": "m.text", "body": "marker"})
            self.assertEqual(status, 200, body)
            marker = body["event_id"]
            await self.nio_until(nio, room, lambda seen: any(e["event_id"] == marker for e in seen), "the marker")
            seen_ids = {e["event_id"] for e in self.seen}
            self.assertNotIn(late_id, seen_ids)
            self.assertNotIn(rejoin_id, seen_ids)
            self.assertNotIn(forged_id, seen_ids)
            self.assertNotIn(grab_id, seen_ids)
            for e in self.seen:
                self.assertNotEqual(e.get("content", {}).get("body"), "tampered after signing", e)
            self.assertIn(tampered_id, seen_ids)  # processed, but redacted
        finally:
            await nio.close()


if __name__ == "__main__":
    unittest.main()
