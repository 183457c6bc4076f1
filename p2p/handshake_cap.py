"""What an inbound peer may send before its handshake: a ``version``, then a ``verack``.

aiohttp's WebSocket reader takes one message size for the life of a socket, and a
frame is buffered whole before our code sees it. Frames may be as large as
``MAX_FRAME`` (21 MB: a block), so a socket still in its handshake could otherwise
hold that much memory until the handshake timeout, on every inbound slot at once.

``HandshakeGate`` reads an inbound socket's bytes as they arrive, before aiohttp does
(p2p/guard.py passes them through it), from the HTTP upgrade request until the peer's
verack has passed. It reads the WebSocket frame headers: the peer's first
data frame must be a ``version`` and its second a ``verack``, each at most a
version's size, judged on the frame's first payload byte, before the rest of it
arrives; WebSocket pings and pongs may come between. Anything else cuts the socket at
once. The gate judges the byte stream itself, not the messages our loop has handled,
so what an honest peer sends right after its verack (its getheaders, inventories) is
never counted, however busy the loop is.
"""

from __future__ import annotations

from p2p.protocol import MAX_PAYLOAD, MsgType

HANDSHAKE_TYPES = frozenset({MsgType.VERSION, MsgType.VERACK})
MAX_HANDSHAKE_FRAME = 1 + MAX_PAYLOAD[MsgType.VERSION]
# Bytes before the verack has passed, pings and pongs included: a version and a verack
# take under 200 bytes with their framing; a peer that pings without end is cut here.
PRE_HANDSHAKE_BYTES = 64 * 1024
# An HTTP request head on the P2P port: aiohttp's own limits are about 8 KiB per line;
# a peer's upgrade request takes about 250 bytes.
MAX_REQUEST_HEAD = 16 * 1024

_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
_EXPECTED = (MsgType.VERSION, MsgType.VERACK)  # the peer's data frames, in order


def upgrade_refusal(head: bytes) -> str | None:
    """Why an HTTP request head (request line and headers, without the blank line) is
    not the P2P upgrade, or None: ``GET /p2p`` with ``Upgrade: websocket`` and no body.
    A body (Content-Length, Transfer-Encoding) would be read by aiohttp before the
    upgrade, where the gate would take it for frames; a second request on the socket
    cannot come, as the node answers anything but the upgrade with a closing answer."""
    lines = head.split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    target = rest.partition(b" ")[0]
    upgrade = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return "an HTTP request with a body on the P2P port"
        upgrade = upgrade or (name == b"upgrade" and value == b"websocket")
    if method != b"GET" or not (target == b"/p2p" or target.startswith(b"/p2p?")) or not upgrade:
        return "not a P2P upgrade request (GET /p2p with Upgrade: websocket)"
    return None


def handshake_refusal(first_byte: int | None, size: int) -> str | None:
    """Why a frame of a peer still in its handshake is refused (None: a version or a
    verack of a version's size at most, which may be decoded). ``first_byte`` is the
    message type (None for an empty frame), ``size`` the frame's length."""
    if first_byte in HANDSHAKE_TYPES and size <= MAX_HANDSHAKE_FRAME:
        return None
    if first_byte is None:
        what = "an empty frame"
    else:
        try:
            what = MsgType(first_byte).name
        except ValueError:
            what = f"message type {first_byte}"
    over = "" if size <= MAX_HANDSHAKE_FRAME else f" of {size} bytes"
    return f"{what}{over} before the handshake"


class HandshakeGate:
    """Reads what an inbound peer sends, from the socket's first byte, until its verack
    has passed: the HTTP upgrade request, then WebSocket frames. ``check`` takes each
    chunk as it arrives (before aiohttp does) and says why it is refused, or None; once
    ``done``, nothing more is judged. Bytes a peer sends in one go with its upgrade
    request (before the node's 101 answer) are judged like any other."""

    def __init__(self) -> None:
        self.received = 0
        self.done = False  # the verack has passed: nothing more is judged
        self._in_request = True  # still in the HTTP request's head
        self._head = bytearray()  # the request's head so far (its end may straddle chunks)
        self.discourage = True  # False: cut as no P2P upgrade at all (a stray HTTP client)
        self._header = bytearray()  # the frame header being read
        self._left = 0  # payload bytes of the current frame still to come
        self._mask = b""
        self._judge = False  # the current frame's first payload byte is still to judge
        self._size = 0
        self._data_frames = 0
        self._refusal = ""

    def check(self, data: bytes) -> str | None:
        """Take the next chunk the peer sent: why it is refused, or None."""
        if self.done:
            return None
        self.received += len(data)
        pos = 0
        refused: str | None = None
        if self._in_request:
            self._head += data
            head = bytes(self._head).lstrip(b"\r\n")  # (HTTP parsers skip blank lines first)
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                refused = upgrade_refusal(head[:end])
                self.discourage = refused is None
                # where the frames start in this chunk: after the head and its blank line
                pos = len(self._head) - len(head) + end + 4 - (len(self._head) - len(data))
                self._in_request = False
                self._head = bytearray()
            elif len(self._head) > MAX_REQUEST_HEAD:
                refused = f"an HTTP request head of over {MAX_REQUEST_HEAD} bytes"
                self.discourage = False
        if refused is None and not self._in_request:
            refused = self._read(data, pos)
        if refused is None and self.received > PRE_HANDSHAKE_BYTES and not self.done:
            refused = f"{self.received} bytes before the handshake (at most {PRE_HANDSHAKE_BYTES})"
        if refused is not None:
            self.done = True
        return refused

    def _read(self, data: bytes, pos: int) -> str | None:
        """Follow the frames in ``data[pos:]``; why they are refused, or None. Sets
        ``done`` once the peer's verack has passed."""
        while pos < len(data) and not self.done:
            if self._left == 0 and not self._judge:
                pos = self._read_header(data, pos)
                if pos < 0:
                    return self._refusal
                continue
            take = min(self._left, len(data) - pos)
            if self._judge and take:
                self._judge = False
                why = self._judge_first(data[pos] ^ self._mask[0] if self._mask else data[pos])
                if why is not None:
                    return why
            pos += take
            self._left -= take
            if self._left == 0 and not self._judge and self._data_frames == len(_EXPECTED):
                self.done = True  # the verack has passed: what follows is not ours to judge
        return None

    def _read_header(self, data: bytes, pos: int) -> int:
        """Add header bytes from ``data[pos:]``; the new position, or -1 (``_refusal``
        says why) for a frame the handshake does not allow."""
        while pos < len(data):
            self._header.append(data[pos])
            pos += 1
            need = self._header_size()
            if len(self._header) < need:
                continue
            h = self._header
            opcode, length = h[0] & 0x0F, h[1] & 0x7F
            at = 2
            if length == 126:
                length, at = int.from_bytes(h[2:4], "big"), 4
            elif length == 127:
                length, at = int.from_bytes(h[2:10], "big"), 10
            self._mask = bytes(h[at : at + 4]) if h[1] & 0x80 else b""
            self._header = bytearray()
            self._left = length
            if opcode in (_OP_CONTINUATION, _OP_TEXT, _OP_BINARY):
                self._data_frames += 1
                if opcode != _OP_BINARY or not h[0] & 0x80:  # a message: one binary frame
                    self._refusal = "a fragmented or text frame before the handshake"
                    return -1
                self._size = length
                if length == 0:
                    why = handshake_refusal(None, 0)
                    assert why is not None
                    self._refusal = why
                    return -1
                self._judge = True
            return pos
        return pos

    def _header_size(self) -> int:
        if len(self._header) < 2:
            return 2
        length = self._header[1] & 0x7F
        extra = 2 if length == 126 else 8 if length == 127 else 0
        return 2 + extra + (4 if self._header[1] & 0x80 else 0)

    def _judge_first(self, first_byte: int) -> str | None:
        """The current data frame's type and size against what the handshake expects."""
        why = handshake_refusal(first_byte, self._size)
        if why is None and first_byte != _EXPECTED[self._data_frames - 1]:
            why = f"{MsgType(first_byte).name} out of order in the handshake"
        return why
