"""Deleting an account removes everything XMPP kept for it: through the running daemon
(its sessions are closed at once) and while the daemon is stopped (swept at start-up)."""
import asyncio
import os
import sqlite3
import unittest

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT

TABLES = ("xmpp_roster", "xmpp_offline", "xmpp_archive", "xmpp_vcard", "xmpp_private", "xmpp_blocklist")


class AccountDeletion(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.h = Hearth().start()
        for name in ("leaver", "stayer"):
            r = self.h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            assert r.returncode == 0, r.stderr

    async def asyncTearDown(self):
        self.h.stop()
        self.h.cleanup()

    def rows(self, owner):
        with sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db")) as db:
            return {t: db.execute(f"SELECT count(*) FROM {t} WHERE owner=?", (owner,)).fetchone()[0] for t in TABLES}

    async def leave_traces(self):
        """The leaver builds a roster, a vCard and an archive; stayer writes to them."""
        leaver = Client("leaver@localhost/phone", "leaver secret pw", self.h.cert_path())
        stayer = Client("stayer@localhost/desk", "stayer secret pw", self.h.cert_path())
        leaver.register_plugin("xep_0054")
        await leaver.login(self.h.xmpp_port)
        await stayer.login(self.h.xmpp_port)
        await leaver.update_roster("stayer@localhost", name="Stayer")
        vcard = leaver["xep_0054"].make_vcard()
        vcard["FN"] = "Leaver"
        await leaver["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
        stayer.send_message(mto="leaver@localhost", mbody="see you", mtype="chat")
        await next_item(leaver.messages, lambda m: m["body"] == "see you")
        rows = self.rows("leaver@localhost")
        self.assertGreater(rows["xmpp_roster"], 0)
        self.assertGreater(rows["xmpp_vcard"], 0)
        self.assertGreater(rows["xmpp_archive"], 0)
        return leaver, stayer

    async def test_deleting_through_the_daemon_closes_sessions_and_forgets_everything(self):
        leaver, stayer = await self.leave_traces()
        gone = asyncio.ensure_future(leaver.wait_until("disconnected", TIMEOUT))
        r = await asyncio.get_running_loop().run_in_executor(None, self.h.ctl, "user", "del", "leaver@localhost")
        self.assertEqual(r.returncode, 0, r.stderr)
        await gone
        self.assertEqual(set(self.rows("leaver@localhost").values()), {0})
        self.assertGreater(self.rows("stayer@localhost")["xmpp_archive"], 0, "the other side keeps its history")
        await stayer.stop()

    async def test_deleting_while_stopped_is_swept_at_start(self):
        leaver, stayer = await self.leave_traces()
        await leaver.stop()
        await stayer.stop()
        self.assertEqual(self.h.stop(), 0)
        r = self.h.ctl("user", "del", "leaver@localhost")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.h.start()
        self.assertEqual(set(self.rows("leaver@localhost").values()), {0})
        self.assertGreater(self.rows("stayer@localhost")["xmpp_archive"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
