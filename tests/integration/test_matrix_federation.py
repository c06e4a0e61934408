"""Outgoing Matrix federation (first slice): a fake remote homeserver (matrix_fed.py) joins a
public room on hearth over make_join / send_join; local events of that room are then sent to
it over PUT /_matrix/federation/v1/send, signed with X-Matrix (checked by the fake server
with hearth's published key) and as signed PDUs whose content hash and signature verify.
While the remote is down, the events wait in the durable per-destination queue
(matrix_federation_outbox), survive a restart of hearthd and are delivered once the remote
answers again (retries with back-off)."""
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import unittest
import urllib.parse

from harness import Hearth, free_port, wait_until
from matrix_fed import (REMOTE, Server, canonical, content_hash, event_id, federation_request, hearth_verify_key,
                        join_over_federation, redact, serve_remote)
from test_xmpp_federation import make_ca, make_cert

BOB = f"@bob:{REMOTE}"


class FakeRemoteCase(unittest.TestCase):
    """hearth (localhost) with federation on, and the fake remote.test on 127.0.0.2."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hearth-mfed-")
        ca = make_ca(self.tmp)
        cert, key = make_cert(self.tmp, "remote", [REMOTE])
        self.remote = Server()
        self.httpd = serve_remote(self.remote, "127.0.0.2", cert, key)
        port = self.httpd.server_address[1]
        self.h = Hearth(config_extra=(
            "[matrix]\nfederation = true\n"
            f'federation_ca_file = "{ca}"\nfederation_destinations = ["{REMOTE}=127.0.0.2:{port}"]\n'))
        self.h.start()
        self.h.add_users("alice")
        status, body = self.h.matrix_api("POST", "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "alice secret pw"})
        self.assertEqual(status, 200, body)
        self.token = body["access_token"]
        name, vk, self.hearth_key_id = hearth_verify_key(self.h)
        self.hearth_key = vk
        self.remote.peer_key = (name, vk)

    def tearDown(self):
        self.h.stop()
        self.h.cleanup()
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def say(self, room, text, txn):
        status, body = self.h.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/{txn}",
                                         {"msgtype": "m.text", "body": text}, token=self.token)
        self.assertEqual(status, 200, body)
        return body["event_id"]

    def received(self, text):
        with self.remote.lock:
            return [p for p in self.remote.received if p.get("content", {}).get("body") == text]

    def metric(self, name):
        _, _, raw = self.h.request("GET", "/metrics")
        m = re.search(rf"^{name} (\d+)", raw.decode(), re.M)
        return int(m.group(1)) if m else 0


class OutgoingFederation(FakeRemoteCase):
    def test_local_events_reach_the_remote_and_survive_its_outage_and_a_restart(self):
        status, body = self.h.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.token)
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        join_over_federation(self, self.h, self.remote, room, BOB)

        one = self.say(room, "one", "t1")
        pdus = wait_until(lambda: self.received("one"), what="the first message at the remote")
        pdu = pdus[0]
        self.assertEqual(event_id(pdu), one)
        self.assertEqual(pdu["hashes"]["sha256"], base64.b64encode(content_hash(pdu)).decode().rstrip("="))
        signed = redact(pdu)
        sig = signed.pop("signatures")["localhost"][self.hearth_key_id]
        signed.pop("unsigned", None)
        self.hearth_key.verify(canonical(signed), base64.b64decode(sig + "=" * (-len(sig) % 4)))

        # The remote is down: the event waits in the queue, retried with back-off.
        self.remote.accepting = False
        self.say(room, "two", "t2")
        wait_until(lambda: self.metric("hearth_matrix_federation_send_failures_total") >= 1, what="a failed send")
        self.assertEqual(self.received("two"), [])
        self.assertEqual(self.h.stop(), 0)
        self.remote.accepting = True
        self.h.start()
        wait_until(lambda: self.received("two"), timeout=30, what="the queued message after the restart")
        self.say(room, "three", "t3")
        wait_until(lambda: self.received("three"), what="a message after recovery")
        with self.remote.lock:
            bodies = [p["content"].get("body") for p in self.remote.received if p["type"] == "m.room.message"]
        self.assertEqual(bodies.count("two"), 1, bodies)


class ParallelDelivery(unittest.TestCase):
    """Two fake remotes in one room: while remote.test hangs on a transaction (and the
    request timeout is 60 s), remote2.test still gets the event (one transaction in flight
    per destination, destinations in parallel)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hearth-mfed-par-")
        ca = make_ca(self.tmp)
        self.remotes, self.httpds, dests = [], [], []
        for name, host in ((REMOTE, "127.0.0.2"), ("remote2.test", "127.0.0.3")):
            cert, key = make_cert(self.tmp, name.split(".")[0], [name])
            server = Server(name)
            httpd = serve_remote(server, host, cert, key)
            self.remotes.append(server)
            self.httpds.append(httpd)
            dests.append(f'"{name}={host}:{httpd.server_address[1]}"')
        self.h = Hearth(config_extra=(
            "[matrix]\nfederation = true\nfederation_timeout_seconds = 60\n"
            f'federation_ca_file = "{ca}"\nfederation_destinations = [{", ".join(dests)}]\n'))
        self.h.start()
        self.h.add_users("alice")
        status, body = self.h.matrix_api("POST", "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "alice secret pw"})
        self.assertEqual(status, 200, body)
        self.token = body["access_token"]

    def tearDown(self):
        for server in self.remotes:
            if server.gate is not None:
                server.gate.set()
        self.h.stop()
        self.h.cleanup()
        for httpd in self.httpds:
            httpd.shutdown()
            httpd.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_a_hanging_destination_does_not_hold_up_the_others(self):
        status, body = self.h.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.token)
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        for server in self.remotes:
            join_over_federation(self, self.h, server, room, f"@bob:{server.name}")
        hanging, other = self.remotes
        hanging.gate = threading.Event()
        status, body = self.h.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/p1",
                                         {"msgtype": "m.text", "body": "in parallel"}, token=self.token)
        self.assertEqual(status, 200, body)

        def got(server):
            with server.lock:
                return any(p.get("content", {}).get("body") == "in parallel" for p in server.received)
        wait_until(lambda: got(other), timeout=30, what="the event at the destination that answers")
        self.assertFalse(got(hanging))
        hanging.gate.set()
        wait_until(lambda: got(hanging), timeout=30, what="the event at the released destination")


class FederationReads(FakeRemoteCase):
    """What hearth serves about a room to a server in it (get_missing_events, state_ids,
    state, event), and what it refuses: servers not in the room (403), malformed or
    oversized requests (400)."""

    def setUp(self):
        super().setUp()
        status, body = self.h.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.token)
        self.assertEqual(status, 200, body)
        self.room = body["room_id"]
        self.quoted = urllib.parse.quote(self.room)

    def missing(self, body, server=None):
        return federation_request(self.h, server or self.remote, "POST",
                                  f"/_matrix/federation/v1/get_missing_events/{self.quoted}", body)

    def test_a_server_not_in_the_room_is_refused(self):
        ids = [self.say(self.room, f"m{i}", f"t{i}") for i in range(2)]
        status, body = self.missing({"earliest_events": [], "latest_events": [ids[-1]], "limit": 10})
        self.assertEqual(status, 403, body)
        for path in (f"/_matrix/federation/v1/event/{urllib.parse.quote(ids[0])}",
                     f"/_matrix/federation/v1/state_ids/{self.quoted}?event_id={urllib.parse.quote(ids[0])}",
                     f"/_matrix/federation/v1/state/{self.quoted}?event_id={urllib.parse.quote(ids[0])}"):
            status, body = federation_request(self.h, self.remote, "GET", path)
            self.assertEqual(status, 403, (path, body))

    def test_missing_events_are_served_oldest_first_within_the_limits(self):
        join_over_federation(self, self.h, self.remote, self.room, BOB)
        ids = [self.say(self.room, f"m{i}", f"t{i}") for i in range(6)]
        status, body = self.missing({"earliest_events": [ids[0]], "latest_events": [ids[5]], "limit": 10})
        self.assertEqual(status, 200, body)
        self.assertEqual([event_id(e) for e in body["events"]], ids[1:5])
        # limit: the newest ones before latest_events, still oldest first.
        status, body = self.missing({"earliest_events": [ids[0]], "latest_events": [ids[5]], "limit": 2})
        self.assertEqual(status, 200, body)
        self.assertEqual([event_id(e) for e in body["events"]], ids[3:5])
        # min_depth cuts the walk.
        depth = body["events"][0]["depth"]
        status, body = self.missing({"earliest_events": [], "latest_events": [ids[5]], "limit": 50,
                                     "min_depth": depth})
        self.assertEqual(status, 200, body)
        self.assertEqual([event_id(e) for e in body["events"]], ids[3:5])
        # The same event over /event, and the state before it over /state_ids and /state.
        status, body = federation_request(self.h, self.remote, "GET",
                                          f"/_matrix/federation/v1/event/{urllib.parse.quote(ids[2])}")
        self.assertEqual(status, 200, body)
        self.assertEqual(event_id(body["pdus"][0]), ids[2])
        status, ids_body = federation_request(
            self.h, self.remote, "GET",
            f"/_matrix/federation/v1/state_ids/{self.quoted}?event_id={urllib.parse.quote(ids[2])}")
        self.assertEqual(status, 200, ids_body)
        status, full = federation_request(
            self.h, self.remote, "GET",
            f"/_matrix/federation/v1/state/{self.quoted}?event_id={urllib.parse.quote(ids[2])}")
        self.assertEqual(status, 200, full)
        self.assertEqual(sorted(event_id(e) for e in full["pdus"]), sorted(ids_body["pdu_ids"]))
        types = {(e["type"], e.get("state_key")) for e in full["pdus"]}
        self.assertIn(("m.room.member", BOB), types)
        self.assertIn(("m.room.create", ""), types)
        self.assertTrue(set(ids_body["auth_chain_ids"]) <= {event_id(e) for e in full["auth_chain"]} | set())

    def backfill(self, query):
        return federation_request(self.h, self.remote, "GET", f"/_matrix/federation/v1/backfill/{self.quoted}?{query}")

    def test_backfill_serves_the_events_before_and_including_the_given_ones(self):
        ids = [self.say(self.room, f"b{i}", f"t{i}") for i in range(2)]
        status, body = self.backfill(f"v={urllib.parse.quote(ids[1])}&limit=5")
        self.assertEqual(status, 403, body)  # not in the room yet
        join_over_federation(self, self.h, self.remote, self.room, BOB)
        ids = [self.say(self.room, f"m{i}", f"u{i}") for i in range(6)]
        status, body = self.backfill(f"v={urllib.parse.quote(ids[5])}&limit=3")
        self.assertEqual(status, 200, body)
        self.assertEqual([event_id(e) for e in body["pdus"]], [ids[5], ids[4], ids[3]])
        self.assertEqual(body["origin"], "localhost")
        status, body = self.backfill(f"v={urllib.parse.quote(ids[5])}&limit=1000000000")
        self.assertEqual(status, 200, body)
        types = [e["type"] for e in body["pdus"]]
        self.assertEqual(types[-1], "m.room.create")  # down to the start of the room
        for bad in ("limit=3", f"v={urllib.parse.quote(ids[5])}", f"v={urllib.parse.quote(ids[5])}&limit=-1",
                    f"v={urllib.parse.quote(ids[5])}&limit=x"):
            status, body = self.backfill(bad)
            self.assertEqual(status, 400, (bad, body))

    def test_malformed_requests_get_a_clear_error(self):
        join_over_federation(self, self.h, self.remote, self.room, BOB)
        last = self.say(self.room, "x", "t1")
        for bad in ({"earliest_events": [], "latest_events": "not a list"},
                    {"earliest_events": [], "latest_events": []},
                    {"earliest_events": [], "latest_events": [last] * 21},
                    {"earliest_events": [], "latest_events": [last], "limit": "ten"},
                    {"earliest_events": [], "latest_events": [last], "limit": 0},
                    {"earliest_events": [], "latest_events": [last], "min_depth": -1},
                    {"earliest_events": [5], "latest_events": [last]}):
            status, body = self.missing(bad)
            self.assertEqual(status, 400, (bad, body))
            self.assertEqual(body["errcode"], "M_BAD_JSON", bad)
        # An oversized limit is capped, not an error.
        status, body = self.missing({"earliest_events": [], "latest_events": [last], "limit": 10**9})
        self.assertEqual(status, 200, body)
        status, body = federation_request(self.h, self.remote, "GET", f"/_matrix/federation/v1/state_ids/{self.quoted}")
        self.assertEqual(status, 400, body)


class IncomingInvites(FakeRemoteCase):
    """remote.test invites alice (PUT /_matrix/federation/v2/invite): hearth checks the
    invite, signs it and shows it in alice's /sync rooms.invite; bad invites are refused and
    never shown."""

    ROOM = f"!r1:{REMOTE}"

    def invite(self, user="@alice:localhost", sender=BOB, room=ROOM):
        ev = {"type": "m.room.member", "room_id": room, "sender": sender, "state_key": user,
              "content": {"membership": "invite"}, "origin_server_ts": int(time.time() * 1000), "depth": 3,
              "prev_events": ["$prev"], "auth_events": ["$create"]}
        return self.remote.finish_event(ev), ev

    def put(self, eid, ev, version="11", room=ROOM):
        state = [{"type": "m.room.name", "state_key": "", "sender": BOB, "content": {"name": "Far away"}}]
        return federation_request(self.h, self.remote, "PUT",
                                  f"/_matrix/federation/v2/invite/{urllib.parse.quote(room)}/{urllib.parse.quote(eid)}",
                                  {"event": ev, "room_version": version, "invite_room_state": state})

    def invites(self):
        status, body = self.h.matrix_api("GET", "/sync", token=self.token)
        self.assertEqual(status, 200, body)
        return body["rooms"]["invite"]

    def test_a_signed_invite_is_countersigned_and_shown_in_sync(self):
        eid, ev = self.invite()
        status, body = self.put(eid, ev)
        self.assertEqual(status, 200, body)
        back = body["event"]
        self.assertEqual(event_id(back), eid)
        signed = redact(back)
        sig = signed.pop("signatures")["localhost"][self.hearth_key_id]
        self.hearth_key.verify(canonical(signed), base64.b64decode(sig + "=" * (-len(sig) % 4)))
        invite = self.invites()[self.ROOM]["invite_state"]["events"]
        self.assertIn({"type": "m.room.name", "state_key": "", "sender": BOB, "content": {"name": "Far away"}}, invite)
        mine = [e for e in invite if e["type"] == "m.room.member"]
        self.assertEqual(mine[0]["event_id"], eid)
        self.assertEqual(mine[0]["sender"], BOB)

    def test_bad_invites_are_refused_and_not_shown(self):
        eid, ev = self.invite()
        forged = json.loads(json.dumps(ev))
        forged["signatures"][REMOTE]["ed25519:fake1"] = base64.b64encode(b"x" * 64).decode().rstrip("=")
        status, body = self.put(eid, forged)
        self.assertEqual(status, 403, body)
        altered = json.loads(json.dumps(ev))
        altered["content"]["reason"] = "changed after signing"  # content hash no longer matches
        status, body = self.put(event_id(altered), altered)
        self.assertEqual(status, 403, body)
        status, body = self.put(eid, ev, version="1")
        self.assertEqual(status, 400, body)
        self.assertEqual(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION")
        for user, sender in (("@carol:elsewhere.test", BOB), ("@alice:localhost", "@mallory:elsewhere.test")):
            eid2, ev2 = self.invite(user=user, sender=sender)
            status, body = self.put(eid2, ev2)
            self.assertEqual(status, 400, (user, sender, body))
        eid3, ev3 = self.invite(user="@nobody:localhost")
        status, body = self.put(eid3, ev3)
        self.assertEqual(status, 404, body)
        self.assertEqual(self.invites(), {})


class IncomingEdus(FakeRemoteCase):
    """EDUs from remote.test: applied only for its own users who are joined here."""

    def send_edus(self, edus):
        status, body = federation_request(self.h, self.remote, "PUT", f"/_matrix/federation/v1/send/t{time.time_ns()}",
                                          {"origin": REMOTE, "origin_server_ts": 1, "pdus": [], "edus": edus})
        self.assertEqual(status, 200, body)

    def test_edus_for_other_servers_users_or_rooms_they_are_not_in_are_ignored(self):
        status, body = self.h.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.token)
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        join_over_federation(self, self.h, self.remote, room, BOB)
        status, body = self.h.matrix_api("GET", "/sync", token=self.token)
        since = body["next_batch"]
        self.send_edus([
            {"edu_type": "m.typing", "content": {"room_id": room, "user_id": "@eve:elsewhere.test", "typing": True}},
            {"edu_type": "m.typing", "content": {"room_id": room, "user_id": f"@carol:{REMOTE}", "typing": True}},
            {"edu_type": "m.typing", "content": {"room_id": "!nope:localhost", "user_id": BOB, "typing": True}},
            {"edu_type": "m.unknown", "content": {}}])
        self.assertEqual(self.metric("hearth_matrix_federation_edus_ignored_total"), 4)
        self.send_edus([{"edu_type": "m.typing", "content": {"room_id": room, "user_id": BOB, "typing": True}}])
        self.assertEqual(self.metric("hearth_matrix_federation_edus_total"), 1)
        status, body = self.h.matrix_api("GET", f"/sync?since={since}&timeout=0", token=self.token)
        self.assertEqual(status, 200, body)
        typing = [e for e in body["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.typing"]
        self.assertEqual(typing[-1]["content"]["user_ids"], [BOB])


class HearthToHearth(unittest.TestCase):
    """Two hearth instances (a.test on 127.0.0.1, b.test on 127.0.0.2, certificates from a
    test CA): bob of b.test joins a public room of a.test, and messages flow both ways, seen
    by each side's /sync."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hearth-h2h-")
        ca = make_ca(self.tmp)
        cert_a = make_cert(self.tmp, "a", ["a.test"])
        cert_b = make_cert(self.tmp, "b", ["b.test"])
        self.nodes = []
        for attempt in range(5):  # ports are named in advance: another process may take one first
            try:
                self.start_nodes(ca, cert_a, cert_b)
                break
            except AssertionError as e:
                if "Address already in use" not in str(e) or attempt == 4:
                    raise
                for h in self.nodes:
                    h.stop()
                    h.cleanup()
        self.tokens = {}
        for h, name in ((self.a, "alice"), (self.b, "bob")):
            status, body = h.matrix_api("POST", "/login", {
                "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
                "password": f"{name} secret pw"})
            self.assertEqual(status, 200, body)
            self.tokens[name] = body["access_token"]

    def start_nodes(self, ca, cert_a, cert_b):
        pa, pb = free_port("127.0.0.1"), free_port("127.0.0.1", "127.0.0.2")
        ha, hb = free_port("127.0.0.1"), free_port("127.0.0.1", "127.0.0.2")

        def node(domain, cert, http_port, https_port, binds, peer):
            h = Hearth(domain=domain, domain_extra=f'tls_cert = "{cert[0]}"\ntls_key = "{cert[1]}"\n',
                       config_extra=("[matrix]\nfederation = true\n"
                                     f'federation_ca_file = "{ca}"\nfederation_destinations = ["{peer}"]\n'))
            with open(h.config_path) as f:
                text = f.read()
            text = text.replace("[http]\nport = 0\nhttps_port = 0\n",
                                f"[http]\nport = {http_port}\nhttps_port = {https_port}\nbind = {binds}\n")
            with open(h.config_path, "w") as f:
                f.write(text)
            return h
        self.a = node("a.test", cert_a, ha, pa, '["127.0.0.1"]', f"b.test=127.0.0.2:{pb}")
        self.b = node("b.test", cert_b, hb, pb, '["127.0.0.1", "127.0.0.2"]', f"a.test=127.0.0.1:{pa}")
        self.nodes = [self.a, self.b]
        for h, name in ((self.a, "alice"), (self.b, "bob")):
            h.start()
            h.add_users(name)

    def tearDown(self):
        for h in self.nodes:
            h.stop()
            h.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def timeline_bodies(self, h, token, room):
        status, body = h.matrix_api("GET", f"/rooms/{room}/messages?dir=b&limit=50", token=token)
        if status != 200:
            return []
        return [e["content"].get("body") for e in body.get("chunk", []) if e["type"] == "m.room.message"]

    def test_a_user_of_one_server_joins_a_room_on_the_other_and_messages_flow_both_ways(self):
        status, body = self.a.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        status, body = self.b.matrix_api("POST", f"/join/{room}", {}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        status, members = self.a.matrix_api("GET", f"/rooms/{room}/joined_members", token=self.tokens["alice"])
        self.assertEqual(status, 200, members)
        self.assertIn("@bob:b.test", members["joined"])

        status, body = self.a.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/1",
                                         {"msgtype": "m.text", "body": "hello from a"}, token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        wait_until(lambda: "hello from a" in self.timeline_bodies(self.b, self.tokens["bob"], room),
                   what="a's message at b")
        status, body = self.b.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/1",
                                         {"msgtype": "m.text", "body": "hello from b"}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        wait_until(lambda: "hello from b" in self.timeline_bodies(self.a, self.tokens["alice"], room),
                   what="b's message at a")
        self.assert_same_state(room)

    def assert_same_state(self, room):
        sa = self.a.matrix_api("GET", f"/rooms/{room}/state", token=self.tokens["alice"])[1]
        sb = self.b.matrix_api("GET", f"/rooms/{room}/state", token=self.tokens["bob"])[1]
        self.assertEqual(sorted(e["event_id"] for e in sa), sorted(e["event_id"] for e in sb))

    def metric(self, h, name):
        _, _, raw = h.request("GET", "/metrics")
        m = re.search(rf"^{name} (\d+)", raw.decode(), re.M)
        return int(m.group(1)) if m else 0

    def shared_room(self):
        status, body = self.a.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        status, body = self.b.matrix_api("POST", f"/join/{room}", {}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        return room

    def invite_of_bob(self, room):
        def seen():
            status, body = self.b.matrix_api("GET", "/sync", token=self.tokens["bob"])
            return body["rooms"]["invite"].get(room) if status == 200 else None
        return wait_until(seen, what="the invite in bob's /sync")

    def membership_at_a(self, room, user):
        status, body = self.a.matrix_api("GET", f"/rooms/{room}/members", token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        return {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}.get(user)

    def test_a_remote_invite_is_accepted_and_another_rejected(self):
        rooms = []
        for name in ("accepted", "rejected"):
            status, body = self.a.matrix_api("POST", "/createRoom", {"preset": "private_chat", "name": name},
                                             token=self.tokens["alice"])
            self.assertEqual(status, 200, body)
            rooms.append(body["room_id"])
            status, body = self.a.matrix_api("POST", f"/rooms/{rooms[-1]}/invite", {"user_id": "@bob:b.test"},
                                             token=self.tokens["alice"])
            self.assertEqual(status, 200, body)
            self.assertEqual(self.membership_at_a(rooms[-1], "@bob:b.test"), "invite")
        accepted, rejected = rooms
        state = self.invite_of_bob(accepted)["invite_state"]["events"]
        self.assertIn({"type": "m.room.name", "state_key": "", "sender": "@alice:a.test",
                       "content": {"name": "accepted"}}, state)
        self.assertTrue(any(e["type"] == "m.room.member" and e["state_key"] == "@bob:b.test" for e in state))
        # Accept: a private room, joined through the invite.
        status, body = self.b.matrix_api("POST", f"/join/{accepted}", {}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        self.assertEqual(self.membership_at_a(accepted, "@bob:b.test"), "join")
        status, body = self.a.matrix_api("PUT", f"/rooms/{accepted}/send/m.room.message/1",
                                         {"msgtype": "m.text", "body": "welcome"}, token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        wait_until(lambda: "welcome" in self.timeline_bodies(self.b, self.tokens["bob"], accepted),
                   what="a's message at b after the accepted invite")
        # Reject: make_leave / send_leave at a.
        self.invite_of_bob(rejected)
        status, body = self.b.matrix_api("POST", f"/rooms/{rejected}/leave", {}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        self.assertEqual(self.membership_at_a(rejected, "@bob:b.test"), "leave")
        status, body = self.b.matrix_api("GET", "/sync", token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        self.assertNotIn(rejected, body["rooms"]["invite"])
        self.assertNotIn(accepted, body["rooms"]["invite"])
        self.assertIn(accepted, body["rooms"]["join"])

    def ephemeral(self, h, token, room):
        status, body = h.matrix_api("GET", "/sync", token=token)
        if status != 200:
            return []
        return body["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])

    def test_typing_and_read_receipts_are_seen_on_the_other_server(self):
        room = self.shared_room()
        status, body = self.a.matrix_api("PUT", f"/rooms/{room}/typing/@alice:a.test", {"typing": True, "timeout": 30000},
                                         token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        wait_until(lambda: any(e["type"] == "m.typing" and "@alice:a.test" in e["content"]["user_ids"]
                               for e in self.ephemeral(self.b, self.tokens["bob"], room)), what="alice typing at b")
        status, body = self.b.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/r1",
                                         {"msgtype": "m.text", "body": "read me"}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        event = body["event_id"]
        wait_until(lambda: "read me" in self.timeline_bodies(self.a, self.tokens["alice"], room), what="b's message at a")
        status, body = self.a.matrix_api("POST", f"/rooms/{room}/receipt/m.read/{event}", {}, token=self.tokens["alice"])
        self.assertEqual(status, 200, body)

        def receipt_at_b():
            for e in self.ephemeral(self.b, self.tokens["bob"], room):
                if e["type"] == "m.receipt" and "@alice:a.test" in e["content"].get(event, {}).get("m.read", {}):
                    return True
            return False
        wait_until(receipt_at_b, what="alice's read receipt at b")
        status, body = self.a.matrix_api("PUT", f"/rooms/{room}/typing/@alice:a.test", {"typing": False},
                                         token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        wait_until(lambda: any(e["type"] == "m.typing" and e["content"]["user_ids"] == []
                               for e in self.ephemeral(self.b, self.tokens["bob"], room)), what="alice stopped typing")

    def test_two_nio_users_on_two_servers_share_an_encrypted_room(self):
        """The headline: matrix-nio (libolm) on each server. Keys are queried and claimed over
        federation (/user/keys/query, /user/keys/claim), the Megolm room keys travel as Olm
        to-device messages in m.direct_to_device EDUs, and each side decrypts the other."""
        asyncio.run(self.encrypted_room())

    async def encrypted_room(self):
        from nio import (AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse, MegolmEvent,
                         RoomMessageText, RoomSendResponse, SyncResponse)
        stores = tempfile.mkdtemp(dir=self.tmp)
        clients = []

        async def client(h, name, domain):
            c = AsyncClient(f"http://127.0.0.1:{h.http_port}", f"@{name}:{domain}", store_path=stores,
                            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False))
            clients.append(c)
            r = await c.login(f"{name} secret pw", device_name=f"{name}'s laptop")
            self.assertIsInstance(r, LoginResponse, r)
            return c

        async def sync(c, timeout=0):
            r = await asyncio.wait_for(c.sync(timeout=timeout), 30)
            self.assertIsInstance(r, SyncResponse, r)
            if c.should_upload_keys:
                await c.keys_upload()
            if c.should_query_keys:
                await c.keys_query()
            return r

        async def sync_until(c, done, what, timeout=60):
            """Long-polling syncs until done(response) holds, with a deadline."""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                r = await sync(c, timeout=1000)
                if done(r):
                    return r
                self.assertLess(loop.time(), deadline, f"timed out waiting for {what}")

        try:
            alice = await client(self.a, "alice", "a.test")
            bob = await client(self.b, "bob", "b.test")
            await sync(alice)
            await sync(bob)
            created = await alice.room_create(
                name="Secrets", initial_state=[{"type": "m.room.encryption", "state_key": "",
                                                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
            room = created.room_id
            invited = await alice.room_invite(room, "@bob:b.test")
            self.assertFalse(getattr(invited, "status_code", None), invited)
            await sync_until(bob, lambda r: room in r.rooms.invite, "the invite at b")
            joined = await bob.join(room)
            self.assertIsInstance(joined, JoinResponse, joined)
            await sync(bob)
            await sync_until(alice, lambda r: bob.device_id in alice.device_store["@bob:b.test"],
                             "bob's device keys at alice (keys/query over federation)")
            await sync_until(bob, lambda r: alice.device_id in bob.device_store["@alice:a.test"],
                             "alice's device keys at bob")

            def texts(r, c):
                events = r.rooms.join.get(room).timeline.events if room in r.rooms.join else []
                self.assertEqual([e for e in events if isinstance(e, MegolmEvent)], [], "undecryptable event")
                return [e for e in events if isinstance(e, RoomMessageText)]

            sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "across the border"},
                                         ignore_unverified_devices=True)
            self.assertIsInstance(sent, RoomSendResponse, sent)
            got = []
            await sync_until(bob, lambda r: got.extend(texts(r, bob)) or any(t.body == "across the border" for t in got),
                             "alice's encrypted message decrypted at b")
            self.assertTrue([t for t in got if t.body == "across the border"][0].decrypted)
            self.assertGreaterEqual(self.metric(self.b, "hearth_matrix_federation_edus_total"), 1)

            sent = await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "and back"},
                                       ignore_unverified_devices=True)
            self.assertIsInstance(sent, RoomSendResponse, sent)
            got = []
            await sync_until(alice, lambda r: got.extend(texts(r, alice)) or any(t.body == "and back" for t in got),
                             "bob's encrypted message decrypted at a")
            self.assertTrue([t for t in got if t.body == "and back"][0].decrypted)
            self.assertEqual([t for t in got if t.body == "and back"][0].sender, "@bob:b.test")
        finally:
            for c in clients:
                await c.close()

    def test_history_from_before_the_join_is_backfilled_for_messages(self):
        status, body = self.a.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=self.tokens["alice"])
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        before = [f"before {i}" for i in range(4)]
        for i, text in enumerate(before):
            status, body = self.a.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/h{i}",
                                             {"msgtype": "m.text", "body": text}, token=self.tokens["alice"])
            self.assertEqual(status, 200, body)
        status, body = self.b.matrix_api("POST", f"/join/{room}", {}, token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        self.assertEqual(self.metric(self.b, "hearth_matrix_federation_backfilled_events_total"), 0)
        # Page by page (limit 3) down to the start: the history b never received comes from a.
        seen, token = [], None
        for _ in range(20):
            path = f"/rooms/{room}/messages?dir=b&limit=3" + (f"&from={token}" if token else "")
            status, body = self.b.matrix_api("GET", path, token=self.tokens["bob"])
            self.assertEqual(status, 200, body)
            seen += body["chunk"]
            token = body.get("end")
            if not body["chunk"] or not token:
                break
        texts = [e["content"].get("body") for e in seen if e["type"] == "m.room.message"]
        self.assertEqual(texts, before[::-1])
        self.assertIn("m.room.create", [e["type"] for e in seen])
        self.assertGreaterEqual(self.metric(self.b, "hearth_matrix_federation_backfilled_events_total"), 4)
        # Backfilled history stays out of /sync and out of the room's current state.
        status, body = self.b.matrix_api("GET", "/sync", token=self.tokens["bob"])
        self.assertEqual(status, 200, body)
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        self.assertFalse([e for e in timeline if e["content"].get("body", "").startswith("before")])
        self.assert_same_state(room)

    def test_a_gap_left_by_an_outage_is_filled_with_missing_events(self):
        room = self.shared_room()
        self.assertEqual(self.b.stop(), 0)
        for i in range(5):
            status, body = self.a.matrix_api("PUT", f"/rooms/{room}/send/m.room.message/gap{i}",
                                             {"msgtype": "m.text", "body": f"gap {i}"}, token=self.tokens["alice"])
            self.assertEqual(status, 200, body)
        wait_until(lambda: self.metric(self.a, "hearth_matrix_federation_send_failures_total") >= 1,
                   what="a failed send to b")
        self.b.start()
        wanted = [f"gap {i}" for i in range(5)]
        # After the outage a sends only the newest event (catch-up); b fetches the rest.
        wait_until(lambda: [x for x in self.timeline_bodies(self.b, self.tokens["bob"], room) if x in wanted]
                   == wanted[::-1], timeout=60, what="all five messages at b, in order")
        self.assertGreaterEqual(self.metric(self.a, "hearth_matrix_federation_catch_up_skipped_total"), 1)
        self.assertGreaterEqual(self.metric(self.b, "hearth_matrix_federation_missing_events_fetched_total"), 1)
        self.assert_same_state(room)


if __name__ == "__main__":
    unittest.main()
