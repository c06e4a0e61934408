"""I09: the chat server spun at 100 % CPU, wrote no logs and answered on no port.

Every shard runs a heartbeat; a watchdog thread notices a loop turn longer than
server.stall_warning_ms, logs it with the name of the handler that was running, counts it
in /metrics (hearth_loop_stalls_total{shard}) and reports it on /health (event_loops),
and the admin socket (its own thread) still answers while a shard is stuck. The stall is
made on purpose with the test-only admin command debug.block_shard (ops.debug_commands).

Defence off (HEARTH_DEFENCE_OFF=1): server.stall_warning_ms = 600000, so no turn counts
as a stall.
"""
import json
import os
import socket
import tempfile
import time
import unittest

from resilience import DEFENCE_OFF, Hearth, metric, wait_until, with_section


def admin(h, command, **args):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(f"{h.data_dir}/hearthd.sock")
        s.sendall((json.dumps({"command": command, "args": args}) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def stalls(h):
    text = h.request("GET", "/metrics")[2].decode()
    return sum(metric(text, "hearth_loop_stalls_total", f'shard="{i}"') or 0 for i in range(2))


class StallDetector(unittest.TestCase):
    def test_I09_a_blocked_shard_is_named_counted_and_reported(self):
        h = Hearth()
        self.addCleanup(h.cleanup)
        with_section(h, "server", "stall_warning_ms = 600000\n" if DEFENCE_OFF else "stall_warning_ms = 100\n")
        with_section(h, "ops", "debug_commands = true\n")
        h.start()
        self.addCleanup(h.stop)
        self.assertEqual(stalls(h), 0)
        self.assertEqual(h.get_json("/health")[1]["checks"]["event_loops"]["status"], "ok")

        # Block both shards one after the other (run_after picks shards round-robin).
        for i in range(2):
            reply = admin(h, "debug.block_shard", ms="600")
            self.assertTrue(reply["ok"], reply)
            # The admin socket answers while a shard is stuck: health as data.
            check = h.ctl("check", "--fresh")
            self.assertIn(check.returncode, (0, 1, 2), check.stdout)
            wait_until(lambda: h.stderr().count("event=loop.stall_ended") > i, timeout=10, what="the stall to end")
        wait_until(lambda: stalls(h) >= 2, what="two stalls counted in /metrics")
        # At least the two made on purpose (a loaded test machine may add its own).
        text = h.request("GET", "/metrics")[2].decode()
        self.assertGreaterEqual(metric(text, "hearth_loop_stall_seconds_count"), 2)
        self.assertIn("handler=debug.block_shard", h.stderr())
        wait_until(lambda: int(h.get_json("/health")[1]["checks"]["event_loops"]["value"].split()[0]) >= 2,
                   what="the stalls on /health")
        for line in h.stderr().splitlines():
            if "event=loop.stall_ended" in line:
                ms = int(line.split(" ms=")[1].split()[0])
                self.assertGreaterEqual(ms, 400, line)
        # The server kept serving once the shards turned again.
        for _ in range(20):
            self.assertIn(h.request("GET", "/health")[0], (200, 503))

    def test_I09_systemd_watchdog_pings_stop_while_a_loop_is_stuck(self):
        """With WatchdogSec= (here: a fake $NOTIFY_SOCKET), hearthd says READY=1 and pings
        WATCHDOG=1 only while every loop turns; a shard stuck for 3 s stops the pings
        (systemd would restart the service), and they resume when it turns again."""
        sock_dir = tempfile.mkdtemp(prefix="hearth-notify-")
        path = os.path.join(sock_dir, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(path)
        notify.settimeout(0.05)
        self.addCleanup(notify.close)
        h = Hearth()
        self.addCleanup(h.cleanup)
        with_section(h, "server", "stall_warning_ms = 600000\n" if DEFENCE_OFF else "stall_warning_ms = 100\n")
        with_section(h, "ops", "debug_commands = true\n")
        os.environ.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        try:
            h.start()
        finally:
            del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
        self.addCleanup(h.stop)

        pings = []  # monotonic times of WATCHDOG=1

        def receive_until(deadline):
            states = []
            while time.monotonic() < deadline:
                try:
                    data = notify.recv(4096).decode()
                except socket.timeout:
                    continue
                states.append(data)
                if data == "WATCHDOG=1":
                    pings.append(time.monotonic())
            return states

        states = receive_until(time.monotonic() + 1.0)
        self.assertIn("READY=1", states)
        self.assertGreaterEqual(len(pings), 3)
        self.assertTrue(admin(h, "debug.block_shard", ms="3000")["ok"])
        blocked_at = time.monotonic()
        receive_until(blocked_at + 4.5)
        during = [t for t in pings if blocked_at + 1.5 < t < blocked_at + 2.9]
        after = [t for t in pings if t > blocked_at + 3.2]
        self.assertEqual(during, [], "watchdog pings went on while a loop was stuck")
        self.assertGreaterEqual(len(after), 2, "watchdog pings did not resume")


if __name__ == "__main__":
    unittest.main(verbosity=2)
