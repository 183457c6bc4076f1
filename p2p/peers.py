"""Connections: accepting, dialling, evicting, sending to and dropping peers, and
misbehaviour scores with discouragement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from p2p.addrbook import AddressBook, BanList, split_host_port
from p2p.peer import BAN_SCORE, P2PSettings, Peer
from p2p.protocol import MAX_FRAME, Message, MsgType, encode

if TYPE_CHECKING:
    from p2p.service import P2PService

log = logging.getLogger("pouw.p2p")

MAX_SEND_BUFFER = 64 * 1024 * 1024  # queued outgoing bytes before a slow peer is dropped


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
        if self.svc.stopping:
            return web.Response(status=503)
        if self.bans.is_banned(ip) or self.is_discouraged(ip):
            log.info("refusing inbound connection from banned/discouraged %s", ip)
            return web.Response(status=403, text="banned")
        inbound = [p for p in self.peers.values() if p.inbound]
        if len(inbound) >= self.settings.max_inbound and not self.evict_one(inbound):
            return web.Response(status=503, text="full")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, autoping=True, compress=False)
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peername[1]) if peername else 0
        peer = Peer(ws, True, ip, port, settings=self.settings)
        await self.run_peer(peer)
        return ws

    def evict_one(self, inbound: list[Peer]) -> bool:
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
        self.drop(victim, "evicted for a new inbound peer")
        return True

    # --- outbound ------------------------------------------------------------------

    async def dial(self, host: str, port: int, manual: bool) -> None:
        key = f"{host}:{port}"
        self.connecting.add(key)
        self.last_dial[key] = time.monotonic()
        self.addrbook.attempt(host, port)
        try:
            assert self.session is not None
            ws = await self.session.ws_connect(
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
        await self.run_peer(peer)

    def connected_keys(self) -> set[str]:
        keys = set()
        for p in self.peers.values():
            if p.dial_key:
                keys.add(p.dial_key)
            if p.inbound and p.version and p.version.listen_port:
                keys.add(f"{p.host}:{p.version.listen_port}")
        return keys | self.connecting

    async def connector(self) -> None:
        while not self.svc.stopping:
            try:
                self.connect_some()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("connector failed")
            await asyncio.sleep(self.settings.connect_interval)

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
                if wsmsg.type is aiohttp.WSMsgType.BINARY:
                    peer.bytes_recv += len(wsmsg.data)
                    self.svc.on_frame(peer, wsmsg.data)
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
                peer.queued_bytes -= len(data)
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
        peer.queued_bytes += len(data)
        peer.queue.put_nowait(data)

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
        if peer.ready:
            log.info("peer %d disconnected (%s): %s", peer.id, peer.addr, reason)
        else:
            log.info("peer %d (%s) dropped before the handshake: %s", peer.id, peer.addr, reason)
        self.svc.on_peer_closed(peer)

    def misbehave(self, peer: Peer, points: int, reason: str) -> None:
        peer.score += points
        if peer.score < BAN_SCORE or peer.closed:
            return
        self.discouraged[peer.host] = time.time() + self.settings.discourage_s
        log.warning(
            "discouraging %s (peer %d) for %ds: %s",
            peer.host, peer.id, self.settings.discourage_s, reason,
        )  # fmt: skip
        self.drop(peer, f"misbehaving: {reason}")
