"""The P2P service: WebSocket transport, handshake, peers, gossip, sync, bans.

One aiohttp server (``/p2p``) takes inbound peers; one client session dials outbound
ones. Every peer runs a reader (this module's ``_run_peer``) and a writer task; all
chain work happens on the event loop thread through ``Node.submit_block`` and
``Node.submit_transaction``. docs/P2P.md documents messages, caps, timeouts and rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from chain.block import Block
from chain.encoding import DecodeError, Reader
from chain.header import Header
from chain.mempool import MempoolReject
from chain.storage import StorageError
from chain.tx import Transaction
from chain.validation import BlockReject, Verdict
from p2p.addrbook import AddressBook, BanList, split_host_port
from p2p.protocol import (
    BLOBS_VERSION,
    HEADERS_SOFT_BYTES,
    MAX_ADDR,
    MAX_BLOBS,
    MAX_FRAME,
    MAX_HEADERS,
    MAX_INV,
    MAX_LOCATOR,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    USER_AGENT,
    Addr,
    BlobAnn,
    Blobs,
    BlockMsg,
    Empty,
    GetData,
    GetHeaders,
    Headers,
    Inv,
    InvType,
    Message,
    MsgType,
    NotFound,
    Ping,
    Pong,
    TxMsg,
    Version,
    decode,
    encode,
    msg_type,
)
from p2p.sync import Downloader, HeaderStore

if TYPE_CHECKING:
    from compute.blobs import BlobInfo, BlobStore
    from node.events import TipChange
    from node.service import Node

log = logging.getLogger("pouw.p2p")

BAN_SCORE = 100
MAX_KNOWN_INV = 20_000  # hashes remembered per peer as already known to it
MAX_SEND_BUFFER = 64 * 1024 * 1024  # queued outgoing bytes before a slow peer is dropped
MAX_BLOCKS_PER_GETDATA = 64  # blocks served per getdata; the rest answered notfound
MAX_UNSOLICITED_HEADERS = 8  # headers a peer may push without being asked
MAX_RECENT_REJECTS = 20_000
MAX_UNCONNECTING = 10  # unconnecting headers messages answered with a getheaders
IBD_LAG = 16  # tip this many blocks behind the best header: do not announce each block
MAX_BLOB_SOURCES = 8  # peer blob endpoints remembered per root
MAX_BLOB_ROOTS = 20_000  # roots with remembered sources, all peers together
MAX_BLOB_ROOTS_PER_PEER = 4096  # roots remembered from one peer (oldest forgotten)
_CONSENSUS_TX_REJECTS = {
    MempoolReject.UNKNOWN_KIND, MempoolReject.KIND_NOT_ACTIVE, MempoolReject.WRONG_CHAIN_ID,
    MempoolReject.PAYLOAD_TOO_LARGE, MempoolReject.ZERO_AMOUNT, MempoolReject.AMOUNT_OVERFLOW,
    MempoolReject.BAD_SIGNATURE,
}  # fmt: skip
_NOT_PUNISHED = {BlockReject.UNKNOWN_PARENT, BlockReject.TIME_TOO_NEW}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class P2PSettings:
    max_inbound: int = 32
    max_outbound: int = 8
    handshake_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 20.0
    headers_timeout: float = 20.0
    block_stall: float = 5.0
    max_stalls: int = 3  # stalls before a peer is dropped (not discouraged)
    inflight_per_peer: int = 16
    block_window: int = 256
    discourage_s: float = 3600.0
    default_ban_s: int = 24 * 3600
    connect_interval: float = 1.0
    tick: float = 0.25
    ping_burst: float = 20.0
    ping_rate: float = 1.0  # pings per second a peer may send on average
    addr_burst: float = 1000.0
    addr_rate: float = 0.1  # addresses per second accepted from one peer
    unrequested_burst: float = 20.0
    unrequested_rate: float = 1.0  # unrequested blocks/txs per second
    blobs_burst: float = 1024.0
    blobs_rate: float = 1.0  # blob announcements per second accepted from one peer

    @classmethod
    def from_env(cls) -> P2PSettings:
        """Defaults, with POUW_P2P_<FIELD> environment overrides (tests shorten timeouts)."""
        s = cls()
        for name, value in vars(s).items():
            env = f"POUW_P2P_{name.upper()}"
            if env in os.environ:
                setattr(s, name, type(value)(_env_float(env, value)))
        return s


class Bucket:
    """A token bucket: ``take`` is False once a peer exceeds burst + rate * time."""

    def __init__(self, burst: float, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self.t = time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


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
    bytes_sent: int = 0
    bytes_recv: int = 0
    ping_nonce: int | None = None
    ping_sent: float = 0.0
    last_ping: float = field(default_factory=time.monotonic)
    ping_ms: float | None = None
    score: int = 0
    stalls: int = 0
    last_block: float = 0.0
    headers_requested: float | None = None
    unconnecting: int = 0
    getaddr_answered: bool = False
    inflight: set[bytes] = field(default_factory=set)
    tx_requested: dict[bytes, float] = field(default_factory=dict)
    no_have: set[bytes] = field(default_factory=set)
    known: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    blob_roots: OrderedDict[bytes, str] = field(default_factory=OrderedDict)  # root -> its URL
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        self.ping_bucket = Bucket(s.ping_burst, s.ping_rate)
        self.addr_bucket = Bucket(s.addr_burst, s.addr_rate)
        self.unrequested = Bucket(s.unrequested_burst, s.unrequested_rate)
        self.blob_bucket = Bucket(s.blobs_burst, s.blobs_rate)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def learn(self, h: bytes) -> None:
        self.known[h] = None
        if len(self.known) > MAX_KNOWN_INV:
            self.known.popitem(last=False)


@dataclass
class BlobSource:
    """A peer blob endpoint for one root, with the shape its announcers claimed."""

    kind: str
    rows: int
    line_bytes: int
    peers: set[int] = field(default_factory=set)  # ids of the peers that announced it


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def blob_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class P2PService:
    name = "p2p"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.network = node.network
        self.chain = node.chain
        self.settings = P2PSettings.from_env()
        self.port = self.config.p2p_port or self.network.p2p_port
        self.nonce = random.getrandbits(64)
        folder = self.config.network_dir
        self.addrbook = AddressBook(folder / "peers.json")
        self.bans = BanList(folder / "bans.json")
        self.discouraged: dict[str, float] = {}
        self.peers: dict[int, Peer] = {}
        self.added: set[str] = set()  # addnode "add" and --addnode/--connect
        self.connecting: set[str] = set()
        self.last_dial: dict[str, float] = {}
        self.self_addrs: set[str] = set()
        self.store = HeaderStore(self.chain)
        s = self.settings
        self.dl = Downloader(self.store, s.block_window, s.inflight_per_peer, s.block_stall)
        self.sync_peer: Peer | None = None
        self.recent_rejects: OrderedDict[bytes, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._progress = (time.monotonic(), self.chain.tip.height)
        self._last_save = time.monotonic()
        # blobs (docs/P2P.md "Blob announcements"): what peers serve, what we serve
        self.blob_table: OrderedDict[bytes, dict[str, BlobSource]] = OrderedDict()
        self._blob_store: BlobStore | None = None
        self._blob_port = 0
        self._blob_local_only = True
        self._own_blobs: OrderedDict[bytes, BlobAnn] = OrderedDict()  # newest last
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifetime ------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for text in (*self.config.connect, *self.config.addnode):
            host, port = split_host_port(text, self.network.p2p_port)
            self.added.add(f"{host}:{port}")
        if self.config.listen:
            app = web.Application()
            app.router.add_get("/p2p", self._handle_inbound)
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await self._runner.setup()
            self._site = web.TCPSite(self._runner, self.config.p2p_bind, self.port)
            await self._site.start()
            log.info("p2p listening on %s:%d", self.config.p2p_bind, self.port)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))
        self.node.events.tip_changed.connect(self._on_tip_changed)
        self.node.events.tx_accepted.connect(self._on_tx_accepted)
        self._spawn(self._connector())
        self._spawn(self._maintenance())

    async def stop(self) -> None:
        self._stopping = True
        self.node.events.tip_changed.disconnect(self._on_tip_changed)
        self.node.events.tx_accepted.disconnect(self._on_tx_accepted)
        if self._site is not None:
            await self._site.stop()  # stop accepting first
        for peer in list(self.peers.values()):
            self._drop(peer, "shutting down")
        tasks = list(self._tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.addrbook.save()
        self.bans.save()
        log.info("p2p stopped; address book saved (%d entries)", len(self.addrbook))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- connections ---------------------------------------------------------------

    def _is_discouraged(self, ip: str) -> bool:
        until = self.discouraged.get(ip)
        if until is None:
            return False
        if until <= time.time():
            del self.discouraged[ip]
            return False
        return True

    async def _handle_inbound(self, request: web.Request) -> web.StreamResponse:
        ip = request.remote or "?"
        if self._stopping:
            return web.Response(status=503)
        if self.bans.is_banned(ip) or self._is_discouraged(ip):
            log.info("refusing inbound connection from banned/discouraged %s", ip)
            return web.Response(status=403, text="banned")
        inbound = [p for p in self.peers.values() if p.inbound]
        if len(inbound) >= self.settings.max_inbound and not self._evict_one(inbound):
            return web.Response(status=503, text="full")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, autoping=True, compress=False)
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peername[1]) if peername else 0
        peer = Peer(ws, True, ip, port, settings=self.settings)
        await self._run_peer(peer)
        return ws

    def _evict_one(self, inbound: list[Peer]) -> bool:
        """Free one inbound slot; outbound, manual and long-lived peers are protected."""
        cands = [p for p in inbound if not p.manual and not p.closed]
        protected: set[int] = set()
        for key, n in (
            (lambda p: p.conntime, 4),  # longest connected
            (lambda p: -p.last_block, 4),  # recently gave us blocks
            (lambda p: p.ping_ms if p.ping_ms is not None else 1e9, 4),  # fastest
        ):
            protected |= {p.id for p in sorted(cands, key=key)[:n]}
        rest = [p for p in cands if p.id not in protected]
        if not rest:
            return False
        victim = max(rest, key=lambda p: (p.score, p.conntime))
        self._drop(victim, "evicted for a new inbound peer")
        return True

    async def _dial(self, host: str, port: int, manual: bool) -> None:
        key = f"{host}:{port}"
        self.connecting.add(key)
        self.last_dial[key] = time.monotonic()
        self.addrbook.attempt(host, port)
        try:
            assert self._session is not None
            ws = await self._session.ws_connect(
                f"http://{host}:{port}/p2p", max_msg_size=MAX_FRAME, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=5),
            )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("connecting to %s failed: %s", key, exc)
            self.addrbook.failed(host, port)
            return
        finally:
            self.connecting.discard(key)
        peer = Peer(ws, False, host, port, dial_key=key, manual=manual, settings=self.settings)
        await self._run_peer(peer)

    def _connected_keys(self) -> set[str]:
        keys = set()
        for p in self.peers.values():
            if p.dial_key:
                keys.add(p.dial_key)
            if p.inbound and p.version and p.version.listen_port:
                keys.add(f"{p.host}:{p.version.listen_port}")
        return keys | self.connecting

    async def _connector(self) -> None:
        while not self._stopping:
            try:
                self._connect_some()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("connector failed")
            await asyncio.sleep(self.settings.connect_interval)

    def _connect_some(self) -> None:
        now = time.monotonic()
        busy = self._connected_keys()
        for key in sorted(self.added):
            recent = now - self.last_dial.get(key, -1e9) < 2.0
            if key in busy or key in self.self_addrs or recent:
                continue
            host, port = split_host_port(key, self.network.p2p_port)
            self._spawn(self._dial(host, port, manual=True))
        if self.config.connect:
            return  # --connect: only these peers
        outbound = sum(1 for p in self.peers.values() if not p.inbound) + len(self.connecting)
        if outbound >= self.settings.max_outbound:
            return
        if not self.addrbook.entries and self.network.seeds:
            for seed in self.network.seeds:
                with contextlib.suppress(ValueError):
                    self.addrbook.add(*split_host_port(seed, self.network.p2p_port), source="seed")
        for e in self.addrbook.candidates(time.time()):
            if outbound >= self.settings.max_outbound:
                break
            if e.key in busy or e.key in self.self_addrs or e.key in self.added:
                continue
            if self.bans.is_banned(e.host) or self._is_discouraged(e.host):
                continue
            outbound += 1
            self._spawn(self._dial(e.host, e.port, manual=False))

    # --- one peer ------------------------------------------------------------------

    async def _run_peer(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        writer = self._spawn(self._writer(peer))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.settings.handshake_timeout, self._handshake_timeout, peer)
        self._send(peer, self._version())
        try:
            async for wsmsg in peer.ws:
                if peer.closed:
                    break
                peer.last_recv = time.time()
                if wsmsg.type is aiohttp.WSMsgType.BINARY:
                    peer.bytes_recv += len(wsmsg.data)
                    self._on_frame(peer, wsmsg.data)
                elif wsmsg.type is aiohttp.WSMsgType.TEXT:
                    self._misbehave(peer, BAN_SCORE, "text frame (the protocol is binary)")
                elif wsmsg.type is aiohttp.WSMsgType.ERROR:
                    exc = peer.ws.exception()
                    code = getattr(exc, "code", None)
                    if code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                        self._misbehave(peer, BAN_SCORE, f"oversized message: {exc}")
                    elif isinstance(exc, aiohttp.WebSocketError):
                        self._misbehave(peer, BAN_SCORE, f"malformed websocket frame: {exc}")
                    break
        except StorageError as exc:  # the node stops on it (Node.storage_fault) and says why
            log.debug("peer %d: storage failed: %s", peer.id, exc)
        except Exception:  # noqa: BLE001 - one peer's failure must not stop the node
            log.exception("peer %d failed", peer.id)
        finally:
            timer.cancel()
            self._cleanup(peer, "connection closed")
            peer.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.ws.close(), timeout=2)
            writer.cancel()

    def _handshake_timeout(self, peer: Peer) -> None:
        if not peer.ready and not peer.closed:
            self._drop(peer, "handshake timeout")

    async def _writer(self, peer: Peer) -> None:
        try:
            while True:
                data = await peer.queue.get()
                if data is None:
                    return
                peer.queued_bytes -= len(data)
                await peer.ws.send_bytes(data)
                peer.bytes_sent += len(data)
                peer.last_send = time.time()
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            self._drop(peer, "send failed")

    def _send(self, peer: Peer, msg: Message) -> None:
        if peer.closed:
            return
        data = encode(msg)
        if peer.queued_bytes + len(data) > MAX_SEND_BUFFER:
            self._drop(peer, "send buffer overflow (peer too slow)")
            return
        peer.queued_bytes += len(data)
        peer.queue.put_nowait(data)

    def _drop(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        self._cleanup(peer, reason)
        peer.queue.put_nowait(None)
        self._spawn(self._close_ws(peer))

    async def _close_ws(self, peer: Peer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(peer.ws.close(), timeout=2)

    def _cleanup(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer.id, None)
        if peer.ready:
            log.info("peer %d disconnected (%s): %s", peer.id, peer.addr, reason)
        else:
            log.info("peer %d (%s) dropped before the handshake: %s", peer.id, peer.addr, reason)
        for h in list(peer.inflight):
            if self.dl.inflight.get(h, (0, 0))[0] == peer.id:
                self.dl.requeue(h)
        peer.inflight.clear()
        if self.sync_peer is peer:
            self.sync_peer = None
        self._forget_blob_sources(peer)

    def _misbehave(self, peer: Peer, points: int, reason: str) -> None:
        peer.score += points
        if peer.score < BAN_SCORE or peer.closed:
            return
        self.discouraged[peer.host] = time.time() + self.settings.discourage_s
        log.warning(
            "discouraging %s (peer %d) for %ds: %s",
            peer.host, peer.id, self.settings.discourage_s, reason,
        )  # fmt: skip
        self._drop(peer, f"misbehaving: {reason}")

    def _version(self) -> Version:
        tip = self.chain.tip
        return Version(
            protocol=PROTOCOL_VERSION,
            chain_id=self.network.chain_id,
            genesis=self.chain.genesis.hash,
            best_height=tip.height,
            best_work=tip.cumulative_work,
            nonce=self.nonce,
            listen_port=self.port if self.config.listen else 0,
            user_agent=USER_AGENT,
        )

    # --- dispatch ------------------------------------------------------------------

    def _on_frame(self, peer: Peer, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except (DecodeError, ValueError) as exc:
            self._misbehave(peer, BAN_SCORE, f"malformed message: {exc}")
            return
        t = msg_type(msg)
        if not peer.ready:
            if isinstance(msg, Version):
                self._on_version(peer, msg)
            elif t is MsgType.VERACK and peer.version is not None:
                peer.got_verack = True
                self._handshake_done(peer)
            else:
                self._misbehave(peer, BAN_SCORE, f"{t.name} before the handshake")
            return
        handler = getattr(self, f"_on_{t.name.lower()}", None)
        if handler is None or t in (MsgType.VERSION, MsgType.VERACK):
            self._misbehave(peer, 10, f"unexpected {t.name}")
            return
        handler(peer, msg)

    def _on_version(self, peer: Peer, v: Version) -> None:
        if peer.version is not None:
            self._misbehave(peer, BAN_SCORE, "duplicate version")
            return
        if v.nonce == self.nonce:
            if peer.dial_key:
                self.self_addrs.add(peer.dial_key)
                self.addrbook.remove(peer.host, peer.port)
            self._drop(peer, "connected to self")
            return
        if v.chain_id != self.network.chain_id or v.genesis != self.chain.genesis.hash:
            if peer.dial_key and not peer.manual:
                self.addrbook.remove(peer.host, peer.port)
            why = f"wrong network (chain id {v.chain_id}, genesis {v.genesis.hex()[:16]})"
            self._drop(peer, why)
            return
        if v.protocol < MIN_PROTOCOL_VERSION:
            self._drop(peer, f"protocol version {v.protocol} is too old")
            return
        peer.version = v
        peer.best_height = v.best_height
        peer.best_work = v.best_work
        self._send(peer, Empty(MsgType.VERACK))
        if peer.got_verack:
            self._handshake_done(peer)

    def _handshake_done(self, peer: Peer) -> None:
        assert peer.version is not None
        peer.ready = True
        v = peer.version
        log.info(
            "peer %d connected: %s %s ua=%r height=%d",
            peer.id, peer.addr, "inbound" if peer.inbound else "outbound",
            v.user_agent, v.best_height,
        )  # fmt: skip
        if not peer.inbound:
            self.addrbook.good(peer.host, peer.port)
            self._send(peer, Empty(MsgType.GETADDR))
        elif v.listen_port:
            self.addrbook.add(peer.host, v.listen_port, int(time.time()), "inbound")
        self._send_blob_inventory(peer)
        self._send_mempool_inventory(peer)
        self._maybe_sync()

    def _send_mempool_inventory(self, peer: Peer) -> None:
        """Announce our pending transactions to a new peer, so a transaction accepted
        while we had no peers (or before this one came) still reaches the miners."""
        txids = self.node.mempool.txids()[:MAX_INV]
        for txid in txids:
            peer.learn(txid)
        if txids:
            self._send(peer, Inv(tuple((InvType.TX, txid) for txid in txids)))

    # --- pings ---------------------------------------------------------------------

    def _on_ping(self, peer: Peer, msg: Ping) -> None:
        if not peer.ping_bucket.take():
            self._misbehave(peer, 1, "ping flood")
            return
        self._send(peer, Pong(msg.nonce))

    def _on_pong(self, peer: Peer, msg: Pong) -> None:
        if peer.ping_nonce is not None and msg.nonce == peer.ping_nonce:
            peer.ping_ms = (time.monotonic() - peer.ping_sent) * 1000
            peer.ping_nonce = None

    # --- addresses -----------------------------------------------------------------

    def _on_getaddr(self, peer: Peer, msg: Empty) -> None:
        if peer.getaddr_answered:
            return  # once per connection
        peer.getaddr_answered = True
        addrs = tuple((e.host, e.port, e.last_seen) for e in self.addrbook.sample(MAX_ADDR))
        self._send(peer, Addr(addrs))

    def _on_addr(self, peer: Peer, msg: Addr) -> None:
        for host, port, seen in msg.addrs:
            if not peer.addr_bucket.take():
                break  # rate limited: the rest is ignored
            self.addrbook.add(host, port, seen, source=peer.host)

    # --- blob announcements -----------------------------------------------------------

    def attach_blobs(self, store: BlobStore, port: int, bind: str) -> None:
        """Announce the blobs of ``store``, served over HTTP on ``port`` (node/blobs.py
        calls this once its server is up). A server bound to a loopback address is
        announced only to peers on this machine."""
        self._blob_store = store
        self._blob_port = port
        self._blob_local_only = _loopback(bind)
        self._own_blobs.clear()
        for info in reversed(store.recent(MAX_BLOBS)):
            self._own_blobs[info.root] = self._blob_ann(info)
        store.listeners.append(self._on_blob_stored)
        for peer in self._ready_peers():
            self._send_blob_inventory(peer)

    def detach_blobs(self, store: BlobStore) -> None:
        with contextlib.suppress(ValueError):
            store.listeners.remove(self._on_blob_stored)
        if self._blob_store is store:
            self._blob_store = None
            self._own_blobs.clear()

    def _blob_ann(self, info: BlobInfo) -> BlobAnn:
        return BlobAnn(info.root, info.kind, info.rows, info.line_bytes, self._blob_port)

    def _announces_blobs_to(self, peer: Peer) -> bool:
        v = peer.version
        return (
            self._blob_store is not None and v is not None and v.protocol >= BLOBS_VERSION
            and (not self._blob_local_only or _loopback(peer.host))
        )  # fmt: skip

    def _send_blob_inventory(self, peer: Peer) -> None:
        """After the handshake: the newest blobs we hold (at most MAX_BLOBS)."""
        if not self._announces_blobs_to(peer):
            return
        items = [a for a in reversed(self._own_blobs.values()) if a.root not in peer.known]
        for a in items:
            peer.learn(a.root)
        if items:
            self._send(peer, Blobs(tuple(items[:MAX_BLOBS])))

    def _on_blob_stored(self, info: BlobInfo) -> None:
        """BlobStore listener: may run on any thread; the work is done on the loop."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._announce_blob(info)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed: nothing to announce to
                loop.call_soon_threadsafe(self._announce_blob, info)

    def _announce_blob(self, info: BlobInfo) -> None:
        if self._blob_store is None:
            return
        ann = self._blob_ann(info)
        self._own_blobs[info.root] = ann
        self._own_blobs.move_to_end(info.root)
        while len(self._own_blobs) > MAX_BLOBS:
            self._own_blobs.popitem(last=False)
        self.blob_table.pop(info.root, None)  # held now: no need for sources
        for peer in self._ready_peers():
            if self._announces_blobs_to(peer) and info.root not in peer.known:
                peer.learn(info.root)
                self._send(peer, Blobs((ann,)))

    def _on_blobs(self, peer: Peer, msg: Blobs) -> None:
        if not peer.host or peer.host == "?":
            return  # no address to reach its blob endpoint at
        url_of: dict[int, str] = {}
        added: list[bytes] = []
        for ann in msg.items:
            if not peer.blob_bucket.take():
                break  # rate limited: the rest is ignored (like addr)
            peer.learn(ann.root)
            if ann.root in self._own_blobs:
                continue
            url = url_of.setdefault(ann.port, blob_url(peer.host, ann.port))
            if self._add_blob_source(peer, ann, url):
                added.append(ann.root)
        if added:
            more = f" (+{len(added) - 4} more)" if len(added) > 4 else ""
            log.info(
                "peer %d announced blob sources: %s%s",
                peer.id, " ".join(r.hex()[:16] for r in added[:4]), more,
            )  # fmt: skip

    def _add_blob_source(self, peer: Peer, ann: BlobAnn, url: str) -> bool:
        sources = self.blob_table.get(ann.root)
        if sources is None:
            sources = self.blob_table[ann.root] = {}
            while len(self.blob_table) > MAX_BLOB_ROOTS:
                self.blob_table.popitem(last=False)
        src = sources.get(url)
        if src is None:
            if len(sources) >= MAX_BLOB_SOURCES:
                return False
            src = sources[url] = BlobSource(ann.kind, ann.rows, ann.line_bytes)
        elif (src.kind, src.rows, src.line_bytes) != (ann.kind, ann.rows, ann.line_bytes):
            return False  # same endpoint, another shape: keep the first claim
        new = peer.id not in src.peers
        src.peers.add(peer.id)
        old_url = peer.blob_roots.pop(ann.root, None)
        if old_url is not None and old_url != url:
            self._unlink_source(ann.root, old_url, peer.id)
        peer.blob_roots[ann.root] = url
        while len(peer.blob_roots) > MAX_BLOB_ROOTS_PER_PEER:
            root, old = peer.blob_roots.popitem(last=False)
            self._unlink_source(root, old, peer.id)
        return new

    def _unlink_source(self, root: bytes, url: str, peer_id: int) -> None:
        sources = self.blob_table.get(root)
        src = sources.get(url) if sources is not None else None
        if sources is None or src is None:
            return
        src.peers.discard(peer_id)
        if not src.peers:
            del sources[url]
            if not sources:
                del self.blob_table[root]

    def _forget_blob_sources(self, peer: Peer) -> None:
        for root, url in peer.blob_roots.items():
            self._unlink_source(root, url, peer.id)
        peer.blob_roots.clear()

    def blob_sources(
        self, root: bytes, kind: str | None = None, rows: int | None = None,
        line_bytes: int | None = None,
    ) -> list[str]:  # fmt: skip
        """URLs of connected peers' blob endpoints that announced ``root``, oldest
        first; with a shape given, only those whose announcement matches it (A and Bᵀ
        lines are alike, so "a" and "bt" match each other)."""
        sources = self.blob_table.get(root)
        if not sources:
            return []
        out = []
        for url, src in sources.items():
            if kind is not None and (src.kind == "c") != (kind == "c"):
                continue
            if rows is not None and src.rows != rows:
                continue
            if line_bytes is not None and src.line_bytes != line_bytes:
                continue
            out.append(url)
        return out

    def report_blob_source(self, root: bytes, url: str, reason: str, misbehaved: bool) -> None:
        """A download from ``url`` (from ``blob_sources``) failed. It is forgotten for
        ``root``; when it served data that does not match what it announced
        (``misbehaved``), the peers that announced it are discouraged."""
        announcers = [p for p in self.peers.values() if p.blob_roots.get(root) == url]
        sources = self.blob_table.get(root)
        if sources is not None:
            sources.pop(url, None)
            if not sources:
                del self.blob_table[root]
        for peer in announcers:
            peer.blob_roots.pop(root, None)
            if misbehaved:
                self._misbehave(peer, BAN_SCORE, f"bad blob {root.hex()[:16]} from {url}: {reason}")
        if not misbehaved:
            log.info("blob source %s failed for %s: %s", url, root.hex()[:16], reason)

    # --- inventory -----------------------------------------------------------------

    def _on_inv(self, peer: Peer, msg: Inv) -> None:
        want_tx: list[tuple[InvType, bytes]] = []
        for kind, h in msg.items:
            peer.learn(h)
            if kind is InvType.BLOCK:
                if self.store.known(h) or h in self.dl.inflight or h in self.store.invalid:
                    continue
                self._request_blocks(peer, [h])
            elif (
                h not in self.node.mempool
                and h not in self.recent_rejects
                and h not in peer.tx_requested
                and len(peer.tx_requested) < 4 * MAX_HEADERS
            ):
                peer.tx_requested[h] = time.monotonic()
                want_tx.append((InvType.TX, h))
        if want_tx:
            self._send(peer, GetData(tuple(want_tx)))

    def _request_blocks(self, peer: Peer, hashes: list[bytes]) -> None:
        now = time.monotonic()
        for h in hashes:
            self.dl.inflight[h] = (peer.id, now)
            peer.inflight.add(h)
        self._send(peer, GetData(tuple((InvType.BLOCK, h) for h in hashes)))

    def _on_getdata(self, peer: Peer, msg: GetData) -> None:
        missing: list[tuple[InvType, bytes]] = []
        served = 0
        for kind, h in msg.items:
            if kind is InvType.BLOCK:
                raw = self.chain.db.get_block(h) if served < MAX_BLOCKS_PER_GETDATA else None
                if raw is None:
                    missing.append((kind, h))
                    continue
                served += 1
                peer.learn(h)
                self._send_raw(peer, MsgType.BLOCK, raw)
            else:
                tx = self.node.mempool.get(h)
                if tx is None:
                    missing.append((kind, h))
                else:
                    self._send(peer, TxMsg(tx))
        if missing:
            self._send(peer, NotFound(tuple(missing)))

    def _send_raw(self, peer: Peer, t: MsgType, payload: bytes) -> None:
        if peer.closed:
            return
        data = bytes([int(t)]) + payload
        if peer.queued_bytes + len(data) > MAX_SEND_BUFFER:
            self._drop(peer, "send buffer overflow (peer too slow)")
            return
        peer.queued_bytes += len(data)
        peer.queue.put_nowait(data)

    def _on_notfound(self, peer: Peer, msg: NotFound) -> None:
        for kind, h in msg.items:
            if kind is InvType.BLOCK and h in peer.inflight:
                peer.inflight.discard(h)
                peer.no_have.add(h)
                self.dl.requeue(h)
            else:
                peer.tx_requested.pop(h, None)
        self._schedule()

    # --- transactions --------------------------------------------------------------

    def _on_tx(self, peer: Peer, msg: TxMsg) -> None:
        tx = msg.tx
        txid = tx.txid
        if peer.tx_requested.pop(txid, None) is None and not peer.unrequested.take():
            self._misbehave(peer, 20, "unrequested transaction flood")
            return
        peer.learn(txid)
        if txid in self.recent_rejects:
            return
        result = self.node.submit_transaction(tx)
        if result.ok or result.reject is MempoolReject.ALREADY_KNOWN:
            return
        if result.reject in _CONSENSUS_TX_REJECTS:
            self._remember_reject(txid)
            self._misbehave(peer, BAN_SCORE, f"invalid transaction: {result.reject}")

    def _remember_reject(self, h: bytes) -> None:
        self.recent_rejects[h] = None
        if len(self.recent_rejects) > MAX_RECENT_REJECTS:
            self.recent_rejects.popitem(last=False)

    def _on_tx_accepted(self, tx: Transaction) -> None:
        txid = tx.txid
        for peer in self._ready_peers():
            if txid not in peer.known:
                peer.learn(txid)
                self._send(peer, Inv(((InvType.TX, txid),)))

    # --- blocks and headers --------------------------------------------------------

    def _ready_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.ready and not p.closed]

    def _on_tip_changed(self, change: TipChange) -> None:
        if not change.connected:
            return
        tip = self.chain.tip
        log.info("new tip height=%d hash=%s", tip.height, tip.hash.hex())
        if self.dl.target_height() - self.chain.tip.height > IBD_LAG:
            return  # catching up: announce when done
        h = self.chain.tip.hash
        for peer in self._ready_peers():
            if h not in peer.known:
                peer.learn(h)
                self._send(peer, Inv(((InvType.BLOCK, h),)))

    def _on_block(self, peer: Peer, msg: BlockMsg) -> None:
        block = msg.block
        h = block.hash
        peer.learn(h)
        requested = h in peer.inflight
        peer.inflight.discard(h)
        if not requested and not peer.unrequested.take():
            self._misbehave(peer, 20, "unrequested block flood")
            return
        peer.last_block = time.monotonic()
        if self.dl.inflight.get(h, (0, 0))[0] == peer.id:
            self.dl.inflight.pop(h, None)
        if h in self.store.entries:
            self.dl.add_block(block, peer.id)
            self._drain()
        else:
            self._submit(block, peer)
        self._schedule()

    def _submit(self, block: Block, peer: Peer | None) -> bool:
        result = self.node.submit_block(block)
        check = result.check
        self.store.forget(block.hash)
        if check.verdict is Verdict.INVALID:
            self.store.mark_invalid(block.hash)
            self.dl.retarget()
            if peer is not None and check.reason is not BlockReject.PARENT_INVALID:
                self._misbehave(peer, BAN_SCORE, f"invalid block {block.hash.hex()[:16]}: {check}")
            elif peer is not None:
                self._misbehave(peer, BAN_SCORE, "block on an invalid chain")
            return False
        if check.verdict is Verdict.DEFER and check.reason is BlockReject.UNKNOWN_PARENT:
            if peer is not None and not peer.closed and peer.headers_requested is None:
                self._request_headers(peer)  # fill the gap; not punished
        return True

    def _drain(self) -> None:
        while True:
            ready = self.dl.ready()
            if not ready:
                return
            for block, pid in ready:
                self._submit(block, self.peers.get(pid))

    def _request_headers(self, peer: Peer, start: bytes | None = None) -> None:
        locator = ([start] if start is not None else []) + self._locator()
        peer.headers_requested = time.monotonic()
        self._send(peer, GetHeaders(tuple(locator[:MAX_LOCATOR]), bytes(32)))

    def _locator(self) -> list[bytes]:
        out: list[bytes] = []
        height, step = self.chain.tip.height, 1
        while height > 0 and len(out) < MAX_LOCATOR - 2:
            h = self.chain.active_hash(height)
            if h is not None:
                out.append(h)
            if len(out) >= 10:
                step *= 2
            height -= step
        out.append(self.chain.genesis.hash)
        return out

    def _on_getheaders(self, peer: Peer, msg: GetHeaders) -> None:
        start = 1
        for h in msg.locator:
            rec = self.chain.index.get(h)
            if rec is not None and self.chain.active_hash(rec.height) == h:
                start = rec.height + 1
                break
        headers: list[Header] = []
        size = 0
        end = min(self.chain.tip.height, start + MAX_HEADERS - 1)
        for height in range(start, end + 1):
            bh = self.chain.active_hash(height)
            raw = self.chain.db.get_block(bh) if bh is not None else None
            if raw is None:
                break
            header = Header.read_from(Reader(raw))
            n = len(header.seal) + 300
            if headers and size + n > HEADERS_SOFT_BYTES:
                break
            headers.append(header)
            size += n
            if bh == msg.stop:
                break
        self._send(peer, Headers(tuple(headers)))

    def _on_headers(self, peer: Peer, msg: Headers) -> None:
        solicited = peer.headers_requested is not None
        peer.headers_requested = None
        headers = msg.headers
        if not solicited and len(headers) > MAX_UNSOLICITED_HEADERS:
            self._misbehave(peer, BAN_SCORE, f"{len(headers)} unrequested headers")
            return
        if not headers:
            if self.sync_peer is peer:
                self.sync_peer = None
            self.store.prune()
            self.dl.retarget()
            return
        res = self.store.add_chain(headers)
        if res.invalid is not None:
            self._misbehave(peer, BAN_SCORE, f"invalid header: {res.invalid}")
            return
        if res.unconnecting:
            peer.unconnecting += 1
            if peer.unconnecting <= MAX_UNCONNECTING:
                self._request_headers(peer)  # not punished: ask from our locator
            return
        if res.last is not None:
            work = self.store.work_of(res.last) or 0
            height = self.store.height_of(res.last) or 0
            if work > peer.best_work:
                peer.best_work, peer.best_height = work, height
            peer.best_height = max(peer.best_height, height)
        if res.added:
            self.dl.retarget()
        if solicited and res.last is not None and not res.full and not res.deferred:
            self._request_headers(peer, res.last)
        elif self.sync_peer is peer:
            self.sync_peer = None
        self._schedule()

    def _maybe_sync(self) -> None:
        if self.sync_peer is not None and not self.sync_peer.closed:
            return
        best = self.store.best()
        floor = max(self.chain.tip.cumulative_work, best.work if best else 0)
        cands = [
            p for p in self._ready_peers() if p.best_work > floor and p.headers_requested is None
        ]
        if not cands:
            return
        peer = max(cands, key=lambda p: p.best_work)
        self.sync_peer = peer
        self._request_headers(peer)

    def _schedule(self) -> None:
        if not self.dl.want:
            return
        peers = sorted(self._ready_peers(), key=lambda p: len(p.inflight))
        for peer in peers:
            budget = self.settings.inflight_per_peer - len(peer.inflight)
            if budget <= 0:
                continue

            def can_serve(h: bytes, height: int, peer: Peer = peer) -> bool:
                return h not in peer.no_have and peer.best_height >= height

            hashes = self.dl.next_for(can_serve, budget)
            if hashes:
                self._request_blocks(peer, hashes)

    # --- periodic work -------------------------------------------------------------

    async def _maintenance(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.tick)
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("p2p maintenance failed")

    def _tick(self) -> None:
        now = time.monotonic()
        s = self.settings
        for peer in self._ready_peers():
            if peer.ping_nonce is not None and now - peer.ping_sent > s.ping_timeout:
                self._drop(peer, "ping timeout")
                continue
            if peer.ping_nonce is None and now - peer.last_ping > s.ping_interval:
                peer.ping_nonce = random.getrandbits(64)
                peer.ping_sent = peer.last_ping = now
                self._send(peer, Ping(peer.ping_nonce))
            asked = peer.headers_requested
            if asked is not None and now - asked > s.headers_timeout:
                self._drop(peer, "headers request timed out")
                continue
            for txid in [t for t, at in peer.tx_requested.items() if now - at > 60]:
                del peer.tx_requested[txid]
        for h, pid in self.dl.stalled(now):
            slow = self.peers.get(pid)
            self.dl.requeue(h)
            if slow is not None:
                slow.inflight.discard(h)
                slow.no_have.add(h)
                slow.stalls += 1
                log.info("block %s stalled on peer %d: asking another peer", h.hex()[:16], pid)
                if slow.stalls >= s.max_stalls:
                    self._drop(slow, "stalling block download")
        self._maybe_sync()
        self._schedule()
        self._log_progress(now)
        if now - self._last_save > 60 and self.addrbook.dirty:
            self._last_save = now
            self.addrbook.save()

    def _log_progress(self, now: float) -> None:
        target = self.dl.target_height()
        height = self.chain.tip.height
        t0, h0 = self._progress
        if target <= height or now - t0 < 2.0:
            if target <= height:
                self._progress = (now, height)
            return
        rate = (height - h0) / (now - t0)
        eta = (target - height) / rate if rate > 0 else float("inf")
        log.info(
            "sync progress height=%d/%d progress=%.1f%% rate=%.1f blocks/s eta=%s peers=%d",
            height, target, 100.0 * height / max(target, 1), rate,
            f"{eta:.0f}s" if eta != float("inf") else "?", len(self._ready_peers()),
        )  # fmt: skip
        self._progress = (now, height)

    # --- the RPC layer's view ------------------------------------------------------

    def connection_count(self) -> int:
        return len(self._ready_peers())

    def peer_info(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.peers.values(), key=lambda p: p.id):
            v = p.version
            out.append({
                "id": p.id,
                "addr": p.addr,
                "inbound": p.inbound,
                "manual": p.manual,
                "handshake_complete": p.ready,
                "version": v.protocol if v else None,
                "subver": v.user_agent if v else "",
                "startingheight": v.best_height if v else None,
                "synced_height": p.best_height,
                "conntime": int(p.conntime),
                "lastsend": int(p.last_send),
                "lastrecv": int(p.last_recv),
                "bytessent": p.bytes_sent,
                "bytesrecv": p.bytes_recv,
                "pingtime": p.ping_ms / 1000 if p.ping_ms is not None else None,
                "banscore": p.score,
                "inflight": len(p.inflight),
            })  # fmt: skip
        return out

    def add_node(self, host_port: str, command: str = "add") -> None:
        """``add`` keeps a connection to it, ``remove`` stops that, ``onetry`` dials once."""
        host, port = split_host_port(host_port, self.network.p2p_port)
        key = f"{host}:{port}"
        if command == "add":
            self.added.add(key)
        elif command == "remove":
            if key not in self.added:
                raise KeyError(f"{key} was not added")
            self.added.discard(key)
        elif command == "onetry":
            self._spawn(self._dial(host, port, manual=True))
        else:
            raise ValueError(f"unknown addnode command {command!r}")

    def disconnect_node(self, address: str | None = None, node_id: int | None = None) -> bool:
        for p in list(self.peers.values()):
            if (node_id is not None and p.id == node_id) or (
                address is not None and address in (p.addr, p.dial_key)
            ):
                self._drop(p, "disconnected by request")
                return True
        return False

    def set_ban(
        self, ip: str, command: str = "add", seconds: int | None = None, reason: str = "manual"
    ) -> bool:
        if command == "add":
            self.bans.add(ip, seconds or self.settings.default_ban_s, reason)
            for p in list(self.peers.values()):
                if p.host == ip:
                    self._drop(p, "banned")
            return True
        if command == "remove":
            self.discouraged.pop(ip, None)
            return self.bans.remove(ip)
        raise ValueError(f"unknown setban command {command!r}")

    def list_banned(self) -> list[dict[str, Any]]:
        return self.bans.listing()

    def clear_banned(self) -> None:
        self.bans.clear()
        self.discouraged.clear()
