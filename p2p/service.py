"""The P2P service: lifetime, handshake, message dispatch, pings and the RPC view.

The work is done by one module per job: p2p/peers.py (connections, eviction,
misbehaviour), p2p/relay.py (inventory, transactions, recent rejects),
p2p/blocksync.py with p2p/sync.py (headers and blocks), p2p/lowwork.py with
p2p/presync.py (headers presync), p2p/headerpace.py (header request sizes), p2p/addrman.py with
p2p/addrbook.py (addresses), p2p/blobrelay.py (blob announcements). The node is
reached only through p2p/api.NodeAPI; all chain work happens on the event loop thread
through ``submit_block`` and ``submit_transaction``. docs/P2P.md documents messages,
caps, timeouts and rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from chain.encoding import DecodeError, Reader
from chain.header import Header
from p2p.addrbook import AddressBook, BanList, join_host_port, split_host_port
from p2p.addrman import AddrManager
from p2p.api import NodeAPI
from p2p.blobrelay import BlobRelay
from p2p.blocksync import BlockSync
from p2p.guard import GuardedSite, UpgradeGuard, fd_budget
from p2p.handshake_cap import handshake_refusal
from p2p.lograte import RateLimitFilter
from p2p.lograte import install as install_log_limits
from p2p.lograte import uninstall as uninstall_log_limits
from p2p.peer import BAN_SCORE, P2PSettings, Peer
from p2p.peers import PeerManager
from p2p.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    USER_AGENT,
    Empty,
    Message,
    MsgType,
    Ping,
    Pong,
    Version,
    decode,
    msg_type,
)
from p2p.relay import Relay

if TYPE_CHECKING:
    from compute.blobs import BlobStore

log = logging.getLogger("pouw.p2p")

TX_REQUEST_EXPIRY_S = 60.0  # a requested tx not delivered by then may be asked again
ADDRBOOK_SAVE_S = 60.0
# Frames at least this large are decoded off the event loop (a 4 MB block takes ~0.1 s+).
THREAD_DECODE_BYTES = 256 * 1024
PING_BUSY_FACTOR = 10  # a peer answering our requests may be this many ping timeouts late
# A peer in its handshake may send only these, and no frame longer than a version: the
# rest is judged by its first byte, before any decoding (a 4 MB block sent before the
# version took 0.28 s of the event loop to decode, only to be refused).


class P2PService:
    name = "p2p"

    def __init__(self, node: NodeAPI) -> None:
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
        self.pm = PeerManager(self, self.settings, self.addrbook, self.bans)
        self.peers = self.pm.peers  # the node's health checks read it
        self.sync = BlockSync(self)
        self.dl = self.sync.dl
        self.relay = Relay(self)
        self.addrs = AddrManager(self, self.addrbook)
        self.blobs = BlobRelay(self.pm)
        self.stopping = False
        self._stop_requested = asyncio.Event()  # wakes the periodic loops at stop
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._log_filter: RateLimitFilter | None = None
        self._last_save = time.monotonic()
        self._handlers: dict[MsgType, Callable[[Peer, Any], None]] = {
            MsgType.VERSION: self.on_version,  # after the handshake: a duplicate
            MsgType.PING: self.on_ping,
            MsgType.PONG: self.on_pong,
            MsgType.INV: self.relay.on_inv,
            MsgType.GETDATA: self.relay.on_getdata,
            MsgType.NOTFOUND: self.relay.on_notfound,
            MsgType.TX: self.relay.on_tx,
            MsgType.GETHEADERS: self.sync.on_getheaders,
            MsgType.HEADERS: self.sync.on_headers,
            MsgType.BLOCK: self.sync.on_block,
            MsgType.GETADDR: self.addrs.on_getaddr,
            MsgType.ADDR: self.addrs.on_addr,
            MsgType.BLOBS: self.blobs.on_blobs,
        }

    # --- lifetime ------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = self.blobs.loop = asyncio.get_running_loop()
        self._log_filter = install_log_limits()
        self._budget_fds()
        s = self.settings
        for text in (*self.config.connect, *self.config.addnode):
            host, port = split_host_port(text, self.network.p2p_port)
            self.pm.added.add(join_host_port(host, port))
        if self.config.listen:
            app = web.Application()
            app.router.add_get("/p2p", self.pm.handle_inbound)
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await self._runner.setup()
            guard = UpgradeGuard(
                s.upgrade_timeout, s.max_pending_upgrades, s.max_pending_per_ip,
                s.max_inbound + s.max_pending_upgrades,
            )  # fmt: skip
            guard.on_handshake_refused = self.pm.discourage
            self.pm.guard = guard
            self._site = GuardedSite(self._runner, self.config.p2p_bind, self.port, guard)
            await self._site.start()
            log.info("p2p listening on %s:%d", self.config.p2p_bind, self.port)
        self.pm.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=s.connect_timeout)
        )
        self.node.events.tip_changed.connect(self.relay.on_tip_changed)
        self.node.events.tx_accepted.connect(self.relay.on_tx_accepted)
        self.node.events.tx_resent.connect(self.relay.announce_tx)
        self.spawn(self.pm.connector())
        self.spawn(self._maintenance())

    async def stop(self) -> None:
        self.stopping = self.blobs.stopping = True
        self._stop_requested.set()
        self.node.events.tip_changed.disconnect(self.relay.on_tip_changed)
        self.node.events.tx_accepted.disconnect(self.relay.on_tx_accepted)
        self.node.events.tx_resent.disconnect(self.relay.announce_tx)
        if self._site is not None:
            await self._site.stop()  # stop accepting first
        for peer in list(self.pm.peers.values()):
            self.pm.drop(peer, "shutting down")
        tasks = list(self._tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pm.session is not None:
            await self.pm.session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.addrbook.save()
        self.bans.save()
        log.info("p2p stopped; address book saved (%d entries)", len(self.addrbook))
        if self._log_filter is not None:
            uninstall_log_limits(self._log_filter)

    def _budget_fds(self) -> None:
        """Fit inbound, outbound and not-yet-upgraded sockets into the open-file limit,
        keeping RESERVED_FDS for RPC and the database; shrink inbound if it is short."""
        s = self.settings
        wanted = s.max_inbound + s.max_outbound + s.max_pending_upgrades
        got = fd_budget(wanted)
        if got < wanted:
            short = wanted - got
            s.max_pending_upgrades = max(4, s.max_pending_upgrades - short)
            s.max_inbound = max(4, s.max_inbound - max(0, short - 60))
            log.warning(
                "open-file limit too low for P2P: inbound %d, pending upgrades %d "
                "(raise `ulimit -n`)", s.max_inbound, s.max_pending_upgrades,
            )  # fmt: skip

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def on_peer_closed(self, peer: Peer) -> None:
        self.sync.peer_closed(peer)
        self.relay.peer_closed(peer)
        self.blobs.forget_sources(peer)

    def version_msg(self) -> Version:
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

    # --- dispatch and handshake ----------------------------------------------------

    async def on_frame_async(self, peer: Peer, frame: bytes) -> None:
        """A large block frame is first judged by its header alone (an orphan or a block
        already judged costs no decoding), then decoded in a worker thread so the event
        loop (and RPC) keeps running; its messages still go in order."""
        if not peer.ready and not self._handshake_frame(peer, frame):
            return
        if len(frame) < THREAD_DECODE_BYTES or not peer.ready:
            self.on_frame(peer, frame)
            return
        if frame[0] == MsgType.BLOCK:
            try:
                header = Header.read_from(Reader(memoryview(frame)[1:]))
            except (DecodeError, ValueError) as exc:
                self.pm.misbehave(peer, BAN_SCORE, f"malformed message: {exc}")
                return
            if not self.sync.wants_body(peer, header):
                return
        try:
            msg: Message = await asyncio.to_thread(decode, frame)
        except (DecodeError, ValueError) as exc:
            self.pm.misbehave(peer, BAN_SCORE, f"malformed message: {exc}")
            return
        if not peer.closed:
            self.on_message(peer, msg)

    def _handshake_frame(self, peer: Peer, frame: bytes) -> bool:
        """Whether a frame of a peer still in its handshake may be decoded: a version
        or verack of a version's size at most (anything else is misbehaviour). An
        inbound peer's frames were judged so as they arrived (p2p/handshake_cap.py);
        this judges an outbound peer's."""
        why = handshake_refusal(frame[0] if frame else None, len(frame))
        if why is not None:
            self.pm.misbehave(peer, BAN_SCORE, why)
        return why is None

    def on_frame(self, peer: Peer, frame: bytes) -> None:
        try:
            msg: Message = decode(frame)
        except (DecodeError, ValueError) as exc:
            self.pm.misbehave(peer, BAN_SCORE, f"malformed message: {exc}")
            return
        self.on_message(peer, msg)

    def on_message(self, peer: Peer, msg: Message) -> None:
        t = msg_type(msg)
        if not peer.ready:
            if isinstance(msg, Version):
                self.on_version(peer, msg)
            elif t is MsgType.VERACK and peer.version is not None:
                peer.got_verack = True
                self.handshake_done(peer)
            else:
                self.pm.misbehave(peer, BAN_SCORE, f"{t.name} before the handshake")
            return
        handler = self._handlers.get(t)
        if handler is None:
            self.pm.misbehave(peer, 10, f"unexpected {t.name}")
            return
        handler(peer, msg)

    def on_version(self, peer: Peer, v: Version) -> None:
        if peer.version is not None:
            self.pm.misbehave(peer, BAN_SCORE, "duplicate version")
            return
        if v.nonce == self.nonce:
            if peer.dial_key:
                self.pm.self_addrs.add(peer.dial_key)
                self.addrbook.remove(peer.host, peer.port)
            self.pm.drop(peer, "connected to self")
            return
        if v.chain_id != self.network.chain_id or v.genesis != self.chain.genesis.hash:
            if peer.dial_key and not peer.manual:
                self.addrbook.remove(peer.host, peer.port)
            why = f"wrong network (chain id {v.chain_id}, genesis {v.genesis.hex()[:16]})"
            self.pm.drop(peer, why)
            return
        if v.protocol < MIN_PROTOCOL_VERSION:
            self.pm.drop(peer, f"protocol version {v.protocol} is too old")
            return
        peer.version = v
        peer.best_height = v.best_height
        peer.best_work = v.best_work
        self.pm.send(peer, Empty(MsgType.VERACK))
        if peer.got_verack:
            self.handshake_done(peer)

    def handshake_done(self, peer: Peer) -> None:
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
            self.pm.send(peer, Empty(MsgType.GETADDR))
        elif v.listen_port:
            self.addrbook.add(peer.host, v.listen_port, int(time.time()), "inbound")
        self.blobs.send_inventory(peer)
        self.relay.send_mempool_inventory(peer)
        self.sync.maybe_sync()

    # --- pings ---------------------------------------------------------------------

    def on_ping(self, peer: Peer, msg: Ping) -> None:
        if not peer.ping_bucket.take():
            self.pm.misbehave(peer, 1, "ping flood")
            return
        self.pm.send(peer, Pong(msg.nonce))

    def on_pong(self, peer: Peer, msg: Pong) -> None:
        if peer.ping_nonce is not None and msg.nonce == peer.ping_nonce:
            peer.ping_ms = (time.monotonic() - peer.ping_sent) * 1000
            peer.ping_nonce = None

    # --- periodic work -------------------------------------------------------------

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or until the service stops (a periodic loop then ends at
        once, not a sleep later: the node's shutdown waits for these loops). True
        while the service runs."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        return not self.stopping

    async def _maintenance(self) -> None:
        while await self.pause(self.settings.tick):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("p2p maintenance failed")

    def _tick(self) -> None:
        now = time.monotonic()
        s = self.settings
        for peer in self.pm.ready_peers():
            busy = peer.inflight or peer.headers_requested is not None  # timed by sync
            if peer.ping_nonce is not None and now - peer.ping_sent > s.ping_timeout:
                if busy and now - peer.last_recv_mono < s.ping_timeout * PING_BUSY_FACTOR:
                    pass  # a large reply may be queued before its pong on a slow link
                else:
                    self.pm.drop(peer, "ping timeout")
                    continue
            if peer.ping_nonce is None and now - peer.last_ping > s.ping_interval:
                peer.ping_nonce = random.getrandbits(64)
                peer.ping_sent = peer.last_ping = now
                self.pm.send(peer, Ping(peer.ping_nonce))
            expired = [t for t, at in peer.tx_requested.items() if now - at > TX_REQUEST_EXPIRY_S]
            for txid in expired:
                del peer.tx_requested[txid]
        self.sync.tick(now)
        if now - self._last_save > ADDRBOOK_SAVE_S and self.addrbook.dirty:
            self._last_save = now
            self.addrbook.save()

    # --- the RPC layer's view ------------------------------------------------------

    def connection_count(self) -> int:
        return len(self.pm.ready_peers())

    def orphan_count(self) -> int:
        """Txs held because they came too far ahead of their sender's nonce."""
        return len(self.relay.orphans)

    def peer_info(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.pm.peers.values(), key=lambda p: p.id):
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
        key = join_host_port(host, port)
        if command == "add":
            self.pm.added.add(key)
        elif command == "remove":
            if key not in self.pm.added:
                raise KeyError(f"{key} was not added")
            self.pm.added.discard(key)
        elif command == "onetry":
            self.spawn(self.pm.dial(host, port, manual=True))
        else:
            raise ValueError(f"unknown addnode command {command!r}")

    def disconnect_node(self, address: str | None = None, node_id: int | None = None) -> bool:
        for p in list(self.pm.peers.values()):
            if (node_id is not None and p.id == node_id) or (
                address is not None and address in (p.addr, p.dial_key)
            ):
                self.pm.drop(p, "disconnected by request")
                return True
        return False

    def set_ban(
        self, ip: str, command: str = "add", seconds: int | None = None, reason: str = "manual"
    ) -> bool:
        if command == "add":
            self.bans.add(ip, seconds or self.settings.default_ban_s, reason)
            for p in list(self.pm.peers.values()):
                if p.host == ip:
                    self.pm.drop(p, "banned")
            return True
        if command == "remove":
            self.pm.discouraged.pop(ip, None)
            return self.bans.remove(ip)
        raise ValueError(f"unknown setban command {command!r}")

    def list_banned(self) -> list[dict[str, Any]]:
        return self.bans.listing()

    def clear_banned(self) -> None:
        self.bans.clear()
        self.pm.discouraged.clear()

    # --- blobs, for node/blobs.py and the market miner -------------------------------

    def attach_blobs(self, store: BlobStore, port: int, bind: str) -> None:
        self.blobs.attach_blobs(store, port, bind)

    def detach_blobs(self, store: BlobStore) -> None:
        self.blobs.detach_blobs(store)

    def blob_sources(
        self, root: bytes, kind: str | None = None, rows: int | None = None,
        line_bytes: int | None = None,
    ) -> list[str]:  # fmt: skip
        return self.blobs.blob_sources(root, kind, rows, line_bytes)

    def report_blob_source(self, root: bytes, url: str, reason: str, misbehaved: bool) -> None:
        self.blobs.report_blob_source(root, url, reason, misbehaved)
