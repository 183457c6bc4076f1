"""One connected peer's state, and the P2P settings (docs/P2P.md lists every value)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from p2p.addrbook import join_host_port
from p2p.headerpace import HeaderPace
from p2p.protocol import GetHeaders, Version
from p2p.ratelimit import Bucket

if TYPE_CHECKING:
    from p2p.presync import HeadersPresync

BAN_SCORE = 100
UNREQUESTED_SCORE = 20  # each unrequested block/tx past the peer's allowance
MAX_KNOWN_INV = 20_000  # hashes remembered per peer as already known to it
MAX_TX_NOTFOUND = 4096  # txids per peer it asked of us and we no longer had (newest kept)
MAX_LATE = 1024  # blocks asked of a peer again after a stall, whose first copy may still come


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class P2PSettings:
    max_inbound: int = 32
    max_outbound: int = 8
    max_inbound_per_ip: int = 4
    max_inbound_per_group: int = 8  # per network group (IPv4 /16, IPv6 /32)
    max_pending_upgrades: int = 64  # inbound sockets not yet upgraded to a WebSocket
    max_pending_per_ip: int = 8
    upgrade_timeout: float = 5.0  # TCP accept to WebSocket upgrade (either direction)
    connect_timeout: float = 5.0  # outbound TCP connect
    handshake_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 20.0
    headers_timeout: float = 20.0  # base; plus the bytes asked at the measured rate
    headers_reply_s: float = 10.0  # a headers request asks for what the peer moves in this
    headers_max_bytes: int = 4 * 1024 * 1024  # and never for more than this
    block_stall: float = 5.0
    max_stalls: int = 3  # stalls before a peer is dropped (not discouraged)
    sync_warn_s: float = 60.0  # sync without a new block for this long: WARNING
    inflight_per_peer: int = 16
    block_window: int = 256
    discourage_s: float = 3600.0
    default_ban_s: int = 24 * 3600
    connect_interval: float = 1.0
    tick: float = 0.25
    ping_burst: float = 20.0
    ping_rate: float = 1.0  # pings per second a peer may send on average
    addr_burst: float = 1000.0
    addr_rate: float = 0.1  # addresses per second accepted from one source group
    unrequested_burst: float = 20.0
    unrequested_rate: float = 1.0  # unrequested blocks/txs per second
    blobs_burst: float = 1024.0
    blobs_rate: float = 1.0  # blob announcements per second accepted from one peer
    # Headers served to one peer (each reads a stored block): replies are cut to what
    # is left; a getheaders with nothing left waits for the refill. An honest syncing
    # peer needs ~500 per round trip; one following the tip, a few.
    getheaders_burst: float = 5000.0
    getheaders_rate: float = 1000.0
    # Transactions a peer sends that our mempool refuses (policy or invalid): past this
    # allowance each one scores POLICY_WASTE_SCORE and is not checked.
    tx_waste_burst: float = 200.0
    tx_waste_rate: float = 2.0
    # Headers presync (p2p/presync.py): a chain that does not beat our tip is checked
    # but not stored; one commitment bit per presync_period headers, and the second
    # pass holds presync_buffer headers back. After a presync that ended below our
    # work, that peer's low-work headers are ignored for presync_retry_s.
    presync_period: int = 64
    presync_buffer: int = 1536
    presync_retry_s: float = 60.0

    @classmethod
    def from_env(cls) -> P2PSettings:
        """Defaults, with POUW_P2P_<FIELD> environment overrides (tests shorten timeouts)."""
        s = cls()
        for name, value in vars(s).items():
            env = f"POUW_P2P_{name.upper()}"
            if env in os.environ:
                setattr(s, name, type(value)(_env_float(env, value)))
        return s


_ids = itertools.count(1)


@dataclass(eq=False)
class Peer:
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse
    inbound: bool
    host: str
    port: int
    dial_key: str | None = None  # "host:port" we dialled (outbound)
    manual: bool = False
    settings: P2PSettings = field(default_factory=P2PSettings)
    id: int = field(default_factory=lambda: next(_ids))
    version: Version | None = None
    got_verack: bool = False
    ready: bool = False
    closed: bool = False
    best_height: int = 0
    best_work: int = 0
    conntime: float = field(default_factory=time.time)
    last_send: float = 0.0
    last_recv: float = 0.0
    last_recv_mono: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0
    bytes_recv: int = 0
    ping_nonce: int | None = None
    ping_sent: float = 0.0
    last_ping: float = field(default_factory=time.monotonic)
    ping_ms: float | None = None
    score: int = 0
    stalls: int = 0
    headers_timeouts: int = 0
    last_block: float = 0.0
    headers_requested: float | None = None
    unconnecting: int = 0
    getaddr_answered: bool = False
    inflight: set[bytes] = field(default_factory=set)
    tx_requested: dict[bytes, float] = field(default_factory=dict)
    no_have: set[bytes] = field(default_factory=set)
    known: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    # txs it asked of us that had left our pool (mined into our block): announced to it
    # again should a reorg bring them back (p2p/relay.py)
    tx_notfound: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    blob_roots: OrderedDict[bytes, str] = field(default_factory=OrderedDict)  # root -> its URL
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    getdata: deque[bytes] = field(default_factory=deque)  # blocks asked, not yet queued
    late: OrderedDict[bytes, None] = field(default_factory=OrderedDict)  # stalled asks
    presync: HeadersPresync | None = None  # its low-work chain being checked, not stored
    presync_after: float = 0.0  # monotonic time before which no new presync starts
    waiting_getheaders: GetHeaders | None = None  # over its allowance: served later
    queued_bytes: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        self.ping_bucket = Bucket(s.ping_burst, s.ping_rate)
        self.unrequested = Bucket(s.unrequested_burst, s.unrequested_rate)
        self.blob_bucket = Bucket(s.blobs_burst, s.blobs_rate)
        self.tx_waste = Bucket(s.tx_waste_burst, s.tx_waste_rate)
        self.getheaders_bucket = Bucket(s.getheaders_burst, s.getheaders_rate)
        self.header_pace = HeaderPace(s.headers_reply_s, s.headers_max_bytes)

    @property
    def addr(self) -> str:
        return join_host_port(self.host, self.port)

    def stalled(self, h: bytes) -> None:
        """Our request for block ``h`` stalled: a copy that still comes is not unrequested."""
        self.late[h] = None
        if len(self.late) > MAX_LATE:
            self.late.popitem(last=False)

    def excused(self, h: bytes) -> bool:
        """A block we gave up on (and maybe asked again): consumes one excuse."""
        return self.late.pop(h, 0) is None

    def answered_notfound(self, txid: bytes) -> None:
        self.tx_notfound[txid] = None
        if len(self.tx_notfound) > MAX_TX_NOTFOUND:
            self.tx_notfound.popitem(last=False)

    def learn(self, h: bytes) -> None:
        self.known[h] = None
        if len(self.known) > MAX_KNOWN_INV:
            self.known.popitem(last=False)
