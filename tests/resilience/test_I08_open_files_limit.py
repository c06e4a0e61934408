"""I08: the new host hit the default open-files limit within hours.

hearthd raises its soft RLIMIT_NOFILE to what limits.max_connections + limits.fd_reserve
need, and refuses to start, printing the exact fix, when the hard limit is too low.
"""
import os
import resource
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import Hearth  # noqa: E402


def limit_files(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def soft_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files line")


class OpenFilesLimit(unittest.TestCase):
    def test_I08_raises_soft_limit_at_startup(self):
        h = Hearth("[limits]\nmax_connections = 3000\nfd_reserve = 128\n", preexec_fn=limit_files(256, 8192))
        try:
            h.start()
            self.assertGreaterEqual(soft_nofile(h.proc.pid), 3128)
            self.assertEqual(h.request("GET", "/health")[0], 200)
            self.assertEqual(h.stop(), 0)
        finally:
            h.cleanup()

    def test_I08_refuses_to_start_with_the_exact_fix(self):
        h = Hearth("[limits]\nmax_connections = 5000\nfd_reserve = 128\n", preexec_fn=limit_files(256, 1024))
        try:
            h.start(expect_ready=False)
            self.assertNotEqual(h.wait_exit(), 0)
            err = h.stderr()
            self.assertIn("refusing to start", err)
            self.assertIn("LimitNOFILE=5128", err)
            self.assertIn("ulimit -Hn 5128", err)
            self.assertIn("limits.max_connections", err)
            self.assertFalse(os.path.exists(os.path.join(h.data_dir, "hearthd.sock")))
        finally:
            h.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
