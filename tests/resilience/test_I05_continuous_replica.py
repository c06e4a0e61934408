"""I05: the host died; 27 hours of downtime while 750 GB were copied to a new machine.

With `ops.replica_dir` set, hearthd keeps a continuous replica in another directory: a
full backup, then every `replica_interval_seconds` an incremental of what changed (only
the changed 64 KiB chunks of the database). Here: XMPP users exchange messages that the
server acknowledged (XEP-0198 <a/>) and change a roster; once a replica round that began
after those acknowledgements succeeded (hearth_replica_last_success_timestamp_seconds on
/metrics), hearthd is killed with SIGKILL and its whole data directory deleted ("the host
died"). One command, `hearthctl restore --from-replica DIR --data-dir NEW`, rebuilds a data
directory; a new hearthd on other ports serves it: the accounts log in, the roster and the
MAM archive hold the acknowledged data, and the TLS key and the Matrix signing key are the
ones the dead server had. A second test shows a failing replica (its directory gone) as a
warning on /health, /metrics and `hearthctl check`, and the warning clearing once it is back.

Defence off (HEARTH_DEFENCE_OFF=1): no replica is configured, as before this defence; the
restore has nothing to restore from and the first test fails ("2 != 0", "holds no complete
replica chain"); the second times out waiting for the first replica round (there is none, and
/health has no replica check).
"""
import asyncio
import os
import shutil
import tempfile
import time
import unittest

from resilience import DEFENCE_OFF, Hearth, metric, wait_until
from harness import HEARTHCTL
from test_xmpp_client import Client, TIMEOUT
import subprocess

MESSAGES = [f"acknowledged before the crash {i}" for i in range(30)]


class SmClient(Client):
    """A client with XEP-0198: `acked` lists the bodies the server acknowledged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self["xep_0198"].window = 1
        self["xep_0198"].window_counter = 1
        self.acked = []
        self.sm_enabled = asyncio.Event()
        self.add_event_handler("sm_enabled", lambda _: self.sm_enabled.set())
        self.add_event_handler("stanza_acked", self._acked)

    def _acked(self, stanza):
        if stanza.name == "message" and stanza["body"]:
            self.acked.append(stanza["body"])


def replica_config(replica_dir):
    return "" if DEFENCE_OFF else f'replica_dir = "{replica_dir}"\nreplica_interval_seconds = 1\n'


class ContinuousReplica(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.replica_dir = tempfile.mkdtemp(prefix="hearth-replica-")  # "another disk"
        self.addCleanup(shutil.rmtree, self.replica_dir, True)
        self.h = Hearth(config_extra=replica_config(self.replica_dir))
        self.addCleanup(self.h.cleanup)
        self.h.start()
        for name in ("alice", "bob"):
            r = self.h.ctl("user", "add", f"{name}@localhost", stdin=f"{name} secret pw\n")
            self.assertEqual(r.returncode, 0, r.stderr)

    def replica_holds_writes_before(self, t):
        _, _, body = self.h.request("GET", "/metrics")
        done = metric(body.decode(), "hearth_replica_last_success_timestamp_seconds")
        return done is not None and done > t

    async def test_I05_host_dies_and_one_command_restores_a_serving_replacement(self):
        h = self.h
        with open(os.path.join(h.data_dir, "tls", "localhost.key"), "rb") as f:
            tls_key = f.read()
        with open(os.path.join(h.data_dir, "matrix", "signing.key"), "rb") as f:
            signing_key = f.read()
        status, server_keys = h.get_json("/_matrix/key/v2/server")
        self.assertEqual(status, 200)

        alice = SmClient("alice@localhost/desk", "alice secret pw", h.cert_path())
        await alice.login(h.xmpp_port)
        await asyncio.wait_for(alice.sm_enabled.wait(), TIMEOUT)
        await alice.update_roster("bob@localhost", name="Bobby", groups=["Friends"])  # the IQ result is its ack
        for body in MESSAGES:
            alice.send_message(mto="bob@localhost", mbody=body, mtype="chat")
        # The server acknowledges a stanza once it is stored: ask again until every one is.
        await asyncio.wait_for(_until(lambda: sorted(alice.acked) == sorted(MESSAGES),
                                      on_each=alice["xep_0198"].request_ack, step=0.05), TIMEOUT)
        acked_at = time.time()

        if not DEFENCE_OFF:
            wait_until(lambda: self.replica_holds_writes_before(acked_at), timeout=60,
                       what="a replica round that began after the acknowledgements")

        # The host dies: no shutdown, and its disk is gone.
        h.proc.kill()
        h.proc.wait()
        h._close_pipes()
        alice.transport and alice.transport.abort()
        shutil.rmtree(h.data_dir)

        h2 = Hearth()
        self.addCleanup(h2.cleanup)
        started = time.monotonic()
        r = subprocess.run([HEARTHCTL, "restore", "--from-replica", self.replica_dir, "--data-dir", h2.data_dir],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("every checksum verified", r.stdout)
        h2.start()
        self.assertEqual(h2.request("GET", "/health")[0], 200)
        serving_after = time.monotonic() - started
        self.assertNotEqual(h2.xmpp_port, h.xmpp_port)

        with open(os.path.join(h2.data_dir, "tls", "localhost.key"), "rb") as f:
            self.assertEqual(f.read(), tls_key, "the same TLS key")
        with open(os.path.join(h2.data_dir, "matrix", "signing.key"), "rb") as f:
            self.assertEqual(f.read(), signing_key, "the same Matrix signing key")
        status, keys2 = h2.get_json("/_matrix/key/v2/server")
        self.assertEqual(status, 200)
        self.assertEqual(keys2["verify_keys"], server_keys["verify_keys"])

        alice2 = Client("alice@localhost/new", "alice secret pw", h2.cert_path())
        await alice2.login(h2.xmpp_port)
        self.assertEqual(alice2.client_roster["bob@localhost"]["name"], "Bobby")
        self.assertEqual(alice2.client_roster["bob@localhost"]["groups"], ["Friends"])
        bob = Client("bob@localhost/new", "bob secret pw", h2.cert_path())
        await bob.login(h2.xmpp_port)
        archived = []
        async for msg in bob["xep_0313"].iterate(with_jid="alice@localhost", rsm={"max": 100}):
            archived.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        self.assertEqual(sorted(archived), sorted(MESSAGES))
        await alice2.stop()
        await bob.stop()
        self.assertEqual(h2.stop(), 0)
        print(f"\nI05 replica: restore + start until /health answered: {serving_after:.2f} s")

    def test_I05_failing_replica_is_a_warning_on_health_and_check(self):
        h = self.h

        def replica_check():
            status, snap = h.get_json("/health")
            return snap["checks"].get("replica", {"status": "absent"})

        wait_until(lambda: replica_check()["status"] == "ok" and self.replica_holds_writes_before(0),
                   what="the first replica round")
        # The replica's disk goes away.
        moved = self.replica_dir + ".gone"
        os.rename(self.replica_dir, moved)
        self.addCleanup(shutil.rmtree, moved, True)
        wait_until(lambda: replica_check()["status"] == "warning", what="the replica warning on /health")
        check = replica_check()
        self.assertIn("the last replica round failed", check["message"])
        self.assertIn(self.replica_dir, check["message"])
        _, _, body = h.request("GET", "/metrics")
        self.assertEqual(metric(body.decode(), "hearth_replica_failing"), 1)
        r = h.ctl("check")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("WARNING", r.stdout)
        self.assertIn("replica", r.stdout)
        # The live service is unaffected, and the replica recovers by itself.
        self.assertEqual(h.request("GET", "/health")[0], 200)
        os.rename(moved, self.replica_dir)
        wait_until(lambda: replica_check()["status"] == "ok", what="the replica ok again")
        self.assertEqual(h.stop(), 0)


async def _until(predicate, on_each=None, step=0.01):
    while not predicate():
        if on_each:
            on_each()
        await asyncio.sleep(step)


if __name__ == "__main__":
    unittest.main(verbosity=2)
