"""XEP-0198 stream management with slixmpp's xep_0198 plugin: acks, resumption after a
dropped connection, and nothing lost when a session is never resumed."""
import asyncio
import os
import sqlite3
import unittest

from harness import Hearth
from test_xmpp_client import Client, next_item, TIMEOUT, wait_for_condition


class SmClient(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0198")
        self.sm_enabled = asyncio.Event()
        self.resumed = asyncio.Event()
        self.add_event_handler("sm_enabled", lambda _: self.sm_enabled.set())
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())

    def drop_connection(self):
        """What a phone losing its network looks like to the server: no stream close."""
        self.transport.abort()


class StreamManagement(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth()
        # resume_timeout_seconds lives in the [xmpp] section the harness writes.
        with open(cls.h.config_path) as f:
            text = f.read()
        with open(cls.h.config_path, "w") as f:
            f.write(text.replace("[xmpp]\n", "[xmpp]\nresume_timeout_seconds = 3\n"))
        cls.h.start()
        cls.h.add_users("mobile", "friend")

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def client(self, cls, name, resource="test"):
        c = cls(f"{name}@localhost/{resource}", f"{name} secret pw", self.h.cert_path())
        self.addAsyncCleanup(self._stop, c)
        return c

    async def _stop(self, c):
        if c.is_connected():
            await c.stop()

    def offline_count(self, owner):
        with sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db")) as db:
            return db.execute("SELECT count(*) FROM xmpp_offline WHERE owner=?", (owner,)).fetchone()[0]

    async def test_resume_after_dropped_connection_delivers_what_was_sent_meanwhile(self):
        m = self.client(SmClient, "mobile")
        f = self.client(Client, "friend")
        await m.login(self.h.xmpp_port)
        await asyncio.wait_for(m.sm_enabled.wait(), TIMEOUT)
        await f.login(self.h.xmpp_port)
        f.send_message(mto="mobile@localhost", mbody="before the tunnel", mtype="chat")
        await next_item(m.messages, lambda msg: msg["body"] == "before the tunnel")

        gone = asyncio.ensure_future(m.wait_until("disconnected", TIMEOUT))
        m.drop_connection()
        await gone
        f.send_message(mto="mobile@localhost", mbody="while in the tunnel", mtype="chat")
        # The session is detached, not gone: nothing went to offline storage.
        await asyncio.sleep(0)
        m.connect(address=("127.0.0.1", self.h.xmpp_port))
        await asyncio.wait_for(m.resumed.wait(), TIMEOUT)
        msg = await next_item(m.messages, lambda msg: msg["body"] == "while in the tunnel")
        self.assertEqual(str(msg["from"]), "friend@localhost/test")
        self.assertEqual(self.offline_count("mobile@localhost"), 0)
        await asyncio.get_running_loop().run_in_executor(
            None, self.h.wait_for_log, "event=xmpp.sm_resumed jid=mobile@localhost/test")

    async def test_unresumed_session_keeps_its_messages_in_offline_storage(self):
        m = self.client(SmClient, "mobile", resource="phone2")
        f = self.client(Client, "friend", resource="desk2")
        await m.login(self.h.xmpp_port)
        await asyncio.wait_for(m.sm_enabled.wait(), TIMEOUT)
        await f.login(self.h.xmpp_port)
        gone = asyncio.ensure_future(m.wait_until("disconnected", TIMEOUT))
        m.drop_connection()
        await gone
        f.send_message(mto="mobile@localhost/phone2", mbody="never acknowledged", mtype="chat")
        # After resume_timeout_seconds the session ends and the unacknowledged message is
        # stored for the account instead of being lost.
        await wait_for_condition(lambda: self.offline_count("mobile@localhost") >= 1, timeout=TIMEOUT,
                                 what="unacknowledged message moved to offline storage")
        fresh = self.client(Client, "mobile", resource="laptop")
        await fresh.login(self.h.xmpp_port)
        msg = await next_item(fresh.messages, lambda msg: msg["body"] == "never acknowledged")
        self.assertEqual(str(msg["from"]), "friend@localhost/desk2")


if __name__ == "__main__":
    unittest.main(verbosity=2)
