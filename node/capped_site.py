"""An aiohttp TCP site that serves at most so many connections at once (aiohttp has
no connection cap): past it a new connection is answered 503 and closed at once, as
bitcoind answers when its work queue is full. The RPC server and the blob server
use it; each says what its 503 carries."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

log = logging.getLogger("pouw.net")


class _Overloaded(asyncio.Protocol):
    """Answers a connection past the cap with 503 and closes it."""

    def __init__(self, response: bytes) -> None:
        self.response = response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.response)
        transport.close()


def overloaded_response(body: bytes, content_type: str) -> bytes:
    """The whole HTTP 503 answer (head and ``body``) a connection past the cap gets."""
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class CappedSite(web.TCPSite):
    """A TCP site that serves at most ``max_connections`` connections at once; ``name``
    names the server in the warning logged for a connection refused."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int,
        name: str, response: bytes,
    ) -> None:  # fmt: skip
        super().__init__(runner, host, port)
        self.max_connections = max_connections
        self.server_name = name
        self.response = response

    async def start(self) -> None:
        # TCPSite.start with the protocol factory wrapped
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                log.warning(
                    "%s: %d connections open, refusing another",
                    self.server_name,
                    self.max_connections,
                )
                return _Overloaded(self.response)
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, self._host, self._port)
        self._bound_port = self._server.sockets[0].getsockname()[1]
