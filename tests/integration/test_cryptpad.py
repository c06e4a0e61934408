"""Black-box tests of the CryptPad backend: the netflux wire protocol frame by frame
(a small WebSocket client), then CryptPad's own client libraries (netflux-websocket and
chainpad-netflux from npm, driven by cryptpad/cp_client.js under Node)."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import unittest

from harness import Hearth, wait_until
from wsclient import Closed, WebSocket

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "cryptpad")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def ensure_node_modules():
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules", "chainpad-netflux")):
        return
    npm = shutil.which("npm")
    if not npm:
        raise unittest.SkipTest("npm is not installed (scripts/install-deps.sh installs the test packages)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True, timeout=300)


def not_ping(frame):
    return not (isinstance(frame, list) and len(frame) >= 3 and frame[0] == 0 and frame[2] == "PING")


class Client:
    """One netflux connection."""

    def __init__(self, hearth, receive_buffer=None):
        self.ws = WebSocket("127.0.0.1", hearth.http_port, "/cryptpad_websocket", receive_buffer=receive_buffer)
        ident = self.next()
        assert ident[:3] == [0, "", "IDENT"], ident
        self.id = ident[3]
        self.seq = 0

    def next(self, timeout=10):
        frame, _ = self.ws.recv_until(not_ping, timeout)
        return frame

    def request(self, *parts):
        self.seq += 1
        self.ws.send([self.seq, *parts])
        return self.seq

    def reply_to(self, seq, timeout=10):
        frame, _ = self.ws.recv_until(lambda f: isinstance(f, list) and f and f[0] == seq, timeout)
        return frame

    def join(self, chan):
        """JOIN; returns (JACK, the JOIN frames up to and including our own)."""
        seq = self.request("JOIN", chan)
        jack = self.reply_to(seq)
        joins = []
        while True:
            f = self.next()
            joins.append(f)
            if f[1] == self.id and f[2] == "JOIN":
                return jack, joins

    def hk_messages(self, hk, until, timeout=10):
        """Contents of history-keeper messages, parsed, up to the first for which until() holds."""
        out = []
        while True:
            f = self.next(timeout)
            if f[0] == 0 and f[1] == hk and f[2] == "MSG":
                body = json.loads(f[4])
                out.append(body)
                if until(body):
                    return out

    def close(self):
        self.ws.close()


class WireProtocol(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def client(self):
        c = Client(self.h)
        self.addCleanup(c.close)
        return c

    def test_ident_and_join_order(self):
        a, b = self.client(), self.client()
        self.assertRegex(a.id, HEX32)
        chan = os.urandom(16).hex()
        jack, joins = a.join(chan)
        self.assertEqual(jack, [1, "JACK", chan])
        self.assertEqual(len(joins), 2)
        hk = joins[0][1]
        self.assertRegex(hk, HEX16)
        self.assertEqual(joins[0], [0, hk, "JOIN", chan])
        _, joins_b = b.join(chan)
        self.assertEqual([f[1] for f in joins_b], [hk, a.id, b.id])
        self.assertEqual(a.next(), [0, b.id, "JOIN", chan])
        # Joining again: EJOINED, then the member list again.
        seq = a.request("JOIN", chan)
        self.assertEqual(a.reply_to(seq), [seq, "ERROR", "EJOINED", chan])

    def test_join_null_picks_a_channel(self):
        a = self.client()
        jack, _ = a.join(None)
        self.assertRegex(jack[2], HEX32)

    def test_messages_relayed_to_others_and_acked(self):
        a, b = self.client(), self.client()
        chan = os.urandom(16).hex()
        a.join(chan)
        b.join(chan)
        a.next()  # b's JOIN
        seq = a.request("MSG", chan, "hello")
        self.assertEqual(a.reply_to(seq), [seq, "ACK"])
        self.assertEqual(b.next(), [0, a.id, "MSG", chan, "hello"])
        # Direct message to a user.
        seq = b.request("MSG", a.id, "psst")
        self.assertEqual(b.reply_to(seq), [seq, "ACK"])
        self.assertEqual(a.next(), [0, b.id, "MSG", a.id, "psst"])

    def test_errors(self):
        a, b = self.client(), self.client()
        chan = os.urandom(16).hex()
        seq = a.request("MSG", chan, "x")
        self.assertEqual(a.reply_to(seq), [seq, "ERROR", "enoent", chan])
        seq = a.request("LEAVE", chan, "")
        self.assertEqual(a.reply_to(seq), [seq, "ERROR", "ENOENT", chan])
        b.join(chan)
        seq = a.request("LEAVE", chan, "")
        self.assertEqual(a.reply_to(seq), [seq, "ERROR", "NOT_IN_CHAN", chan])
        seq = a.request("LEAVE", 42)
        self.assertEqual(a.reply_to(seq)[:3], [seq, "ERROR", "EINVAL"])
        # A channel id the store does not accept: plain ERROR, nothing relayed.
        bad = "not/a/valid/channel/id/" + "x" * 20
        b2 = self.client()
        b2.join(bad)
        seq = b2.request("MSG", bad, "x")
        self.assertEqual(b2.reply_to(seq), [seq, "ERROR"])

    def test_ping_and_leave(self):
        a, b = self.client(), self.client()
        seq = a.request("PING")
        self.assertEqual(a.reply_to(seq), [seq, "ACK"])
        chan = os.urandom(16).hex()
        a.join(chan)
        b.join(chan)
        a.next()
        seq = b.request("LEAVE", chan, "bye")
        self.assertEqual(b.reply_to(seq), [seq, "ACK"])
        self.assertEqual(a.next(), [0, b.id, "LEAVE", chan])
        # Disconnecting leaves every channel.
        c = Client(self.h)
        c.join(chan)
        a.next()
        c.close()
        self.assertEqual(a.next(), [0, c.id, "LEAVE", chan])

    def test_non_json_frame_closes(self):
        a = self.client()
        a.ws.send_text("this is not json")
        with self.assertRaises(Closed):
            while True:
                a.ws.recv_text(timeout=10)

    def test_history_keeper(self):
        a = self.client()
        chan = os.urandom(16).hex()
        _, joins = a.join(chan)
        hk = joins[0][1]
        seq = a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": "t1", "metadata": {"owners": []}}]))
        self.assertEqual(a.reply_to(seq), [seq, "ACK"])
        msgs = a.hk_messages(hk, lambda m: isinstance(m, dict) and m.get("state") == 1)
        self.assertEqual(msgs[0]["channel"], chan)  # created metadata echoed
        self.assertIn("created", msgs[0])
        self.assertEqual(msgs[-1], {"state": 1, "channel": chan, "txid": "t1"})
        contents = [f"message number {i:02d} " + "z" * 50 for i in range(5)]
        for c in contents:
            self.assertEqual(a.reply_to(a.request("MSG", chan, c))[1], "ACK")
        # lastKnownHash: from that message inclusive (hash = first 64 characters).
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": "t2", "lastKnownHash": contents[2][:64]}]))
        msgs = a.hk_messages(hk, lambda m: isinstance(m, dict) and m.get("state") == 1)
        self.assertEqual(msgs[0]["channel"], chan)  # metadata first
        lines = [m for m in msgs if isinstance(m, list)]
        self.assertEqual([l[4] for l in lines], contents[2:])
        self.assertEqual(lines[0][:4], ["t2", a.id, "MSG", chan])
        self.assertIsInstance(lines[0][5], int)
        # Unknown hash: EUNKNOWN.
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": "t3", "lastKnownHash": "x" * 64}]))
        msgs = a.hk_messages(hk, lambda m: isinstance(m, dict) and "error" in m)
        self.assertEqual(msgs[-1], {"error": "EUNKNOWN", "channel": chan, "txid": "t3"})
        # Full history.
        a.request("MSG", hk, json.dumps(["GET_FULL_HISTORY", chan]))
        msgs = a.hk_messages(hk, lambda m: m[0] == "FULL_HISTORY_END")
        self.assertEqual([m[1][4] for m in msgs[:-1]], contents)
        self.assertEqual(msgs[-1], ["FULL_HISTORY_END", chan])
        # Range: the 2 lines ending at contents[3].
        seq = a.request("MSG", hk, json.dumps(["GET_HISTORY_RANGE", chan, {"from": contents[3][:64], "count": 2}]))
        self.assertEqual(a.reply_to(seq), [seq, "ERROR", "NO_TXID", hk])
        seq = a.request("MSG", hk, json.dumps(["GET_HISTORY_RANGE", chan, {"txid": "r0", "from": contents[3][:64]}]))
        self.assertEqual(a.reply_to(seq), [seq, "ERROR", "UNSPECIFIED_COUNT", hk])
        a.request("MSG", hk, json.dumps(["GET_HISTORY_RANGE", chan, {"txid": "r1", "from": contents[3][:64], "count": 2}]))
        msgs = a.hk_messages(hk, lambda m: m[0] == "HISTORY_RANGE_END")
        self.assertEqual([m[2][4] for m in msgs[:-1]], contents[2:4])
        self.assertEqual(msgs[-1], ["HISTORY_RANGE_END", "r1", chan])

    def test_checkpoints_start_history_and_duplicates_are_not_stored(self):
        a = self.client()
        chan = os.urandom(16).hex()
        _, joins = a.join(chan)
        hk = joins[0][1]
        # c1 is neither one of the last two checkpoints nor within the last 100 messages.
        sent = ["m1", "cp|AAAA|c1"] + [f"filler {i}" for i in range(110)] + ["cp|BBBB|c2", "m3", "cp|CCCC|c3", "m4"]
        for c in sent:
            self.assertEqual(a.reply_to(a.request("MSG", chan, c))[1], "ACK")
        # The same checkpoint id again: ACKed, not stored.
        self.assertEqual(a.reply_to(a.request("MSG", chan, "cp|CCCC|c3"))[1], "ACK")
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": 7}]))
        msgs = a.hk_messages(hk, lambda m: isinstance(m, dict) and m.get("state") == 1)
        self.assertEqual([m[4] for m in msgs if isinstance(m, list)], ["cp|BBBB|c2", "m3", "cp|CCCC|c3", "m4"])
        self.assertEqual(msgs[-1]["txid"], 7)

    def history_pauses(self):
        _, _, body = self.h.request("GET", "/metrics")
        m = re.search(r"^hearth_cryptpad_history_pauses_total (\d+)", body.decode(), re.M)
        return int(m.group(1)) if m else 0

    def test_history_larger_than_the_send_budget_is_paced_not_dropped(self):
        # 160 messages of 100 kB: 16 MB of history to a reader with a small receive
        # buffer, far more than the 4 MiB a connection may have queued; the history keeper
        # must pause instead of overflowing it (which closes the connection).
        a = self.client()
        chan = os.urandom(16).hex()
        _, joins = a.join(chan)
        hk = joins[0][1]
        count = 160
        for i in range(count):
            body = f"{i:04d}" + "x" * 100_000
            self.assertEqual(a.reply_to(a.request("MSG", chan, body), timeout=30)[1], "ACK")
        pauses_before = self.history_pauses()
        reader = Client(self.h, receive_buffer=16384)
        self.addCleanup(reader.close)
        reader.join(chan)
        reader.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": "big"}]))
        # Do not read until the server has had to pause the reply.
        wait_until(lambda: self.history_pauses() > pauses_before, timeout=30, what="a paused history reply")
        msgs = reader.hk_messages(hk, lambda m: isinstance(m, dict) and m.get("state") == 1, timeout=60)
        lines = [m for m in msgs if isinstance(m, list)]
        self.assertEqual([l[4][:4] for l in lines], [f"{i:04d}" for i in range(count)])

    def test_anonymous_rpc(self):
        a = self.client()
        chan = os.urandom(16).hex()
        _, joins = a.join(chan)
        hk = joins[0][1]
        a.request("MSG", hk, json.dumps(["tx1", ["IS_NEW_CHANNEL", chan]]))
        self.assertEqual(a.hk_messages(hk, lambda m: True)[-1], ["tx1", None, {"isNew": True}, None])
        a.reply_to(a.request("MSG", chan, "x" * 100))
        a.request("MSG", hk, json.dumps(["tx2", ["GET_FILE_SIZE", chan]]))
        self.assertEqual(a.hk_messages(hk, lambda m: True)[-1], ["tx2", None, 100, None])
        a.request("MSG", hk, json.dumps(["tx3", ["NO_SUCH_COMMAND", None]]))
        self.assertEqual(a.hk_messages(hk, lambda m: True)[-1], ["tx3", "ERROR", "INVALID_RPC_CALL"])

    def test_write_private_message(self):
        a, b = self.client(), self.client()
        chan = os.urandom(16).hex()
        _, joins = a.join(chan)
        hk = joins[0][1]
        b.request("MSG", hk, json.dumps(["w1", ["WRITE_PRIVATE_MESSAGE", [chan, "for the mailbox"]]]))
        reply = b.hk_messages(hk, lambda m: True)[-1]
        self.assertEqual(reply[:2], ["w1", None])
        self.assertIsInstance(reply[2], int)
        self.assertEqual(a.next(), [0, None, "MSG", chan, "for the mailbox"])
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": "h"}]))
        msgs = a.hk_messages(hk, lambda m: isinstance(m, dict) and m.get("state") == 1)
        self.assertEqual([m[1:5] for m in msgs if isinstance(m, list)], [[None, "MSG", chan, "for the mailbox"]])

    def test_api_config_and_broadcast(self):
        status, headers, body = self.h.request("GET", "/api/config")
        self.assertEqual(status, 200)
        text = body.decode()
        config = json.loads(text[27:-5])  # CryptPad's own comment: "extract JSON using slice(27,-5)"
        self.assertEqual(config["websocketPath"], "/cryptpad_websocket")
        self.assertEqual(config["defaultStorageLimit"], 50 * 1024 * 1024)
        status, _, body = self.h.request("GET", "/api/broadcast")
        self.assertEqual(status, 200)
        broadcast = json.loads(body.decode()[27:-5])
        self.assertEqual(set(broadcast), {"curvePublic", "lastBroadcastHash", "surveyURL", "maintenance"})
        # The websocket path without an Upgrade header.
        self.assertEqual(self.h.request("GET", "/cryptpad_websocket")[0], 426)


class IdleConnections(unittest.TestCase):
    def test_idle_connection_is_pinged_then_closed(self):
        h = Hearth("[cryptpad]\nping_after_seconds = 1\nidle_timeout_seconds = 3\n").start()
        self.addCleanup(h.cleanup)
        self.addCleanup(h.stop)
        ws = WebSocket("127.0.0.1", h.http_port, "/cryptpad_websocket")
        self.addCleanup(ws.close)
        ws.recv()  # IDENT
        ping = ws.recv(timeout=10)
        self.assertEqual(ping[:3], [0, "", "PING"])
        with self.assertRaises(Closed):
            while True:
                ws.recv(timeout=20)


class Disabled(unittest.TestCase):
    def test_disabled_backend_serves_nothing(self):
        h = Hearth("[cryptpad]\nenabled = false\n").start()
        self.addCleanup(h.cleanup)
        self.addCleanup(h.stop)
        self.assertEqual(h.request("GET", "/api/config")[0], 404)
        self.assertEqual(h.request("GET", "/cryptpad_websocket")[0], 404)
        self.assertNotIn("cryptpad_websocket", h.stdout())


class ExpiringChannels(unittest.TestCase):
    def test_expired_channel_is_refused_and_members_are_told(self):
        h = Hearth("[cryptpad]\nping_after_seconds = 3\n").start()  # the sweep runs every second
        self.addCleanup(h.cleanup)
        self.addCleanup(h.stop)
        a = Client(h)
        self.addCleanup(a.close)
        chan = os.urandom(16).hex()
        _, joins = a.join(chan)
        hk = joins[0][1]
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": 1, "metadata": {"expire": 1}}]))
        created = a.hk_messages(hk, lambda m: isinstance(m, dict) and "expire" in m)[-1]
        self.assertEqual(created["expire"], created["created"] + 1000)
        a.hk_messages(hk, lambda m: isinstance(m, dict) and m.get("state") == 1)
        # Within a sweep after the expiry: {error: EEXPIRED} from the history keeper.
        notice, _ = a.ws.recv_until(lambda f: f[:2] == [0, hk] and "EEXPIRED" in f[4], timeout=20)
        self.assertEqual(json.loads(notice[4]), {"error": "EEXPIRED", "channel": chan})
        self.assertEqual(a.reply_to(a.request("MSG", chan, "too late")), [a.seq, "ERROR"])
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": 2}]))
        self.assertEqual(a.hk_messages(hk, lambda m: isinstance(m, dict) and "error" in m)[-1],
                         {"error": "EEXPIRED", "channel": chan})
        # The expired channel is archived in place (placeholder EXPIRED) by the periodic task,
        # and still answers EEXPIRED.
        def placeholder():
            db = sqlite3.connect(f"file:{h.data_dir}/hearth.db?mode=ro", uri=True)
            try:
                row = db.execute("SELECT deleted FROM cryptpad_channels WHERE channel = ?", (chan,)).fetchone()
            finally:
                db.close()
            return row and row[0]
        self.assertEqual(wait_until(placeholder, what="the EXPIRED placeholder"), "EXPIRED")
        a.request("MSG", hk, json.dumps(["GET_HISTORY", chan, {"txid": 3}]))
        self.assertEqual(a.hk_messages(hk, lambda m: isinstance(m, dict) and "error" in m)[-1],
                         {"error": "EEXPIRED", "channel": chan})
        a.request("MSG", hk, json.dumps(["tx-new", ["IS_NEW_CHANNEL", chan]]))
        reply = a.hk_messages(hk, lambda m: isinstance(m, list) and m[0] == "tx-new")[-1]
        self.assertEqual(reply[2], {"isNew": False, "reason": "EXPIRED"})


class ClientLibraries(unittest.TestCase):
    """chainpad-netflux and netflux-websocket, as CryptPad's web app uses them."""

    @classmethod
    def setUpClass(cls):
        ensure_node_modules()
        cls.node = shutil.which("node")
        if not cls.node:
            raise unittest.SkipTest("node is not installed")
        cls.h = Hearth("[cryptpad]\nstorage_limit_bytes = 100000\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def run_node(self, scenario, *args):
        url = f"ws://127.0.0.1:{self.h.http_port}/cryptpad_websocket"
        p = subprocess.run([self.node, "cp_client.js", scenario, url, *args], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def stored_messages(self, chan):
        db = sqlite3.connect(f"file:{self.h.data_dir}/hearth.db?mode=ro", uri=True)
        try:
            return [r[0] for r in db.execute("SELECT content FROM cryptpad_messages WHERE channel = ? ORDER BY seq", (chan,))]
        finally:
            db.close()

    def test_exchange_history_and_restart(self):
        r = self.run_node("exchange")
        self.assertEqual(r["b_received"], ["hello from a", "second from a"])
        self.assertEqual(r["a_received"], ["hello from b"])
        self.assertEqual(r["c_history"], ["hello from a", "hello from b", "second from a"])
        self.assertEqual(len(r["hk"]), 1)
        self.assertEqual(self.stored_messages(r["channel"]), ["hello from a", "hello from b", "second from a"])
        # Data survives a restart.
        self.h.stop()
        self.h.start()
        after = self.run_node("history", r["channel"])
        self.assertEqual(after["history"], ["hello from a", "hello from b", "second from a"])

    def test_signed_channel_rejects_a_bad_signature(self):
        r = self.run_node("signed")
        self.assertTrue(r["rejected"])
        self.assertEqual(r["later_history"], ["signed one", "signed two"])
        self.assertEqual(r["metadata"]["validateKey"], r["validateKey"])
        self.assertEqual(len(self.stored_messages(r["channel"])), 2)

    def test_ephemeral_channel_is_relayed_not_stored(self):
        r = self.run_node("ephemeral")
        self.assertEqual(r["relayed"], ["cursor at 12"])
        self.assertEqual(r["later_history"], [])
        self.assertEqual(self.stored_messages(r["channel"]), [])

    def test_authenticated_rpc_pins_and_metadata(self):
        r = self.run_node("rpc")
        self.assertEqual(r["no_cookie"], "NO_COOKIE")
        self.assertEqual(r["bad_signature"], "INVALID_SIGNATURE_OR_PUBLIC_KEY")
        self.assertEqual(r["hash_after_pin"], r["expected_hash"])
        self.assertEqual(r["pins"], sorted(r["pinned"]))
        self.assertEqual(r["limit"][0], 100000)
        self.assertGreater(r["total_size"], 0)
        self.assertEqual(r["total_size"], r["channel_size"])  # the other pinned channel is empty
        self.assertEqual(r["over_limit"], "E_OVER_LIMIT")
        self.assertEqual(r["hash_after_reset"], r["expected_reset_hash"])
        self.assertEqual(r["restricted_join_error"], "ERESTRICTED")
        self.assertTrue(r["owner_can_join"])
        self.assertEqual(r["trim"], "ok")
        self.assertEqual(r["after_trim"], ["message two", "message three"])
        self.assertEqual(r["stranger_remove"], "INSUFFICIENT_PERMISSIONS")
        self.assertEqual(r["remove"], "ok")
        self.assertEqual(r["watcher_error"]["error"], "EDELETED")
        self.assertEqual(r["watcher_error"]["message"], "gone")
        self.assertEqual(r["late_error"]["error"], "EDELETED")


if __name__ == "__main__":
    unittest.main()
