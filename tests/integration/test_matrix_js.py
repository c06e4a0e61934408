"""matrix-js-sdk (the SDK Element is built on) against hearthd: js/chat.mjs logs two
people in, runs the SDK's own start-up and sync loop, creates a room with an invitation,
joins it and exchanges messages both ways. The SDK is installed from npm into
tests/integration/js (scripts/install-deps.sh runs `npm ci` there)."""
import json
import os
import re
import shutil
import subprocess
import unittest

from harness import Hearth

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


class MatrixJsSdk(unittest.TestCase):
    def setUp(self):
        if not shutil.which("node") or not os.path.isdir(os.path.join(JS_DIR, "node_modules", "matrix-js-sdk")):
            self.fail("matrix-js-sdk is not installed: run scripts/install-deps.sh (npm ci in tests/integration/js)")
        self.h = Hearth().start()

    def tearDown(self):
        self.h.stop()
        self.h.cleanup()

    def register(self, name, password):
        r = self.h.ctl("invite", "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = re.search(r"token: (\S+)", r.stdout).group(1)
        body = json.dumps({"username": name, "password": password,
                           "auth": {"type": "m.login.registration_token", "token": token}})
        status, _, raw = self.h.request("POST", "/_matrix/client/v3/register", body=body)
        self.assertEqual(status, 200, raw)

    def test_two_sdk_clients_chat(self):
        self.register("alice", "alice pw")
        self.register("bob", "bob pw")
        r = subprocess.run(["node", "chat.mjs", f"http://127.0.0.1:{self.h.http_port}", "alice pw", "bob pw"],
                           cwd=JS_DIR, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        self.assertIn("PASS", r.stdout)


if __name__ == "__main__":
    unittest.main()
