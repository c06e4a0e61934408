"""I04: the host went down in the middle of work; the storage would not come back
without a manual flag.

Several XEP-0198 clients write as fast as the server lets them while hearthd is killed with
SIGKILL at 22 random moments, restarted after each. A plain restart then serves, the
database passes PRAGMA integrity_check, and every message whose <a h='...'/> covered it
(and that got no error) is in its recipient's archive (and offline store, as nobody read
it). Recipients never log in, so nothing is taken out of offline storage meanwhile.

Defence off: no configuration turns durability off. With a temporary patch to
src/xmpp/c2s.cc that counts stanzas on receipt and answers <r/> at once (instead of
counting a stanza once its storage job finished), this test fails: acknowledged messages
are missing from the archive after a kill.
"""
import asyncio
import os
import random
import sqlite3
import time
import unittest

from resilience import Hearth, with_section
from test_xmpp_client import Client, TIMEOUT

KILLS = 22
SENDERS = 3
RECIPIENTS = ("r0", "r1")
MAX_IN_FLIGHT = 40


class Writer(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self["xep_0198"].window = 4
        self.acked = []   # (recipient, body) the server acknowledged
        self.errors = set()  # ids answered with an error
        self.sent = 0
        self.add_event_handler("stanza_acked", self._acked)
        self.add_event_handler("message_error", lambda m: self.errors.add(m["id"]))
        self.sm_enabled = asyncio.Event()
        self.add_event_handler("sm_enabled", lambda _: self.sm_enabled.set())

    def _acked(self, stanza):
        if stanza.name == "message" and stanza["body"]:
            self.acked.append((stanza["to"].bare, stanza["body"], stanza["id"]))


class Kill9(unittest.IsolatedAsyncioTestCase):
    async def test_I04_sigkill_at_random_points_loses_no_acknowledged_message(self):
        rng = random.Random(int(os.environ.get("HEARTH_SEED", time.time())))
        h = Hearth()
        self.addCleanup(h.cleanup)
        with_section(h, "xmpp", "max_offline_messages = 1000000\n")
        h.start()
        senders = [f"s{i}" for i in range(SENDERS)]
        for name in senders + list(RECIPIENTS):
            r = h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)

        acked, errors, sent = [], set(), 0
        started = time.monotonic()
        for cycle in range(KILLS):
            if cycle:
                h.start()
            writers = [Writer(f"{n}@localhost/w{cycle}", f"{n} secret pw", h.cert_path()) for n in senders]
            try:
                await asyncio.gather(*(w.login(h.xmpp_port) for w in writers))
                await asyncio.gather(*(asyncio.wait_for(w.sm_enabled.wait(), TIMEOUT) for w in writers))
            except Exception:
                # A login that did not finish before a kill would be fine, but here nothing
                # was killed yet: the restart itself must serve.
                raise
            stop_at = time.monotonic() + rng.uniform(0.2, 1.8)
            seq = 0

            async def write(w, name):
                nonlocal seq
                while time.monotonic() < stop_at:
                    if w.sent - len(w.acked) > MAX_IN_FLIGHT:
                        await asyncio.sleep(0.005)
                        continue
                    seq += 1
                    body = f"{name} c{cycle} n{seq}"
                    msg = w.make_message(mto=f"{RECIPIENTS[seq % len(RECIPIENTS)]}@localhost", mbody=body, mtype="chat")
                    msg["id"] = body.replace(" ", "-")
                    msg.send()
                    w.sent += 1
                    await asyncio.sleep(0)

            await asyncio.gather(*(write(w, n) for w, n in zip(writers, senders)))
            # SIGKILL while the writers still have messages in flight.
            h.proc.kill()
            h.proc.wait()
            h._close_pipes()
            for w in writers:
                acked += w.acked
                errors |= w.errors
                sent += w.sent
                w.transport and w.transport.abort()
            await asyncio.sleep(0)

        # A plain restart serves, with no flag and no repair step.
        h.start()
        self.assertEqual(h.request("GET", "/health")[0], 200)
        reader = Client("s0@localhost/check", "s0 secret pw", h.cert_path())
        await reader.login(h.xmpp_port)
        await reader.stop()
        self.assertEqual(h.stop(), 0)
        elapsed = time.monotonic() - started

        db = sqlite3.connect(os.path.join(h.data_dir, "hearth.db"))
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            archive = {}
            for owner, stanza in db.execute("SELECT owner, stanza FROM xmpp_archive"):
                archive.setdefault(owner, []).append(stanza)
            archived = {owner: "\n".join(v) for owner, v in archive.items()}
            offline = {}
            for owner, stanza in db.execute("SELECT owner, stanza FROM xmpp_offline"):
                offline.setdefault(owner, []).append(stanza)
            queued = {owner: "\n".join(v) for owner, v in offline.items()}
        finally:
            db.close()
        checked = 0
        for to, body, mid in acked:
            if mid in errors:
                continue
            self.assertTrue(f"<body>{body}</body>" in archived.get(str(to), ""),
                          f"acknowledged message {body!r} to {to} is not in its archive")
            self.assertTrue(f"<body>{body}</body>" in queued.get(str(to), ""),
                          f"acknowledged message {body!r} to {to} is not in its offline store")
            checked += 1
        print(f"\nI04: {KILLS} SIGKILLs in {elapsed:.0f}s, {sent} messages sent, {len(acked)} acknowledged, "
              f"{len(errors)} answered with an error, {checked} verified in archive and offline store")
        self.assertGreater(checked, 100)


if __name__ == "__main__":
    unittest.main(verbosity=2)
