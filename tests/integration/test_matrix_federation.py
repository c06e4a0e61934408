"""Outgoing Matrix federation (first slice): a fake remote homeserver (matrix_fed.py) joins a
public room on hearth over make_join / send_join; local events of that room are then sent to
it over PUT /_matrix/federation/v1/send, signed with X-Matrix (checked by the fake server
with hearth's published key) and as signed PDUs whose content hash and signature verify.
While the remote is down, the events wait in the durable per-destination queue
(matrix_federation_outbox), survive a restart of hearthd and are delivered once the remote
answers again (retries with back-off)."""
import base64
import hashlib
import os
import re
import shutil
import tempfile
import unittest

from harness import Hearth, free_port, wait_until
from matrix_fed import (REMOTE, Server, canonical, content_hash, event_id, hearth_verify_key,
                        join_over_federation, redact, serve_remote)
from test_xmpp_federation import make_ca, make_cert

BOB = f"@bob:{REMOTE}"


class OutgoingFederation(unittest.TestCase):
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
        # Both sides agree on the room's state.
        sa = self.a.matrix_api("GET", f"/rooms/{room}/state", token=self.tokens["alice"])[1]
        sb = self.b.matrix_api("GET", f"/rooms/{room}/state", token=self.tokens["bob"])[1]
        self.assertEqual(sorted(e["event_id"] for e in sa), sorted(e["event_id"] for e in sb))


if __name__ == "__main__":
    unittest.main()
