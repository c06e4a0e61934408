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
import urllib.request

from harness import Hearth
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
