"""Matrix media thumbnails: PNG uploads (written here with zlib) are thumbnailed by
hearthd's sandboxed worker process at the spec's preset sizes — `scale` keeps the aspect
ratio inside the box, `crop` fills it — on the authenticated /_matrix/client/v1 path and the
legacy /_matrix/media/v3 path; what is not a decodable image answers 404 M_NOT_FOUND, so
that clients show the original."""
import json
import struct
import unittest
import zlib

from harness import Hearth


def png(width, height, pixel):
    """An RGB PNG whose pixel (x, y) is pixel(x, y)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    rows = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


class Thumbnails(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.h = Hearth().start()
        cls.h.add_users("tess")
        status, body = cls.h.matrix_api("POST", "/login", {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "tess"}, "password": "tess secret pw"})
        assert status == 200, body
        cls.token = body["access_token"]

    @classmethod
    def tearDownClass(cls):
        cls.h.stop()
        cls.h.cleanup()

    def upload(self, data, content_type="image/png"):
        status, _, raw = self.h.request("POST", "/_matrix/media/v3/upload?filename=x.png", body=data, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type})
        self.assertEqual(status, 200, raw)
        return json.loads(raw)["content_uri"].split("/")[-1]

    def thumb(self, media_id, width, height, method, legacy=False):
        if legacy:
            return self.h.request("GET", f"/_matrix/media/v3/thumbnail/localhost/{media_id}"
                                         f"?width={width}&height={height}&method={method}")
        return self.h.request("GET", f"/_matrix/client/v1/media/thumbnail/localhost/{media_id}"
                                     f"?width={width}&height={height}&method={method}",
                              headers={"Authorization": f"Bearer {self.token}"})

    def test_scale_and_crop_keep_the_aspect_ratio(self):
        wide = self.upload(png(1000, 200, lambda x, y: (255, 0, 0) if x < 500 else (0, 0, 255)))
        status, headers, body = self.thumb(wide, 320, 240, "scale")
        self.assertEqual(status, 200, body)
        self.assertEqual({k.lower(): v for k, v in dict(headers).items()}["content-type"], "image/png")
        self.assertEqual(png_size(body), (320, 64))
        status, _, body = self.thumb(wide, 96, 96, "crop")
        self.assertEqual(status, 200, body)
        self.assertEqual(png_size(body), (96, 96))
        # A request between presets gets the next larger one (640x480 scale: 640x128).
        status, _, body = self.thumb(wide, 500, 100, "scale", legacy=True)
        self.assertEqual(status, 200, body)
        self.assertEqual(png_size(body), (640, 128))
        # Never enlarged.
        small = self.upload(png(50, 40, lambda x, y: (x * 5, y * 6, 0)))
        status, _, body = self.thumb(small, 320, 240, "scale")
        self.assertEqual((status, png_size(body)), (200, (50, 40)))
        status, _, body = self.thumb(small, 32, 32, "crop")
        self.assertEqual((status, png_size(body)), (200, (32, 32)))

    def test_what_is_not_an_image_has_no_thumbnail(self):
        for data in (b"just text", png(30, 30, lambda x, y: (1, 2, 3))[:60]):
            media_id = self.upload(data)
            status, _, raw = self.thumb(media_id, 96, 96, "crop")
            self.assertEqual((status, json.loads(raw)["errcode"]), (404, "M_NOT_FOUND"))
        status, _, raw = self.thumb("nope", 96, 96, "crop")
        self.assertEqual(status, 404)
        status, _, raw = self.thumb("nope", 0, 96, "crop")
        self.assertEqual((status, json.loads(raw)["errcode"]), (400, "M_INVALID_PARAM"))
        status, _, raw = self.thumb("nope", 96, 96, "stretch")
        self.assertEqual(status, 400)


if __name__ == "__main__":
    unittest.main()
