"""mxhttp: the pieces of a Matrix client that bigroom.py needs (Python asyncio, no third-party module).

A minimal HTTP/1.1 keep-alive client (`Http`), the client-server API prefix, a percentile,
and CPU/RSS readings from /proc and getrusage. These came from the Python matrixload
generator, which bench/matrixload/matrixload.cc (C++) replaced; bigroom keeps them here.
"""
import asyncio
import json
import os
import resource


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
