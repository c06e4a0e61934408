"""Federation between two hearth instances (a.test on 127.0.0.1, b.test on 127.0.0.2): time of
the first message over a new s2s link, paced latency, a burst from 25 senders with the
servers CPU per message, resident memory. LOCAL=1 runs the same with both users on a.test.
Run with HEARTHD/HEARTHCTL set, from any directory, with Debian python3 (slixmpp)."""
import asyncio, os, sys, time, statistics
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
from test_xmpp_federation import FedClient, free_port, make_ca, make_cert, server
import tempfile

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])

async def main():
    tmp = tempfile.mkdtemp()
    ca = make_ca(tmp)
    ca_ = make_cert(tmp, "a", ["a.test", "conference.a.test"]); cb = make_cert(tmp, "b", ["b.test", "conference.b.test"])
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.2")
    a = server("a.test", "127.0.0.1", pa, ca_, ca, [f"b.test=127.0.0.2:{pb}"]).start()
    b = server("b.test", "127.0.0.2", pb, cb, ca, [f"a.test=127.0.0.1:{pa}"]).start()
    LOCAL = os.environ.get("LOCAL") == "1"
    a.add_users("alice", *[f"s{i}" for i in range(25)]); b.add_users("bob")
    if LOCAL: a.add_users("bob")
    alice = FedClient("alice@a.test/x", "alice secret pw", ca, "127.0.0.1"); await alice.login(a.xmpp_port)
    if LOCAL:
        bob = FedClient("bob@a.test/x", "bob secret pw", ca, "127.0.0.1"); await bob.login(a.xmpp_port)
    else:
        bob = FedClient("bob@b.test/x", "bob secret pw", ca, "127.0.0.2"); await bob.login(b.xmpp_port)
    # warm-up: establish the stream
    t = time.monotonic(); alice.send_message(mto=str(bob.boundjid.bare), mbody="warm", mtype="chat")
    while True:
        m = await bob.messages.get()
        if m["body"] == "warm": break
    first = time.monotonic() - t
    rss_a0, rss_b0 = rss(a.proc.pid), rss(b.proc.pid)
    # paced latency: 200 msg/s for 5 s
    lat = []
    async def recv(n):
        for _ in range(n):
            m = await bob.messages.get()
            lat.append(time.monotonic() - float(m["body"]))
    r = asyncio.ensure_future(recv(1000))
    for i in range(1000):
        alice.send_message(mto=str(bob.boundjid.bare), mbody=repr(time.monotonic()), mtype="chat")
        await asyncio.sleep(0.005)
    await asyncio.wait_for(r, 60)
    lat.sort()
    # burst: 25 senders on a.test, 200 messages each (a client's c2s queue holds 256)
    senders = []
    for i in range(25):
        c = FedClient(f"s{i}@a.test/x", f"s{i} secret pw", ca, "127.0.0.1"); await c.login(a.xmpp_port); senders.append(c)
    lat.clear()
    N = 5000
    ca0, cb0 = cpu(a.proc.pid), cpu(b.proc.pid)
    t = time.monotonic()
    r = asyncio.ensure_future(recv(N))
    for i in range(N):
        senders[i % 25].send_message(mto=str(bob.boundjid.bare), mbody=repr(time.monotonic()), mtype="chat")
    try:
        await asyncio.wait_for(r, 60)
    except asyncio.TimeoutError:
        print("received", len(lat), "of", 1000 + N)
        print([l for l in a.stdout_lines + a.stderr_lines if "xmpp." in l or "stream." in l][-12:])
        print([l for l in b.stdout_lines + b.stderr_lines if "xmpp." in l or "stream." in l][-12:])
        raise
    dt = time.monotonic() - t
    ca1, cb1 = cpu(a.proc.pid), cpu(b.proc.pid)
    print(f"first message (connect+TLS+EXTERNAL+deliver): {first*1000:.0f} ms")
    print(f"paced 200/s x1000: p50 {lat[len(lat)//2]*1000:.1f} ms p99 {lat[int(len(lat)*0.99)]*1000:.1f} ms")
    print(f"burst {N}: {N/dt:.0f} msg/s, server CPU per message A {1e6*(ca1-ca0)/N:.0f} us, B {1e6*(cb1-cb0)/N:.0f} us")
    print(f"RSS after stream up: A {rss_a0} KiB, B {rss_b0} KiB")
    await alice.stop(); await bob.stop()
    a.stop(); b.stop(); a.cleanup(); b.cleanup()

asyncio.run(main())
