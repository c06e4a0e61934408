"""XEP-0357 push: a client registers an app server; a message that cannot reach a connected
client makes hearth publish a summary (count and sender, never the body) to the app server.
The app server here is a slixmpp account on this server; one elsewhere is reached through
federation (here a static route to a closed port, so the notification bounces)."""
import asyncio
import re
import unittest
import xml.etree.ElementTree as ET

from harness import Hearth, wait_until
from test_xmpp_client import Client, next_item, TIMEOUT

PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
FORMS = "jabber:x:data"


class AppServer(Client):
    """Records the pubsub publishes sent to it, answering them as an app server does."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.publishes = asyncio.Queue()
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        self.register_handler(Callback("push publish", MatchXPath(f"{{jabber:client}}iq/{{{PUBSUB}}}pubsub"),
                                       self._on_publish))

    def _on_publish(self, iq):
        self.publishes.put_nowait(iq)
        iq.reply(clear=True).send()


def fields(form):
    return {f.get("var"): [v.text for v in f.findall(f"{{{FORMS}}}value")] for f in form.findall(f"{{{FORMS}}}field")}


class XmppPush(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(xmpp_extra='s2s_static_routes = ["push.elsewhere.example=127.0.0.1:1"]\n'
                               's2s_max_attempts = 1\n').start()
        cls.h.add_users("phone", "friend", "pushd")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def enable(self, c, jid, node, secret=None):
        iq = c.Iq(stype="set")
        form = ""
        if secret:
            form = (f"<x xmlns='{FORMS}' type='submit'><field var='FORM_TYPE'><value>"
                    "http://jabber.org/protocol/pubsub#publish-options</value></field>"
                    f"<field var='secret'><value>{secret}</value></field></x>")
        iq.append(ET.fromstring(f"<enable xmlns='{PUSH}' jid='{jid}' node='{node}'>{form}</enable>"))
        await iq.send(timeout=TIMEOUT)

    async def test_offline_message_wakes_the_phone_through_its_app_server(self):
        app = AppServer("pushd@localhost/app", "pushd secret pw", self.h.cert_path())
        await app.login(self.h.xmpp_port)
        self.addAsyncCleanup(app.stop)
        phone = Client("phone@localhost/p", "phone secret pw", self.h.cert_path())
        await phone.login(self.h.xmpp_port)
        info = await phone["xep_0030"].get_info(jid="phone@localhost", timeout=TIMEOUT)
        self.assertIn(PUSH, info["disco_info"]["features"])
        await self.enable(phone, "pushd@localhost/app", "device-token-1", secret="s3cr3t")
        await self.enable(phone, "push.elsewhere.example", "other-node")  # through federation
        await phone.stop()

        friend = Client("friend@localhost/f", "friend secret pw", self.h.cert_path())
        await friend.login(self.h.xmpp_port)
        self.addAsyncCleanup(friend.stop)
        friend.send_message(mto="phone@localhost", mbody="the secret plans", mtype="chat")
        iq = await asyncio.wait_for(app.publishes.get(), TIMEOUT)
        self.assertEqual(str(iq["from"]), "phone@localhost")
        publish = iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
        self.assertEqual(publish.get("node"), "device-token-1")
        summary = publish.find(f"{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{FORMS}}}x")
        got = fields(summary)
        self.assertEqual(got["FORM_TYPE"], ["urn:xmpp:push:summary"])
        self.assertEqual(got["last-message-sender"], ["friend@localhost"])
        self.assertNotIn("last-message-body", got, "the body never leaves for the push service")
        self.assertNotIn(b"the secret plans", ET.tostring(iq.xml))
        options = fields(iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options/{{{FORMS}}}x"))
        self.assertEqual(options["secret"], ["s3cr3t"])
        # The remote app server's notification left through federation and bounced.
        wait_until(lambda: re.search(r'hearth_xmpp_s2s_bounced_total [1-9]', self.h.request("GET", "/metrics")[2].decode()),
                   what="the remote notification bounced")
        status, _, body = self.h.request("GET", "/metrics")
        sent_before = int(re.search(r'hearth_xmpp_push_total\{result="sent"\} (\d+)', body.decode()).group(1))
        self.assertEqual(sent_before, 2)

        # Disabled: no more notifications.
        phone = Client("phone@localhost/p2", "phone secret pw", self.h.cert_path())
        await phone.login(self.h.xmpp_port)
        iq = phone.Iq(stype="set")
        iq.append(ET.fromstring(f"<disable xmlns='{PUSH}' jid='pushd@localhost/app'/>"))
        await iq.send(timeout=TIMEOUT)
        await phone.stop()
        friend.send_message(mto="phone@localhost", mbody="second", mtype="chat")
        await friend["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        status, _, body = self.h.request("GET", "/metrics")
        sent = re.search(r'hearth_xmpp_push_total\{result="sent"\} (\d+)', body.decode())
        self.assertEqual(int(sent.group(1)), sent_before + 1)  # the remote app server only
        self.assertTrue(app.publishes.empty())


if __name__ == "__main__":
    unittest.main()
