"""I01: a maintenance task changed the service user; the file store's directory stayed
owned by the old one. Uploads failed for three days before anyone noticed.

hearthd probes every storage path for read and write as the running user (create, write,
fsync, read back, remove). Within one check interval the check goes CRITICAL naming the
path and the reason; what does not need the path keeps working; once the path is
writable again the check recovers by itself. We run as root, for whom mode bits do not
stop writes, so the path is made read-only with a read-only bind mount of itself.

Defence off (HEARTH_DEFENCE_OFF=1 is not a switch here): without the probe, /health has
no data_dir check at all and this test fails at its first assertion.
"""
import asyncio
import unittest

from resilience import Hearth, read_only_bind, with_section
from test_xmpp_client import Client, TIMEOUT, next_item, wait_for_condition


class UnwritableStoragePath(unittest.IsolatedAsyncioTestCase):
    async def test_I01_unwritable_data_dir_is_critical_by_name_and_recovers(self):
        h = Hearth()
        self.addCleanup(h.cleanup)
        with_section(h, "ops", "disk_reserve_mib = 0\n")
        h.start()
        self.addCleanup(h.stop)
        for name in ("ann", "ben"):
            r = h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        status, body = h.get_json("/health")
        self.assertEqual(body["checks"]["data_dir"]["status"], "ok")

        with read_only_bind(h.data_dir):
            # Within one interval (1 s here) plus a margin for the scrape.
            await wait_for_condition(lambda: h.get_json("/health")[1]["checks"]["data_dir"]["status"] == "critical",
                                     timeout=5, what="data_dir critical on /health")
            status, body = h.get_json("/health")
            self.assertEqual(status, 503)
            message = body["checks"]["data_dir"]["message"]
            self.assertIn(h.data_dir, message)
            self.assertIn("Read-only file system", message)
            self.assertIn("uid 0", message)
            await asyncio.get_running_loop().run_in_executor(
                None, h.wait_for_log, "event=health.changed check=data_dir status=critical")
            # What does not need a new file in that directory keeps working: logins and
            # messages (the open database is unaffected).
            ann = Client("ann@localhost/t", "ann secret pw", h.cert_path())
            ben = Client("ben@localhost/t", "ben secret pw", h.cert_path())
            await ann.login(h.xmpp_port)
            await ben.login(h.xmpp_port)
            ann.send_message(mto="ben@localhost", mbody="still here", mtype="chat")
            await next_item(ben.messages, lambda m: m["body"] == "still here")
            await ann.stop()
            await ben.stop()
        await wait_for_condition(lambda: h.get_json("/health")[1]["checks"]["data_dir"]["status"] == "ok",
                                 timeout=TIMEOUT, what="data_dir recovers by itself")
        await asyncio.get_running_loop().run_in_executor(
            None, h.wait_for_log, "event=health.changed check=data_dir status=ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
