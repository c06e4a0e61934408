"""A real terminal client: Profanity (Debian's profanity 0.13) runs under tmux, logs in to
hearth over STARTTLS, accepts hearth's self-signed certificate after we check the
fingerprint it shows, and sends a message that a slixmpp account receives; the reply
shows up on Profanity's screen."""
import asyncio
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import unittest

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT


class Tmux:
    def __init__(self, home):
        self.env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, "config"),
                        XDG_DATA_HOME=os.path.join(home, "data"), TERM="xterm-256color", LANG="C.UTF-8")
        self.socket = f"hearth-test-{os.getpid()}"

    def run(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, capture_output=True, text=True,
                              timeout=30)

    def start(self, command):
        r = self.run("new-session", "-d", "-s", "main", "-x", "220", "-y", "60", command)
        assert r.returncode == 0, r.stderr

    def type(self, text):
        # -l: literal keys, so that a '/' or ';' is typed as it is.
        self.run("send-keys", "-t", "main", "-l", text)
        self.run("send-keys", "-t", "main", "Enter")

    def screen(self):
        return self.run("capture-pane", "-p", "-J", "-S", "-200", "-t", "main").stdout

    async def wait_for(self, pattern, timeout=TIMEOUT):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            text = self.screen()
            m = re.search(pattern, text)
            if m:
                return m
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"Profanity never showed {pattern!r}; screen:\n{text}")
            await asyncio.sleep(0.1)

    def stop(self):
        self.run("kill-server")


class XmppProfanity(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("profanity", "tmux"):
            assert shutil.which(tool), f"{tool} is missing: scripts/install-deps.sh installs it"
        cls.h = Hearth().start()
        cls.h.add_users("alice", "bob")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    async def test_profanity_logs_in_and_chats_with_slixmpp(self):
        bob = Client("bob@localhost/desk", "bob secret pw", self.h.cert_path())
        await bob.login(self.h.xmpp_port)
        self.addAsyncCleanup(bob.stop)

        home = tempfile.mkdtemp(prefix="hearth-profanity-")
        self.addCleanup(shutil.rmtree, home, True)
        tmux = Tmux(home)
        self.addCleanup(tmux.stop)
        tmux.start("profanity")
        await tmux.wait_for(r"Type '/help'")
        tmux.type(f"/connect alice@localhost server 127.0.0.1 port {self.h.xmpp_port} tls force")
        await tmux.wait_for(r"Enter password")
        tmux.type("alice secret pw")

        # Profanity shows the certificate it got over STARTTLS: it is hearth's.
        m = await tmux.wait_for(r"Fingerprint\s*:\s*([0-9a-f]{40})")
        with open(self.h.cert_path()) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        self.assertEqual(m.group(1), hashlib.sha1(der).hexdigest())
        tmux.type("/tls allow")
        await tmux.wait_for(r"alice@localhost/\S+ logged in successfully")

        tmux.type("/msg bob@localhost hello from a terminal")
        msg = await next_item(bob.messages, lambda m: m["body"] == "hello from a terminal")
        self.assertEqual(msg["from"].bare, "alice@localhost")

        bob.send_message(mto=msg["from"], mbody="hello back, terminal", mtype="chat")
        await tmux.wait_for(r"hello back, terminal")


if __name__ == "__main__":
    unittest.main()
