"""Incident I06: a client-side race left files unpinned; an archival script moved
"inactive" data to cold storage, including live shared folders, and restoring risked
overwriting what 237 users had recreated since.

hearth's archival (`hearthctl archive`, first slice: CryptPad channels) archives only what
no account references (pins) and nothing touched within the window; it is a dry run first,
logged item by item; archived data goes to cold storage (files, durable before the rows go)
for a retention period; `hearthctl restore-archived` never overwrites data that exists
again, it reports each conflict.

The channels are written straight into the database of a stopped hearthd (what CryptPad
clients leave behind: a pinned old drive, an unpinned old pad, an unpinned recent pad);
hearthd is started afterwards to show it serves the result.

Defence off (for the incident note): an archival that ignores pins (a temporary patch).
"""
import json
import os
import sqlite3
import time
import unittest

from resilience import Hearth

DAY_MS = 86_400_000
# (channel, days since its last write, pinned by an account)
CHANNELS = (("a" * 32, 400, True), ("b" * 32, 400, False), ("c" * 32, 2, False))


def write_channels(db_path, channels):
    """Writes CryptPad channels (three messages each, the first a checkpoint) straight into
    a stopped hearthd's database."""
    now = int(time.time() * 1000)
    with sqlite3.connect(db_path) as db:
        for channel, age_days, pinned in channels:
            db.execute("INSERT INTO cryptpad_channels(channel, metadata, created) VALUES(?, ?, ?)",
                       (channel, '{"channel":"%s"}' % channel, now - (age_days + 1) * DAY_MS))
            for seq in range(3):
                db.execute("INSERT INTO cryptpad_messages(channel, seq, hash, sender, content, time, cp, cp_id) "
                           "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                           (channel, seq, f"h{seq}", None if seq else "sender", f"encrypted {channel[0]} {seq}",
                            now - age_days * DAY_MS + seq, 1 if seq == 0 else 0, "cp0" if seq == 0 else None))
            if pinned:
                db.execute("INSERT INTO cryptpad_pins(key, channel, target) VALUES(?, ?, ?)",
                           ("owner-key", channel, channel))
    db.close()


class ArchivalRespectsReferences(unittest.TestCase):
    def setUp(self):
        self.h = Hearth()
        self.addCleanup(self.h.cleanup)
        self.h.start()
        self.h.stop()
        self.db_path = os.path.join(self.h.data_dir, "hearth.db")
        write_channels(self.db_path, CHANNELS)

    def rows(self, channel):
        with sqlite3.connect(self.db_path) as db:
            return [r for r in db.execute(
                "SELECT seq, hash, sender, content, time, cp, cp_id FROM cryptpad_messages WHERE channel=? ORDER BY seq",
                (channel,))]

    def test_I06_archive_dry_run_apply_and_restore_without_overwriting(self):
        pinned, idle, recent = "a" * 32, "b" * 32, "c" * 32
        before = {c: self.rows(c) for c in (pinned, idle, recent)}

        dry = self.h.ctl("archive", "--idle-days", "180")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn(f"would archive cryptpad_channel {idle}", dry.stdout)
        self.assertNotIn(pinned, dry.stdout)
        self.assertNotIn(recent, dry.stdout)
        self.assertIn("dry run: 1 items; kept 1 pinned by an account, 1 touched within 180 days", dry.stdout)
        self.assertIn(f"event=archival.would_archive kind=cryptpad_channel id={idle}", dry.stderr)
        self.assertEqual({c: self.rows(c) for c in before}, before, "a dry run changes nothing")

        done = self.h.ctl("archive", "--idle-days", "180", "--apply")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"event=archival.archived kind=cryptpad_channel id={idle}", done.stderr)
        cold = os.path.join(self.h.data_dir, "cold", f"cryptpad_channel-{idle}.json")
        self.assertTrue(os.path.isfile(cold))
        self.assertEqual(self.rows(idle), [])
        self.assertEqual(self.rows(pinned), before[pinned], "referenced data is never archived")
        self.assertEqual(self.rows(recent), before[recent], "recently touched data is never archived")

        # A user recreated the pad meanwhile: restoring reports the conflict, overwrites nothing.
        with sqlite3.connect(self.db_path) as db:
            db.execute("INSERT INTO cryptpad_channels(channel, metadata, created) VALUES(?, '{}', 1)", (idle,))
            db.execute("INSERT INTO cryptpad_messages(channel, seq, hash, content, time, cp) "
                       "VALUES(?, 0, 'new', 'recreated', 1, 0)", (idle,))
        clash = self.h.ctl("restore-archived")
        self.assertEqual(clash.returncode, 1, clash.stdout + clash.stderr)
        self.assertIn(f"CONFLICT {idle}: the channel exists again", clash.stdout)
        self.assertEqual([r[3] for r in self.rows(idle)], ["recreated"])
        self.assertTrue(os.path.isfile(cold), "the archived copy is kept")

        # Once the recreated pad is gone, the archived one comes back exactly.
        with sqlite3.connect(self.db_path) as db:
            db.execute("DELETE FROM cryptpad_messages WHERE channel=?", (idle,))
            db.execute("DELETE FROM cryptpad_channels WHERE channel=?", (idle,))
        back = self.h.ctl("restore-archived", idle)
        self.assertEqual(back.returncode, 0, back.stdout + back.stderr)
        self.assertIn(f"restored {idle}", back.stdout)
        self.assertEqual(self.rows(idle), before[idle])
        self.assertFalse(os.path.exists(cold))

        self.h.start()  # the restored data directory serves
        status, _, _ = self.h.request("GET", "/health")
        self.assertIn(status, (200, 503))
        self.h.stop()

    def test_I06_restore_after_a_kill_between_the_cold_copy_and_the_delete(self):
        # An archival killed after its durable cold file but before the deleting transaction
        # leaves the channel live and a complete cold copy: restoring then is no conflict.
        idle = "b" * 32
        before = self.rows(idle)
        done = self.h.ctl("archive", "--idle-days", "180", "--apply")
        self.assertEqual(done.returncode, 0, done.stderr)
        cold = os.path.join(self.h.data_dir, "cold", f"cryptpad_channel-{idle}.json")
        with open(cold) as f:
            copy = f.read()
        back = self.h.ctl("restore-archived", idle)
        self.assertEqual(back.returncode, 0, back.stdout + back.stderr)
        with open(cold, "w") as f:  # what the kill leaves: both copies
            f.write(copy)
        again = self.h.ctl("restore-archived")
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertNotIn("CONFLICT", again.stdout)
        self.assertIn(f"event=archival.restore_already_live kind=cryptpad_channel id={idle}", again.stderr)
        self.assertEqual(self.rows(idle), before)
        self.assertFalse(os.path.exists(cold), "the redundant cold copy is gone")

    def test_I06_cold_storage_is_kept_for_its_retention_then_deleted(self):
        idle = "b" * 32
        done = self.h.ctl("archive", "--idle-days", "180", "--apply")
        self.assertEqual(done.returncode, 0, done.stderr)
        cold = os.path.join(self.h.data_dir, "cold", f"cryptpad_channel-{idle}.json")
        self.assertTrue(os.path.isfile(cold))
        again = self.h.ctl("archive", "--idle-days", "180", "--apply", "--cold-retention-days", "30")
        self.assertTrue(os.path.isfile(cold), "within its retention")
        # Age the cold copy past its retention (its own archived_ms is what counts).
        with open(cold) as f:
            text = f.read()
        doc = json.loads(text)
        doc["archived_ms"] -= 31 * DAY_MS
        with open(cold, "w") as f:
            json.dump(doc, f)
        dry = self.h.ctl("archive", "--idle-days", "180", "--cold-retention-days", "30")
        self.assertIn(f"would delete cold file {cold}", dry.stdout)
        self.assertTrue(os.path.isfile(cold), "a dry run deletes nothing")
        gone = self.h.ctl("archive", "--idle-days", "180", "--apply", "--cold-retention-days", "30")
        self.assertEqual(gone.returncode, 0, gone.stderr)
        self.assertIn("event=archival.cold_deleted", gone.stderr)
        self.assertFalse(os.path.exists(cold))
        self.assertEqual(again.returncode, 0)


if __name__ == "__main__":
    unittest.main()
