"""Federation against Debian's Prosody 0.12 as the remote server (p.example on 127.0.0.4):
hearth serves a.example on 127.0.0.1 and reaches Prosody through a static route; Prosody
finds hearth through DNS SRV answered by a fake resolver (fake_dns.py, wired with
Prosody's `unbound.forward`; the domains end in .example because libunbound answers
.test itself with NXDOMAIN), so both directions open their own streams. Prosody runs
with `s2s_secure_auth = true` and certificates from a test CA: 1:1 messages both ways,
presence subscriptions both ways, and a Prosody user in a room at conference.a.example."""
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import unittest

from fake_dns import FakeDns
from harness import Hearth, free_port, wait_until
from test_xmpp_client import next_item, TIMEOUT, wait_for_condition
from test_xmpp_federation import FedClient, make_ca, make_cert, server

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")

PROSODY_CONFIG = """
daemonize = false
data_path = "{dir}/data"
pidfile = "{dir}/prosody.pid"
admin_socket = "{dir}/admin.sock"
admins = {{ }}
plugin_paths = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix"; "presence" }}
interfaces = {{ "127.0.0.4" }}
local_interfaces = {{ "127.0.0.4" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {s2s} }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = true
authentication = "internal_hashed"
storage = "internal"
allow_registration = false
unbound = {{ resolvconf = false; hoststxt = false; forward = "{dns}" }}
log = {{ debug = "{dir}/prosody.log" }}
certificates = "{dir}/certs"
ssl = {{ cafile = "{ca}" }}
VirtualHost "p.example"
  ssl = {{ key = "{dir}/certs/p.key"; certificate = "{dir}/certs/p.crt"; cafile = "{ca}" }}
"""


def as_prosody(*args, **kwargs):
    return subprocess.run(["setpriv", "--reuid", "prosody", "--regid", "prosody", "--init-groups", *args], **kwargs)


def listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@unittest.skipUnless(PROSODY and PROSODYCTL, "prosody is not installed")
class ProsodyFederation(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hearth-prosody-")
        os.chmod(cls.tmp, 0o755)
        cls.ca = make_ca(cls.tmp)
        cert_a = make_cert(cls.tmp, "a", ["a.example", "conference.a.example", "upload.a.example"])
        pdir = os.path.join(cls.tmp, "prosody")
        os.makedirs(os.path.join(pdir, "certs"))
        os.makedirs(os.path.join(pdir, "data"))
        make_cert(cls.tmp, "p", ["p.example", "conference.p.example"])
        for f in ("p.crt", "p.key"):
            shutil.copy(os.path.join(cls.tmp, f), os.path.join(pdir, "certs", f))
        pa = free_port("127.0.0.1")
        cls.p_c2s, p_s2s = free_port("127.0.0.4"), free_port("127.0.0.4")
        srv = [(0, 5, pa, "a.example")]
        cls.dns = FakeDns(a={"a.example": "127.0.0.1", "conference.a.example": "127.0.0.1", "p.example": "127.0.0.4"},
                          srv={"_xmpp-server._tcp.a.example": srv, "_xmpp-server._tcp.conference.a.example": srv})
        cls.cfg = os.path.join(pdir, "prosody.cfg.lua")
        with open(cls.cfg, "w") as f:
            f.write(PROSODY_CONFIG.format(dir=pdir, c2s=cls.p_c2s, s2s=p_s2s, ca=cls.ca,
                                          dns=f"{cls.dns.address[0]}@{cls.dns.address[1]}"))
        subprocess.run(["chown", "-R", "prosody:prosody", pdir], check=True)
        for user in ("pete", "paula"):
            r = as_prosody(PROSODYCTL, "--config", cls.cfg, "register", user, "p.example", f"{user} secret pw",
                           capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr + r.stdout
        cls.prosody = subprocess.Popen(
            ["setsid", "setpriv", "--reuid", "prosody", "--regid", "prosody", "--init-groups",
             PROSODY, "--config", cls.cfg, "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_until(lambda: cls.prosody.poll() is not None or listening("127.0.0.4", cls.p_c2s), what="prosody")
        assert cls.prosody.poll() is None, "prosody exited"
        cls.a = server("a.example", "127.0.0.1", pa, cert_a, cls.ca, [f"p.example=127.0.0.4:{p_s2s}"])
        cls.a.start()
        cls.a.add_users("alice", "anna")

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.a.cleanup()
        cls.prosody.terminate()
        try:
            cls.prosody.wait(timeout=20)
        except subprocess.TimeoutExpired:
            cls.prosody.kill()
        cls.dns.close()
        if os.environ.get("HEARTH_KEEP_PROSODY_LOG"):
            shutil.copy(os.path.join(cls.tmp, "prosody", "prosody.log"), os.environ["HEARTH_KEEP_PROSODY_LOG"])
        shutil.rmtree(cls.tmp, ignore_errors=True)

    async def hearth_client(self, name):
        c = FedClient(f"{name}@a.example/test", f"{name} secret pw", self.ca, "127.0.0.1")
        self.addAsyncCleanup(self._stop, c)
        await c.login(self.a.xmpp_port)
        return c

    async def prosody_client(self, name):
        c = FedClient(f"{name}@p.example/test", f"{name} secret pw", self.ca, "127.0.0.4")
        self.addAsyncCleanup(self._stop, c)
        await c.login(self.p_c2s)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    async def test_messages_both_ways(self):
        alice = await self.hearth_client("alice")
        pete = await self.prosody_client("pete")
        alice.send_message(mto="pete@p.example", mbody="hello prosody", mtype="chat")
        m = await next_item(pete.messages, lambda m: m["body"] == "hello prosody")
        self.assertEqual(str(m["from"]), "alice@a.example/test")
        pete.send_message(mto="alice@a.example/test", mbody="hello hearth", mtype="chat")
        m = await next_item(alice.messages, lambda m: m["body"] == "hello hearth")
        self.assertEqual(str(m["from"]), "pete@p.example/test")
        # Prosody authenticated hearth, and hearth Prosody, with SASL EXTERNAL.
        self.a.wait_for_log("event=xmpp.s2s_in_authenticated from=p.example to=a.example method=EXTERNAL")
        self.a.wait_for_log("event=xmpp.s2s_out_ready from=a.example to=p.example")

    async def test_presence_subscription_both_ways(self):
        anna = await self.hearth_client("anna")
        paula = await self.prosody_client("paula")
        anna.send_presence(pto="paula@p.example", ptype="subscribe")
        req = await next_item(paula.subscribes, lambda p: p["from"].bare == "anna@a.example")
        paula.send_presence(pto=req["from"].bare, ptype="subscribed")
        paula.send_presence(pto=req["from"].bare, ptype="subscribe")
        await next_item(anna.subscribes, lambda p: p["from"].bare == "paula@p.example")
        anna.send_presence(pto="paula@p.example", ptype="subscribed")
        await wait_for_condition(lambda: anna.client_roster["paula@p.example"]["subscription"] == "both",
                                 what="anna's roster: both")
        await wait_for_condition(lambda: paula.client_roster["anna@a.example"]["subscription"] == "both",
                                 what="paula's roster: both")
        paula.send_presence(pstatus="from prosody")
        await next_item(anna.presences, lambda p: p["from"].bare == "paula@p.example" and p["status"] == "from prosody")
        anna.send_presence(pstatus="from hearth")
        await next_item(paula.presences, lambda p: p["from"].bare == "anna@a.example" and p["status"] == "from hearth")

    async def test_prosody_user_in_a_hearth_room(self):
        alice = await self.hearth_client("alice")
        pete = await self.prosody_client("pete")
        room = "federated@conference.a.example"
        await alice["xep_0045"].join_muc_wait(room, "Alice", timeout=TIMEOUT)
        await pete["xep_0045"].join_muc_wait(room, "Pete", timeout=TIMEOUT)
        pete.send_message(mto=room, mbody="hi from prosody", mtype="groupchat")
        m = await next_item(alice.room_messages, lambda m: m["body"] == "hi from prosody")
        self.assertEqual(str(m["from"]), f"{room}/Pete")
        alice.send_message(mto=room, mbody="hi pete", mtype="groupchat")
        m = await next_item(pete.room_messages, lambda m: m["body"] == "hi pete")
        self.assertEqual(str(m["from"]), f"{room}/Alice")


if __name__ == "__main__":
    unittest.main()
