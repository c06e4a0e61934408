"""End-to-end encryption through hearthd with a real E2E client: matrix-nio with
libolm (Debian python3-matrix-nio, python3-olm). Two people upload device and one-time
keys, share an encrypted room (m.room.encryption), Alice's client claims Bob's one-time
key, sends him the Megolm room key as an Olm-encrypted to-device message through hearthd,
and Bob's client decrypts her message; then the other way round. Plain HTTP checks the
rules clients rely on: signature checks, fallback keys, atomic claims, to-device
idempotency and deletion once acknowledged, device-list changes, cross-signing with UIA,
device deletion with UIA."""
import asyncio
import base64
import json
import re
import tempfile
import unittest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nio import (AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse, MegolmEvent, RoomCreateResponse,
                 RoomKeyEvent, RoomMessageText, RoomSendResponse, SyncResponse)

from harness import Hearth

TIMEOUT = 20


def b64(data):
    return base64.b64encode(data).decode().rstrip("=")


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(obj, user_id, key_id, private_key):
    """Signs obj (without signatures/unsigned) as the spec's "Signing JSON"."""
    bare = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    sig = b64(private_key.sign(canonical(bare)))
    obj.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = sig
    return obj


def public(private_key):
    from cryptography.hazmat.primitives import serialization
    return b64(private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class MatrixE2E(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.stores = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()
        cls.stores.cleanup()

    def setUp(self):
        self.clients = []

    async def asyncTearDown(self):
        for c in self.clients:
            await c.close()

    def base(self):
        return f"http://127.0.0.1:{self.h.http_port}"

    def api(self, method, path, body=None, token=None):
        return self.h.matrix_api(method, path, body, token)

    def user(self, name, password="secret password"):
        r = self.h.ctl("user", "add", f"{name}@localhost", stdin=password + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)

    def login(self, name, password="secret password", device=None):
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password}
        if device:
            body["device_id"] = device
        s, b = self.api("POST", "/login", body)
        self.assertEqual(s, 200, b)
        return b["access_token"], b["device_id"]

    async def nio_client(self, name, password="secret password"):
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        c = AsyncClient(self.base(), f"@{name}:localhost", store_path=self.stores.name, config=config)
        self.clients.append(c)
        r = await c.login(password, device_name=f"{name}'s laptop")
        self.assertIsInstance(r, LoginResponse, r)
        return c

    async def sync(self, c):
        """One sync, then the key maintenance a client does after it (upload, query, claim)."""
        r = await asyncio.wait_for(c.sync(timeout=0), TIMEOUT)
        self.assertIsInstance(r, SyncResponse, r)
        if c.should_upload_keys:
            up = await c.keys_upload()
            self.assertFalse(hasattr(up, "status_code") and up.status_code, up)
        if c.should_query_keys:
            await c.keys_query()
        return r

    # -- a real client ---------------------------------------------------------------
    async def test_encrypted_room_with_nio(self):
        self.user("alice")
        self.user("bob")
        alice = await self.nio_client("alice")
        bob = await self.nio_client("bob")
        await self.sync(alice)
        await self.sync(bob)
        # Both devices' keys are on the server, self-signed; one-time keys counted.
        s, q = self.api("POST", "/keys/query", {"device_keys": {"@bob:localhost": []}},
                        token=alice.access_token)
        self.assertEqual(s, 200, q)
        self.assertIn(bob.device_id, q["device_keys"]["@bob:localhost"])
        self.assertEqual(q["device_keys"]["@bob:localhost"][bob.device_id]["keys"][f"ed25519:{bob.device_id}"],
                         bob.olm.account.identity_keys["ed25519"])
        r = await self.sync(bob)
        self.assertGreater(bob.olm.uploaded_key_count, 0)

        created = await alice.room_create(
            name="Secrets", invite=["@bob:localhost"],
            initial_state=[{"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        self.assertIsInstance(created, RoomCreateResponse, created)
        room_id = created.room_id
        await self.sync(bob)
        joined = await bob.join(room_id)
        self.assertIsInstance(joined, JoinResponse, joined)
        await self.sync(bob)
        # Bob joining makes him appear in Alice's device_lists.changed: her client queries his keys.
        r = await self.sync(alice)
        self.assertTrue(alice.rooms[room_id].encrypted)
        self.assertIn(bob.device_id, alice.device_store["@bob:localhost"])

        # Alice sends: her client claims one of Bob's one-time keys, shares the room key with
        # him as an Olm to-device message, and sends the Megolm-encrypted event.
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "the cake is a lie"},
                                     ignore_unverified_devices=True)
        self.assertIsInstance(sent, RoomSendResponse, sent)
        s, raw = self.api("GET", f"/rooms/{room_id}/event/{sent.event_id}", token=alice.access_token)
        self.assertEqual(raw["type"], "m.room.encrypted")
        self.assertNotIn("the cake", json.dumps(raw))

        r = await self.sync(bob)
        room_keys = [e for e in r.to_device_events if isinstance(e, RoomKeyEvent)]
        self.assertEqual(len(room_keys), 1, r.to_device_events)
        self.assertEqual(room_keys[0].sender, "@alice:localhost")
        self.assertEqual(room_keys[0].room_id, room_id)
        texts = [e for e in r.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)]
        undecrypted = [e for e in r.rooms.join[room_id].timeline.events if isinstance(e, MegolmEvent)]
        self.assertEqual(undecrypted, [])
        self.assertEqual([t.body for t in texts], ["the cake is a lie"])
        self.assertTrue(texts[0].decrypted)

        # The to-device message is gone once Bob's next sync acknowledged it.
        r = await self.sync(bob)
        self.assertEqual([e for e in r.to_device_events if isinstance(e, RoomKeyEvent)], [])

        # And back: Bob's client shares his own room key with Alice's device.
        await self.sync(bob)
        sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "no, it is real"},
                                   ignore_unverified_devices=True)
        self.assertIsInstance(sent, RoomSendResponse, sent)
        r = await self.sync(alice)
        events = r.rooms.join[room_id].timeline.events
        self.assertEqual([e for e in events if isinstance(e, MegolmEvent)], [])  # nothing left undecrypted
        texts = [e for e in events if isinstance(e, RoomMessageText)]
        self.assertEqual([t.body for t in texts][-1], "no, it is real")
        self.assertEqual(texts[-1].sender, "@bob:localhost")
        self.assertTrue(texts[-1].decrypted)

    # -- the rules, over plain HTTP ------------------------------------------------------
    def device_keys(self, user_id, device, key):
        dk = {"user_id": user_id, "device_id": device,
              "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
              "keys": {f"ed25519:{device}": public(key), f"curve25519:{device}": b64(b"c" * 32)}}
        return sign(dk, user_id, f"ed25519:{device}", key)

    def test_keys_claim_fallback_and_signatures(self):
        self.user("carol")
        self.user("dave")
        token, device = self.login("carol")
        dave, _ = self.login("dave")
        key = Ed25519PrivateKey.generate()
        # A device key signed by another key is refused.
        bad = self.device_keys("@carol:localhost", device, key)
        bad["keys"][f"ed25519:{device}"] = public(Ed25519PrivateKey.generate())
        s, b = self.api("POST", "/keys/upload", {"device_keys": bad}, token=token)
        self.assertEqual((s, b["errcode"]), (400, "M_INVALID_SIGNATURE"))
        s, b = self.api("POST", "/keys/upload", {
            "device_keys": self.device_keys("@carol:localhost", device, key),
            "one_time_keys": {"signed_curve25519:AAAAA1": {"key": "k1"}, "signed_curve25519:AAAAA2": {"key": "k2"}},
            "fallback_keys": {"signed_curve25519:FB": {"key": "fb", "fallback": True}}}, token=token)
        self.assertEqual(s, 200, b)
        self.assertEqual(b["one_time_key_counts"], {"signed_curve25519": 2})
        s, b = self.api("GET", "/sync", token=token)
        self.assertEqual(b["device_one_time_keys_count"], {"signed_curve25519": 2})
        self.assertEqual(b["device_unused_fallback_key_types"], ["signed_curve25519"])
        # Each claim takes a different one-time key; then the fallback key, again and again.
        claimed = []
        for _ in range(4):
            s, b = self.api("POST", "/keys/claim",
                            {"one_time_keys": {"@carol:localhost": {device: "signed_curve25519"}}}, token=dave)
            self.assertEqual(s, 200, b)
            claimed.append(b["one_time_keys"]["@carol:localhost"][device])
        self.assertEqual(claimed[0], {"signed_curve25519:AAAAA1": {"key": "k1"}})
        self.assertEqual(claimed[1], {"signed_curve25519:AAAAA2": {"key": "k2"}})
        self.assertEqual(claimed[2], claimed[3])
        self.assertEqual(claimed[2], {"signed_curve25519:FB": {"key": "fb", "fallback": True}})
        s, b = self.api("GET", "/sync", token=token)
        self.assertEqual(b["device_one_time_keys_count"], {})
        self.assertEqual(b["device_unused_fallback_key_types"], [])

    def test_to_device_is_idempotent_and_deleted_once_acknowledged(self):
        self.user("erin")
        self.user("frank")
        erin, _ = self.login("erin")
        frank, frank_dev = self.login("frank")
        s, first = self.api("GET", "/sync", token=frank)
        msg = {"messages": {"@frank:localhost": {frank_dev: {"hello": "there"}}}}
        for _ in range(2):  # the retry with the same transaction id is not delivered twice
            s, b = self.api("PUT", "/sendToDevice/m.test/txn1", msg, token=erin)
            self.assertEqual(s, 200, b)
        s, b = self.api("GET", "/sync?since=" + first["next_batch"], token=frank)
        self.assertEqual(b["to_device"]["events"],
                         [{"sender": "@erin:localhost", "type": "m.test", "content": {"hello": "there"}}])
        # Repeating the same since token gets them again (not acknowledged yet)...
        s, again = self.api("GET", "/sync?since=" + first["next_batch"], token=frank)
        self.assertEqual(len(again["to_device"]["events"]), 1)
        # ...the next token acknowledges them: gone, even for the old token.
        s, later = self.api("GET", "/sync?since=" + b["next_batch"], token=frank)
        self.assertEqual(later["to_device"]["events"], [])
        s, old = self.api("GET", "/sync?since=" + first["next_batch"], token=frank)
        self.assertEqual(old["to_device"]["events"], [])

    def test_device_lists_cross_signing_and_device_deletion(self):
        self.user("gina")
        self.user("hank")
        gina, gina_dev = self.login("gina")
        hank, hank_dev = self.login("hank")
        s, room = self.api("POST", "/createRoom", {"invite": ["@hank:localhost"]}, token=gina)
        self.assertEqual(s, 200, room)
        s, b = self.api("POST", f"/join/{room['room_id']}", {}, token=hank)
        self.assertEqual(s, 200, b)
        s, base = self.api("GET", "/sync", token=gina)
        # Hank uploads device keys: Gina's next sync lists him as changed, as does /keys/changes.
        key = Ed25519PrivateKey.generate()
        s, b = self.api("POST", "/keys/upload", {"device_keys": self.device_keys("@hank:localhost", hank_dev, key)},
                        token=hank)
        self.assertEqual(s, 200, b)
        s, b = self.api("GET", "/sync?timeout=10000&since=" + base["next_batch"], token=gina)
        self.assertIn("@hank:localhost", b["device_lists"]["changed"])
        s, ch = self.api("GET", f"/keys/changes?from={base['next_batch']}&to={b['next_batch']}", token=gina)
        self.assertIn("@hank:localhost", ch["changed"])

        # Cross-signing: the first upload needs no UIA; replacing the master key does.
        master, self_signing = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        mk = {"user_id": "@hank:localhost", "usage": ["master"], "keys": {f"ed25519:{public(master)}": public(master)}}
        ssk = sign({"user_id": "@hank:localhost", "usage": ["self_signing"],
                    "keys": {f"ed25519:{public(self_signing)}": public(self_signing)}},
                   "@hank:localhost", f"ed25519:{public(master)}", master)
        s, b = self.api("POST", "/keys/device_signing/upload", {"master_key": mk, "self_signing_key": ssk}, token=hank)
        self.assertEqual(s, 200, b)
        other = Ed25519PrivateKey.generate()
        mk2 = {"user_id": "@hank:localhost", "usage": ["master"], "keys": {f"ed25519:{public(other)}": public(other)}}
        s, b = self.api("POST", "/keys/device_signing/upload", {"master_key": mk2}, token=hank)
        self.assertEqual(s, 401, b)
        self.assertEqual(b["flows"], [{"stages": ["m.login.password"]}])
        # The self-signing key signs the device: the signature is stored and served.
        dk = self.device_keys("@hank:localhost", hank_dev, key)
        dk["signatures"] = {}
        sign(dk, "@hank:localhost", f"ed25519:{public(self_signing)}", self_signing)
        s, b = self.api("POST", "/keys/signatures/upload", {"@hank:localhost": {hank_dev: dk}}, token=hank)
        self.assertEqual((s, b["failures"]), (200, {}))
        s, q = self.api("POST", "/keys/query", {"device_keys": {"@hank:localhost": []}}, token=gina)
        self.assertIn(f"ed25519:{public(self_signing)}",
                      q["device_keys"]["@hank:localhost"][hank_dev]["signatures"]["@hank:localhost"])
        self.assertEqual(q["master_keys"]["@hank:localhost"]["keys"], mk["keys"])
        self.assertIn("@hank:localhost", q["self_signing_keys"])
        self.assertNotIn("@hank:localhost", q["user_signing_keys"])  # only for oneself

        # Deleting a device needs the password (UIA), then its keys are gone.
        s, b = self.api("DELETE", f"/devices/{hank_dev}", {}, token=hank)
        self.assertEqual(s, 401, b)
        s, b = self.api("DELETE", f"/devices/{hank_dev}",
                        {"auth": {"type": "m.login.password", "session": b["session"], "password": "wrong",
                                  "identifier": {"type": "m.id.user", "user": "hank"}}}, token=hank)
        self.assertEqual((s, b.get("errcode")), (401, "M_FORBIDDEN"))
        s, b = self.api("DELETE", f"/devices/{hank_dev}",
                        {"auth": {"type": "m.login.password", "password": "secret password",
                                  "identifier": {"type": "m.id.user", "user": "hank"}}}, token=hank)
        self.assertEqual(s, 200, b)
        s, q = self.api("POST", "/keys/query", {"device_keys": {"@hank:localhost": []}}, token=gina)
        self.assertEqual(q["device_keys"]["@hank:localhost"], {})
        s, b = self.api("GET", "/account/whoami", token=hank)
        self.assertEqual(s, 401)

        # Hank leaves the room: Gina's sync says he left her device lists.
        hank, _ = self.login("hank")
        s, base = self.api("GET", "/sync", token=gina)
        s, b = self.api("POST", f"/rooms/{room['room_id']}/leave", {}, token=hank)
        self.assertEqual(s, 200, b)
        s, b = self.api("GET", "/sync?since=" + base["next_batch"], token=gina)
        self.assertIn("@hank:localhost", b["device_lists"]["left"])

    def test_room_key_backup(self):
        self.user("iris")
        token, _ = self.login("iris")
        s, b = self.api("GET", "/room_keys/version", token=token)
        self.assertEqual((s, b["errcode"]), (404, "M_NOT_FOUND"))
        alg = "m.megolm_backup.v1.curve25519-aes-sha2"
        s, b = self.api("POST", "/room_keys/version", {"algorithm": alg, "auth_data": {"public_key": "pk1"}}, token=token)
        self.assertEqual(s, 200, b)
        v1 = b["version"]
        s, b = self.api("GET", "/room_keys/version", token=token)
        self.assertEqual(b, {"algorithm": alg, "auth_data": {"public_key": "pk1"}, "count": 0, "etag": b["etag"],
                             "version": v1})

        def key(fmi, fc, verified, tag):
            return {"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
                    "session_data": {"ciphertext": tag}}
        s, b = self.api("PUT", f"/room_keys/keys/!r:localhost/S1?version={v1}", key(5, 0, False, "a"), token=token)
        self.assertEqual((s, b["count"]), (200, 1))
        etag = b["etag"]
        # A worse copy (higher first_message_index) does not replace it, the etag stays.
        s, b = self.api("PUT", f"/room_keys/keys/!r:localhost?version={v1}",
                        {"sessions": {"S1": key(9, 0, False, "worse")}}, token=token)
        self.assertEqual((b["count"], b["etag"]), (1, etag))
        # A verified copy wins even with a higher index; then a lower index wins among verified.
        self.api("PUT", f"/room_keys/keys?version={v1}",
                 {"rooms": {"!r:localhost": {"sessions": {"S1": key(7, 0, True, "verified"),
                                                          "S2": key(0, 0, False, "other")}}}}, token=token)
        s, b = self.api("GET", f"/room_keys/keys/!r:localhost/S1?version={v1}", token=token)
        self.assertEqual(b["session_data"], {"ciphertext": "verified"})
        s, b = self.api("PUT", f"/room_keys/keys/!r:localhost/S1?version={v1}", key(3, 2, True, "better"), token=token)
        self.assertEqual(b["count"], 2)
        self.assertNotEqual(b["etag"], etag)
        s, b = self.api("GET", f"/room_keys/keys?version={v1}", token=token)
        self.assertEqual(b["rooms"]["!r:localhost"]["sessions"]["S1"]["session_data"], {"ciphertext": "better"})
        self.assertEqual(set(b["rooms"]["!r:localhost"]["sessions"]), {"S1", "S2"})
        s, b = self.api("GET", f"/room_keys/keys/!r:localhost/S9?version={v1}", token=token)
        self.assertEqual(s, 404)
        # Updating auth_data keeps the algorithm; a new version makes the old one read-only.
        s, b = self.api("PUT", f"/room_keys/version/{v1}", {"algorithm": alg, "auth_data": {"public_key": "pk1b"}},
                        token=token)
        self.assertEqual(s, 200, b)
        s, b = self.api("POST", "/room_keys/version", {"algorithm": alg, "auth_data": {"public_key": "pk2"}}, token=token)
        v2 = b["version"]
        s, b = self.api("PUT", f"/room_keys/keys/!r:localhost/S3?version={v1}", key(0, 0, False, "x"), token=token)
        self.assertEqual((s, b["errcode"], b["current_version"]), (403, "M_WRONG_ROOM_KEYS_VERSION", v2))
        s, b = self.api("GET", f"/room_keys/version/{v1}", token=token)
        self.assertEqual((b["count"], b["auth_data"]), (2, {"public_key": "pk1b"}))
        s, b = self.api("DELETE", f"/room_keys/keys/!r:localhost/S2?version={v1}", token=token)
        self.assertEqual(b["count"], 1)
        s, b = self.api("DELETE", f"/room_keys/version/{v1}", token=token)
        self.assertEqual(s, 200, b)
        s, b = self.api("GET", f"/room_keys/version/{v1}", token=token)
        self.assertEqual(s, 404)
        s, b = self.api("GET", "/room_keys/version", token=token)
        self.assertEqual(b["version"], v2)
        # Deleting the newest version does not make its number available again.
        self.assertEqual(self.api("DELETE", f"/room_keys/version/{v2}", token=token)[0], 200)
        s, b = self.api("POST", "/room_keys/version", {"algorithm": alg, "auth_data": {}}, token=token)
        self.assertNotIn(b["version"], (v1, v2))

    # -- account management with UIA (same helpers) ---------------------------------------
    def test_password_change_and_deactivation(self):
        self.user("jack")
        self.user("kate")
        token, _ = self.login("jack")
        other, _ = self.login("jack")
        s, b = self.api("POST", "/account/password", {"new_password": "new secret"}, token=token)
        self.assertEqual(s, 401, b)
        self.assertEqual(b["flows"], [{"stages": ["m.login.password"]}])
        s, b = self.api("POST", "/account/password", {"new_password": "new secret", "auth": {
            "type": "m.login.password", "session": b["session"], "password": "secret password",
            "identifier": {"type": "m.id.user", "user": "jack"}}}, token=token)
        self.assertEqual(s, 200, b)
        # The old password no longer logs in, the new one does; other devices were logged out.
        s, b = self.api("POST", "/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "jack"},
                                           "password": "secret password"})
        self.assertEqual(s, 403, b)
        self.login("jack", "new secret")
        self.assertEqual(self.api("GET", "/account/whoami", token=other)[0], 401)
        self.assertEqual(self.api("GET", "/account/whoami", token=token)[0], 200)

        # Deactivation: Jack leaves his rooms, his token and account are gone.
        kate, _ = self.login("kate")
        s, room = self.api("POST", "/createRoom", {"invite": ["@jack:localhost"]}, token=kate)
        self.assertEqual(self.api("POST", f"/join/{room['room_id']}", {}, token=token)[0], 200)
        s, b = self.api("POST", "/account/deactivate", {"auth": {
            "type": "m.login.password", "password": "wrong", "identifier": {"type": "m.id.user", "user": "jack"}}},
            token=token)
        self.assertEqual((s, b.get("errcode")), (401, "M_FORBIDDEN"))
        s, b = self.api("POST", "/account/deactivate", {"auth": {
            "type": "m.login.password", "password": "new secret", "identifier": {"type": "m.id.user", "user": "jack"}}},
            token=token)
        self.assertEqual(s, 200, b)
        self.assertEqual(self.api("GET", "/account/whoami", token=token)[0], 401)
        s, members = self.api("GET", f"/rooms/{room['room_id']}/joined_members", token=kate)
        self.assertNotIn("@jack:localhost", members["joined"])
        self.assertNotIn("jack@localhost", self.h.ctl("user", "list").stdout)

    def test_presence(self):
        self.user("lena")
        token, _ = self.login("lena")
        s, b = self.api("GET", "/presence/@lena:localhost/status", token=token)
        self.assertEqual((s, b), (200, {"presence": "offline"}))
        s, b = self.api("PUT", "/presence/@lena:localhost/status", {"presence": "unavailable", "status_msg": "lunch"},
                        token=token)
        self.assertEqual(s, 200, b)
        s, b = self.api("GET", "/presence/@lena:localhost/status", token=token)
        self.assertEqual((b["presence"], b["status_msg"], b["currently_active"]), ("unavailable", "lunch", False))
        self.assertGreaterEqual(b["last_active_ago"], 0)
        s, b = self.api("PUT", "/presence/@lena:localhost/status", {"presence": "dancing"}, token=token)
        self.assertEqual((s, b["errcode"]), (400, "M_INVALID_PARAM"))
        s, b = self.api("PUT", "/presence/@someone:localhost/status", {"presence": "online"}, token=token)
        self.assertEqual(s, 403)
        s, b = self.api("GET", "/presence/@nobody:localhost/status", token=token)
        self.assertEqual((s, b["errcode"]), (404, "M_NOT_FOUND"))


if __name__ == "__main__":
    unittest.main()
