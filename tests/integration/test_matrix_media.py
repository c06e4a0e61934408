"""The Matrix media repository over plain HTTP: upload (/_matrix/media/v3/upload),
authenticated download (/_matrix/client/v1/media/download) and the legacy unauthenticated
/_matrix/media/v3/download, config (m.upload.size), the size limit (413 M_TOO_LARGE) and
the per-user quota (403 M_FORBIDDEN, as the spec says for quotas), thumbnails of what is
not an image answered 404 M_NOT_FOUND, files content-addressed in the shared blob store
(<data>/blobs) and still served after a restart; asynchronous uploads (create + PUT);
every upload path refuses a bad token or a too-large declared length before staging any
body byte; downloads streamed from disk with Range."""
import concurrent.futures
import hashlib
import http.client
import json
import os
import sys
import time
import unittest

from harness import Hearth, measure_memory_without_asan_quarantine, wait_until

LIMIT = 1000
QUOTA = 2500


class MatrixMedia(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra=f"[matrix]\nmax_upload_bytes = {LIMIT}\nmedia_quota_bytes = {QUOTA}\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def call(self, method, path, body=None, token=None, content_type="application/json"):
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.h.request(method, path, body=body, headers=headers)

    def login(self, name):
        r = self.h.ctl("user", "add", f"{name}@localhost", stdin="media password\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        s, _, raw = self.call("POST", "/_matrix/client/v3/login", json.dumps(
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "media password"}))
        self.assertEqual(s, 200, raw)
        return json.loads(raw)["access_token"]

    def upload(self, token, data, content_type="image/png", filename="cat.png"):
        s, _, raw = self.call("POST", f"/_matrix/media/v3/upload?filename={filename}", data, token, content_type)
        return s, json.loads(raw)

    def test_upload_download_limits_and_restart(self):
        token = self.login("mia")
        s, _, raw = self.call("GET", "/_matrix/client/v1/media/config", token=token)
        self.assertEqual((s, json.loads(raw)), (200, {"m.upload.size": LIMIT}))
        s, _, raw = self.call("GET", "/_matrix/media/v3/config", token=token)
        self.assertEqual(json.loads(raw), {"m.upload.size": LIMIT})
        s, _ = self.upload(None, b"x")
        self.assertEqual(s, 401)

        data = bytes(range(256)) * 3
        s, b = self.upload(token, data)
        self.assertEqual(s, 200, b)
        self.assertTrue(b["content_uri"].startswith("mxc://localhost/"))
        media_id = b["content_uri"].rsplit("/", 1)[1]
        # The file is stored under its SHA-256 in the shared blob store.
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.h.data_dir, "blobs", digest[:2], digest[2:]), "rb") as f:
            self.assertEqual(f.read(), data)

        # Authenticated download: token required.
        s, _, _ = self.call("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}")
        self.assertEqual(s, 401)
        s, headers, body = self.call("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}", token=token)
        self.assertEqual((s, body, headers["content-type"]), (200, data, "image/png"))
        self.assertIn('filename="cat.png"', headers["content-disposition"])
        self.assertIn("sandbox", headers["content-security-policy"])
        s, headers, body = self.call("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}/other.png",
                                     token=token)
        self.assertIn('filename="other.png"', headers["content-disposition"])
        # Legacy download, no token.
        s, headers, body = self.call("GET", f"/_matrix/media/v3/download/localhost/{media_id}")
        self.assertEqual((s, body), (200, data))
        for path in (f"/_matrix/client/v1/media/download/localhost/nope", f"/_matrix/media/v3/download/elsewhere/{media_id}",
                     f"/_matrix/client/v1/media/thumbnail/localhost/{media_id}?width=32&height=32"):
            s, _, raw = self.call("GET", path, token=token)
            self.assertEqual((s, json.loads(raw)["errcode"]), (404, "M_NOT_FOUND"), path)

        # Size limit, then the quota (768 already used of 2500).
        s, b = self.upload(token, b"y" * (LIMIT + 1))
        self.assertEqual((s, b["errcode"]), (413, "M_TOO_LARGE"))
        s, b = self.upload(token, b"z" * LIMIT)
        self.assertEqual(s, 200, b)
        s, b = self.upload(token, b"w" * LIMIT)
        self.assertEqual((s, b["errcode"]), (403, "M_FORBIDDEN"))
        self.assertFalse(os.path.exists(blob_path(self.h, b"w" * LIMIT)), "nothing stored past the quota")
        # Another user has their own quota.
        other = self.login("ned")
        s, b = self.upload(other, b"w" * LIMIT)
        self.assertEqual(s, 200, b)

        self.h.stop()
        self.h.start()
        s, _, body = self.call("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}", token=token)
        self.assertEqual((s, body), (200, data))


def password_login(h, name):
    s, _, raw = h.request("POST", "/_matrix/client/v3/login", body=json.dumps(
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
         "password": f"{name} secret pw"}), headers={"Content-Type": "application/json"})
    assert s == 200, raw
    return json.loads(raw)["access_token"]


def blob_path(h, data):
    digest = hashlib.sha256(data).hexdigest()
    return os.path.join(h.data_dir, "blobs", digest[:2], digest[2:])


class MatrixMediaStreamed(unittest.TestCase):
    """Uploads on /_matrix/media/v3/upload are streamed to <data>/blobs/tmp: a 30 MiB upload
    grows hearthd's peak resident memory by far less than the file; a declared length
    over the limit is answered M_TOO_LARGE before the body; nothing stays staged."""
    @classmethod
    def setUpClass(cls):
        measure_memory_without_asan_quarantine()
        cls.h = Hearth().start()  # the defaults: 50 MiB per upload

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    call = MatrixMedia.call
    login = MatrixMedia.login

    def staged(self):
        d = os.path.join(self.h.data_dir, "blobs", "tmp")
        return os.listdir(d) if os.path.isdir(d) else []

    def test_large_upload_is_streamed(self):
        token = self.login("max")
        data = os.urandom(30 << 20)
        pid = self.h.proc.pid
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # VmHWM back to the current size (login's argon2id peaked higher)
        before = status_kib(pid, "VmRSS")
        s, _, raw = self.call("POST", "/_matrix/media/v3/upload?filename=big.bin", data, token,
                              "application/octet-stream")
        self.assertEqual(s, 200, raw)
        growth_mib = (status_kib(pid, "VmHWM") - before) / 1024
        self.assertLess(growth_mib, 30 / 4, f"resident memory grew by {growth_mib:.1f} MiB")
        self.assertEqual(self.staged(), [])
        media_id = json.loads(raw)["content_uri"].rsplit("/", 1)[1]
        s, _, body = self.call("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}", token=token)
        self.assertEqual(s, 200)
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(data).digest())
        # Declared over the limit: refused before the body is read, in Matrix's format.
        s, _, raw = self.call("POST", "/_matrix/media/v3/upload", b"y" * 100, token, "application/octet-stream")
        self.assertEqual(s, 200, raw)
        conn = http.client.HTTPConnection("127.0.0.1", self.h.http_port, timeout=10)
        try:
            conn.putrequest("POST", "/_matrix/media/v3/upload")
            conn.putheader("Authorization", f"Bearer {token}")
            conn.putheader("Content-Length", str((50 << 20) + 1))
            conn.endheaders()
            r = conn.getresponse()
            self.assertEqual((r.status, json.loads(r.read())["errcode"]), (413, "M_TOO_LARGE"))
        finally:
            conn.close()
        self.assertEqual(self.staged(), [])


class MatrixMediaUploadPaths(unittest.TestCase):
    """Every upload path (POST /_matrix/media/{v3,r0,v1}/upload, POST
    /_matrix/client/v1/media/upload, PUT /_matrix/media/v3/upload/{server}/{id}) checks the
    token and the declared length from the request head: the refusal comes although no
    body byte was sent, and nothing is staged. Asynchronous uploads: create, 504
    M_NOT_YET_UPLOADED before the PUT, only the creator may PUT, once; the pending limit."""
    LIMIT = 100_000

    @classmethod
    def setUpClass(cls):
        cls.h = Hearth(config_extra=f"[matrix]\nmax_upload_bytes = {cls.LIMIT}\nmax_pending_uploads = 3\n").start()
        cls.h.add_users("pat", "quinn", "ray")
        cls.token, cls.other = (password_login(cls.h, name) for name in ("pat", "quinn"))

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    call = MatrixMedia.call
    staged = MatrixMediaStreamed.staged

    def create(self, token):
        s, _, raw = self.call("POST", "/_matrix/media/v1/create", b"{}", token)
        return s, json.loads(raw)

    def head_only(self, method, path, length, token=None):
        """Sends a request head declaring `length` body bytes and no body: the answer must
        come from the head alone. Returns (status, errcode, files staged meanwhile)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.h.http_port, timeout=10)
        try:
            conn.putrequest(method, path)
            if token:
                conn.putheader("Authorization", f"Bearer {token}")
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            r = conn.getresponse()
            staged = self.staged()  # while the connection is still open
            return r.status, json.loads(r.read()).get("errcode"), staged
        finally:
            conn.close()

    def test_every_upload_path_refuses_before_the_body(self):
        me = password_login(self.h, "ray")  # pending uploads of its own (the other test fills pat's)
        s, b = self.create(me)
        self.assertEqual(s, 200, b)
        pending = b["content_uri"].rsplit("/", 1)[1]
        paths = [("POST", "/_matrix/media/v3/upload"), ("POST", "/_matrix/media/r0/upload"),
                 ("POST", "/_matrix/media/v1/upload"), ("POST", "/_matrix/client/v1/media/upload"),
                 ("PUT", f"/_matrix/media/v3/upload/localhost/{pending}")]
        for method, path in paths:
            with self.subTest(path=path):
                self.assertEqual(self.head_only(method, path, 50_000), (401, "M_MISSING_TOKEN", []))
                self.assertEqual(self.head_only(method, path, 50_000, "not-a-token"), (401, "M_UNKNOWN_TOKEN", []))
                self.assertEqual(self.head_only(method, path, self.LIMIT + 1, me), (413, "M_TOO_LARGE", []))
                # Token as a query parameter (matrix-nio sends it so) counts the same.
                self.assertEqual(self.head_only(method, path + "?access_token=bad", 10), (401, "M_UNKNOWN_TOKEN", []))
        # Another user's pending id: refused from the head too.
        self.assertEqual(self.head_only("PUT", f"/_matrix/media/v3/upload/localhost/{pending}", 10, self.other),
                         (403, "M_FORBIDDEN", []))
        # And each path stores a real body.
        for method, path in paths:
            with self.subTest(path=path, upload=True):
                data = os.urandom(70_000)
                s, _, raw = self.call(method, path + "?filename=f.bin", data, me, "application/octet-stream")
                self.assertEqual(s, 200, raw)
                uri = json.loads(raw).get("content_uri", f"mxc://localhost/{pending}")
                s, _, body = self.call("GET", f"/_matrix/client/v1/media/download/{uri[6:]}", token=me)
                self.assertEqual((s, body), (200, data))
        self.assertEqual(self.staged(), [])

    def metric(self, name):
        _, _, raw = self.h.request("GET", "/metrics")
        for line in raw.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def test_asynchronous_upload(self):
        s, b = self.create(self.token)
        self.assertEqual(s, 200, b)
        self.assertTrue(b["content_uri"].startswith("mxc://localhost/"))
        self.assertGreater(b["unused_expires_at"], time.time() * 1000)
        media = b["content_uri"][len("mxc://"):]
        for path in (f"/_matrix/client/v1/media/download/{media}?timeout_ms=0",
                     f"/_matrix/media/v3/download/{media}?timeout_ms=0",
                     f"/_matrix/client/v1/media/thumbnail/{media}?width=32&height=32"):
            s, _, raw = self.call("GET", path, token=self.token)
            self.assertEqual((s, json.loads(raw)["errcode"]), (504, "M_NOT_YET_UPLOADED"), path)
        # A download that waits (timeout_ms) is answered when the upload arrives.
        waiting = concurrent.futures.ThreadPoolExecutor(max_workers=1).submit(
            self.call, "GET", f"/_matrix/client/v1/media/download/{media}?timeout_ms=20000", None, self.token)
        wait_until(lambda: self.metric("hearth_matrix_media_downloads_waiting") == 1, what="the download parked")
        put = f"/_matrix/media/v3/upload/{media}?filename=late.txt"
        s, _, raw = self.call("PUT", put, b"by someone else", self.other, "text/plain")
        self.assertEqual((s, json.loads(raw)["errcode"]), (403, "M_FORBIDDEN"))
        s, _, raw = self.call("PUT", "/_matrix/media/v3/upload/localhost/unknownid", b"x", self.token, "text/plain")
        self.assertEqual((s, json.loads(raw)["errcode"]), (404, "M_NOT_FOUND"))
        s, _, raw = self.call("PUT", put, b"arrived later", self.token, "text/plain")
        self.assertEqual((s, json.loads(raw)), (200, {}))
        s, _, body = waiting.result(timeout=30)
        self.assertEqual((s, body), (200, b"arrived later"))
        # One whose wait ends first is answered 504.
        s, b = self.create(self.other)
        self.assertEqual(s, 200, b)
        s, _, raw = self.call("GET", f"/_matrix/client/v1/media/download/{b['content_uri'][6:]}?timeout_ms=200",
                              token=self.other)
        self.assertEqual((s, json.loads(raw)["errcode"]), (504, "M_NOT_YET_UPLOADED"))
        self.assertEqual(self.metric("hearth_matrix_media_downloads_waiting"), 0)
        s, _, raw = self.call("PUT", put, b"again", self.token, "text/plain")
        self.assertEqual((s, json.loads(raw)["errcode"]), (409, "M_CANNOT_OVERWRITE_MEDIA"))
        s, headers, body = self.call("GET", f"/_matrix/client/v1/media/download/{media}", token=self.token)
        self.assertEqual((s, body, headers["content-type"]), (200, b"arrived later", "text/plain"))
        self.assertIn('filename="late.txt"', headers["content-disposition"])
        # At most 3 pending per user (this class's config); the other user has their own.
        ids = []
        while True:
            s, b = self.create(self.token)
            if s != 200:
                break
            ids.append(b["content_uri"])
            self.assertLessEqual(len(ids), 3)
        self.assertEqual((s, b["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        s, b = self.create(self.other)
        self.assertEqual(s, 200, b)
        # Sending one frees a place.
        s, _, raw = self.call("PUT", f"/_matrix/media/v3/upload/{ids[0][6:]}", b"done", self.token, "text/plain")
        self.assertEqual(s, 200, raw)
        s, b = self.create(self.token)
        self.assertEqual(s, 200, b)


class MatrixMediaLargeDownload(unittest.TestCase):
    """A 60 MiB download is sent from the file in chunks: byte-identical, and hearthd's peak
    resident memory grows by far less than the file; Range requests (206, 416)."""
    @classmethod
    def setUpClass(cls):
        measure_memory_without_asan_quarantine()
        cls.h = Hearth(config_extra=f"[matrix]\nmax_upload_bytes = {70 << 20}\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    call = MatrixMedia.call
    login = MatrixMedia.login

    def test_large_download_is_streamed_with_ranges(self):
        token = self.login("rae")
        data = os.urandom(60 << 20)
        s, _, raw = self.call("POST", "/_matrix/media/v3/upload?filename=video.mp4", data, token, "video/mp4")
        self.assertEqual(s, 200, raw)
        path = "/_matrix/client/v1/media/download/" + json.loads(raw)["content_uri"][len("mxc://"):]
        pid = self.h.proc.pid
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        before = status_kib(pid, "VmRSS")
        s, headers, body = self.call("GET", path, token=token)
        growth_mib = (status_kib(pid, "VmHWM") - before) / 1024
        print(f"\n60 MiB download: hearthd peak RSS grew by {growth_mib:.1f} MiB", file=sys.stderr)
        self.assertEqual((s, len(body), headers["accept-ranges"]), (200, len(data), "bytes"))
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(data).digest())
        self.assertLess(growth_mib, 60 / 4, f"resident memory grew by {growth_mib:.1f} MiB")
        # A video player seeking.
        auth = {"Authorization": f"Bearer {token}"}
        start = 33 << 20
        s, headers, body = self.h.request("GET", path, headers={**auth, "Range": f"bytes={start}-{start + 99999}"})
        self.assertEqual((s, body, headers["content-range"]), (206, data[start:start + 100000],
                                                                  f"bytes {start}-{start + 99999}/{len(data)}"))
        s, _, body = self.h.request("GET", path, headers={**auth, "Range": "bytes=-10"})
        self.assertEqual((s, body), (206, data[-10:]))
        s, headers, _ = self.h.request("GET", path, headers={**auth, "Range": f"bytes={len(data)}-"})
        self.assertEqual((s, headers["content-range"]), (416, f"bytes */{len(data)}"))
        # The legacy path streams the same way (no token needed there).
        s, _, body = self.h.request("GET", path.replace("/_matrix/client/v1/media/", "/_matrix/media/v3/"),
                                    headers={"Range": "bytes=0-9"})
        self.assertEqual((s, body), (206, data[:10]))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


if __name__ == "__main__":
    unittest.main()
