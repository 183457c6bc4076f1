"""Inbound sockets before the WebSocket upgrade: a connection must complete its HTTP
upgrade within ``upgrade_timeout`` seconds, at most ``max_pending`` connections (and
``max_pending_per_ip`` from one address) may be waiting for it, and the file
descriptors P2P may hold are budgeted so RPC and the database keep theirs.

aiohttp has no timeout for reading a request's headers, so half-open TCP connections
and slow-header (slowloris) upgrades would otherwise hold a file descriptor forever.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from p2p.handshake_cap import HandshakeGate

log = logging.getLogger("pouw.p2p")

RESERVED_FDS = 512  # kept for RPC clients, LevelDB files, blobs and logs


def fd_budget(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` + RESERVED_FDS if the hard limit
    allows; return how many sockets P2P may use (``wanted`` or fewer)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(hard, need)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, soft - RESERVED_FDS))


class _Guarded(asyncio.Protocol):
    """Delegates to aiohttp's request handler; closes the socket if the upgrade does
    not come in time, or if the peer sends what its handshake does not allow (each
    chunk judged before aiohttp sees it: p2p/handshake_cap.py)."""

    def __init__(self, guard: UpgradeGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ip = ""
        self.gate: HandshakeGate | None = HandshakeGate()  # None once the verack passed
        self.cut = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "?"
        if not self.guard.admit(self, transport):
            self.inner = None
            transport.abort()
            return
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.timeout, self._expire)
        self.inner.connection_made(transport)

    def _expire(self) -> None:
        if self.transport is not None and self.guard.pending.get(self.transport) is self:
            self.guard.timed_out += 1
            self.transport.abort()

    def upgraded(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.guard.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.guard.release(self)
        self.guard.open.discard(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.cut:
            return
        if self.gate is not None:
            why = self.gate.check(data)
            if why is not None:
                self.cut = True
                if self.transport is not None:
                    self.transport.abort()
                if self.gate.discourage:
                    self.guard.handshake_refused(self.ip, why)
                self.gate = None
                return
            if self.gate.done:
                self.gate = None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class UpgradeGuard:
    def __init__(
        self, timeout: float, max_pending: int, max_pending_per_ip: int, max_open: int
    ) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.max_open = max_open  # inbound sockets in all, upgraded or not
        self.pending: dict[asyncio.BaseTransport, _Guarded] = {}
        self.open: set[_Guarded] = set()
        self.refused = 0
        self.timed_out = 0
        self.handshakes_refused = 0
        # (ip, why) of a peer cut for what it sent before its verack: the P2P service
        # discourages the address
        self.on_handshake_refused: Callable[[str, str], None] | None = None

    def admit(self, conn: _Guarded, transport: asyncio.BaseTransport) -> bool:
        counts = Counter(c.ip for c in self.pending.values())
        if counts[conn.ip] >= self.max_pending_per_ip or len(self.open) >= self.max_open:
            self.refused += 1
            return False
        if len(self.pending) >= self.max_pending:
            # Full: the address holding the most waiting sockets gives up its oldest,
            # so a few addresses cannot keep newcomers from elsewhere out.
            ip, n = counts.most_common(1)[0]
            if n <= counts[conn.ip] + 1:
                self.refused += 1
                return False
            victim = next(c for c in self.pending.values() if c.ip == ip)
            self.release(victim)
            if victim.transport is not None:
                victim.transport.abort()
            self.timed_out += 1
        self.pending[transport] = conn
        self.open.add(conn)
        return True

    def handshake_refused(self, ip: str, why: str) -> None:
        self.handshakes_refused += 1
        if self.on_handshake_refused is not None:
            self.on_handshake_refused(ip, why)

    def release(self, conn: _Guarded) -> None:
        if conn.transport is not None and self.pending.get(conn.transport) is conn:
            del self.pending[conn.transport]

    def upgraded(self, transport: asyncio.BaseTransport | None) -> None:
        """The request on ``transport`` reached the P2P handler in time."""
        conn = self.pending.get(transport) if transport is not None else None
        if conn is not None:
            conn.upgraded()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections go through an ``UpgradeGuard``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: UpgradeGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self.guard
        self._server = await loop.create_server(
            lambda: _Guarded(guard, server()), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address,
        )  # fmt: skip
        sockets = self._server.sockets
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]
