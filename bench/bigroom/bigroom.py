#!/usr/bin/env python3
"""bigroom: how hearth's Matrix behaves in a big room (issue 5), next to a small one.

Needs accounts made beforehand with `hearthctl user add-many` (one line per account:
"localpart device_id access_token", --tokens). Accounts 1..--members fill the big room,
the two after them make the small room. Everything from here goes through the
client-server API on 127.0.0.1:

  fill    account 1 creates a public room; the others POST /join (--concurrency at once);
          then --events m.room.message PUTs, senders in turn over the members;
          the small room: 2 members, --small-events messages.
  measure for the big and the small room, --runs rounds of:
          send            --sends sequential PUTs by one member (p50/p99)
          sync_incr       /sync?since=<token taken right before one new event>&timeout=0 by
                          another member, after the event is sent (--samples times)
          sync_initial    initial /sync with Element's filter (lazy-loaded members,
                          timeline limit 20) by a member of that room only
          members         GET /rooms/{id}/members
          messages        GET /rooms/{id}/messages?dir=b&limit=50 from the end
          each with server CPU per operation (utime+stime of --server-pid over the phase).
Prints one JSON object per room and round on stdout, after one for the fill.
HTTP client in mxhttp.py (from the former Python matrixload); loopback only.
"""
import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mxhttp import API, Http, pct, proc_cpu, proc_rss_kib, self_cpu  # noqa: E402

ELEMENT_FILTER = urllib.parse.quote(json.dumps(
    {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 20}}}, separators=(",", ":")))


def q(room):
    return urllib.parse.quote(room, safe="")


def db_bytes(data_dir):
    total = 0
    for name in ("hearth.db", "hearth.db-wal", "hearth.db-shm"):
        try:
            total += os.path.getsize(os.path.join(data_dir, name))
        except OSError:
            pass
    return total


async def must(http, method, path, body, token, what):
    st, js = await http.request(method, path, body, token)
    if st != 200:
        raise RuntimeError(f"{what}: {st} {str(js)[:300]}")
    return js


async def run_pool(n_conns, host, port, jobs):
    """Runs the coroutine factories in `jobs` on n_conns connections, in order."""
    it = iter(jobs)
    errors = [0]

    async def worker():
        h = Http(host, port)
        for job in it:
            try:
                await job(h)
            except Exception as e:  # counted, the fill goes on
                errors[0] += 1
                if errors[0] <= 5:
                    print(f"bigroom: {e}", file=sys.stderr)
    await asyncio.gather(*(worker() for _ in range(n_conns)))
    return errors[0]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tokens", required=True, help="`hearthctl user add-many` output")
    ap.add_argument("--members", type=int, default=10000)
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--small-events", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sends", type=int, default=200)
    ap.add_argument("--samples", type=int, default=50, help="incremental syncs, /messages per round")
    ap.add_argument("--heavy-samples", type=int, default=10, help="initial syncs, /members per round")
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--data-dir", default="")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("bigroom: loopback only")
    lines = [ln.split() for ln in open(a.tokens) if ln.strip()]
    if len(lines) < a.members + 2:
        sys.exit(f"bigroom: {len(lines)} accounts in {a.tokens}, need {a.members + 2}")
    users = [{"localpart": ln[0], "token": ln[2]} for ln in lines]
    big_members, small_members = users[:a.members], users[a.members:a.members + 2]
    pid = a.server_pid

    # ---------------------------------------------------------------- fill
    h0 = Http(a.host, a.port)
    t_fill, cpu_fill = time.monotonic(), proc_cpu(pid)
    owner = big_members[0]
    js = await must(h0, "POST", f"{API}/createRoom", {"preset": "public_chat", "name": "big"}, owner["token"], "createRoom")
    big = js["room_id"]

    def join_job(u, room):
        async def job(h):
            await must(h, "POST", f"{API}/rooms/{q(room)}/join", {}, u["token"], "join")
        return job
    t0, c0 = time.monotonic(), proc_cpu(pid)
    join_errors = await run_pool(a.concurrency, a.host, a.port, (join_job(u, big) for u in big_members[1:]))
    joins_s, joins_cpu = time.monotonic() - t0, proc_cpu(pid) - c0
    print(f"bigroom: {a.members - 1} joins in {joins_s:.1f} s", file=sys.stderr, flush=True)

    def send_job(u, room, i, tag):
        async def job(h):
            await must(h, "PUT", f"{API}/rooms/{q(room)}/send/m.room.message/{tag}{i}",
                       {"msgtype": "m.text", "body": f"fill {i} " + "x" * 48}, u["token"], "send")
        return job
    t0, c0 = time.monotonic(), proc_cpu(pid)
    send_errors = await run_pool(a.concurrency, a.host, a.port,
                                 (send_job(big_members[i % a.members], big, i, "f") for i in range(a.events)))
    events_s, events_cpu = time.monotonic() - t0, proc_cpu(pid) - c0
    print(f"bigroom: {a.events} events in {events_s:.1f} s", file=sys.stderr, flush=True)

    s_owner, s_other = small_members
    js = await must(h0, "POST", f"{API}/createRoom", {"preset": "public_chat", "name": "small"}, s_owner["token"], "createRoom")
    small = js["room_id"]
    await must(h0, "POST", f"{API}/rooms/{q(small)}/join", {}, s_other["token"], "join")
    for i in range(a.small_events):
        await send_job(s_owner, small, i, "sf")(h0)
    fill = {"workload": "bigroom", "phase": "fill", "members": a.members, "events": a.events,
            "fill_s": round(time.monotonic() - t_fill, 1), "fill_server_cpu_s": round(proc_cpu(pid) - cpu_fill, 1),
            "joins_s": round(joins_s, 1), "joins_per_s": round((a.members - 1) / joins_s, 1),
            "join_server_cpu_us": round(joins_cpu / max(1, a.members - 1) * 1e6),
            "events_s": round(events_s, 1), "events_per_s": round(a.events / events_s, 1),
            "event_server_cpu_us": round(events_cpu / max(1, a.events) * 1e6),
            "errors": join_errors + send_errors, "rss_kib": proc_rss_kib(pid),
            "db_bytes": db_bytes(a.data_dir) if a.data_dir else 0}
    print(json.dumps(fill), flush=True)

    # ---------------------------------------------------------------- measure
    # Per room: who sends (a member), who syncs (another member), who sends the one new
    # event before an incremental sync, and who does the initial sync (only in that room).
    rooms = {
        "big": {"id": big, "sender": big_members[1], "syncer": big_members[2], "poker": big_members[0],
                "initial": big_members[3]},
        "small": {"id": small, "sender": s_other, "syncer": s_other, "poker": s_owner, "initial": s_other},
    }
    txn = [0]
    h = Http(a.host, a.port)
    hs = Http(a.host, a.port)

    for run in range(1, a.runs + 1):
        for name, r in rooms.items():
            rq = q(r["id"])
            out = {"workload": "bigroom", "phase": "measure", "room": name, "run": run}

            async def send_one(u=r["sender"]):
                txn[0] += 1
                await must(h, "PUT", f"{API}/rooms/{rq}/send/m.room.message/m{run}{name}{txn[0]}",
                           {"msgtype": "m.text", "body": f"measure {txn[0]}"}, u["token"], "send")
            c0 = proc_cpu(pid)
            lat = []
            for _ in range(a.sends):
                s = time.monotonic()
                await send_one()
                lat.append((time.monotonic() - s) * 1000)
            cpu = proc_cpu(pid) - c0
            out.update(send_p50_ms=round(pct(lat, .5), 2), send_p99_ms=round(pct(lat, .99), 2),
                       send_cpu_us=round(cpu / a.sends * 1e6))

            # Incremental sync: token, then one new event by another member, then the sync.
            # The member has read the room up to here (a read receipt, as a client that is
            # caught up sends): otherwise every sync recounts up to 500 unread events.
            js = await must(hs, "GET", f"{API}/rooms/{rq}/messages?dir=b&limit=1", None, r["syncer"]["token"], "last")
            last = js["chunk"][0]["event_id"]
            await must(hs, "POST", f"{API}/rooms/{rq}/receipt/m.read/{q(last)}", {}, r["syncer"]["token"], "receipt")
            js = await must(hs, "GET", f"{API}/sync?timeout=0", None, r["syncer"]["token"], "sync")
            since = js["next_batch"]
            lat, cpu = [], 0.0
            for _ in range(a.samples):
                await send_one(r["poker"])
                c0 = proc_cpu(pid)
                s = time.monotonic()
                js = await must(hs, "GET", f"{API}/sync?timeout=0&since={q(since)}", None, r["syncer"]["token"], "sync")
                lat.append((time.monotonic() - s) * 1000)
                cpu += proc_cpu(pid) - c0
                ev = js.get("rooms", {}).get("join", {}).get(r["id"], {}).get("timeline", {}).get("events", [])
                if not ev:
                    out["sync_incr_missing"] = out.get("sync_incr_missing", 0) + 1
                since = js["next_batch"]
            out.update(sync_incr_p50_ms=round(pct(lat, .5), 2), sync_incr_p99_ms=round(pct(lat, .99), 2),
                       sync_incr_cpu_us=round(cpu / a.samples * 1e6))

            # proc_cpu has 10 ms ticks: per-operation CPU is the phase's total over its count.
            async def phase(n, method, path, token, key, check=None):
                lat, size = [], 0
                c0 = proc_cpu(pid)
                for _ in range(n):
                    s = time.monotonic()
                    js = await must(hs, method, path, None, token, key)
                    lat.append((time.monotonic() - s) * 1000)
                    size = len(json.dumps(js))
                    if check:
                        check(js)
                cpu = proc_cpu(pid) - c0
                out.update({f"{key}_p50_ms": round(pct(lat, .5), 2), f"{key}_max_ms": round(max(lat), 2),
                            f"{key}_cpu_us": round(cpu / n * 1e6), f"{key}_bytes": size})

            def check_initial(js):
                room = js.get("rooms", {}).get("join", {}).get(r["id"], {})
                out["sync_initial_state_events"] = len(room.get("state", {}).get("events", []))
                out["sync_initial_timeline_events"] = len(room.get("timeline", {}).get("events", []))
            await phase(a.heavy_samples, "GET", f"{API}/sync?timeout=0&filter={ELEMENT_FILTER}",
                        r["initial"]["token"], "sync_initial", check_initial)

            def check_members(js):
                out["members_returned"] = len(js.get("chunk", []))
            await phase(a.heavy_samples, "GET", f"{API}/rooms/{rq}/members", r["sender"]["token"], "members",
                        check_members)

            def check_messages(js):
                out["messages_returned"] = len(js.get("chunk", []))
            await phase(a.samples, "GET", f"{API}/rooms/{rq}/messages?dir=b&limit=50", r["sender"]["token"],
                        "messages", check_messages)
            out.update(rss_kib=proc_rss_kib(pid), db_bytes=db_bytes(a.data_dir) if a.data_dir else 0,
                       client_cpu_s=round(self_cpu(), 1))
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
