"""Connections: accepting, dialling, evicting, sending to and dropping peers, and
misbehaviour scores with discouragement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from chain.storage import StorageError
from p2p.addrbook import AddressBook, BanList, join_host_port, split_host_port
from p2p.guard import UpgradeGuard
from p2p.netgroup import netgroup
from p2p.peer import BAN_SCORE, P2PSettings, Peer
from p2p.protocol import MAX_FRAME, Message, MsgType, encode

if TYPE_CHECKING:
    from p2p.service import P2PService

log = logging.getLogger("pouw.p2p")

# Queued outgoing bytes before a slow peer is dropped: one largest block (21.1 MB) plus
# what ``on_getdata`` serves ahead (SEND_LOW_WATER), with room to spare.
MAX_SEND_BUFFER = 32 * 1024 * 1024
# All peers' queues together; past it the peer with the longest queue is dropped.
MAX_SEND_TOTAL = 256 * 1024 * 1024
# getdata is served lazily: the next block is queued only while less than this waits.
SEND_LOW_WATER = 2 * 1024 * 1024
MAX_DISCOURAGED = 50_000  # discouraged addresses remembered (oldest forgotten first)
# aiohttp refuses a message of exactly max_msg_size bytes: allow MAX_FRAME itself.
WS_MAX_MSG_SIZE = MAX_FRAME + 1
# A peer the operator named that cannot be reached is said once per this long: the
# reason at once, then a reminder while it stays down, not a line every few seconds.
UNREACHABLE_SAY_S = 600


class PeerManager:
    def __init__(
        self, svc: P2PService, settings: P2PSettings, addrbook: AddressBook, bans: BanList
    ) -> None:
        self.svc = svc
        self.settings = settings
        self.addrbook = addrbook
        self.bans = bans
        self.discouraged: dict[str, float] = {}
        self.peers: dict[int, Peer] = {}
        self.added: set[str] = set()  # addnode "add" and --addnode/--connect
        self.connecting: set[str] = set()
        self.last_dial: dict[str, float] = {}
        self.self_addrs: set[str] = set()
        self.session: aiohttp.ClientSession | None = None
        self.total_queued = 0
        self._evict_salt = random.getrandbits(64)
        self.guard: UpgradeGuard | None = None  # set when listening
        self._unreachable_said: dict[str, float] = {}  # manual peer -> when last said

    def ready_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.ready and not p.closed]

    # --- inbound -------------------------------------------------------------------

    def is_discouraged(self, ip: str) -> bool:
        until = self.discouraged.get(ip)
        if until is None:
            return False
        if until <= time.time():
            del self.discouraged[ip]
            return False
        return True

    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        ip = request.remote or "?"
        if self.guard is not None:
            self.guard.upgraded(request.transport)
        if self.svc.stopping:
            return _refuse(503, "stopping")
        if self.bans.is_banned(ip) or self.is_discouraged(ip):
            log.info("refusing inbound connection from banned/discouraged %s", ip)
            return _refuse(403, "banned")
        inbound = [p for p in self.peers.values() if p.inbound and not p.closed]
        s = self.settings
        if sum(1 for p in inbound if p.host == ip) >= s.max_inbound_per_ip:
            return _refuse(503, "too many connections from this address")
        group = netgroup(ip)
        if sum(1 for p in inbound if netgroup(p.host) == group) >= s.max_inbound_per_group:
            return _refuse(503, "too many connections from this network")
        if len(inbound) >= s.max_inbound and not self.evict_one(inbound):
            return _refuse(503, "full")
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MSG_SIZE, autoping=True, compress=False)
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peername[1]) if peername else 0
        peer = Peer(ws, True, ip, port, settings=self.settings)
        await self.run_peer(peer)
        return ws

    def evict_one(self, inbound: list[Peer]) -> bool:
        """Free one inbound slot as Bitcoin Core does: protect peers an attacker cannot
        easily imitate (4 from distinct network groups, the 4 that most recently gave us
        a block, the 4 fastest pings, then the longest connected), and evict the youngest
        unprotected peer of the network group holding the most connections. Manual
        peers stay."""
        cands = [p for p in inbound if not p.manual and not p.closed]
        protected: set[int] = set()
        by_group: dict[str, list[Peer]] = {}
        for p in cands:
            by_group.setdefault(netgroup(p.host), []).append(p)
        # the oldest peer of 4 groups chosen by a key only this node knows
        for group in sorted(by_group, key=lambda g: hash((self._evict_salt, g)))[:4]:
            protected.add(min(by_group[group], key=lambda p: p.conntime).id)
        gave_blocks = [p for p in cands if p.last_block > 0]
        pinged = [p for p in cands if p.ping_ms is not None]
        for pool, key, n in (
            (gave_blocks, lambda p: -p.last_block, 4),  # most recently gave us a block
            (pinged, lambda p: p.ping_ms, 4),  # fastest
            (cands, lambda p: p.conntime, 4),  # longest connected
        ):
            fresh = [p for p in sorted(pool, key=key) if p.id not in protected]
            protected |= {p.id for p in fresh[:n]}
        rest = [p for p in cands if p.id not in protected]
        if not rest:
            return False
        groups: dict[str, list[Peer]] = {}
        for p in rest:
            groups.setdefault(netgroup(p.host), []).append(p)
        # the group holding the most connections, its protected ones counted too: an
        # attacker whose groups were cut down to single unprotected peers (the rest
        # protected) loses one before a lone peer of a group of its own (Core counts
        # only the unprotected, and there a newcomer younger than them was evicted)
        crowd = max(
            groups.values(),
            key=lambda ps: (len(by_group[netgroup(ps[0].host)]), max(p.conntime for p in ps)),
        )
        victim = max(crowd, key=lambda p: (p.score, p.conntime))
        self.drop(victim, "evicted for a new inbound peer")
        return True

    # --- outbound ------------------------------------------------------------------

    async def dial(self, host: str, port: int, manual: bool) -> None:
        key = join_host_port(host, port)
        self.connecting.add(key)
        self.last_dial[key] = time.monotonic()
        self.addrbook.attempt(host, port)
        try:
            assert self.session is not None
            ws = await asyncio.wait_for(
                self.session.ws_connect(
                    f"http://{key}/p2p", max_msg_size=WS_MAX_MSG_SIZE, autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                ),
                self.settings.connect_timeout + self.settings.upgrade_timeout,
            )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError covers UnicodeError from a host name IDNA cannot encode
            log.debug("connecting to %s failed: %r", key, exc)
            self.addrbook.failed(host, port)
            if manual:
                self._say_unreachable(key, exc)
            return
        finally:
            self.connecting.discard(key)
        if manual and self._unreachable_said.pop(key, None) is not None:
            log.info("reached %s at last", key)
        peer = Peer(ws, False, host, port, dial_key=key, manual=manual, settings=self.settings)
        await self.run_peer(peer)

    def _say_unreachable(self, key: str, exc: BaseException) -> None:
        """A peer the operator named (--connect, --addnode, addnode) cannot be reached:
        a warning with the reason, once every UNREACHABLE_SAY_S per peer (it is dialled
        again every few seconds)."""
        now = time.monotonic()
        if now - self._unreachable_said.get(key, -1e9) < UNREACHABLE_SAY_S:
            return
        self._unreachable_said[key] = now
        if isinstance(exc, TimeoutError):
            why = "no answer in time"
        elif isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status in (403, 503):
            why = f"its node refused us (HTTP {exc.status}: banned, full or stopping)"
        elif isinstance(exc, aiohttp.WSServerHandshakeError):
            why = f"it answered HTTP {exc.status}, not a pouw P2P port"
        else:
            err = getattr(exc, "os_error", None) or exc
            code = getattr(err, "errno", None)
            if isinstance(err, OSError) and isinstance(code, int) and code > 0:
                why = os.strerror(code)  # "Connection refused", not asyncio's wording
            else:  # a name that does not resolve: the resolver's own words
                why = str(getattr(err, "strerror", None) or err) or type(err).__name__
        log.warning(
            "cannot reach peer %s (%s): check the address and that its node runs and "
            "listens there; trying again every few seconds (said again in %d minutes)",
            key, why, UNREACHABLE_SAY_S // 60,
        )  # fmt: skip

    def connected_keys(self) -> set[str]:
        keys = set()
        for p in self.peers.values():
            if p.dial_key:
                keys.add(p.dial_key)
            if p.inbound and p.version and p.version.listen_port:
                keys.add(join_host_port(p.host, p.version.listen_port))
        return keys | self.connecting

    async def connector(self) -> None:
        while not self.svc.stopping:
            try:
                self.connect_some()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("connector failed")
            await self.svc.pause(self.settings.connect_interval)

    def connect_some(self) -> None:
        now = time.monotonic()
        busy = self.connected_keys()
        config, network = self.svc.config, self.svc.network
        for key in sorted(self.added):
            recent = now - self.last_dial.get(key, -1e9) < 2.0
            if key in busy or key in self.self_addrs or recent:
                continue
            host, port = split_host_port(key, network.p2p_port)
            self.svc.spawn(self.dial(host, port, manual=True))
        if config.connect:
            return  # --connect: only these peers
        outbound = sum(1 for p in self.peers.values() if not p.inbound) + len(self.connecting)
        if outbound >= self.settings.max_outbound:
            return
        if not self.addrbook.entries and network.seeds:
            for seed in network.seeds:
                with contextlib.suppress(ValueError):
                    self.addrbook.add(*split_host_port(seed, network.p2p_port), source="seed")
        for e in self.addrbook.candidates(time.time()):
            if outbound >= self.settings.max_outbound:
                break
            if e.key in busy or e.key in self.self_addrs or e.key in self.added:
                continue
            if self.bans.is_banned(e.host) or self.is_discouraged(e.host):
                continue
            outbound += 1
            self.svc.spawn(self.dial(e.host, e.port, manual=False))

    # --- one peer ------------------------------------------------------------------

    async def run_peer(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        writer = self.svc.spawn(self._writer(peer))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.settings.handshake_timeout, self._handshake_timeout, peer)
        self.send(peer, self.svc.version_msg())
        try:
            async for wsmsg in peer.ws:
                if peer.closed:
                    break
                peer.last_recv = time.time()
                peer.last_recv_mono = time.monotonic()
                if wsmsg.type is aiohttp.WSMsgType.BINARY:
                    peer.bytes_recv += len(wsmsg.data)
                    await self.svc.on_frame_async(peer, wsmsg.data)
                elif wsmsg.type is aiohttp.WSMsgType.TEXT:
                    self.misbehave(peer, BAN_SCORE, "text frame (the protocol is binary)")
                elif wsmsg.type is aiohttp.WSMsgType.ERROR:
                    exc = peer.ws.exception()
                    code = getattr(exc, "code", None)
                    if code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                        self.misbehave(peer, BAN_SCORE, f"oversized message: {exc}")
                    elif isinstance(exc, aiohttp.WebSocketError):
                        self.misbehave(peer, BAN_SCORE, f"malformed websocket frame: {exc}")
                    break
        except StorageError as exc:  # the node stops on it (Node.storage_fault) and says why
            log.debug("peer %d: storage failed: %s", peer.id, exc)
        except Exception:  # noqa: BLE001 - one peer's failure must not stop the node
            log.exception("peer %d failed", peer.id)
        finally:
            timer.cancel()
            self.cleanup(peer, "connection closed")
            peer.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.ws.close(), timeout=2)
            writer.cancel()

    def _handshake_timeout(self, peer: Peer) -> None:
        if not peer.ready and not peer.closed:
            self.drop(peer, "handshake timeout")

    async def _writer(self, peer: Peer) -> None:
        try:
            while True:
                data = await peer.queue.get()
                if data is None:
                    return
                self._dequeued(peer, len(data))
                if peer.queued_bytes < SEND_LOW_WATER:
                    self.svc.relay.serve_pending(peer)
                await peer.ws.send_bytes(data)
                peer.bytes_sent += len(data)
                peer.last_send = time.time()
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            self.drop(peer, "send failed")

    def send(self, peer: Peer, msg: Message) -> None:
        if peer.closed:
            return
        self.enqueue(peer, encode(msg))

    def send_raw(self, peer: Peer, t: MsgType, payload: bytes) -> None:
        if peer.closed:
            return
        self.enqueue(peer, bytes([int(t)]) + payload)

    def enqueue(self, peer: Peer, data: bytes) -> None:
        if peer.queued_bytes + len(data) > MAX_SEND_BUFFER:
            self.drop(peer, "send buffer overflow (peer too slow)")
            return
        while self.total_queued + len(data) > MAX_SEND_TOTAL:
            slowest = max(self.peers.values(), key=lambda p: p.queued_bytes, default=None)
            if slowest is None or slowest.queued_bytes == 0:
                break
            self.drop(slowest, "send buffer budget exceeded (slowest peer)")
            if slowest is peer:
                return
        peer.queued_bytes += len(data)
        self.total_queued += len(data)
        peer.queue.put_nowait(data)

    def _dequeued(self, peer: Peer, n: int) -> None:
        if peer.closed:
            return  # uncounted at cleanup
        peer.queued_bytes -= n
        self.total_queued -= n

    def drop(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        self.cleanup(peer, reason)
        peer.queue.put_nowait(None)
        self.svc.spawn(self._close_ws(peer))

    async def _close_ws(self, peer: Peer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(peer.ws.close(), timeout=2)

    def cleanup(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer.id, None)
        # What is queued is still flushed (within the 2 s close timeout) but no longer
        # counts against the budget.
        self.total_queued -= peer.queued_bytes
        peer.queued_bytes = 0
        if peer.ready:
            log.info("peer %d disconnected (%s): %s", peer.id, peer.addr, reason)
        else:
            log.info("peer %d (%s) dropped before the handshake: %s", peer.id, peer.addr, reason)
        self.svc.on_peer_closed(peer)

    def misbehave(self, peer: Peer, points: int, reason: str) -> None:
        peer.score += points
        if peer.score < BAN_SCORE or peer.closed:
            return
        self.discourage(peer.host, reason, f"peer {peer.id}")
        self.drop(peer, f"misbehaving: {reason}")

    def discourage(self, host: str, reason: str, who: str = "before its handshake") -> None:
        """Refuse ``host``'s inbound connections for ``discourage_s`` (a misbehaving
        peer, or a socket cut for what it sent before its verack: p2p/guard.py)."""
        self.discouraged.pop(host, None)
        self.discouraged[host] = time.time() + self.settings.discourage_s
        while len(self.discouraged) > MAX_DISCOURAGED:  # the oldest goes first
            del self.discouraged[next(iter(self.discouraged))]
        log.warning(
            "discouraging %s (%s) for %ds: %s", host, who, self.settings.discourage_s, reason
        )


def _refuse(status: int, text: str) -> web.Response:
    """An HTTP answer that closes the connection (no keep-alive for refused peers)."""
    resp = web.Response(status=status, text=text)
    resp.force_close()
    return resp
