"""XEP-0054 vCards (with a XEP-0153 PHOTO), XEP-0049 private XML storage, XEP-0012 last
activity and XEP-0191 blocking, each driven by slixmpp's own plugin for it."""
import asyncio
import base64
import unittest

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET, ElementBase

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT, wait_for_condition

VCARD_NS = "vcard-temp"
# A 1x1 PNG, as an avatar would be sent (XEP-0153 keeps it in the vCard's PHOTO).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==")


class Prefs(ElementBase):
    """A client's own element for private storage."""
    name = "prefs"
    namespace = "urn:hearth:test:prefs"
    plugin_attrib = "hearth_prefs"
    interfaces = {"colour"}
    sub_interfaces = interfaces


class ExtClient(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for plugin in ("xep_0054", "xep_0049", "xep_0012", "xep_0191"):
            self.register_plugin(plugin)
        self["xep_0049"].register(Prefs)
        self.block_pushes = asyncio.Queue()
        self.add_event_handler("blocked", lambda iq: self.block_pushes.put_nowait(("block", iq)))
        self.add_event_handler("unblocked", lambda iq: self.block_pushes.put_nowait(("unblock", iq)))
        self.message_errors = asyncio.Queue()
        self.add_event_handler("message_error", lambda m: self.message_errors.put_nowait(m))

    async def sync(self):
        """A round trip through the server: everything this session sent before is handled."""
        await self["xep_0199"].ping(jid=self.boundjid.domain, timeout=TIMEOUT)


def drain(queue):
    """What a queue holds right now, without waiting."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def blocked_jids(iq, kind):
    return {str(j) for j in iq[kind]["items"]}


class XmppExtensions(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("ann", "ben", "pat", "lea", "bea", "mal", "tom", "zoe", "max")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def client(self, name, resource="test"):
        c = ExtClient(f"{name}@localhost/{resource}", f"{name} secret pw", self.h.cert_path())
        self.addAsyncCleanup(self._stop, c)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    async def test_server_advertises_the_extensions(self):
        c = self.client("lea")
        await c.login(self.h.xmpp_port)
        info = await c["xep_0030"].get_info(jid="localhost")
        features = info["disco_info"]["features"]
        for feature in ("vcard-temp", "jabber:iq:private", "jabber:iq:last", "urn:xmpp:blocking"):
            self.assertIn(feature, features)

    # ---- XEP-0054 / XEP-0153 ---------------------------------------------------------

    async def test_vcard_set_and_get_with_photo(self):
        laptop = self.client("ann", resource="laptop")
        await laptop.login(self.h.xmpp_port)
        # Nothing stored yet: an empty vCard, not an error.
        empty = await laptop["xep_0054"].get_vcard(jid="ann@localhost", timeout=TIMEOUT)
        self.assertEqual(len(list(empty["vcard_temp"].xml)), 0)

        vcard = laptop["xep_0054"].make_vcard()
        vcard["FN"] = "Ann Example"
        vcard["N"]["GIVEN"] = "Ann"
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = PNG
        await laptop["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)

        # Another device of the account reads it back from the server.
        desk = self.client("ann", resource="desk")
        await desk.login(self.h.xmpp_port)
        iq = await desk["xep_0054"].get_vcard(jid="ann@localhost", timeout=TIMEOUT)
        got = iq["vcard_temp"]
        self.assertEqual(got["FN"], "Ann Example")
        self.assertEqual(got["N"]["GIVEN"], "Ann")
        self.assertEqual(got["PHOTO"]["TYPE"], "image/png")
        binval = got.xml.find(f"{{{VCARD_NS}}}PHOTO/{{{VCARD_NS}}}BINVAL")
        self.assertIsNotNone(binval)
        self.assertEqual(base64.b64decode(binval.text), PNG)

        # A new vCard replaces the old one entirely.
        smaller = laptop["xep_0054"].make_vcard()
        smaller["FN"] = "Ann"
        await laptop["xep_0054"].publish_vcard(smaller, timeout=TIMEOUT)
        iq = await desk["xep_0054"].get_vcard(jid="ann@localhost", timeout=TIMEOUT)
        self.assertEqual(iq["vcard_temp"]["FN"], "Ann")
        self.assertIsNone(iq["vcard_temp"].xml.find(f"{{{VCARD_NS}}}PHOTO"))

    async def test_oversized_vcard_is_refused(self):
        c = self.client("ann", resource="big")
        await c.login(self.h.xmpp_port)
        vcard = c["xep_0054"].make_vcard()
        vcard["FN"] = "Too big"
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = b"\0" * (100 * 1024)
        with self.assertRaises(IqError) as err:
            await c["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
        self.assertEqual(err.exception.condition, "not-acceptable")

    async def test_other_accounts_vcard(self):
        ben, lea = self.client("ben"), self.client("lea", resource="reader")
        await ben.login(self.h.xmpp_port)
        await lea.login(self.h.xmpp_port)
        vcard = ben["xep_0054"].make_vcard()
        vcard["FN"] = "Ben Public"
        await ben["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
        iq = await lea["xep_0054"].get_vcard(jid="ben@localhost", timeout=TIMEOUT)
        self.assertEqual(iq["vcard_temp"]["FN"], "Ben Public")
        # No vCard and no account answer alike (XEP-0054 §3.3).
        for jid in ("pat@localhost", "nobody@localhost"):
            with self.assertRaises(IqError) as err:
                await lea["xep_0054"].get_vcard(jid=jid, timeout=TIMEOUT)
            self.assertEqual(err.exception.condition, "service-unavailable")

    # ---- XEP-0049 --------------------------------------------------------------------

    async def test_private_storage_round_trip(self):
        one = self.client("pat", resource="one")
        await one.login(self.h.xmpp_port)
        # Nothing stored: the element comes back as asked for.
        iq = await one["xep_0049"].retrieve("hearth_prefs", timeout=TIMEOUT)
        self.assertEqual(iq["private"]["hearth_prefs"]["colour"], "")

        prefs = Prefs()
        prefs["colour"] = "blue"
        await one["xep_0049"].store(prefs, timeout=TIMEOUT)
        two = self.client("pat", resource="two")
        await two.login(self.h.xmpp_port)
        iq = await two["xep_0049"].retrieve("hearth_prefs", timeout=TIMEOUT)
        self.assertEqual(iq["private"]["hearth_prefs"]["colour"], "blue")

        prefs["colour"] = "green"
        await two["xep_0049"].store(prefs, timeout=TIMEOUT)
        iq = await one["xep_0049"].retrieve("hearth_prefs", timeout=TIMEOUT)
        self.assertEqual(iq["private"]["hearth_prefs"]["colour"], "green")

        # Another account sees only its own data.
        other = self.client("lea", resource="private")
        await other.login(self.h.xmpp_port)
        iq = await other["xep_0049"].retrieve("hearth_prefs", timeout=TIMEOUT)
        self.assertEqual(iq["private"]["hearth_prefs"]["colour"], "")

    async def test_private_storage_refuses_reserved_namespaces(self):
        c = self.client("pat", resource="reserved")
        await c.login(self.h.xmpp_port)
        for ns in ("jabber:client", "jabber:server", "jabber:iq:private"):
            iq = c.make_iq_set()
            iq.enable("private")
            iq["private"].xml.append(ET.Element(f"{{{ns}}}data"))
            with self.assertRaises(IqError) as err:
                await iq.send(timeout=TIMEOUT)
            self.assertEqual(err.exception.condition, "not-acceptable", ns)
        empty = c.make_iq_get()
        empty.enable("private")
        with self.assertRaises(IqError) as err:
            await empty.send(timeout=TIMEOUT)
        self.assertEqual(err.exception.condition, "not-acceptable")

    # ---- XEP-0012 --------------------------------------------------------------------

    async def test_last_activity_of_the_server_is_its_uptime(self):
        c = self.client("lea", resource="last")
        await c.login(self.h.xmpp_port)
        first = await c["xep_0012"].get_last_activity("localhost", timeout=TIMEOUT)
        seconds = int(first["last_activity"]["seconds"])
        self.assertGreaterEqual(seconds, 0)
        await asyncio.sleep(1.2)
        later = await c["xep_0012"].get_last_activity("localhost", timeout=TIMEOUT)
        self.assertGreaterEqual(int(later["last_activity"]["seconds"]), seconds + 1)

    async def test_last_activity_of_a_contact_is_the_time_since_logout(self):
        zoe, mx = self.client("zoe"), self.client("max")
        await zoe.login(self.h.xmpp_port)
        await mx.login(self.h.xmpp_port)
        for x, y in ((zoe, mx), (mx, zoe)):
            x.send_presence(pto=y.boundjid.bare, ptype="subscribe")
            await next_item(y.subscribes, lambda p: p["from"].bare == x.boundjid.bare)
            y.send_presence(pto=x.boundjid.bare, ptype="subscribed")
        await wait_for_condition(lambda: zoe.client_roster["max@localhost"]["subscription"] == "both" and
                                 mx.client_roster["zoe@localhost"]["subscription"] == "both", what="subscriptions")
        online = await zoe["xep_0012"].get_last_activity("max@localhost", timeout=TIMEOUT)
        self.assertEqual(online["last_activity"]["seconds"], 0)

        mx.send_presence(ptype="unavailable", pstatus="off to lunch")
        # A round trip first, so the presence is handled before the stream closes: a stream
        # closed while its last presence is still being handled loses that presence's status
        # (a known race, see docs/xmpp.md, "Limits").
        await mx["xep_0199"].ping(jid=mx.boundjid.domain, timeout=TIMEOUT)
        await mx.stop()

        # The server stores the logout before max's unavailable presence goes out.
        await next_item(zoe.all_presence, lambda p: p["from"].bare == "max@localhost" and p["type"] == "unavailable")
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            r = await zoe["xep_0012"].get_last_activity("max@localhost", timeout=TIMEOUT)
            if r["last_activity"]["status"] == "off to lunch":
                break
            self.assertLess(asyncio.get_running_loop().time(), deadline, "the logout was never recorded")
            await asyncio.sleep(0.05)
        self.assertGreaterEqual(r["last_activity"]["seconds"], 0)

        stranger = self.client("lea", resource="stranger")
        await stranger.login(self.h.xmpp_port)
        with self.assertRaises(IqError) as denied:
            await stranger["xep_0012"].get_last_activity("max@localhost", timeout=TIMEOUT)
        self.assertEqual(denied.exception.condition, "forbidden")

    # ---- XEP-0191 --------------------------------------------------------------------

    async def test_block_list_push_and_unblock(self):
        phone, desk = self.client("bea", resource="phone"), self.client("bea", resource="desk")
        await phone.login(self.h.xmpp_port)
        await desk.login(self.h.xmpp_port)
        # Pushes go to the sessions that asked for the blocklist.
        for c in (phone, desk):
            iq = await c["xep_0191"].get_blocked(timeout=TIMEOUT)
            self.assertEqual(blocked_jids(iq, "blocklist"), set())

        await phone["xep_0191"].block(["mal@localhost", "spam.example"], timeout=TIMEOUT)
        kind, push = await next_item(desk.block_pushes)
        self.assertEqual(kind, "block")
        self.assertEqual(blocked_jids(push, "block"), {"mal@localhost", "spam.example"})
        kind, push = await next_item(phone.block_pushes)
        self.assertEqual(kind, "block")
        iq = await desk["xep_0191"].get_blocked(timeout=TIMEOUT)
        self.assertEqual(blocked_jids(iq, "blocklist"), {"mal@localhost", "spam.example"})

        await desk["xep_0191"].unblock("spam.example", timeout=TIMEOUT)
        kind, push = await next_item(phone.block_pushes)
        self.assertEqual((kind, blocked_jids(push, "unblock")), ("unblock", {"spam.example"}))
        iq = await phone["xep_0191"].get_blocked(timeout=TIMEOUT)
        self.assertEqual(blocked_jids(iq, "blocklist"), {"mal@localhost"})

        # An empty <unblock/> clears the list, and is pushed as such.
        await desk["xep_0191"].unblock([], timeout=TIMEOUT)
        kind, push = await next_item(phone.block_pushes, lambda p: p[0] == "unblock")
        self.assertEqual(blocked_jids(push, "unblock"), set())
        iq = await phone["xep_0191"].get_blocked(timeout=TIMEOUT)
        self.assertEqual(blocked_jids(iq, "blocklist"), set())

        # <block/> without items is a bad request.
        with self.assertRaises(IqError) as err:
            await phone["xep_0191"].block([], timeout=TIMEOUT)
        self.assertEqual(err.exception.condition, "bad-request")

    async def test_blocked_contact_is_cut_off_both_ways(self):
        tom, mal = self.client("tom"), self.client("mal")
        await tom.login(self.h.xmpp_port)
        await mal.login(self.h.xmpp_port)
        await tom["xep_0191"].block("mal@localhost", timeout=TIMEOUT)

        # Inbound: nothing from the blocked JID reaches tom.
        mal.send_message(mto="tom@localhost", mbody="let me in", mtype="chat")
        await mal.sync()
        await asyncio.sleep(0.3)
        self.assertNotIn("let me in", [m["body"] for m in drain(tom.messages)])

        # Outbound: tom's messages to the blocked JID bounce with <blocked/>.
        tom.send_message(mto="mal@localhost", mbody="go away", mtype="chat")
        bounce = await next_item(tom.message_errors)
        self.assertEqual(bounce["error"]["condition"], "not-acceptable")
        self.assertIsNotNone(bounce.xml.find("{jabber:client}error/{urn:xmpp:blocking:errors}blocked"))
        await asyncio.sleep(0.3)
        self.assertNotIn("go away", [m["body"] for m in drain(mal.messages)])

        # Unblocked, messages flow again.
        await tom["xep_0191"].unblock("mal@localhost", timeout=TIMEOUT)
        mal.send_message(mto="tom@localhost", mbody="friends again", mtype="chat")
        await next_item(tom.messages, lambda m: m["body"] == "friends again")


if __name__ == "__main__":
    unittest.main(verbosity=2)
