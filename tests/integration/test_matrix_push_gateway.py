"""Push notifications to a push gateway (POST /_matrix/push/v1/notify): matrix-nio users
(Debian's python3-matrix-nio; nio has no pusher call, so pushers are set with the user's
token over plain HTTP) and a small gateway in this file (http.server on 127.0.0.1) that
records what hearthd sends. Every wait has a deadline; "nothing was sent" is shown by a
later notification on the same pusher (each pusher's queue is delivered in order)."""
import http.server
import json
import shutil
import tempfile
import threading
import time
import unittest
import urllib.parse

from nio import AsyncClient, LoginResponse

from harness import Hearth, free_port, wait_until
from matrix_fed import REMOTE, Server, federation_request, join_over_federation, serve_remote
from test_xmpp_federation import make_ca, make_cert

TIMEOUT = 30
NOTIFY_PATH = "/_matrix/push/v1/notify"


class Gateway:
    """Records notify requests; answers {"rejected": [...]} naming the pushkeys in
    `reject`. stop() closes the port (connections are refused) and start() reopens it."""

    def __init__(self):
        self.port = free_port()
        self.requests = []
        self.reject = set()
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with gateway.lock:
                    gateway.requests.append((self.path, body))
                    keys = [d["pushkey"] for d in body["notification"]["devices"]]
                    rejected = [k for k in keys if k in gateway.reject]
                answer = json.dumps({"rejected": rejected}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def url(self):
        return f"http://127.0.0.1:{self.port}{NOTIFY_PATH}"

    def received(self, pushkey):
        with self.lock:
            return [b["notification"] for _, b in self.requests
                    if any(d["pushkey"] == pushkey for d in b["notification"]["devices"])]

    def wait_for_event(self, pushkey, event_id):
        def found():
            got = [n for n in self.received(pushkey) if n.get("event_id") == event_id]
            return got[0] if got else None
        return wait_until(found, timeout=TIMEOUT, what=f"a notification of {event_id} for {pushkey}")


class PushGateway(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway = Gateway()
        cls.gateway.start()
        cls.h = Hearth(config_extra="[limits]\nrequests_per_second_per_ip = 100000\nrequest_burst_per_ip = 100000\n"
                                    "[matrix]\npush_to_private_addresses = true\nmax_pushers_per_user = 3\n")
        cls.h.start()
        cls.h.add_users("alice", "bob", "carol", "dan", "erin", "frank", "grace", "heidi")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()
        cls.gateway.stop()

    async def asyncSetUp(self):
        self.clients = {}

    async def asyncTearDown(self):
        for c in self.clients.values():
            await c.close()

    async def login(self, name):
        c = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", f"@{name}:localhost")
        r = await c.login(f"{name} secret pw", device_name=f"{name}'s phone")
        self.assertIsInstance(r, LoginResponse, r)
        self.clients[name] = c
        return c

    def ok(self, method, path, body, who):
        status, reply = self.h.matrix_api(method, path, body, token=self.clients[who].access_token)
        self.assertEqual(status, 200, reply)
        return reply

    def set_pusher(self, who, pushkey, data_extra=None, **extra):
        self.ok("POST", "/pushers/set", {
            "app_id": "org.example.phone", "pushkey": pushkey, "kind": "http", "app_display_name": "Phone",
            "device_display_name": f"{who}'s phone", "lang": "en",
            "data": {"url": self.gateway.url(), **(data_extra or {})}, **extra}, who)

    async def room(self, creator, member, name=None):
        room = (await self.clients[creator].room_create(name=name, invite=[f"@{member}:localhost"])).room_id
        r = await self.clients[member].join(room)
        self.assertEqual(type(r).__name__, "JoinResponse", r)
        return room

    async def send(self, who, room, text):
        r = await self.clients[who].room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})
        self.assertEqual(type(r).__name__, "RoomSendResponse", r)
        return r.event_id

    def failures_logged(self):
        return self.h.stderr().count("matrix.push.failed")

    async def test_message_notifies_with_the_spec_fields_and_own_messages_do_not(self):
        alice, bob = await self.login("alice"), await self.login("bob")
        await bob.set_displayname("Bob Builder")
        room = await self.room("bob", "alice", name="Workshop")
        self.set_pusher("alice", "alice-key", {"custom": "kept"})
        event = await self.send("bob", room, "hello there")
        n = self.gateway.wait_for_event("alice-key", event)
        path = [p for p, b in self.gateway.requests if b["notification"].get("event_id") == event][0]
        self.assertEqual(path, NOTIFY_PATH)
        self.assertEqual(n["room_id"], room)
        self.assertEqual(n["type"], "m.room.message")
        self.assertEqual(n["sender"], "@bob:localhost")
        self.assertEqual(n["sender_display_name"], "Bob Builder")
        self.assertEqual(n["room_name"], "Workshop")
        self.assertEqual(n["content"], {"msgtype": "m.text", "body": "hello there"})
        self.assertEqual(n["counts"], {"unread": 1})
        self.assertEqual(n["prio"], "high")  # one-to-one rooms ring (sound tweak)
        [device] = n["devices"]
        self.assertEqual((device["app_id"], device["pushkey"]), ("org.example.phone", "alice-key"))
        self.assertEqual(device["data"], {"custom": "kept"})  # the url is not forwarded
        self.assertEqual(device["tweaks"], {"sound": "default"})
        self.assertIsInstance(device["pushkey_ts"], int)
        # alice's own message does not notify her; bob's next one does, counting two unread.
        own = await self.send("alice", room, "my own words")
        second = await self.send("bob", room, "second")
        self.assertEqual(self.gateway.wait_for_event("alice-key", second)["counts"], {"unread": 2})
        self.assertEqual([x for x in self.gateway.received("alice-key") if x.get("event_id") == own], [])
        # Reading everything sends a badge update: counts only (zero counts omitted), low priority.
        r = await alice.room_read_markers(room, fully_read_event=second, read_event=second)
        self.assertEqual(type(r).__name__, "RoomReadMarkersResponse", r)
        badge = wait_until(lambda: [x for x in self.gateway.received("alice-key") if "event_id" not in x],
                           timeout=TIMEOUT, what="a badge update")[0]
        self.assertEqual((badge["counts"], badge["prio"]), ({}, "low"))
        self.assertNotIn("content", badge)

    async def test_event_id_only_format_and_muted_room(self):
        await self.login("carol"), await self.login("dan")
        muted = await self.room("dan", "carol")
        loud = await self.room("dan", "carol")
        self.set_pusher("carol", "carol-key", {"format": "event_id_only"})
        self.ok("PUT", f"/pushrules/global/room/{muted}", {"actions": ["dont_notify"]}, "carol")
        silent = await self.send("dan", muted, "nobody hears this")
        heard = await self.send("dan", loud, "this rings")
        n = self.gateway.wait_for_event("carol-key", heard)
        self.assertEqual(sorted(n), ["counts", "devices", "event_id", "prio", "room_id"])
        self.assertEqual(n["devices"][0]["data"], {"format": "event_id_only"})
        self.assertEqual([x for x in self.gateway.received("carol-key") if x.get("event_id") == silent], [])

    async def test_gateway_down_then_back_also_across_a_restart(self):
        await self.login("erin"), await self.login("frank")
        room = await self.room("frank", "erin")
        self.set_pusher("erin", "erin-key")
        self.gateway.stop()
        try:
            before = self.failures_logged()
            first = await self.send("frank", room, "while the gateway is down")
            wait_until(lambda: self.failures_logged() > before, timeout=TIMEOUT, what="a failed delivery")
        finally:
            self.gateway.start()
        self.gateway.wait_for_event("erin-key", first)  # retried with back-off
        # Down again, and hearthd restarts before the gateway returns: the queue is durable.
        self.gateway.stop()
        try:
            before = self.failures_logged()
            second = await self.send("frank", room, "before the restart")
            wait_until(lambda: self.failures_logged() > before, timeout=TIMEOUT, what="a failed delivery")
            for c in self.clients.values():
                await c.close()
            self.clients = {}
            self.h.stop()
            self.h.start()
        finally:
            self.gateway.start()
        n = self.gateway.wait_for_event("erin-key", second)
        self.assertEqual(n["content"]["body"], "before the restart")
        self.assertEqual(len([x for x in self.gateway.received("erin-key") if x.get("event_id") == second]), 1)

    async def test_rejected_pushkey_removes_the_pusher_and_limits(self):
        await self.login("grace"), await self.login("heidi")
        room = await self.room("heidi", "grace")
        self.gateway.reject.add("grace-old")
        self.set_pusher("grace", "grace-old")
        self.set_pusher("grace", "grace-new", append=True)
        event = await self.send("heidi", room, "knock knock")
        self.gateway.wait_for_event("grace-old", event)
        self.gateway.wait_for_event("grace-new", event)
        wait_until(lambda: [p["pushkey"] for p in self.ok("GET", "/pushers", None, "grace")["pushers"]] == ["grace-new"],
                   timeout=TIMEOUT, what="the rejected pusher's removal")
        # kind null removes a pusher; the per-user cap (3 here) holds, updates at the cap pass.
        self.ok("POST", "/pushers/set", {"app_id": "org.example.phone", "pushkey": "grace-new", "kind": None}, "grace")
        self.assertEqual(self.ok("GET", "/pushers", None, "grace")["pushers"], [])
        for key in ("g1", "g2", "g3"):
            self.set_pusher("grace", key)
        self.set_pusher("grace", "g3", {"custom": 1})
        status, body = self.h.matrix_api("POST", "/pushers/set", {
            "app_id": "org.example.phone", "pushkey": "g4", "kind": "http", "app_display_name": "Phone",
            "device_display_name": "x", "lang": "en", "data": {"url": self.gateway.url()}},
            token=self.clients["grace"].access_token)
        self.assertEqual((status, body["errcode"]), (400, "M_LIMIT_EXCEEDED"))
        # The URL must be http(s) with exactly the notify path.
        for url in ("https://gw.example/notify", "https://gw.example/x/_matrix/push/v1/notify", "ftp://gw.example" +
                    NOTIFY_PATH, "https://user@gw.example" + NOTIFY_PATH):
            status, body = self.h.matrix_api("POST", "/pushers/set", {
                "app_id": "org.example.phone", "pushkey": "g1", "kind": "http", "app_display_name": "Phone",
                "device_display_name": "x", "lang": "en", "data": {"url": url}},
                token=self.clients["grace"].access_token)
            self.assertEqual((status, body["errcode"]), (400, "M_INVALID_PARAM"), url)


class FederatedEventsNotify(unittest.TestCase):
    """A message from a remote server's user (over /send, checked as usual) notifies the
    local member's pusher like a local one."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hearth-mpush-")
        ca = make_ca(self.tmp)
        cert, key = make_cert(self.tmp, "remote", [REMOTE])
        self.remote = Server()
        self.httpd = serve_remote(self.remote, "127.0.0.2", cert, key)
        self.gateway = Gateway()
        self.gateway.start()
        self.h = Hearth(config_extra=(
            "[matrix]\nfederation = true\npush_to_private_addresses = true\n"
            f'federation_ca_file = "{ca}"\n'
            f'federation_destinations = ["{REMOTE}=127.0.0.2:{self.httpd.server_address[1]}"]\n'))
        self.h.start()
        self.h.add_users("alice")

    def tearDown(self):
        self.h.stop()
        self.h.cleanup()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.gateway.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_remote_message_reaches_the_gateway(self):
        status, body = self.h.matrix_api("POST", "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "alice secret pw"})
        self.assertEqual(status, 200, body)
        token = body["access_token"]
        status, body = self.h.matrix_api("POST", "/pushers/set", {
            "app_id": "org.example.phone", "pushkey": "alice-fed", "kind": "http", "app_display_name": "Phone",
            "device_display_name": "x", "lang": "en", "data": {"url": self.gateway.url()}}, token=token)
        self.assertEqual(status, 200, body)
        status, body = self.h.matrix_api("POST", "/createRoom", {"preset": "public_chat"}, token=token)
        self.assertEqual(status, 200, body)
        room = body["room_id"]
        bob = f"@bob:{REMOTE}"
        join_id, _ = join_over_federation(self, self.h, self.remote, room, bob)
        status, state = self.h.matrix_api("GET", f"/rooms/{urllib.parse.quote(room)}/state", token=token)
        self.assertEqual(status, 200, state)
        ids = {(e["type"], e["state_key"]): e["event_id"] for e in state}
        msg = {"type": "m.room.message", "room_id": room, "sender": bob, "depth": 100,
               "content": {"msgtype": "m.text", "body": "hello from afar"},
               "origin_server_ts": int(time.time() * 1000), "prev_events": [join_id],
               "auth_events": [ids[("m.room.create", "")], ids[("m.room.power_levels", "")], join_id]}
        msg_id = self.remote.finish_event(msg)
        status, body = federation_request(self.h, self.remote, "PUT", f"/_matrix/federation/v1/send/t{time.monotonic_ns()}",
                                          {"origin": REMOTE, "origin_server_ts": int(time.time() * 1000),
                                           "pdus": [msg]})
        self.assertEqual((status, body["pdus"]), (200, {msg_id: {}}))
        n = self.gateway.wait_for_event("alice-fed", msg_id)
        self.assertEqual((n["sender"], n["room_id"], n["content"]["body"]), (bob, room, "hello from afar"))
        self.assertEqual(n["counts"], {"unread": 1})


class PrivateGatewaysRefused(unittest.IsolatedAsyncioTestCase):
    """By default a gateway on a non-public address gets nothing: the notification is
    dropped with a log line (push_to_private_addresses = false)."""

    @classmethod
    def setUpClass(cls):
        cls.gateway = Gateway()
        cls.gateway.start()
        cls.h = Hearth()
        cls.h.start()
        cls.h.add_users("ivan", "judy")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()
        cls.gateway.stop()

    async def test_loopback_gateway_is_refused(self):
        ivan = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", "@ivan:localhost")
        judy = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", "@judy:localhost")
        try:
            self.assertIsInstance(await ivan.login("ivan secret pw"), LoginResponse)
            self.assertIsInstance(await judy.login("judy secret pw"), LoginResponse)
            status, body = self.h.matrix_api("POST", "/pushers/set", {
                "app_id": "org.example.phone", "pushkey": "ivan-key", "kind": "http", "app_display_name": "Phone",
                "device_display_name": "x", "lang": "en", "data": {"url": self.gateway.url()}}, token=ivan.access_token)
            self.assertEqual(status, 200, body)
            room = (await judy.room_create(invite=["@ivan:localhost"])).room_id
            self.assertEqual(type(await ivan.join(room)).__name__, "JoinResponse")
            await judy.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hi"})
            self.h.wait_for_log("non-public address", timeout=TIMEOUT)
            self.assertEqual(self.gateway.received("ivan-key"), [])
        finally:
            await ivan.close()
            await judy.close()


if __name__ == "__main__":
    unittest.main()
