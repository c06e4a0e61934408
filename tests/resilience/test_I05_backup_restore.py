"""I05: the host died; 750 GB had to be copied to a new machine at a poor rate, by hand.
I08 (backup side): copying the backup was limited by I/O over many small files.

`hearthctl backup` writes an online, consistent backup while hearthd serves and writes:
ONE zstd stream holding a snapshot of the database (made by the daemon's store on a read
connection, so writes go on meanwhile), the TLS keys and certificates and every other
file of the data directory, each with its SHA-256, and a manifest. `hearthctl restore`
rebuilds a new data directory from it (and incrementals on top), verifying every checksum,
and a plain hearthd started on it serves the same accounts, rosters, archives, rooms and PEP nodes.

Covered here: a backup under XMPP write load restored to a new directory and served on
other ports (login, roster, MAM archive, a PEP node, a persistent room with its history); incrementals; a corrupted byte refused with the
file named and nothing left behind; a second concurrent backup refused by the lock
(incident I02's racing backup jobs); a backup killed with SIGKILL midway leaves the daemon
and its data directory fine, and its partial output is refused by restore.

Defence off (no configuration switch; run with temporary patches to src/ops/backup.cc):
without the BackupLock acquisition in create_backup,
test_I05_concurrent_backup_is_refused_by_the_lock fails ("0 != 2": the second backup runs
and even clears the first one's scratch space); without the three SHA-256 comparisons
(record, manifest, restored state), test_I05_corrupted_backup_is_refused_naming_the_file
fails ("0 != 2": the tampered backup restores silently). A damaged compressed stream is
still caught by zstd's own frame checksum.
"""
import asyncio
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import unittest

from resilience import Hearth, wait_until
from harness import HEARTHCTL
from test_xmpp_client import Client, TIMEOUT, next_item
from test_xmpp_muc import MUC, MucClient
from test_xmpp_pep import BOOKMARKS, PepClient


class FullClient(PepClient, MucClient):
    """PEP and MUC in one session."""

BEFORE = [f"before backup {i}" for i in range(20)]


def add_blob(data_dir, content):
    digest = hashlib.sha256(content).hexdigest()
    path = os.path.join(data_dir, "blobs", digest[:2], digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return os.path.relpath(path, data_dir)


def ctl(*args, stdin=None, stdout=subprocess.PIPE, timeout=120):
    return subprocess.run([HEARTHCTL, *args], input=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)


class BackupRestore(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="hearth-backup-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.h = Hearth()
        self.addCleanup(self.h.cleanup)
        self.h.start()
        for name in ("alice", "bob"):
            r = self.h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)

    def path(self, name):
        return os.path.join(self.work, name)

    async def test_I05_online_backup_under_load_restores_to_a_serving_server(self):
        h = self.h
        alice = FullClient("alice@localhost/desk", "alice secret pw", h.cert_path())
        await alice.login(h.xmpp_port)
        await alice.join("lounge", "Alice")
        await alice.configure("lounge", persistentroom="1", roomname="The Lounge")
        alice.send_message(mto=f"lounge@{MUC}", mbody="said in the room", mtype="groupchat")
        await next_item(alice.room_messages, lambda m: m["body"] == "said in the room")
        await alice.update_roster("bob@localhost", name="Bobby", groups=["Friends"])
        await alice.publish(BOOKMARKS, "room1@conference.localhost",
                            f"<conference xmlns='{BOOKMARKS}' name='Room 1' autojoin='true'><nick>al</nick></conference>",
                            persist_items="true", access_model="whitelist", max_items="max")
        for body in BEFORE:
            alice.send_message(mto="bob@localhost", mbody=body, mtype="chat")
        # Everything above is stored once a ping round trip came back after it (the
        # server handles one session's stanzas in order).
        await alice["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        blob1 = add_blob(h.data_dir, os.urandom(200_000))

        # Write load during the backup: alice keeps sending until the backup is done.
        backup_done = asyncio.Event()
        sent = 0

        async def load():
            nonlocal sent
            while not backup_done.is_set():
                alice.send_message(mto="bob@localhost", mbody=f"load {sent}", mtype="chat")
                sent += 1
                await asyncio.sleep(0.001)

        loader = asyncio.ensure_future(load())
        full = self.path("full.bak")
        r = await asyncio.get_running_loop().run_in_executor(
            None, lambda: h.ctl("backup", full, timeout=120))
        backup_done.set()
        await loader
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(sent, 0, "the load ran during the backup")
        self.assertTrue(os.path.exists(full))
        self.assertFalse(os.path.exists(full + ".partial"))
        self.assertFalse(os.path.exists(os.path.join(h.data_dir, ".backup-tmp")), "the snapshot scratch space is removed")
        await alice["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)  # the server kept serving

        # An incremental: only what changed (the new blob) plus the database.
        blob2 = add_blob(h.data_dir, os.urandom(50_000))
        incr = self.path("incr.bak")
        r = h.ctl("backup", "--since", full, incr)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("incremental #1", r.stderr)
        v = h.ctl("verify", incr)
        self.assertEqual(v.returncode, 0, v.stderr)
        self.assertIn("every checksum ok", v.stdout)
        self.assertLess(os.path.getsize(incr), os.path.getsize(full), "unchanged files are left out")
        await alice.stop()

        # Restore onto a "new machine": a new directory, a plain hearthd, other ports.
        h2 = Hearth()
        self.addCleanup(h2.cleanup)
        r = ctl("restore", full, incr, "--data-dir", h2.data_dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"every checksum verified", r.stdout)
        for rel in (blob1, blob2, "tls/localhost.crt", "tls/localhost.key"):
            with open(os.path.join(h.data_dir, rel), "rb") as a, open(os.path.join(h2.data_dir, rel), "rb") as b:
                self.assertEqual(a.read(), b.read(), rel)
        db = sqlite3.connect(os.path.join(h2.data_dir, "hearth.db"))
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        finally:
            db.close()
        # A restore never overwrites: the same target again is refused.
        again = ctl("restore", full, "--data-dir", h2.data_dir)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn(b"not empty", again.stderr)

        h2.start()
        self.assertNotEqual(h2.xmpp_port, h.xmpp_port)
        bob = FullClient("bob@localhost/new", "bob secret pw", h2.cert_path())
        await bob.login(h2.xmpp_port)
        _, _, _, history = await bob.join("lounge", "Bob", maxstanzas=5)
        self.assertEqual([m["body"] for m in history], ["said in the room"])
        info = await bob["xep_0030"].get_info(jid=f"lounge@{MUC}", timeout=TIMEOUT)
        self.assertIn("muc_persistent", info["disco_info"]["features"])
        alice2 = PepClient("alice@localhost/new", "alice secret pw", h2.cert_path())
        await alice2.login(h2.xmpp_port)
        self.assertEqual(alice2.client_roster["bob@localhost"]["name"], "Bobby")
        self.assertEqual(await alice2.item_ids("alice@localhost", BOOKMARKS), ["room1@conference.localhost"])
        self.assertEqual(alice2.client_roster["bob@localhost"]["groups"], ["Friends"])
        archived = []
        async for msg in bob["xep_0313"].iterate(with_jid="alice@localhost", rsm={"max": 100}):
            archived.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        self.assertEqual([b for b in archived if b.startswith("before backup")], BEFORE)
        await bob.stop()
        await alice2.stop()
        self.assertEqual(h2.stop(), 0)
        self.assertEqual(h.stop(), 0)

    async def test_I05_corrupted_backup_is_refused_naming_the_file(self):
        h = self.h
        blob = add_blob(h.data_dir, os.urandom(300_000))
        full = self.path("full.bak")
        r = h.ctl("backup", full)
        self.assertEqual(r.returncode, 0, r.stderr)
        target = self.path("restored")

        # One flipped byte of the compressed stream, in the middle of the blob's bytes.
        with open(full, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        bad = self.path("bad.bak")
        with open(bad, "wb") as f:
            f.write(data)
        r = ctl("restore", bad, "--data-dir", target)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"file {blob}".encode(), r.stderr)
        self.assertIn(b"nothing was written", r.stderr)
        self.assertFalse(os.path.exists(target), "nothing half-restored")
        self.assertEqual(sorted(os.listdir(self.work)), ["bad.bak", "full.bak"], "no temporary directory left")
        self.assertNotEqual(ctl("verify", bad).returncode, 0)

        # A corrupted byte inside a file's bytes in an otherwise valid stream (as if the
        # backup was tampered with and recompressed): the SHA-256 catches it.
        zstd = shutil.which("zstd")
        if zstd:
            raw = subprocess.run([zstd, "-dc", full], capture_output=True, check=True).stdout
            marker = f"file 300000 ".encode()
            at = raw.index(marker)
            at = raw.index(b"\n", at) + 1000
            raw = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]
            tampered = self.path("tampered.bak")
            with open(tampered, "wb") as f:
                f.write(subprocess.run([zstd, "-c"], input=raw, capture_output=True, check=True).stdout)
            r = ctl("restore", tampered, "--data-dir", target)
            self.assertEqual(r.returncode, 2)
            self.assertIn(f"checksum mismatch for file {blob}".encode(), r.stderr)
            self.assertFalse(os.path.exists(target))

        # The intact backup restores.
        r = ctl("restore", full, "--data-dir", target)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(target, blob)))

    def start_blocked_backup(self):
        """A backup to a pipe nobody reads: it holds the lock and blocks once the pipe is
        full (the incompressible blob is much larger than a pipe buffer)."""
        add_blob(self.h.data_dir, os.urandom(4 << 20))
        proc = subprocess.Popen([HEARTHCTL, "--config", self.h.config_path, "backup", "-"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        def reap():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        self.addCleanup(reap)
        first = proc.stdout.read(65536)  # the lock is taken before the first byte
        self.assertEqual(len(first), 65536)
        return proc, first

    def test_I05_concurrent_backup_is_refused_by_the_lock(self):
        proc, first = self.start_blocked_backup()
        second = self.h.ctl("backup", self.path("second.bak"))
        self.assertEqual(second.returncode, 2, second.stderr)
        self.assertIn("a backup is already running", second.stderr)
        self.assertFalse(os.path.exists(self.path("second.bak")))
        self.assertFalse(os.path.exists(self.path("second.bak.partial")))
        # The first one is unaffected and completes.
        out = self.path("first.bak")
        with open(out, "wb") as f:
            f.write(first)
            shutil.copyfileobj(proc.stdout, f)
        self.assertEqual(proc.wait(timeout=60), 0, proc.stderr.read())
        v = ctl("verify", out)
        self.assertEqual(v.returncode, 0, v.stderr)
        # Once it is done, the next backup runs.
        r = self.h.ctl("backup", self.path("third.bak"))
        self.assertEqual(r.returncode, 0, r.stderr)

    async def test_I05_kill9_during_backup_leaves_daemon_and_data_fine_and_no_backup(self):
        h = self.h
        proc, first = self.start_blocked_backup()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = self.path("killed.bak.partial")
        with open(partial, "wb") as f:
            f.write(first)
            f.write(proc.stdout.read())
        # What a killed backup left is never mistaken for a backup.
        target = self.path("restored")
        r = ctl("restore", partial, "--data-dir", target)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"ends early", r.stderr)
        self.assertFalse(os.path.exists(target))
        self.assertNotEqual(ctl("verify", partial).returncode, 0)
        # The daemon serves, its database is whole, and the next backup runs (the kernel
        # released the lock; the killed backup's scratch space is cleared).
        self.assertEqual(h.request("GET", "/health")[0], 200)
        alice = Client("alice@localhost/after", "alice secret pw", h.cert_path())
        await alice.login(h.xmpp_port)
        alice.send_message(mto="bob@localhost", mbody="after the kill", mtype="chat")
        await alice["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        await alice.stop()
        db = sqlite3.connect(f"file:{os.path.join(h.data_dir, 'hearth.db')}?mode=ro", uri=True)
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        finally:
            db.close()
        out = self.path("next.bak")
        r = h.ctl("backup", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl("restore", out, "--data-dir", target)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(h.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
