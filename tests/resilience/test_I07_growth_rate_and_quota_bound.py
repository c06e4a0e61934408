"""Incident I07: with deletion scripts off, the database grew until the disk was 80 % full
and alerts arrived daily.

hearth exports how fast its data grows and when the disk will be full, and bounds what one
account can add. On a small filesystem, under a steady upload load from a real client
(slixmpp, XEP-0363):
  - /metrics carries hearth_disk_growth_bytes_per_second > 0 and a days-until-full
    estimate consistent with it (free bytes / growth rate), and /health's disk check says
    "growing ... full in N days" once past the warning threshold;
  - the per-account daily upload quota stops that account's growth: past the quota, slots
    are refused with <resource-constraint/> (type wait) and the file store stops growing.
Retention (archive and uploads expire and are purged in batches) is asserted by I11, I12
and test_xmpp_retention.

Defence off (HEARTH_DEFENCE_OFF=1): the daily quota is set to 1 TiB, so nothing stops the
account and the test fails.
"""
import http.client
import os
import ssl
import sys
import unittest
import urllib.parse

from slixmpp.exceptions import IqError

from resilience import DEFENCE_OFF, Hearth, fill_until_free, metric, small_filesystem, wait_until, with_section
from test_xmpp_client import Client, TIMEOUT, wait_for_condition

UPLOAD = "urn:xmpp:http:upload:0"
MiB = 1 << 20
FILE = 256 * 1024
QUOTA = 4 * MiB


class GrowthIsMeasuredAndBounded(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.h = Hearth(config_extra=f"[upload]\nmax_file_bytes = {FILE}\n"
                                     f"daily_quota_bytes = {(1 << 40) if DEFENCE_OFF else QUOTA}\n")
        self.addCleanup(self.h.cleanup)
        mount = small_filesystem(self.h.data_dir, size="48m")
        mount.__enter__()
        self.addCleanup(mount.__exit__, None, None, None)
        self.addCleanup(self.h.stop)
        with_section(self.h, "ops", "disk_warning_percent = 50\ndisk_high_percent = 80\ndisk_critical_percent = 95\n"
                                    "disk_reserve_mib = 2\n")
        self.h.start()
        self.h.add_users("alice")

    def metrics(self):
        _, _, body = self.h.request("GET", "/metrics")
        return body.decode()

    def blob_bytes(self):
        total = 0
        for root, _, files in os.walk(os.path.join(self.h.data_dir, "blobs")):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    def put(self, url, body):
        u = urllib.parse.urlsplit(url)
        ctx = ssl.create_default_context(cafile=self.h.cert_path())
        conn = http.client.HTTPSConnection("localhost", u.port, context=ctx, timeout=TIMEOUT)
        try:
            conn.request("PUT", u.path, body=body, headers={"Content-Type": "application/octet-stream"})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    async def test_I07_growth_rate_days_until_full_and_quota(self):
        alice = Client("alice@localhost/up", "alice secret pw", self.h.cert_path())
        alice.register_plugin("xep_0363")
        self.addAsyncCleanup(alice.stop)
        await alice.login(self.h.xmpp_port)

        # Upload until the account's quota says no (at most twice the quota's worth).
        stored = 0
        refused = None
        for i in range(2 * QUOTA // FILE):
            try:
                iq = await alice["xep_0363"].request_slot("upload.localhost", f"f{i}.bin", FILE,
                                                          "application/octet-stream", timeout=TIMEOUT)
            except IqError as e:
                refused = e.iq
                break
            put = iq.xml.find(f"{{{UPLOAD}}}slot").find(f"{{{UPLOAD}}}put").get("url")
            self.assertEqual(self.put(put, os.urandom(FILE)), 201)
            stored += FILE
        self.assertIsNotNone(refused, "the daily quota stopped the account")
        self.assertEqual(refused["error"]["condition"], "resource-constraint")
        self.assertEqual(refused["error"]["type"], "wait")
        self.assertEqual(stored, QUOTA)
        self.assertLessEqual(self.blob_bytes(), QUOTA + 64 * 1024, "the file store grew by the quota, no more")

        # The growth (the uploads, then other data landing on the disk) is measured.
        fill_until_free(self.h.data_dir, os.path.join(self.h.data_dir, "other-data.filler"),
                        int(os.statvfs(self.h.data_dir).f_blocks * os.statvfs(self.h.data_dir).f_frsize * 0.4))

        def consistent():
            m = self.metrics()
            growth = metric(m, "hearth_disk_growth_bytes_per_second")
            days = metric(m, "hearth_disk_days_until_full")
            free = metric(m, "hearth_disk_bytes", 'kind="free"')
            if not growth or growth <= 0 or days is None or days <= 0 or not free:
                return False
            return abs(days - free / growth / 86400) <= 0.01 * days  # one sample's figures
        wait_until(consistent, timeout=30, what="growth rate and days-until-full on /metrics")

        def warned():
            _, _, body = self.h.request("GET", "/health")
            import json
            disk = json.loads(body)["checks"]["disk"]
            return disk["status"] == "warning" and "full in" in disk["message"] and disk
        disk = wait_until(warned, timeout=30, what="a disk warning with a days-until-full estimate")
        self.assertIn("warning at 50%", disk["message"])
        print(f"\nI07: {stored // 1024} KiB stored before the quota refused; disk check: {disk['message']}",
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
