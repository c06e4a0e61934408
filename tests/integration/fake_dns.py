"""A tiny authoritative DNS responder on loopback UDP for tests that need a server (Prosody)
to resolve made-up domains: A and SRV records from dictionaries, an empty NOERROR answer
for other types of known names, NXDOMAIN for the rest. Queries are bounded (512 bytes,
one question); anything malformed is ignored."""
import socket
import struct
import threading

TYPE_A, TYPE_SRV = 1, 33


def _read_name(data, pos):
    labels = []
    for _ in range(128):
        n = data[pos]
        pos += 1
        if n == 0:
            return ".".join(labels).lower(), pos
        if n & 0xC0:
            raise ValueError("compressed names are not expected in questions")
        labels.append(data[pos:pos + n].decode("ascii"))
        pos += n
    raise ValueError("name too long")


def _name(text):
    out = b""
    for label in text.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


class FakeDns:
    def __init__(self, a=None, srv=None, host="127.0.0.1"):
        self.a = {k.lower(): v for k, v in (a or {}).items()}            # name -> "1.2.3.4"
        self.srv = {k.lower(): v for k, v in (srv or {}).items()}        # "_svc._tcp.name" -> [(prio, weight, port, target)]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address = self.sock.getsockname()
        self.queries = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self):
        self.sock.close()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            try:
                reply = self._answer(data)
            except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                continue
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                return

    def _answer(self, data):
        qid, flags, qd = struct.unpack(">HHH", data[:6])
        if qd != 1:
            raise ValueError("one question")
        name, pos = _read_name(data, 12)
        qtype, qclass = struct.unpack(">HH", data[pos:pos + 4])
        question = data[12:pos + 4]
        self.queries.append((name, qtype))
        answers = []
        if qtype == TYPE_A and name in self.a:
            answers.append(struct.pack(">HHHIH", 0xC00C, TYPE_A, 1, 60, 4) + socket.inet_aton(self.a[name]))
        elif qtype == TYPE_SRV and name in self.srv:
            for prio, weight, port, target in self.srv[name]:
                rdata = struct.pack(">HHH", prio, weight, port) + _name(target)
                answers.append(struct.pack(">HHHIH", 0xC00C, TYPE_SRV, 1, 60, len(rdata)) + rdata)
        known = name in self.a or name in self.srv
        rcode = 0 if known else 3
        header = struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x0080 | rcode, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)
