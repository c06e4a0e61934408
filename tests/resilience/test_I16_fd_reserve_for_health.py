"""I16: requests piled up, file descriptors ran out, and the server wedged; nobody could
even ask it what was wrong.

The admin socket keeps one spare descriptor for itself: with every descriptor taken by
client connections, `hearthctl check` still answers within its deadline and says the
descriptors are exhausted (open_files CRITICAL); once the clients go, it is OK again.

Not covered yet: /health over HTTP under descriptor exhaustion (it shares the HTTP
listeners, whose accept() fails like any other).

Defence off: without the spare descriptor (a temporary patch to src/ops/admin.cc), the
admin socket cannot accept and `hearthctl check` says UNKNOWN after its 5 s timeout.
"""
import resource
import socket
import time
import unittest

from resilience import Hearth, wait_until, with_section

LIMIT = 96


def limit_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


class FdReserveForHealth(unittest.TestCase):
    def test_I16_check_answers_while_connections_exhaust_descriptors(self):
        h = Hearth(preexec_fn=limit_files)
        self.addCleanup(h.cleanup)
        with_section(h, "limits", f"max_connections = {LIMIT - 16}\nfd_reserve = 16\nmax_connections_per_ip = {LIMIT}\n")
        # The host disk's fill level (a shared machine) is not what this test is about.
        with_section(h, "ops", "disk_warning_percent = 99\ndisk_high_percent = 99\ndisk_critical_percent = 100\n")
        h.start()
        self.addCleanup(h.stop)
        self.assertEqual(h.ctl("check").returncode, 0)

        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        # Connect until the server cannot accept any more (its accept() fails with EMFILE:
        # our connections then sit unaccepted in the backlog).
        for _ in range(LIMIT + 32):
            clients.append(socket.create_connection(("127.0.0.1", h.xmpp_port), timeout=5))
        started = time.monotonic()
        r = wait_until(lambda: (lambda r: r if "open_files critical" in r.stdout else None)(h.ctl("check")),
                       timeout=30, what="open_files CRITICAL through the admin socket")
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("descriptors", r.stdout)
        self.assertLess(time.monotonic() - started, 30)

        for c in clients:
            c.close()
        clients.clear()
        wait_until(lambda: h.ctl("check").returncode == 0, timeout=30, what="OK once the clients left")


if __name__ == "__main__":
    unittest.main(verbosity=2)
