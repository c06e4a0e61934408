"""Matrix media on the shared blob store (issue 5), with real clients:
- one account's XMPP uploads (slixmpp, XEP-0363) and Matrix uploads count against one daily
  quota (upload.daily_quota_bytes): both are blob references owned by "alice@localhost";
- files of the old <data>/media store move into blobs/ at start-up, keeping owner and
  upload time; a hearthd killed (SIGKILL) during that move and restarted loses nothing;
- matrix-nio uploads and downloads, and gets the quota error (403 M_FORBIDDEN);
- matrix-js-sdk uploads, downloads through the authenticated URL it builds, and seeks;
- remote media between two federated hearths: b.test fetches a.test's media over
  GET /_matrix/federation/v1/media/download (multipart), caches it as a blob and serves it
  from there (also once a.test is down)."""
import asyncio
import glob
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import unittest
import urllib.parse

from nio import AsyncClient, DownloadResponse, LoginResponse, UploadError, UploadResponse

import test_matrix_federation as federation
from harness import Hearth, wait_until
from test_xmpp_client import Client, TIMEOUT

UPLOAD = "urn:xmpp:http:upload:0"
JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def login(h, name, password):
    s, _, raw = h.request("POST", "/_matrix/client/v3/login", body=json.dumps(
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password}),
        headers={"Content-Type": "application/json"})
    assert s == 200, raw
    return json.loads(raw)["access_token"]


def upload(h, token, data, content_type="application/octet-stream", filename="f.bin"):
    s, _, raw = h.request("POST", f"/_matrix/media/v3/upload?filename={filename}", body=data,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    return s, json.loads(raw)


def download(h, token, mxc):
    """An authenticated download; a pending upload is answered at once (timeout_ms=0)."""
    return h.request("GET", "/_matrix/client/v1/media/download/" + mxc[len("mxc://"):] + "?timeout_ms=0",
                     headers={"Authorization": f"Bearer {token}"})


class SharedQuota(unittest.IsolatedAsyncioTestCase):
    QUOTA = 4096

    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra=f"[upload]\ndaily_quota_bytes = {cls.QUOTA}\n").start()
        cls.h.add_users("alice", "bob")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def test_xmpp_and_matrix_uploads_share_one_quota(self):
        c = Client("alice@localhost/up", "alice secret pw", self.h.cert_path())
        c.register_plugin("xep_0363")
        await c.login(self.h.xmpp_port)
        try:
            iq = await c["xep_0363"].request_slot("upload.localhost", "x.bin", 3000, "application/octet-stream",
                                                  timeout=TIMEOUT)
            put = iq.xml.find(f"{{{UPLOAD}}}slot").find(f"{{{UPLOAD}}}put").get("url")
            u = urllib.parse.urlsplit(put)
            conn = http.client.HTTPSConnection("localhost", u.port, timeout=30,
                                               context=ssl.create_default_context(cafile=self.h.cert_path()))
            conn.request("PUT", u.path, body=os.urandom(3000), headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(conn.getresponse().status, 201)
            conn.close()

            token = await asyncio.to_thread(login, self.h, "alice", "alice secret pw")
            # 3000 of 4096 used over XMPP: 1500 more does not fit, 1000 does.
            s, b = await asyncio.to_thread(upload, self.h, token, os.urandom(1500))
            self.assertEqual((s, b["errcode"]), (403, "M_FORBIDDEN"), b)
            self.assertIn("shared with XMPP", b["error"])
            s, b = await asyncio.to_thread(upload, self.h, token, os.urandom(1000))
            self.assertEqual(s, 200, b)
            # Now XMPP sees the Matrix upload: 96 bytes left.
            with self.assertRaises(Exception):
                await c["xep_0363"].request_slot("upload.localhost", "y.bin", 200, "application/octet-stream",
                                                 timeout=TIMEOUT)
            # Bob's budget is his own.
            other = await asyncio.to_thread(login, self.h, "bob", "bob secret pw")
            s, b = await asyncio.to_thread(upload, self.h, other, os.urandom(1500))
            self.assertEqual(s, 200, b)
        finally:
            await c.stop()
        db = sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"))
        owners = sorted(r[0] for r in db.execute("SELECT DISTINCT owner FROM blobs_ref"))
        db.close()
        self.assertEqual(owners, ["alice@localhost", "bob@localhost"])


class LegacyMediaMigration(unittest.TestCase):
    """Uploads are turned back into the old layout (files in <data>/media/<ab>/<sha256>, rows
    without a blob reference), one of them as a crash left it (its reference already made);
    then hearthd starts and is killed with SIGKILL while it moves them, and starts again."""
    N = 120

    def setUp(self):
        self.h = Hearth(config_extra="[limits]\nrequests_per_second_per_ip = 1000\nrequest_burst_per_ip = 1000\n")

    def tearDown(self):
        self.h.cleanup()

    def to_legacy_layout(self):
        db = sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"))
        rows = db.execute("SELECT media_id, sha256, blob FROM matrix_media").fetchall()
        for i, (media_id, sha, blob) in enumerate(rows):
            src = os.path.join(self.h.data_dir, "blobs", sha[:2], sha[2:])
            dst_dir = os.path.join(self.h.data_dir, "media", sha[:2])
            os.makedirs(dst_dir, exist_ok=True)
            if i == 0:  # the crash state: reference made (file in both places), row not updated
                shutil.copyfile(src, os.path.join(dst_dir, sha))
                db.execute("UPDATE blobs_ref SET id = ? WHERE id = ?", (f"matrix-media-{media_id}", blob))
            else:
                os.rename(src, os.path.join(dst_dir, sha))
                db.execute("DELETE FROM blobs_ref WHERE id = ?", (blob,))
        db.execute("UPDATE matrix_media SET blob = ''")
        db.commit()
        db.close()
        return len(rows)

    def test_migration_survives_sigkill(self):
        self.h.start()
        r = self.h.ctl("user", "add", "mo@localhost", stdin="mo secret pw\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = login(self.h, "mo", "mo secret pw")
        files = {}
        for i in range(self.N):
            data = os.urandom(32 << 10)
            s, b = upload(self.h, token, data, "image/png", f"p{i}.png")
            self.assertEqual(s, 200, b)
            files[b["content_uri"]] = data
        db = sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"))
        created = dict(db.execute("SELECT media_id, created_ms FROM matrix_media"))
        db.close()
        self.h.stop()
        self.assertEqual(self.to_legacy_layout(), self.N)

        # Killed once some files moved (or, if the move was quicker than we look, at once).
        media_dir = os.path.join(self.h.data_dir, "media")
        self.h.start(expect_ready=False)
        moved = lambda: len(glob.glob(os.path.join(self.h.data_dir, "blobs", "??", "*")))
        wait_until(lambda: moved() >= 5 or not os.path.isdir(media_dir) or self.h.proc.poll() is not None,
                   what="the migration under way")
        mid = os.path.isdir(media_dir)
        self.h.proc.send_signal(signal.SIGKILL)
        self.h.wait_exit()
        print(f"\nkilled {'during' if mid else 'after'} the migration ({moved()} of {self.N} files in blobs/)",
              file=sys.stderr)

        self.h.start()
        try:
            for mxc, data in files.items():
                s, headers, body = download(self.h, token, mxc)
                self.assertEqual((s, hashlib.sha256(body).hexdigest()), (200, hashlib.sha256(data).hexdigest()), mxc)
                self.assertEqual(headers["content-type"], "image/png")
            self.assertFalse(os.path.exists(media_dir), "the old store is gone once every file moved")
            db = sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"))
            refs = db.execute("SELECT r.owner, r.created_ms, m.created_ms FROM matrix_media m "
                              "JOIN blobs_ref r ON r.id = m.blob").fetchall()
            total = db.execute("SELECT count(*) FROM blobs_ref").fetchone()[0]
            db.close()
            self.assertEqual(total, self.N, "one reference per media, none twice")
            self.assertEqual(len(refs), self.N)
            for owner, blob_created, media_created in refs:
                self.assertEqual((owner, blob_created), ("mo@localhost", media_created))
            # Migrated bytes are old uploads: today's quota is untouched.
            s, b = upload(self.h, token, os.urandom(1000))
            self.assertEqual(s, 200, b)
        finally:
            self.h.stop()


class NioMedia(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra="[matrix]\nmedia_quota_bytes = 300000\n").start()
        cls.h.add_users("nia")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def test_nio_upload_download_and_quota(self):
        c = AsyncClient(f"http://127.0.0.1:{self.h.http_port}", "@nia:localhost")
        try:
            self.assertIsInstance(await c.login("nia secret pw"), LoginResponse)
            data = os.urandom(200_000)
            r, _ = await c.upload(io.BytesIO(data), content_type="image/jpeg", filename="cat.jpg", filesize=len(data))
            self.assertIsInstance(r, UploadResponse, r)
            got = await c.download(r.content_uri)
            self.assertIsInstance(got, DownloadResponse, got)
            self.assertEqual((got.body, got.content_type, got.filename), (data, "image/jpeg", "cat.jpg"))
            # 200 000 of 300 000 used: another 200 000 is past the quota, and nothing is kept.
            more = os.urandom(200_000)
            r, _ = await c.upload(io.BytesIO(more), content_type="image/jpeg", filename="dog.jpg", filesize=len(more))
            self.assertIsInstance(r, UploadError)
            self.assertEqual(r.status_code, "M_FORBIDDEN")
            digest = hashlib.sha256(more).hexdigest()
            self.assertFalse(os.path.exists(os.path.join(self.h.data_dir, "blobs", digest[:2], digest[2:])))
        finally:
            await c.close()


class JsSdkMedia(unittest.TestCase):
    def setUp(self):
        if not shutil.which("node") or not os.path.isdir(os.path.join(JS_DIR, "node_modules", "matrix-js-sdk")):
            self.fail("matrix-js-sdk is not installed: run scripts/install-deps.sh (npm ci in tests/integration/js)")
        self.h = Hearth().start()
        self.h.add_users("alice")

    def tearDown(self):
        self.h.stop()
        self.h.cleanup()

    def test_js_sdk_upload_and_authenticated_download(self):
        r = subprocess.run(["node", "media.mjs", f"http://127.0.0.1:{self.h.http_port}", "alice secret pw"],
                           cwd=JS_DIR, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        self.assertIn("PASS", r.stdout)


class MediaRetention(unittest.TestCase):
    """matrix.media_retention_days: media older than that are deleted (row, blob reference,
    file) by the housekeeping that runs at start-up and every 10 minutes; pending
    asynchronous uploads past their 24 hours go too. Time is moved by back-dating rows."""
    def setUp(self):
        self.h = Hearth(config_extra="[matrix]\nmedia_retention_days = 3\n").start()
        self.h.add_users("ria")
        self.token = login(self.h, "ria", "ria secret pw")

    def tearDown(self):
        self.h.stop()
        self.h.cleanup()

    def db(self):
        return sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db"), timeout=10)

    def test_old_media_and_stale_pending_uploads_are_purged(self):
        old, new = os.urandom(5000), os.urandom(6000)
        uris = []
        for data in (old, new):
            s, b = upload(self.h, token=self.token, data=data)
            self.assertEqual(s, 200, b)
            uris.append(b["content_uri"])
        s, _, raw = self.h.request("POST", "/_matrix/media/v1/create", body=b"{}",
                                   headers={"Authorization": f"Bearer {self.token}"})
        self.assertEqual(s, 200, raw)
        pending = json.loads(raw)["content_uri"]
        s, _, _ = download(self.h, self.token, pending)
        self.assertEqual(s, 504)
        # The blob expires with the retention (3 days after upload).
        with self.db() as con:
            (expires, created), = con.execute("SELECT r.expires_ms, r.created_ms FROM blobs_ref r JOIN matrix_media m "
                                             "ON m.blob = r.id WHERE m.media_id = ?", (uris[0].rsplit("/", 1)[1],))
        self.assertEqual(expires - created, 3 * 86_400_000)
        self.h.stop()
        with self.db() as con:  # four days pass for the first upload and the pending one
            con.execute("UPDATE matrix_media SET created_ms = created_ms - 4 * 86400000 WHERE media_id = ?",
                        (uris[0].rsplit("/", 1)[1],))
            con.execute("UPDATE matrix_media SET pending_until_ms = 1 WHERE media_id = ?", (pending.rsplit("/", 1)[1],))
        self.h.start()
        path = os.path.join(self.h.data_dir, "blobs", hashlib.sha256(old).hexdigest()[:2], hashlib.sha256(old).hexdigest()[2:])
        wait_until(lambda: not os.path.exists(path), what="the old media's file to be purged")
        self.assertEqual(download(self.h, self.token, uris[0])[0], 404)
        self.assertEqual(download(self.h, self.token, pending)[0], 404)
        s, _, body = download(self.h, self.token, uris[1])
        self.assertEqual((s, body), (200, new))
        with self.db() as con:
            self.assertEqual(con.execute("SELECT count(*) FROM matrix_media").fetchone()[0], 1)
            self.assertEqual(con.execute("SELECT count(*) FROM blobs_ref").fetchone()[0], 1)


class RemoteMedia(federation.HearthToHearth):
    test_a_user_of_one_server_joins_a_room_on_the_other_and_messages_flow_both_ways = None  # run in its own module

    def test_media_of_another_server_is_fetched_over_federation_and_cached(self):
        data = os.urandom(300_000)
        s, b = upload(self.a, self.tokens["alice"], data, "image/png", "sunset.png")
        self.assertEqual(s, 200, b)
        mxc = b["content_uri"]
        self.assertTrue(mxc.startswith("mxc://a.test/"))
        media_id = mxc.rsplit("/", 1)[1]
        # The federation endpoint wants a signed request.
        s, _, raw = self.a.request("GET", f"/_matrix/federation/v1/media/download/{media_id}")
        self.assertEqual(s, 401, raw)
        # Legacy unauthenticated downloads serve only what is cached: not yet.
        s, _, _ = self.b.request("GET", f"/_matrix/media/v3/download/a.test/{media_id}")
        self.assertEqual(s, 404)
        s, headers, body = download(self.b, self.tokens["bob"], mxc)
        self.assertEqual((s, headers["content-type"], body), (200, "image/png", data))
        self.assertIn('filename="sunset.png"', headers["content-disposition"])
        s, _, raw = download(self.b, self.tokens["bob"], "mxc://a.test/doesnotexist")
        self.assertEqual((s, json.loads(raw)["errcode"]), (404, "M_NOT_FOUND"))
        db = sqlite3.connect(os.path.join(self.b.data_dir, "hearth.db"))
        owners = [r[0] for r in db.execute("SELECT owner FROM blobs_ref")]
        db.close()
        self.assertEqual(owners, ["matrix-remote:a.test"])
        # Cached: served while a.test is down, also on the legacy path, with ranges.
        self.a.stop()
        s, _, body = download(self.b, self.tokens["bob"], mxc)
        self.assertEqual((s, body), (200, data))
        s, _, body = self.b.request("GET", f"/_matrix/media/v3/download/a.test/{media_id}", headers={"Range": "bytes=5-9"})
        self.assertEqual((s, body), (206, data[5:10]))


if __name__ == "__main__":
    unittest.main()
