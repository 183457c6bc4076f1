"""Canonical binary encoding: the one byte layout used for hashing, signing and the wire.

Every integer is unsigned big-endian with a fixed width (u8/u16/u32/u64/u256), every
fixed-size field is raw bytes, and every variable-size field is ``varbytes``: a u32
length prefix followed by that many bytes. There is exactly one encoding per value,
so "decode then re-encode" gives back the input bytes, and hashes of encodings are
stable across implementations.

``Reader`` is the only way untrusted bytes enter the node's data model. It never
raises anything but ``DecodeError`` for bad input, and it checks every length
prefix against a caller-given cap *before* slicing or allocating, so a peer cannot
make the node allocate memory by announcing a huge length.
"""

from __future__ import annotations

import struct

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

U256_SIZE = 32


class DecodeError(ValueError):
    """Bytes that are not a canonical encoding: truncated, oversize or with trailing data."""


class Writer:
    """Append-only builder of a canonical encoding.

    Out-of-range integers and wrong-length fixed fields raise ``ValueError``: they are
    programming errors, and must never be silently wrapped into hashed bytes.
    Methods return ``self`` so short encodings can be chained.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def _pack(self, fmt: struct.Struct, value: int, name: str) -> Writer:
        try:
            self._buf += fmt.pack(value)
        except struct.error:
            raise ValueError(f"{value!r} does not fit in {name}") from None
        return self

    def u8(self, value: int) -> Writer:
        return self._pack(_U8, value, "u8")

    def u16(self, value: int) -> Writer:
        return self._pack(_U16, value, "u16")

    def u32(self, value: int) -> Writer:
        return self._pack(_U32, value, "u32")

    def u64(self, value: int) -> Writer:
        return self._pack(_U64, value, "u64")

    def u256(self, value: int) -> Writer:
        if not 0 <= value < 1 << 256:
            raise ValueError(f"{value!r} does not fit in u256")
        self._buf += value.to_bytes(U256_SIZE, "big")
        return self

    def bytes_n(self, data: bytes, n: int) -> Writer:
        """A fixed-size field: exactly ``n`` bytes, no prefix."""
        if len(data) != n:
            raise ValueError(f"fixed field needs {n} bytes, got {len(data)}")
        self._buf += data
        return self

    def varbytes(self, data: bytes) -> Writer:
        """A variable-size field: u32 length prefix, then the bytes."""
        self._pack(_U32, len(data), "a u32 length prefix")
        self._buf += data
        return self

    def raw(self, data: bytes) -> Writer:
        """Bytes that are already a canonical encoding (e.g. a nested object)."""
        self._buf += data
        return self

    def __len__(self) -> int:
        return len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)


class Reader:
    """Strict cursor over an encoding; every failure is a ``DecodeError``.

    ``what`` arguments name the field being read so that error messages say which
    field was truncated or oversize, not just where.
    """

    __slots__ = ("_view", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self._view = view
        self._pos = 0

    @property
    def offset(self) -> int:
        """Bytes consumed so far."""
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._view) - self._pos

    def _need(self, n: int, what: str) -> int:
        pos = self._pos
        if n > len(self._view) - pos:
            raise DecodeError(
                f"truncated: {what} needs {n} bytes at offset {pos}, "
                f"only {len(self._view) - pos} left"
            )
        self._pos = pos + n
        return pos

    def _unpack(self, fmt: struct.Struct, what: str) -> int:
        pos = self._need(fmt.size, what)
        value: int = fmt.unpack_from(self._view, pos)[0]
        return value

    def u8(self, what: str = "u8") -> int:
        return self._unpack(_U8, what)

    def u16(self, what: str = "u16") -> int:
        return self._unpack(_U16, what)

    def u32(self, what: str = "u32") -> int:
        return self._unpack(_U32, what)

    def u64(self, what: str = "u64") -> int:
        return self._unpack(_U64, what)

    def u256(self, what: str = "u256") -> int:
        pos = self._need(U256_SIZE, what)
        return int.from_bytes(self._view[pos : pos + U256_SIZE], "big")

    def bytes_n(self, n: int, what: str = "bytes") -> bytes:
        """A fixed-size field of exactly ``n`` bytes."""
        pos = self._need(n, what)
        return self._view[pos : pos + n].tobytes()

    def varbytes(self, max_len: int, what: str = "varbytes") -> bytes:
        """A u32-prefixed field; a prefix above ``max_len`` fails before any copy."""
        length = self.u32(f"{what} length")
        if length > max_len:
            raise DecodeError(f"{what} length {length} exceeds the cap of {max_len} bytes")
        return self.bytes_n(length, what)

    def finish(self) -> None:
        """Assert that the whole input was consumed: trailing bytes are an error."""
        if self._pos != len(self._view):
            raise DecodeError(
                f"trailing data: {len(self._view) - self._pos} bytes after the end "
                f"of the encoding at offset {self._pos}"
            )
