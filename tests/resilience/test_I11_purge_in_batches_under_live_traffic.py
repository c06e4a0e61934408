"""Incident I11: a gateway's history of tens of millions of messages slowed the service
until it was purged.

hearth purges expired history (XEP-0313 archive past `xmpp.archive_retention_days`) in
small background transactions that yield between batches, so live traffic keeps flowing.
The test gives an account a large expired history (written straight into the database
while hearthd is stopped), starts hearthd, and while the purge runs sends messages between
two slixmpp clients with stream management. It asserts that the purge was observed part
way through more than once (it proceeds in batches, not one long transaction), that every
live message was acknowledged, delivered and archived while it ran, and that the purge
removed exactly the expired rows. No timing threshold: the latency figures for a purge of
1,000,000 messages are measured by bench/purge_p99.py (results in bench/results/).

Defence off (for the incident note): a hearthd whose purge runs as one transaction.
"""
import asyncio
import os
import sqlite3
import sys
import time
import unittest

from resilience import Hearth, metric

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from test_xmpp_client import Client, TIMEOUT, wait_for_condition  # noqa: E402

EXPIRED = int(os.environ.get("HEARTH_I11_ROWS", "200000"))
DAY_MS = 86_400_000


class SmClient(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self.acked_bodies = set()
        self.received_bodies = set()
        self.add_event_handler("stanza_acked", self._acked)
        self.add_event_handler("message", lambda m: m["body"] and self.received_bodies.add(m["body"]))

    def _acked(self, stanza):
        if stanza.name == "message" and stanza["body"]:
            self.acked_bodies.add(stanza["body"])


def write_expired_history(db_path, owner, n):
    """n archived messages from 30 days ago, as a chatty gateway leaves them."""
    old = int(time.time() * 1000) - 30 * DAY_MS
    con = sqlite3.connect(db_path)
    with con:
        con.executemany(
            "INSERT INTO xmpp_archive(owner, id, with_jid, stamp_ms, stanza) VALUES(?, ?, ?, ?, ?)",
            ((owner, f"old-{i}", "gateway@localhost", old + i,
              f"<message xmlns='jabber:client' from='gateway@localhost/g' to='{owner}' type='chat'>"
              f"<body>old {i}</body></message>") for i in range(n)))
    con.close()


class PurgeInBatches(unittest.IsolatedAsyncioTestCase):
    async def test_I11_purge_runs_in_batches_while_messages_flow(self):
        loop = asyncio.get_running_loop()
        h = Hearth(config_extra="")
        self.addCleanup(h.cleanup)
        with open(h.config_path) as f:
            config = f.read()
        with open(h.config_path, "w") as f:
            f.write(config.replace("[xmpp]\n", "[xmpp]\narchive_retention_days = 7\n"))
        h.start()
        h.add_users("alice", "bob")
        h.stop()
        db_path = os.path.join(h.data_dir, "hearth.db")
        write_expired_history(db_path, "alice@localhost", EXPIRED)

        self.addCleanup(h.stop)
        h.start()  # the purge starts with the daemon
        alice = SmClient("alice@localhost/phone", "alice secret pw", h.cert_path())
        bob = SmClient("bob@localhost/phone", "bob secret pw", h.cert_path())
        for c in (alice, bob):
            self.addAsyncCleanup(self._stop, c)
            await c.login(h.xmpp_port)

        def purged():
            _, _, body = h.request("GET", "/metrics")
            return int(metric(body.decode(), "hearth_xmpp_archive_purged_total") or 0)

        seen_part_way = set()
        sent = []
        i = 0
        while True:
            done = await loop.run_in_executor(None, purged)
            if 0 < done < EXPIRED:
                seen_part_way.add(done)
            if done >= EXPIRED:
                break
            body = f"live {i}"
            alice.send_message(mto="bob@localhost", mbody=body, mtype="chat")
            sent.append(body)
            i += 1
            if i % 5 == 0:
                alice.plugin["xep_0198"].request_ack()
            await asyncio.sleep(0.01)  # the live traffic's pace, not a synchronisation

        alice.plugin["xep_0198"].request_ack()
        await wait_for_condition(lambda: alice.acked_bodies >= set(sent), what="every live message acknowledged")
        await wait_for_condition(lambda: bob.received_bodies >= set(sent), what="every live message delivered")
        await loop.run_in_executor(None, h.wait_for_log, f"event=xmpp.archive_purged messages={EXPIRED}")

        con = sqlite3.connect(db_path)
        try:
            left_old = con.execute("SELECT count(*) FROM xmpp_archive WHERE id LIKE 'old-%'").fetchone()[0]
            live_archived = con.execute("SELECT count(*) FROM xmpp_archive WHERE stanza LIKE '%live %'").fetchone()[0]
        finally:
            con.close()
        print(f"\nI11: purged {EXPIRED} expired messages; observed part way {len(seen_part_way)} times; "
              f"{len(sent)} live messages sent, acknowledged and delivered during the purge", file=sys.stderr)
        self.assertEqual(left_old, 0)
        # Each live message is archived for its sender and its recipient.
        self.assertEqual(live_archived, 2 * len(sent))
        self.assertGreater(len(sent), 0, "messages flowed while the purge ran")
        self.assertGreaterEqual(len(seen_part_way), 2, "the purge was seen part way: it runs in batches")

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()


if __name__ == "__main__":
    unittest.main()
