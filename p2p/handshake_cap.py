"""The bytes an inbound peer may send before its handshake completes.

aiohttp's WebSocket reader takes one message size for the life of a socket, and a
frame is buffered whole before our code sees it. Frames may be as large as
``MAX_FRAME`` (21 MB: a block), so without a count at the transport a socket still in
its handshake could hold that much memory until the handshake timeout, on every
inbound slot at once. A peer owes us only a ``version`` and a ``verack`` before the
handshake completes; the bytes it sends until then are counted here, between the
socket and aiohttp, and a peer that sends more than ``PRE_HANDSHAKE_BYTES`` is cut at
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# A version and a verack take under 200 bytes with their WebSocket framing; this leaves
# room for WebSocket pings many times over, and keeps the 32 inbound slots (P2PSettings
# max_inbound) at 2 MiB in all while their peers are in the handshake.
PRE_HANDSHAKE_BYTES = 64 * 1024


class HandshakeByteCap(asyncio.Protocol):
    """Sits between a transport and its protocol (aiohttp's) until ``release``: passes
    every event on, counting the bytes received; past ``limit`` it aborts the socket
    without passing the bytes on, and calls ``on_overflow`` with the count."""

    def __init__(
        self,
        transport: asyncio.Transport,
        inner: asyncio.BaseProtocol,
        limit: int,
        on_overflow: Callable[[int], None],
    ) -> None:
        self.transport = transport
        self.inner = inner
        self.limit = limit
        self.on_overflow = on_overflow
        self.received = 0
        self.released = False

    @classmethod
    def install(
        cls,
        transport: asyncio.BaseTransport | None,
        limit: int,
        on_overflow: Callable[[int], None],
    ) -> HandshakeByteCap | None:
        """Count ``transport``'s bytes from now on; None when there is nothing to count
        (no transport, or one already closing)."""
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            return None
        cap = cls(transport, transport.get_protocol(), limit, on_overflow)
        transport.set_protocol(cap)
        return cap

    def release(self) -> None:
        """The handshake is complete: the transport talks to its protocol directly again."""
        if self.released:
            return
        self.released = True
        if self.transport.get_protocol() is self:
            self.transport.set_protocol(self.inner)

    def data_received(self, data: bytes) -> None:
        if self.released:
            if not self.transport.is_closing():  # not cut: pass on what still comes here
                self.inner.data_received(data)  # type: ignore[attr-defined]
            return
        self.received += len(data)
        if self.received > self.limit:
            self.released = True  # counted no more: the socket is cut
            self.transport.abort()
            self.on_overflow(self.received)
            return
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
