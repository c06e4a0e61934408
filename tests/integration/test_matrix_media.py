"""The Matrix media repository over plain HTTP: upload (/_matrix/media/v3/upload),
authenticated download (/_matrix/client/v1/media/download) and the legacy unauthenticated
/_matrix/media/v3/download, config (m.upload.size), the size limit and the per-user quota
(413 M_TOO_LARGE), thumbnails of what is not an image answered 404 M_NOT_FOUND, files content-addressed under
<data>/media and still served after a restart."""
import hashlib
import http.client
import json
import os
import unittest

from harness import Hearth, measure_memory_without_asan_quarantine

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
        # The file is stored under its SHA-256.
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.h.data_dir, "media", digest[:2], digest), "rb") as f:
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
        self.assertEqual((s, b["errcode"]), (413, "M_TOO_LARGE"))
        # Another user has their own quota.
        other = self.login("ned")
        s, b = self.upload(other, b"w" * LIMIT)
        self.assertEqual(s, 200, b)

        self.h.stop()
        self.h.start()
        s, _, body = self.call("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}", token=token)
        self.assertEqual((s, body), (200, data))


class MatrixMediaStreamed(unittest.TestCase):
    """Uploads on /_matrix/media/v3/upload are streamed to <data>/media/tmp: a 30 MiB upload
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
        d = os.path.join(self.h.data_dir, "media", "tmp")
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


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


if __name__ == "__main__":
    unittest.main()
