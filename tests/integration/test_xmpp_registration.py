"""In-band registration (XEP-0077) gated by invitations (XEP-0401 pre-auth tokens), as
Conversations does it from an xmpp:...?register;preauth=TOKEN link, driven by slixmpp."""
import asyncio
import re
import unittest
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

from harness import Hearth
from test_xmpp_client import Client, TIMEOUT


class Registrar(Client):
    """Registers `jid` over XMPP before authenticating, optionally with an invitation."""

    def __init__(self, jid, password, cafile, token=None):
        super().__init__(jid, password, cafile)
        self.register_plugin("xep_0077")
        self["xep_0077"].force_registration = True
        # slixmpp 1.8.3 holds back every stanza before the session starts, including the
        # registration iqs its own xep_0077 plugin sends: let them through.
        self._always_send_everything = True
        self.token = token
        self.outcome = asyncio.get_event_loop().create_future()
        self.add_event_handler("register", self.on_register)

    async def on_register(self, form):
        try:
            if self.token:
                pre = self.Iq()
                pre["type"] = "set"
                pre.append(ET.Element("{urn:xmpp:pars:0}preauth", token=self.token))
                await pre.send(timeout=TIMEOUT)
            iq = self.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = self.boundjid.user
            iq["register"]["password"] = self.password
            await iq.send(timeout=TIMEOUT)
            self.outcome.set_result("ok")
        except IqError as e:
            self.outcome.set_result(e.condition)
        self.disconnect()


class Registration(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def invite(self):
        r = self.h.ctl("invite", "create")
        assert r.returncode == 0, r.stderr
        return re.search(r"token: (\S+)", r.stdout).group(1)

    async def register(self, name, password, token=None):
        c = Registrar(f"{name}@localhost/reg", password, self.h.cert_path(), token)
        gone = asyncio.ensure_future(c.wait_until("disconnected", TIMEOUT))
        c.connect(address=("127.0.0.1", self.h.xmpp_port))
        outcome = await asyncio.wait_for(c.outcome, TIMEOUT)
        await gone
        return outcome

    async def test_invitation_token_creates_an_account_that_can_log_in(self):
        token = self.invite()
        self.assertEqual(await self.register("newcomer", "a good password", token), "ok")
        self.assertIn("newcomer@localhost", self.h.ctl("user", "list").stdout)
        c = Client("newcomer@localhost/app", "a good password", self.h.cert_path())
        await c.login(self.h.xmpp_port)
        self.assertEqual(str(c.boundjid.bare), "newcomer@localhost")
        await c.stop()
        # The invitation is single use.
        self.assertEqual(await self.register("second", "another password", token), "item-not-found")

    async def test_without_an_invitation_registration_is_not_allowed(self):
        self.assertEqual(await self.register("stranger", "some password"), "not-allowed")
        self.assertNotIn("stranger@localhost", self.h.ctl("user", "list").stdout)

    async def test_taken_names_conflict(self):
        self.assertEqual(await self.register("taken", "first password", self.invite()), "ok")
        self.assertEqual(await self.register("taken", "second password", self.invite()), "conflict")


if __name__ == "__main__":
    unittest.main(verbosity=2)
