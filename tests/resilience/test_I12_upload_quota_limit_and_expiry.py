"""Incident I12 — file sharing with a per-user daily quota (200 MiB by default), a per-file
limit (100 MiB) and expiry (14 days), every file with an owner — through XEP-0363 HTTP file
upload at upload.localhost: slixmpp discovers the
service and asks for slots; the PUT and GET go to hearth's own HTTPS listener. Limits
(per file, per day), single-use and expiring slots, path tricks, expiry with the file
removed from disk, and persistence across a restart."""
import glob
import http.client
import os
import sqlite3
import ssl
import unittest
import urllib.parse

from slixmpp.exceptions import IqError

from resilience import Hearth, wait_until
from test_xmpp_client import Client, TIMEOUT

UPLOAD = "urn:xmpp:http:upload:0"


class XmppUpload(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra="[upload]\nmax_file_bytes = 4096\ndaily_quota_bytes = 10000\n")
        # Expired files are purged by the same background task as the archive.
        with open(cls.h.config_path) as f:
            text = f.read()
        with open(cls.h.config_path, "w") as f:
            f.write(text.replace("[xmpp]\n", "[xmpp]\narchive_purge_interval_seconds = 1\n"))
        cls.h.start()
        cls.h.add_users("alice", "bob")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def client(self, name):
        c = Client(f"{name}@localhost/up", f"{name} secret pw", self.h.cert_path())
        c.register_plugin("xep_0363")
        self.addAsyncCleanup(self._stop, c)
        await c.login(self.h.xmpp_port)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    def http(self, method, url, body=None, headers=None):
        u = urllib.parse.urlsplit(url)
        ctx = ssl.create_default_context(cafile=self.h.cert_path())
        conn = http.client.HTTPSConnection("localhost", u.port, context=ctx, timeout=TIMEOUT)
        try:
            conn.request(method, u.path + (("?" + u.query) if u.query else ""), body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            conn.close()

    async def slot(self, c, name, size, ctype="image/png"):
        iq = await c["xep_0363"].request_slot("upload.localhost", name, size, ctype, timeout=TIMEOUT)
        slot = iq.xml.find(f"{{{UPLOAD}}}slot")
        return slot.find(f"{{{UPLOAD}}}put").get("url"), slot.find(f"{{{UPLOAD}}}get").get("url")

    def db(self):
        return sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"), timeout=10)

    async def test_upload_share_and_download(self):
        alice = await self.client("alice")
        # Discovery as clients do it: the server's items, then the one that is a file store
        # with the upload feature (slixmpp's find_upload_service trips over Python 3.11).
        items = await alice["xep_0030"].get_items(jid="localhost", timeout=TIMEOUT)
        stores = []
        for jid, _, _ in items["disco_items"]["items"]:
            info = await alice["xep_0030"].get_info(jid=jid, timeout=TIMEOUT)
            if ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"] and \
                    UPLOAD in info["disco_info"]["features"]:
                stores.append(str(jid))
                form = info["disco_info"].xml.find("{jabber:x:data}x")
                sizes = [f.find("{jabber:x:data}value").text for f in form.findall("{jabber:x:data}field")
                         if f.get("var") == "max-file-size"]
                self.assertEqual(sizes, ["4096"])
        self.assertEqual(stores, ["upload.localhost"])
        body = os.urandom(3000)
        put, get = await self.slot(alice, "holiday photo.png", len(body))
        self.assertTrue(put.startswith("https://"), put)
        self.assertIn("holiday%20photo.png", put)
        status, _, _ = self.http("PUT", put, body, {"Content-Type": "image/png"})
        self.assertEqual(status, 201)
        # The file is durable in blobs/, content-addressed, with its owner.
        with self.db() as con:
            owner, size = con.execute("SELECT owner, size FROM blobs_ref ORDER BY created_ms DESC LIMIT 1").fetchone()
        self.assertEqual((owner, size), ("alice@localhost", 3000))
        status, headers, got = self.http("GET", get)
        self.assertEqual((status, got), (200, body))
        self.assertEqual(headers["content-type"], "image/png")
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertIn("sandbox", headers["content-security-policy"])
        # A slot is used once.
        status, _, _ = self.http("PUT", put, body, {"Content-Type": "image/png"})
        self.assertEqual(status, 409)
        # Survives a restart.
        await alice.stop()
        self.h.stop()
        self.h.start()
        base = f"https://localhost:{self.h.https_port}"
        path = urllib.parse.urlsplit(get).path
        status, _, got = self.http("GET", base + path)
        self.assertEqual((status, got), (200, body))

    async def test_slots_refuse_what_does_not_match(self):
        bob = await self.client("bob")
        put, _ = await self.slot(bob, "a.txt", 100, "text/plain")
        status, _, _ = self.http("PUT", put, b"x" * 99, {"Content-Type": "text/plain"})
        self.assertEqual(status, 400, "shorter than the slot")
        status, _, _ = self.http("PUT", put, b"x" * 100, {"Content-Type": "text/html"})
        self.assertEqual(status, 400, "another content type")
        u = urllib.parse.urlsplit(put)
        base = f"https://localhost:{u.port}"
        for bad in ("/upload/notaslot/a.txt", "/upload/..%2F..%2Fhearth.db/x", "/upload/../hearth.db"):
            status, _, _ = self.http("PUT", base + bad, b"x" * 100, {"Content-Type": "text/plain"})
            self.assertIn(status, (403, 404), bad)
            status, _, body = self.http("GET", base + bad)
            self.assertEqual(status, 404, bad)
            self.assertNotIn(b"SQLite", body)
        # An expired slot: its PUT window is over.
        slot_id = u.path.split("/")[2]
        with self.db() as con:
            con.execute("UPDATE xmpp_upload_slot SET created_ms = 0 WHERE id = ?", (slot_id,))
        status, _, _ = self.http("PUT", put, b"x" * 100, {"Content-Type": "text/plain"})
        self.assertEqual(status, 403)
        # Nothing partial is left on disk.
        self.assertEqual(glob.glob(os.path.join(self.h.data_dir, "blobs", "tmp", "*")), [])

    async def test_limits_and_expiry(self):
        alice = await self.client("alice")
        with self.assertRaises(IqError) as too_large:
            await self.slot(alice, "big.bin", 5000)
        err = too_large.exception.iq
        self.assertEqual(err["error"]["condition"], "not-acceptable")
        self.assertEqual(err.xml.find(f".//{{{UPLOAD}}}file-too-large/{{{UPLOAD}}}max-file-size").text, "4096")

        # The daily quota (10,000 bytes here) counts what was stored in the last 24 hours.
        bob = await self.client("bob")
        for _ in range(2):
            put, get = await self.slot(bob, "chunk.bin", 4000, "application/octet-stream")
            status, _, _ = self.http("PUT", put, os.urandom(4000), {"Content-Type": "application/octet-stream"})
            self.assertEqual(status, 201)
        with self.assertRaises(IqError) as quota:
            await self.slot(bob, "chunk.bin", 4000, "application/octet-stream")
        self.assertEqual(quota.exception.iq["error"]["type"], "wait")
        self.assertEqual(quota.exception.iq["error"]["condition"], "resource-constraint")
        self.assertIsNotNone(quota.exception.iq.xml.find(f".//{{{UPLOAD}}}retry"))

        # Expiry: the file stops being served and leaves the disk.
        with self.db() as con:
            blob_hash, = con.execute("SELECT hash FROM blobs_ref WHERE owner = 'bob@localhost' LIMIT 1").fetchone()
            con.execute("UPDATE blobs_ref SET expires_ms = 1 WHERE owner = 'bob@localhost'")
        path = os.path.join(self.h.data_dir, "blobs", blob_hash[:2], blob_hash[2:])
        self.assertTrue(os.path.exists(path))
        wait_until(lambda: not os.path.exists(path), what="the expired file to be purged")
        status, _, _ = self.http("GET", get)
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
