"""XMPP over WebSocket (RFC 7395) with XEP-0156 discovery: a raw framing check, then a real
web client — Converse.js (npm) in Debian's headless Chromium, driven by playwright-core —
logs in, joins a group chat and talks with a slixmpp account."""
import asyncio
import functools
import http.server
import json
import os
import shutil
import threading
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT
from test_xmpp_muc import MucClient, MUC
from wsclient import WebSocket

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


class StaticSite:
    """Serves tests/integration/web (the page and Converse's files) on 127.0.0.1."""
    def __init__(self):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=WEB)
        handler.log_message = lambda *a, **k: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class XmppWebSocket(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("alice", "bob")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def test_host_meta_and_framing(self):
        status, headers, body = self.h.request("GET", "/.well-known/host-meta")
        self.assertEqual(status, 200)
        link = ET.fromstring(body).find("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
        self.assertEqual(link.get("rel"), "urn:xmpp:alt-connections:websocket")
        self.assertTrue(link.get("href").endswith("/xmpp-websocket"), link.get("href"))
        status, _, body = self.h.request("GET", "/.well-known/host-meta.json")
        self.assertEqual(json.loads(body)["links"][0]["href"], link.get("href"))

        ws = WebSocket("127.0.0.1", self.h.http_port, "/xmpp-websocket", protocol="xmpp")
        self.assertIn("sec-websocket-protocol: xmpp", ws.response_head.lower())
        ws.send_text(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
        opened = ET.fromstring(ws.recv_text())
        self.assertEqual(opened.tag, f"{{{FRAMING}}}open")
        self.assertEqual(opened.get("from"), "localhost")
        features = ET.fromstring(ws.recv_text())
        self.assertEqual(features.tag, "{http://etherx.jabber.org/streams}features")
        mechanisms = [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
        self.assertIn("SCRAM-SHA-256", mechanisms)
        ws.send_text(f"<close xmlns='{FRAMING}'/>")
        closing = ET.fromstring(ws.recv_text())
        self.assertEqual(closing.tag, f"{{{FRAMING}}}close")
        ws.close()

    async def test_converse_in_chromium_joins_a_room_and_chats(self):
        self.assertTrue(shutil.which("chromium") or os.path.exists("/usr/bin/chromium"),
                        "Debian's chromium is installed by scripts/install-deps.sh")
        self.assertTrue(os.path.isdir(os.path.join(WEB, "node_modules", "converse.js")),
                        "npm ci in tests/integration/web (scripts/install-deps.sh)")
        bob = MucClient("bob@localhost/desk", "bob secret pw", self.h.cert_path())
        await bob.login(self.h.xmpp_port)
        self.addAsyncCleanup(bob.stop)
        room = f"webroom@{MUC}"
        await bob["xep_0045"].join_muc_wait(room, "Bob", timeout=TIMEOUT)

        site = StaticSite()
        self.addCleanup(site.stop)
        driver = await asyncio.create_subprocess_exec(
            "node", os.path.join(WEB, "converse_driver.mjs"), cwd=WEB,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

        async def command(**c):
            driver.stdin.write((json.dumps(c) + "\n").encode())
            await driver.stdin.drain()
            line = await asyncio.wait_for(driver.stdout.readline(), 60)
            answer = json.loads(line)
            self.assertTrue(answer.get("ok"), json.dumps(answer, indent=1))
            return answer

        async def finish():
            if driver.returncode is None:
                driver.stdin.write(b'{"cmd":"quit"}\n')
                await driver.stdin.drain()
                try:
                    await asyncio.wait_for(driver.wait(), 20)
                except asyncio.TimeoutError:
                    driver.kill()
        self.addAsyncCleanup(finish)

        ws_url = f"wss://localhost:{self.h.https_port}/xmpp-websocket"
        page = (f"http://127.0.0.1:{site.port}/converse.html?" +
                urllib.parse.urlencode({"ws": ws_url, "jid": "alice@localhost", "password": "alice secret pw"}))
        await command(cmd="open", url=page)
        await command(cmd="join", room=room, nick="Alice")
        joined = await next_item(bob.room_presence, lambda p: p["from"].resource == "Alice")
        self.assertNotEqual(joined["type"], "unavailable")
        await command(cmd="send", room=room, body="hello from a browser")
        msg = await next_item(bob.room_messages, lambda m: m["body"] == "hello from a browser")
        self.assertEqual(str(msg["from"]), f"{room}/Alice")
        bob.send_message(mto=room, mbody="hello back, browser", mtype="groupchat")
        got = await command(cmd="wait_message", body="hello back, browser")
        self.assertIn("Bob", got["from"])


if __name__ == "__main__":
    unittest.main()
