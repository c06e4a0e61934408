"""Black-box tests of the foundation: hearthd and hearthctl as an operator uses them."""
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import unittest

from harness import Hearth, raw_exchange, wait_until


class RunningServer(unittest.TestCase):
    """One hearthd for the read-mostly tests of this class."""

    @classmethod
    def setUpClass(cls):
        cls.h = Hearth("[limits]\nmax_connections_per_ip = 8\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def test_banner_lists_listeners_and_first_admin_invite(self):
        out = self.h.stdout()
        self.assertIsNotNone(self.h.http_port, out)
        self.assertIsNotNone(self.h.https_port, out)
        self.assertIn("First admin invitation", out)
        self.assertRegex(out, r"open\s+https://localhost:\d+/invite/[A-Za-z0-9_-]{20,}")

    def test_health_reports_every_check(self):
        status, body = self.h.get_json("/health")
        self.assertEqual(status, 200)
        self.assertIn(body["status"], ("ok", "warning"))
        for check in ("disk", "data_dir", "open_files", "database"):
            self.assertIn(check, body["checks"])
            self.assertIn("status", body["checks"][check])
            self.assertIn("value", body["checks"][check])
        self.assertEqual(body["checks"]["database"]["status"], "ok")
        self.assertEqual(body["checks"]["data_dir"]["status"], "ok")

    def test_metrics_are_prometheus_text(self):
        self.h.request("GET", "/health")
        status, headers, body = self.h.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        text = body.decode()
        self.assertIn("# TYPE hearth_health_status gauge", text)
        self.assertRegex(text, r'hearth_health_status\{check="database"\} 0')
        self.assertRegex(text, r"hearth_http_requests_total")
        self.assertRegex(text, r"hearth_store_commits_total")

    def test_admin_socket_is_private(self):
        path = os.path.join(self.h.data_dir, "hearthd.sock")
        st = os.stat(path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_uid, os.getuid())

    def test_user_lifecycle_through_the_daemon(self):
        r = self.h.ctl("user", "add", "alice@localhost", stdin="correct horse battery\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("created alice@localhost", r.stdout)
        again = self.h.ctl("user", "add", "alice@localhost", stdin="x\n")
        self.assertEqual(again.returncode, 2)
        self.assertIn("already_exists", again.stderr)
        listed = self.h.ctl("user", "list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("alice@localhost", listed.stdout.split())
        self.assertEqual(self.h.ctl("user", "passwd", "alice@localhost", stdin="new password!\n").returncode, 0)
        self.assertEqual(self.h.ctl("user", "del", "alice@localhost").returncode, 0)
        self.assertNotIn("alice@localhost", self.h.ctl("user", "list").stdout)
        missing = self.h.ctl("user", "del", "nobody@localhost")
        self.assertEqual(missing.returncode, 2)
        self.assertIn("not_found", missing.stderr)

    def test_bad_user_names_are_refused(self):
        for bad in ("a b@localhost", "@localhost", "x@y@z"):
            r = self.h.ctl("user", "add", bad, stdin="password123\n")
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("invalid_argument", r.stderr)
        unknown_domain = self.h.ctl("user", "add", "bob@elsewhere.example", stdin="password123\n")
        self.assertEqual(unknown_domain.returncode, 2)

    def test_check_prints_one_nagios_line(self):
        r = self.h.ctl("check", "--fresh")
        self.assertIn(r.returncode, (0, 1), r.stdout + r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r"^HEARTH (OK|WARNING) - .*\| .*disk_bytes_used=[\d.]+%;80;95")

    def test_tls_listener_with_sni_and_alpn(self):
        ctx = self.h.tls_context(alpn=("h2", "http/1.1"))
        with socket.create_connection(("127.0.0.1", self.h.https_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                self.assertEqual(tls.selected_alpn_protocol(), "http/1.1")
                tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        status, _, _ = self.h.request("GET", "/health", tls=True)
        self.assertEqual(status, 200)

    def test_malformed_http_gets_400_and_close(self):
        data, closed = raw_exchange(self.h.http_port, b"THIS IS NOT HTTP\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data[:100])
        self.assertTrue(closed)

    def test_oversize_body_gets_413(self):
        body = b"x" * (2 * 1024 * 1024)
        head = (b"POST /invite/whatever HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        data, _ = raw_exchange(self.h.http_port, head)
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:100])

    def test_unknown_path_is_404(self):
        status, _, _ = self.h.request("GET", "/nothing-here")
        self.assertEqual(status, 404)

    def test_connections_over_the_per_ip_cap_are_refused_without_affecting_others(self):
        held = []
        try:
            for _ in range(8):
                held.append(socket.create_connection(("127.0.0.1", self.h.http_port), timeout=10,
                                                     source_address=("127.0.0.2", 0)))
            # Wait until the server has accepted all of them (counted by the gauge).
            def refused():
                data, _ = raw_exchange(self.h.http_port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                                       source="127.0.0.2", timeout=5)
                return data.startswith(b"HTTP/1.1 503") or data == b""
            wait_until(refused, what="9th connection from 127.0.0.2 refused")
            status, _, _ = self.h.request("GET", "/health", source="127.0.0.1")
            self.assertEqual(status, 200)
        finally:
            for s in held:
                s.close()
        # Capacity returns once they are closed.
        wait_until(lambda: self.h.request("GET", "/health", source="127.0.0.2")[0] == 200,
                   what="127.0.0.2 served again")


class Invitations(unittest.TestCase):
    def setUp(self):
        self.h = Hearth().start()

    def tearDown(self):
        self.h.stop()
        self.h.cleanup()

    def test_bootstrap_invite_makes_the_first_admin_and_then_disappears(self):
        token = re.search(r"--invite ([A-Za-z0-9_-]+)", self.h.stdout()).group(1)
        r = self.h.ctl("user", "add", "boss@localhost", "--invite", token, stdin="admin password 1\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("(admin)", r.stdout)
        reuse = self.h.ctl("user", "add", "other@localhost", "--invite", token, stdin="password 22\n")
        self.assertEqual(reuse.returncode, 2)
        self.assertEqual(self.h.stop(), 0)
        self.h.start()
        self.assertNotIn("First admin invitation", self.h.stdout())

    def test_bootstrap_invite_is_stable_across_restarts(self):
        first = re.search(r"--invite ([A-Za-z0-9_-]+)", self.h.stdout()).group(1)
        self.assertEqual(self.h.stop(), 0)
        self.h.start()
        second = re.search(r"--invite ([A-Za-z0-9_-]+)", self.h.stdout()).group(1)
        self.assertEqual(first, second)

    def test_invite_page_creates_an_account(self):
        r = self.h.ctl("invite", "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = re.search(r"token: (\S+)", r.stdout).group(1)
        self.assertIn(f"/invite/{token}", r.stdout)
        status, headers, page = self.h.request("GET", f"/invite/{token}", tls=True)
        self.assertEqual(status, 200)
        self.assertIn(b"<form", page)
        self.assertIn("text/html", headers["content-type"])
        form = "username=carol&password=long+enough+pw&confirm=long+enough+pw"
        hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, page = self.h.request("POST", f"/invite/{token}", body=form, headers=hdrs, tls=True)
        self.assertEqual(status, 201, page)
        self.assertIn(b"carol@localhost", page)
        self.assertIn("carol@localhost", self.h.ctl("user", "list").stdout)
        status, _, _ = self.h.request("POST", f"/invite/{token}", body=form.replace("carol", "dave"), headers=hdrs, tls=True)
        self.assertEqual(status, 410)
        status, _, _ = self.h.request("GET", "/invite/not-a-real-token")
        self.assertEqual(status, 404)

    def test_invite_page_rejects_mismatched_passwords(self):
        token = re.search(r"token: (\S+)", self.h.ctl("invite", "create").stdout).group(1)
        form = "username=erin&password=long+enough+pw&confirm=different+pw"
        status, _, page = self.h.request("POST", f"/invite/{token}", body=form,
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 400)
        self.assertIn(b"differ", page)
        self.assertNotIn("erin@localhost", self.h.ctl("user", "list").stdout)


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.h = Hearth()

    def tearDown(self):
        self.h.cleanup()

    def test_sigterm_drains_and_exits_cleanly(self):
        self.h.start()
        port = self.h.http_port
        self.assertEqual(self.h.request("GET", "/health")[0], 200)
        self.assertEqual(self.h.stop(), 0)
        self.assertIn("event=hearthd.stopped", self.h.stderr())
        self.assertFalse(os.path.exists(os.path.join(self.h.data_dir, "hearthd.sock")))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def test_check_is_critical_when_the_daemon_is_down(self):
        self.h.start()
        self.h.stop()
        r = self.h.ctl("check")
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stdout.startswith("HEARTH CRITICAL - "), r.stdout)

    def test_hearthctl_works_on_a_stopped_data_directory(self):
        self.h.start()
        self.h.stop()
        r = self.h.ctl("user", "add", "offline@localhost", "--admin", stdin="offline password\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("offline@localhost admin", self.h.ctl("user", "list").stdout)
        self.h.start()
        self.assertIn("offline@localhost", self.h.ctl("user", "list").stdout)
        self.assertNotIn("First admin invitation", self.h.stdout())
        self.h.stop()

    def test_certificate_is_generated_once(self):
        self.h.start()
        with open(self.h.cert_path(), "rb") as f:
            first = f.read()
        key = os.path.join(self.h.data_dir, "tls", "localhost.key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.h.stop()
        self.h.start()
        with open(self.h.cert_path(), "rb") as f:
            self.assertEqual(first, f.read())
        self.h.stop()

    def test_second_daemon_on_the_same_data_directory_refuses(self):
        self.h.start()
        other = Hearth(workdir=self.h.dir)
        other.config_path = self.h.config_path
        other.start(expect_ready=False)
        self.assertNotEqual(other.wait_exit(), 0)
        self.assertIn("another hearthd is running", other.stderr())
        self.h.stop()

    def test_malformed_config_names_file_line_and_key(self):
        with open(self.h.config_path, "a") as f:
            f.write("[log]\nlevle = \"debug\"\n")
        r = subprocess.run([os.environ.get("HEARTHD", "hearthd"), "--config", self.h.config_path],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, re.escape(self.h.config_path) + r":\d+:\d+: key 'log.levle': unknown key")

    def test_rate_limit_answers_429_with_retry_after(self):
        with open(self.h.config_path, "a") as f:
            f.write("[limits]\nrequests_per_second_per_ip = 0.5\nrequest_burst_per_ip = 3\n")
        self.h.start()
        statuses = []
        for _ in range(6):
            status, headers, _ = self.h.request("GET", "/")
            statuses.append(status)
            if status == 429:
                self.assertGreaterEqual(int(headers["retry-after"]), 1)
        self.assertEqual(statuses[:3], [200, 200, 200])
        self.assertIn(429, statuses)
        # Health stays reachable for monitoring.
        self.assertEqual(self.h.request("GET", "/health")[0], 200)
        self.h.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
