"""XEP-0313 archive retention: the server's default (xmpp.archive_retention_days) and an
account's own value (hearthctl user retention), applied by the background purge in small
batches. Old messages are made old by moving their timestamps back while hearthd is
stopped; slixmpp then pages through what is left."""
import asyncio
import os
import sqlite3
import unittest

from harness import Hearth, wait_until
from test_xmpp_client import Client, next_item, TIMEOUT

DAY_MS = 86_400_000


class XmppArchiveRetention(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.h = Hearth()
        self.addCleanup(self.h.cleanup)

    async def history(self, client, with_jid):
        bodies = []
        async for msg in client["xep_0313"].iterate(with_jid=with_jid, rsm={"max": 10}):
            bodies.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        return bodies

    async def test_default_and_per_account_retention(self):
        # The harness writes [xmpp] ports; retention keys go into the same table.
        with open(self.h.config_path) as f:
            text = f.read()
        text = text.replace("[xmpp]\n", "[xmpp]\narchive_retention_days = 30\narchive_purge_interval_seconds = 1\n")
        with open(self.h.config_path, "w") as f:
            f.write(text)
        self.h.start()
        for name in ("alice", "bob"):
            r = self.h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)

        a = Client("alice@localhost/t", "alice secret pw", self.h.cert_path())
        b = Client("bob@localhost/t", "bob secret pw", self.h.cert_path())
        await a.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        for body in ("old one", "old two", "recent"):
            a.send_message(mto="bob@localhost", mbody=body, mtype="chat")
            await next_item(b.messages, lambda m, body=body: m["body"] == body)
        await a.stop()
        await b.stop()
        # bob keeps his archive forever; alice follows the server's 30 days.
        r = self.h.ctl("user", "retention", "bob@localhost", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("kept forever", r.stdout)
        self.h.stop()

        db = os.path.join(self.h.data_dir, "hearth.db")
        con = sqlite3.connect(db)
        with con:
            n = con.execute("UPDATE xmpp_archive SET stamp_ms = stamp_ms - ? WHERE stanza LIKE '%old %'",
                            (40 * DAY_MS,)).rowcount
        self.assertEqual(n, 4, "two old messages, archived for sender and recipient")
        con.close()

        self.h.start()

        def alice_old_rows():
            c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return c.execute("SELECT count(*) FROM xmpp_archive WHERE owner = 'alice@localhost' AND stanza LIKE "
                                 "'%old %'").fetchone()[0]
            finally:
                c.close()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: alice_old_rows() == 0, what="the purge of alice's old messages"))

        a = Client("alice@localhost/t2", "alice secret pw", self.h.cert_path())
        b = Client("bob@localhost/t2", "bob secret pw", self.h.cert_path())
        await a.login(self.h.xmpp_port)
        await b.login(self.h.xmpp_port)
        self.assertEqual(await self.history(a, "bob@localhost"), ["recent"])
        self.assertEqual(await self.history(b, "alice@localhost"), ["old one", "old two", "recent"])
        metrics = self.h.request("GET", "/metrics")[2].decode()
        self.assertIn("hearth_xmpp_archive_purged_total 2", metrics)
        await a.stop()
        await b.stop()
        self.h.stop()


if __name__ == "__main__":
    unittest.main()
