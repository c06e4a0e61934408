"""XEP-0388 SASL2 with XEP-0386 Bind 2 and XEP-0484 FAST: what current mobile clients
(Conversations, Monal, Siskin) use to log in and resume in one round trip. No client in
Debian 12 speaks these yet, so this test drives them with a small raw-XML client
(xmpp_raw.py) whose SCRAM and HT computations are independent of the server's."""
import base64
import hashlib
import os
import unittest
import uuid

from harness import Hearth
from xmpp_raw import (BIND2, CLIENT, FAST, SASL, SASL2, SM, RawXmpp, Scram, b64, ht_initiator, ht_responder, q)

PASSWORD = "alice secret pw"


class XmppSasl2(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("alice", "bob")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def connect(self):
        c = RawXmpp(self.h.xmpps_port, self.h.cert_path())
        self.addCleanup(c.sock.close)
        features = c.open_stream(frm="alice@localhost")
        return c, features

    def password_login(self, ua_id, plus=True, bind="", extra=""):
        c, features = self.connect()
        scram = Scram("alice", PASSWORD, c.server_cert_hash() if plus else None)
        c.send(f"<authenticate xmlns='{SASL2}' mechanism='{scram.mechanism}'>"
               f"<initial-response>{b64(scram.initial())}</initial-response>"
               f"<user-agent id='{ua_id}'><software>hearth-test</software><device>laptop</device></user-agent>"
               f"{bind}{extra}</authenticate>")
        challenge = c.next(q(SASL2, "challenge"))
        c.send(f"<response xmlns='{SASL2}'>{b64(scram.final(base64.b64decode(challenge.text)))}</response>")
        success = c.next()
        self.assertEqual(success.tag, q(SASL2, "success"), ET_dump(success))
        self.assertTrue(scram.verify(base64.b64decode(success.find(q(SASL2, "additional-data")).text)),
                        "the server proved it knows the password's server key")
        return c, features, success

    def test_features_advertise_sasl2_bind2_and_fast(self):
        c, features = self.connect()
        auth = features.find(q(SASL2, "authentication"))
        self.assertIsNotNone(auth)
        mechanisms = [m.text for m in auth.findall(q(SASL2, "mechanism"))]
        self.assertIn("SCRAM-SHA-256-PLUS", mechanisms)
        inline = auth.find(q(SASL2, "inline"))
        self.assertIsNotNone(inline.find(q(BIND2, "bind")))
        self.assertIsNotNone(inline.find(q(SM, "sm")))
        fast = [m.text for m in inline.find(q(FAST, "fast")).findall(q(FAST, "mechanism"))]
        self.assertIn("HT-SHA-256-ENDP", fast)
        self.assertIn("HT-SHA-256-NONE", fast)
        c.close()

    def test_one_round_trip_login_bind_and_fast_token(self):
        ua = str(uuid.uuid4())
        bind = (f"<bind xmlns='{BIND2}'><tag>HearthTest</tag><enable xmlns='urn:xmpp:carbons:2'/>"
                f"<enable xmlns='{SM}' resume='true'/></bind>")
        c, _, success = self.password_login(ua, bind=bind,
                                            extra=f"<request-token xmlns='{FAST}' mechanism='HT-SHA-256-ENDP'/>")
        jid = success.find(q(SASL2, "authorization-identifier")).text
        self.assertTrue(jid.startswith("alice@localhost/HearthTest."), jid)
        bound = success.find(q(BIND2, "bound"))
        self.assertIsNotNone(bound)
        self.assertIsNotNone(bound.find("{urn:xmpp:mam:2}metadata"))
        enabled = bound.find(q(SM, "enabled"))
        self.assertEqual(enabled.get("resume"), "true")
        token = success.find(q(FAST, "token"))
        self.assertTrue(token.get("token") and token.get("expiry"))
        # No stream restart: the features of the bound stream follow, and stanzas flow.
        c.next(q("http://etherx.jabber.org/streams", "features"))
        c.send("<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = c.next(q(CLIENT, "iq"))
        self.assertEqual((pong.get("id"), pong.get("type")), ("ping1", "result"))
        c.close()

        # The next connection authenticates with the token in one round trip, bound to the
        # TLS channel (tls-server-end-point), and gets the same resource back.
        c2, _ = self.connect()
        cb = c2.server_cert_hash()
        c2.send(f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-ENDP'>"
                f"<initial-response>{b64(ht_initiator('alice', token.get('token'), cb))}</initial-response>"
                f"<user-agent id='{ua}'/><bind xmlns='{BIND2}'><tag>HearthTest</tag></bind>"
                f"<fast xmlns='{FAST}'/></authenticate>")
        success2 = c2.next()
        self.assertEqual(success2.tag, q(SASL2, "success"), ET_dump(success2))
        self.assertEqual(base64.b64decode(success2.find(q(SASL2, "additional-data")).text),
                         ht_responder(token.get("token"), cb), "the server proved it holds the token")
        self.assertEqual(success2.find(q(SASL2, "authorization-identifier")).text, jid,
                         "Bind 2 gives one installation a stable resource")
        c2.close()

        # A token is bound to its mechanism: the same token without channel binding fails.
        c3, _ = self.connect()
        c3.send(f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'>"
                f"<initial-response>{b64(ht_initiator('alice', token.get('token')))}</initial-response>"
                f"<user-agent id='{ua}'/><fast xmlns='{FAST}'/></authenticate>")
        failure = c3.next()
        self.assertEqual(failure.tag, q(SASL2, "failure"))
        self.assertIsNotNone(failure.find(q(SASL, "not-authorized")))
        c3.close()

        # Invalidation: a successful login with invalidate='true' ends the token.
        c4, _ = self.connect()
        cb = c4.server_cert_hash()
        c4.send(f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-ENDP'>"
                f"<initial-response>{b64(ht_initiator('alice', token.get('token'), cb))}</initial-response>"
                f"<user-agent id='{ua}'/><fast xmlns='{FAST}' invalidate='true'/></authenticate>")
        self.assertEqual(c4.next().tag, q(SASL2, "success"))
        c4.close()
        c5, _ = self.connect()
        cb = c5.server_cert_hash()
        c5.send(f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-ENDP'>"
                f"<initial-response>{b64(ht_initiator('alice', token.get('token'), cb))}</initial-response>"
                f"<user-agent id='{ua}'/><fast xmlns='{FAST}'/></authenticate>")
        self.assertEqual(c5.next().tag, q(SASL2, "failure"))
        c5.close()

    def test_wrong_password_fails_in_the_sasl2_namespace(self):
        c, _ = self.connect()
        scram = Scram("alice", "wrong password")
        c.send(f"<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'>"
               f"<initial-response>{b64(scram.initial())}</initial-response></authenticate>")
        challenge = c.next(q(SASL2, "challenge"))
        c.send(f"<response xmlns='{SASL2}'>{b64(scram.final(base64.b64decode(challenge.text)))}</response>")
        failure = c.next()
        self.assertEqual(failure.tag, q(SASL2, "failure"))
        self.assertIsNotNone(failure.find(q(SASL, "not-authorized")))
        c.close()

    def test_inline_resumption_after_a_dropped_connection(self):
        ua = str(uuid.uuid4())
        bind = f"<bind xmlns='{BIND2}'><tag>Phone</tag><enable xmlns='{SM}' resume='true'/></bind>"
        c, _, success = self.password_login(ua, bind=bind,
                                            extra=f"<request-token xmlns='{FAST}' mechanism='HT-SHA-256-NONE'/>")
        token = success.find(q(FAST, "token")).get("token")
        previd = success.find(q(BIND2, "bound")).find(q(SM, "enabled")).get("id")
        c.send("<presence/>")
        c.drop()  # the phone loses its network; the session waits for it

        # bob writes while alice is away: the message waits in the detached session.
        b, _ = RawXmpp(self.h.xmpps_port, self.h.cert_path()), None
        self.addCleanup(b.sock.close)
        b.open_stream()
        scram = Scram("bob", "bob secret pw")
        b.send(f"<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'>"
               f"<initial-response>{b64(scram.initial())}</initial-response>"
               f"<bind xmlns='{BIND2}'><tag>Desk</tag></bind></authenticate>")
        ch = b.next(q(SASL2, "challenge"))
        b.send(f"<response xmlns='{SASL2}'>{b64(scram.final(base64.b64decode(ch.text)))}</response>")
        self.assertEqual(b.next().tag, q(SASL2, "success"))
        full = success.find(q(SASL2, "authorization-identifier")).text
        b.send(f"<message to='{full}' type='chat' id='m1'><body>while you were away</body></message>")
        b.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        b.next(q(CLIENT, "iq"))

        # One round trip: FAST token plus inline resumption; the message arrives.
        c2, _ = self.connect()
        c2.send(f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'>"
                f"<initial-response>{b64(ht_initiator('alice', token))}</initial-response>"
                f"<user-agent id='{ua}'/><fast xmlns='{FAST}'/><resume xmlns='{SM}' previd='{previd}' h='0'/>"
                f"<bind xmlns='{BIND2}'><tag>Phone</tag></bind></authenticate>")
        success2 = c2.next()
        self.assertEqual(success2.tag, q(SASL2, "success"), ET_dump(success2))
        resumed = success2.find(q(SM, "resumed"))
        self.assertIsNotNone(resumed, "the session was resumed, not bound anew")
        self.assertIsNone(success2.find(q(BIND2, "bound")))
        self.assertEqual(success2.find(q(SASL2, "authorization-identifier")).text, full)
        msg = c2.next(q(CLIENT, "message"))
        self.assertEqual(msg.find(q(CLIENT, "body")).text, "while you were away")
        c2.close()
        b.close()


SASL_CB = "urn:xmpp:sasl-cb:0"


def ssdp_hash(mechanisms, cb_types, digest=hashlib.sha256):
    """XEP-0474 (0.5.0): base64(H(sorted mechanisms joined by 0x1E [+ 0x1F + sorted
    channel-binding types joined by 0x1E])), computed here from what the client saw."""
    s = "\x1e".join(sorted(mechanisms))
    if cb_types:
        s += "\x1f" + "\x1e".join(sorted(cb_types))
    return base64.b64encode(digest(s.encode()).digest()).decode()


class ScramDowngradeProtection(unittest.TestCase):
    """XEP-0474: the server-first-message carries h=, the hash of the advertised mechanism
    list and XEP-0440 channel-binding types, inside the SCRAM exchange the password signs."""

    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("alice")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def login(self, profile, plus):
        c = RawXmpp(self.h.xmpps_port, self.h.cert_path())
        self.addCleanup(c.sock.close)
        features = c.open_stream()
        container = features.find(q(SASL, "mechanisms") if profile == SASL else q(SASL2, "authentication"))
        mechanisms = [m.text for m in container.findall(q(profile, "mechanism"))]
        cb_types = [t.get("type") for t in features.iter(q(SASL_CB, "channel-binding"))]
        scram = Scram("alice", PASSWORD, c.server_cert_hash() if plus else None)
        if profile == SASL:
            c.send(f"<auth xmlns='{SASL}' mechanism='{scram.mechanism}'>{b64(scram.initial())}</auth>")
        else:
            c.send(f"<authenticate xmlns='{SASL2}' mechanism='{scram.mechanism}'>"
                   f"<initial-response>{b64(scram.initial())}</initial-response></authenticate>")
        server_first = base64.b64decode(c.next(q(profile, "challenge")).text)
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        c.send(f"<response xmlns='{profile}'>{b64(scram.final(server_first))}</response>")
        success = c.next()
        self.assertEqual(success.tag, q(profile, "success"))
        data = success.text if profile == SASL else success.find(q(SASL2, "additional-data")).text
        self.assertTrue(scram.verify(base64.b64decode(data)))
        return attrs.get("h"), mechanisms, cb_types

    def test_hash_over_what_sasl_and_sasl2_advertised(self):
        for profile in (SASL, SASL2):
            for plus in (True, False):
                with self.subTest(profile=profile, plus=plus):
                    h, mechanisms, cb_types = self.login(profile, plus)
                    self.assertEqual(set(cb_types), {"tls-exporter", "tls-server-end-point"})
                    self.assertEqual(h, ssdp_hash(mechanisms, cb_types))
                    # What a client would compute had a man in the middle removed the -PLUS
                    # mechanisms and the binding types: it no longer matches, so the client aborts.
                    trimmed = [m for m in mechanisms if not m.endswith("-PLUS")]
                    self.assertNotEqual(h, ssdp_hash(trimmed, []))


def ET_dump(el):
    import xml.etree.ElementTree as ET
    return ET.tostring(el).decode()


if __name__ == "__main__":
    unittest.main()
