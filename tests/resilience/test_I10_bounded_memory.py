"""I10: under high I/O the chat server's memory grew without bound.

What the server queues for a connection is bounded (net's per-connection send budget,
4 MiB): a client that stops reading while a contact floods it is cut once its queue is
full (counted in hearth_stream_send_overflows_total) instead of the server buffering
everything, so hearthd's resident memory stays flat while 48 MiB are sent at the stuck
client. Then 150 logins and logouts (churn) leave memory flat too.

Defence off: a temporary patch to src/net/stream_session.cc (StreamHandle::send without
the budget check) makes the server buffer everything; this test then fails on memory.
"""
import asyncio
import unittest

from resilience import Hearth, measure_memory_without_asan_quarantine, metric, with_section
from test_xmpp_client import Client, TIMEOUT, wait_for_condition

MiB = 1 << 20
BODY = "x" * (32 * 1024)
FLOOD = 48 * MiB
CHURN = 150


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class BoundedMemory(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        measure_memory_without_asan_quarantine()

    async def test_I10_a_client_that_stops_reading_is_cut_and_memory_stays_flat(self):
        h = Hearth()
        self.addCleanup(h.cleanup)
        with_section(h, "xmpp", "read_bytes_per_second = 268435456\n")
        h.start()
        self.addCleanup(h.stop)
        for name in ("slow", "fast"):
            r = h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        pid = h.proc.pid

        slow = Client("slow@localhost/stuck", "slow secret pw", h.cert_path())
        fast = Client("fast@localhost/flood", "fast secret pw", h.cert_path())
        await slow.login(h.xmpp_port)
        await fast.login(h.xmpp_port)
        baseline = rss(pid)
        slow.transport.pause_reading()  # a phone in a dead zone: the socket stays open

        peak, sent = baseline, 0
        while sent < FLOOD:
            for _ in range(16):
                fast.send_message(mto="slow@localhost/stuck", mbody=BODY, mtype="chat")
                sent += len(BODY)
            await fast["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)  # keep the sender's own queue short
            peak = max(peak, rss(pid))
        growth = peak - baseline
        print(f"\nI10: sent {sent // MiB} MiB at a stuck client; RSS {baseline // MiB} -> peak {peak // MiB} MiB")
        self.assertLess(growth, 24 * MiB, f"memory grew by {growth // MiB} MiB while flooding a stuck client")
        text = h.request("GET", "/metrics")[2].decode()
        self.assertGreaterEqual(metric(text, "hearth_stream_send_overflows_total", 'listener="xmpp-client"') or 0, 1)
        await wait_for_condition(
            lambda: metric(h.request("GET", "/metrics")[2].decode(), "hearth_xmpp_sessions") == 1,
            what="the stuck session to be gone")
        slow.transport.abort()
        await fast.stop()

        # Churn: logins and logouts leave nothing behind.
        before = rss(pid)
        for i in range(CHURN):
            c = Client(f"fast@localhost/churn{i}", "fast secret pw", h.cert_path())
            await c.login(h.xmpp_port)
            await c.stop()
        after = rss(pid)
        print(f"I10: {CHURN} logins/logouts; RSS {before // MiB} -> {after // MiB} MiB")
        self.assertLess(after - before, 8 * MiB)


if __name__ == "__main__":
    unittest.main(verbosity=2)
