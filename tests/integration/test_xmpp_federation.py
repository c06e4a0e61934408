"""XMPP federation (RFC 6120 server-to-server) between two hearth instances on different
loopback addresses serving different domains (a.test on 127.0.0.1, b.test on 127.0.0.2),
reached through static routes, with certificates from a test CA made here: 1:1 messages
both ways, presence subscriptions both ways, a user of b.test in a room at
conference.a.test, and a third server (c.test on 127.0.0.3) whose certificate names
another domain, refused with dialback's <not-authorized/> error."""
import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest

from harness import Hearth, free_port
from test_xmpp_client import Client, next_item, TIMEOUT, wait_for_condition

MUC_USER = "http://jabber.org/protocol/muc#user"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-subj", "/CN=hearth federation test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    return os.path.join(d, "ca.crt")


def make_cert(d, name, dns_names):
    """A certificate for `name` (files name.crt/name.key) signed by the test CA."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={dns_names[0]}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in dns_names) + "\n"
                "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    return os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")


def server(domain, host, port, cert, ca, routes, extra=""):
    routes_toml = ", ".join(f'"{r}"' for r in routes)
    return Hearth(
        domain=domain,
        domain_extra=f'tls_cert = "{cert[0]}"\ntls_key = "{cert[1]}"\n',
        xmpp_extra=(f'bind = ["{host}"]\ns2s_static_routes = [{routes_toml}]\ns2s_ca_file = "{ca}"\n'
                    f's2s_port = {port}\n{extra}'),
    )


class FedClient(Client):
    def __init__(self, jid, password, cafile, host):
        super().__init__(jid, password, cafile)
        self.host = host
        self.register_plugin("xep_0045")
        self.room_messages = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.add_event_handler("groupchat_message", lambda m: self.room_messages.put_nowait(m))
        self.add_event_handler("message_error", lambda m: self.errors.put_nowait(m))

    async def login(self, port, direct_tls=False):
        started = asyncio.ensure_future(self.wait_until("session_start", TIMEOUT))
        self.connect(address=(self.host, port), use_ssl=direct_tls, force_starttls=not direct_tls)
        await started
        self.send_presence()
        await self.get_roster()


class XmppFederation(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hearth-s2s-")
        cls.ca = make_ca(cls.tmp)
        cert_a = make_cert(cls.tmp, "a", ["a.test", "conference.a.test", "upload.a.test"])
        cert_b = make_cert(cls.tmp, "b", ["b.test", "conference.b.test", "upload.b.test"])
        # c.test presents a valid certificate from the same CA, but for another domain.
        cert_c = make_cert(cls.tmp, "c", ["wrong.test", "conference.wrong.test"])
        pa, pb, pc = free_port("127.0.0.1"), free_port("127.0.0.2"), free_port("127.0.0.3")
        to_a = [f"a.test=127.0.0.1:{pa}", f"conference.a.test=127.0.0.1:{pa}"]
        to_b = [f"b.test=127.0.0.2:{pb}", f"conference.b.test=127.0.0.2:{pb}"]
        cls.a = server("a.test", "127.0.0.1", pa, cert_a, cls.ca, to_b + [f"c.test=127.0.0.3:{pc}"])
        cls.b = server("b.test", "127.0.0.2", pb, cert_b, cls.ca, to_a)
        cls.c = server("c.test", "127.0.0.3", pc, cert_c, cls.ca, to_a, "s2s_max_attempts = 1\n")
        for h in (cls.a, cls.b, cls.c):
            h.start()
        cls.a.add_users("alice", "anna")
        cls.b.add_users("bob", "bea")
        cls.c.add_users("carol")

    @classmethod
    def tearDownClass(cls):
        for h in (cls.a, cls.b, cls.c):
            h.stop()
            h.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    async def client(self, h, name, host):
        c = FedClient(f"{name}@{h.domain}/test", f"{name} secret pw", self.ca, host)
        self.addAsyncCleanup(self._stop, c)
        await c.login(h.xmpp_port)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    async def test_messages_both_ways(self):
        alice = await self.client(self.a, "alice", "127.0.0.1")
        bob = await self.client(self.b, "bob", "127.0.0.2")
        alice.send_message(mto="bob@b.test", mbody="hello from a", mtype="chat")
        m = await next_item(bob.messages, lambda m: m["body"] == "hello from a")
        self.assertEqual(m["from"].bare, "alice@a.test")
        bob.send_message(mto=m["from"], mbody="hello from b", mtype="chat")
        m = await next_item(alice.messages, lambda m: m["body"] == "hello from b")
        self.assertEqual(str(m["from"]), "bob@b.test/test")
        # b.test authenticated a.test with SASL EXTERNAL on a verified certificate, and the
        # reply went back over the same stream (XEP-0288): b.test opened none of its own.
        self.b.wait_for_log("event=xmpp.s2s_in_authenticated from=a.test to=b.test method=EXTERNAL")
        self.b.wait_for_log("event=xmpp.s2s_bidi from=b.test to=a.test")
        self.assertFalse(any("xmpp.s2s_out_ready from=b.test to=a.test" in l for l in self.b.stdout_lines))

    async def test_presence_subscription_both_ways(self):
        anna = await self.client(self.a, "anna", "127.0.0.1")
        bea = await self.client(self.b, "bea", "127.0.0.2")
        anna.send_presence(pto="bea@b.test", ptype="subscribe")
        req = await next_item(bea.subscribes, lambda p: p["from"].bare == "anna@a.test")
        bea.send_presence(pto=req["from"].bare, ptype="subscribed")
        bea.send_presence(pto=req["from"].bare, ptype="subscribe")
        req = await next_item(anna.subscribes, lambda p: p["from"].bare == "bea@b.test")
        anna.send_presence(pto="bea@b.test", ptype="subscribed")
        await wait_for_condition(lambda: anna.client_roster["bea@b.test"]["subscription"] == "both",
                                 what="anna's roster: both")
        await wait_for_condition(lambda: bea.client_roster["anna@a.test"]["subscription"] == "both",
                                 what="bea's roster: both")
        # Presence now flows across: a new available presence from bea reaches anna.
        bea.send_presence(pstatus="across")
        await next_item(anna.presences, lambda p: p["from"].bare == "bea@b.test" and p["status"] == "across")
        anna.send_presence(pstatus="back")
        await next_item(bea.presences, lambda p: p["from"].bare == "anna@a.test" and p["status"] == "back")

    async def test_muc_join_across_servers(self):
        alice = await self.client(self.a, "alice", "127.0.0.1")
        bob = await self.client(self.b, "bob", "127.0.0.2")
        room = "lounge@conference.a.test"
        await alice["xep_0045"].join_muc_wait(room, "Alice", timeout=TIMEOUT)
        await bob["xep_0045"].join_muc_wait(room, "Bob", timeout=TIMEOUT)
        bob.send_message(mto=room, mbody="hi room, from b", mtype="groupchat")
        m = await next_item(alice.room_messages, lambda m: m["body"] == "hi room, from b")
        self.assertEqual(str(m["from"]), f"{room}/Bob")
        alice.send_message(mto=room, mbody="welcome, bob", mtype="groupchat")
        m = await next_item(bob.room_messages, lambda m: m["body"] == "welcome, bob")
        self.assertEqual(str(m["from"]), f"{room}/Alice")

    async def test_certificate_for_another_domain_is_refused(self):
        carol = await self.client(self.c, "carol", "127.0.0.3")
        carol.send_message(mto="alice@a.test", mbody="let me in", mtype="chat")
        err = await next_item(carol.errors, lambda m: m["body"] == "let me in" or m["error"]["condition"])
        self.assertEqual(err["error"]["condition"], "remote-server-not-found")
        self.a.wait_for_log("event=xmpp.s2s_in_refused from=c.test")
        self.c.wait_for_log("dialback refused (not-authorized)")


if __name__ == "__main__":
    unittest.main()


STREAM_NS = "http://etherx.jabber.org/streams"
STREAMS_ERR_NS = "urn:ietf:params:xml:ns:xmpp-streams"


class RawS2s:
    """A hand-driven server-to-server stream (what a misbehaving peer would send)."""

    def __init__(self, port, host="127.0.0.1", timeout=15):
        import xml.etree.ElementTree as ET
        self.ET = ET
        self.raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = self.raw
        self._reset()

    def _reset(self):
        self.parser = self.ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.ready = []

    def send(self, text):
        self.sock.sendall(text.encode())

    def open(self, frm, to):
        self._reset()
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  f"xmlns:stream='{STREAM_NS}' from='{frm}' to='{to}' version='1.0'>")

    def next(self):
        """The next complete top-level element, or None when the stream ended."""
        while not self.ready:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.ready.append(el)
                    elif self.depth == 0:
                        self.ready.append(None)
        return self.ready.pop(0)

    def expect(self, name):
        el = self.next()
        assert el is not None and el.tag == name, f"wanted {name}, got {el if el is None else el.tag}"
        return el

    def starttls(self, ca, cert, key, server_name):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.expect("{urn:ietf:params:xml:ns:xmpp-tls}proceed")
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(cert, key)
        self.sock = ctx.wrap_socket(self.raw, server_hostname=server_name)

    def stream_error(self):
        """The condition of the stream error that ends the stream (skipping anything before it)."""
        while True:
            el = self.next()
            if el is None:
                return None
            if el.tag == f"{{{STREAM_NS}}}error":
                for child in el:
                    if child.tag.startswith(f"{{{STREAMS_ERR_NS}}}") and not child.tag.endswith("}text"):
                        return child.tag.split("}")[1]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass



class S2sBadInput(unittest.TestCase):
    """What the s2s listener answers to peers that skip TLS, lie about their domain or flood."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hearth-s2s-bad-")
        cls.ca = make_ca(cls.tmp)
        cert_a = make_cert(cls.tmp, "a", ["a.test", "conference.a.test"])
        cls.cert_b = make_cert(cls.tmp, "b", ["b.test"])
        pa = free_port("127.0.0.1")
        # Answers to b.test go nowhere fast (a closed port), never to DNS.
        cls.a = server("a.test", "127.0.0.1", pa, cert_a, cls.ca, ["b.test=127.0.0.1:1"],
                       "s2s_max_attempts = 1\ns2s_max_pending_bytes = 65536\n")
        cls.a.start()
        cls.a.add_users("alice")
        cls.port = pa

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.a.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def peer(self):
        p = RawS2s(self.port)
        self.addCleanup(p.close)
        return p

    def authenticated_peer(self):
        p = self.peer()
        p.open("b.test", "a.test")
        p.expect(f"{{{STREAM_NS}}}features")
        p.starttls(self.ca, *self.cert_b, "a.test")
        p.open("b.test", "a.test")
        features = p.expect(f"{{{STREAM_NS}}}features")
        mechs = [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
        self.assertIn("EXTERNAL", mechs)
        p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        p.expect("{urn:ietf:params:xml:ns:xmpp-sasl}success")
        p.open("b.test", "a.test")
        p.expect(f"{{{STREAM_NS}}}features")
        return p

    def test_stanzas_before_starttls_are_refused(self):
        p = self.peer()
        p.open("b.test", "a.test")
        features = p.expect(f"{{{STREAM_NS}}}features")
        self.assertIsNotNone(features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls/{urn:ietf:params:xml:ns:xmpp-tls}required"))
        p.send("<message from='bob@b.test' to='alice@a.test'><body>plain</body></message>")
        self.assertEqual(p.stream_error(), "policy-violation")

    def test_unknown_domain_and_missing_from(self):
        p = self.peer()
        p.open("b.test", "elsewhere.test")
        self.assertEqual(p.stream_error(), "host-unknown")
        p = self.peer()
        p.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
               f"xmlns:stream='{STREAM_NS}' to='a.test' version='1.0'>")
        self.assertEqual(p.stream_error(), "invalid-from")

    def test_claiming_another_domain_than_the_certificate_is_refused(self):
        p = self.peer()
        p.open("c.test", "a.test")  # b.test's certificate, c.test's name
        p.expect(f"{{{STREAM_NS}}}features")
        p.starttls(self.ca, *self.cert_b, "a.test")
        p.open("c.test", "a.test")
        features = p.expect(f"{{{STREAM_NS}}}features")
        self.assertEqual([m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")], [])
        p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        self.assertEqual(p.expect("{urn:ietf:params:xml:ns:xmpp-sasl}failure")[0].tag,
                         "{urn:ietf:params:xml:ns:xmpp-sasl}not-authorized")
        self.assertEqual(p.stream_error(), "not-authorized")

    def test_dialback_for_a_domain_the_certificate_does_not_name(self):
        p = self.peer()
        p.open("c.test", "a.test")
        p.expect(f"{{{STREAM_NS}}}features")
        p.starttls(self.ca, *self.cert_b, "a.test")
        p.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
               f"xmlns:stream='{STREAM_NS}' from='c.test' to='a.test' version='1.0'>")
        p._reset()
        p.next()  # stream header's children: the features
        p.send("<db:result from='c.test' to='a.test'>0123456789abcdef</db:result>")
        result = p.expect("{jabber:server:dialback}result")
        self.assertEqual(result.get("type"), "error")
        self.assertIsNotNone(result.find("{jabber:server}error/{urn:ietf:params:xml:ns:xmpp-stanzas}not-authorized"))
        # Nothing from c.test is accepted on this stream.
        p.send("<message from='eve@c.test' to='alice@a.test'><body>x</body></message>")
        self.assertEqual(p.stream_error(), "not-authorized")

    def test_spoofed_from_is_refused(self):
        p = self.authenticated_peer()
        p.send("<message from='mallory@evil.test' to='alice@a.test'><body>spoof</body></message>")
        self.assertEqual(p.stream_error(), "invalid-from")

    def test_stanza_for_a_domain_not_served_here(self):
        p = self.authenticated_peer()
        p.send("<message from='bob@b.test' to='someone@elsewhere.test'><body>relay?</body></message>")
        self.assertEqual(p.stream_error(), "host-unknown")

    def test_flood_is_refused_with_policy_violation(self):
        p = self.authenticated_peer()
        burst = "".join(f"<message from='bob@b.test' to='alice@a.test' type='chat' id='f{i}'><body>flood {i}</body></message>"
                        for i in range(20000))
        try:
            p.send(burst)
        except OSError:
            pass  # the server may cut us off while we are still writing
        self.assertEqual(p.stream_error(), "policy-violation")
        # The server still serves: a fresh, polite peer gets in.
        self.authenticated_peer()
