"""XMPP client sessions driven by slixmpp (Debian's python3-slixmpp), a client nobody here wrote.

Each test logs real accounts in over STARTTLS (port c2s_port) or direct TLS (c2s_tls_port)
and asserts on the stanzas slixmpp receives.
"""
import asyncio
import logging
import os
import socket
import ssl
import unittest
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

from harness import Hearth

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
TIMEOUT = 15


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cafile):
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0203")
        self.register_plugin("xep_0313")
        self.register_plugin("xep_0359")
        self.register_plugin("xep_0280")
        self.carbons = asyncio.Queue()
        self.add_event_handler("carbon_received", lambda m: self.carbons.put_nowait(("received", m)))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(("sent", m)))
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.subscribes = asyncio.Queue()
        self.all_presence = asyncio.Queue()
        self.add_event_handler("presence", lambda p: self.all_presence.put_nowait(p))
        self.failed = asyncio.Event()
        self.started = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_subscribe", lambda p: self.subscribes.put_nowait(p))
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        # Answer subscription requests by hand in the tests.
        self.auto_authorize = None
        self.auto_subscribe = False

    async def login(self, port, direct_tls=False):
        started = asyncio.ensure_future(self.wait_until("session_start", TIMEOUT))
        self.connect(address=("127.0.0.1", port), use_ssl=direct_tls, force_starttls=not direct_tls)
        await started
        self.send_presence()
        await self.get_roster()

    async def stop(self):
        done = asyncio.ensure_future(self.wait_until("disconnected", TIMEOUT))
        self.disconnect()
        await done


async def wait_for_condition(predicate, timeout=TIMEOUT, what="condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def next_item(queue, predicate=lambda _: True, timeout=TIMEOUT):
    async def find():
        while True:
            item = await queue.get()
            if predicate(item):
                return item
    return await asyncio.wait_for(find(), timeout)


class XmppClients(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("alice", "bob", "carol")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def client(self, name, password=None, resource="test"):
        c = Client(f"{name}@localhost/{resource}", password or f"{name} secret pw", self.h.cert_path())
        self.addAsyncCleanup(self._stop, c)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    async def test_login_over_starttls_and_direct_tls(self):
        a = self.client("alice")
        await a.login(self.h.xmpp_port)
        self.assertEqual(str(a.boundjid.bare), "alice@localhost")
        self.assertEqual(a.boundjid.resource, "test")
        b = self.client("bob")
        await b.login(self.h.xmpps_port, direct_tls=True)
        self.assertEqual(str(b.boundjid.bare), "bob@localhost")
        await asyncio.get_running_loop().run_in_executor(
            None, self.h.wait_for_log, "event=xmpp.authenticated jid=alice@localhost mechanism=SCRAM-SHA-")

    async def test_wrong_password_is_refused(self):
        c = self.client("alice", "not the password")
        gone = asyncio.ensure_future(c.wait_until("disconnected", TIMEOUT))
        c.connect(address=("127.0.0.1", self.h.xmpp_port))
        await asyncio.wait_for(c.failed.wait(), TIMEOUT)
        # slixmpp tries its other mechanisms; after max_auth_attempts the server closes.
        await gone
        self.assertFalse(c.started.is_set())

    async def test_message_between_online_accounts(self):
        a, b = self.client("alice"), self.client("bob")
        await a.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        a.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        msg = await next_item(b.messages, lambda m: m["body"] == "hello bob")
        self.assertEqual(str(msg["from"]), "alice@localhost/test")
        self.assertEqual(msg["type"], "chat")

    async def test_offline_message_is_delivered_at_login_with_delay(self):
        a = self.client("alice")
        await a.login(self.h.xmpp_port)
        a.send_message(mto="carol@localhost", mbody="while you were away", mtype="chat")
        # The message is stored durably before carol logs in: wait for it in the database.
        db = os.path.join(self.h.data_dir, "hearth.db")
        import sqlite3
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT count(*) FROM xmpp_offline WHERE owner='carol@localhost'").fetchone()[0]:
                    break
            self.assertLess(asyncio.get_running_loop().time(), deadline, "offline message never stored")
            await asyncio.sleep(0.05)
        c = self.client("carol")
        await c.login(self.h.xmpp_port)
        msg = await next_item(c.messages, lambda m: m["body"] == "while you were away")
        self.assertEqual(str(msg["from"]), "alice@localhost/test")
        self.assertTrue(msg["delay"]["stamp"], "offline messages carry a XEP-0203 delay")

    async def test_subscription_handshake_and_presence(self):
        a, b = self.client("alice"), self.client("bob")
        await a.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        a.send_presence(pto="bob@localhost", ptype="subscribe")
        req = await next_item(b.subscribes)
        self.assertEqual(str(req["from"]), "alice@localhost")
        b.send_presence(pto="alice@localhost", ptype="subscribed")
        # Once approved, alice receives bob's presence and sees 'to' in her roster.
        pres = await next_item(a.presences, lambda p: p["from"].bare == "bob@localhost")
        self.assertEqual(str(pres["from"]), "bob@localhost/test")
        # Roster pushes keep each client's roster current (RFC 6121 §2.1.6).
        await wait_for_condition(lambda: a.client_roster["bob@localhost"]["subscription"] == "to")
        await wait_for_condition(lambda: b.client_roster["alice@localhost"]["subscription"] == "from")

    async def test_roster_set_push_and_remove(self):
        a = self.client("alice")
        await a.login(self.h.xmpp_port)
        await a.update_roster("dave@localhost", name="Dave", groups=["Friends"])
        await wait_for_condition(lambda: "dave@localhost" in a.client_roster)
        item = a.client_roster["dave@localhost"]
        self.assertEqual(item["name"], "Dave")
        self.assertEqual(item["groups"], ["Friends"])
        self.assertEqual(item["subscription"], "none")
        # A second client of the same account gets the full roster, versioned.
        a2 = self.client("alice", resource="second")
        await a2.login(self.h.xmpp_port)
        self.assertEqual(a2.client_roster["dave@localhost"]["name"], "Dave")
        await a.del_roster_item("dave@localhost")
        await wait_for_condition(lambda: "dave@localhost" not in a2.client_roster, what="roster push of the removal")

    async def test_server_disco_ping_and_errors(self):
        a = self.client("alice")
        await a.login(self.h.xmpp_port)
        info = await a["xep_0030"].get_info(jid="localhost")
        features = info["disco_info"]["features"]
        self.assertIn("urn:xmpp:ping", features)
        self.assertIn(("server", "im", None, "hearth"), info["disco_info"]["identities"])
        await a["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        with self.assertRaises(IqError) as err:
            await a["xep_0030"].get_info(jid="nobody@localhost/x")
        self.assertEqual(err.exception.condition, "service-unavailable")
        with self.assertRaises(IqError) as err:
            await a["xep_0030"].get_info(jid="elsewhere.example")
        self.assertEqual(err.exception.condition, "remote-server-not-found")

    async def test_history_is_archived_and_pages_on_another_device(self):
        a, b = self.client("alice", resource="mam"), self.client("bob", resource="mam")
        await a.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        bodies = [f"archived {i}" for i in range(5)]
        for body in bodies:
            a.send_message(mto="bob@localhost", mbody=body, mtype="chat")
        last = await next_item(b.messages, lambda m: m["body"] == bodies[-1])
        live_id = last["stanza_id"]["id"]
        self.assertEqual(last["stanza_id"]["by"], "bob@localhost")
        self.assertTrue(live_id)

        # Bob's other device pages through his archive with alice, two at a time.
        other = self.client("bob", resource="tablet")
        await other.login(self.h.xmpp_port)
        seen = []
        ids = []
        async for msg in other["xep_0313"].iterate(with_jid="alice@localhost", rsm={"max": 2}):
            body = msg["mam_result"]["forwarded"]["stanza"]["body"]
            if body.startswith("archived "):
                seen.append(body)
                ids.append(msg["mam_result"]["id"])
        self.assertEqual(seen, bodies)
        self.assertEqual(ids[-1], live_id, "the archive id is the stanza-id the live message carried")
        # The sender's archive has the same conversation.
        sent = []
        async for msg in a["xep_0313"].iterate(with_jid="bob@localhost", rsm={"max": 10}):
            body = msg["mam_result"]["forwarded"]["stanza"]["body"]
            if body.startswith("archived "):
                sent.append(body)
        self.assertEqual(sent, bodies)

    async def test_carbons_copy_conversations_to_the_other_device(self):
        phone = self.client("alice", resource="phone")
        desk = self.client("alice", resource="desk")
        b = self.client("bob", resource="carbons")
        await phone.login(self.h.xmpp_port)
        await phone["xep_0280"].enable()
        await desk.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        b.send_message(mto="alice@localhost/desk", mbody="to the desk only", mtype="chat")
        await next_item(desk.messages, lambda m: m["body"] == "to the desk only")
        kind, carbon = await next_item(phone.carbons)
        self.assertEqual(kind, "received")
        self.assertEqual(carbon["carbon_received"]["body"], "to the desk only")
        self.assertEqual(str(carbon["from"]), "alice@localhost")
        desk.send_message(mto="bob@localhost", mbody="answered from the desk", mtype="chat")
        kind, carbon = await next_item(phone.carbons)
        self.assertEqual(kind, "sent")
        self.assertEqual(carbon["carbon_sent"]["body"], "answered from the desk")
        # Private messages are not copied.
        private = desk.make_message(mto="bob@localhost", mbody="just here", mtype="chat")
        private.append(ET.Element("{urn:xmpp:carbons:2}private"))
        private.send()
        desk.send_message(mto="bob@localhost", mbody="copied again", mtype="chat")
        kind, carbon = await next_item(phone.carbons)
        self.assertEqual(carbon["carbon_sent"]["body"], "copied again")

    async def test_inactive_client_gets_only_the_newest_presence(self):
        a = self.client("carol", resource="status")
        b = self.client("bob", resource="sleepy")
        b.register_plugin("xep_0352")
        await a.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        # bob subscribes to carol's presence.
        b.send_presence(pto="carol@localhost", ptype="subscribe")
        await next_item(a.subscribes, lambda p: p["from"].bare == "bob@localhost")
        a.send_presence(pto="bob@localhost", ptype="subscribed")
        await next_item(b.presences, lambda p: p["from"].bare == "carol@localhost" and p["from"].resource == "status")
        b["xep_0352"].send_inactive()
        # A round trip after the nonza guarantees the server has seen it.
        await b["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        while not b.all_presence.empty():
            b.all_presence.get_nowait()
        for show in ("away", "xa", "dnd"):
            a.send_presence(pshow=show)
        a.send_message(mto="bob@localhost/sleepy", mbody="wake up", mtype="chat")
        await next_item(b.messages, lambda m: m["body"] == "wake up")
        held = []
        while not b.all_presence.empty():
            p = b.all_presence.get_nowait()
            if p["from"].bare == "carol@localhost" and p["type"] in ("away", "xa", "dnd", "chat", "available"):
                held.append(p["show"])
        self.assertEqual(held, ["dnd"], "only the newest presence is delivered, before the message")

    async def test_same_resource_replaces_the_old_session(self):
        first, second = self.client("bob"), self.client("bob")
        await first.login(self.h.xmpp_port)
        gone = asyncio.ensure_future(first.wait_until("disconnected", TIMEOUT))
        await second.login(self.h.xmpp_port)
        await gone
        self.assertTrue(second.is_connected())


class XmppStreamRules(unittest.TestCase):
    """Raw sockets: what a misbehaving client gets."""

    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def exchange(self, payload, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.h.xmpp_port), timeout=timeout)
        s.sendall(payload)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except socket.timeout:
            pass
        s.close()
        return data.decode(errors="replace")

    HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
              b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")

    def test_starttls_is_required(self):
        out = self.exchange(self.HEADER + b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>")
        self.assertIn("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>", out)
        self.assertIn("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", out)
        self.assertTrue(out.endswith("</stream:stream>"))

    def test_unknown_host(self):
        out = self.exchange(self.HEADER.replace(b"to='localhost'", b"to='other.example'"))
        self.assertIn("<host-unknown", out)

    def test_restricted_xml(self):
        out = self.exchange(self.HEADER + b"<!-- a comment --><presence/>")
        self.assertIn("<restricted-xml", out)

    def test_not_well_formed(self):
        out = self.exchange(self.HEADER + b"<presence><x></presence>")
        self.assertIn("<not-well-formed", out)

    def test_wrong_namespace(self):
        out = self.exchange(self.HEADER.replace(b"xmlns='jabber:client'", b"xmlns='jabber:server'"))
        self.assertIn("<invalid-namespace", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
