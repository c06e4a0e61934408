#!/usr/bin/env python3
"""matrixload: a Matrix client-server load generator (Python asyncio, raw HTTP/1.1 keep-alive).

Registers users (registration tokens from `hearthctl invite create`, one per line in
--tokens, or m.login.dummy when the server allows open registration, as Synapse with
enable_registration_without_verification), creates one room, lets the senders join, then
for each concurrency level (--levels 1,16,64) every sender PUTs m.room.message events
closed-loop (the next after the previous answer) until --messages events are sent at that
level. One receiver long-polls /sync and records, per event, the time from the start of
its PUT to its arrival in a /sync answer (send-to-sync latency). It reports sends/s,
p50/p99 send latency, p50/p99 send-to-sync latency, server CPU and RSS (from /proc of
--server-pid), and its own CPU, as one JSON object per level on stdout.

Python, not C++: at the rates Matrix servers reach here (tens to a few thousand sends/s)
one asyncio loop is not the limit; the report prints client CPU next to server CPU so a
reader can check that. Bounded by --messages and --max-seconds; 127.0.0.1 only.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid


def proc_cpu(pid):
    if not pid:
        return 0.0
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0.0
    f = s[s.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    if not pid:
        return 0
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(v, q):
    if not v:
        return 0.0
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


class Http:
    """One keep-alive HTTP/1.1 connection; requests on it are sequential."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def request(self, method, path, body=None, token=None):
        for attempt in (0, 1):
            if self.w is None:
                self.r, self.w = await asyncio.open_connection(self.host, self.port)
            data = b"" if body is None else json.dumps(body).encode()
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(data)}\r\n"
            if body is not None:
                head += "Content-Type: application/json\r\n"
            if token:
                head += f"Authorization: Bearer {token}\r\n"
            try:
                self.w.write(head.encode() + b"\r\n" + data)
                await self.w.drain()
                status_line = await self.r.readline()
                if not status_line:
                    raise ConnectionError("closed")
                status = int(status_line.split()[1])
                length, chunked, close = None, False, False
                while True:
                    line = await self.r.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = line.decode("latin1").partition(":")
                    k, v = k.strip().lower(), v.strip()
                    if k == "content-length":
                        length = int(v)
                    elif k == "transfer-encoding" and "chunked" in v.lower():
                        chunked = True
                    elif k == "connection" and v.lower() == "close":
                        close = True
                if chunked:
                    parts = []
                    while True:
                        n = int((await self.r.readline()).split(b";")[0], 16)
                        if n == 0:
                            await self.r.readline()
                            break
                        parts.append(await self.r.readexactly(n))
                        await self.r.readline()
                    raw = b"".join(parts)
                elif length is not None:
                    raw = await self.r.readexactly(length)
                else:
                    raw = await self.r.read()
                    close = True
                if close:
                    self.w.close()
                    self.w = None
                return status, (json.loads(raw) if raw else {})
            except (ConnectionError, asyncio.IncompleteReadError):
                if self.w:
                    self.w.close()
                self.w = None
                if attempt:
                    raise
        raise ConnectionError("unreachable")


API = "/_matrix/client/v3"
# Ask for up to 5,000 timeline events per /sync, so a burst is not cut to a `limited`
# timeline (the events it leaves out are counted as not_synced).
FILTER = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A5000%7D%7D%7D"


async def register(http, name, password, token):
    body = {"username": name, "password": password, "initial_device_display_name": "matrixload"}
    st, js = await http.request("POST", f"{API}/register", body)
    if st == 200:
        return js
    if st != 401:
        raise RuntimeError(f"register {name}: {st} {js}")
    session = js.get("session")
    flows = [f["stages"] for f in js.get("flows", [])]
    if token is not None and any("m.login.registration_token" in s for s in flows):
        auth = {"type": "m.login.registration_token", "token": token}
    else:
        auth = {"type": "m.login.dummy"}
    if session:
        auth["session"] = session
    body["auth"] = auth
    st, js = await http.request("POST", f"{API}/register", body)
    if st != 200:
        raise RuntimeError(f"register {name}: {st} {js}")
    return js


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tokens", help="file with one registration token per line")
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--messages", type=int, default=1000, help="sends per level")
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=120, help="per level")
    ap.add_argument("--label", default="")
    ap.add_argument("--prefix", default="")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("matrixload: loopback only")
    levels = [int(x) for x in a.levels.split(",")]
    nsenders = max(levels)
    tokens = [t.strip() for t in open(a.tokens)] if a.tokens else []
    prefix = a.prefix or "ml" + uuid.uuid4().hex[:6]
    rss_idle = proc_rss_kib(a.server_pid)

    # Users: 0 is the room creator and the /sync receiver; 1..nsenders send.
    t_reg = time.monotonic()
    scpu_reg = proc_cpu(a.server_pid)
    users = []
    for i in range(nsenders + 1):
        h = Http(a.host, a.port)
        js = await register(h, f"{prefix}u{i}", "benchpass-matrix", tokens[i] if i < len(tokens) else None)
        users.append({"http": h, "token": js["access_token"], "id": js["user_id"]})
    reg_s = time.monotonic() - t_reg
    reg_cpu = proc_cpu(a.server_pid) - scpu_reg
    owner = users[0]
    st, js = await owner["http"].request("POST", f"{API}/createRoom", {"preset": "public_chat", "name": "bench"}, owner["token"])
    if st != 200:
        sys.exit(f"matrixload: createRoom: {st} {js}")
    room = js["room_id"]
    rq = room.replace("!", "%21").replace(":", "%3A")
    for u in users[1:]:
        st, js = await u["http"].request("POST", f"{API}/rooms/{rq}/join", {}, u["token"])
        if st != 200:
            sys.exit(f"matrixload: join: {st} {js}")
    # Initial sync of the receiver: where its incremental syncs start.
    sync_http = Http(a.host, a.port)
    st, js = await sync_http.request("GET", f"{API}/sync?timeout=0", None, owner["token"])
    since = js["next_batch"]
    rss_ready = proc_rss_kib(a.server_pid)

    sent_at = {}      # body marker -> monotonic time the PUT started
    arrived = {}      # marker -> monotonic time seen in /sync
    stop_sync = asyncio.Event()
    limited = [0]

    async def syncer():
        nonlocal since
        while not stop_sync.is_set():
            st, js = await sync_http.request("GET", f"{API}/sync?timeout=5000&since={since}&filter={FILTER}", None, owner["token"])
            now = time.monotonic()
            if st != 200:
                await asyncio.sleep(0.1)
                continue
            since = js.get("next_batch", since)
            tl = js.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
            if tl.get("limited"):
                limited[0] += 1
            for ev in tl.get("events", []):
                m = ev.get("content", {}).get("body", "")
                if m.startswith("mk "):
                    arrived.setdefault(m.split()[1], now)

    sync_task = asyncio.create_task(syncer())
    txn = 0
    out = []
    for level in levels:
        lat = []
        markers = []
        errors = 0
        count = 0
        deadline = time.monotonic() + a.max_seconds
        cpu0, scpu0 = self_cpu(), proc_cpu(a.server_pid)
        t0 = time.monotonic()

        async def sender(u):
            nonlocal count, errors, txn
            while count < a.messages and time.monotonic() < deadline:
                count += 1
                txn += 1
                mk = f"{level}-{txn}"
                s = time.monotonic()
                sent_at[mk] = s
                st, js = await u["http"].request(
                    "PUT", f"{API}/rooms/{rq}/send/m.room.message/{prefix}{txn}",
                    {"msgtype": "m.text", "body": f"mk {mk} " + "x" * 64}, u["token"])
                if st != 200:
                    errors += 1
                    continue
                lat.append((time.monotonic() - s) * 1000)
                markers.append(mk)

        await asyncio.gather(*(sender(u) for u in users[1:1 + level]))
        wall = time.monotonic() - t0
        # Wait (bounded) for the receiver to see every event of this level.
        w_end = time.monotonic() + 15
        while any(m not in arrived for m in markers) and time.monotonic() < w_end:
            await asyncio.sleep(0.02)
        cpu, scpu = self_cpu() - cpu0, proc_cpu(a.server_pid) - scpu0
        s2s = [(arrived[m] - sent_at[m]) * 1000 for m in markers if m in arrived]
        r = {"workload": "matrix", "label": a.label, "senders": level, "sent": len(markers), "errors": errors,
             "not_synced": sum(1 for m in markers if m not in arrived), "limited_syncs": limited[0],
             "wall_s": round(wall, 3), "per_s": round(len(markers) / wall, 2) if wall else 0,
             "p50_ms": round(pct(lat, .5), 2), "p99_ms": round(pct(lat, .99), 2),
             "sync_p50_ms": round(pct(s2s, .5), 2), "sync_p99_ms": round(pct(s2s, .99), 2),
             "client_cpu_s": round(cpu, 3), "server_cpu_s": round(scpu, 3),
             "server_cpu_us_per_op": round(scpu / len(markers) * 1e6, 1) if markers else 0,
             "rss_kib_idle": rss_idle, "rss_kib_ready": rss_ready, "rss_kib_after": proc_rss_kib(a.server_pid),
             "register_s": round(reg_s, 3), "register_server_cpu_s": round(reg_cpu, 3), "users": len(users)}
        out.append(r)
        print(json.dumps(r), flush=True)
    stop_sync.set()
    try:
        await asyncio.wait_for(sync_task, 7)
    except (asyncio.TimeoutError, Exception):
        sync_task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
