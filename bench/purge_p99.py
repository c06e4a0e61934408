#!/usr/bin/env python3
"""Live message latency while hearthd purges a large expired history (incident I11).

    HEARTHD=build/apps/hearthd/hearthd HEARTHCTL=build/apps/hearthctl/hearthctl \\
        python3 bench/purge_p99.py [--rows 1000000] [--out bench/results/purge-DATE.md]

Two phases on the same machine, each with a freshly started hearthd and two slixmpp
clients with stream management (alice sends to bob every 10 ms; latency is send → receive,
one process clock):
  baseline  no expired history;
  purge     the account has --rows archived messages older than the retention
            (xmpp.archive_retention_days = 7), written into the database while hearthd was
            stopped; hearthd purges them in its background batches from start-up on, and
            the phase lasts until the purge reports completion.
Prints and writes p50/p95/p99/max of both phases and the purge's rate.
"""
import argparse
import asyncio
import datetime
import os
import platform
import sqlite3
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "resilience"))
from harness import Hearth  # noqa: E402
from resilience import metric  # noqa: E402
from test_xmpp_client import Client  # noqa: E402

DAY_MS = 86_400_000


class Timed(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self.arrived = {}
        self.add_event_handler("message", self._got)

    def _got(self, msg):
        if msg["body"]:
            self.arrived[msg["body"]] = time.monotonic()


def write_expired(db_path, n):
    old = int(time.time() * 1000) - 30 * DAY_MS
    con = sqlite3.connect(db_path)
    with con:
        con.executemany(
            "INSERT INTO xmpp_archive(owner, id, with_jid, stamp_ms, stanza) VALUES(?, ?, ?, ?, ?)",
            (("alice@localhost", f"old-{i}", "gateway@localhost", old + i,
              "<message xmlns='jabber:client' from='gateway@localhost/g' to='alice@localhost' type='chat'>"
              f"<body>old {i}</body></message>") for i in range(n)))
    con.close()


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def measure(h, until, min_messages=300):
    """Latencies (ms) of messages sent every 10 ms until `until()` is true (and at least
    min_messages were sent)."""
    alice = Timed("alice@localhost/bench", "alice secret pw", h.cert_path())
    bob = Timed("bob@localhost/bench", "bob secret pw", h.cert_path())
    await bob.login(h.xmpp_port)
    await alice.login(h.xmpp_port)
    sent = {}
    loop = asyncio.get_running_loop()
    i = 0
    started = time.monotonic()
    while i < min_messages or not await loop.run_in_executor(None, until):
        body = f"live {i}"
        sent[body] = time.monotonic()
        alice.send_message(mto="bob@localhost", mbody=body, mtype="chat")
        i += 1
        await asyncio.sleep(0.01)
    deadline = time.monotonic() + 30
    while len(bob.arrived) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    lat = [(bob.arrived[b] - t) * 1000 for b, t in sent.items() if b in bob.arrived]
    lost = len(sent) - len(lat)
    for c in (alice, bob):
        await c.stop()
    return lat, lost, elapsed


def config(h):
    with open(h.config_path) as f:
        text = f.read()
    with open(h.config_path, "w") as f:
        f.write(text.replace("[xmpp]\n", "[xmpp]\narchive_retention_days = 7\n"))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  f"purge-{datetime.date.today().isoformat()}.md"))
    args = ap.parse_args()

    h = Hearth()
    config(h)
    try:
        h.start()
        h.add_users("alice", "bob")
        base, base_lost, _ = await measure(h, lambda: True, min_messages=500)
        h.stop()

        t0 = time.monotonic()
        write_expired(os.path.join(h.data_dir, "hearth.db"), args.rows)
        insert_s = time.monotonic() - t0

        def purged():
            _, _, body = h.request("GET", "/metrics")
            return int(metric(body.decode(), "hearth_xmpp_archive_purged_total") or 0)

        t0 = time.monotonic()
        h.start()
        during, during_lost, _ = await measure(h, lambda: purged() >= args.rows)
        purge_s = time.monotonic() - t0
        h.stop()
    finally:
        h.cleanup()

    def row(name, lat, lost):
        return (f"  {name:<22} n={len(lat):<5} p50 {percentile(lat, 50):7.1f} ms  p95 {percentile(lat, 95):7.1f} ms  "
                f"p99 {percentile(lat, 99):7.1f} ms  max {max(lat):7.1f} ms  mean {statistics.mean(lat):6.1f} ms"
                f"  lost {lost}")
    lines = [
        f"# live message latency during an archive purge ({datetime.date.today()}, "
        f"{os.cpu_count()} cores, {platform.release()})",
        f"expired history: {args.rows} archived messages (written in {insert_s:.1f} s); purge batch 500 rows; "
        f"purge done {purge_s:.1f} s after start-up ({args.rows / purge_s:,.0f} rows/s including start-up)",
        "alice -> bob every 10 ms over STARTTLS with XEP-0198, latency send -> receive:",
        row("baseline (no purge)", base, base_lost),
        row("during the purge", during, during_lost),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(f"# Purge of {args.rows:,} messages under live traffic (bench/purge_p99.py, incident I11)\n\n"
                "Machine: 2 cores shared with other engineers' builds; figures vary between runs.\n\n"
                "```\n" + text + "```\n")


if __name__ == "__main__":
    asyncio.run(main())
