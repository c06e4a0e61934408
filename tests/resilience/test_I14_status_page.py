"""I14: the status page had to live on another host so that it stays up when the main
server is down.

hearthd writes a static status page (index.html) and an Atom 1.0 feed (feed.atom) into
ops.status_dir, regenerated from its own health checks when the overall state changes and
on admin notices (`hearthctl notice "text"`, which also works while hearthd is down). The
files are self-contained (no script, no external asset), so a cron job can copy them to
any other web server. Here the data directory is made unwritable (a read-only bind mount,
as in I01): the page and the feed turn critical, naming the path, and recover by themselves.

Defence off (HEARTH_DEFENCE_OFF=1 sets ops.status_page = false): no page is written and
the test fails at its first wait.
"""
import os
import unittest
import xml.etree.ElementTree as ET

from resilience import DEFENCE_OFF, Hearth, read_only_bind, wait_until, with_section

ATOM = "{http://www.w3.org/2005/Atom}"


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class StatusPage(unittest.TestCase):
    def feed_entries(self):
        text = read(os.path.join(self.status_dir, "feed.atom"))
        if not text:
            return []
        root = ET.fromstring(text)  # parses as XML, or the test fails here
        self.assertEqual(root.tag, ATOM + "feed")
        for required in ("title", "id", "updated"):
            self.assertIsNotNone(root.find(ATOM + required), required)
        entries = []
        for e in root.findall(ATOM + "entry"):
            for required in ("title", "id", "updated", "content"):
                self.assertIsNotNone(e.find(ATOM + required), required)
            entries.append({"title": e.find(ATOM + "title").text, "status": e.find(ATOM + "category").get("term"),
                            "content": e.find(ATOM + "content").text or "", "id": e.find(ATOM + "id").text})
        return entries

    def page_state(self):
        html = read(os.path.join(self.status_dir, "index.html"))
        marker = 'data-status="'
        at = html.find(marker)
        return html[at + len(marker):html.index('"', at + len(marker))] if at >= 0 else None

    def test_I14_status_page_and_feed_follow_health_and_notices(self):
        h = Hearth()
        self.addCleanup(h.cleanup)
        # Outside the data directory, which this test makes read-only (and where the page
        # would be copied from to another host anyway).
        self.status_dir = os.path.join(h.dir, "public-status")
        with_section(h, "ops", f'disk_reserve_mib = 0\nstatus_dir = "{self.status_dir}"\nstatus_title = "Example status"\n'
                     + ("status_page = false\n" if DEFENCE_OFF else ""))
        h.start()
        self.addCleanup(h.stop)
        wait_until(lambda: self.page_state() not in (None, "unknown"), timeout=10, what="the status page")
        initial = self.page_state()
        entries = self.feed_entries()
        self.assertTrue(entries, "the first state is an entry")
        self.assertEqual(entries[0]["status"], initial)

        with read_only_bind(h.data_dir):
            wait_until(lambda: self.page_state() == "critical", timeout=10, what="critical on the status page")
            entries = self.feed_entries()
            self.assertEqual(entries[0]["status"], "critical")
            self.assertIn("data_dir", entries[0]["content"])
            self.assertIn(h.data_dir, entries[0]["content"])
            self.assertIn(h.data_dir, read(os.path.join(self.status_dir, "index.html")))
        wait_until(lambda: self.page_state() == initial, timeout=15, what="the status page recovers")
        entries = self.feed_entries()
        self.assertEqual([e["status"] for e in entries[:3]], [initial, "critical", initial])
        self.assertEqual(len({e["id"] for e in entries}), len(entries), "entry ids are unique")

        r = h.ctl("notice", "Planned maintenance tonight at 22:00 UTC <about 30 min>")
        self.assertEqual(r.returncode, 0, r.stderr)
        entries = self.feed_entries()
        self.assertEqual(entries[0]["status"], "notice")
        self.assertEqual(entries[0]["content"], "Planned maintenance tonight at 22:00 UTC <about 30 min>")
        html = read(os.path.join(self.status_dir, "index.html"))
        self.assertIn("Planned maintenance tonight at 22:00 UTC &lt;about 30 min&gt;", html)
        # Plain files for any other host: no script, nothing loaded from elsewhere.
        self.assertNotIn("<script", html.lower())
        self.assertNotIn("src=", html)
        self.assertNotIn("http://", html.replace('xmlns="http://www.w3.org', ""))
        self.assertNotIn("https://", html)

        # With hearthd down, a notice still reaches the page (when it matters most), and
        # the history survives a restart.
        self.assertEqual(h.stop(), 0)
        r = h.ctl("notice", "Down for a disk replacement")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("hearthd is not running", r.stdout)
        self.assertEqual(self.feed_entries()[0]["content"], "Down for a disk replacement")
        h.start()
        wait_until(lambda: self.page_state() == initial, timeout=10, what="the page after a restart")
        contents = [e["content"] for e in self.feed_entries()]
        self.assertIn("Down for a disk replacement", contents)
        self.assertIn("Planned maintenance tonight at 22:00 UTC <about 30 min>", contents)


if __name__ == "__main__":
    unittest.main(verbosity=2)
