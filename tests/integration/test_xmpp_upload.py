"""XEP-0363 uploads streamed to disk (issue 4): a 60 MiB file through a real slot (slixmpp
asks for it; the PUT and GET go over TLS with http.client, since slixmpp's own upload is
broken on Python 3.11) arrives byte-identical while hearthd's resident memory grows by far
less than the file (the body goes through one read buffer into a staging file); bodies
longer or shorter than declared, or cut short, are refused and leave no staged file."""
import asyncio
import glob
import hashlib
import http.client
import os
import socket
import ssl
import sys
import unittest
import urllib.parse

from harness import Hearth, measure_memory_without_asan_quarantine, wait_until
from test_xmpp_client import Client, TIMEOUT

UPLOAD = "urn:xmpp:http:upload:0"
MIB = 1 << 20


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class XmppUploadStreaming(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        measure_memory_without_asan_quarantine()
        cls.h = Hearth()  # the defaults: 100 MiB per file, 200 MiB a day
        cls.h.start()
        cls.h.add_users("alice")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def asyncSetUp(self):
        self.c = Client("alice@localhost/up", "alice secret pw", self.h.cert_path())
        self.c.register_plugin("xep_0363")
        await self.c.login(self.h.xmpp_port)

    async def asyncTearDown(self):
        if self.c.is_connected():
            await self.c.stop()

    def staged(self):
        return glob.glob(os.path.join(self.h.data_dir, "blobs", "tmp", "*"))

    async def slot(self, name, size, ctype="application/octet-stream"):
        iq = await self.c["xep_0363"].request_slot("upload.localhost", name, size, ctype, timeout=TIMEOUT)
        slot = iq.xml.find(f"{{{UPLOAD}}}slot")
        return slot.find(f"{{{UPLOAD}}}put").get("url"), slot.find(f"{{{UPLOAD}}}get").get("url")

    def connection(self, url):
        u = urllib.parse.urlsplit(url)
        ctx = ssl.create_default_context(cafile=self.h.cert_path())
        return http.client.HTTPSConnection("localhost", u.port, context=ctx, timeout=60), u.path

    def http(self, method, url, body=None, headers=None, chunked=False):
        conn, path = self.connection(url)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    async def test_large_upload_is_streamed_and_byte_identical(self):
        size = 60 * MIB
        body = os.urandom(size)
        put, get = await self.slot("big.bin", size)
        pid = self.h.proc.pid
        # Reset the peak (VmHWM) to the current size: start-up and the accounts' argon2id
        # hashing (64 MiB each) peaked higher than anything the upload should add.
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        before = status_kib(pid, "VmRSS")
        status, _ = await asyncio.to_thread(self.http, "PUT", put, body,
                                            {"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 201)
        # VmHWM: the peak resident size since the reset, so a body held whole in memory at
        # any moment of the upload would show (60 MiB and more).
        peak = status_kib(pid, "VmHWM")
        growth_mib = (peak - before) / 1024
        print(f"\n60 MiB upload: hearthd peak RSS grew by {growth_mib:.1f} MiB", file=sys.stderr)
        self.assertLess(growth_mib, size / MIB / 4, f"resident memory grew by {growth_mib:.1f} MiB")
        self.assertEqual(self.staged(), [])
        status, got = await asyncio.to_thread(self.http, "GET", get)
        self.assertEqual(status, 200)
        self.assertEqual(len(got), size)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(body).digest())

    async def test_wrong_lengths_leave_no_staged_file(self):
        # Small enough that a refused body fits in what the server reads (and drops) while
        # it closes, so the client always gets to read the answer.
        size = 16 << 10
        put, get = await self.slot("a.bin", size)
        hdr = {"Content-Type": "application/octet-stream"}
        # Declared longer or shorter than the slot: refused before the body is read.
        status, _ = await asyncio.to_thread(self.http, "PUT", put, b"x" * (size + 1), hdr)
        self.assertEqual(status, 413)
        status, _ = await asyncio.to_thread(self.http, "PUT", put, b"x" * (size - 1), hdr)
        self.assertEqual(status, 400)

        # Chunked (no declared length) past the slot's size: cut at the slot's size.
        def chunks(n):
            for _ in range(n):
                yield b"y" * (4 << 10)
        status, _ = await asyncio.to_thread(self.http, "PUT", put, chunks(5), hdr, True)
        self.assertEqual(status, 413)
        # Chunked and shorter than the slot: read, then refused.
        status, _ = await asyncio.to_thread(self.http, "PUT", put, chunks(3), hdr, True)
        self.assertEqual(status, 400)
        wait_until(lambda: self.staged() == [], what="no staged file")

        # Cut short: the client goes away mid-body after the server staged part of it.
        def partial():
            u = urllib.parse.urlsplit(put)
            ctx = ssl.create_default_context(cafile=self.h.cert_path())
            raw = socket.create_connection(("localhost", u.port), timeout=30)
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(f"PUT {u.path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
                      f"Content-Length: {size}\r\n\r\n".encode() + b"z" * (size // 2))
            wait_until(lambda: any(os.path.getsize(p) > 0 for p in self.staged() if os.path.exists(p)),
                       what="a staged file with bytes in it")
            s.close()
        await asyncio.to_thread(partial)
        wait_until(lambda: self.staged() == [], what="the staged file removed")

        # The slot is still usable, and nothing was stored for it before.
        status, _ = await asyncio.to_thread(self.http, "GET", get)
        self.assertEqual(status, 404)
        body = os.urandom(size)
        status, _ = await asyncio.to_thread(self.http, "PUT", put, body, hdr)
        self.assertEqual(status, 201)
        status, got = await asyncio.to_thread(self.http, "GET", get)
        self.assertEqual((status, got), (200, body))
        self.assertEqual(self.staged(), [])


if __name__ == "__main__":
    unittest.main()
