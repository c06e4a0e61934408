"""Incident I05: the host died; a down page was improvised hours later.

When hearthd cannot open its storage at start (here the database path is a directory, as
a failed mount or a broken disk would leave it), it does not exit: it serves a maintenance
page on its HTTP port (503 with Retry-After for every path, /health critical and naming
the cause) and tries the storage again every few seconds. Once the storage is back it
starts the whole service on the same port by itself, and nothing stored is lost.

Defence off: a hearthd without the maintenance mode (for the incident note, the build
before it) exits at once with "cannot open the database", and the test fails with
"hearthd exited".
"""
import json
import os
import unittest

from resilience import Hearth, free_port, wait_until


class MaintenancePage(unittest.TestCase):
    def test_I05_maintenance_page_until_storage_returns_then_the_service_starts(self):
        port = free_port()
        h = Hearth()
        self.addCleanup(h.cleanup)
        with open(h.config_path) as f:
            text = f.read()
        with open(h.config_path, "w") as f:
            f.write(text.replace("[http]\nport = 0\n", f"[http]\nport = {port}\n"))
        h.start()
        h.add_users("alice")
        self.assertEqual(h.stop(), 0)

        db = os.path.join(h.data_dir, "hearth.db")
        os.rename(db, db + ".away")
        os.mkdir(db)  # what an unmounted or broken volume looks like to SQLite here

        h.start(expect_ready=False)
        self.addCleanup(h.stop)
        h.http_port = port

        def maintenance():
            if h.proc.poll() is not None:
                raise AssertionError(f"hearthd exited with {h.proc.returncode}: {h.stderr()}")
            try:
                return h.request("GET", "/any/path")
            except OSError:
                return None
        status, headers, body = wait_until(maintenance, what="the maintenance page")
        self.assertEqual(status, 503)
        self.assertEqual(headers.get("retry-after"), "60")
        self.assertIn(b"Down for maintenance", body)
        status, _, body = h.request("GET", "/health")
        self.assertEqual(status, 503)
        health = json.loads(body)
        self.assertEqual(health["status"], "critical")
        self.assertIn("maintenance", health["checks"]["storage"]["message"])
        self.assertIn("event=hearthd.maintenance", h.stderr())

        os.rmdir(db)
        os.rename(db + ".away", db)
        wait_until(lambda: any("Press Ctrl-C" in l for l in h.stdout_lines), what="the real start")
        wait_until(lambda: h.request("GET", "/health")[0] == 200, what="/health ok on the same port")
        self.assertIn("alice@localhost", h.ctl("user", "list").stdout, "nothing stored was lost")
        self.assertEqual(h.stop(), 0)


if __name__ == "__main__":
    unittest.main()
