"""Incident I15 — one event made several hundred clients re-fetch a large room's full state
at once. hearth renders a room's full state (GET /rooms/{id}/state, and the room state of
initial syncs) once per room version and serves every identical request from that one
rendering: a herd of simultaneous
requests from several users costs one computation
(hearth_matrix_full_state_computed_total goes up by one) while every request gets the
complete, correct state; a change to the room makes the next herd compute once more, and
they see the change.

HEARTH_DEFENCE_OFF=1 runs it with matrix.coalesce_requests = false: then every request
renders the state itself and the computation counts fail."""
import re
import threading
import unittest
from concurrent.futures import ThreadPoolExecutor

from resilience import DEFENCE_OFF, Hearth, with_section

STATE_EVENTS = 600  # custom state events besides the members
HERD = 200
USERS = ("alice", "bob", "carol", "dave")


class IdenticalRequestsCoalesced(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra="[limits]\nrequests_per_second_per_ip = 100000\nrequest_burst_per_ip = 100000\n"
                                    "max_connections_per_ip = 10000\n")
        with_section(cls.h, "matrix", "coalesce_requests = %s\n" % ("false" if DEFENCE_OFF else "true"))
        cls.h.start()
        cls.h.add_users(*USERS)
        cls.tokens = {}
        for name in USERS:
            status, body = cls.h.matrix_api("POST", "/login", {
                "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
                "password": f"{name} secret pw"})
            assert status == 200, body
            cls.tokens[name] = body["access_token"]

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def api(self, method, path, body=None, who="alice"):
        return self.h.matrix_api(method, path, body, token=self.tokens[who])

    def counters(self, sync=False):
        status, _, raw = self.h.request("GET", "/metrics")
        self.assertEqual(status, 200)
        text = raw.decode()

        def value(name):
            m = re.search(rf"^{name} (\d+)", text, re.M)
            return int(m.group(1)) if m else 0
        if sync:
            return value("hearth_matrix_sync_state_computed_total"), value("hearth_matrix_sync_state_shared_total")
        return value("hearth_matrix_full_state_computed_total"), value("hearth_matrix_full_state_shared_total")

    def herd(self, room, n, path=None):
        """n simultaneous GET /rooms/{room}/state (or `path`) from the users in turn, released together."""
        barrier = threading.Barrier(n)

        def one(i):
            who = USERS[i % len(USERS)]
            barrier.wait()
            return self.api("GET", path or f"/rooms/{room}/state", who=who)
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))

    def test_a_herd_of_full_state_requests_is_computed_once(self):
        status, body = self.api("POST", "/createRoom", {"preset": "public_chat", "name": "Big room"})
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        for name in USERS[1:]:
            status, body = self.api("POST", f"/rooms/{room}/join", {}, who=name)
            self.assertEqual(status, 200, body)

        def put(i):
            return self.api("PUT", f"/rooms/{room}/state/org.example.item/k{i}", {"n": i})[0]
        with ThreadPoolExecutor(max_workers=8) as pool:
            self.assertEqual(set(pool.map(put, range(STATE_EVENTS))), {200})

        computed0, shared0 = self.counters()
        answers = self.herd(room, HERD)
        self.assertEqual({status for status, _ in answers}, {200})
        first = answers[0][1]
        items = {e["state_key"] for e in first if e["type"] == "org.example.item"}
        self.assertEqual(len(items), STATE_EVENTS)
        members = {e["state_key"] for e in first if e["type"] == "m.room.member"}
        self.assertEqual(members, {f"@{u}:localhost" for u in USERS})
        ids = sorted(e["event_id"] for e in first)
        for _, body in answers:
            self.assertEqual(sorted(e["event_id"] for e in body), ids)
        computed1, shared1 = self.counters()
        self.assertEqual(computed1 - computed0, 1, "the herd's state was rendered more than once")
        self.assertEqual(shared1 - shared0, HERD - 1)

        # A change is a new version: the next herd renders once more and sees it.
        status, body = self.api("PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "after the herd"})
        self.assertEqual(status, 200, body)
        answers = self.herd(room, HERD // 4)
        self.assertEqual({status for status, _ in answers}, {200})
        for _, body in answers:
            topics = [e["content"]["topic"] for e in body if e["type"] == "m.room.topic"]
            self.assertEqual(topics, ["after the herd"])
        computed2, _ = self.counters()
        self.assertEqual(computed2 - computed1, 1)

        # The same for a herd of initial syncs: every user's own sections are their own, the
        # room's state is rendered once for all of them.
        computed_s0, _ = self.counters(sync=True)
        answers = self.herd(room, HERD // 2, path="/sync?timeout=0")
        self.assertEqual({status for status, _ in answers}, {200})
        for i, (_, body) in enumerate(answers):
            state = body["rooms"]["join"][room]["state"]["events"]
            timeline = body["rooms"]["join"][room]["timeline"]["events"]
            items = {e["state_key"] for e in state + timeline if e["type"] == "org.example.item"}
            self.assertEqual(len(items), STATE_EVENTS)
        computed_s1, shared_s1 = self.counters(sync=True)
        self.assertEqual(computed_s1 - computed_s0, 1, "the initial syncs rendered the room's state more than once")

        # Coalescing never skips the membership check: an outsider is refused.
        self.tokens["eve"] = self.login_extra("eve")
        status, body = self.api("GET", f"/rooms/{room}/state", who="eve")
        self.assertEqual((status, body["errcode"]), (403, "M_FORBIDDEN"))

    def login_extra(self, name):
        self.h.add_users(name)
        status, body = self.h.matrix_api("POST", "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
            "password": f"{name} secret pw"})
        self.assertEqual(status, 200, body)
        return body["access_token"]


if __name__ == "__main__":
    unittest.main()
