"""I02/I07: backup snapshots filled the pool; storage went read-only with no warning,
no logins, nothing.

hearthd watches free bytes AND inodes of its data directory's filesystem, warns at
configurable thresholds on /health, /metrics (with a growth rate and a days-until-full
estimate) and in its log, and at the reserve floor enters read-only mode on purpose:
logins, rosters, offline messages and the archive keep working, every write gets
<resource-constraint/> of type wait, no acknowledged message is lost, the database stays
intact, and once space is back it leaves read-only mode by itself.

Each test mounts its own small tmpfs as the data directory and fills it. Inodes and the
other resources that are not bytes: test_I03_every_resource_not_only_bytes.py.
Defence off (HEARTH_DEFENCE_OFF=1): ops.read_only_at_reserve = false.
"""
import asyncio
import os
import sqlite3
import unittest

from resilience import (DEFENCE_OFF, Hearth, fill_until_free, metric, small_filesystem,
                        with_section)
from test_xmpp_client import TIMEOUT, next_item, wait_for_condition
from test_xmpp_extensions import ExtClient, drain
from slixmpp.exceptions import IqError

MiB = 1 << 20
RESERVE_MIB = 4
RESERVE_INODES = 60


class SmExtClient(ExtClient):
    """An ExtClient with XEP-0198 that records which of its messages the server acked."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self.acked_bodies = []
        self.add_event_handler("stanza_acked", self._acked)

    def _acked(self, stanza):
        if stanza.name == "message" and stanza["body"]:
            self.acked_bodies.append(stanza["body"])


class DiskFullGoesReadOnly(unittest.IsolatedAsyncioTestCase):
    def start_hearth(self, size, inodes=None):
        self.h = Hearth()
        self.addCleanup(self.h.cleanup)
        mount = small_filesystem(self.h.data_dir, size=size, inodes=inodes)
        mount.__enter__()
        self.addCleanup(mount.__exit__, None, None, None)
        # Cleanups run last-in first-out: stop hearthd before the filesystem goes.
        self.addCleanup(self.h.stop)
        with_section(self.h, "ops",
                     "disk_warning_percent = 50\ndisk_high_percent = 60\ndisk_critical_percent = 90\n"
                     f"disk_reserve_mib = {RESERVE_MIB}\ndisk_reserve_inodes = {RESERVE_INODES}\n"
                     + ("read_only_at_reserve = false\n" if DEFENCE_OFF else ""))
        self.h.start()
        for name in ("alice", "bob"):
            r = self.h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        self.filler = os.path.join(self.h.data_dir, "backup-snapshot.filler")

    def client(self, cls, name, resource="test"):
        c = cls(f"{name}@localhost/{resource}", f"{name} secret pw", self.h.cert_path())
        self.addAsyncCleanup(self._stop, c)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    def health(self):
        return self.h.get_json("/health")

    def metrics(self):
        return self.h.request("GET", "/metrics")[2].decode()

    async def wait_health(self, predicate, what):
        await wait_for_condition(lambda: predicate(self.health()), timeout=TIMEOUT, what=what)

    def archived_bodies(self, owner):
        with sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db")) as db:
            return [row[0] for row in db.execute("SELECT stanza FROM xmpp_archive WHERE owner=?", (owner,))]

    async def assert_write_refused(self, alice, body):
        msg = alice.make_message(mto="bob@localhost", mbody=body, mtype="chat")
        msg["id"] = "refused-" + body.replace(" ", "-")
        msg.send()
        err = await next_item(alice.message_errors, lambda m: m["id"] == msg["id"], timeout=TIMEOUT)
        self.assertEqual(err["error"]["condition"], "resource-constraint")
        self.assertEqual(err["error"]["type"], "wait")
        vcard = alice["xep_0054"].make_vcard()
        vcard["FN"] = "Alice while full"
        with self.assertRaises(IqError) as ctx:
            await alice["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
        self.assertEqual(ctx.exception.iq["error"]["condition"], "resource-constraint")
        self.assertEqual(ctx.exception.iq["error"]["type"], "wait")
        self.assertIn("read-only", ctx.exception.iq["error"]["text"])

    async def test_I02_bytes_warn_then_read_only_then_recover(self):
        self.start_hearth("32m")
        data = self.h.data_dir
        status, snap = self.health()
        self.assertEqual(status, 200)
        self.assertEqual(snap["checks"]["disk"]["status"], "ok")
        self.assertEqual(snap["checks"]["read_only"]["status"], "ok")
        self.assertEqual(metric(self.metrics(), "hearth_read_only"), 0)

        alice = self.client(SmExtClient, "alice")
        await alice.login(self.h.xmpp_port)
        alice.send_message(mto="bob@localhost", mbody="before the backup", mtype="chat")
        await alice.sync()

        # 1. Past the warning threshold: a warning on /health (still 200), /metrics and the
        # log, with a growth rate and a days-until-full estimate.
        total = os.statvfs(data).f_blocks * os.statvfs(data).f_frsize
        fill_until_free(data, self.filler, int(total * 0.45))
        await self.wait_health(lambda r: r[1]["checks"]["disk"]["status"] == "warning", "disk warning on /health")
        status, snap = self.health()
        self.assertEqual(status, 200)
        self.assertIn("warning at 50%", snap["checks"]["disk"]["message"])
        m = self.metrics()
        self.assertEqual(metric(m, "hearth_health_status", 'check="disk"'), 1)
        self.assertGreater(metric(m, "hearth_disk_used_ratio", 'resource="bytes"'), 0.5)
        self.assertGreater(metric(m, "hearth_disk_growth_bytes_per_second"), 0)
        self.assertGreater(metric(m, "hearth_disk_days_until_full"), 0)
        self.assertGreater(metric(m, "hearth_disk_inodes", 'kind="total"'), 0)
        self.assertGreater(metric(m, "hearth_database_bytes", 'file="database"'), 0)
        await asyncio.get_running_loop().run_in_executor(
            None, self.h.wait_for_log, "event=health.changed check=disk status=warning")
        # Writes still work above the floor.
        alice.send_message(mto="bob@localhost", mbody="while filling", mtype="chat")
        await alice.sync()
        self.assertFalse(drain(alice.message_errors))

        # 2. Under the reserve floor: read-only mode, critical, on purpose.
        fill_until_free(data, self.filler, (RESERVE_MIB - 2) * MiB)
        await self.wait_health(lambda r: r[1]["checks"]["read_only"]["status"] == "critical",
                               "read-only mode on /health")
        status, snap = self.health()
        self.assertEqual(status, 503)
        self.assertIn("MiB free", snap["checks"]["read_only"]["message"])
        self.assertEqual(metric(self.metrics(), "hearth_read_only"), 1)
        await asyncio.get_running_loop().run_in_executor(None, self.h.wait_for_log, "event=storage.read_only_entered")

        # Every write gets a clear, retryable error ...
        await self.assert_write_refused(alice, "while read-only")
        # ... while logins, rosters, offline messages and history keep working.
        bob = self.client(ExtClient, "bob")
        await bob.login(self.h.xmpp_port)
        got = await next_item(bob.messages, lambda m: m["body"] == "before the backup")
        self.assertTrue(got["delay"]["stamp"])
        bodies = [m["mam_result"]["forwarded"]["stanza"]["body"]
                  async for m in bob["xep_0313"].iterate(with_jid="alice@localhost", rsm={"max": 10})]
        self.assertIn("before the backup", bodies)
        self.assertIn("while filling", bodies)
        self.assertNotIn("while read-only", bodies)

        # 3. Space comes back (the snapshot is deleted): writes work again by themselves.
        os.unlink(self.filler)
        await self.wait_health(lambda r: r[1]["checks"]["read_only"]["status"] == "ok", "read-only mode left")
        await asyncio.get_running_loop().run_in_executor(None, self.h.wait_for_log, "event=storage.read_only_left")
        alice.send_message(mto="bob@localhost", mbody="space is back", mtype="chat")
        await next_item(bob.messages, lambda m: m["body"] == "space is back")
        vcard = alice["xep_0054"].make_vcard()
        vcard["FN"] = "Alice"
        await alice["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
        await alice.sync()
        alice["xep_0198"].request_ack()
        await wait_for_condition(lambda: "space is back" in alice.acked_bodies, what="ack of the last message")

        # Nothing the server acknowledged without an error is missing; the file is intact.
        refused = {"while read-only"}
        archived = "".join(self.archived_bodies("bob@localhost"))
        for body in alice.acked_bodies:
            if body not in refused:
                self.assertIn(f"<body>{body}</body>", archived)
        await bob.stop()
        await alice.stop()
        self.assertEqual(self.h.stop(), 0)
        with sqlite3.connect(os.path.join(data, "hearth.db")) as db:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")

    async def test_I02_disk_fills_between_checks(self):
        """No reserve floor (0): the disk fills completely between two checks. The first
        commit that hits ENOSPC/SQLITE_FULL puts the server in read-only mode at once; every
        message is then either stored and acked, or answered with resource-constraint."""
        self.start_hearth("24m")
        self.h.stop()
        with open(self.h.config_path) as f:
            config = f.read()
        with open(self.h.config_path, "w") as f:
            f.write(config.replace(f"disk_reserve_mib = {RESERVE_MIB}\n", "disk_reserve_mib = 0\n"))
        self.h.start()
        data = self.h.data_dir
        alice = self.client(SmExtClient, "alice")
        await alice.login(self.h.xmpp_port)
        fill_until_free(data, self.filler, 0)
        refused = set()
        alice.add_event_handler("message_error", lambda m: refused.add(m["id"]))
        body = "y" * 4000
        for i in range(400):
            msg = alice.make_message(mto="bob@localhost", mbody=f"{i} {body}", mtype="chat")
            msg["id"] = f"m{i}"
            msg.send()
            if i % 20 == 19:
                await alice.sync()
            if refused:
                break
        await alice.sync()
        self.assertTrue(refused, "no write was refused on a full disk")
        await self.wait_health(lambda r: r[1]["checks"]["read_only"]["status"] == "critical",
                               "read-only mode after a full-disk commit")
        status, snap = self.health()
        self.assertIn("disk is full", snap["checks"]["read_only"]["message"])
        await self.assert_write_refused(alice, "after the disk filled")
        os.unlink(self.filler)
        await self.wait_health(lambda r: r[1]["checks"]["read_only"]["status"] == "ok", "read-only mode left")
        alice.send_message(mto="bob@localhost", mbody="after the cleanup", mtype="chat")
        await alice.sync()
        alice["xep_0198"].request_ack()
        await wait_for_condition(lambda: "after the cleanup" in alice.acked_bodies, what="ack of the last message")
        archived = "".join(self.archived_bodies("bob@localhost"))
        for b in alice.acked_bodies:
            if b.split()[0] not in {r[1:] for r in refused} and b != "after the disk filled":
                self.assertIn(f"<body>{b}</body>", archived)
        await alice.stop()
        self.assertEqual(self.h.stop(), 0)
        with sqlite3.connect(os.path.join(data, "hearth.db")) as db:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
