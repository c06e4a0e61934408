"""CryptPad files, login blocks and TOTP through hearth, with CryptPad's own client code
(cryptpad/cp_files.js loads http-command.js and file-crypto.js from a CryptPad checkout,
CRYPTPAD_DIR, default /srv/cryptpad): uploads through /upload-blob and their errors,
quotas, /blob serving, /api/auth's two-step challenge, /block with and without TOTP."""
import json
import os
import shutil
import sqlite3
import subprocess
import unittest
import urllib.error
import urllib.request

from harness import Hearth, free_port
from test_cryptpad import NODE_DIR, ensure_node_modules

CRYPTPAD_DIR = os.environ.get("CRYPTPAD_DIR", "/srv/cryptpad")
QUOTA = 350_000
MAX_UPLOAD = 400_000


class CryptpadFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_node_modules()
        cls.node = shutil.which("node")
        if not cls.node:
            raise unittest.SkipTest("node is not installed")
        if not os.path.isfile(os.path.join(CRYPTPAD_DIR, "src/common/outer/http-command.js")):
            raise unittest.SkipTest(f"no CryptPad checkout at {CRYPTPAD_DIR} (set CRYPTPAD_DIR)")
        cls.h = Hearth(f"[cryptpad]\nstorage_limit_bytes = {QUOTA}\nmax_upload_bytes = {MAX_UPLOAD}\n"
                       'instance_name = "Hearth test pad"\n').start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def run_node(self, scenario):
        base = f"http://127.0.0.1:{self.h.http_port}"
        env = dict(os.environ, CRYPTPAD_DIR=CRYPTPAD_DIR, QUOTA=str(QUOTA), MAX_UPLOAD=str(MAX_UPLOAD))
        p = subprocess.run([self.node, "cp_files.js", scenario, base, base.replace("http", "ws") + "/cryptpad_websocket"],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=180, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def staged_files(self):
        tmp = os.path.join(self.h.data_dir, "blobs", "tmp")
        return sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []

    def stored_ids(self):
        db = sqlite3.connect(f"file:{self.h.data_dir}/hearth.db?mode=ro", uri=True)
        try:
            return {r[0]: r[1] for r in db.execute("SELECT id, size FROM cryptpad_blobs")}
        finally:
            db.close()

    def test_upload_round_trip(self):
        r = self.run_node("upload")
        self.assertEqual(r["status"], [False])
        self.assertEqual(r["chunks"], ["ok"] * 4)  # the metadata header, then three 128 KiB chunks
        self.assertEqual(r["sent"], r["estimate"])
        self.assertEqual(r["blob_status"], 200)
        self.assertEqual(r["blob_length"], r["estimate"])
        self.assertEqual(r["head_status"], 200)
        self.assertEqual(r["head_length"], r["estimate"])
        self.assertTrue(r["same_content"])  # CryptPad's FileCrypto decrypts what hearth served
        self.assertEqual(r["metadata"]["name"], "report.bin")
        self.assertEqual(r["file_size"], r["estimate"])
        # Uploaded files count against the uploader's quota, pinned or not, once.
        self.assertEqual(r["total_before"], r["estimate"])
        self.assertEqual(r["total_after"], r["estimate"])
        self.assertEqual(r["second"]["chunks"], ["ok", "ok"])
        self.assertEqual(len(r["second"]["complete"]), 1)
        self.assertEqual(r["removed"], "ok")
        self.assertEqual(r["after_removal"], 404)
        self.assertEqual(self.staged_files(), [])

    def test_bad_uploads_store_nothing(self):
        before = self.stored_ids()
        r = self.run_node("bad_uploads")
        self.assertEqual(r["negative"], "E_INVALID_SIZE")
        self.assertEqual(r["non_numeric"], "E_INVALID_SIZE")
        self.assertEqual(r["fractional"], "E_INVALID_SIZE")
        self.assertEqual(r["missing"], "E_INVALID_SIZE")
        self.assertEqual(r["too_large"], "TOO_LARGE")
        self.assertEqual(r["over_quota"], "NOT_ENOUGH_SPACE")
        self.assertEqual(r["sends_more"]["chunks"], ["ok", "ok", "E_OVER_LIMIT"])  # header, data, extra
        self.assertEqual(r["sends_more"]["complete"], "E_NO_UPLOAD")
        self.assertEqual(r["sends_more"]["blob"], 404)
        self.assertEqual(r["sends_less"]["chunks"], ["ok", "ok"])
        self.assertEqual(r["sends_less"]["complete"], "E_SIZE_MISMATCH")
        self.assertEqual(r["sends_less"]["blob"], 404)
        self.assertEqual(r["bad_cookie"]["chunks"], ["INVALID_COOKIE"])
        self.assertEqual(r["pending"], [True])
        self.assertEqual(r["after_cancel"], [False])
        self.assertEqual(len(r["first_fits"]), 1)
        self.assertEqual(r["second"], "NOT_ENOUGH_SPACE")
        after = self.stored_ids()
        self.assertEqual(len(after) - len(before), 1)  # only the upload that fitted
        self.assertEqual(self.staged_files(), [])

    def test_login_blocks_with_and_without_totp(self):
        r = self.run_node("blocks")
        self.assertEqual(r["write"], {"err": None, "reply": None})
        self.assertEqual(r["read"], {"status": 200, "same": True})
        self.assertEqual(r["forged"]["err"], "RESPONSE_REJECTED")
        self.assertEqual(r["forged"]["reply"]["errorCode"], "E_COULD_NOT_VERIFY")
        self.assertIsNone(r["mfa_check"]["err"])
        self.assertEqual(r["setup_bad_code"], {"error": "INVALID_OTP"})
        self.assertTrue(r["setup_bearer"])
        self.assertEqual(r["read_without_bearer"], {"status": 401, "json": {"sso": False, "method": "TOTP", "code": 401}})
        self.assertEqual(r["read_bad_bearer"], 401)
        self.assertEqual(r["read_with_bearer"], {"status": 200, "same": True})
        self.assertEqual(r["mfa_check_on"], {"error": "NOT_ALLOWED"})
        self.assertEqual(r["write_on"], {"error": "NOT_ALLOWED"})
        self.assertEqual(r["remove_on"], {"error": "NOT_ALLOWED"})
        self.assertIsNone(r["totp_mfa_check"]["err"])
        self.assertEqual(r["validate_bad"], {"error": "INVALID_OTP"})
        self.assertEqual(r["validate_session"], 200)
        self.assertEqual(r["wrong_recovery"], {"error": "E_WRONG_RECOVERY_KEY"})
        self.assertIsNone(r["revoke"]["err"])
        self.assertEqual(r["read_after_revoke"], 200)
        self.assertIsNone(r["remove"]["err"])
        self.assertEqual(r["read_after_remove"], {"status": 404, "json": {"reason": "DELETED_ACCOUNT", "code": 404}})
        self.assertIsNone(r["totp_remove"]["err"])
        self.assertEqual(r["read_after_totp_remove"], {"status": 404, "json": {"reason": "GONE", "code": 404}})

    def test_api_instance(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.h.http_port}/api/instance", timeout=10) as resp:
            body = resp.read().decode()
        self.assertTrue(body.startswith("define(function (){"))
        inner = json.loads(body[body.index("return ") + 7:body.rindex(";\n});")])
        self.assertEqual(inner["name"], {"default": "Hearth test pad"})
        self.assertEqual(inner["notice"], {})


if __name__ == "__main__":
    unittest.main()


ADMIN_SEED = "11" * 32
USER_SEED = "22" * 32


class CryptpadAdmin(unittest.TestCase):
    """The admin panel's RPC: an admin from the configuration, decrees that survive a restart."""

    @classmethod
    def setUpClass(cls):
        ensure_node_modules()
        cls.node = shutil.which("node")
        if not cls.node:
            raise unittest.SkipTest("node is not installed")
        if not os.path.isfile(os.path.join(CRYPTPAD_DIR, "src/common/outer/http-command.js")):
            raise unittest.SkipTest(f"no CryptPad checkout at {CRYPTPAD_DIR} (set CRYPTPAD_DIR)")
        cls.h = None
        keys = cls.run_node_raw("pubkeys", "http://127.0.0.1:1")
        cls.admin_key, cls.user_key = keys["admin"], keys["user"]
        cls.h = Hearth(f'[cryptpad]\nadmin_keys = ["{cls.admin_key}"]\n').start()

    @classmethod
    def tearDownClass(cls):
        if cls.h:
            cls.h.stop()
            cls.h.cleanup()

    @classmethod
    def run_node_raw(cls, scenario, base=None):
        base = base or f"http://127.0.0.1:{cls.h.http_port}"
        env = dict(os.environ, CRYPTPAD_DIR=CRYPTPAD_DIR, ADMIN_SEED=ADMIN_SEED, USER_SEED=USER_SEED)
        p = subprocess.run([cls.node, "cp_files.js", scenario, base, base.replace("http", "ws") + "/cryptpad_websocket"],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=180, env=env)
        if p.returncode != 0:
            raise AssertionError(p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def test_admin_commands_decrees_and_archival(self):
        r = self.run_node_raw("admin")
        self.assertEqual(r["forbidden"], "FORBIDDEN")
        self.assertEqual(len(r["sessions"]), 2)
        self.assertGreaterEqual(r["sessions"][0], 2)  # the admin's and the user's connections
        self.assertEqual(r["sessions"][1], 1)          # one address
        self.assertGreaterEqual(r["pads"][0], 1)
        self.assertEqual(set(r["disk"][0]), {"total", "pin", "blob", "blobstage", "block", "datastore"})
        self.assertGreater(r["fds"][0], 0)
        self.assertGreater(r["fd_limit"][0], 0)
        self.assertEqual(r["status"][0]["admins"], [self.admin_key])
        self.assertTrue(r["status"][0]["blockDailyCheck"])
        self.assertEqual(r["unknown"], "UNHANDLED_ADMIN_COMMAND")
        self.assertEqual(r["set_quota"], [])
        self.assertEqual(r["user_limit"], [1234, "small", "test"])
        self.assertEqual(r["limits"][0][self.user_key]["limit"], 1234)
        self.assertEqual(r["user_quota"], [1234, "small", "test"])
        self.assertEqual(r["bad_decree"], "INVALID_ARGS")
        self.assertEqual(r["unsupported_decree"], "E_NOT_IMPLEMENTED")
        self.assertEqual(sorted(r["config_admins"]), sorted([self.admin_key, self.user_key]))
        self.assertEqual(len(r["user_now_admin"]), 1)
        self.assertEqual(r["user_again"], "FORBIDDEN")
        self.assertEqual(r["archive"], [])
        self.assertEqual(r["after_archive"], {"isNew": False, "reason": "MODERATION_PAD:spam"})
        self.assertEqual(r["restore"], [])
        self.assertEqual(r["after_restore"], {"isNew": False})
        self.assertEqual(r["restore_again"], "ENOENT")
        self.assertGreater(r["size_after_restore"], 0)
        self.assertEqual(r["archive_block"], [])
        self.assertEqual(r["block_archived"], {"status": 404, "json": {"reason": "MODERATION_BLOCK:abuse", "code": 404}})
        self.assertEqual(r["restore_block"], [])
        self.assertEqual(r["block_restored"], {"status": 200, "same": True})
        # Decrees are durable: the user's limit survives a restart.
        self.h.stop()
        self.h.start()
        self.assertEqual(self.run_node_raw("limit")["limit"], [1234, "small", "test"])


class CryptpadWeb(unittest.TestCase):
    """CryptPad's web application served from a checkout, with its security headers."""

    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(os.path.join(CRYPTPAD_DIR, "customize.dist/index.html")):
            raise unittest.SkipTest(f"no CryptPad checkout at {CRYPTPAD_DIR} (set CRYPTPAD_DIR)")
        cls.h = Hearth(f'[cryptpad]\nweb_root = "{CRYPTPAD_DIR}"\n'
                       'http_unsafe_origin = "http://pad.localhost"\nhttp_safe_origin = "http://sandbox.localhost"\n').start()
        cls.base = f"http://127.0.0.1:{cls.h.http_port}"

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def get(self, path, method="GET"):
        req = urllib.request.Request(self.base + path, method=method)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def read(self, rel):
        with open(os.path.join(CRYPTPAD_DIR, rel), "rb") as f:
            return f.read()

    def test_files_come_from_cryptpads_roots(self):
        status, headers, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertEqual(body, self.read("customize.dist/index.html"))
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        status, headers, body = self.get("/common/common-hash.js")
        self.assertEqual((status, body), (200, self.read("src/common/common-hash.js")))
        self.assertTrue(headers["Content-Type"].startswith("text/javascript"))
        status, _, body = self.get("/customize/main.js?ver=1")
        self.assertEqual((status, body), (200, self.read("customize.dist/main.js")))
        status, headers, _ = self.get("/pad")
        self.assertEqual((status, headers["Location"]), (301, "/pad/"))
        status, _, body = self.get("/pad/")
        self.assertEqual((status, body), (200, self.read("www/pad/index.html")))
        status, headers, body = self.get("/pad/index.html", method="HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(int(headers["Content-Length"]), len(self.read("www/pad/index.html")))
        # The API routes still answer.
        status, _, body = self.get("/api/config")
        self.assertEqual(status, 200)
        self.assertIn(b"websocketPath", body)

    def test_security_headers_and_caching(self):
        _, headers, _ = self.get("/pad/index.html")
        csp = headers["Content-Security-Policy"]
        self.assertIn("frame-src 'self' blob: http://sandbox.localhost", csp)
        self.assertIn("connect-src 'self' blob: http://pad.localhost http://sandbox.localhost ws://pad.localhost", csp)
        self.assertNotIn("unsafe-eval", csp)
        self.assertEqual(headers["Cross-Origin-Embedder-Policy"], "require-corp")
        self.assertEqual(headers["Cross-Origin-Resource-Policy"], "cross-origin")
        self.assertEqual(headers["Access-Control-Allow-Origin"], "http://sandbox.localhost")
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(headers["Cache-Control"], "no-cache")
        _, headers, _ = self.get("/pad/index.html?ver=5.0")
        self.assertEqual(headers["Cache-Control"], "max-age=31536000")
        _, headers, _ = self.get("/sheet/inner.html")
        self.assertIn("'unsafe-eval'", headers["Content-Security-Policy"])

    def test_traversal_and_missing_files(self):
        self.assertEqual(self.get("/../config/config.js")[0], 400)
        self.assertEqual(self.get("/%2e%2e/config/config.js")[0], 400)
        self.assertEqual(self.get("/common/%2e%2e/%2e%2e/config/config.js")[0], 400)
        status, _, body = self.get("/no/such/file.js")
        self.assertEqual(status, 404)
        self.assertEqual(body, self.read("customize.dist/404.html"))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
# The client libraries CryptPad's `npm run install:components` copies into www/components.
COMPONENTS = ["alertify.js", "bootstrap", "bootstrap-tokenfield", "chainpad", "chainpad-listmap", "chainpad-netflux",
              "ckeditor", "codemirror", "croppie", "file-saver", "hyper-json", "jquery", "json.sortify", "jszip",
              "dragula", "html2canvas", "localforage", "marked", "mathjax", "open-sans-fontface", "tweetnacl",
              "tweetnacl-util", "require-css", "requirejs", "requirejs-plugins", "scrypt-async", "sortablejs",
              "chainpad-crypto", "saferphore", "nthen", "netflux-websocket", "drawio", "pako", "x2js"]


class CryptpadInChromium(unittest.TestCase):
    """CryptPad's own web application, served by hearth from a checkout, in Debian's Chromium:
    the Code app creates a pad, and a second browser reads back what the first one typed."""

    @classmethod
    def setUpClass(cls):
        if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
            raise unittest.SkipTest("Debian's chromium is not installed")
        if not os.path.isdir(os.path.join(WEB, "node_modules", "playwright-core")):
            raise unittest.SkipTest("npm ci in tests/integration/web (scripts/install-deps.sh)")
        if not os.path.isdir(os.path.join(CRYPTPAD_DIR, "node_modules", "chainpad")):
            raise unittest.SkipTest(f"no CryptPad checkout with node_modules at {CRYPTPAD_DIR}")
        import tempfile
        cls.root = tempfile.mkdtemp(prefix="hearth-cpweb-")
        # A web root as CryptPad's install leaves it: www (with www/components), customize.dist,
        # src/common. Hard links where possible (the checkout is not modified), else copies.
        def link_tree(src, dst):
            r = subprocess.run(["cp", "-al", src, dst], capture_output=True)
            if r.returncode != 0:
                shutil.copytree(src, dst)
        link_tree(os.path.join(CRYPTPAD_DIR, "www"), os.path.join(cls.root, "www"))
        link_tree(os.path.join(CRYPTPAD_DIR, "customize.dist"), os.path.join(cls.root, "customize.dist"))
        os.makedirs(os.path.join(cls.root, "src"))
        link_tree(os.path.join(CRYPTPAD_DIR, "src", "common"), os.path.join(cls.root, "src", "common"))
        components = os.path.join(cls.root, "www", "components")
        os.makedirs(components, exist_ok=True)
        for name in COMPONENTS:
            src = os.path.join(CRYPTPAD_DIR, "node_modules", name)
            if os.path.isdir(src) and not os.path.exists(os.path.join(components, name)):
                link_tree(src, os.path.join(components, name))
        # Two origins of one site on one listener: main and sandbox.
        port = free_port()
        cls.main = f"http://localhost:{port}"
        cls.h = Hearth(f'[cryptpad]\nweb_root = "{cls.root}"\nhttp_unsafe_origin = "{cls.main}"\n'
                       f'http_safe_origin = "http://sandbox.localhost:{port}"\n')
        with open(cls.h.config_path) as f:
            text = f.read()
        with open(cls.h.config_path, "w") as f:
            f.write(text.replace("[http]\nport = 0\n", f"[http]\nport = {port}\n", 1))
        cls.h.start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_code_pad_is_created_stored_and_read_back(self):
        p = subprocess.run(["node", "cryptpad_driver.mjs", self.main], cwd=WEB, capture_output=True, text=True,
                           timeout=240)
        lines = p.stdout.strip().splitlines()
        self.assertTrue(lines, p.stderr)
        r = json.loads(lines[-1])
        self.assertTrue(r["ok"], json.dumps(r, indent=1))
        self.assertIn("/code/edit/", r["pad"])
        self.assertIn("hello from chromium through hearth", r["text"])
        # The pad's encrypted history is rows in hearth's database.
        db = sqlite3.connect(f"file:{self.h.data_dir}/hearth.db?mode=ro", uri=True)
        try:
            stored = db.execute("SELECT COUNT(*) FROM cryptpad_messages").fetchone()[0]
        finally:
            db.close()
        self.assertGreater(stored, 0)
