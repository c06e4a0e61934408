"""XEP-0045 group chat at conference.localhost, driven by slixmpp's MUC plugin: rooms made
by joining, history from the room's archive (XEP-0313) with XEP-0359 stanza ids and
XEP-0421 occupant ids, subjects, configuration, moderation (kick, ban, voice),
members-only rooms with passwords and mediated invitations, private messages, nick
changes, XEP-0410 self-pings, persistence across a restart, and destruction."""
import asyncio
import unittest

from slixmpp.exceptions import IqError, PresenceError

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT, wait_for_condition

MUC = "conference.localhost"
MUC_USER = "http://jabber.org/protocol/muc#user"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
SID = "urn:xmpp:sid:0"


class MucClient(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for plugin in ("xep_0004", "xep_0045", "xep_0359", "xep_0249"):
            self.register_plugin(plugin)
        self.room_messages = asyncio.Queue()
        self.room_presence = asyncio.Queue()
        self.invites = asyncio.Queue()
        self.add_event_handler("groupchat_message", lambda m: self.room_messages.put_nowait(m))
        self.add_event_handler("groupchat_presence", lambda p: self.room_presence.put_nowait(p))
        self.room_errors = asyncio.Queue()
        self.add_event_handler("groupchat_message_error", lambda m: self.room_errors.put_nowait(m))
        # slixmpp drops invitations from rooms it once tried to join: watch every message.
        self.add_event_handler(
            "message", lambda m: m.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite") is not None and self.invites.put_nowait(m))

    async def join(self, room, nick, **kwargs):
        return await self["xep_0045"].join_muc_wait(f"{room}@{MUC}", nick, timeout=TIMEOUT, **kwargs)

    async def configure(self, room, **fields):
        form = self["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
        for var, value in fields.items():
            form.add_field(var=f"muc#roomconfig_{var}", value=value)
        await self["xep_0045"].set_room_config(f"{room}@{MUC}", form, timeout=TIMEOUT)


def status_codes(stanza):
    return {int(s.get("code")) for s in stanza.xml.findall(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")}


def occupant_id(stanza):
    el = stanza.xml.find(f"{{{OCCUPANT_ID}}}occupant-id")
    return el.get("id") if el is not None else None


class XmppMuc(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("alice", "bob", "carol", "dave")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def client(self, name, resource="test"):
        c = MucClient(f"{name}@localhost/{resource}", f"{name} secret pw", self.h.cert_path())
        self.addAsyncCleanup(self._stop, c)
        await c.login(self.h.xmpp_port)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    async def test_room_history_subject_and_archive(self):
        alice, bob = await self.client("alice"), await self.client("bob")
        pres, subject, occupants, history = await alice.join("lounge", "Alice")
        self.assertTrue({110, 201, 170} <= status_codes(pres), status_codes(pres))
        self.assertEqual(pres["muc"]["affiliation"], "owner")
        self.assertEqual(pres["muc"]["role"], "moderator")
        pres, _, occupants, _ = await bob.join("lounge", "Bob")
        self.assertEqual([p["from"].resource for p in occupants if p["from"].resource != "Bob"], ["Alice"])
        self.assertEqual(pres["muc"]["role"], "participant")
        joined = await next_item(alice.room_presence, lambda p: p["from"].resource == "Bob")
        self.assertTrue(occupant_id(joined))

        alice["xep_0045"].set_subject(f"lounge@{MUC}", "Tea at five")
        bob.send_message(mto=f"lounge@{MUC}", mbody="hello room", mtype="groupchat")
        got = await next_item(alice.room_messages, lambda m: m["body"] == "hello room")
        self.assertEqual(str(got["from"]), f"lounge@{MUC}/Bob")
        echo = await next_item(bob.room_messages, lambda m: m["body"] == "hello room")
        self.assertEqual(got["stanza_id"]["by"], f"lounge@{MUC}")
        self.assertEqual(got["stanza_id"]["id"], echo["stanza_id"]["id"], "everyone sees the same archive id")
        self.assertEqual(occupant_id(got), occupant_id(joined), "the occupant id is stable for bob")

        carol = await self.client("carol")
        _, subject, _, history = await carol.join("lounge", "Carol", maxstanzas=10)
        self.assertEqual(subject["subject"], "Tea at five")
        self.assertEqual([m["body"] for m in history], ["hello room"])
        # The room's own archive (XEP-0313 at the room JID).
        bodies = []
        async for msg in carol["xep_0313"].iterate(jid=f"lounge@{MUC}", rsm={"max": 10}):
            bodies.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        self.assertEqual(bodies, ["hello room"])

        # The service lists the public room.
        items = await carol["xep_0030"].get_items(jid=MUC, timeout=TIMEOUT)
        self.assertIn(f"lounge@{MUC}", [i[0] for i in items["disco_items"]["items"]])
        info = await carol["xep_0030"].get_info(jid=f"lounge@{MUC}", timeout=TIMEOUT)
        self.assertIn("http://jabber.org/protocol/muc", info["disco_info"]["features"])
        self.assertIn("urn:xmpp:mam:2", info["disco_info"]["features"])

    async def test_moderation_kick_ban_and_voice(self):
        alice, bob, carol = await self.client("alice"), await self.client("bob"), await self.client("carol")
        await alice.join("modroom", "Alice")
        await alice.configure("modroom", moderatedroom="1")
        await bob.join("modroom", "Bob")
        # A visitor in a moderated room has no voice.
        bob.send_message(mto=f"modroom@{MUC}", mbody="may I speak?", mtype="groupchat")
        err = await next_item(bob.room_errors)
        self.assertEqual(err["error"]["condition"], "forbidden")
        await alice["xep_0045"].set_role(f"modroom@{MUC}", "Bob", "participant", timeout=TIMEOUT)
        bob.send_message(mto=f"modroom@{MUC}", mbody="thank you", mtype="groupchat")
        await next_item(alice.room_messages, lambda m: m["body"] == "thank you")

        # Kick: bob is told with status 307.
        await alice["xep_0045"].set_role(f"modroom@{MUC}", "Bob", "none", timeout=TIMEOUT)
        kicked = await next_item(bob.room_presence, lambda p: p["type"] == "unavailable")
        self.assertIn(307, status_codes(kicked))
        self.assertIn(110, status_codes(kicked))

        # Ban: carol is removed (301) and cannot come back.
        await carol.join("modroom", "Carol")
        await alice["xep_0045"].set_affiliation(f"modroom@{MUC}", "outcast", jid="carol@localhost", timeout=TIMEOUT)
        banned = await next_item(carol.room_presence, lambda p: p["type"] == "unavailable")
        self.assertIn(301, status_codes(banned))
        with self.assertRaises(PresenceError) as again:
            await carol.join("modroom", "Carol")
        self.assertEqual(again.exception.presence["error"]["condition"], "forbidden")
        outcasts = await alice["xep_0045"].get_affiliation_list(f"modroom@{MUC}", "outcast", timeout=TIMEOUT)
        self.assertEqual([str(j) for j in outcasts], ["carol@localhost"])
        # A participant may not kick.
        await bob.join("modroom", "Bob")
        with self.assertRaises(IqError) as denied:
            await bob["xep_0045"].set_role(f"modroom@{MUC}", "Alice", "none", timeout=TIMEOUT)
        self.assertEqual(denied.exception.iq["error"]["condition"], "not-allowed")

    async def test_members_only_password_and_invitation(self):
        alice, dave = await self.client("alice"), await self.client("dave")
        await alice.join("club", "Alice")
        await alice.configure("club", membersonly="1", passwordprotectedroom="1", roomsecret="sesame")
        with self.assertRaises(PresenceError) as refused:
            await dave.join("club", "Dave", password="sesame")
        self.assertEqual(refused.exception.presence["error"]["condition"], "registration-required")

        # An owner's invitation makes dave a member and carries the password.
        alice["xep_0045"].invite(f"club@{MUC}", "dave@localhost", reason="join us")
        invite = await next_item(dave.invites)
        x = invite.xml.find(f"{{{MUC_USER}}}x")
        self.assertEqual(x.find(f"{{{MUC_USER}}}invite").get("from"), "alice@localhost")
        self.assertEqual(x.find(f"{{{MUC_USER}}}password").text, "sesame")
        with self.assertRaises(PresenceError) as wrong:
            await dave.join("club", "Dave", password="open up")
        self.assertEqual(wrong.exception.presence["error"]["condition"], "not-authorized")
        pres, _, _, _ = await dave.join("club", "Dave", password="sesame")
        self.assertEqual(pres["muc"]["affiliation"], "member")

    async def test_private_messages_nick_change_and_self_ping(self):
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.join("chat", "Alice")
        await bob.join("chat", "Bob")
        bob.send_message(mto=f"chat@{MUC}/Alice", mbody="psst", mtype="chat")
        pm = await next_item(alice.messages, lambda m: m["body"] == "psst")
        self.assertEqual(str(pm["from"]), f"chat@{MUC}/Bob")

        # Nick change: unavailable with 303 and the new nick, then available.
        bob.send_presence(pto=f"chat@{MUC}/Robert")
        change = await next_item(alice.room_presence,
                                 lambda p: p["type"] == "unavailable" and p["from"].resource == "Bob")
        self.assertIn(303, status_codes(change))
        self.assertEqual(change.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item").get("nick"), "Robert")
        await next_item(alice.room_presence, lambda p: p["from"].resource == "Robert" and p["type"] != "unavailable")

        # XEP-0410: a joined occupant's self-ping succeeds; after leaving it fails.
        await bob["xep_0199"].ping(jid=f"chat@{MUC}/Robert", timeout=TIMEOUT)
        bob["xep_0045"].leave_muc(f"chat@{MUC}", "Robert")
        await next_item(alice.room_presence, lambda p: p["type"] == "unavailable" and p["from"].resource == "Robert")
        with self.assertRaises(IqError) as gone:
            await bob["xep_0199"].ping(jid=f"chat@{MUC}/Robert", timeout=TIMEOUT)
        self.assertEqual(gone.exception.iq["error"]["condition"], "not-acceptable")

        # A session that goes away leaves its rooms.
        await alice.stop()
        carol = await self.client("carol")
        _, _, occupants, _ = await carol.join("chat", "Carol")
        self.assertEqual([p["from"].resource for p in occupants if p["from"].resource != "Carol"], [])

    async def test_persistent_room_survives_restart_and_destroy(self):
        alice, bob = await self.client("alice"), await self.client("bob")
        await alice.join("archive", "Alice")
        await alice.configure("archive", persistentroom="1", roomname="The Archive")
        await alice["xep_0045"].set_affiliation(f"archive@{MUC}", "member", jid="bob@localhost", timeout=TIMEOUT)
        alice["xep_0045"].set_subject(f"archive@{MUC}", "Kept")
        alice.send_message(mto=f"archive@{MUC}", mbody="before the restart", mtype="groupchat")
        await next_item(alice.room_messages, lambda m: m["body"] == "before the restart")
        await alice.stop()
        await bob.stop()
        self.h.stop()
        self.h.start()

        bob = await self.client("bob", resource="after")
        pres, subject, _, history = await bob.join("archive", "Bob", maxstanzas=5)
        self.assertEqual(pres["muc"]["affiliation"], "member")
        self.assertEqual(subject["subject"], "Kept")
        self.assertEqual([m["body"] for m in history], ["before the restart"])
        info = await bob["xep_0030"].get_info(jid=f"archive@{MUC}", timeout=TIMEOUT)
        self.assertIn("muc_persistent", info["disco_info"]["features"])

        alice = await self.client("alice", resource="after")
        await alice.join("archive", "Alice")
        await alice["xep_0045"].destroy(f"archive@{MUC}", reason="closing", timeout=TIMEOUT)
        gone = await next_item(bob.room_presence, lambda p: p["type"] == "unavailable")
        self.assertIsNotNone(gone.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy"))
        info = await bob["xep_0030"].get_items(jid=MUC, timeout=TIMEOUT)
        self.assertNotIn(f"archive@{MUC}", [i[0] for i in info["disco_items"]["items"]])


if __name__ == "__main__":
    unittest.main()
