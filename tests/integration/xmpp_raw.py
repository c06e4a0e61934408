"""A minimal XMPP client over raw TLS for protocol features no Debian client speaks yet
(XEP-0388 SASL2, XEP-0386 Bind 2, XEP-0484 FAST): it sends XML we write and parses what
the server sends with ElementTree's pull parser. SCRAM (RFC 5802/7677) and the HT-*
proofs are computed here with hashlib/hmac."""
import base64
import hashlib
import hmac
import os
import socket
import ssl
import time
import xml.etree.ElementTree as ET

STREAM = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SASL2 = "urn:xmpp:sasl:2"
BIND2 = "urn:xmpp:bind:0"
FAST = "urn:xmpp:fast:0"
SM = "urn:xmpp:sm:3"
CLIENT = "jabber:client"


def q(ns, name):
    return f"{{{ns}}}{name}"


class RawXmpp:
    def __init__(self, port, cafile, domain="localhost", timeout=15):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["xmpp-client"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=domain)
        self.domain = domain
        self.timeout = timeout
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.pending = []
        self.closed = False

    def server_cert_hash(self):
        """tls-server-end-point channel binding (RFC 5929): SHA-256 of the server's certificate."""
        return hashlib.sha256(self.sock.getpeercert(binary_form=True)).digest()

    def send(self, xml):
        self.sock.sendall(xml.encode())

    def open_stream(self, frm=None):
        attrs = f" from='{frm}'" if frm else ""
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAM}' "
                  f"to='{self.domain}' version='1.0'{attrs}>")
        return self.next(q(STREAM, "features"))

    def next(self, tag=None):
        """The next top-level element (optionally the next one with this tag), or raises."""
        deadline = time.monotonic() + self.timeout
        while True:
            while self.pending:
                el = self.pending.pop(0)
                if tag is None or el.tag == tag:
                    return el
            if self.closed:
                raise ConnectionError("the server closed the stream")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                continue
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(el)
                    elif self.depth == 0:
                        self.closed = True
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {tag}")

    def close(self):
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        self.sock.close()

    def drop(self):
        """Cut the TCP connection without closing the stream (a phone losing its network)."""
        self.sock.close()


class Scram:
    """SCRAM-SHA-256 (RFC 7677) client, optionally -PLUS with tls-server-end-point."""
    def __init__(self, user, password, cb_data=None):
        self.user, self.password, self.cb_data = user, password, cb_data
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.gs2 = "p=tls-server-end-point,," if cb_data is not None else "n,,"
        self.first_bare = f"n={user},r={self.nonce}"

    @property
    def mechanism(self):
        return "SCRAM-SHA-256-PLUS" if self.cb_data is not None else "SCRAM-SHA-256"

    def initial(self):
        return (self.gs2 + self.first_bare).encode()

    def final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        cbind = self.gs2.encode() + (self.cb_data or b"")
        without_proof = f"c={base64.b64encode(cbind).decode()},r={attrs['r']}"
        auth = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored, auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = hmac.new(server_key, auth, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final):
        return server_final.decode() == "v=" + base64.b64encode(self.expected_server_signature).decode()


def ht_initiator(user, token, cb_data=b""):
    return user.encode() + b"\0" + hmac.new(token.encode(), b"Initiator" + cb_data, hashlib.sha256).digest()


def ht_responder(token, cb_data=b""):
    return hmac.new(token.encode(), b"Responder" + cb_data, hashlib.sha256).digest()


def b64(data):
    return base64.b64encode(data).decode()
