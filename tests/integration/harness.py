"""Runs the real hearthd and hearthctl binaries for black-box tests.

A Hearth instance lives in its own temporary directory with its own configuration, listens
on ports the kernel picks (port 0; the real ports are read from the start-up banner), and
is stopped with SIGTERM. Every wait has a deadline; nothing sleeps a fixed time.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

HEARTHD = os.environ.get("HEARTHD", "build/apps/hearthd/hearthd")
HEARTHCTL = os.environ.get("HEARTHCTL", "build/apps/hearthctl/hearthctl")

BANNER_LISTENER = re.compile(r"^\s+(HTTPS?)\s+(https?)://(\[[^\]]+\]|[^/:]+):(\d+)/")
BANNER_S2S = re.compile(r"^\s+S2S\s+(\[[^\]]+\]|[^ :]+):(\d+)\s")
BANNER_XMPP = re.compile(r"^\s+(XMPPS?)\s+(\[[^\]]+\]|[^ :]+):(\d+)\s")


def free_port(*hosts):
    """A TCP port that is free on every given address (default 127.0.0.1) right now. Another
    process may still take it before the caller binds: callers that must name ports in
    advance retry on "Address already in use"."""
    hosts = hosts or ("127.0.0.1",)
    while True:
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    with socket.socket() as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port


def measure_memory_without_asan_quarantine():
    """Under AddressSanitizer (scripts/test.sh --sanitize sets ASAN_OPTIONS) freed memory
    sits in a quarantine of up to 256 MiB, which reads as growth: turn it off for the
    hearthd a memory-bound test starts next, so RSS measures hearth's own bounds."""
    if "ASAN_OPTIONS" in os.environ and "quarantine_size_mb=0" not in os.environ["ASAN_OPTIONS"]:
        os.environ["ASAN_OPTIONS"] += ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"


def wait_until(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Hearth:
    def __init__(self, config_extra="", workdir=None, domain="localhost", preexec_fn=None, xmpp_extra="",
                 domain_extra=""):
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="hearth-it-")
        self.data_dir = os.path.join(self.dir, "data")
        self.config_path = os.path.join(self.dir, "hearth.toml")
        self.domain = domain
        self.preexec_fn = preexec_fn
        with open(self.config_path, "w") as f:
            f.write(
                f'[server]\ndata_dir = "{self.data_dir}"\nshards = 2\ndrain_seconds = 5\n'
                f'[[domain]]\nname = "{domain}"\n' + domain_extra +
                '[http]\nport = 0\nhttps_port = 0\n'
                '[xmpp]\nc2s_port = 0\nc2s_tls_port = 0\n'
                + ('' if 's2s_port' in xmpp_extra else 's2s_port = 0\n') + xmpp_extra +
                '[accounts]\nscram_iterations = 4096\n'
                '[ops]\nhealth_interval_seconds = 1\n'
                + config_extra
            )
        self.proc = None
        self.pumps = []
        self.stdout_lines = []
        self.stderr_lines = []
        self.http_port = None
        self.https_port = None
        self.xmpp_port = None
        self.xmpps_port = None
        self.s2s_port = None

    # -- process ---------------------------------------------------------------------
    def start(self, expect_ready=True, extra_args=()):
        self.stdout_lines, self.stderr_lines = [], []
        self.proc = subprocess.Popen(
            [HEARTHD, "--config", self.config_path, *extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=self.preexec_fn,
        )
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True),
                      threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines), daemon=True)]
        for t in self.pumps:
            t.start()
        if expect_ready:
            wait_until(lambda: self.proc.poll() is not None or any("Press Ctrl-C" in l for l in self.stdout_lines),
                       what="hearthd banner")
            if self.proc.poll() is not None:
                raise AssertionError(f"hearthd exited with {self.proc.returncode}: {self.stderr()}")
            for line in self.stdout_lines:
                m = BANNER_LISTENER.match(line)
                if m and m.group(1) == "HTTP":
                    self.http_port = int(m.group(4))
                elif m and m.group(1) == "HTTPS":
                    self.https_port = int(m.group(4))
                x = BANNER_XMPP.match(line)
                if x and x.group(1) == "XMPP":
                    self.xmpp_port = int(x.group(3))
                elif x and x.group(1) == "XMPPS":
                    self.xmpps_port = int(x.group(3))
                s = BANNER_S2S.match(line)
                if s:
                    self.s2s_port = int(s.group(2))
        return self

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.append(line)

    def wait_for_log(self, text, timeout=20):
        """Log lines arrive through a pipe read by another thread: wait for one."""
        return wait_until(lambda: text in self.stderr(), timeout=timeout, what=f"log line containing {text!r}")

    def stdout(self):
        return "".join(self.stdout_lines)

    def stderr(self):
        return "".join(self.stderr_lines)

    def wait_exit(self, timeout=30):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("hearthd did not exit in time")
        finally:
            self._close_pipes()
        return code

    def _close_pipes(self):
        # The pump threads read until EOF; wait for them so no line is lost.
        for t in self.pumps:
            t.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.wait_exit(timeout)
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._close_pipes()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients ---------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, tls=False, source="127.0.0.1"):
        if tls:
            ctx = self.tls_context()
            conn = http.client.HTTPSConnection("localhost", self.https_port, context=ctx, timeout=10,
                                               source_address=(source, 0))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10, source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get_json(self, path):
        status, _, body = self.request("GET", path)
        return status, json.loads(body)

    def cert_path(self):
        return os.path.join(self.data_dir, "tls", f"{self.domain}.crt")

    def tls_context(self, alpn=("http/1.1",)):
        ctx = ssl.create_default_context(cafile=self.cert_path())
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def ctl(self, *args, stdin=None, timeout=60):
        return subprocess.run(
            [HEARTHCTL, "--config", self.config_path, *args],
            input=stdin, capture_output=True, text=True, timeout=timeout,
        )

    def matrix_api(self, method, path, body=None, token=None):
        """A Matrix client-server call (/_matrix/client/v3 + path) over plain HTTP; the
        body is JSON unless already bytes or text. Returns (status, parsed JSON or None)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        status, _, raw = self.request(method, "/_matrix/client/v3" + path, body=data, headers=headers)
        return status, json.loads(raw) if raw else None

    def add_users(self, *names):
        """Creates name@<domain> for each name, with the password "<name> secret pw"."""
        for name in names:
            r = self.ctl("user", "add", f"{name}@{self.domain}", stdin=f"{name} secret pw\n")
            assert r.returncode == 0, r.stderr
        return self


def raw_exchange(port, payload, source="127.0.0.1", timeout=10):
    """Sends raw bytes, returns everything read until the server closes (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                return b"".join(chunks), False
            if not data:
                return b"".join(chunks), True
            chunks.append(data)
    finally:
        s.close()
