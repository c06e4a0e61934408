"""Incident I18: a routine redeploy under load was more disruptive than expected.

hearth's graceful restart: `hearthd --takeover` takes the running daemon's listening
sockets over the admin socket, the old daemon drains (parked Matrix /sync long-polls are
answered, XMPP streams are handed over) and exits, and the new one serves on the same
sockets. Under load from slixmpp clients with stream management (XEP-0198) and a parked
long-poll, the test asserts: no connection to the listening ports is refused during the
switch, the long-poll is answered, the XMPP clients resume their sessions on the new
process (slixmpp's `session_resumed`), and every message the server acknowledged reaches
its recipient.

Defence off (for the incident note): a hearthd whose --takeover binds fresh sockets
instead of adopting the old ones, or whose drain does not hand XMPP sessions over.
"""
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import base64
import xml.etree.ElementTree as ET

from resilience import Hearth, wait_until
from harness import HEARTHCTL, HEARTHD

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from test_xmpp_client import Client, TIMEOUT, wait_for_condition  # noqa: E402
from wsclient import WebSocket  # noqa: E402
from xmpp_raw import Scram  # noqa: E402

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SM = "urn:xmpp:sm:3"


class WsXmpp:
    """A minimal XMPP-over-WebSocket client (RFC 7395), raw XML, for stream management."""

    def __init__(self, port, user, password):
        self.user, self.password = user, password
        self.ws = WebSocket("127.0.0.1", port, "/xmpp-websocket", protocol="xmpp")

    def send(self, xml):
        self.ws.send_text(xml)

    def recv(self, timeout=TIMEOUT):
        return ET.fromstring(self.ws.recv_text(timeout=timeout))

    def recv_until(self, tag, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            el = self.recv(max(0.1, deadline - time.monotonic()))
            if el.tag == tag:
                return el

    def login(self):
        self.send(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
        self.recv_until("{http://etherx.jabber.org/streams}features")
        scram = Scram(self.user, self.password)
        self.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{base64.b64encode(scram.initial()).decode()}</auth>")
        challenge = self.recv_until(f"{{{SASL}}}challenge")
        final = scram.final(base64.b64decode(challenge.text))
        self.send(f"<response xmlns='{SASL}'>{base64.b64encode(final).decode()}</response>")
        self.recv_until(f"{{{SASL}}}success")
        self.send(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
        self.recv_until("{http://etherx.jabber.org/streams}features")


class LoadClient(Client):
    """A slixmpp client with XEP-0198 that reconnects by itself, as a phone app does, and
    records what the server acknowledged and what it received."""

    def __init__(self, *args, port, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self.port = port
        self.acked_bodies = set()
        self.received_bodies = []
        self.resumptions = 0
        self.fresh_sessions = 0
        self.disconnects = 0
        self.stopping = False
        self.add_event_handler("stanza_acked", self._acked)
        self.add_event_handler("message", self._received)
        self.add_event_handler("session_resumed", self._resumed)
        self.add_event_handler("session_start", self._fresh)
        self.add_event_handler("disconnected", self._reconnect)

    def _acked(self, stanza):
        if stanza.name == "message" and stanza["body"]:
            self.acked_bodies.add(stanza["body"])

    def _received(self, msg):
        if msg["body"]:
            self.received_bodies.append(msg["body"])

    def _resumed(self, _):
        self.resumptions += 1

    def _fresh(self, _):
        self.fresh_sessions += 1
        if self.fresh_sessions > 1:
            self.send_presence()  # a new session after a failed resumption: come online again

    def _reconnect(self, _):
        self.disconnects += 1
        if not self.stopping:
            self.connect(address=("127.0.0.1", self.port), force_starttls=True)

    async def stop(self):
        self.stopping = True
        await super().stop()


class ConnectProber(threading.Thread):
    """Opens TCP connections to the listening ports in a loop and counts refusals."""

    def __init__(self, ports):
        super().__init__(daemon=True)
        self.ports = ports
        self.attempts = 0
        self.refused = []
        self.done = threading.Event()

        self.http_port = ports[0]
        self.slowest_health = 0.0  # seconds: the longest wait for a /health answer

    def health_once(self):
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as s:
                s.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
                while s.recv(65536):
                    pass
        except ConnectionRefusedError as e:
            self.refused.append((self.http_port, str(e)))
        except OSError:
            pass
        self.slowest_health = max(self.slowest_health, time.monotonic() - started)

    def run(self):
        while not self.done.is_set():
            self.health_once()
            for port in self.ports:
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.close()
                except ConnectionRefusedError as e:
                    self.refused.append((port, str(e)))
                except OSError:
                    pass  # a timeout is a delay, not a refusal
                self.attempts += 1
            self.done.wait(0.005)


class GracefulRestart(unittest.IsolatedAsyncioTestCase):
    async def test_I18_takeover_under_load_loses_nothing(self):
        loop = asyncio.get_running_loop()
        old = Hearth()
        self.addCleanup(old.cleanup)
        self.addCleanup(old.stop)
        old.start()
        old.add_users("sender", "receiver", "watcher")
        ports = [old.http_port, old.https_port, old.xmpp_port, old.xmpps_port]

        # A Matrix client parked in a /sync long-poll (the server's longest wait is 30 s;
        # the old daemon's drain cuts what is left after 5 s, so only an answer from the
        # drain gives this request a 200).
        status, login = old.matrix_api("POST", "/login", {"type": "m.login.password",
                                                          "identifier": {"type": "m.id.user", "user": "watcher"},
                                                          "password": "watcher secret pw"})
        self.assertEqual(status, 200, login)
        token = login["access_token"]
        status, first = old.matrix_api("GET", "/sync?timeout=0", token=token)
        self.assertEqual(status, 200)
        long_poll = {}

        def park():
            try:
                long_poll["status"], long_poll["body"] = old.matrix_api(
                    "GET", f"/sync?since={first['next_batch']}&timeout=30000", token=token)
            except Exception as e:  # noqa: BLE001 - recorded and asserted on below
                long_poll["error"] = repr(e)
        poller = threading.Thread(target=park, daemon=True)
        poller.start()

        receiver = LoadClient("receiver@localhost/phone", "receiver secret pw", old.cert_path(), port=old.xmpp_port)
        sender = LoadClient("sender@localhost/phone", "sender secret pw", old.cert_path(), port=old.xmpp_port)
        for c in (receiver, sender):
            self.addAsyncCleanup(self._stop, c)
            await c.login(old.xmpp_port)
            await wait_for_condition(lambda c=c: c.plugin["xep_0198"].sm_id, what="stream management enabled")

        sending = True
        sent = []

        async def send_load():
            i = 0
            while sending:
                if sender.is_connected() and sender.plugin["xep_0198"].enabled_out:
                    body = f"load {i}"
                    sender.send_message(mto="receiver@localhost", mbody=body, mtype="chat")
                    sent.append(body)
                    i += 1
                    if i % 10 == 0:
                        sender.plugin["xep_0198"].request_ack()
                await asyncio.sleep(0.01)  # the load's pace, not a synchronisation
        load = asyncio.ensure_future(send_load())
        await wait_for_condition(lambda: len(sender.acked_bodies) >= 30, what="acknowledged load before the switch")

        prober = ConnectProber(ports)
        prober.start()
        new = Hearth(workdir=old.dir)
        self.addCleanup(new.cleanup)
        self.addCleanup(new.stop)
        switch_started = time.monotonic()
        await loop.run_in_executor(None, lambda: new.start(extra_args=("--takeover",)))
        ready_after = time.monotonic() - switch_started
        self.assertEqual(await loop.run_in_executor(None, old.wait_exit, 30), 0, old.stderr())
        self.assertEqual([new.http_port, new.https_port, new.xmpp_port, new.xmpps_port], ports,
                         "the new hearthd serves on the same sockets")
        self.assertIn("event=hearthd.handed_over", old.stderr())

        # The clients come back (as resumptions) and the load keeps flowing on the new process.
        await wait_for_condition(lambda: receiver.resumptions >= 1 and sender.resumptions >= 1,
                                 timeout=30, what="both clients resumed their sessions")
        acked_before = len(sender.acked_bodies)
        await wait_for_condition(lambda: len(sender.acked_bodies) >= acked_before + 30,
                                 timeout=30, what="acknowledged load after the switch")
        sending = False
        await load
        prober.done.set()
        await loop.run_in_executor(None, prober.join)

        # Everything acknowledged arrives.
        sender.plugin["xep_0198"].request_ack()
        await wait_for_condition(lambda: not sender.plugin["xep_0198"].unacked_queue, timeout=30,
                                 what="the server acknowledged every message")
        await wait_for_condition(lambda: sender.acked_bodies <= set(receiver.received_bodies), timeout=30,
                                 what="every acknowledged message at the receiver")
        await loop.run_in_executor(None, poller.join, 30)

        print(f"\nI18: switch: new hearthd ready {ready_after:.2f} s after --takeover; "
              f"{prober.attempts} connects during it, {len(prober.refused)} refused, "
              f"slowest /health answer {prober.slowest_health * 1000:.0f} ms; "
              f"{len(sent)} messages sent, {len(sender.acked_bodies)} acknowledged, "
              f"{len(receiver.received_bodies)} received ({len(receiver.received_bodies) - len(set(receiver.received_bodies))} duplicates); "
              f"resumptions sender {sender.resumptions} receiver {receiver.resumptions}", file=sys.stderr)
        self.assertEqual(prober.refused, [], "connections refused during the switch")
        self.assertEqual(long_poll.get("status"), 200, long_poll)
        self.assertEqual(receiver.fresh_sessions, 1, "the receiver resumed instead of starting over")
        self.assertEqual(sender.fresh_sessions, 1, "the sender resumed instead of starting over")

        # The new process is a full server: a sync and a fresh XMPP login work.
        status, _ = new.matrix_api("GET", "/sync?timeout=0", token=token)
        self.assertEqual(status, 200)

    async def wanderer_detached_with_a_message(self, body):
        """A server with two stream-management sessions; the wanderer's connection drops
        without a stream close (the server keeps its session detached) and the friend sends
        it `body`, acknowledged by the server."""
        old = Hearth()
        self.addCleanup(old.cleanup)
        self.addCleanup(old.stop)
        old.start()
        old.add_users("wanderer", "friend")
        wanderer = LoadClient("wanderer@localhost/phone", "wanderer secret pw", old.cert_path(), port=old.xmpp_port)
        friend = LoadClient("friend@localhost/phone", "friend secret pw", old.cert_path(), port=old.xmpp_port)
        for c in (wanderer, friend):
            self.addAsyncCleanup(self._stop, c)
            await c.login(old.xmpp_port)
            await wait_for_condition(lambda c=c: c.plugin["xep_0198"].sm_id, what="stream management enabled")
        wanderer.stopping = True  # no reconnection until the test says so
        gone = asyncio.ensure_future(wanderer.wait_until("disconnected", TIMEOUT))
        wanderer.transport.abort()
        await gone
        friend.send_message(mto="wanderer@localhost", mbody=body, mtype="chat")
        await self.acknowledged(friend, body)
        return old, wanderer, friend

    async def test_I18_a_session_detached_during_the_restart_resumes_at_the_new_process(self):
        """A phone between networks while the server restarts: its session is handed over too."""
        loop = asyncio.get_running_loop()
        old, wanderer, friend = await self.wanderer_detached_with_a_message("while you were away")

        new = Hearth(workdir=old.dir)
        self.addCleanup(new.cleanup)
        self.addCleanup(new.stop)
        await loop.run_in_executor(None, lambda: new.start(extra_args=("--takeover",)))
        self.assertEqual(await loop.run_in_executor(None, old.wait_exit, 30), 0, old.stderr())
        self.assertIn("event=xmpp.sm_handed_over jid=wanderer@localhost/phone", old.stderr())

        wanderer.stopping = False
        wanderer.connect(address=("127.0.0.1", new.xmpp_port), force_starttls=True)
        await wait_for_condition(lambda: wanderer.resumptions == 1, what="the wanderer resumed at the new process")
        await wait_for_condition(lambda: "while you were away" in wanderer.received_bodies,
                                 what="the message queued for the detached session")
        self.assertEqual(wanderer.fresh_sessions, 1)
        await wait_for_condition(lambda: friend.resumptions == 1, what="the friend resumed too")

    async def test_I18_plain_stop_keeps_what_a_detached_session_never_acknowledged(self):
        """Without a successor (SIGTERM), a detached session's unacknowledged messages go to
        offline storage and arrive at the next login."""
        old, wanderer, friend = await self.wanderer_detached_with_a_message("kept across the stop")
        friend.stopping = True
        await friend.stop()
        self.assertEqual(await asyncio.get_running_loop().run_in_executor(None, old.stop), 0)
        self.assertIn("event=xmpp.sm_ended_at_exit jid=wanderer@localhost/phone", old.stderr())

        old.start()
        back = LoadClient("wanderer@localhost/laptop", "wanderer secret pw", old.cert_path(), port=old.xmpp_port)
        self.addAsyncCleanup(self._stop, back)
        await back.login(old.xmpp_port)
        await wait_for_condition(lambda: "kept across the stop" in back.received_bodies,
                                 what="the message from offline storage")

    async def test_I18_xmpp_over_websocket_resumes_at_the_new_process(self):
        """WebSockets are closed by the drain (1001): the detached session is handed over after it."""
        loop = asyncio.get_running_loop()
        old = Hearth()
        self.addCleanup(old.cleanup)
        self.addCleanup(old.stop)
        old.start()
        old.add_users("web", "friend")
        web = WsXmpp(old.http_port, "web", "web secret pw")

        def start_web():
            web.login()
            web.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     "<resource>browser</resource></bind></iq>")
            web.recv_until("{jabber:client}iq")
            web.send(f"<enable xmlns='{SM}' resume='true'/>")
            enabled = web.recv_until(f"{{{SM}}}enabled")
            web.send("<presence/>")
            return enabled.get("id")
        sm_id = await loop.run_in_executor(None, start_web)
        self.assertTrue(sm_id)

        friend = LoadClient("friend@localhost/phone", "friend secret pw", old.cert_path(), port=old.xmpp_port)
        self.addAsyncCleanup(self._stop, friend)
        await friend.login(old.xmpp_port)
        await wait_for_condition(lambda: friend.plugin["xep_0198"].sm_id, what="stream management enabled")
        friend.send_message(mto="web@localhost/browser", mbody="to the browser", mtype="chat")
        got = await loop.run_in_executor(None, web.recv_until, "{jabber:client}message")
        self.assertEqual(got.findtext("{jabber:client}body"), "to the browser")  # received, never acknowledged

        new = Hearth(workdir=old.dir)
        self.addCleanup(new.cleanup)
        self.addCleanup(new.stop)
        await loop.run_in_executor(None, lambda: new.start(extra_args=("--takeover",)))
        self.assertEqual(await loop.run_in_executor(None, old.wait_exit, 30), 0, old.stderr())

        again = WsXmpp(new.http_port, "web", "web secret pw")

        def resume():
            again.login()
            again.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
            resumed = again.recv_until(f"{{{SM}}}resumed")
            return resumed, again.recv_until("{jabber:client}message")
        resumed, resent = await loop.run_in_executor(None, resume)
        self.assertEqual(resumed.get("previd"), sm_id)
        self.assertEqual(resent.findtext("{jabber:client}body"), "to the browser",
                         "the unacknowledged message is sent again by the new process")
        web.ws.close()
        again.ws.close()

    def test_I18_hearthctl_restart_returns_once_the_new_daemon_serves(self):
        """The systemd ExecReload path: hearthctl starts `hearthd --takeover` detached."""
        old = Hearth()
        self.addCleanup(old.cleanup)
        self.addCleanup(old.stop)
        old.start()
        with open(os.path.join(old.dir, "restart.log"), "w+") as log:
            # The new daemon keeps hearthctl's stderr (the journal, under systemd): a file here.
            r = subprocess.run([HEARTHCTL, "--config", old.config_path, "restart", "--hearthd", HEARTHD],
                               stdout=subprocess.PIPE, stderr=log, text=True, timeout=120)
            log.seek(0)
            self.assertEqual(r.returncode, 0, log.read())
        m = re.search(r"hearthd (\d+) took over from (\d+)", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        new_pid, old_pid = int(m.group(1)), int(m.group(2))
        self.assertEqual(old_pid, old.proc.pid)
        self.addCleanup(self._terminate, new_pid)
        self.assertEqual(old.wait_exit(30), 0)
        status, _, body = old.request("GET", "/")  # the same port, now the new daemon's
        self.assertEqual((status, body), (200, b"hearth 0.1.0\n"))
        with open(os.path.join(old.data_dir, "hearthd.lock")) as f:
            self.assertEqual(int(f.read()), new_pid)

    @staticmethod
    def _terminate(pid):
        def gone():
            try:
                with open(f"/proc/{pid}/status") as f:
                    return "\nState:\tZ" in f.read()
            except FileNotFoundError:
                return True
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        wait_until(gone, timeout=30, what=f"hearthd {pid} to exit")

    @staticmethod
    async def acknowledged(client, body):
        """Asks for acks until the server's <a/> covers `body` (an <a/> may answer an <r/>
        that overtook the message's own handling)."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while body not in client.acked_bodies:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the server never acknowledged {body!r}")
            client.plugin["xep_0198"].request_ack()
            await asyncio.sleep(0.05)

    async def _stop(self, c):
        c.stopping = True
        if c.is_connected():
            await c.stop()


if __name__ == "__main__":
    unittest.main()
