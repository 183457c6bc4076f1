"""Wire messages: one WebSocket binary frame carries one message, ``type u8 | payload``.

Payloads use the canonical encoding of chain/encoding.py (big-endian integers,
u32-prefixed varbytes). Every size a peer controls is capped *before* decoding: the
frame length against ``MAX_FRAME`` (the WebSocket max_msg_size) and against the
per-type cap in ``MAX_PAYLOAD``, then every item count against its own cap. A payload
that is not exactly one canonical encoding raises ``DecodeError``. docs/P2P.md has the
byte layouts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chain.block import MAX_BLOCK_SIZE, Block
from chain.encoding import DecodeError, Reader, Writer
from chain.header import MAX_SEAL_SIZE, PREFIX_SIZE, Header
from chain.tx import MAX_TX_SIZE, Transaction
from compute.blobs import MAX_BLOB_LINES, MAX_LINE_BYTES

PROTOCOL_VERSION = 3  # 2: adds `blobs`; 3: getheaders may carry max_bytes
BLOBS_VERSION = 2  # lowest peer protocol that is sent `blobs`
HEADERS_BYTES_VERSION = 3  # lowest peer protocol that is sent getheaders' max_bytes
MIN_PROTOCOL_VERSION = 1
USER_AGENT = "/pouw:0.1/"
MAX_USER_AGENT = 64
MAX_INV = 1000  # items in one inv / getdata / notfound
MAX_LOCATOR = 64  # hashes in one getheaders locator
MAX_HEADERS = 500  # headers in one headers message
HEADERS_SOFT_BYTES = 4 * 1024 * 1024  # a responder stops adding headers past this size
MAX_ADDR = 1000  # addresses in one addr message
MAX_HOST = 255  # bytes of one host name or IP literal
MAX_HEADER_SIZE = PREFIX_SIZE + 4 + MAX_SEAL_SIZE
MAX_BLOBS = 256  # blob announcements in one blobs message
BLOB_ITEM_BYTES = 32 + 1 + 4 + 4 + 2  # root, kind, rows, line bytes, port
BLOB_KINDS = {1: "a", 2: "bt", 3: "c"}  # wire code -> compute/blobs.py kind
BLOB_CODES = {kind: code for code, kind in BLOB_KINDS.items()}


class MsgType(enum.IntEnum):
    VERSION = 1
    VERACK = 2
    PING = 3
    PONG = 4
    INV = 5
    GETDATA = 6
    NOTFOUND = 7
    GETHEADERS = 8
    HEADERS = 9
    BLOCK = 10
    TX = 11
    GETADDR = 12
    ADDR = 13
    BLOBS = 14


class InvType(enum.IntEnum):
    TX = 1
    BLOCK = 2


_INV_BYTES = 2 + MAX_INV * 33
MAX_PAYLOAD: dict[MsgType, int] = {
    MsgType.VERSION: 4 + 4 + 32 + 8 + 32 + 8 + 2 + 4 + MAX_USER_AGENT,
    MsgType.VERACK: 0,
    MsgType.PING: 8,
    MsgType.PONG: 8,
    MsgType.INV: _INV_BYTES,
    MsgType.GETDATA: _INV_BYTES,
    MsgType.NOTFOUND: _INV_BYTES,
    MsgType.GETHEADERS: 2 + MAX_LOCATOR * 32 + 32 + 4,
    # One header may be as large as the seal cap allows; a responder packs more only
    # while the message stays under HEADERS_SOFT_BYTES.
    MsgType.HEADERS: 2 + max(MAX_HEADER_SIZE, HEADERS_SOFT_BYTES + MAX_HEADER_SIZE),
    MsgType.BLOCK: MAX_BLOCK_SIZE,
    MsgType.TX: MAX_TX_SIZE,
    MsgType.GETADDR: 0,
    MsgType.ADDR: 2 + MAX_ADDR * (4 + MAX_HOST + 2 + 8),
    MsgType.BLOBS: 2 + MAX_BLOBS * BLOB_ITEM_BYTES,
}
MAX_FRAME = 1 + max(MAX_PAYLOAD.values())


@dataclass(frozen=True)
class Version:
    protocol: int
    chain_id: int
    genesis: bytes
    best_height: int
    best_work: int
    nonce: int
    listen_port: int  # 0: accepts no inbound connections
    user_agent: str


@dataclass(frozen=True)
class Ping:
    nonce: int


@dataclass(frozen=True)
class Pong:
    nonce: int


@dataclass(frozen=True)
class Inv:
    items: tuple[tuple[InvType, bytes], ...]


@dataclass(frozen=True)
class GetData:
    items: tuple[tuple[InvType, bytes], ...]


@dataclass(frozen=True)
class NotFound:
    items: tuple[tuple[InvType, bytes], ...]


@dataclass(frozen=True)
class GetHeaders:
    locator: tuple[bytes, ...]
    stop: bytes  # 32 zero bytes: no stop
    max_bytes: int = 0  # reply at most this large (at least one header); 0: not sent


@dataclass(frozen=True)
class Headers:
    headers: tuple[Header, ...]


@dataclass(frozen=True)
class BlockMsg:
    block: Block


@dataclass(frozen=True)
class TxMsg:
    tx: Transaction


@dataclass(frozen=True)
class Addr:
    addrs: tuple[tuple[str, int, int], ...]  # host, port, last seen (unix s)


@dataclass(frozen=True)
class BlobAnn:
    """One blob the sender holds and serves over HTTP at its own IP, ``port``."""

    root: bytes
    kind: str  # "a", "bt" or "c" (compute/blobs.py)
    rows: int
    line_bytes: int
    port: int


@dataclass(frozen=True)
class Blobs:
    items: tuple[BlobAnn, ...]


@dataclass(frozen=True)
class Empty:
    type: MsgType


Message = (
    Version | Ping | Pong | Inv | GetData | NotFound | GetHeaders | Headers | BlockMsg | TxMsg
    | Addr | Blobs | Empty
)  # fmt: skip

_INV_CLASS: dict[MsgType, type[Inv] | type[GetData] | type[NotFound]] = {
    MsgType.INV: Inv,
    MsgType.GETDATA: GetData,
    MsgType.NOTFOUND: NotFound,
}


def msg_type(msg: Message) -> MsgType:
    if isinstance(msg, Empty):
        return msg.type
    for t, cls in _TYPE_OF.items():
        if isinstance(msg, cls):
            return t
    raise TypeError(f"not a message: {msg!r}")


_TYPE_OF: dict[MsgType, type] = {
    MsgType.VERSION: Version,
    MsgType.PING: Ping,
    MsgType.PONG: Pong,
    MsgType.INV: Inv,
    MsgType.GETDATA: GetData,
    MsgType.NOTFOUND: NotFound,
    MsgType.GETHEADERS: GetHeaders,
    MsgType.HEADERS: Headers,
    MsgType.BLOCK: BlockMsg,
    MsgType.TX: TxMsg,
    MsgType.ADDR: Addr,
    MsgType.BLOBS: Blobs,
}


def _write_inv(w: Writer, items: tuple[tuple[InvType, bytes], ...]) -> None:
    w.u16(len(items))
    for kind, h in items:
        w.u8(int(kind)).bytes_n(h, 32)


def encode(msg: Message) -> bytes:
    """The frame for ``msg``: type byte then payload."""
    t = msg_type(msg)
    w = Writer().u8(int(t))
    if isinstance(msg, Version):
        ua = msg.user_agent.encode()[:MAX_USER_AGENT]
        w.u32(msg.protocol).u32(msg.chain_id).bytes_n(msg.genesis, 32).u64(msg.best_height)
        w.u256(msg.best_work).u64(msg.nonce).u16(msg.listen_port).varbytes(ua)
    elif isinstance(msg, Ping | Pong):
        w.u64(msg.nonce)
    elif isinstance(msg, Inv | GetData | NotFound):
        _write_inv(w, msg.items)
    elif isinstance(msg, GetHeaders):
        w.u16(len(msg.locator))
        for h in msg.locator:
            w.bytes_n(h, 32)
        w.bytes_n(msg.stop, 32)
        if msg.max_bytes:
            w.u32(msg.max_bytes)
    elif isinstance(msg, Headers):
        w.u16(len(msg.headers))
        for header in msg.headers:
            header.write_to(w)
    elif isinstance(msg, BlockMsg):
        w.raw(msg.block.to_bytes())
    elif isinstance(msg, TxMsg):
        msg.tx.write_to(w)
    elif isinstance(msg, Addr):
        w.u16(len(msg.addrs))
        for host, port, seen in msg.addrs:
            w.varbytes(host.encode()).u16(port).u64(seen)
    elif isinstance(msg, Blobs):
        w.u16(len(msg.items))
        for b in msg.items:
            w.bytes_n(b.root, 32).u8(BLOB_CODES[b.kind]).u32(b.rows).u32(b.line_bytes)
            w.u16(b.port)
    return w.getvalue()


def _count(r: Reader, cap: int, what: str) -> int:
    n = r.u16(f"{what} count")
    if n > cap:
        raise DecodeError(f"{what}: {n} items, the cap is {cap}")
    return n


def _read_inv(r: Reader) -> tuple[tuple[InvType, bytes], ...]:
    n = _count(r, MAX_INV, "inv")
    items = []
    for _ in range(n):
        kind = r.u8("inv type")
        if kind not in (InvType.TX, InvType.BLOCK):
            raise DecodeError(f"unknown inv type {kind}")
        items.append((InvType(kind), r.bytes_n(32, "inv hash")))
    return tuple(items)


def _read_blob(r: Reader) -> BlobAnn:
    root = r.bytes_n(32, "blob root")
    code = r.u8("blob kind")
    if code not in BLOB_KINDS:
        raise DecodeError(f"unknown blob kind {code}")
    kind = BLOB_KINDS[code]
    rows, line_bytes, port = r.u32("blob rows"), r.u32("blob line bytes"), r.u16("blob port")
    if not 0 < rows <= MAX_BLOB_LINES:
        raise DecodeError(f"blob of {rows} rows (1..{MAX_BLOB_LINES})")
    if not 0 < line_bytes <= MAX_LINE_BYTES or (kind == "c" and line_bytes % 4):
        raise DecodeError(f"blob line of {line_bytes} bytes is not allowed for kind {kind}")
    if port == 0:
        raise DecodeError("blob port 0")
    return BlobAnn(root, kind, rows, line_bytes, port)


def decode(frame: bytes) -> Message:
    """Decode one frame; any malformed, oversized or unknown input is a ``DecodeError``."""
    if len(frame) > MAX_FRAME:
        raise DecodeError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    if not frame:
        raise DecodeError("empty frame")
    try:
        t = MsgType(frame[0])
    except ValueError:
        raise DecodeError(f"unknown message type {frame[0]}") from None
    if len(frame) - 1 > MAX_PAYLOAD[t]:
        raise DecodeError(f"{t.name} payload of {len(frame) - 1} bytes exceeds {MAX_PAYLOAD[t]}")
    payload = memoryview(frame)[1:]
    msg: Message
    if t is MsgType.BLOCK:
        return BlockMsg(Block.from_bytes(payload))
    r = Reader(payload)
    if t is MsgType.VERSION:
        msg = Version(
            protocol=r.u32("protocol"),
            chain_id=r.u32("chain_id"),
            genesis=r.bytes_n(32, "genesis"),
            best_height=r.u64("best_height"),
            best_work=r.u256("best_work"),
            nonce=r.u64("nonce"),
            listen_port=r.u16("listen_port"),
            user_agent=r.varbytes(MAX_USER_AGENT, "user_agent").decode("utf-8", "replace"),
        )
    elif t in (MsgType.VERACK, MsgType.GETADDR):
        msg = Empty(t)
    elif t is MsgType.PING:
        msg = Ping(r.u64("nonce"))
    elif t is MsgType.PONG:
        msg = Pong(r.u64("nonce"))
    elif t in _INV_CLASS:
        msg = _INV_CLASS[t](_read_inv(r))
    elif t is MsgType.GETHEADERS:
        n = _count(r, MAX_LOCATOR, "locator")
        locator = tuple(r.bytes_n(32, "locator hash") for _ in range(n))
        stop = r.bytes_n(32, "stop")
        max_bytes = 0
        if r.remaining:  # protocol 3
            max_bytes = r.u32("max_bytes")
            if max_bytes == 0:
                raise DecodeError("getheaders max_bytes 0 (left out means no limit)")
        msg = GetHeaders(locator, stop, max_bytes)
    elif t is MsgType.HEADERS:
        n = _count(r, MAX_HEADERS, "headers")
        msg = Headers(tuple(Header.read_from(r) for _ in range(n)))
    elif t is MsgType.TX:
        msg = TxMsg(Transaction.read_from(r))
    elif t is MsgType.BLOBS:
        n = _count(r, MAX_BLOBS, "blobs")
        msg = Blobs(tuple(_read_blob(r) for _ in range(n)))
    else:
        assert t is MsgType.ADDR
        n = _count(r, MAX_ADDR, "addr")
        addrs = []
        for _ in range(n):
            raw = r.varbytes(MAX_HOST, "host")
            if not raw.isascii():
                raise DecodeError("addr host is not ASCII")
            host = raw.decode("ascii")
            addrs.append((host, r.u16("port"), r.u64("last_seen")))
        msg = Addr(tuple(addrs))
    r.finish()
    return msg
