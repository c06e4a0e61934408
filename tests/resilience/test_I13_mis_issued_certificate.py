"""I13: a national XMPP service was intercepted with a valid, mis-issued certificate.

hearth offers SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS first, with both channel-binding
types advertised (XEP-0440). A man in the middle that terminates TLS with a certificate
for the domain from another CA the client trusts (the "mis-issued" one) relays a -PLUS
login to hearth: the binding the client computes (tls-server-end-point: the hash of the
certificate it sees) is not hearth's, so hearth answers <failure/> and no session
starts; the same password without binding passes the proxy, which then reads the
traffic (that is the interception). Server-to-server: a peer without TLS, or with a
certificate no trusted CA signed, is refused. The operator's part, DNS records that pin
the key (DANE/TLSA) and the CAs (CAA), is in docs/operations.md and printed by
`hearthctl tls-records`.

The SCRAM client is the hand-written one in tests/integration/xmpp_raw.py (hashlib/hmac).
Defence off (HEARTH_DEFENCE_OFF=1): xmpp.channel_binding = false; the -PLUS mechanisms
are no longer offered, so the mechanism test and the man-in-the-middle test fail. The
s2s and records tests have no off switch: certificate verification of peers cannot be
turned off, and the records are documentation.
"""
import base64
import hashlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest
import xml.etree.ElementTree as ET

from resilience import DEFENCE_OFF, Hearth
from test_xmpp_federation import STREAM_NS, RawS2s, make_ca, make_cert
from xmpp_raw import SASL, SASL2, RawXmpp, Scram, b64, q

SASL_CB = "urn:xmpp:sasl-cb:0"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


class TlsInterceptor:
    """A TLS-terminating proxy: presents its own certificate to clients and relays the
    plaintext to hearth's direct-TLS port over a second TLS connection, keeping a copy of
    what the client sent (what an interceptor reads)."""

    def __init__(self, cert, key, upstream_port, upstream_ca):
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(cert, key)
        self.server_ctx.set_alpn_protocols(["xmpp-client"])
        self.upstream_ctx = ssl.create_default_context(cafile=upstream_ca)
        self.upstream_ctx.set_alpn_protocols(["xmpp-client"])
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            down = self.server_ctx.wrap_socket(raw, server_side=True)
            up = self.upstream_ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.upstream_port)),
                                               server_hostname="localhost")
        except OSError:
            raw.close()
            return
        with self.lock:
            self.sockets += [down, up]
        # One thread per connection (an SSL object must not be read and written from two
        # threads at once): wait for either side, move what is readable.
        peer = {down: up, up: down}
        try:
            for s in (down, up):
                s.setblocking(False)
            while True:
                readable, _, _ = select.select([down, up], [], [], 30)
                if not readable:
                    return
                for src in readable:
                    while True:
                        try:
                            data = src.recv(65536)
                        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            break
                        if not data:
                            return
                        if src is down:
                            with self.lock:
                                self.seen += data
                        dst = peer[src]
                        dst.setblocking(True)
                        dst.sendall(data)
                        dst.setblocking(False)
                        if not src.pending():
                            break
        except OSError:
            pass
        finally:
            for s in (down, up):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass


def restart_stream(x):
    """After <success/>: a fresh parser for the server's new stream header."""
    x.parser = ET.XMLPullParser(events=("start", "end"))
    x.depth = 0
    x.pending = []
    return x.open_stream()


def scram_login(port, cafile, user, password, plus):
    """Logs in with SCRAM-SHA-256, or -PLUS with tls-server-end-point over the certificate
    this client sees. Returns (connection, None) after a bound session, or (connection,
    failure condition)."""
    x = RawXmpp(port, cafile)
    x.open_stream()
    scram = Scram(user, password, x.server_cert_hash() if plus else None)
    x.send(f"<auth xmlns='{SASL}' mechanism='{scram.mechanism}'>{b64(scram.initial())}</auth>")
    el = x.next()
    if el.tag == q(SASL, "failure"):
        return x, el[0].tag.split("}")[1]
    assert el.tag == q(SASL, "challenge"), el.tag
    x.send(f"<response xmlns='{SASL}'>{b64(scram.final(base64.b64decode(el.text)))}</response>")
    el = x.next()
    if el.tag == q(SASL, "failure"):
        return x, el[0].tag.split("}")[1]
    assert el.tag == q(SASL, "success"), el.tag
    assert scram.verify(base64.b64decode(el.text)), "the server's signature does not verify"
    features = restart_stream(x)
    assert features.find(q(BIND, "bind")) is not None
    x.send(f"<iq type='set' id='bind1'><bind xmlns='{BIND}'><resource>i13</resource></bind></iq>")
    iq = x.next(q("jabber:client", "iq"))
    assert iq.get("type") == "result", ET.tostring(iq)
    return x, None


class MisIssuedCertificate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hearth-i13-")
        # The CA that federation peers are checked against, and a second, "rogue" CA that
        # clients also trust (a national CA, an employer's) and that issued for our domain.
        cls.s2s_dir, cls.rogue_dir = os.path.join(cls.tmp, "s2s-ca"), os.path.join(cls.tmp, "rogue-ca")
        os.mkdir(cls.s2s_dir)
        os.mkdir(cls.rogue_dir)
        cls.s2s_ca = make_ca(cls.s2s_dir)
        cls.rogue_ca = make_ca(cls.rogue_dir)
        cls.peer_ok = make_cert(cls.s2s_dir, "b", ["b.test"])
        cls.peer_rogue = make_cert(cls.rogue_dir, "b", ["b.test"])
        cls.mitm_cert = make_cert(cls.rogue_dir, "localhost", ["localhost"])
        cls.h = Hearth(xmpp_extra=f's2s_ca_file = "{cls.s2s_ca}"\n'
                                  + ("channel_binding = false\n" if DEFENCE_OFF else ""))
        cls.h.start()
        cls.h.add_users("alice")
        # The client trusts hearth's own certificate and the rogue CA.
        cls.trust = os.path.join(cls.tmp, "client-trust.pem")
        with open(cls.trust, "w") as out:
            for path in (cls.h.cert_path(), cls.rogue_ca):
                with open(path) as f:
                    out.write(f.read())

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def proxy(self):
        p = TlsInterceptor(*self.mitm_cert, self.h.xmpps_port, self.h.cert_path())
        self.addCleanup(p.close)
        return p

    # (a)
    def test_plus_mechanisms_are_offered_first_with_both_binding_types(self):
        x = RawXmpp(self.h.xmpps_port, self.trust)
        self.addCleanup(x.close)
        features = x.open_stream()
        for ns in (SASL, SASL2):
            container = features.find(q(ns, "mechanisms" if ns == SASL else "authentication"))
            mechs = [m.text for m in container.findall(q(ns, "mechanism"))]
            self.assertEqual(mechs[:2], ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"], ns)
            self.assertLess(max(mechs.index(m) for m in mechs if m.endswith("-PLUS")),
                            min(mechs.index(m) for m in mechs if not m.endswith("-PLUS")))
        cb = features.find(q(SASL_CB, "sasl-channel-binding"))
        self.assertIsNotNone(cb, "no XEP-0440 <sasl-channel-binding/>")
        self.assertEqual({c.get("type") for c in cb.findall(q(SASL_CB, "channel-binding"))},
                         {"tls-exporter", "tls-server-end-point"})

    # (b)
    def test_man_in_the_middle_with_a_valid_certificate_is_refused(self):
        # Directly, the bound login works.
        x, failure = scram_login(self.h.xmpps_port, self.trust, "alice", "alice secret pw", plus=True)
        self.addCleanup(x.close)
        self.assertIsNone(failure)
        # Through the interceptor the client sees a valid certificate (it verifies it
        # against the rogue CA): the binding is to the interceptor's certificate, not
        # hearth's, and hearth refuses.
        proxy = self.proxy()
        y, failure = scram_login(proxy.port, self.trust, "alice", "alice secret pw", plus=True)
        self.addCleanup(y.close)
        self.assertEqual(failure, "not-authorized")
        # No session: binding a resource on the unauthenticated stream is an error.
        y.send(f"<iq type='set' id='bind2'><bind xmlns='{BIND}'/></iq>")
        self.assertEqual(y.next(q("jabber:client", "iq")).get("type"), "error")
        # The same password without binding passes the interceptor, which reads everything
        # that follows: that is the interception channel binding prevents.
        z, failure = scram_login(proxy.port, self.trust, "alice", "alice secret pw", plus=False)
        self.addCleanup(z.close)
        self.assertIsNone(failure)
        z.send("<message to='alice@localhost' type='chat'><body>the interceptor reads this</body></message>")
        z.send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
        z.next(q("jabber:client", "iq"))
        with proxy.lock:
            self.assertIn(b"the interceptor reads this", bytes(proxy.seen))

    # (c)
    def test_s2s_requires_tls_and_a_trusted_certificate(self):
        port = self.h.s2s_port
        # No TLS: stanzas are refused.
        p = RawS2s(port)
        self.addCleanup(p.close)
        p.open("b.test", "localhost")
        features = p.expect(f"{{{STREAM_NS}}}features")
        self.assertIsNotNone(features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls/{urn:ietf:params:xml:ns:xmpp-tls}required"))
        p.send("<message from='eve@b.test' to='alice@localhost'><body>plain</body></message>")
        self.assertEqual(p.stream_error(), "policy-violation")
        # A certificate for b.test from a CA hearth does not trust: neither SASL EXTERNAL
        # nor dialback lets it in.
        for method in ("EXTERNAL", "dialback"):
            p = RawS2s(port)
            self.addCleanup(p.close)
            p.open("b.test", "localhost")
            p.expect(f"{{{STREAM_NS}}}features")
            p.starttls(self.h.cert_path(), *self.peer_rogue, "localhost")
            if method == "EXTERNAL":
                p.open("b.test", "localhost")
                features = p.expect(f"{{{STREAM_NS}}}features")
                self.assertEqual([m.text for m in features.iter(q(SASL, "mechanism"))], [])
                p.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>=</auth>")
                self.assertEqual(p.expect(q(SASL, "failure"))[0].tag, q(SASL, "not-authorized"))
            else:
                p.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
                       f"xmlns:stream='{STREAM_NS}' from='b.test' to='localhost' version='1.0'>")
                p._reset()
                p.next()
                p.send("<db:result from='b.test' to='localhost'>0123456789abcdef</db:result>")
                self.assertEqual(p.expect("{jabber:server:dialback}result").get("type"), "error")
            p.send("<message from='eve@b.test' to='alice@localhost'><body>x</body></message>")
            self.assertEqual(p.stream_error(), "not-authorized")
        self.h.wait_for_log("the certificate does not verify")
        # The control: the same name from the trusted CA is let in.
        p = RawS2s(port)
        self.addCleanup(p.close)
        p.open("b.test", "localhost")
        p.expect(f"{{{STREAM_NS}}}features")
        p.starttls(self.h.cert_path(), *self.peer_ok, "localhost")
        p.open("b.test", "localhost")
        features = p.expect(f"{{{STREAM_NS}}}features")
        self.assertEqual([m.text for m in features.iter(q(SASL, "mechanism"))], ["EXTERNAL"])
        p.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>=</auth>")
        p.expect(q(SASL, "success"))

    # (d)
    def test_docs_and_hearthctl_show_the_tlsa_and_caa_records(self):
        with open(os.path.join(REPO, "docs", "operations.md")) as f:
            ops = f.read()
        self.assertRegex(ops, r"_5222\._tcp\.\S+\s+IN TLSA 3 1 1 ")
        self.assertRegex(ops, r"_5269\._tcp\.\S+\s+IN TLSA 3 1 1 ")
        self.assertRegex(ops, r'IN CAA 0 issue "[^"]+"')
        self.assertIn("hearthctl tls-records", ops)
        # The digest computed independently: SHA-256 over the DER SubjectPublicKeyInfo.
        pub = subprocess.run(["openssl", "x509", "-in", self.h.cert_path(), "-noout", "-pubkey"],
                             check=True, capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                             capture_output=True).stdout
        digest = hashlib.sha256(der).hexdigest()
        r = self.h.ctl("tls-records")
        self.assertEqual(r.returncode, 0, r.stderr)
        for port in (5222, 5223, 5269):
            self.assertRegex(r.stdout, rf"(?m)^_{port}\._tcp\.localhost\. IN TLSA 3 1 1 {digest}\b")
        self.assertRegex(r.stdout, r'(?m)^localhost\. IN CAA 0 issue "letsencrypt.org"$')
        r = self.h.ctl("tls-records", "--host", "xmpp.example.org", "--caa-issuer", "ca.example")
        self.assertIn(f"_5269._tcp.xmpp.example.org. IN TLSA 3 1 1 {digest}", r.stdout)
        self.assertIn('conference.localhost. IN CAA 0 issue "ca.example"', r.stdout)
        r = self.h.ctl("tls-records", "--domain", "nowhere.test")
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
