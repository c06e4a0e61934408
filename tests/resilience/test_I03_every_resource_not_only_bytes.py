"""I03: a disk was added but the filesystem's metadata area was not; metadata space ran out
with bytes still free.

hearthd's checks cover every resource that can run out, not only bytes, each with a
warning on /health and a gauge on /metrics:
  * inodes: read-only mode at ops.disk_reserve_inodes with most bytes still free, and back
    by itself once inodes are freed;
  * the database's size cap (ops.database_max_mib): a warning at disk_warning_percent of
    it, read-only mode at disk_critical_percent, with the disk nearly empty;
  * WAL growth: a long-running reader pins the write-ahead log, which grows while hearth
    writes; /health warns past ops.wal_warning_mib, /metrics shows its size;
  * open files: descriptors in use against RLIMIT_NOFILE, a warning past
    ops.open_files_warning_percent.

Defence off (HEARTH_DEFENCE_OFF=1): what a bytes-only watcher does. The inode test sets
ops.read_only_at_reserve = false; the database test sets no cap; the WAL test keeps the
default threshold (256 MiB); the open-files test sets the thresholds to 100 %. Each test
then fails: no read-only mode, or no warning within its deadline.
"""
import os
import resource
import socket
import sqlite3
import unittest

from resilience import DEFENCE_OFF, Hearth, free_bytes, free_inodes, metric, small_filesystem, with_section
from test_xmpp_client import wait_for_condition
from test_xmpp_extensions import ExtClient, drain
import test_I02_disk_full_goes_read_only as i02

MiB = 1 << 20
BODY = "metadata " * 5000  # 45 KB of text per message


class EveryResourceNotOnlyBytes(unittest.IsolatedAsyncioTestCase):
    # The tmpfs-backed start-up and the refused-write assertions are I02's.
    start_hearth = i02.DiskFullGoesReadOnly.start_hearth
    client = i02.DiskFullGoesReadOnly.client
    _stop = i02.DiskFullGoesReadOnly._stop
    health = i02.DiskFullGoesReadOnly.health
    metrics = i02.DiskFullGoesReadOnly.metrics
    wait_health = i02.DiskFullGoesReadOnly.wait_health
    assert_write_refused = i02.DiskFullGoesReadOnly.assert_write_refused

    def start_plain(self, ops="", limits="", preexec_fn=None, tmpfs=None):
        """hearthd with extra [ops] and [limits] keys, its data directory on a tmpfs of
        its own when `tmpfs` gives a size (so that the host disk's fill level is not what
        the test sees)."""
        self.h = Hearth(preexec_fn=preexec_fn)
        self.addCleanup(self.h.cleanup)
        if tmpfs:
            mount = small_filesystem(self.h.data_dir, size=tmpfs)
            mount.__enter__()
            self.addCleanup(mount.__exit__, None, None, None)
            ops += "disk_reserve_mib = 8\n"
        if ops:
            with_section(self.h, "ops", ops)
        if limits:
            with_section(self.h, "limits", limits)
        self.h.start()
        self.addCleanup(self.h.stop)  # before the tmpfs goes (cleanups run last-in first-out)
        self.h.add_users("alice", "bob")

    async def write_until(self, alice, done, max_bytes, what, per_check=2):
        """Alice sends large messages to offline bob (offline storage and the archive grow),
        per_check at a time, each group followed by a fresh health check, until done(/health)
        holds; fails naming `what` once max_bytes of bodies were sent without it."""
        sent = 0
        while True:
            snap = self.health()[1]
            if done(snap):
                return sent
            if sent >= max_bytes:
                self.fail(f"no {what} after writing {sent / MiB:.1f} MiB: {snap['checks']['disk']}")
            for _ in range(per_check):
                alice.send_message(mto="bob@localhost", mbody=BODY, mtype="chat")
                sent += len(BODY)
            await alice.sync()
            checked = snap["checked_at_ms"]
            await wait_for_condition(lambda: self.health()[1]["checked_at_ms"] > checked, what="a health check")

    async def test_inodes_run_out_with_bytes_free(self):
        self.start_hearth("64m", inodes=400)
        data = self.h.data_dir
        alice = self.client(ExtClient, "alice")
        await alice.login(self.h.xmpp_port)
        # Thousands of tiny files (what a snapshot tool leaves): inodes go, bytes stay.
        spill = os.path.join(data, "snapshots")
        os.mkdir(spill)
        n = 0
        while free_inodes(data) > i02.RESERVE_INODES // 2:
            try:
                open(os.path.join(spill, f"f{n}"), "w").close()
            except OSError:
                break
            n += 1
        self.assertGreater(free_bytes(data), 32 * MiB)
        await self.wait_health(lambda r: r[1]["checks"]["read_only"]["status"] == "critical",
                               "read-only mode from inodes")
        _, snap = self.health()
        self.assertIn("inodes", snap["checks"]["read_only"]["message"])
        self.assertIn("inodes", snap["checks"]["disk"]["message"])
        self.assertLess(metric(self.metrics(), "hearth_disk_inodes", 'kind="free"'), i02.RESERVE_INODES)
        await self.assert_write_refused(alice, "no inodes left")
        for name in os.listdir(spill):
            os.unlink(os.path.join(spill, name))
        await self.wait_health(lambda r: r[1]["checks"]["read_only"]["status"] == "ok", "read-only mode left")
        alice.send_message(mto="bob@localhost", mbody="inodes are back", mtype="chat")
        await alice.sync()
        self.assertFalse(drain(alice.message_errors))

    async def test_database_size_limit_warns_then_goes_read_only(self):
        cap_mib = 16
        self.start_plain(ops="" if DEFENCE_OFF else f"database_max_mib = {cap_mib}\n", tmpfs="256m")
        db = os.path.join(self.h.data_dir, "hearth.db")
        self.assertLess(os.path.getsize(db), cap_mib * MiB * 0.5, "a fresh database is far under the cap")
        alice = self.client(ExtClient, "alice")
        await alice.login(self.h.xmpp_port)

        await self.write_until(alice, lambda s: s["checks"]["disk"]["status"] == "warning", 10 * MiB,
                               "database-size warning")  # stored 3 times over: archives and offline
        _, snap = self.health()
        self.assertIn("the database", snap["checks"]["disk"]["message"])
        self.assertIn("ops.database_max_mib", snap["checks"]["disk"]["message"])
        self.assertEqual(snap["checks"]["read_only"]["status"], "ok")
        m = self.metrics()
        self.assertEqual(metric(m, "hearth_database_max_bytes"), cap_mib * MiB)
        self.assertGreaterEqual(metric(m, "hearth_disk_used_ratio", 'resource="database"'), 0.8)
        self.assertGreater(metric(m, "hearth_disk_bytes", 'kind="free"'), 10 * cap_mib * MiB, "bytes are still free")

        await self.write_until(alice, lambda s: s["checks"]["read_only"]["status"] == "critical", 10 * MiB,
                               "read-only mode at the database cap")
        _, snap = self.health()
        self.assertEqual(snap["checks"]["disk"]["status"], "critical")
        # Set by the watcher (it names the key), or by SQLite's own cap between two checks.
        self.assertRegex(snap["checks"]["read_only"]["message"], "ops.database_max_mib|size limit")
        self.assertEqual(metric(self.metrics(), "hearth_read_only"), 1)
        await self.assert_write_refused(alice, "database at its cap")
        # Reads and logins keep working.
        bob = self.client(ExtClient, "bob")
        await bob.login(self.h.xmpp_port)
        await bob.sync()

    async def test_wal_growth_behind_a_long_reader_warns(self):
        self.start_plain(ops="" if DEFENCE_OFF else "wal_warning_mib = 8\n", tmpfs="256m")
        alice = self.client(ExtClient, "alice")
        await alice.login(self.h.xmpp_port)
        # A long-running reader (a report, a stuck backup tool): its open read transaction
        # pins the WAL, so checkpoints cannot recycle it and it grows with every write.
        reader = sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"), isolation_level=None)
        self.addCleanup(reader.close)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()

        await self.write_until(alice, lambda s: "WAL" in s["checks"]["disk"].get("message", ""), 8 * MiB, "WAL warning",
                               per_check=6)
        _, snap = self.health()
        self.assertEqual(snap["checks"]["disk"]["status"], "warning")
        self.assertIn("long-running reader", snap["checks"]["disk"]["message"])
        self.assertGreater(metric(self.metrics(), "hearth_database_bytes", 'file="wal"'), 8 * MiB)
        reader.execute("COMMIT")

    async def test_open_files_near_the_limit_warn(self):
        limit = 160
        self.start_plain(
            ops="open_files_warning_percent = 100\nopen_files_critical_percent = 100\n" if DEFENCE_OFF else "",
            limits=f"max_connections = {limit - 32}\nfd_reserve = 32\nmax_connections_per_ip = {limit}\n",
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
        self.assertEqual(metric(self.metrics(), "hearth_open_files_limit"), limit)
        self.assertEqual(self.health()[1]["checks"]["open_files"]["status"], "ok")
        # Idle connections, each one descriptor in hearthd, until 85 % of the limit is in use.
        conns = []
        self.addCleanup(lambda: [c.close() for c in conns])
        base = metric(self.metrics(), "hearth_open_files")
        while metric(self.metrics(), "hearth_open_files") < 0.85 * limit:
            self.assertLess(len(conns), limit, "the descriptors in use never reached 85 % of the limit")
            for _ in range(4):
                conns.append(socket.create_connection(("127.0.0.1", self.h.xmpp_port)))
            seen = base + len(conns) - 2  # a little slack for descriptors hearthd closed meanwhile
            # Wait until the next health run has counted them.
            await wait_for_condition(lambda: metric(self.metrics(), "hearth_open_files") >= seen, what="fd count")
        await self.wait_health(lambda r: r[1]["checks"]["open_files"]["status"] == "warning", "open-files warning")
        _, snap = self.health()
        self.assertIn("file descriptors in use", snap["checks"]["open_files"]["message"])
        for c in conns:
            c.close()
        await self.wait_health(lambda r: r[1]["checks"]["open_files"]["status"] == "ok", "open files back to ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
