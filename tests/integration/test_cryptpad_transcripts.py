"""Declarative netflux transcripts: tests/integration/cryptpad/transcripts/*.txt.

Anyone can add a wire-level case without writing Python. Each file runs against a fresh
connection set on one hearthd. Lines:

    # comment
    connect a                 open connection `a`; its IDENT id becomes $a
    a> [1,"JOIN","$chan"]     send a frame ($name is replaced by a variable's value: a
                              string as is, so write "$name"; a number as JSON, $name)
    a< [1,"JACK","$chan"]     the next frame on `a` (server PINGs skipped) must match
    a<hk {"state":1}          the next frame must be a history-keeper message to `a` whose
                              content, parsed as JSON, matches (objects: listed keys only)

In expected frames a string "?name" captures the value into $name the first time and
must equal it afterwards; "?" alone matches anything. Predefined: $chan (32 hex),
$chan2 (32 hex), $eph (34 hex, ephemeral), all fresh per transcript.
"""
import glob
import json
import os
import re
import unittest

from harness import Hearth
from wsclient import WebSocket

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSCRIPTS = sorted(glob.glob(os.path.join(HERE, "cryptpad", "transcripts", "*.txt")))


def substitute(text, env):
    # Strings go in as they are (write "$name" for them), other values as JSON ($name).
    def value(m):
        v = env[m.group(1)]
        return v if isinstance(v, str) else json.dumps(v)
    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", value, text)


def match(expected, actual, env, where):
    if isinstance(expected, str) and expected.startswith("?"):
        name = expected[1:]
        if not name:
            return
        if name in env:
            if env[name] != actual:
                raise AssertionError(f"{where}: ?{name} is {env[name]!r}, got {actual!r}")
        else:
            env[name] = actual
        return
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise AssertionError(f"{where}: expected an object, got {actual!r}")
        for k, v in expected.items():
            if k not in actual:
                raise AssertionError(f"{where}: key {k!r} missing in {actual!r}")
            match(v, actual[k], env, f"{where}.{k}")
        return
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise AssertionError(f"{where}: expected {expected!r}, got {actual!r}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            match(e, a, env, f"{where}[{i}]")
        return
    if expected != actual:
        raise AssertionError(f"{where}: expected {expected!r}, got {actual!r}")


def not_ping(frame):
    return not (isinstance(frame, list) and len(frame) >= 3 and frame[0] == 0 and frame[2] == "PING")


class Transcripts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def run_transcript(self, path):
        env = {"chan": os.urandom(16).hex(), "chan2": os.urandom(16).hex(), "eph": os.urandom(17).hex()}
        conns = {}
        try:
            with open(path) as f:
                lines = f.readlines()
            for number, raw in enumerate(lines, 1):
                line = raw.strip()
                where = f"{os.path.basename(path)}:{number}"
                if not line or line.startswith("#"):
                    continue
                m = re.match(r"^connect (\w+)$", line)
                if m:
                    ws = WebSocket("127.0.0.1", self.h.http_port, "/cryptpad_websocket")
                    conns[m.group(1)] = ws
                    ident = ws.recv()
                    self.assertEqual(ident[:3], [0, "", "IDENT"], where)
                    env[m.group(1)] = ident[3]
                    continue
                m = re.match(r"^(\w+)(>|<hk|<) (.*)$", line)
                if not m:
                    raise AssertionError(f"{where}: cannot read {line!r}")
                name, op, body = m.groups()
                ws = conns[name]
                if op == ">":
                    ws.send_text(substitute(body, env))
                    continue
                frame, _ = ws.recv_until(not_ping)
                expected = json.loads(substitute(body, env))
                if op == "<":
                    match(expected, frame, env, where)
                else:
                    match([0, "?hk", "MSG", env[name], "?"], frame, env, where)
                    match(expected, json.loads(frame[4]), env, where)
        finally:
            for ws in conns.values():
                ws.close()


def make_test(path):
    def test(self):
        self.run_transcript(path)
    return test


for _path in TRANSCRIPTS:
    _name = "test_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(_path))[0])
    setattr(Transcripts, _name, make_test(_path))

if __name__ == "__main__":
    unittest.main()
