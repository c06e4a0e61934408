"""OMEMO end to end through hearth with a real client: two Profanity 0.13 instances (Debian
builds it with OMEMO, libsignal-protocol-c, the eu.siacs.conversations.axolotl namespace)
under tmux. Each generates its keys and publishes its device list and bundle on hearth's
PEP; alice starts an OMEMO session with bob (fetching bob's device list and bundle from
hearth), sends a message, and bob's Profanity shows it decrypted. hearth's archive holds
only the <encrypted/> element, never the text."""
import os
import shutil
import sqlite3
import tempfile
import unittest

from harness import Hearth, wait_until
from test_xmpp_client import TIMEOUT
from test_xmpp_profanity import Tmux

SECRET = "omemo only the two of us can read"


class XmppOmemo(unittest.IsolatedAsyncioTestCase):
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

    async def profanity(self, name):
        home = tempfile.mkdtemp(prefix=f"hearth-omemo-{name}-")
        self.addCleanup(shutil.rmtree, home, True)
        tmux = Tmux(home)
        tmux.socket += f"-{name}"
        self.addCleanup(tmux.stop)
        tmux.start("profanity")
        await tmux.wait_for(r"Type '/help'")
        tmux.type(f"/connect {name}@localhost server 127.0.0.1 port {self.h.xmpp_port} tls force")
        await tmux.wait_for(r"Enter password")
        tmux.type(f"{name} secret pw")
        await tmux.wait_for(r"Fingerprint\s*:\s*[0-9a-f]{40}")
        tmux.type("/tls allow")
        await tmux.wait_for(rf"{name}@localhost/\S+ logged in successfully")
        # Keys, then the device list and bundle published to hearth's PEP; trust new
        # devices without asking (the test cannot compare fingerprints out of band).
        tmux.type("/omemo trustmode blind")
        tmux.type("/omemo gen")
        await tmux.wait_for(r"(?i)OMEMO crytographic materials generated|cryptographic materials generated")
        return tmux

    def pep_nodes(self, who):
        """The PEP nodes holding items for `who` (read from hearth's database)."""
        with sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db")) as db:
            return {r[0] for r in db.execute("SELECT DISTINCT node FROM xmpp_pep_item WHERE owner LIKE ?", (f"{who}%",))}

    async def test_profanity_to_profanity_omemo_message(self):
        alice = await self.profanity("alice")
        bob = await self.profanity("bob")
        # Both devices are on hearth's PEP: the device list and a bundle each.
        for who in ("alice", "bob"):
            def published():
                nodes = self.pep_nodes(who)
                return ("eu.siacs.conversations.axolotl.devicelist" in nodes
                        and any(n.startswith("eu.siacs.conversations.axolotl.bundles:") for n in nodes))
            wait_until(published, timeout=TIMEOUT, what=f"{who}'s OMEMO device list and bundle on PEP")

        bob.type("/msg alice@localhost")  # bob looks at his chat window with alice
        alice.type("/msg bob@localhost")
        alice.type("/omemo start")
        # The session is ready once bob's device list and bundle came back from hearth's PEP
        # and his device was trusted (blind trust says so on the console, window 1).
        alice.type("/win 1")
        await alice.wait_for(r"Blind trust for bob@localhost device \d+")
        alice.type("/win 2")
        await alice.wait_for(r"bob@localhost .*\[OMEMO\]")
        alice.type(SECRET)
        await bob.wait_for(SECRET, timeout=30)

        # What hearth stored for that message: the encrypted element, not the text.
        with sqlite3.connect(os.path.join(self.h.data_dir, "hearth.db")) as db:
            stanzas = [r[0] for r in db.execute("SELECT stanza FROM xmpp_archive")]
        encrypted = [s for s in stanzas if "eu.siacs.conversations.axolotl" in s and "<encrypted" in s]
        self.assertTrue(encrypted, stanzas)
        self.assertFalse([s for s in stanzas if SECRET in s], "hearth saw the plaintext")


if __name__ == "__main__":
    unittest.main()
