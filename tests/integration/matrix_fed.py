"""A fake remote Matrix homeserver for hearth's federation tests, written here: ed25519 keys
(python3-nacl), canonical JSON, content and reference hashes, room version 11 redaction,
X-Matrix request signatures, and an HTTPS endpoint serving its key and receiving /send."""
import base64
import hashlib
import http.server
import json
import ssl
import threading
import time

import nacl.signing

REMOTE = "remote.test"


# -- the Matrix formats, written for this test -----------------------------------------
def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def b64(raw, urlsafe=False):
    s = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    return s.decode().rstrip("=")


KEEP_TOP = {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
            "prev_events", "auth_events", "origin_server_ts"}
KEEP_CONTENT = {"m.room.member": {"membership", "join_authorised_via_users_server"},
                "m.room.join_rules": {"join_rule", "allow"},
                "m.room.history_visibility": {"history_visibility"},
                "m.room.power_levels": {"ban", "events", "events_default", "invite", "kick", "redact", "state_default",
                                        "users", "users_default"},
                "m.room.redaction": {"redacts"}}


def redact(event):
    """Room version 11's redaction algorithm (the types this test uses)."""
    out = {k: v for k, v in event.items() if k in KEEP_TOP}
    content = event.get("content", {})
    if event["type"] == "m.room.create":
        out["content"] = content
    else:
        keep = KEEP_CONTENT.get(event["type"], set())
        out["content"] = {k: v for k, v in content.items() if k in keep}
    return out


def content_hash(event):
    e = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(canonical(e)).digest()


def event_id(event):
    r = redact(event)
    r.pop("signatures", None)
    r.pop("unsigned", None)
    return "$" + b64(hashlib.sha256(canonical(r)).digest(), urlsafe=True)


class Server:
    """remote.test's signing key and what it signs."""

    def __init__(self, name=REMOTE):
        self.name = name
        self.key = nacl.signing.SigningKey.generate()
        self.key_id = "ed25519:fake1"
        self.accepting = True
        self.gate = None  # a threading.Event: PUT /send waits for it (a peer that hangs)
        self.peer_key = None  # (server name, nacl VerifyKey) of the server sending to us
        self.received = []
        self.transactions = []
        self.lock = threading.Lock()

    def check_x_matrix(self, header, method, uri, content):
        params = dict(p.split("=", 1) for p in header[len("X-Matrix "):].split(","))
        params = {k: v.strip('"') for k, v in params.items()}
        origin, verify_key = self.peer_key
        if params.get("origin") != origin or params.get("destination") != self.name:
            return False
        req = {"method": method, "uri": uri, "origin": origin, "destination": self.name, "content": content}
        sig = base64.b64decode(params["sig"] + "=" * (-len(params["sig"]) % 4))
        try:
            verify_key.verify(canonical(req), sig)
            return True
        except Exception:
            return False

    def sign_json(self, obj):
        unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
        sig = self.key.sign(canonical(unsigned)).signature
        obj.setdefault("signatures", {}).setdefault(self.name, {})[self.key_id] = b64(sig)
        return obj

    def finish_event(self, event):
        """Adds the content hash and the signature (over the redacted event); returns the id."""
        event["hashes"] = {"sha256": b64(content_hash(event))}
        signed = self.sign_json(redact(event))
        event["signatures"] = signed["signatures"]
        return event_id(event)

    def key_response(self):
        return self.sign_json({
            "server_name": self.name, "valid_until_ts": int(time.time() * 1000) + 3600_000,
            "verify_keys": {self.key_id: {"key": b64(bytes(self.key.verify_key))}}, "old_verify_keys": {}})

    def x_matrix(self, method, uri, destination, content=None):
        req = {"method": method, "uri": uri, "origin": self.name, "destination": destination}
        if content is not None:
            req["content"] = content
        sig = self.sign_json(req)["signatures"][self.name][self.key_id]
        return f'X-Matrix origin="{self.name}",destination="{destination}",key="{self.key_id}",sig="{sig}"'


def serve_remote(server, host, cert, key):
    """remote.test's HTTPS endpoint: /_matrix/key/v2/server, and PUT /send (recorded in
    server.received when server.accepting, else answered 503; the X-Matrix signature is
    checked with server.peer_key when set)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/_matrix/key/v2/server":
                body = json.dumps(server.key_response()).encode()
                self.send_response(200)
            else:
                body = b'{"errcode":"M_UNRECOGNIZED"}'
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            status = 503
            if server.gate is not None:
                server.gate.wait(120)
            if self.path.startswith("/_matrix/federation/v1/send/") and server.accepting:
                body = json.loads(raw)
                if server.peer_key is None or server.check_x_matrix(self.headers.get("Authorization", ""), "PUT",
                                                                     self.path, body):
                    with server.lock:
                        server.received.extend(body.get("pdus", []))
                        server.transactions.append(self.path)
                    status = 200
                else:
                    status = 401
            out = b'{"pdus":{}}' if status == 200 else b'{"errcode":"M_UNKNOWN"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd




def federation_request(h, server, method, path, body=None, destination="localhost"):
    """A request to hearth (plain HTTP listener) signed by `server` with X-Matrix."""
    headers = {"Authorization": server.x_matrix(method, path, destination, body)}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    status, _, raw = h.request(method, path, body=data, headers=headers)
    return status, json.loads(raw) if raw else None


def join_over_federation(testcase, h, server, room, user):
    """make_join + send_join for `user` of `server`; returns (join event id, send_join answer)."""
    import urllib.parse
    quoted = urllib.parse.quote(room)
    status, body = federation_request(
        h, server, "GET", f"/_matrix/federation/v1/make_join/{quoted}/{urllib.parse.quote(user)}?ver=10&ver=11")
    testcase.assertEqual(status, 200, body)
    join = body["event"]
    join["origin_server_ts"] = int(time.time() * 1000)
    join_id = server.finish_event(join)
    status, body = federation_request(h, server, "PUT", f"/_matrix/federation/v2/send_join/{quoted}/{join_id}", join)
    testcase.assertEqual(status, 200, body)
    return join_id, body


def hearth_verify_key(h):
    """(server name, nacl VerifyKey) from hearth's /_matrix/key/v2/server."""
    status, body = h.get_json("/_matrix/key/v2/server")
    assert status == 200, body
    (key_id, key), = body["verify_keys"].items()
    raw = base64.b64decode(key["key"] + "=" * (-len(key["key"]) % 4))
    return body["server_name"], nacl.signing.VerifyKey(raw), key_id
