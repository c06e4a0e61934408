"""What the server tells clients about itself: XEP-0157 contact addresses in its disco#info
(with XEP-0115 caps that verify, extended form included) and XEP-0215 STUN/TURN services
with coturn shared-secret credentials, asked for by slixmpp."""
import base64
import hashlib
import hmac
import unittest
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from harness import Hearth
from test_xmpp_client import Client, TIMEOUT, wait_for_condition

EXTDISCO = "urn:xmpp:extdisco:2"
SECRET = "coturn shared secret"


class XmppServerServices(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra=(
            '[contact]\nabuse = ["mailto:abuse@localhost"]\n'
            'support = ["xmpp:help@localhost", "https://localhost/help"]\n'
            f'[turn]\nhost = "turn.localhost"\nport = 3478\ntls_port = 5349\nsecret = "{SECRET}"\n'
            'ttl_seconds = 600\n')).start()
        r = cls.h.ctl("user", "add", "alice@localhost", stdin="alice secret pw\n")
        assert r.returncode == 0, r.stderr

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def asyncSetUp(self):
        self.c = Client("alice@localhost/test", "alice secret pw", self.h.cert_path())
        self.c.register_plugin("xep_0115")
        self.c.register_plugin("xep_0128")
        await self.c.login(self.h.xmpp_port)

    async def asyncTearDown(self):
        await self.c.stop()

    async def test_contact_addresses_and_caps(self):
        info = await self.c["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)
        forms = info["disco_info"].xml.findall("{jabber:x:data}x")
        self.assertEqual(len(forms), 1)
        fields = {}
        for f in forms[0].findall("{jabber:x:data}field"):
            fields[f.get("var")] = [v.text for v in f.findall("{jabber:x:data}value")]
        self.assertEqual(fields["FORM_TYPE"], ["http://jabber.org/network/serverinfo"])
        self.assertEqual(fields["abuse-addresses"], ["mailto:abuse@localhost"])
        self.assertEqual(fields["support-addresses"], ["xmpp:help@localhost", "https://localhost/help"])
        self.assertNotIn("admin-addresses", fields)
        self.assertIn(EXTDISCO, info["disco_info"]["features"])
        # slixmpp verified the caps hash from the stream features against this disco#info
        # (extended form included) before caching it for the server's JID.
        cached = {}

        async def verified():
            cached["info"] = await self.c["xep_0115"].get_caps(jid="localhost")
            return cached["info"] is not None
        deadline = self.c.loop.time() + TIMEOUT
        while not await verified():
            self.assertLess(self.c.loop.time(), deadline, "slixmpp never verified the server's caps")
            await __import__("asyncio").sleep(0.05)

    async def test_turn_services_with_shared_secret_credentials(self):
        iq = self.c.Iq(stype="get", sto="localhost")
        iq.append(ET.fromstring(f"<services xmlns='{EXTDISCO}'/>"))
        result = await iq.send(timeout=TIMEOUT)
        services = result.xml.find(f"{{{EXTDISCO}}}services").findall(f"{{{EXTDISCO}}}service")
        kinds = sorted((s.get("type"), s.get("transport"), s.get("port")) for s in services)
        self.assertEqual(kinds, [("stun", "udp", "3478"), ("turn", "tcp", "3478"), ("turn", "udp", "3478"),
                                 ("turns", "tcp", "5349")])
        for s in services:
            self.assertEqual(s.get("host"), "turn.localhost")
            if s.get("type") == "stun":
                self.assertIsNone(s.get("password"))
                continue
            # What coturn (use-auth-secret) checks: username "<expiry>:<user>",
            # password base64(HMAC-SHA1(secret, username)).
            username = s.get("username")
            expiry, user = username.split(":", 1)
            self.assertEqual(user, "alice@localhost")
            expected = base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
            self.assertEqual(s.get("password"), expected)
            self.assertEqual(s.get("restricted"), "1")
            import time
            self.assertLessEqual(abs(int(expiry) - (time.time() + 600)), 60)

        creds = self.c.Iq(stype="get", sto="localhost")
        creds.append(ET.fromstring(f"<credentials xmlns='{EXTDISCO}'><service host='turn.example' type='turn'/>"
                                   "</credentials>"))
        with self.assertRaises(IqError) as missing:
            await creds.send(timeout=TIMEOUT)
        self.assertEqual(missing.exception.iq["error"]["condition"], "item-not-found")


if __name__ == "__main__":
    unittest.main()
