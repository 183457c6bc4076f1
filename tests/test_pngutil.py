"""The screenshot checker's PNG decoder against PNGs written with each row filter."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from tests.pngutil import decode_png


def encode_png(img: np.ndarray, ftype: int) -> bytes:
    """A PNG with every row filtered with ``ftype`` (0 None .. 4 Paeth), RGBA."""
    h, w, c = img.shape
    raw = b""
    prev = np.zeros(w * c, dtype=np.int32)
    for r in range(h):
        line = img[r].reshape(-1).astype(np.int32)
        left = np.concatenate([np.zeros(c, dtype=np.int32), line[:-c]])
        upleft = np.concatenate([np.zeros(c, dtype=np.int32), prev[:-c]])
        if ftype == 0:
            f = line
        elif ftype == 1:
            f = line - left
        elif ftype == 2:
            f = line - prev
        elif ftype == 3:
            f = line - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            f = line - pred
        raw += bytes([ftype]) + bytes((f % 256).astype(np.uint8))
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("ftype", range(5))
def test_decode_every_filter(ftype: int) -> None:
    img = np.random.default_rng(ftype).integers(0, 256, (6, 9, 4), dtype=np.uint8)
    assert (decode_png(encode_png(img, ftype)) == img).all()
