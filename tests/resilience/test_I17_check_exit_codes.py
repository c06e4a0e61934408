"""I17: the end-to-end monitor crashed on a 500, so nobody was paged for a real outage.

/health reports a degraded state as data (status code plus JSON body), and `hearthctl
check` prints one Nagios/Icinga plugin line and exits 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN. This test walks through each: OK on a fresh server, WARNING past the disk
threshold, CRITICAL when a storage path is not writable (I01) and when hearthd is down,
UNKNOWN when hearthd is there but does not answer (stopped with SIGSTOP).

Defence off: not applicable as a switch; see the report (before this change a daemon that
did not answer was reported as "not running").
"""
import os
import signal
import unittest

from resilience import Hearth, fill_until_free, read_only_bind, small_filesystem, wait_until, with_section


class CheckExitCodes(unittest.TestCase):
    def test_I17_ok_warning_critical_unknown(self):
        h = Hearth()
        self.addCleanup(h.cleanup)
        mount = small_filesystem(h.data_dir, size="32m")
        mount.__enter__()
        self.addCleanup(mount.__exit__, None, None, None)
        self.addCleanup(h.stop)
        with_section(h, "ops", "disk_warning_percent = 50\ndisk_high_percent = 60\ndisk_critical_percent = 90\n"
                               "disk_reserve_mib = 2\n")
        h.start()

        def check():
            r = h.ctl("check")
            self.assertEqual(len(r.stdout.strip().splitlines()), 1, r.stdout + r.stderr)
            return r

        # OK
        r = check()
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertRegex(r.stdout, r"^HEARTH OK - \d+ checks ok \| .*disk_bytes_used=[\d.]+%;50;90")
        self.assertEqual(h.request("GET", "/health")[0], 200)

        # WARNING: past the disk warning threshold.
        filler = os.path.join(h.data_dir, "filler")
        total = os.statvfs(h.data_dir).f_blocks * os.statvfs(h.data_dir).f_frsize
        fill_until_free(h.data_dir, filler, int(total * 0.45))
        r = wait_until(lambda: (lambda r: r if r.returncode == 1 else None)(check()), what="WARNING")
        self.assertTrue(r.stdout.startswith("HEARTH WARNING - disk warning: space on"), r.stdout)
        status, body = h.get_json("/health")
        self.assertEqual((status, body["status"]), (200, "warning"))
        os.unlink(filler)
        wait_until(lambda: check().returncode == 0, what="OK again")

        # CRITICAL: the data directory stops being writable (incident I01).
        with read_only_bind(h.data_dir):
            r = wait_until(lambda: (lambda r: r if r.returncode == 2 else None)(check()), what="CRITICAL")
            self.assertIn("data_dir critical", r.stdout)
            self.assertIn(h.data_dir, r.stdout)
            self.assertIn("Read-only file system", r.stdout)
            status, body = h.get_json("/health")
            self.assertEqual((status, body["status"]), (503, "critical"))
        wait_until(lambda: check().returncode == 0, what="OK after the path is writable again")

        # UNKNOWN: hearthd is there but does not answer.
        os.kill(h.proc.pid, signal.SIGSTOP)
        try:
            r = check()
            self.assertEqual(r.returncode, 3, r.stdout)
            self.assertTrue(r.stdout.startswith("HEARTH UNKNOWN - "), r.stdout)
        finally:
            os.kill(h.proc.pid, signal.SIGCONT)
        # The frozen process is itself a stall (event_loops warns for one interval), then OK.
        wait_until(lambda: check().returncode == 0, what="OK after SIGCONT")

        # CRITICAL: hearthd is down (killed, so its socket file is left behind).
        h.proc.kill()
        h.proc.wait()
        r = check()
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertTrue(r.stdout.startswith("HEARTH CRITICAL - hearthd is not running"), r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
