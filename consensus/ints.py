"""Fixed-width integer encodings used in everything that is hashed or signed.

All multi-byte integers in hashed or signed data are unsigned big-endian, except
matrix payloads and fold states, which are little-endian machine words (see
docs/PROTOCOL.md). Each encoder checks its range so that an out-of-range value is a
programming error caught at once, never a silently wrapped hash input.
"""

from __future__ import annotations

U8_MAX = 2**8 - 1
U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
U256_MAX = 2**256 - 1


def _be(value: int, width: int) -> bytes:
    if value < 0 or value >= 1 << (8 * width):
        raise ValueError(f"{value} does not fit in an unsigned {8 * width}-bit field")
    return value.to_bytes(width, "big")


def u8(value: int) -> bytes:
    return _be(value, 1)


def u16(value: int) -> bytes:
    return _be(value, 2)


def u32(value: int) -> bytes:
    return _be(value, 4)


def u64(value: int) -> bytes:
    return _be(value, 8)


def u256(value: int) -> bytes:
    return _be(value, 32)
