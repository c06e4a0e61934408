"""XEP-0163 PEP with XEP-0223 persistence, driven by slixmpp's pubsub (XEP-0060), PEP
(XEP-0163) and caps (XEP-0115) plugins: OMEMO device lists (open access), XEP-0084 avatar
metadata (presence access) and XEP-0402 bookmarks (whitelist, several items), with +notify
notifications, last-item delivery at login, access control, preconditions and restarts."""
import asyncio
import unittest
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT

OMEMO_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
AVATAR_META = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"


class PepClient(Client):
    def __init__(self, *args, interests=(), **kwargs):
        super().__init__(*args, **kwargs)
        for plugin in ("xep_0004", "xep_0060", "xep_0115", "xep_0163"):
            self.register_plugin(plugin)
        for node in interests:
            self["xep_0030"].add_feature(node + "+notify")
        self.events = asyncio.Queue()
        for kind in ("publish", "retract", "purge", "delete"):
            self.add_event_handler(f"pubsub_{kind}", lambda m, kind=kind: self.events.put_nowait((kind, m)))

    async def login(self, port, direct_tls=False):
        """As Client.login, with the XEP-0115 caps (and so the +notify interests) computed
        before the initial presence, as a real client does."""
        started = asyncio.ensure_future(self.wait_until("session_start", TIMEOUT))
        self.connect(address=("127.0.0.1", port), use_ssl=direct_tls, force_starttls=not direct_tls)
        await started
        await self["xep_0115"].update_caps(broadcast=False)
        self.send_presence()
        await self.get_roster()

    def options(self, **fields):
        form = self["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
        for var, value in fields.items():
            form.add_field(var=f"pubsub#{var}", value=value)
        return form

    async def publish(self, node, item_id, xml, **options):
        return await self["xep_0060"].publish(
            self.boundjid.bare, node, id=item_id, payload=ET.fromstring(xml),
            options=self.options(**options) if options else None, timeout=TIMEOUT)

    async def item_ids(self, owner, node):
        iq = await self["xep_0060"].get_items(owner, node, timeout=TIMEOUT)
        return [item["id"] for item in iq["pubsub"]["items"]]


def event_node(msg):
    return msg["pubsub_event"]["items"]["node"]


def event_item_ids(msg):
    return [item["id"] for item in msg["pubsub_event"]["items"]]


class XmppPep(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("alice", "bob", "eve")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def client(self, name, resource="test", interests=()):
        c = PepClient(f"{name}@localhost/{resource}", f"{name} secret pw", self.h.cert_path(), interests=interests)
        self.addAsyncCleanup(self._stop, c)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    async def befriend(self, a, b):
        """Mutual presence subscription between two logged-in clients (the tests share accounts)."""
        if a.client_roster[b.boundjid.bare]["subscription"] == "both":
            return
        for x, y in ((a, b), (b, a)):
            x.send_presence(pto=y.boundjid.bare, ptype="subscribe")
            await next_item(y.subscribes, lambda p: p["from"].bare == x.boundjid.bare)
            y.send_presence(pto=x.boundjid.bare, ptype="subscribed")
        for x, y in ((a, b), (b, a)):
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while x.client_roster[y.boundjid.bare]["subscription"] != "both":
                self.assertLess(asyncio.get_running_loop().time(), deadline, "subscription did not complete")
                await asyncio.sleep(0.02)

    async def test_omemo_device_list_avatar_and_access(self):
        alice = self.client("alice")
        await alice.login(self.h.xmpp_port)
        bob = self.client("bob", interests=(OMEMO_DEVICES, AVATAR_META))
        await bob.login(self.h.xmpp_port)
        await self.befriend(alice, bob)

        # Conversations publishes its device list with open access, so that anyone who
        # wants to write to alice can fetch it.
        devices = f"<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"
        await alice.publish(OMEMO_DEVICES, "current", devices, access_model="open")
        await alice.publish(AVATAR_META, "sha1-of-avatar",
                            f"<metadata xmlns='{AVATAR_META}'><info id='sha1-of-avatar' bytes='10' "
                            "type='image/png'/></metadata>")
        # bob's session announced +notify in its caps before alice published; the server
        # learned it with a disco#info query. Reconnecting proves the last items arrive at login.
        await bob.stop()
        bob = self.client("bob", resource="second", interests=(OMEMO_DEVICES, AVATAR_META))
        await bob.login(self.h.xmpp_port)
        got = {}
        while len(got) < 2:
            kind, msg = await next_item(bob.events)
            self.assertEqual(kind, "publish")
            self.assertEqual(msg["from"].bare, "alice@localhost")
            got[event_node(msg)] = event_item_ids(msg)
        self.assertEqual(got, {OMEMO_DEVICES: ["current"], AVATAR_META: ["sha1-of-avatar"]})

        # A live publish reaches bob at once.
        await alice.publish(OMEMO_DEVICES, "current",
                            "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/><device id='99'/></list>",
                            access_model="open")
        kind, msg = await next_item(bob.events)
        self.assertEqual((kind, event_node(msg)), ("publish", OMEMO_DEVICES))
        payload = msg["pubsub_event"]["items"]["item"].xml[0]
        self.assertEqual(len(payload.findall("{eu.siacs.conversations.axolotl}device")), 2)

        # eve is no contact: she may fetch the open device list, not the avatar metadata.
        eve = self.client("eve")
        await eve.login(self.h.xmpp_port)
        self.assertEqual(await eve.item_ids("alice@localhost", OMEMO_DEVICES), ["current"])
        with self.assertRaises(IqError) as denied:
            await eve.item_ids("alice@localhost", AVATAR_META)
        self.assertEqual(denied.exception.iq["error"]["condition"], "not-authorized")
        self.assertIsNotNone(denied.exception.iq.xml.find(f".//{{{PUBSUB_ERRORS}}}presence-subscription-required"))
        self.assertEqual(await bob.item_ids("alice@localhost", AVATAR_META), ["sha1-of-avatar"])
        with self.assertRaises(IqError) as forbidden:
            await eve["xep_0060"].publish("alice@localhost", AVATAR_META, id="x",
                                          payload=ET.fromstring(f"<metadata xmlns='{AVATAR_META}'/>"), timeout=TIMEOUT)
        self.assertEqual(forbidden.exception.iq["error"]["condition"], "forbidden")

        # The account's disco#info says it is a PEP service.
        info = await eve["xep_0030"].get_info(jid="alice@localhost", timeout=TIMEOUT)
        self.assertIn(("pubsub", "pep", None, None), info["disco_info"]["identities"])
        items = await eve["xep_0030"].get_items(jid="alice@localhost", timeout=TIMEOUT)
        self.assertEqual([i[1] for i in items["disco_items"]["items"]], [OMEMO_DEVICES])

    async def test_bookmarks_sync_between_devices_and_stay_private(self):
        phone = self.client("alice", resource="phone", interests=(BOOKMARKS,))
        await phone.login(self.h.xmpp_port)
        whitelist = dict(persist_items="true", access_model="whitelist", max_items="max")
        await phone.publish(BOOKMARKS, "room1@conference.localhost",
                            f"<conference xmlns='{BOOKMARKS}' name='Room 1' autojoin='true'><nick>al</nick></conference>",
                            **whitelist)
        laptop = self.client("alice", resource="laptop", interests=(BOOKMARKS,))
        await laptop.login(self.h.xmpp_port)
        kind, msg = await next_item(laptop.events)
        self.assertEqual((kind, event_item_ids(msg)), ("publish", ["room1@conference.localhost"]))

        await phone.publish(BOOKMARKS, "room2@conference.localhost",
                            f"<conference xmlns='{BOOKMARKS}' name='Room 2'/>", **whitelist)
        kind, msg = await next_item(laptop.events)
        self.assertEqual((kind, event_item_ids(msg)), ("publish", ["room2@conference.localhost"]))
        self.assertEqual(sorted(await laptop.item_ids("alice@localhost", BOOKMARKS)),
                         ["room1@conference.localhost", "room2@conference.localhost"])

        # XEP-0223: publish-options are preconditions on the existing node.
        with self.assertRaises(IqError) as conflict:
            await phone.publish(BOOKMARKS, "room3@conference.localhost", f"<conference xmlns='{BOOKMARKS}'/>",
                                access_model="open")
        self.assertEqual(conflict.exception.iq["error"]["condition"], "conflict")
        self.assertIsNotNone(conflict.exception.iq.xml.find(f".//{{{PUBSUB_ERRORS}}}precondition-not-met"))

        # Removing a bookmark: retract with notify.
        await phone["xep_0060"].retract("alice@localhost", BOOKMARKS, "room1@conference.localhost", notify=True,
                                        timeout=TIMEOUT)
        kind, msg = await next_item(laptop.events)
        self.assertEqual(kind, "retract")

        # bob, even as a contact, never sees alice's bookmarks.
        bob = self.client("bob")
        await bob.login(self.h.xmpp_port)
        await self.befriend(phone, bob)
        with self.assertRaises(IqError) as closed:
            await bob.item_ids("alice@localhost", BOOKMARKS)
        self.assertEqual(closed.exception.iq["error"]["condition"], "not-allowed")

        # Items are durable: they survive a restart.
        await phone.stop()
        await laptop.stop()
        await bob.stop()
        self.h.stop()
        self.h.start()
        again = self.client("alice", resource="again")
        await again.login(self.h.xmpp_port)
        self.assertEqual(await again.item_ids("alice@localhost", BOOKMARKS), ["room2@conference.localhost"])


if __name__ == "__main__":
    unittest.main()
